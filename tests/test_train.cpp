// Training: schedules against their formulas, optimizers against hand-written updates, config
// handling, checkpoints (bit-exact round trip) and exact resume, NaN detection, learning.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/train/config.h"
#include "demp/train/optim.h"
#include "demp/train/schedule.h"
#include "demp/train/trainer.h"
#include "test_util.h"

using namespace demp;
using nlohmann::json;

TEST(Schedule, OneCycleMatchesTheFormula) {
  const double p = 0.1, pi = 3.14159265358979323846;
  const int64_t S = 1000, T1 = 300;
  const auto s = train::parse_schedule("onecycle", p, S, 10);
  EXPECT_NEAR(s.at(0), p / 25, 1e-12);
  EXPECT_NEAR(s.at(150), p / 25 + (p - p / 25) * 0.5 * (1 - std::cos(pi * 150 / T1)), 1e-12);
  EXPECT_NEAR(s.at(T1), p, 1e-12);
  const double f = p / 250000;
  EXPECT_NEAR(s.at(650), f + (p - f) * 0.5 * (1 + std::cos(pi * 350.0 / 700.0)), 1e-12);
  EXPECT_NEAR(s.at(S), f, 1e-12);
  EXPECT_NEAR(s.at(S + 500), f, 1e-12);
}

TEST(Schedule, OtherShapes) {
  EXPECT_DOUBLE_EQ(train::parse_schedule("constant", 0.5, 100, 10).at(77), 0.5);
  const auto c = train::parse_schedule("cosine", 1.0, 100, 10);
  EXPECT_NEAR(c.at(0), 1.0, 1e-12);
  EXPECT_NEAR(c.at(50), 0.5, 1e-12);
  EXPECT_NEAR(c.at(100), 0.0, 1e-12);
  const auto st = train::parse_schedule("step:2,4:0.2", 1.0, 100, 10);  // epochs 2, 4 = steps 20, 40
  EXPECT_DOUBLE_EQ(st.at(19), 1.0);
  EXPECT_NEAR(st.at(20), 0.2, 1e-12);
  EXPECT_NEAR(st.at(45), 0.04, 1e-12);
  const auto w = train::parse_schedule("warmup-step:0.5:3:0.1", 1.0, 100, 10);  // warm-up 5 steps
  EXPECT_NEAR(w.at(0), 0.2, 1e-12);
  EXPECT_NEAR(w.at(4), 1.0, 1e-12);
  EXPECT_NEAR(w.at(30), 0.1, 1e-12);
  const auto lw = train::parse_schedule("linear-warmup:1", 2.0, 100, 10);
  EXPECT_NEAR(lw.at(4), 1.0, 1e-12);
  EXPECT_NEAR(lw.at(50), 2.0, 1e-12);
  EXPECT_THROW(train::parse_schedule("triangle", 1, 10, 1), Error);
  EXPECT_THROW(train::parse_schedule("step:a:0.1", 1, 10, 1), Error);
}

namespace {
// Runs one step of `name` on p (grad g) and returns the new p.
std::vector<torch::Tensor> run_opt(const std::string& name, int steps, double lr, double wd) {
  train::OptimOptions o;
  o.name = name;
  o.weight_decay = wd;
  auto opt = train::make_optimizer(o);
  auto p = torch::tensor({1.0, -2.0, 0.5}, torch::kDouble).requires_grad_(true);
  std::vector<torch::Tensor> ps{p}, hist;
  for (int i = 0; i < steps; ++i) {
    p.mutable_grad() = torch::tensor({0.1 * (i + 1), -0.3, 0.0}, torch::kDouble);
    opt->step(ps, lr);
    hist.push_back(p.detach().clone());
  }
  return hist;
}
}  // namespace

TEST(Optimizers, MatchHandWrittenUpdates) {
  const double lr = 0.1, wd = 0.01, mu = 0.9;
  const std::vector<double> p0 = {1.0, -2.0, 0.5};
  // reference implementations, element by element
  for (const std::string name : {"sgd", "sgdw", "adamw"}) {
    const auto hist = run_opt(name, 3, lr, wd);
    for (int e = 0; e < 3; ++e) {
      double p = p0[e], m = 0, v = 0;
      for (int t = 1; t <= 3; ++t) {
        const double g = e == 0 ? 0.1 * t : (e == 1 ? -0.3 : 0.0);
        if (name == "sgd") {
          m = mu * m + (g + wd * p);
          p -= lr * m;
        } else if (name == "sgdw") {
          m = mu * m + g;
          p -= lr * (m + wd * p);
        } else {
          p *= 1 - lr * wd;
          m = 0.9 * m + 0.1 * g;
          v = 0.999 * v + 0.001 * g * g;
          const double mh = m / (1 - std::pow(0.9, t)), vh = v / (1 - std::pow(0.999, t));
          p -= lr * mh / (std::sqrt(vh) + 1e-8);
        }
        EXPECT_NEAR(hist[t - 1][e].item<double>(), p, 1e-9) << name << " t=" << t << " e=" << e;
      }
    }
  }
  train::OptimOptions bad;
  bad.name = "lion";
  EXPECT_THROW(train::make_optimizer(bad), Error);
}

TEST(Config, JsonKeysAreTheFlagNames) {
  train::TrainConfig c;
  train::apply_json(c, json{{"batch-size", 64}, {"lr", 0.5}, {"model", "mlp"}, {"resume", true}}, "x.json");
  EXPECT_EQ(c.batch_size, 64);
  EXPECT_DOUBLE_EQ(c.lr, 0.5);
  EXPECT_EQ(c.model, "mlp");
  EXPECT_TRUE(c.resume);
  EXPECT_THROW(train::apply_json(c, json{{"batchsize", 64}}, "x.json"), Error);
  EXPECT_THROW(train::apply_json(c, json{{"batch-size", "big"}}, "x.json"), Error);
  EXPECT_THROW(train::apply_json(c, json::array(), "x.json"), Error);
  // to_json/apply_json round trip
  train::TrainConfig d;
  train::apply_json(d, train::to_json(c), "round trip");
  EXPECT_EQ(train::to_json(d), train::to_json(c));
  c.batch_size = 0;
  EXPECT_THROW(train::validate(c), Error);
}

namespace {
train::TrainConfig small_run(const std::string& data_dir, const std::string& out) {
  train::TrainConfig c;
  c.model = "mlp";
  c.mlp_widths = "32,16";
  c.width = 1.0;
  c.data = "mnist:" + data_dir;
  c.batch_size = 32;
  c.steps = 45;
  c.lr = 0.01;
  c.optimizer = "adamw";
  c.seed = 3;
  c.out = out;
  c.progress = "none";
  c.log_every = 10;
  c.threads = 1;
  return c;
}

void expect_same_checkpoint(const std::string& a, const std::string& b) {
  const auto x = train::load_checkpoint(a), y = train::load_checkpoint(b);
  ASSERT_EQ(json(x.arch).dump(), json(y.arch).dump());
  for (size_t i = 0; i < x.layers.size(); ++i) {
    const auto& p = x.layers[i];
    const auto& q = y.layers[i];
    EXPECT_TRUE(torch::equal(p.weight, q.weight)) << "layer " << i;
    if (p.gamma.defined()) {
      EXPECT_TRUE(torch::equal(p.gamma, q.gamma));
      EXPECT_TRUE(torch::equal(p.running_mean, q.running_mean));
      EXPECT_TRUE(torch::equal(p.running_var, q.running_var));
    }
  }
  ASSERT_EQ(x.optimizer_state.size(), y.optimizer_state.size());
  EXPECT_EQ(x.optimizer_steps, y.optimizer_steps);
  for (size_t i = 0; i < x.optimizer_state.size(); ++i) {
    for (size_t k = 0; k < x.optimizer_state[i].size(); ++k) {
      EXPECT_TRUE(torch::equal(x.optimizer_state[i][k], y.optimizer_state[i][k]));
    }
  }
}
}  // namespace

TEST(Training, ResumedRunMatchesUninterruptedRunStepForStep) {
  test::TempDir tmp;
  test::write_synthetic_idx(tmp.path, 400, 100);
  // 400 images / 32 = 12 steps per epoch: the interruption at 17 falls mid-epoch.
  const auto full = test::run_training(small_run(tmp.path, tmp.path + "/full"));
  EXPECT_EQ(full["status"], "finished");
  auto part = small_run(tmp.path, tmp.path + "/part");
  part.stop_after = 17;
  EXPECT_EQ(test::run_training(part)["status"], "stopped");
  auto resume = small_run(tmp.path, tmp.path + "/part");
  resume.resume = true;
  const auto resumed = test::run_training(resume);
  EXPECT_EQ(resumed["status"], "finished");
  EXPECT_EQ(resumed["test_accuracy"], full["test_accuracy"]);
  expect_same_checkpoint(tmp.path + "/full/model.ckpt", tmp.path + "/part/model.ckpt");
  // a finished run refuses --resume, and a second run into the same directory is refused
  EXPECT_THROW(test::run_training(resume), Error);
  EXPECT_THROW(test::run_training(small_run(tmp.path, tmp.path + "/full")), Error);
  // metrics rows are unique per step after the resume
  const auto lines = read_file(tmp.path + "/part/metrics.jsonl");
  std::vector<int64_t> steps;
  size_t pos = 0;
  while ((pos = lines.find("\"step\":", pos)) != std::string::npos) {
    steps.push_back(std::stoll(lines.substr(pos + 7)));
    ++pos;
  }
  for (size_t i = 1; i < steps.size(); ++i) EXPECT_LT(steps[i - 1], steps[i]);
}

TEST(Training, RunDirectoryHasEveryFileAndSummaryFields) {
  test::TempDir tmp;
  test::write_synthetic_idx(tmp.path, 400, 100);
  const auto s = test::run_training(small_run(tmp.path, tmp.path + "/run"));
  for (const char* f : {"config.json", "metrics.jsonl", "log.txt", "summary.json", "model.ckpt"}) {
    EXPECT_TRUE(file_exists(tmp.path + "/run/" + f)) << f;
  }
  for (const char* k :
       {"method", "model", "dataset", "steps", "test_accuracy", "best_test_accuracy", "units_initial",
        "units_final", "params_initial", "params_final", "flops_initial", "flops_final", "train_seconds"}) {
    EXPECT_TRUE(s.contains(k)) << k;
  }
  EXPECT_GT(s["test_accuracy"].get<double>(), 0.9);  // the synthetic classes are easy
  const auto first = json::parse(read_file(tmp.path + "/run/metrics.jsonl")
                                     .substr(0, read_file(tmp.path + "/run/metrics.jsonl").find('\n')));
  for (const char* k : {"step", "epoch", "lr", "train_loss", "train_accuracy", "live_units",
                        "live_units_per_group", "params", "flops", "elapsed_seconds"}) {
    EXPECT_TRUE(first.contains(k)) << k;
  }
  const auto saved = json::parse(read_file(tmp.path + "/run/config.json"));
  EXPECT_EQ(saved["batch-size"], 32);
  // eval reads the checkpoint back: same accuracy
  const auto ck = train::load_checkpoint(tmp.path + "/run/model.ckpt");
  nn::Model m(ck.arch, ck.layers);
  auto data = data::load("mnist:" + tmp.path);
  EXPECT_DOUBLE_EQ(train::evaluate(m, data.test, 64, torch::kCPU).accuracy, s["test_accuracy"].get<double>());
}

TEST(Training, NanLossStopsWithAClearErrorAndKeepsTheCheckpoint) {
  test::TempDir tmp;
  test::write_synthetic_idx(tmp.path, 400, 100);
  auto c = small_run(tmp.path, tmp.path + "/nan");
  c.optimizer = "sgd";
  c.lr = 1e30;
  c.steps = 30;
  try {
    test::run_training(c);
    FAIL() << "expected a divergence error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("at step"), std::string::npos) << e.what();
  }
  const auto s = json::parse(read_file(tmp.path + "/nan/summary.json"));
  EXPECT_EQ(s["status"], "diverged");
}

TEST(Checkpoint, CorruptOrMissingFileIsAClearError) {
  test::TempDir tmp;
  EXPECT_THROW(train::load_checkpoint(tmp.path + "/none.ckpt"), Error);
  write_file_atomic(tmp.path + "/bad.ckpt", "not a checkpoint");
  EXPECT_THROW(train::load_checkpoint(tmp.path + "/bad.ckpt"), Error);
}

TEST(Checkpoint, PrunedModelRoundTripsBitExactly) {
  test::TempDir tmp;
  nn::Model m(test::tiny_arch("resnet18"), 2);
  prune::KeepSets keep(m.arch().groups.size());
  for (int g : m.arch().prunable_groups()) {
    for (int64_t j = 0; j < m.arch().groups[g].width; j += 2) keep[g].push_back(j);
  }
  prune::remove_units(m, nullptr, keep);
  train::save_checkpoint(tmp.path + "/m.ckpt", m, nullptr, json{{"step", 0}});
  const auto ck = train::load_checkpoint(tmp.path + "/m.ckpt");
  nn::Model back(ck.arch, ck.layers);
  const auto x = torch::randn({3, 3, 16, 16});
  EXPECT_TRUE(torch::equal(m.forward(x, false), back.forward(x, false)));
  EXPECT_EQ(back.arch().params(), m.arch().params());
}

TEST(Training, LearnsFashionMnistSlice) {
  train::TrainConfig c;
  c.model = "mlp";
  c.mlp_widths = "128";
  c.data = "fashion-mnist";
  c.train_limit = 4096;
  c.test_limit = 1000;
  c.steps = 96;
  c.batch_size = 64;
  c.progress = "none";
  test::TempDir tmp;
  c.out = tmp.path + "/fm";
  const auto s = test::run_training(c);
  EXPECT_GT(s["test_accuracy"].get<double>(), 0.7);  // chance is 0.1
}
