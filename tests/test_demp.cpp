// DemP: noise only on live parameters and never in optimizer state, a dead unit only decays and
// is found and removed without changing the output, whole runs prune, learn and reproduce.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/common/normal.h"
#include "demp/data/dataset.h"
#include "demp/methods/demp.h"
#include "demp/nn/model.h"
#include "demp/prune/surgery.h"
#include "demp/train/run_dir.h"
#include "demp/train/trainer.h"
#include "test_util.h"

using namespace demp;
using nlohmann::json;

namespace {

// An MLP with two hidden layers on channels×size×size images.
nn::Arch small_mlp(int64_t w1, int64_t w2, int64_t channels, int64_t size, int64_t classes) {
  nn::ModelOptions mo;
  mo.model = "mlp";
  mo.mlp_widths = {w1, w2};
  mo.in_channels = channels;
  mo.in_height = mo.in_width = size;
  mo.classes = classes;
  return nn::build_arch(mo);
}

// 256 training and 64 test images of 12×12 in MNIST's IDX format, written into `tmp`.
data::DataBundle synthetic_mnist(const test::TempDir& tmp) {
  test::write_synthetic_idx(tmp.path, 256, 64);
  return data::load("mnist:" + tmp.path);
}

nn::Model mlp_with_grads(uint64_t seed) {
  nn::Model m(test::tiny_arch("mlp"), seed);
  const auto x = torch::randn({8, 3, 16, 16}, demp::make_generator(seed, demp::kMisc, 0), torch::kFloat);
  m.forward(x, true).square().sum().backward();
  torch::NoGradGuard g;
  // Zero the gradient of some parameters, as a unit silent on the whole batch would have.
  m.layers()[0].weight.mutable_grad().slice(0, 0, 1).zero_();
  m.layers()[0].gamma.mutable_grad().slice(0, 0, 1).zero_();
  m.layers()[0].weight.mutable_grad().select(1, 7).zero_();
  return m;
}

}  // namespace

TEST(Noise, LandsOnlyWhereTheGradientIsNonZeroAndIsReproducible) {
  auto m1 = mlp_with_grads(1), m2 = mlp_with_grads(1);
  train::OptimOptions oo;
  auto opt = train::make_optimizer(oo);
  auto p1 = m1.parameters();
  opt->step(p1, 1e-3);
  std::vector<torch::Tensor> before, state_before;
  for (const auto& p : p1) before.push_back(p.detach().clone());
  for (const auto& s : opt->state()) {
    for (const auto& t : s) state_before.push_back(t.clone());
  }
  auto gen1 = demp::make_generator(42, demp::kNoise, 7);
  methods::add_noise(p1, 0.1, methods::NoiseMask::Live, gen1);
  for (size_t i = 0; i < p1.size(); ++i) {
    const auto moved = (p1[i] - before[i]).ne(0);
    const auto live = p1[i].grad().ne(0);
    EXPECT_TRUE(torch::equal(moved, live)) << "parameter " << i;
    EXPECT_GT(live.sum().item<int64_t>(), 0) << "parameter " << i;  // the test means something
  }
  EXPECT_FALSE(p1[0].grad().ne(0).all().item<bool>());
  size_t k = 0;
  for (const auto& s : opt->state()) {
    for (const auto& t : s) EXPECT_TRUE(torch::equal(t, state_before[k++])) << "optimizer state changed";
  }
  // same seed and step: the same noise; another step: other noise
  auto opt2 = train::make_optimizer(oo);
  auto p2 = m2.parameters();
  opt2->step(p2, 1e-3);
  auto gen2 = demp::make_generator(42, demp::kNoise, 7);
  methods::add_noise(p2, 0.1, methods::NoiseMask::Live, gen2);
  for (size_t i = 0; i < p1.size(); ++i) EXPECT_TRUE(torch::equal(p1[i], p2[i]));
  auto gen3 = demp::make_generator(42, demp::kNoise, 8);
  methods::add_noise(p2, 0.1, methods::NoiseMask::Live, gen3);
  EXPECT_FALSE(torch::equal(p1[0], p2[0]));
}

TEST(Noise, MaskAllAndOff) {
  auto m = mlp_with_grads(2);
  auto p = m.parameters();
  const auto w0 = p[0].detach().clone();
  auto gen = demp::make_generator(1, demp::kNoise, 0);
  methods::add_noise(p, 0.1, methods::NoiseMask::Off, gen);
  EXPECT_TRUE(torch::equal(p[0], w0));
  methods::add_noise(p, 0.1, methods::NoiseMask::All, gen);
  EXPECT_TRUE((p[0] - w0).ne(0).all().item<bool>());  // the zero-gradient rows too
  EXPECT_THROW(methods::parse_noise_mask("some"), Error);
}

TEST(Regularizer, ValuesOfEachKind) {
  nn::Model m(test::tiny_arch("mlp"), 0);
  {
    torch::NoGradGuard g;
    m.layers()[0].gamma.fill_(-0.5f);
  }
  const double w0 = m.arch().groups[1].width, w1 = m.arch().groups[2].width;
  EXPECT_NEAR(methods::regularizer("l1-gamma", m).item<double>(), 0.5 * w0 + w1, 1e-4);
  double l1 = 0, l2 = 0, rsq = 0;
  for (const auto& p : m.parameters()) {
    l1 += p.abs().sum().item<double>();
    l2 += 0.5 * p.square().sum().item<double>();
    rsq += 0.5 * p.clamp_min(0).square().sum().item<double>();
  }
  EXPECT_NEAR(methods::regularizer("l1", m).item<double>(), l1, 1e-3);
  EXPECT_NEAR(methods::regularizer("l2", m).item<double>(), l2, 1e-3);
  EXPECT_NEAR(methods::regularizer("relu-sq", m).item<double>(), rsq, 1e-3);
  EXPECT_THROW(methods::regularizer("l0", m), Error);
  // --l1-cost: Σ_l w_l Σ|γ_l|
  EXPECT_NEAR(methods::regularizer("l1-gamma", m, {2.0, 0.25}).item<double>(), 2 * 0.5 * w0 + 0.25 * w1, 1e-4);
}

TEST(L1Cost, EachUnitWeighsWhatItCostsOverTheMeanUnit) {
  // 16 inputs -> 6 -> 4 -> 3 classes. FLOPs per image 2·(16·6 + 6·4 + 4·3): a unit of the first
  // hidden group costs 2·(16 + 4) = 40, one of the second 2·(6 + 3) = 18; the mean unit
  // (6·40 + 4·18) / 10 = 31.2.
  const auto a = small_mlp(6, 4, 1, 4, 3);
  ASSERT_EQ(a.flops(), 2 * (16 * 6 + 6 * 4 + 4 * 3));
  const auto w = methods::l1_cost_weights(a, methods::L1Cost::Flops);
  ASSERT_EQ(w.size(), 2u);  // one per BatchNorm
  EXPECT_NEAR(w[0], 40 / 31.2, 1e-12);
  EXPECT_NEAR(w[1], 18 / 31.2, 1e-12);
  // parameters: weights + bias / BN of the producer and the consumer's weights
  nn::Arch less = a;
  less.groups[1].width -= 1;
  const double c1 = static_cast<double>(a.params() - less.params());
  less = a;
  less.groups[2].width -= 1;
  const double c2 = static_cast<double>(a.params() - less.params());
  EXPECT_GT(c1, c2);
  const auto wp = methods::l1_cost_weights(a, methods::L1Cost::Params);
  EXPECT_NEAR(wp[0], c1 / ((6 * c1 + 4 * c2) / 10), 1e-12);
  EXPECT_NEAR(wp[1], c2 / ((6 * c1 + 4 * c2) / 10), 1e-12);
  // the weights follow the widths: a narrower second group makes a first-group unit cheaper
  const auto w2 = methods::l1_cost_weights(small_mlp(6, 2, 1, 4, 3), methods::L1Cost::Flops);
  EXPECT_NEAR(w2[0], 2.0 * (16 + 2) / ((6 * 2.0 * (16 + 2) + 2 * 2.0 * (6 + 3)) / 8), 1e-12);
  EXPECT_TRUE(methods::l1_cost_weights(a, methods::L1Cost::None).empty());
  EXPECT_EQ(methods::parse_l1_cost("params"), methods::L1Cost::Params);
  EXPECT_STREQ(methods::l1_cost_name(methods::parse_l1_cost("flops")), "flops");
  EXPECT_THROW(methods::parse_l1_cost("bytes"), Error);
}

TEST(DempMethod, DeadUnitOnlyDecaysIsFoundAndRemovedWithoutChangingTheOutput) {
  test::TempDir tmp;
  auto data = synthetic_mnist(tmp);
  train::TrainConfig cfg;
  cfg.method = "demp";
  cfg.set("lambda", 0.01);
  cfg.set("noise", 0.01);  // large, so that any noise on the dead unit would show
  cfg.set("prune-every", 5);
  cfg.set("prune-after", 0);  // scan at step 5 already
  cfg.set("check-size", 128);
  cfg.set("check-batch", 64);
  cfg.weight_decay = 0.01;
  nn::Model model(small_mlp(16, 8, 1, 12, 10), 3);
  {  // unit 0 of fc1 dead: γ = 0, β < 0
    torch::NoGradGuard g;
    model.layers()[0].gamma[0] = 0.0f;
    model.layers()[0].beta[0] = -5.0f;
  }
  train::OptimOptions oo;
  oo.weight_decay = cfg.weight_decay;
  auto opt = train::make_optimizer(oo);
  train::TrainContext ctx{cfg, data, model, *opt, nullptr, torch::kCPU};
  ctx.total_steps = 20;
  ctx.steps_per_epoch = 4;
  methods::Demp demp(cfg);
  demp.begin(ctx);
  data::Batcher batcher(data.train, 64, 0, {});
  const double lr = 1e-2;
  auto dead_row = [&] { return model.layers()[0].weight[0].detach().clone(); };
  auto dead_col = [&] { return model.layers()[1].weight.select(1, 0).detach().clone(); };
  for (int s = 0; s < 5; ++s) {
    const auto row0 = dead_row(), col0 = dead_col();
    const float beta0 = model.layers()[0].beta[0].item<float>();
    auto params = model.parameters();
    for (auto& p : params) {
      if (p.grad().defined()) p.mutable_grad().zero_();
    }
    auto [x, y] = batcher.batch(s);
    demp.before_step(ctx);
    auto loss = at::cross_entropy_loss(model.forward(x, true), y);
    if (const auto extra = demp.extra_loss(ctx); extra.defined()) loss = loss + extra;
    loss.backward();
    opt->step(params, lr);
    demp.after_step(ctx);
    ++ctx.step;
    const double decay = 1 - lr * cfg.weight_decay;
    EXPECT_TRUE(torch::allclose(dead_row(), row0 * decay, 1e-6, 1e-7)) << "step " << s;
    EXPECT_TRUE(torch::allclose(dead_col(), col0 * decay, 1e-6, 1e-7)) << "step " << s;
    EXPECT_NEAR(model.layers()[0].beta[0].item<float>(), beta0 * decay, 1e-5);
    EXPECT_EQ(model.layers()[0].gamma[0].item<float>(), 0.0f);
  }
  // the scan at the prune point finds it, removal leaves the eval output unchanged
  const auto scan = methods::scan_check_set(ctx, ctx.step, methods::demp_options(ctx.cfg));
  EXPECT_TRUE(scan.dead[1][0].item<bool>());
  torch::NoGradGuard ng;
  const auto before = model.forward(data.test.images, false);
  const int64_t width = model.arch().groups[1].width;
  demp.prune_point(ctx);
  EXPECT_LT(model.arch().groups[1].width, width);
  EXPECT_LE((model.forward(data.test.images, false) - before).abs().max().item<double>(), 1e-5);
  EXPECT_FALSE(ctx.prune_events.empty());
}

namespace {
train::TrainConfig fm_demp(const std::string& out, double lambda) {
  train::TrainConfig c;
  c.model = "mlp";
  c.mlp_widths = "64,32";
  c.width = 1.0;
  c.data = "fashion-mnist";
  c.train_limit = 4096;
  c.test_limit = 1000;
  c.batch_size = 64;
  c.steps = 128;
  c.lr = 2e-2;  // AdamW moves γ by at most ~lr a step: γ must travel from 1 to 0 within the run
  c.method = "demp";
  c.set("lambda", lambda);
  c.set("prune-every", 16);
  c.set("check-size", 512);
  c.seed = 5;
  c.progress = "none";
  c.threads = 1;
  c.out = out;
  return c;
}
}  // namespace

TEST(DempRun, FashionMnistSliceRemovesUnitsLearnsAndReproduces) {
  test::TempDir tmp;
  const auto a = test::run_training(fm_demp(tmp.path + "/a", 0.05));
  EXPECT_LT(a["units_final"].get<int64_t>(), a["units_initial"].get<int64_t>());
  EXPECT_LT(a["params_final"].get<int64_t>(), a["params_initial"].get<int64_t>());
  EXPECT_GT(a["test_accuracy"].get<double>(), 0.6);  // chance is 0.1
  EXPECT_FALSE(a["prune_events"].empty());
  const auto b = test::run_training(fm_demp(tmp.path + "/b", 0.05));
  EXPECT_EQ(a["test_accuracy"], b["test_accuracy"]);
  EXPECT_EQ(a["live_units_per_group"], b["live_units_per_group"]);
  // metrics rows carry the schedule values and the scan
  auto text = read_file(tmp.path + "/a/metrics.jsonl");
  text.pop_back();  // the last row, after the scans
  const auto row = json::parse(text.substr(text.rfind('\n') + 1));
  EXPECT_TRUE(row.contains("reg_lambda"));
  EXPECT_TRUE(row.contains("noise_std"));
  EXPECT_TRUE(row.contains("last_scan"));
}

TEST(DempMethod, ACollapsedGroupIsReportedAndKeepsOneUnit) {
  test::TempDir tmp;
  auto data = synthetic_mnist(tmp);
  train::TrainConfig cfg;
  cfg.method = "demp";
  cfg.set("check-size", 128);
  nn::Model model(small_mlp(16, 8, 1, 12, 10), 3);
  {  // every unit of fc2 dead, as a too-large λ* would leave it
    torch::NoGradGuard g;
    model.layers()[1].gamma.zero_();
    model.layers()[1].beta.fill_(-1.0f);
  }
  train::OptimOptions oo;
  auto opt = train::make_optimizer(oo);
  train::RunDir run(tmp.path + "/run");
  train::TrainContext ctx{cfg, data, model, *opt, &run, torch::kCPU};
  ctx.total_steps = 100;
  ctx.steps_per_epoch = 4;
  methods::Demp demp(cfg);
  demp.begin(ctx);
  ctx.step = 60;  // a prune point (every 5 steps) after --prune-after
  demp.prune_point(ctx);
  EXPECT_EQ(model.arch().groups[2].width, 1);
  EXPECT_EQ(demp.state()["collapsed_groups"], json::array({"fc2"}));
  EXPECT_NE(read_file(tmp.path + "/run/log.txt").find("every unit of group fc2 is dead"), std::string::npos);
  // the network still runs and trains
  auto params = model.parameters();
  at::cross_entropy_loss(model.forward(data.train.images.slice(0, 0, 32), true),
                         data.train.labels.slice(0, 0, 32))
      .backward();
  opt->step(params, 1e-3);
}

// The step-0 bug: BatchNorm's running statistics are still (0, 1) at step 0, so the eval-mode test
// would flag a unit whose raw pre-BN output is <= 0 on every image although, normalised by the
// batch's statistics in training, it is active on about half of every batch.
TEST(DempMethod, NothingActiveInTrainModeIsRemovedAtStepZero) {
  test::TempDir tmp;
  auto data = synthetic_mnist(tmp);
  train::TrainConfig cfg;
  cfg.method = "demp";
  cfg.set("check-size", 128);
  cfg.set("prune-after", 0);  // even when asked to scan from the start
  nn::Model model(small_mlp(16, 8, 1, 12, 10), 3);
  {  // fc2 unit 0 reads fc1's (non-negative) outputs through negative weights only
    torch::NoGradGuard g;
    model.layers()[1].weight[0].copy_(-model.layers()[1].weight[0].abs() - 0.01);
  }
  std::vector<torch::Tensor> groups;
  {
    torch::NoGradGuard g;
    nn::Model probe = test::clone_model(model);
    probe.forward(data.train.images.slice(0, 0, 64), /*train=*/true, &groups);
  }
  ASSERT_GT(groups[2].select(1, 0).gt(0).sum().item<int64_t>(), 10) << "the unit is active in train mode";
  // what the eval-mode test says with the initial statistics: dead
  const auto raw = prune::scan_dead(model, data.train.images.slice(0, 0, 128), 64);
  ASSERT_TRUE(raw.dead[2][0].item<bool>()) << "the test would be meaningless otherwise";
  train::OptimOptions oo;
  auto opt = train::make_optimizer(oo);
  train::TrainContext ctx{cfg, data, model, *opt, nullptr, torch::kCPU};
  ctx.total_steps = 100;
  ctx.steps_per_epoch = 4;
  methods::Demp demp(cfg);
  demp.begin(ctx);
  demp.prune_point(ctx);
  EXPECT_EQ(model.arch().groups[2].width, 8);
  EXPECT_TRUE(ctx.prune_events.empty());
}

namespace {
// One BN layer's γ and β set by hand in a tiny MLP, after one real optimizer step (state exists).
struct ProxCase {
  nn::Model model{small_mlp(8, 8, 3, 16, 5), 1};
  std::unique_ptr<train::Optimizer> opt;
  explicit ProxCase(const std::string& optimizer) {
    train::OptimOptions oo;
    oo.name = optimizer;
    oo.weight_decay = 0;
    opt = train::make_optimizer(oo);
    auto params = model.parameters();
    const auto x = torch::randn({8, 3, 16, 16}, demp::make_generator(1, demp::kMisc, 0), torch::kFloat);
    at::cross_entropy_loss(model.forward(x, true), torch::arange(8) % model.arch().classes).backward();
    opt->step(params, 1e-3);
    torch::NoGradGuard g;
    auto& l = model.layers()[0];
    l.gamma.slice(0, 0, 6).copy_(torch::tensor({0.5f, 1e-6f, -1e-6f, -0.5f, 0.0f, 0.0f}));
    l.beta.slice(0, 0, 6).copy_(torch::tensor({0.3f, 0.3f, 0.3f, 0.3f, 0.2f, -0.2f}));
  }
};
torch::Tensor scalar(double v) { return torch::full({}, v, torch::kFloat); }
}  // namespace

TEST(ProximalL1, SgdIsTheSoftThresholdAtLrTimesLambda) {
  ProxCase c("sgdw");
  auto& l = c.model.layers()[0];
  const auto g0 = l.gamma.detach().clone(), b0 = l.beta.detach().clone();
  const double lr = 0.1, lam = 0.01;  // threshold 1e-3
  methods::proximal_l1_step(c.model, *c.opt, torch::full({}, lr, torch::kDouble), scalar(lam),
                            scalar(2 * lam), scalar(1), /*shrink_beta=*/true);
  const auto expect = g0.sign() * (g0.abs() - lr * lam).clamp_min(0);
  EXPECT_TRUE(torch::allclose(l.gamma, expect, 1e-6, 1e-7));
  EXPECT_FLOAT_EQ(l.gamma[0].item<float>(), 0.499f);
  EXPECT_EQ(l.gamma[1].item<float>(), 0.0f);  // small scales become exactly 0
  EXPECT_EQ(l.gamma[2].item<float>(), 0.0f);
  // β shrinks (at λ_β = 2λ: 2e-3) only where γ is now 0 and β > 0: the constant units
  EXPECT_FLOAT_EQ(l.beta[0].item<float>(), 0.3f);
  EXPECT_FLOAT_EQ(l.beta[1].item<float>(), 0.298f);
  EXPECT_FLOAT_EQ(l.beta[2].item<float>(), 0.298f);
  EXPECT_FLOAT_EQ(l.beta[3].item<float>(), 0.3f);
  EXPECT_FLOAT_EQ(l.beta[4].item<float>(), 0.198f);
  EXPECT_FLOAT_EQ(l.beta[5].item<float>(), -0.2f);  // already dead: untouched
  // the tensor-op form (what a GPU graph captures) computes the same
  ProxCase t("sgdw");
  methods::proximal_l1_step(t.model, *t.opt, torch::full({}, lr, torch::kDouble), scalar(lam),
                            scalar(2 * lam), scalar(1), true, {}, /*cpu_loop=*/false);
  EXPECT_TRUE(torch::allclose(t.model.layers()[0].gamma, l.gamma, 1e-6, 1e-8));
  EXPECT_TRUE(torch::allclose(t.model.layers()[0].beta, l.beta, 1e-6, 1e-8));
  // --l1-cost: the threshold of a norm layer is lr·λ·w_l, the same in both forms
  for (bool loop : {true, false}) {
    ProxCase w("sgdw");
    methods::proximal_l1_step(w.model, *w.opt, torch::full({}, lr, torch::kDouble), scalar(lam),
                              scalar(2 * lam), scalar(1), false, {}, loop, {3.0, 1.0});
    EXPECT_TRUE(torch::allclose(w.model.layers()[0].gamma, g0.sign() * (g0.abs() - 3 * lr * lam).clamp_min(0),
                                1e-6, 1e-7))
        << loop;
  }
  // without the shrink, β is left alone
  ProxCase d("sgdw");
  const auto bd = d.model.layers()[0].beta.detach().clone();
  methods::proximal_l1_step(d.model, *d.opt, torch::full({}, lr, torch::kDouble), scalar(lam), scalar(lam),
                            scalar(1), false);
  EXPECT_TRUE(torch::equal(d.model.layers()[0].beta, bd));
  // a β that would cross 0 stops at 0 (the unit is then dead: ReLU(0) = 0)
  ProxCase e("sgdw");
  methods::proximal_l1_step(e.model, *e.opt, torch::full({}, 1.0, torch::kDouble), scalar(1.0), scalar(1.0),
                            scalar(1), true);
  EXPECT_EQ(e.model.layers()[0].beta[4].item<float>(), 0.0f);
}

TEST(ProximalL1, AdamWThresholdIsInAdamsMetric) {
  ProxCase c("adamw");
  auto& l = c.model.layers()[0];
  const auto g0 = l.gamma.detach().clone();
  const auto infos = c.model.param_infos();
  size_t gi = 0;
  while (infos[gi].field != nn::ParamInfo::Gamma) ++gi;
  const auto v = c.opt->state()[gi][1].clone();
  ASSERT_GT(v.max().item<float>(), 0.0f);
  const double lr = 1e-3, lam = 0.05, corr = 1 - std::pow(0.999, 1);
  methods::proximal_l1_step(c.model, *c.opt, torch::full({}, lr, torch::kDouble), scalar(lam), scalar(lam),
                            scalar(corr), false);
  const auto thr = lr * lam / ((v / corr).sqrt() + 1e-8);
  EXPECT_TRUE(torch::allclose(l.gamma, g0.sign() * (g0.abs() - thr).clamp_min(0), 1e-5, 1e-7));
  // coordinates with different second moments are shrunk by different amounts
  EXPECT_GT((thr.max() / thr.min()).item<double>(), 1.5);
  // sticky zeros (scales that were 0 are held at λ_β) and the β shrink: the loop and the
  // tensor-op form agree
  ProxCase a("adamw"), b("adamw");
  std::vector<torch::Tensor> was_zero = methods::zero_scale_masks(a.model);
  was_zero[0][1] = true;
  for (auto* c : {&a, &b}) {
    methods::proximal_l1_step(c->model, *c->opt, torch::full({}, lr, torch::kDouble), scalar(lam),
                              scalar(3 * lam), scalar(corr), true, was_zero, /*cpu_loop=*/c == &a);
  }
  for (size_t i = 0; i < a.model.layers().size(); ++i) {
    if (!a.model.layers()[i].gamma.defined()) continue;
    EXPECT_TRUE(torch::allclose(a.model.layers()[i].gamma, b.model.layers()[i].gamma, 1e-5, 1e-8)) << i;
    EXPECT_TRUE(torch::allclose(a.model.layers()[i].beta, b.model.layers()[i].beta, 1e-5, 1e-8)) << i;
  }
  EXPECT_EQ(a.model.layers()[0].beta[4].item<float>() < 0.2f, true);  // a constant unit shrinks
}

TEST(ZeroScaleUnits, AResidualPathKeepsAUnitWhoseScalesAreZero) {
  nn::Model m(test::tiny_arch("resnet18"), 2);
  const auto& a = m.arch();
  // the first block's output group: produced by conv2's BN, fed by the stem through an identity skip
  int layer = -1, skip = -1;
  for (size_t s = 0; s < a.skips.size() && skip < 0; ++s) {
    for (size_t l = 0; l < a.layers.size(); ++l) {
      if (a.layers[l].out_group == a.skips[s].out_group && a.layers[l].bn) {
        skip = static_cast<int>(s);
        layer = static_cast<int>(l);
        break;
      }
    }
  }
  ASSERT_GE(skip, 0);
  const int out = a.skips[skip].out_group, in = a.skips[skip].in_group;
  {
    torch::NoGradGuard g;
    for (size_t l = 0; l < a.layers.size(); ++l) {
      if (a.layers[l].out_group == out && a.layers[l].bn) m.layers()[l].gamma[0] = 0.0f;
    }
  }
  auto z = methods::zero_scale_units(m);
  ASSERT_TRUE(z[out].defined());
  EXPECT_FALSE(z[out][0].item<bool>()) << "the skip from a live unit keeps it";
  {  // once the skip's source unit is switched off too, it goes
    torch::NoGradGuard g;
    for (size_t l = 0; l < a.layers.size(); ++l) {
      if (a.layers[l].out_group == in && a.layers[l].bn) m.layers()[l].gamma.zero_();
    }
  }
  z = methods::zero_scale_units(m);
  ASSERT_TRUE(z[in].defined());
  ASSERT_TRUE(z[in][a.skips[skip].src[0]].item<bool>()) << "the stem's scales are all 0";
  EXPECT_TRUE(z[out][a.skips[skip].dst[0]].item<bool>());
  EXPECT_EQ(a.skips[skip].dst[0], 0);
  (void)layer;
}

namespace {
train::TrainConfig fm_target(const std::string& out, double target) {
  auto c = fm_demp(out, 0.01);
  c.steps = 300;
  c.lr = 2e-3;
  c.set("prune-every", 0);  // the target's default: every 2% of the run
  c.set("prune-after", 20);
  c.set("target-params", target);
  c.set("target-by", 0.4);
  return c;
}
}  // namespace

TEST(DempTarget, ReachesTheParameterTargetAndResumesExactly) {
  test::TempDir tmp;
  const auto a = test::run_training(fm_target(tmp.path + "/a", 0.3));
  const double kept = a["params_final"].get<double>() / a["params_initial"].get<double>();
  EXPECT_NEAR(kept, 0.3, 0.02);
  EXPECT_GT(a["test_accuracy"].get<double>(), 0.6);
  EXPECT_TRUE(a["method_state"].contains("controller"));
  EXPECT_GE(a["method_state"]["controller"]["reached_step"].get<int64_t>(), 0);
  // interrupted mid-run and resumed: the same network, bit for bit
  auto part = fm_target(tmp.path + "/b", 0.3);
  part.stop_after = 120;
  EXPECT_EQ(test::run_training(part)["status"], "stopped");
  auto resume = fm_target(tmp.path + "/b", 0.3);
  resume.resume = true;
  const auto b = test::run_training(resume);
  EXPECT_EQ(a["test_accuracy"], b["test_accuracy"]);
  EXPECT_EQ(a["live_units_per_group"], b["live_units_per_group"]);
}

TEST(DempTarget, PlansFallFromTheWholeNetworkToTheTarget) {
  for (const auto plan : {methods::TargetPlan::Cosine, methods::TargetPlan::Cubic}) {
    EXPECT_DOUBLE_EQ(methods::planned_fall(plan, -0.5), 1.0) << static_cast<int>(plan);
    EXPECT_DOUBLE_EQ(methods::planned_fall(plan, 0.0), 1.0) << static_cast<int>(plan);
    EXPECT_NEAR(methods::planned_fall(plan, 1.0), 0.0, 1e-15) << static_cast<int>(plan);
    EXPECT_NEAR(methods::planned_fall(plan, 2.0), 0.0, 1e-15) << static_cast<int>(plan);
    for (int i = 0; i < 10; ++i)
      EXPECT_GT(methods::planned_fall(plan, i / 10.0), methods::planned_fall(plan, (i + 1) / 10.0)) << static_cast<int>(plan) << i;
  }
  EXPECT_NEAR(methods::planned_fall(methods::TargetPlan::Cosine, 0.5), 0.5, 1e-12);
  EXPECT_NEAR(methods::planned_fall(methods::TargetPlan::Cubic, 0.5), 0.125, 1e-12);  // most of the way by half
}

TEST(DempTarget, InvalidTargetsAreRefused) {
  train::TrainConfig c;
  c.set("target-params", 1.5);
  EXPECT_THROW(train::validate(c), Error);
  c.set("target-params", 0.1);
  c.set("target-flops", 0.1);
  EXPECT_THROW(train::validate(c), Error);
  c.set("target-flops", 0);
  c.set("target-by", 0);
  EXPECT_THROW(train::validate(c), Error);
  c.set("target-by", 0.3);
  c.set("l1-step", "proximal");
  EXPECT_THROW(train::validate(c), Error);
  c.set("l1-step", "prox");
  c.set("l1-cost", "bytes");
  EXPECT_THROW(train::validate(c), Error);
  c.set("l1-cost", "flops");
  c.set("regularizer", "l2");  // the cost weighs the L1 on norm scales only
  EXPECT_THROW(train::validate(c), Error);
  c.set("regularizer", "l1-gamma");
  EXPECT_NO_THROW(train::validate(c));
  c.set("target-plan", "linear");
  EXPECT_THROW(train::validate(c), Error);
}

// The CPU step's noise: only where the gradient is non-zero, N(0, σ²), and the same numbers
// whatever the number of threads (each block has its own generator).
TEST(Noise, BlockedDrawIsLiveOnlyGaussianAndThreadCountIndependent) {
  auto run = [](int threads) {
    at::set_num_threads(threads);
    auto m = mlp_with_grads(4);
    auto params = m.parameters();
    {
      torch::NoGradGuard g;
      // a large tensor spans several blocks
      params.push_back(torch::zeros({300000}));
      params.back().mutable_grad() = torch::ones({300000});
      params.back().mutable_grad().slice(0, 0, 1000).zero_();
    }
    const auto before = params.back().clone();
    methods::add_noise_blocked(params, 0.5, methods::NoiseMask::Live, 7, 3);
    return std::make_pair(m.layers()[0].weight.detach().clone(), (params.back() - before).clone());
  };
  const int saved = at::get_num_threads();
  const auto [w1, d1] = run(1);
  const auto [w2, d2] = run(2);
  at::set_num_threads(saved);
  EXPECT_TRUE(torch::equal(w1, w2));
  EXPECT_TRUE(torch::equal(d1, d2));
  EXPECT_EQ(d1.slice(0, 0, 1000).abs().max().item<float>(), 0.0f);  // zero gradient: no noise
  const auto live = d1.slice(0, 1000);
  EXPECT_NEAR(live.std().item<double>(), 0.5, 0.01);
  EXPECT_NEAR(live.mean().item<double>(), 0.0, 0.01);
  // rows of the unit silent on the batch got none either
  auto fresh = mlp_with_grads(4);
  EXPECT_TRUE(torch::equal(w1[0], fresh.layers()[0].weight[0]));
  // another step, other numbers
  auto m = mlp_with_grads(4);
  auto params = m.parameters();
  methods::add_noise_blocked(params, 0.5, methods::NoiseMask::Live, 7, 4);
  EXPECT_FALSE(torch::equal(m.layers()[0].weight, w1));
}

// The ziggurat of --noise-rng fast against the normal distribution: moments, tail masses and the
// Kolmogorov–Smirnov distance on a million draws (the KS bound is the 1% critical value).
TEST(FastNormal, IsStandardNormal) {
  FastNormal g(12345);
  const int n = 1000000;
  std::vector<double> x(n);
  double sum = 0, sum2 = 0, sum4 = 0;
  int over1 = 0, over2 = 0, over3 = 0, over4 = 0;
  for (int i = 0; i < n; ++i) {
    x[i] = g();
    sum += x[i];
    sum2 += x[i] * x[i];
    sum4 += x[i] * x[i] * x[i] * x[i];
    const double a = std::abs(x[i]);
    over1 += a > 1;
    over2 += a > 2;
    over3 += a > 3;
    over4 += a > 4;
  }
  EXPECT_NEAR(sum / n, 0.0, 0.005);
  EXPECT_NEAR(sum2 / n, 1.0, 0.005);
  EXPECT_NEAR(sum4 / n, 3.0, 0.05);  // kurtosis
  EXPECT_NEAR(over1 / double(n), 0.317311, 0.002);
  EXPECT_NEAR(over2 / double(n), 0.045500, 0.0007);
  EXPECT_NEAR(over3 / double(n), 0.002700, 0.00017);
  EXPECT_NEAR(over4 / double(n), 6.334e-5, 3.5e-5);  // the tail beyond the base layer is drawn
  std::sort(x.begin(), x.end());
  double ks = 0;
  for (int i = 0; i < n; ++i) {
    const double cdf = 0.5 * std::erfc(-x[i] / std::sqrt(2.0));
    ks = std::max({ks, std::abs(cdf - double(i) / n), std::abs(cdf - double(i + 1) / n)});
  }
  EXPECT_LT(ks, 1.63 / std::sqrt(double(n)));
  // a seed gives its numbers, another seed others
  FastNormal a(7), b(7), c(8);
  bool differ = false;
  for (int i = 0; i < 100; ++i) {
    const float va = a(), vb = b(), vc = c();
    EXPECT_EQ(va, vb);
    differ |= va != vc;
  }
  EXPECT_TRUE(differ);
}

TEST(Noise, FastBlockedDrawIsLiveOnlyGaussianAndThreadCountIndependent) {
  auto run = [](int threads) {
    at::set_num_threads(threads);
    torch::NoGradGuard g;
    std::vector<torch::Tensor> params{torch::zeros({300000})};
    params.back().mutable_grad() = torch::ones({300000});
    params.back().mutable_grad().slice(0, 0, 1000).zero_();
    methods::add_noise_blocked(params, 0.5, methods::NoiseMask::Live, 7, 3, /*fast=*/true);
    return params.back().clone();
  };
  const int saved = at::get_num_threads();
  const auto d1 = run(1), d2 = run(2);
  at::set_num_threads(saved);
  EXPECT_TRUE(torch::equal(d1, d2));
  EXPECT_EQ(d1.slice(0, 0, 1000).abs().max().item<float>(), 0.0f);
  const auto live = d1.slice(0, 1000);
  EXPECT_NEAR(live.std().item<double>(), 0.5, 0.01);
  EXPECT_NEAR(live.mean().item<double>(), 0.0, 0.01);
  // not the torch stream: other numbers, same law
  torch::NoGradGuard g;
  std::vector<torch::Tensor> p{torch::zeros({300000})};
  p.back().mutable_grad() = torch::ones({300000});
  methods::add_noise_blocked(p, 0.5, methods::NoiseMask::Live, 7, 3, /*fast=*/false);
  EXPECT_FALSE(torch::equal(p.back().slice(0, 1000), live));
}
