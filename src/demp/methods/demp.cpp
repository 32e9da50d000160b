#include "demp/methods/demp.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "demp/common/error.h"
#include "demp/common/normal.h"
#include "demp/data/dataset.h"
#include "demp/nn/model.h"
#include "demp/train/config.h"
#include "demp/train/optim.h"
#include "demp/train/schedule.h"
#include "demp/train/trainer.h"

namespace demp::methods {

torch::Tensor regularizer(const std::string& kind, const nn::Model& model,
                          const std::vector<double>& scale_weights) {
  torch::Tensor r;
  auto add = [&](const torch::Tensor& t) { r = r.defined() ? r + t : t; };
  if (kind == "l1-gamma") {
    const auto scales = model.norm_scales();
    for (size_t i = 0; i < scales.size(); ++i) {
      const auto term = scales[i].abs().sum();
      add(i < scale_weights.size() ? term * scale_weights[i] : term);
    }
  } else if (kind == "relu-sq") {
    for (const auto& p : model.parameters()) add(0.5 * p.clamp_min(0).square().sum());
  } else if (kind == "l1") {
    for (const auto& p : model.parameters()) add(p.abs().sum());
  } else if (kind == "l2") {
    for (const auto& p : model.parameters()) add(0.5 * p.square().sum());
  } else {
    throw Error("unknown --regularizer '" + kind + "'", "use l1-gamma, relu-sq, l1 or l2");
  }
  return r.defined() ? r : torch::zeros({}, torch::TensorOptions().device(model.device()));
}

std::vector<double> l1_cost_weights(const nn::Arch& a, L1Cost cost) {
  if (cost == L1Cost::None) return {};
  auto measure = [&](const nn::Arch& x) {
    return static_cast<double>(cost == L1Cost::Flops ? x.flops() : x.params());
  };
  // A unit's cost: what the measure loses when its group loses one unit (exact: both measures
  // are linear in each group's width), at the current widths.
  const double m = measure(a);
  std::vector<double> unit_cost(a.groups.size(), 0.0);
  double total = 0, units = 0;
  nn::Arch less = a;
  for (size_t g = 0; g < a.groups.size(); ++g) {
    if (!a.groups[g].prunable || a.groups[g].width < 1) continue;
    less.groups[g].width -= 1;
    unit_cost[g] = m - measure(less);
    less.groups[g].width += 1;
    total += unit_cost[g] * static_cast<double>(a.groups[g].width);
    units += static_cast<double>(a.groups[g].width);
  }
  const double mean = units > 0 && total > 0 ? total / units : 1.0;
  std::vector<double> w;
  for (const auto& l : a.layers) {
    if (!l.bn) continue;
    w.push_back(a.groups[l.out_group].prunable && unit_cost[l.out_group] > 0 ? unit_cost[l.out_group] / mean
                                                                             : 1.0);
  }
  return w;
}

L1Cost parse_l1_cost(const std::string& s) {
  if (s == "none") return L1Cost::None;
  if (s == "flops") return L1Cost::Flops;
  if (s == "params") return L1Cost::Params;
  throw Error("unknown --l1-cost '" + s + "'", "use none, flops or params");
}

const char* l1_cost_name(L1Cost c) {
  return c == L1Cost::Flops ? "flops" : c == L1Cost::Params ? "params" : "none";
}

NoiseMask parse_noise_mask(const std::string& s) {
  if (s == "live") return NoiseMask::Live;
  if (s == "all") return NoiseMask::All;
  if (s == "off") return NoiseMask::Off;
  throw Error("unknown --noise-mask '" + s + "'", "use live, all or off");
}

void add_noise(std::vector<torch::Tensor>& params, double sigma, NoiseMask mask, torch::Generator& gen) {
  if (mask == NoiseMask::Off || sigma == 0) return;
  torch::NoGradGuard no_grad;
  for (auto& p : params) {
    // Drawn on the CPU from the run's generator so that a given (seed, step) gives the same
    // noise on every device; then moved.
    auto xi = torch::randn(p.sizes(), gen, torch::TensorOptions().dtype(p.scalar_type())).to(p.device());
    const auto& g = p.grad();
    if (mask == NoiseMask::Live && !g.defined()) continue;
    if (p.device().is_cpu() && p.scalar_type() == torch::kFloat && p.is_contiguous() &&
        (mask != NoiseMask::Live || (g.is_contiguous() && g.scalar_type() == torch::kFloat))) {
      // One pass instead of three small ops: on a 2-core CPU each ATen op on a small tensor costs
      // a thread-pool round trip, and pruned networks are made of small tensors.
      float* pp = p.data_ptr<float>();
      const float* x = xi.data_ptr<float>();
      const float* gp = mask == NoiseMask::Live ? g.data_ptr<float>() : nullptr;
      const float a = static_cast<float>(sigma);
      const int64_t n = p.numel();
      for (int64_t i = 0; i < n; ++i) {
        if (gp == nullptr || gp[i] != 0.0f) pp[i] += a * x[i];
      }
      continue;
    }
    if (mask == NoiseMask::Live) xi.mul_(g.ne(0));
    p.add_(xi, sigma);
  }
}

void add_noise_blocked(std::vector<torch::Tensor>& params, double sigma, NoiseMask mask, uint64_t seed,
                       uint64_t step, bool fast) {
  if (mask == NoiseMask::Off || sigma == 0) return;
  torch::NoGradGuard no_grad;
  // Blocks of each parameter's memory, each with its own generator seeded from (seed, step,
  // parameter, block): the CPU's mt19937 draws serially, so this is what lets every intra-op
  // thread draw, and the numbers do not depend on how many threads there are.
  constexpr int64_t kBlock = 1 << 15;
  struct Block {
    float* p;
    const float* g;
    int64_t n;
    uint64_t seed;
  };
  std::vector<Block> blocks;
  std::vector<torch::Tensor> rest;
  const uint64_t step_seed = demp::stream_seed(seed, demp::kNoise, step);
  for (size_t i = 0; i < params.size(); ++i) {
    auto& p = params[i];
    const auto& g = p.grad();
    if (mask == NoiseMask::Live && !g.defined()) continue;
    const bool flat =
        p.device().is_cpu() && p.scalar_type() == torch::kFloat && p.is_non_overlapping_and_dense() &&
        (mask != NoiseMask::Live || (g.scalar_type() == torch::kFloat && g.strides() == p.strides()));
    if (!flat) {
      rest.push_back(p);
      continue;
    }
    const int64_t n = p.numel();
    for (int64_t b = 0; b * kBlock < n; ++b) {
      blocks.push_back({p.data_ptr<float>() + b * kBlock,
                        mask == NoiseMask::Live ? g.data_ptr<float>() + b * kBlock : nullptr,
                        std::min(kBlock, n - b * kBlock),
                        demp::stream_seed(step_seed, 1000 + i, static_cast<uint64_t>(b))});
    }
  }
  const float a = static_cast<float>(sigma);
  at::parallel_for(0, static_cast<int64_t>(blocks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const Block& bl = blocks[k];
      if (fast) {
        FastNormal normal(bl.seed);
        for (int64_t j = 0; j < bl.n; ++j) {
          const float x = normal();  // drawn for every element, so the numbers do not depend on the mask
          if (bl.g == nullptr || bl.g[j] != 0.0f) bl.p[j] += a * x;
        }
        continue;
      }
      auto gen = at::make_generator<at::CPUGeneratorImpl>(bl.seed);
      const auto xi = torch::randn({bl.n}, gen, torch::kFloat);
      const float* x = xi.data_ptr<float>();
      for (int64_t j = 0; j < bl.n; ++j) {
        if (bl.g == nullptr || bl.g[j] != 0.0f) bl.p[j] += a * x[j];
      }
    }
  });
  if (!rest.empty()) {
    auto gen = demp::make_generator(seed, demp::kNoise, step);
    add_noise(rest, sigma, mask, gen);
  }
}

void add_noise(std::vector<torch::Tensor>& params, const torch::Tensor& sigma, NoiseMask mask,
               torch::Generator& gen) {
  if (mask == NoiseMask::Off) return;
  torch::NoGradGuard no_grad;
  for (auto& p : params) {
    auto xi = torch::randn(p.sizes(), gen, p.options());
    if (mask == NoiseMask::Live) {
      const auto& g = p.grad();
      if (!g.defined()) continue;
      xi.mul_(g.ne(0));
    }
    p.add_(xi.mul_(sigma));
  }
}

prune::ScanResult scan_check_set(train::TrainContext& ctx, int64_t index, const DempOptions& o) {
  const int64_t check_size = o.check_size, check_batch = o.check_batch;
  const double dead_eps = o.dead_eps;
  auto images = data::check_set(ctx.data.train, check_size, static_cast<uint64_t>(ctx.cfg.seed), index);
  if (ctx.world_size() < 2) {
    return prune::scan_dead(ctx.model, images, check_batch, dead_eps, {1e-5, 1e-4, 1e-3, 1e-2});
  }
  // Data-parallel: the ranks share the scan's images (rank r takes the r-th slice of the same
  // check set) and the eval-mode statistics (rank 0's), and a unit is dead only if it is dead on
  // every rank's slice: the dead units of the single-process scan.
  ctx.sync_buffers();
  const int64_t n = images.size(0), w = ctx.world_size(), r = ctx.rank();
  images = images.slice(0, n * r / w, n * (r + 1) / w);
  return prune::scan_dead(ctx.model, images, check_batch, dead_eps, {1e-5, 1e-4, 1e-3, 1e-2},
                          [&](torch::Tensor& t) { ctx.all_reduce_max(t); });
}

nlohmann::json scan_metrics(const nn::Model& model, const prune::ScanResult& scan) {
  nlohmann::json per = nlohmann::json::object();
  const auto& a = model.arch();
  for (size_t g = 0; g < a.groups.size(); ++g) {
    if (scan.dead[g].defined()) per[a.groups[g].name] = scan.dead[g].sum().item<int64_t>();
  }
  nlohmann::json quasi = nlohmann::json::object();
  const char* eps[] = {"1e-05", "1e-04", "1e-03", "1e-02"};
  for (size_t i = 0; i < scan.quasi_dead.size() && i < 4; ++i) quasi[eps[i]] = scan.quasi_dead[i];
  return {{"dead_units", scan.dead_total}, {"dead_units_per_group", per}, {"quasi_dead", quasi}};
}

std::vector<torch::Tensor> zero_scale_units(const nn::Model& model) {
  torch::NoGradGuard ng;
  const auto& a = model.arch();
  std::vector<torch::Tensor> going(a.groups.size());
  std::vector<bool> blocked(a.groups.size(), false);  // a producer without BatchNorm
  for (size_t l = 0; l < a.layers.size(); ++l) {
    const int g = a.layers[l].out_group;
    if (!a.groups[g].prunable) continue;
    if (!a.layers[l].bn) {
      blocked[g] = true;
      continue;
    }
    const auto z = model.layers()[l].gamma.detach().eq(0).cpu();
    going[g] = going[g].defined() ? going[g].logical_and(z) : z;
  }
  for (size_t g = 0; g < going.size(); ++g) {
    if (blocked[g]) going[g] = torch::Tensor();
  }
  // A residual path keeps a unit alive unless its source unit goes too (skips are listed in
  // forward order, so a source's mask is final when it is read).
  for (const auto& sk : a.skips) {
    auto& dst = going[sk.out_group];
    if (!dst.defined()) continue;
    const auto& src = going[sk.in_group];
    auto* d = dst.data_ptr<bool>();
    const bool* s = src.defined() ? src.data_ptr<bool>() : nullptr;
    for (size_t m = 0; m < sk.dst.size(); ++m) {
      d[sk.dst[m]] = d[sk.dst[m]] && s != nullptr && s[sk.src[m]];
    }
  }
  return going;
}

std::vector<torch::Tensor> zero_scale_masks(const nn::Model& model) {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> out;
  for (const auto& g : model.norm_scales()) out.push_back(g.eq(0));
  return out;
}

void proximal_l1_step(nn::Model& model, train::Optimizer& opt, const torch::Tensor& lr,
                      const torch::Tensor& lambda, const torch::Tensor& lambda_beta,
                      const torch::Tensor& v_correction, bool shrink_beta,
                      const std::vector<torch::Tensor>& was_zero, bool cpu_loop,
                      const std::vector<double>& scale_weights) {
  torch::NoGradGuard ng;
  auto weight = [&](size_t scale) { return scale < scale_weights.size() ? scale_weights[scale] : 1.0; };
  auto params = model.parameters();
  const auto infos = model.param_infos();
  auto& st = opt.state();
  const bool adam = opt.options().name == "adamw" && st.size() == params.size();
  const double eps = opt.options().eps;
  if (cpu_loop && !params.empty() && params[0].device().is_cpu()) {
    // The CPU path: one loop per norm layer (the same arithmetic as the tensor path below, which
    // a GPU step captures in its graph).
    const double lrv = lr.item<double>(), lam = lambda.item<double>(), lam_b = lambda_beta.item<double>();
    const double corr = adam ? v_correction.item<double>() : 1.0;
    size_t scale = 0;
    bool done = true;
    for (size_t i = 0; i < infos.size() && done; ++i) {
      if (infos[i].field != nn::ParamInfo::Gamma) continue;
      auto& g = params[i];
      const bool with_beta = shrink_beta && i + 1 < infos.size() && infos[i + 1].field == nn::ParamInfo::Beta;
      if (g.scalar_type() != torch::kFloat || !g.is_contiguous()) {
        done = false;
        break;
      }
      float* gp = g.data_ptr<float>();
      float* bp = with_beta ? params[i + 1].data_ptr<float>() : nullptr;
      const float* vg = adam ? st[i][1].data_ptr<float>() : nullptr;
      const float* vb = adam && with_beta ? st[i + 1][1].data_ptr<float>() : nullptr;
      const bool* wz = scale < was_zero.size() ? was_zero[scale].data_ptr<bool>() : nullptr;
      const double lam_w = lam * weight(scale);
      ++scale;
      for (int64_t j = 0; j < g.numel(); ++j) {
        const float den_g = vg ? std::sqrt(vg[j] / static_cast<float>(corr)) + static_cast<float>(eps) : 1.0f;
        const float thr = static_cast<float>(lrv * (wz && wz[j] ? lam_b : lam_w)) / den_g;
        const float m = std::fabs(gp[j]) - thr;
        gp[j] = m > 0 ? std::copysign(m, gp[j]) : 0.0f;
        if (bp && gp[j] == 0.0f && bp[j] > 0.0f) {
          const float den_b =
              vb ? std::sqrt(vb[j] / static_cast<float>(corr)) + static_cast<float>(eps) : 1.0f;
          bp[j] = std::max(bp[j] - static_cast<float>(lrv * lam_b) / den_b, 0.0f);
        }
      }
    }
    if (done) return;
  }
  const auto base = lr * lambda, base_beta = lr * lambda_beta;
  auto rate = [&](size_t i, const torch::Tensor& b) {
    // Adam's per-coordinate step size: the threshold in Adam's metric, so that a γ whose
    // cross-entropy gradient is small is shrunk fast and one the loss needs is shrunk slowly.
    return adam ? b / ((st[i][1] / v_correction).sqrt() + eps) : b;
  };
  size_t scale = 0;
  for (size_t i = 0; i < infos.size(); ++i) {
    if (infos[i].field != nn::ParamInfo::Gamma) continue;
    auto& g = params[i];
    auto thr = rate(i, scale_weights.empty() ? base : base * weight(scale));
    if (scale < was_zero.size()) {
      // A scale that was 0 before this step is held there at the rate of λ_β: a unit once
      // switched off stays off while its β shrinks (no flapping when λ drops).
      thr = torch::where(was_zero[scale], rate(i, base_beta), thr);
    }
    ++scale;
    g.copy_(g.sign() * (g.abs() - thr).clamp_min(0));
    if (!shrink_beta || i + 1 >= infos.size() || infos[i + 1].field != nn::ParamInfo::Beta) continue;
    auto& b = params[i + 1];
    const auto constant = g.eq(0).logical_and(b.gt(0));
    b.copy_(torch::where(constant, (b - rate(i + 1, base_beta)).clamp_min(0), b));
  }
}

namespace {

const std::vector<std::string> kDempAndScan = {"demp", "scan"};

void check_one_of(const train::TrainConfig& c, const char* name, const std::vector<std::string>& allowed,
                  const std::string& hint) {
  const std::string v = c.get<std::string>(name);
  if (std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
    throw Error(fmt::format("unknown --{} '{}'", name, v), hint);
  }
}

void check_regularizer(const train::TrainConfig& c) {
  check_one_of(c, "regularizer", {"l1-gamma", "relu-sq", "l1", "l2"}, "use l1-gamma, relu-sq, l1 or l2");
}

void check_lambda_schedule(const train::TrainConfig& c) {
  // Read in full once the run's length is known; its spelling now, before any work.
  train::parse_schedule(c.get<std::string>("lambda-schedule"), 1.0, 1000, 10);
}

const int kDempOptions = train::declare_options(
    "demp",
    {
        {"lambda",
         "DemP: peak λ* of the regulariser's strength λ(t) (with a size target: the "
         "controller's starting value); slimming: its constant λ",
         0.01,
         "demp",
         {"demp", "scan", "slimming"},
         {},
         "",
         [](const train::TrainConfig& c) {
           const double lambda = c.get<double>("lambda"), noise = c.get<double>("noise"),
                        eps = c.get<double>("dead-eps");
           if (!(lambda >= 0) || !(noise >= 0) || !(eps >= 0) || !std::isfinite(lambda) ||
               !std::isfinite(noise) || !std::isfinite(eps)) {
             throw Error(
                 fmt::format("--lambda, --noise and --dead-eps must be finite and >= 0, got {}, {}, {}",
                             lambda, noise, eps),
                 "e.g. --lambda 0.01 --noise 5e-5 --dead-eps 0");
           }
         }},
        {"l1-step",
         "DemP: how the L1 on norm scales acts: prox (ours: a proximal soft-threshold step on γ after "
         "the optimizer, in Adam's metric lr·λ/(√v̂+ε) for adamw, lr·λ for sgd/sgdw; λΣ|γ| leaves the "
         "loss) or loss (the paper's: λΣ|γ| in the loss)",
         std::string("prox"),
         "demp",
         kDempAndScan,
         {},
         "",
         [](const train::TrainConfig& c) {
           check_one_of(c, "l1-step", {"prox", "loss"},
                        "use prox (a proximal step on γ, ours) or loss (λΣ|γ| in the loss, the paper's)");
         }},
        {"constant-units",
         "DemP: units whose γ is exactly 0 output the constant β: shrink (ours: β>0 shrinks to 0 at the "
         "proximal rate, so the unit dies and is removed) or keep (the paper's: left as they are)",
         std::string("shrink"),
         "demp",
         kDempAndScan,
         {},
         "",
         [](const train::TrainConfig& c) {
           check_one_of(c, "constant-units", {"shrink", "keep"}, "use shrink (ours) or keep (the paper's)");
         }},
        {"lambda-span",
         "DemP: steps S over which λ(t) and σ(t) run their shape (0: 87% of the run)",
         int64_t{0},
         "demp",
         kDempAndScan,
         {},
         "",
         [](const train::TrainConfig& c) {
           if (c.get<int64_t>("lambda-span") < 0)
             throw Error("--lambda-span must be >= 0", "0 means: the default");
         }},
        {"lambda-schedule",
         "DemP: shape of λ(t) and σ(t): onecycle, constant, cosine, linear-warmup:W (W in epochs)",
         std::string("onecycle"),
         "demp",
         kDempAndScan,
         {},
         "",
         check_lambda_schedule},
        {"regularizer",
         "DemP: l1-gamma (λΣ|γ| over norm scales), relu-sq (λ½Σmax(θ,0)²), l1 (λΣ|θ|), l2 (λ½Σθ²)",
         std::string("l1-gamma"),
         "demp",
         kDempAndScan,
         {},
         "",
         check_regularizer},
        {"l1-cost",
         "DemP with l1-gamma: how the L1 weighs units (ours, after MorphNet): none (every γ alike, "
         "the paper's), flops (each γ by the FLOPs per image its unit costs, over the mean unit's, "
         "at the current widths: FLOP-heavy early units go first), params (the same for parameters)",
         std::string("none"),
         "demp",
         kDempAndScan,
         {},
         "",
         [](const train::TrainConfig& c) {
           const std::string v = c.get<std::string>("l1-cost");
           if (parse_l1_cost(v) != L1Cost::None && c.get<std::string>("regularizer") != "l1-gamma") {
             throw Error(fmt::format("--l1-cost {} weighs the L1 on norm scales: it needs --regularizer l1-gamma, "
                                     "not {}",
                                     v, c.get<std::string>("regularizer")),
                         "drop --l1-cost, or use --regularizer l1-gamma");
           }
         }},
        {"target-plan",
         "DemP with a size target: how the planned size falls from 1 to the target by --target-by: "
         "cosine, or cubic (ours: Zhu & Gupta's schedule, as gradual uses: the size falls fast early, "
         "so training gets cheaper sooner)",
         std::string("cosine"),
         "demp",
         {"demp"},
         {},
         "",
         [](const train::TrainConfig& c) {
           check_one_of(c, "target-plan", {"cosine", "cubic"}, "use cosine or cubic");
         }},
        {"noise", "DemP: peak σ of the noise added after each step (0: none)", 5e-5, "demp", kDempAndScan},
        {"noise-mask",
         "DemP: where noise goes: live (gradient ≠ 0), all, off",
         std::string("live"),
         "demp",
         kDempAndScan,
         {},
         "",
         [](const train::TrainConfig& c) { parse_noise_mask(c.get<std::string>("noise-mask")); }},
        {"noise-rng",
         "DemP on the CPU: the noise's generator: torch (LibTorch's randn, one mt19937 per block) or "
         "fast (ours: a ziggurat on splitmix64, the same N(0, σ²), several times cheaper, other "
         "numbers)",
         std::string("torch"),
         "demp",
         kDempAndScan,
         {},
         "",
         [](const train::TrainConfig& c) {
           check_one_of(c, "noise-rng", {"torch", "fast"}, "use torch or fast");
         }},
        {"check-size",
         "training images in each dead-unit scan",
         int64_t{1536},
         "demp",
         {},
         {},
         "",
         [](const train::TrainConfig& c) { check_at_least(c, "check-size", 1); }},
        {"check-batch",
         "batch size of the dead-unit scan",
         int64_t{512},
         "demp",
         {},
         {},
         "",
         [](const train::TrainConfig& c) { check_at_least(c, "check-batch", 1); }},
        {"dead-eps", "a unit is dead when its summed output is <= this in every scan batch", 0.0, "demp"},
    });

}  // namespace

double planned_fall(TargetPlan plan, double x) {
  if (plan == TargetPlan::Cubic) return cubic_fall(x);
  return 0.5 * (1 + std::cos(M_PI * std::clamp(x, 0.0, 1.0)));
}

DempOptions demp_options(const train::TrainConfig& c) {
  DempOptions o;
  o.lambda = c.get<double>("lambda");
  o.l1_step = c.get<std::string>("l1-step");
  o.constant_units = c.get<std::string>("constant-units");
  o.lambda_span = c.get<int64_t>("lambda-span");
  o.lambda_schedule = c.get<std::string>("lambda-schedule");
  o.regularizer = c.get<std::string>("regularizer");
  o.l1_cost = parse_l1_cost(c.get<std::string>("l1-cost"));
  o.target_plan = c.get<std::string>("target-plan") == "cubic" ? TargetPlan::Cubic : TargetPlan::Cosine;
  o.noise = c.get<double>("noise");
  o.noise_mask = c.get<std::string>("noise-mask");
  o.noise_rng = c.get<std::string>("noise-rng");
  o.check_size = c.get<int64_t>("check-size");
  o.check_batch = c.get<int64_t>("check-batch");
  o.dead_eps = c.get<double>("dead-eps");
  o.prune = prune_options(c);
  return o;
}

Demp::Demp(const train::TrainConfig& cfg, bool remove) : o_(demp_options(cfg)), remove_(remove) {
  // validate() checked every option before any work; a library user may build the method
  // without it, so the names it dispatches on are checked again.
  check_regularizer(cfg);
  check_lambda_schedule(cfg);
  mask_ = parse_noise_mask(o_.noise_mask);
  prox_ = o_.l1_step == "prox" && o_.regularizer == "l1-gamma";
  shrink_beta_ = prox_ && o_.constant_units == "shrink";
  const PruneOptions& p = o_.prune;
  if (p.target_params > 0) {
    target_kind_ = "params";
    target_ = p.target_params;
  } else if (p.target_flops > 0) {
    target_kind_ = "flops";
    target_ = p.target_flops;
  } else if (p.target_units > 0) {
    target_kind_ = "units";
    target_ = p.target_units;
  }
  lambda_ctl_ = o_.lambda;
  multiple_ = p.width_multiple;
}

double Demp::measure(const nn::Arch& a) const {
  if (target_kind_ == "flops") return static_cast<double>(a.flops());
  if (target_kind_ == "units") return static_cast<double>(a.units());
  return static_cast<double>(a.params());
}

double Demp::projected_fraction(const nn::Model& model) const {
  nn::Arch p = model.arch();
  if (shrink_beta_) {
    const auto going = zero_scale_units(model);
    for (size_t g = 0; g < going.size(); ++g) {
      if (!going[g].defined()) continue;
      const int64_t n = going[g].sum().item<int64_t>();
      int64_t w = std::max<int64_t>(1, p.groups[g].width - n);
      // the scan keeps widths at multiples of --width-multiple (dead units fill up)
      if (multiple_ > 1) w = std::min(p.groups[g].width, (w + multiple_ - 1) / multiple_ * multiple_);
      p.groups[g].width = w;
    }
  }
  return measure(p) / measure0_;
}

void Demp::begin(train::TrainContext& ctx) {
  const DempOptions& c = o_;
  const double total = static_cast<double>(ctx.total_steps);
  span_ = c.lambda_span > 0 ? c.lambda_span : std::max<int64_t>(1, std::llround(0.87 * total));
  // With a target, scans come more often (2% of the run): the size controller and the speed-up
  // both want dead units out soon after they die.
  const double every_frac = target_ > 0 ? 0.02 : 0.05;
  every_ =
      c.prune.prune_every > 0 ? c.prune.prune_every : std::max<int64_t>(1, std::llround(every_frac * total));
  lambda_sched_ = train::parse_schedule(c.lambda_schedule, c.lambda, span_, ctx.steps_per_epoch);
  sigma_sched_ = train::parse_schedule(c.lambda_schedule, c.noise, span_, ctx.steps_per_epoch);
  // The largest λ(t) up to here (a resumed run recomputes it from the schedule).
  lambda_max_ = 0;
  for (int64_t t = 0; t <= std::min(ctx.step, span_); ++t)
    lambda_max_ = std::max(lambda_max_, lambda_sched_.at(t));
  if (target_ > 0) {
    // The initial network's size: the arch as built (a resumed run has pruned already).
    const auto& a = ctx.model.arch();
    if (state_.contains("controller")) {
      measure0_ = state_["controller"].at("measure0").get<double>();
    } else {
      nn::Arch fresh = a;
      for (auto& g : fresh.groups) g.width = g.initial;
      measure0_ = measure(fresh);
    }
    // Every step with the proximal step (its measure is exact and cheap: the scales that are 0),
    // so that a burst of deaths is stopped at the target within a step.
    control_every_ = prox_ && shrink_beta_ ? 1 : every_;
    target_end_ = std::max<int64_t>(1, std::llround(c.prune.target_by * total));
  }
  if (ctx.step == 0) {
    const std::string l1 = c.regularizer != "l1-gamma" ? ""
                           : prox_                     ? " (proximal step, ours)"
                                                       : " (in the loss, the paper's)";
    const std::string cost = c.l1_cost == L1Cost::None ? ""
                             : std::string(" | L1 weighted by ") + l1_cost_name(c.l1_cost) + " cost (ours)";
    const std::string cu = !prox_         ? ""
                           : shrink_beta_ ? " | constant units shrink β (ours)"
                                          : " | constant units kept";
    const std::string lam =
        target_ > 0 ? fmt::format("lambda by feedback from {} toward {} {:.4g} of the initial by step {}",
                                  c.lambda, target_kind_, target_, target_end_)
                    : fmt::format("lambda {} {} over {} steps", c.lambda, c.lambda_schedule, span_);
    ctx.log(
        fmt::format("demp | {} | noise {} ({}) | regularizer {}{}{}{} | prune every {} steps from step {} | "
                    "check set {} images, eps {}",
                    lam, c.noise, c.noise_mask, c.regularizer, l1, cost, cu, every_,
                    std::max<int64_t>(1, c.prune.prune_after), c.check_size, c.dead_eps));
  }
}

void Demp::control(train::TrainContext& ctx) {
  const double f = projected_fraction(ctx.model);
  const double x = std::min(1.0, static_cast<double>(ctx.step) / static_cast<double>(target_end_));
  const double planned = target_ + (1 - target_) * planned_fall(o_.target_plan, x);
  last_projected_ = f;
  last_planned_ = planned;
  // At or below the target: stop pushing (units can only die, not come back, so overshoot is
  // what must be avoided); above: λ moves multiplicatively with the distance from the plan,
  // bounded per update so that the lag between λ and deaths cannot make it run away.
  // Ahead of the plan: pause (λ held, not lowered: the level that kills units is what the plan
  // needs next, and units die in bursts once scales reach 0 together). Behind: λ rises.
  holding_ = f <= target_ + 0.002 || f < planned;
  if (!holding_) {
    // At full error, λ can move by 1e4× over the planned approach: fast enough to find its
    // level from a poor start, slow enough per update that deaths keep up with it.
    const double gain =
        std::log(1e4) * static_cast<double>(control_every_) / static_cast<double>(target_end_);
    const double e = std::clamp((f - planned) / 0.05, -1.0, 1.0);
    lambda_ctl_ = std::clamp(lambda_ctl_ * std::exp(gain * e), 1e-9, 1e3);
  }
  if (f <= target_ + 0.002 && reached_step_ < 0) {
    reached_step_ = ctx.step;
    ctx.log(
        fmt::format("target step {} | {} at {:.2f}% of the initial network (target {:.2f}%) | lambda {:.4g}",
                    ctx.step, target_kind_, 100 * f, 100 * target_, lambda_ctl_),
        ctx.cfg.progress != "none");
  }
}

void Demp::prune_point(train::TrainContext& ctx) {
  const bool last = ctx.step >= ctx.total_steps;
  // No scan before BatchNorm's running statistics describe the network: at step 0 they are
  // (0, 1) and the eval-mode test would flag units that are live on half of every batch.
  bool scan_now = last || (ctx.step > 0 && ctx.step >= o_.prune.prune_after && ctx.step % every_ == 0);
  if (scan_now && !last && target_ > 0 && shrink_beta_ && remove_) {
    // With a target in the proximal form, units die through γ = 0 (then β → 0): while no scale
    // is 0 there is nothing new for a scan to find but the rare unit that died otherwise, which
    // the final scan still removes. Skipping those scans saves a check-set forward pass each
    // (1,536 images: ~0.4 s on VGG-16 w0.25 on 2 cores) once the target is held.
    // (Units kept as --width-multiple filler keep γ = 0: count, and scan when the count moved.)
    int64_t zeros = 0;
    for (const auto& g : ctx.model.norm_scales()) zeros += g.eq(0).sum().item<int64_t>();
    scan_now = zeros != zeros_after_scan_;
  }
  if (scan_now) {
    const auto scan = scan_check_set(ctx, ctx.step, o_);
    state_["scan"] = scan_metrics(ctx.model, scan);
    state_["scan"]["step"] = ctx.step;
    if (!remove_) {
      ctx.log(fmt::format("scan step {} | dead {} of {} units", ctx.step, scan.dead_total, scan.units_total));
    } else {
      // A group whose units are all dead means λ* is too large for this network: the layer
      // carries no signal any more. Keep its most active unit so the network stays well-formed
      // and the run finishes, and say so loudly.
      const auto& a = ctx.model.arch();
      for (size_t g = 0; g < a.groups.size(); ++g) {
        if (!scan.dead[g].defined()) continue;
        if (scan.dead[g].all().item<bool>()) {
          const std::string name = a.groups[g].name;
          auto& collapsed = state_["collapsed_groups"];
          if (!collapsed.is_array()) collapsed = nlohmann::json::array();
          if (std::find(collapsed.begin(), collapsed.end(), name) == collapsed.end()) {
            collapsed.push_back(name);
            ctx.log(fmt::format("warning step {} | every unit of group {} is dead: the network has "
                                "collapsed there (lambda {:.4g} is too large?); keeping its most active unit",
                                ctx.step, name, std::max({lambda_now_, lambda_max_, lambda_ctl_})),
                    /*echo=*/true);
          }
        }
      }
      ctx.remove_units(prune::keep_live(ctx.model, scan, multiple_), last ? "dead (final)" : "dead");
      zeros_after_scan_ = 0;
      for (const auto& g : ctx.model.norm_scales()) zeros_after_scan_ += g.eq(0).sum().item<int64_t>();
    }
  }
  if (last && remove_ && ctx.model.arch().units() == ctx.model.arch().initial_units()) {
    ctx.log(fmt::format("warning | demp removed no unit in {} steps: no unit died{}", ctx.total_steps,
                        prox_ ? "; raise --lambda (e.g. x10), or give a --target-params"
                              : "; with --l1-step loss and AdamW, λ hardly singles out units: try "
                                "--l1-step prox, a larger --lambda, or a --target-params"),
            /*echo=*/true);
    state_["warning"] = "no unit died";
  }
  if (target_ > 0 && !last) {
    // The paper's form (L1 in the loss) has no exact zeros: its size moves only when a scan
    // removes units, so it is controlled at the scans; the proximal form more often.
    const bool fresh = prox_ && shrink_beta_ ? true : scan_now || ctx.step == 0;
    if (fresh) control(ctx);
  }
}

void Demp::before_step(train::TrainContext& ctx) {
  if (target_ > 0) {
    lambda_now_ = holding_ ? 0.0 : lambda_ctl_;
    lambda_beta_now_ = lambda_ctl_;
  } else {
    lambda_now_ = lambda_sched_.at(ctx.step);
    lambda_max_ = std::max(lambda_max_, lambda_now_);
    lambda_beta_now_ = lambda_max_;
  }
  sigma_now_ = sigma_sched_.at(ctx.step);
  if (o_.l1_cost != L1Cost::None && cost_units_ != ctx.model.arch().units()) {
    // Units go only by removal: the weights follow the widths after each one (and on resume).
    cost_w_ = l1_cost_weights(ctx.model.arch(), o_.l1_cost);
    cost_units_ = ctx.model.arch().units();
  }
  // In the parameters' dtype, so that λ·R and σ·ξ round as they would with host scalars.
  const auto params = ctx.model.parameters();
  const auto dtype = params.empty() ? torch::kFloat : params[0].scalar_type();
  auto set = [&](torch::Tensor& t, double v) {
    // Made once and then only filled: a captured graph keeps reading the same tensor.
    if (!t.defined() || t.scalar_type() != dtype) {
      t = torch::full({}, v, torch::TensorOptions().dtype(dtype).device(ctx.device));
    } else {
      t.fill_(v);
    }
  };
  set(lambda_t_, lambda_now_);
  set(sigma_t_, sigma_now_);
  if (prox_) {
    set(lambda_beta_t_, lambda_beta_now_);
    // Adam's bias correction of the step about to run (its count after the step).
    const double b2 = ctx.optimizer.options().beta2;
    set(vcorr_t_, 1.0 - std::pow(b2, static_cast<double>(ctx.optimizer.steps() + 1)));
  }
  if (!ctx.device.is_cpu()) {
    // One device generator, reseeded from (seed, step) before every step: the noise of a step
    // does not depend on what ran before it (exact resume), and a captured graph, which reads the
    // generator's seed at each replay, draws the same numbers as an eager step.
    if (!device_gen_.defined()) {
      device_gen_ = at::globalContext().defaultGenerator(ctx.device).clone();
    }
    device_gen_.set_current_seed(demp::stream_seed(static_cast<uint64_t>(ctx.cfg.seed), demp::kNoise,
                                                   static_cast<uint64_t>(ctx.step)));
  }
}

std::vector<at::Generator> Demp::step_generators() {
  if (device_gen_.defined()) return {device_gen_};
  return {};
}

torch::Tensor Demp::extra_loss(train::TrainContext& ctx) {
  if (prox_) return {};  // the L1 acts through the proximal step
  if (o_.lambda == 0) return {};
  return regularizer(o_.regularizer, ctx.model, cost_w_) * lambda_t_;
}

void Demp::after_backward(train::TrainContext& ctx) {
  if (prox_) was_zero_ = zero_scale_masks(ctx.model);
}

void Demp::after_step(train::TrainContext& ctx) {
  const DempOptions& c = o_;
  if (mask_ != NoiseMask::Off && c.noise != 0) {
    auto params = ctx.model.parameters();
    if (ctx.device.is_cpu()) {
      // On the CPU every step is eager: draw from the (seed, step) generator, skip σ = 0.
      add_noise_blocked(params, sigma_now_, mask_, static_cast<uint64_t>(ctx.cfg.seed),
                        static_cast<uint64_t>(ctx.step), c.noise_rng == "fast");
    } else {
      add_noise(params, sigma_t_, mask_, device_gen_);
    }
  }
  // The proximal step comes last, so that a γ it sets to 0 is exactly 0 when the next scan looks.
  if (prox_ && (c.lambda > 0 || target_ > 0)) {
    proximal_l1_step(ctx.model, ctx.optimizer, ctx.optimizer.lr_tensor(ctx.device), lambda_t_, lambda_beta_t_,
                     vcorr_t_, shrink_beta_, was_zero_, /*cpu_loop=*/true, cost_w_);
  }
}

nlohmann::json Demp::metrics(train::TrainContext& ctx) {
  nlohmann::json m{{"reg_lambda", lambda_now_}, {"noise_std", sigma_now_}};
  if (state_.contains("scan")) m["last_scan"] = state_["scan"];
  if (target_ > 0) {
    m["target_" + target_kind_] = target_;
    m["target_planned"] = last_planned_;
    m["target_projected"] = last_projected_;
  }
  return m;
}

nlohmann::json Demp::state() const {
  nlohmann::json s = state_;
  if (target_ > 0) {
    s["controller"] = {
        {"lambda", lambda_ctl_},         {"holding", holding_},   {"zeros_after_scan", zeros_after_scan_},
        {"reached_step", reached_step_}, {"measure0", measure0_}, {"projected", last_projected_},
        {"planned", last_planned_}};
  }
  return s;
}

void Demp::load_state(const nlohmann::json& s) {
  state_ = s;
  if (s.contains("controller")) {
    const auto& c = s["controller"];
    lambda_ctl_ = c.at("lambda").get<double>();
    holding_ = c.at("holding").get<bool>();
    reached_step_ = c.at("reached_step").get<int64_t>();
    last_projected_ = c.value("projected", 1.0);
    last_planned_ = c.value("planned", 1.0);
    zeros_after_scan_ = c.value("zeros_after_scan", int64_t{0});
  }
}

}  // namespace demp::methods
