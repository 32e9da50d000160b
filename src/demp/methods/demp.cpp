#include "demp/methods/demp.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>

#include "demp/common/error.h"
#include "demp/data/dataset.h"
#include "demp/nn/model.h"
#include "demp/train/trainer.h"

namespace demp::methods {

torch::Tensor regularizer(const std::string& kind, const nn::Model& model) {
  torch::Tensor r;
  auto add = [&](const torch::Tensor& t) { r = r.defined() ? r + t : t; };
  if (kind == "l1-gamma") {
    for (const auto& g : model.norm_scales()) add(g.abs().sum());
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
    if (mask == NoiseMask::Live) {
      const auto& g = p.grad();
      if (!g.defined()) continue;
      xi.mul_(g.ne(0));
    }
    p.add_(xi, sigma);
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

prune::ScanResult scan_check_set(train::TrainContext& ctx, int64_t index) {
  auto images =
      data::check_set(ctx.data.train, ctx.cfg.check_size, static_cast<uint64_t>(ctx.cfg.seed), index);
  if (ctx.world_size() < 2) {
    return prune::scan_dead(ctx.model, images, ctx.cfg.check_batch, ctx.cfg.dead_eps,
                            {1e-5, 1e-4, 1e-3, 1e-2});
  }
  // Data-parallel: the ranks share the scan's images (rank r takes the r-th slice of the same
  // check set) and the eval-mode statistics (rank 0's), and a unit is dead only if it is dead on
  // every rank's slice: the dead units of the single-process scan.
  ctx.sync_buffers();
  const int64_t n = images.size(0), w = ctx.world_size(), r = ctx.rank();
  images = images.slice(0, n * r / w, n * (r + 1) / w);
  return prune::scan_dead(ctx.model, images, ctx.cfg.check_batch, ctx.cfg.dead_eps,
                          {1e-5, 1e-4, 1e-3, 1e-2}, [&](torch::Tensor& t) { ctx.all_reduce_max(t); });
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

Demp::Demp(const train::TrainConfig& cfg, bool remove)
    : regularizer_(cfg.regularizer), mask_(parse_noise_mask(cfg.noise_mask)), remove_(remove) {
  const std::vector<std::string> known = {"l1-gamma", "relu-sq", "l1", "l2"};
  if (std::find(known.begin(), known.end(), regularizer_) == known.end()) {
    throw Error("unknown --regularizer '" + regularizer_ + "'", "use l1-gamma, relu-sq, l1 or l2");
  }
}

void Demp::begin(train::TrainContext& ctx) {
  const auto& c = ctx.cfg;
  span_ = c.lambda_span > 0 ? c.lambda_span
                            : std::max<int64_t>(1, std::llround(0.87 * static_cast<double>(ctx.total_steps)));
  every_ = c.prune_every > 0 ? c.prune_every
                             : std::max<int64_t>(1, std::llround(0.05 * static_cast<double>(ctx.total_steps)));
  lambda_sched_ = train::parse_schedule(c.lambda_schedule, c.lambda, span_, ctx.steps_per_epoch);
  sigma_sched_ = train::parse_schedule(c.lambda_schedule, c.noise, span_, ctx.steps_per_epoch);
  if (ctx.step == 0) {
    ctx.log(fmt::format("demp | lambda {} {} over {} steps | noise {} ({}) | regularizer {} | "
                        "prune every {} steps from step {} | check set {} images, eps {}",
                        c.lambda, c.lambda_schedule, span_, c.noise, c.noise_mask, c.regularizer,
                        every_, c.prune_after, c.check_size, c.dead_eps));
  }
}

void Demp::prune_point(train::TrainContext& ctx) {
  const bool last = ctx.step >= ctx.total_steps;
  if (!last && (ctx.step < ctx.cfg.prune_after || ctx.step % every_ != 0)) return;
  const auto scan = scan_check_set(ctx, ctx.step);
  state_["scan"] = scan_metrics(ctx.model, scan);
  state_["scan"]["step"] = ctx.step;
  if (!remove_) {
    ctx.log(fmt::format("scan step {} | dead {} of {} units", ctx.step, scan.dead_total, scan.units_total));
    return;
  }
  // A group whose units are all dead means λ* is too large for this network: the layer carries
  // no signal any more. Keep its most active unit so the network stays well-formed and the run
  // finishes, and say so loudly.
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
                            "collapsed there (lambda {} is too large?); keeping its most active unit",
                            ctx.step, name, ctx.cfg.lambda),
                /*echo=*/true);
      }
    }
  }
  ctx.remove_units(prune::keep_live(ctx.model, scan, ctx.cfg.width_multiple), last ? "dead (final)" : "dead");
}

void Demp::before_step(train::TrainContext& ctx) {
  lambda_now_ = lambda_sched_.at(ctx.step);
  sigma_now_ = sigma_sched_.at(ctx.step);
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
  if (!ctx.device.is_cpu()) {
    // One device generator, reseeded from (seed, step) before every step: the noise of a step
    // does not depend on what ran before it (exact resume), and a captured graph, which reads the
    // generator's seed at each replay, draws the same numbers as an eager step.
    if (!device_gen_.defined()) {
      device_gen_ = at::globalContext().defaultGenerator(ctx.device).clone();
    }
    device_gen_.set_current_seed(
        data::stream_seed(static_cast<uint64_t>(ctx.cfg.seed), data::kNoise, static_cast<uint64_t>(ctx.step)));
  }
}

std::vector<at::Generator> Demp::step_generators() {
  if (device_gen_.defined()) return {device_gen_};
  return {};
}

torch::Tensor Demp::extra_loss(train::TrainContext& ctx) {
  if (ctx.cfg.lambda == 0) return {};
  return regularizer(regularizer_, ctx.model) * lambda_t_;
}

void Demp::after_step(train::TrainContext& ctx) {
  const auto& c = ctx.cfg;
  if (mask_ == NoiseMask::Off || c.noise == 0) return;
  auto params = ctx.model.parameters();
  if (ctx.device.is_cpu()) {
    // On the CPU every step is eager: draw from the (seed, step) generator, skip σ = 0.
    if (sigma_now_ == 0) return;
    auto gen = data::make_generator(static_cast<uint64_t>(c.seed), data::kNoise, static_cast<uint64_t>(ctx.step));
    add_noise(params, sigma_now_, mask_, gen);
  } else {
    add_noise(params, sigma_t_, mask_, device_gen_);
  }
}

nlohmann::json Demp::metrics(train::TrainContext& ctx) {
  nlohmann::json m{{"reg_lambda", lambda_now_}, {"noise_std", sigma_now_}};
  if (state_.contains("scan")) m["last_scan"] = state_["scan"];
  return m;
}

}  // namespace demp::methods
