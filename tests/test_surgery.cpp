// The surgery invariants (DESIGN.md principle 5), for every model of the zoo:
//  1. removing units forced dead leaves the eval-mode output unchanged;
//  2. an optimizer step on the pruned network equals the same step on the dense network
//     restricted to the survivors (SGDW and AdamW, with non-trivial state);
//  3. random keep sets leave a network that runs forward, backward and steps.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "demp/common/error.h"
#include "demp/data/dataset.h"
#include "demp/nn/model.h"
#include "demp/prune/surgery.h"
#include "demp/train/optim.h"
#include "test_util.h"

using namespace demp;

namespace {

// Forces every third unit of each prunable group dead (γ = 0, β very negative on all its
// producers' BatchNorm) and returns the keep sets of the survivors.
prune::KeepSets force_dead(nn::Model& m) {
  torch::NoGradGuard g;
  const auto& a = m.arch();
  prune::KeepSets keep(a.groups.size());
  for (int gi : a.prunable_groups()) {
    const int64_t w = a.groups[gi].width;
    std::vector<int64_t> dead;
    for (int64_t j = 0; j < w; ++j) {
      if (j % 3 == 1) {
        dead.push_back(j);
      } else {
        keep[gi].push_back(j);
      }
    }
    for (size_t l = 0; l < a.layers.size(); ++l) {
      if (a.layers[l].out_group != gi) continue;
      auto& t = m.layers()[l];
      for (int64_t j : dead) {
        t.gamma[j] = 0.0f;
        t.beta[j] = -1e4f;
      }
    }
  }
  return keep;
}

void train_step(nn::Model& m, train::Optimizer& opt, const torch::Tensor& x, const torch::Tensor& y) {
  auto params = m.parameters();
  for (auto& p : params) {
    if (p.grad().defined()) p.mutable_grad().zero_();
  }
  at::cross_entropy_loss(m.forward(x, true), y).backward();
  opt.step(params, 1e-2);
}

void expect_close(const torch::Tensor& a, const torch::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const double diff = (a - b).abs().max().item<double>();
  const double scale = std::max(1.0, b.abs().max().item<double>());
  EXPECT_LE(diff, 1e-9 * scale) << what;
}

class Surgery : public ::testing::TestWithParam<std::string> {};

TEST_P(Surgery, RemovingDeadUnitsLeavesEvalOutputUnchanged) {
  auto arch = test::tiny_arch(GetParam());
  nn::Model m(arch, 3);
  {  // a few train-mode passes so that BatchNorm's running statistics are not trivial
    torch::NoGradGuard g;
    for (int i = 0; i < 3; ++i) m.forward(torch::randn({16, 3, 16, 16}) * 2 + 0.5, true);
  }
  const auto keep = force_dead(m);
  const auto x = torch::randn({8, 3, 16, 16});
  torch::NoGradGuard g;
  const auto before = m.forward(x, false);
  const int64_t units = m.arch().units();
  const auto changes = prune::remove_units(m, nullptr, keep);
  EXPECT_FALSE(changes.empty());
  EXPECT_LT(m.arch().units(), units);
  const auto after = m.forward(x, false);
  EXPECT_LE((before - after).abs().max().item<double>(), 1e-5);
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  EXPECT_EQ(n, m.arch().params());
}

TEST_P(Surgery, ScanFindsForcedDeadUnits) {
  auto arch = test::tiny_arch(GetParam());
  nn::Model m(arch, 4);
  const auto keep = force_dead(m);
  const auto images = torch::randn({40, 3, 16, 16});
  const auto scan = prune::scan_dead(m, images, 16, 0.0, {1e-5, 1e-2});
  for (int gi : m.arch().prunable_groups()) {
    ASSERT_TRUE(scan.dead[gi].defined());
    std::vector<bool> kept(m.arch().groups[gi].width, false);
    for (int64_t j : keep[gi]) kept[j] = true;
    for (int64_t j = 0; j < m.arch().groups[gi].width; ++j) {
      if (!kept[j]) {
        EXPECT_TRUE(scan.dead[gi][j].item<bool>()) << m.arch().groups[gi].name << " unit " << j;
      }
    }
  }
  ASSERT_EQ(scan.quasi_dead.size(), 2u);
  EXPECT_GE(scan.quasi_dead[0], scan.dead_total);
  EXPECT_GE(scan.quasi_dead[1], scan.quasi_dead[0]);
  // keep_live keeps every forced-live unit that the scan saw active, and never empties a group
  const auto live = prune::keep_live(m, scan);
  for (int gi : m.arch().prunable_groups()) EXPECT_FALSE(live[gi].empty());
}

// In float64: Adam divides by sqrt(v), so in float32 a gradient that is ~1e-9 on both sides but
// differs in its rounding (the pruned convolutions sum in another order) would become visibly
// different updates. Double precision makes the comparison strict.
nn::Model double_model(const nn::Arch& arch, uint64_t seed) {
  nn::Model m(arch, seed);
  for (auto& t : m.layers()) {
    for (torch::Tensor* x : {&t.weight, &t.bias, &t.gamma, &t.beta}) {
      if (x->defined()) *x = x->detach().to(torch::kDouble).requires_grad_(true);
    }
    for (torch::Tensor* x : {&t.running_mean, &t.running_var}) {
      if (x->defined()) *x = x->to(torch::kDouble);
    }
  }
  return m;
}

void check_step_equivalence(const std::string& model, const std::string& optimizer) {
  auto arch = test::tiny_arch(model);
  nn::Model dense = double_model(arch, 5);
  const auto keep = force_dead(dense);
  train::OptimOptions oo;
  oo.name = optimizer;
  oo.weight_decay = 0.01;
  auto opt_d = train::make_optimizer(oo);
  auto gen = demp::make_generator(1, demp::kMisc, 0);
  std::vector<torch::Tensor> xs, ys;
  for (int i = 0; i < 4; ++i) {
    xs.push_back(torch::randn({12, 3, 16, 16}, gen, torch::kDouble));
    ys.push_back(torch::randint(5, {12}, gen, torch::kLong));
  }
  for (int i = 0; i < 3; ++i) train_step(dense, *opt_d, xs[i], ys[i]);  // warm: non-trivial state

  nn::Model pruned = test::clone_model(dense);
  auto opt_p = train::make_optimizer(oo);
  test::copy_state(*opt_d, *opt_p);
  prune::remove_units(pruned, &opt_p->state(), keep);
  EXPECT_EQ(opt_p->steps(), opt_d->steps());

  train_step(dense, *opt_d, xs[3], ys[3]);
  train_step(pruned, *opt_p, xs[3], ys[3]);

  // Restrict the dense network (and its optimizer state) to the survivors.
  nn::Model restricted = test::clone_model(dense);
  auto opt_r = train::make_optimizer(oo);
  test::copy_state(*opt_d, *opt_r);
  prune::remove_units(restricted, &opt_r->state(), keep);
  const auto pp = pruned.parameters(), pr = restricted.parameters();
  const auto infos = pruned.param_infos();
  ASSERT_EQ(pp.size(), pr.size());
  for (size_t i = 0; i < pp.size(); ++i) {
    expect_close(pp[i], pr[i], model + "/" + optimizer + " " + infos[i].name());
    expect_close(pp[i].grad(), pr[i].grad(), "grad of " + infos[i].name());
    for (size_t k = 0; k < opt_p->state()[i].size(); ++k) {
      expect_close(opt_p->state()[i][k], opt_r->state()[i][k], "state of " + infos[i].name());
    }
  }
  for (size_t l = 0; l < pruned.layers().size(); ++l) {
    if (!pruned.arch().layers[l].bn) continue;
    expect_close(pruned.layers()[l].running_mean, restricted.layers()[l].running_mean, "running mean");
    expect_close(pruned.layers()[l].running_var, restricted.layers()[l].running_var, "running var");
  }
}

TEST_P(Surgery, SgdwStepOnPrunedEqualsDenseStepRestricted) { check_step_equivalence(GetParam(), "sgdw"); }
TEST_P(Surgery, AdamwStepOnPrunedEqualsDenseStepRestricted) { check_step_equivalence(GetParam(), "adamw"); }

TEST_P(Surgery, RandomKeepSetsLeaveAWorkingNetwork) {
  auto arch = test::tiny_arch(GetParam());
  nn::Model m(arch, 6);
  train::OptimOptions oo;
  auto opt = train::make_optimizer(oo);
  const auto x = torch::randn({6, 3, 16, 16});
  const auto y = torch::randint(5, {6});
  train_step(m, *opt, x, y);
  auto gen = demp::make_generator(9, demp::kMisc, 1);
  prune::KeepSets keep(m.arch().groups.size());
  for (int gi : m.arch().prunable_groups()) {
    const int64_t w = m.arch().groups[gi].width;
    const int64_t k = 1 + torch::randint(w, {1}, gen, torch::kLong).item<int64_t>();
    auto idx = std::get<0>(torch::randperm(w, gen).slice(0, 0, std::min(k, w)).sort());
    keep[gi].assign(idx.data_ptr<int64_t>(), idx.data_ptr<int64_t>() + idx.size(0));
  }
  prune::remove_units(m, &opt->state(), keep);
  for (int gi : m.arch().prunable_groups()) {
    EXPECT_EQ(m.arch().groups[gi].width, static_cast<int64_t>(keep[gi].size()));
  }
  train_step(m, *opt, x, y);
  const auto out = m.forward(x, false);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{6, 5}));
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
}

INSTANTIATE_TEST_SUITE_P(Models, Surgery, ::testing::Values("mlp", "vgg16", "resnet18", "resnet50"));

TEST(SurgeryErrors, EmptyingAGroupOrPruningLogitsIsRefused) {
  nn::Model m(test::tiny_arch("mlp"), 0);
  prune::KeepSets keep(m.arch().groups.size());
  keep.back() = {0, 1};  // the logits
  EXPECT_THROW(prune::remove_units(m, nullptr, keep), Error);
  prune::KeepSets bad(m.arch().groups.size());
  bad[1] = {3, 2};  // not sorted
  EXPECT_THROW(prune::remove_units(m, nullptr, bad), Error);
}

TEST(SurgeryErrors, AllDeadGroupKeepsItsMostActiveUnit) {
  nn::Model m(test::tiny_arch("mlp"), 0);
  {
    torch::NoGradGuard g;
    m.layers()[0].gamma.zero_();
    m.layers()[0].beta.fill_(-1.0f);
  }
  const auto scan = prune::scan_dead(m, torch::randn({10, 3, 16, 16}), 5);
  EXPECT_EQ(scan.dead[1].sum().item<int64_t>(), m.arch().groups[1].width);
  const auto keep = prune::keep_live(m, scan);
  EXPECT_EQ(keep[1].size(), 1u);
  prune::remove_units(m, nullptr, keep);
  EXPECT_EQ(m.arch().groups[1].width, 1);
  EXPECT_EQ(m.forward(torch::randn({2, 3, 16, 16}), false).size(1), 5);
}

TEST(SkipMaps, InputAndOutputOfABlockShrinkIndependently) {
  nn::Model m(test::tiny_arch("resnet18"), 1);
  const auto& a = m.arch();
  // The first identity skip: layer1.0 (stem -> layer1.0.out).
  ASSERT_FALSE(a.skips.empty());
  const auto s0 = a.skips[0];
  prune::KeepSets keep(a.groups.size());
  const int64_t w = a.groups[s0.in_group].width;
  for (int64_t j = 0; j < w; ++j) {
    if (j != 0) keep[s0.in_group].push_back(j);       // drop input unit 0
    if (j != w - 1) keep[s0.out_group].push_back(j);  // drop output unit w-1
  }
  prune::remove_units(m, nullptr, keep);
  const auto& s = m.arch().skips[0];
  // entries (1..w-2) -> (1..w-2) survive, renumbered to (0..w-3) -> (1..w-2)... of the new widths
  ASSERT_EQ(static_cast<int64_t>(s.src.size()), w - 2);
  for (size_t i = 0; i < s.src.size(); ++i) {
    EXPECT_EQ(s.src[i], static_cast<int64_t>(i));      // input j+1 is now j
    EXPECT_EQ(s.dst[i], static_cast<int64_t>(i) + 1);  // output j+1 stays j+1
  }
  EXPECT_FALSE(s.identity());
  EXPECT_EQ(m.forward(torch::randn({2, 3, 16, 16}), true).size(1), 5);
}

}  // namespace

namespace {
TEST(WidthMultiple, KeepsLiveUnitsPlusTheMostActiveDeadOnesAndTheSameOutput) {
  nn::Model m(test::tiny_arch("resnet18"), 7);
  const auto forced = force_dead(m);
  const auto images = torch::randn({24, 3, 16, 16});
  const auto scan = prune::scan_dead(m, images, 12);
  const auto keep = prune::keep_live(m, scan, 4);
  for (int g : m.arch().prunable_groups()) {
    const int64_t w = m.arch().groups[g].width, n = static_cast<int64_t>(keep[g].size());
    EXPECT_TRUE(n % 4 == 0 || n == w) << m.arch().groups[g].name << " keeps " << n;
    for (int64_t j = 0; j < w; ++j) {  // every live unit is kept
      if (!scan.dead[g][j].item<bool>()) {
        EXPECT_TRUE(std::binary_search(keep[g].begin(), keep[g].end(), j));
      }
    }
  }
  torch::NoGradGuard ng;
  const auto before = m.forward(images, false);
  prune::remove_units(m, nullptr, keep);
  EXPECT_LE((m.forward(images, false) - before).abs().max().item<double>(), 1e-5);
}
}  // namespace
