#include "demp/cli/bench.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <unistd.h>
#include <nlohmann/json.hpp>
#include <thread>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/nn/model.h"
#include "demp/train/config.h"
#include "demp/train/optim.h"
#include "demp/train/trainer.h"

#ifndef DEMP_SOURCE_DIR
#define DEMP_SOURCE_DIR "."
#endif

namespace demp::cli {

void add_bench_options(CLI::App* app, BenchOptions& o) {
  app->add_option("--model", o.model, "mlp, vgg16, resnet18, resnet50")->capture_default_str();
  app->add_option("--width", o.width, "width multiplier")->capture_default_str();
  app->add_option("--mlp-widths", o.mlp_widths, "MLP hidden widths")->capture_default_str();
  app->add_option("--batch-size", o.batch, "batch size")->capture_default_str();
  app->add_option("--in-channels", o.in_channels, "input channels")->capture_default_str();
  app->add_option("--input-size", o.input_size, "input height and width")->capture_default_str();
  app->add_option("--classes", o.classes, "classes")->capture_default_str();
  app->add_option("--optimizer", o.optimizer, "sgd, sgdw, adamw")->capture_default_str();
  app->add_option("--steps", o.steps, "timed steps per round")->capture_default_str();
  app->add_option("--warmup", o.warmup, "untimed steps before each round")->capture_default_str();
  app->add_option("--rounds", o.rounds, "alternating rounds (median reported)")->capture_default_str();
  app->add_option("--threads", o.threads, "CPU threads, both sides (0: all cores)")->capture_default_str();
  app->add_option("--python", o.python, "Python with torch for the reference (default: the project's .venv)");
  app->add_option("--reference-script", o.reference_script, "the reference (default: bench/reference_step.py)");
  app->add_flag("--no-reference", o.no_reference, "time demp only");
  app->add_option("--json", o.json_out, "also write the results to this JSON file");
}

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// img/s of `steps` training steps (forward, cross-entropy, backward, optimizer) after `warmup`.
double time_demp(nn::Model& model, train::Optimizer& opt, const torch::Tensor& x,
                 const torch::Tensor& y, int64_t warmup, int64_t steps) {
  auto one = [&] {
    auto params = model.parameters();
    for (auto& p : params) {
      if (p.grad().defined()) p.mutable_grad().zero_();
    }
    auto loss = at::cross_entropy_loss(model.forward(x, true), y);
    loss.backward();
    opt.step(params, 1e-3);
  };
  for (int64_t i = 0; i < warmup; ++i) one();
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i) one();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<double>(steps * x.size(0)) / s;
}

}  // namespace

int run_bench(const BenchOptions& o) {
  const int threads = o.threads > 0 ? static_cast<int>(o.threads)
                                    : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  train::TrainConfig c;
  c.model = o.model;
  c.width = o.width;
  c.mlp_widths = o.mlp_widths;
  data::DataBundle shape;
  shape.channels = o.in_channels;
  shape.height = shape.width = o.input_size;
  shape.classes = o.classes;
  const nn::Arch arch = nn::build_arch(train::model_options(c, shape));
  nn::Model model(arch, 0);
  train::OptimOptions oo;
  oo.name = o.optimizer;
  auto opt = train::make_optimizer(oo);
  auto gen = data::make_generator(0, data::kMisc, 0);
  const auto x = torch::randn({o.batch, o.in_channels, o.input_size, o.input_size}, gen, torch::kFloat);
  const auto y = torch::randint(o.classes, {o.batch}, gen, torch::kLong);

  std::string python = o.python, script = o.reference_script;
  if (python.empty()) python = std::string(DEMP_SOURCE_DIR) + "/.venv/bin/python";
  if (script.empty()) script = std::string(DEMP_SOURCE_DIR) + "/bench/reference_step.py";
  const bool reference = !o.no_reference;
  if (reference && (!file_exists(python) || !file_exists(script))) {
    throw Error("the PyTorch reference needs " + python + " and " + script,
                "run scripts/setup, pass --python/--reference-script, or use --no-reference");
  }
  const std::string arch_file =
      temp_directory() + fmt::format("/demp-bench-{}.json", ::getpid());
  write_file_atomic(arch_file, nlohmann::json(arch).dump());

  fmt::print("bench | {} width {} | input {}x{}x{} | batch {} | {} | threads {} | {} rounds x {} steps\n",
             o.model, o.width, o.in_channels, o.input_size, o.input_size, o.batch, o.optimizer,
             threads, o.rounds, o.steps);
  std::vector<double> ours, theirs;
  for (int64_t r = 0; r < o.rounds; ++r) {
    ours.push_back(time_demp(model, *opt, x, y, o.warmup, o.steps));
    std::string line = fmt::format("round {} | demp {:.1f} img/s", r + 1, ours.back());
    if (reference) {
      const std::string cmd = fmt::format(
          "'{}' '{}' --arch '{}' --batch-size {} --optimizer {} --steps {} --warmup {} --threads {}",
          python, script, arch_file, o.batch, o.optimizer, o.steps, o.warmup, threads);
      FILE* p = ::popen(cmd.c_str(), "r");
      std::string out;
      char buf[4096];
      while (p && std::fgets(buf, sizeof buf, p)) out += buf;
      const int rc = p ? ::pclose(p) : -1;
      const auto pos = out.rfind("{");
      if (rc != 0 || pos == std::string::npos) {
        remove_file(arch_file);
        throw Error("the PyTorch reference failed: " + cmd, "run it by hand to see why");
      }
      theirs.push_back(nlohmann::json::parse(out.substr(pos))["images_per_second"].get<double>());
      line += fmt::format(" | pytorch {:.1f} img/s | ratio {:.3f}", theirs.back(), ours.back() / theirs.back());
    }
    fmt::print("{}\n", line);
  }
  remove_file(arch_file);
  nlohmann::json res{{"model", o.model}, {"width", o.width}, {"batch", o.batch},
                     {"threads", threads}, {"optimizer", o.optimizer},
                     {"demp_images_per_second", median(ours)}};
  std::string line = fmt::format("median | demp {:.1f} img/s", median(ours));
  if (reference) {
    res["pytorch_images_per_second"] = median(theirs);
    res["ratio"] = median(ours) / median(theirs);
    line += fmt::format(" | pytorch {:.1f} img/s | demp/pytorch {:.3f}x", median(theirs),
                        median(ours) / median(theirs));
  }
  fmt::print("{}\n", line);
  if (!o.json_out.empty()) write_file_atomic(o.json_out, res.dump(2) + "\n");
  return 0;
}

}  // namespace demp::cli
