// The structured baselines: selection rules and scores against hand computations, and each
// method reaching its density on a tiny network that still works.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <numeric>
#include <set>

#include "demp/common/error.h"
#include "demp/methods/method.h"
#include "demp/methods/selection.h"
#include "demp/nn/model.h"
#include "demp/train/trainer.h"
#include "test_util.h"

using namespace demp;
using nlohmann::json;

TEST(Selection, GlobalTopKeepsTheBestOfEveryGroupThenTheHighestScores) {
  nn::Model m(test::tiny_arch("mlp"), 0);  // hidden widths 3 and 2
  ASSERT_EQ(m.arch().groups[1].width, 3);
  ASSERT_EQ(m.arch().groups[2].width, 2);
  methods::GroupScores s(m.arch().groups.size());
  s[1] = torch::tensor({0.1f, 0.9f, 0.5f});
  s[2] = torch::tensor({0.2f, 0.05f});
  const auto k3 = methods::keep_global_top(m, s, 3);
  EXPECT_EQ(k3[1], (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(k3[2], (std::vector<int64_t>{0}));
  // k below the number of groups still keeps one unit per group
  const auto k1 = methods::keep_global_top(m, s, 1);
  EXPECT_EQ(k1[1], (std::vector<int64_t>{1}));
  EXPECT_EQ(k1[2], (std::vector<int64_t>{0}));
  const auto per = methods::keep_per_layer(m, s, 0.5);  // round(1.5) = 2 and round(1) = 1
  EXPECT_EQ(per[1], (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(per[2], (std::vector<int64_t>{0}));
  EXPECT_EQ(methods::target_units(m, 0.4), 2);  // round(0.4 * 5) = 2 >= 2 groups
}

TEST(Selection, IterativeDensities) {
  // the authors' schedule: 0.5, then D - (D - 0.5)·0.5^i, then D
  const auto a = methods::iterative_densities(0.1, 4);
  ASSERT_EQ(a.size(), 4u);
  EXPECT_DOUBLE_EQ(a[0], 0.5);
  EXPECT_NEAR(a[1], 0.3, 1e-12);
  EXPECT_NEAR(a[2], 0.2, 1e-12);
  EXPECT_DOUBLE_EQ(a[3], 0.1);
  // a single cut when D >= 0.5
  EXPECT_EQ(methods::iterative_densities(0.8, 4), std::vector<double>{0.8});
  EXPECT_EQ(methods::iterative_densities(0.5, 4), std::vector<double>{0.5});
  EXPECT_EQ(methods::iterative_densities(0.1, 1), std::vector<double>{0.1});
}

namespace {
nn::Model one_hidden_mlp(torch::ScalarType dtype) {
  nn::ModelOptions o;
  o.model = "mlp";
  o.mlp_widths = {6};
  o.in_channels = 1;
  o.in_height = o.in_width = 4;
  o.classes = 3;
  nn::Model m(nn::build_arch(o), 11);
  for (auto& t : m.layers()) {
    for (torch::Tensor* x : {&t.weight, &t.bias, &t.gamma, &t.beta}) {
      if (x->defined()) *x = x->detach().to(dtype).requires_grad_(true);
    }
    for (torch::Tensor* x : {&t.running_mean, &t.running_var}) {
      if (x->defined()) *x = x->to(dtype);
    }
  }
  return m;
}
}  // namespace

TEST(Scores, SnapEqualsTheHandWrittenGateDerivative) {
  auto m = one_hidden_mlp(torch::kDouble);
  const auto x = torch::randn({10, 1, 4, 4}, torch::kDouble);
  const auto y = torch::randint(3, {10});
  const auto snap = methods::gate_scores(m, {{x, y}}, false);
  // by hand: the hidden group feeds the classifier, so ∂L/∂c_j = Σ_n a_nj Σ_k W_kj (p_nk − y_nk) / N
  std::vector<torch::Tensor> groups;
  torch::NoGradGuard ng;
  const auto logits = m.forward(x, true, &groups);
  const auto p = logits.softmax(1) - torch::one_hot(y, 3).to(torch::kDouble);
  const auto w = m.layers()[1].weight;  // classifier 3 x 6
  const auto expected = (groups[1] * p.matmul(w)).sum(0).abs() / 10.0;
  EXPECT_TRUE(torch::allclose(snap[1].to(torch::kDouble), expected, 1e-5, 1e-6)) << snap[1] << expected;
}

TEST(Scores, CropEqualsAFiniteDifferenceHessianVectorProduct) {
  auto m = one_hidden_mlp(torch::kDouble);
  const auto x = torch::randn({10, 1, 4, 4}, torch::kDouble);
  const auto y = torch::randint(3, {10});
  const auto crop = methods::gate_scores(m, {{x, y}}, true);
  const int64_t w = m.arch().groups[1].width;
  auto grad_at = [&](const torch::Tensor& c) {
    std::vector<torch::Tensor> gates(m.arch().groups.size());
    gates[1] = c.clone().requires_grad_(true);
    const auto loss = at::cross_entropy_loss(m.forward(x, true, nullptr, &gates), y);
    return torch::autograd::grad({loss}, {gates[1]})[0].detach();
  };
  const auto ones = torch::ones({w}, torch::kDouble);
  const auto g = grad_at(ones);
  const double eps = 1e-5;
  const auto hg = (grad_at(ones + eps * g) - grad_at(ones - eps * g)) / (2 * eps);
  EXPECT_TRUE(torch::allclose(crop[1].to(torch::kDouble), hg.abs(), 1e-4, 1e-8)) << crop[1] << hg;
}

TEST(Scores, CropRunsThroughConvolutionsAndResiduals) {
  nn::Model m(test::tiny_arch("resnet18"), 1);
  const auto s = methods::gate_scores(m, {{torch::randn({4, 3, 16, 16}), torch::randint(5, {4})}}, true);
  for (int g : m.arch().prunable_groups()) {
    ASSERT_EQ(s[g].size(0), m.arch().groups[g].width);
    EXPECT_TRUE(torch::isfinite(s[g]).all().item<bool>());
  }
}

TEST(Scores, GammaAndFilterL1SumOverEveryProducer) {
  nn::Model m(test::tiny_arch("resnet18"), 2);
  const auto& a = m.arch();
  const auto gs = methods::gamma_scores(m), ls = methods::filter_l1_scores(m);
  for (int g : a.prunable_groups()) {
    torch::Tensor eg = torch::zeros({a.groups[g].width}), el = torch::zeros({a.groups[g].width});
    for (size_t l = 0; l < a.layers.size(); ++l) {
      if (a.layers[l].out_group != g) continue;
      eg += m.layers()[l].gamma.detach().abs();
      el += m.layers()[l].weight.detach().abs().flatten(1).sum(1);
    }
    EXPECT_TRUE(torch::allclose(gs[g], eg)) << a.groups[g].name;
    EXPECT_TRUE(torch::allclose(ls[g], el)) << a.groups[g].name;
  }
}

class Baseline : public ::testing::TestWithParam<std::string> {};

TEST_P(Baseline, ReachesItsDensityAndLeavesAWorkingNetwork) {
  test::TempDir tmp;
  test::write_synthetic_idx(tmp.path, 384, 100);
  train::TrainConfig c;
  c.model = "mlp";
  c.mlp_widths = "32,16";
  c.width = 1.0;
  c.data = "mnist:" + tmp.path;
  c.batch_size = 32;
  c.steps = 36;  // 12 steps per epoch: EarlyCroP sees 2 epoch ends before its fallback
  c.lr = 0.01;
  c.method = GetParam();
  c.set("density", 0.25);
  c.set("lambda", 1e-3);
  c.progress = "none";
  c.threads = 1;
  c.out = tmp.path + "/run";
  const auto s = test::run_training(c);
  EXPECT_EQ(s["status"], "finished");
  // 48 units: global methods keep round(0.25 * 48) = 12, per-layer ones 8 + 4 = 12
  EXPECT_EQ(s["units_final"].get<int64_t>(), 12) << s.dump();
  EXPECT_FALSE(s["prune_events"].empty());
  EXPECT_GT(s["test_accuracy"].get<double>(), 0.3);  // still learns after pruning (chance 0.2)
  const auto ck = train::load_checkpoint(tmp.path + "/run/model.ckpt");
  nn::Model back(ck.arch, ck.layers);
  EXPECT_EQ(back.arch().units(), 12);
}

INSTANTIATE_TEST_SUITE_P(Methods, Baseline,
                         ::testing::Values("slimming", "snap", "crop", "earlycrop", "l1norm", "random",
                                           "gradual"));

TEST(Selection, SizeGoalsPickTheClosestGlobalAndPerLayerCut) {
  nn::ModelOptions o;
  o.model = "mlp";
  o.mlp_widths = {12, 7};
  o.in_channels = 1;
  o.in_height = o.in_width = 4;
  o.classes = 3;
  nn::Model m(nn::build_arch(o), 3);
  const auto& a = m.arch();
  torch::manual_seed(5);
  methods::GroupScores s(a.groups.size());
  for (int g : a.prunable_groups()) s[g] = torch::rand({a.groups[g].width});
  auto fraction = [&](const prune::KeepSets& keep, methods::SizeGoal::Measure me) {
    std::vector<int64_t> w(a.groups.size());
    for (size_t g = 0; g < a.groups.size(); ++g) w[g] = keep[g].empty() ? a.groups[g].width : keep[g].size();
    return methods::measure_fraction(a, w, me);
  };
  for (auto me : {methods::SizeGoal::Measure::Params, methods::SizeGoal::Measure::Flops,
                  methods::SizeGoal::Measure::Units}) {
    for (double f : {0.05, 0.2, 0.5, 0.9}) {
      const methods::SizeGoal goal{me, f, false};
      const double got = fraction(methods::keep_global_goal(m, s, goal), me);
      // no k does better (brute force over every k)
      double best = 1e9;
      for (int64_t k = 1; k <= a.units(); ++k) {
        best = std::min(best, std::abs(fraction(methods::keep_global_top(m, s, k), me) - f));
      }
      EXPECT_NEAR(std::abs(got - f), best, 1e-12) << "global f=" << f;
      // per layer: no density on a fine grid does better
      const double d = methods::per_layer_density(m, goal);
      const double got_pl = fraction(methods::keep_per_layer(m, s, d), me);
      double best_pl = 1e9;
      for (int i = 1; i <= 1000; ++i) {
        best_pl = std::min(best_pl, std::abs(fraction(methods::keep_per_layer(m, s, i / 1000.0), me) - f));
      }
      EXPECT_NEAR(std::abs(got_pl - f), best_pl, 1e-12) << "per-layer f=" << f;
    }
  }
  // a density goal is the paper's form, unchanged
  const methods::SizeGoal dens{methods::SizeGoal::Measure::Units, 0.4, true};
  EXPECT_EQ(methods::keep_global_goal(m, s, dens),
            methods::keep_global_top(m, s, methods::target_units(m, 0.4)));
  EXPECT_DOUBLE_EQ(methods::per_layer_density(m, dens), 0.4);
  // with a width multiple every count is a multiple of it (or the whole group), and the cut is
  // still the closest among such cuts
  for (double f : {0.1, 0.3, 0.6}) {
    const methods::SizeGoal goal{methods::SizeGoal::Measure::Params, f, false};
    const auto k4 = methods::keep_global_goal(m, s, goal, 4);
    for (int g : a.prunable_groups()) {
      const int64_t n = k4[g].size();
      EXPECT_TRUE(n % 4 == 0 || n == a.groups[g].width) << n;
      // the units added by the rounding are the group's best-scored ones
      const auto top = std::get<1>(s[g].topk(n));
      EXPECT_EQ(std::get<0>(top.sort()).sum().item<int64_t>(),
                std::accumulate(k4[g].begin(), k4[g].end(), int64_t{0}));
    }
    double best = 1e9;
    for (int64_t k = 1; k <= a.units(); ++k) {
      best =
          std::min(best, std::abs(fraction(methods::round_up_keep(m, s, methods::keep_global_top(m, s, k), 4),
                                           methods::SizeGoal::Measure::Params) -
                                  f));
    }
    EXPECT_NEAR(std::abs(fraction(k4, methods::SizeGoal::Measure::Params) - f), best, 1e-12);
  }
  // partial goals interpolate the kept fraction from 1 to the goal
  EXPECT_DOUBLE_EQ(methods::partial_goal({methods::SizeGoal::Measure::Params, 0.2, false}, 0.5).fraction,
                   0.6);
}

namespace {
train::TrainConfig baseline_config(const std::string& dir, const std::string& method) {
  train::TrainConfig c;
  c.model = "mlp";
  c.mlp_widths = "32,16";
  c.width = 1.0;
  c.data = "mnist:" + dir;
  c.batch_size = 32;
  c.steps = 36;
  c.lr = 0.01;
  c.method = method;
  c.set("lambda", 1e-3);
  c.progress = "none";
  c.threads = 1;
  c.out = dir + "/run";
  return c;
}
}  // namespace

class BaselineTarget : public ::testing::TestWithParam<std::string> {};

TEST_P(BaselineTarget, ReachesAParameterTarget) {
  test::TempDir tmp;
  test::write_synthetic_idx(tmp.path, 384, 100);
  auto c = baseline_config(tmp.path, GetParam());
  c.set("target-params", 0.2);
  const auto s = test::run_training(c);
  EXPECT_EQ(s["status"], "finished");
  const double f = s["params_final"].get<double>() / s["params_initial"].get<double>();
  // one first-layer unit is 145 of ~2.5k parameters (6%): the cut is within half of that
  EXPECT_NEAR(f, 0.2, 0.035) << s.dump();
  EXPECT_GT(s["test_accuracy"].get<double>(), 0.3);
}

INSTANTIATE_TEST_SUITE_P(Methods, BaselineTarget,
                         ::testing::Values("slimming", "snap", "crop", "earlycrop", "l1norm", "random",
                                           "gradual"));

namespace {
// gradual to 20% of the parameters over 60 steps, a cut every 5 steps from step 5; the target is
// reached at --target-by 0.3 of the run: step 18
train::TrainConfig gradual_config(const std::string& dir, const std::string& score) {
  auto c = baseline_config(dir, "gradual");
  c.steps = 60;
  c.set("prune-after", 5);
  c.set("prune-every", 5);
  c.set("target-params", 0.2);
  c.set("gradual-score", score);
  return c;
}
}  // namespace

TEST(Gradual, PrunesAlongItsScheduleThenTrains) {
  test::TempDir tmp;
  test::write_synthetic_idx(tmp.path, 384, 100);
  const auto s = test::run_training(gradual_config(tmp.path, "gamma"));
  const auto& ev = s["prune_events"];
  ASSERT_GE(ev.size(), 2u) << ev.dump();
  int64_t last_units = 1 << 30;
  for (const auto& e : ev) {
    EXPECT_LE(e["step"].get<int64_t>(), 18);
    EXPECT_LT(e["units_after"].get<int64_t>(), last_units);  // each cut removes more
    last_units = e["units_after"].get<int64_t>();
  }
  const double f = s["params_final"].get<double>() / s["params_initial"].get<double>();
  EXPECT_NEAR(f, 0.2, 0.035);
  // magnitude ranking: the same schedule, a different choice
  test::TempDir tmp2;
  test::write_synthetic_idx(tmp2.path, 384, 100);
  const auto s2 = test::run_training(gradual_config(tmp2.path, "magnitude"));
  EXPECT_NEAR(s2["params_final"].get<double>() / s2["params_initial"].get<double>(), 0.2, 0.035);
}

TEST(Methods, TheRegistryBuildsEveryMethodUnderItsNameAndNamesThemAllWhenRefusing) {
  std::set<std::string> seen;
  for (const auto& m : methods::registry()) {
    EXPECT_TRUE(seen.insert(m.name).second) << m.name << " is registered twice";
    EXPECT_FALSE(m.help.empty()) << m.name;
    train::TrainConfig c;
    c.method = m.name;
    c.set("density", 0.5);
    const auto built = methods::make_method(c);
    ASSERT_NE(built, nullptr) << m.name;
    EXPECT_EQ(built->name(), m.name);
    EXPECT_NE(methods::method_help().find("\n  " + m.name + ": "), std::string::npos) << m.name;
  }
  EXPECT_GE(seen.size(), 10u);
  train::TrainConfig c;
  c.method = "slimmming";
  try {
    methods::make_method(c);
    FAIL() << "an unknown method was built";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("slimmming"), std::string::npos);
    for (const auto& name : seen) EXPECT_NE(e.hint().find(name), std::string::npos) << name;
  }
}

// A method declares its options in its own file; they then behave like every field of the run:
// a flag and --config key, config.json, a check before any work, a "has no effect" warning with
// other methods. (Declared here at run time: each test runs in its own process.)
TEST(Methods, DeclaredOptionsAreFieldsJsonKeysChecksAndWarnings) {
  train::declare_options("test", {{"test-knob",
                                   "a test method's knob",
                                   int64_t{3},
                                   "baselines",
                                   {"test-method"},
                                   {},
                                   "",
                                   [](const train::TrainConfig& c) {
                                     if (c.get<int64_t>("test-knob") > 10)
                                       throw Error("--test-knob is too large", "<= 10");
                                   }}});
  EXPECT_THROW(train::declare_options("again", {{"test-knob", "twice", int64_t{1}, "baselines"}}),
               std::logic_error);

  train::TrainConfig c;
  EXPECT_EQ(c.get<int64_t>("test-knob"), 3);  // its default before anything sets it
  auto fs = train::fields(c);
  const auto knob =
      std::find_if(fs.begin(), fs.end(), [](const train::Field& f) { return f.name == "test-knob"; });
  ASSERT_NE(knob, fs.end());
  EXPECT_EQ(knob->group, "baselines");
  *std::get<int64_t*>(knob->ptr) = 7;  // what the CLI binding does with --test-knob 7
  EXPECT_EQ(c.get<int64_t>("test-knob"), 7);
  // Every declared option of the methods is a field too, after --method.
  const auto method =
      std::find_if(fs.begin(), fs.end(), [](const train::Field& f) { return f.name == "method"; });
  for (const auto& spec : train::declared_options()) {
    const auto f =
        std::find_if(fs.begin(), fs.end(), [&](const train::Field& x) { return x.name == spec.name; });
    EXPECT_TRUE(f != fs.end() && f > method) << spec.name;
  }

  const json j = train::to_json(c);
  EXPECT_EQ(j.at("test-knob"), 7);
  EXPECT_EQ(j.at("lambda"), 0.01);  // DemP's, declared in demp.cpp
  train::TrainConfig back;
  train::apply_json(back, j, "config.json");
  EXPECT_EQ(back.get<int64_t>("test-knob"), 7);
  EXPECT_EQ(train::to_json(back), j);
  EXPECT_NE(test::error_of([&] {
              train::apply_json(back, json{{"test-knob", "many"}}, "a.json");
            }).find("must be an integer"),
            std::string::npos);

  c.set("test-knob", 11);
  EXPECT_NE(test::error_of([&] { train::validate(c); }).find("--test-knob is too large"), std::string::npos);
  c.set("test-knob", 1);
  train::validate(c);
  c.method = "dense";
  c.given = {"test-knob"};
  const auto w = train::config_warnings(c, 100);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_NE(w[0].find("--test-knob has no effect with --method dense"), std::string::npos);
  c.method = "test-method";
  EXPECT_TRUE(train::config_warnings(c, 100).empty());

  EXPECT_THROW(c.get<double>("test-knob"), std::logic_error);      // another type than declared
  EXPECT_THROW(c.set("test-knob", "seven"), std::logic_error);     // likewise
  EXPECT_THROW(c.get<int64_t>("no-such-knob"), std::logic_error);  // declared by no method
}
