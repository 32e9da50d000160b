#include "demp/methods/selection.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "demp/common/error.h"
#include "demp/data/dataset.h"
#include "demp/nn/model.h"
#include "demp/train/config.h"
#include "demp/train/trainer.h"

namespace demp::methods {

int64_t target_units(const nn::Model& model, double density) {
  const auto& a = model.arch();
  const int64_t groups = static_cast<int64_t>(a.prunable_groups().size());
  const int64_t k = std::llround(density * static_cast<double>(a.initial_units()));
  return std::max(groups, k);
}

std::string SizeGoal::text() const {
  if (from_density) return fmt::format("density {}", fraction);
  const char* m = measure == Measure::Params ? "params" : measure == Measure::Flops ? "FLOPs" : "units";
  return fmt::format("{} {:.1f}%", m, 100 * fraction);
}

namespace {

bool is_baseline(const train::TrainConfig& c) {
  const auto& no = not_baselines();
  return std::find(no.begin(), no.end(), c.method) == no.end();
}

void check_targets(const train::TrainConfig& c) {
  int targets = 0;
  for (const char* name : {"target-params", "target-flops", "target-units"}) {
    const double v = c.get<double>(name);
    if (!(v >= 0) || v >= 1) {
      throw Error(fmt::format("--{} must be in (0, 1), or 0 for off; got {}", name, v),
                  "the fraction kept, e.g. 0.1 for 10%");
    }
    if (v > 0) ++targets;
  }
  if (targets > 1) {
    throw Error("more than one of --target-params, --target-flops, --target-units",
                "give one target: the controller follows one measure");
  }
}

}  // namespace

const std::vector<std::string>& not_pruning() {
  static const std::vector<std::string> names = {"dense", "scan"};
  return names;
}

void check_at_least(const train::TrainConfig& c, const char* name, int64_t min) {
  const int64_t v = c.get<int64_t>(name);
  if (v >= min) return;
  if (min == 1) throw Error(fmt::format("--{} must be positive, got {}", name, v), "give a number >= 1");
  throw Error(fmt::format("--{} must be >= {}", name, min), min == 0 ? "0 means: the default" : "");
}

const std::vector<std::string>& not_baselines() {
  static const std::vector<std::string> names = {"dense", "demp", "scan"};
  return names;
}

namespace {

const int kPruneOptions = train::declare_options(
    "selection",
    {
        {"target-params",
         "fraction of the parameters to keep (0: off). DemP: λ(t) is then driven by feedback on the "
         "network's size instead of following --lambda-schedule, and DemP still decides where units "
         "die; baselines: their cut reaches this size instead of --density",
         0.0,
         "pruning",
         {},
         not_pruning(),
         "",
         check_targets},
        {"target-flops",
         "fraction of the FLOPs per image to keep, as --target-params (0: off)",
         0.0,
         "pruning",
         {},
         not_pruning()},
        {"target-units",
         "fraction of the units to keep, as --target-params (0: off)",
         0.0,
         "pruning",
         {},
         not_pruning()},
        {"target-by",
         "DemP: fraction of the run by which a size target is to be reached (the planned size falls "
         "along a cosine from 1 to the target until then, and is held after); gradual: the default "
         "of --prune-at",
         0.3,
         "pruning",
         {"demp", "gradual"},
         {},
         "",
         [](const train::TrainConfig& c) {
           const double v = c.get<double>("target-by");
           if (!(v > 0) || v > 1) {
             throw Error(fmt::format("--target-by must be in (0, 1], got {}", v),
                         "the fraction of the run by which the target is reached, e.g. 0.3");
           }
         }},
        {"width-multiple",
         "keep each layer's width a multiple of this — DemP: the most active dead units fill up (the "
         "output is unchanged); baselines: their best-scored units beyond the cut fill up (counted "
         "in a size target). 8 makes pruned networks fast on CPUs; 1: exact counts",
         int64_t{1},
         "pruning",
         {},
         not_pruning(),
         "",
         [](const train::TrainConfig& c) { check_at_least(c, "width-multiple", 1); }},
        {"prune-every",
         "steps K between dead-unit removals (0: 5% of the run)",
         int64_t{0},
         "pruning",
         {},
         {},
         "",
         [](const train::TrainConfig& c) { check_at_least(c, "prune-every", 0); }},
        {"prune-after",
         "first step at which dead-unit scans remove units (not before BatchNorm's running "
         "statistics describe the network: at step 0 they are (0, 1) and the eval-mode test flags "
         "units that are live on half of every batch; step 0 is never scanned)",
         int64_t{50},
         "pruning",
         {},
         {},
         "",
         [](const train::TrainConfig& c) { check_at_least(c, "prune-after", 0); },
         [](const train::TrainConfig& c, int64_t total, std::vector<std::string>* w) {
           const int64_t v = c.get<int64_t>("prune-after");
           if (total > 0 && (c.method == "demp" || c.method == "scan") && v >= total) {
             w->push_back(fmt::format(
                 "--prune-after {} is beyond the run's {} steps: only the final scan runs", v, total));
           }
         }},
        {"density",
         "baselines: fraction of the units kept at the end (global for slimming, snap, "
         "crop, earlycrop; per layer for l1norm, random)",
         0.5,
         "baselines",
         {},
         not_baselines(),
         "the baselines",
         [](const train::TrainConfig& c) {
           const double v = c.get<double>("density");
           if (!(v > 0) || v > 1) {
             throw Error(fmt::format("--density must be in (0, 1], got {}", v),
                         "the fraction of units kept, e.g. --density 0.25");
           }
         },
         [](const train::TrainConfig& c, int64_t, std::vector<std::string>* w) {
           if (prune_options(c).has_target()) {
             w->push_back("--density is ignored: the size target (--target-*) sets the size of the cut");
           }
         }},
        {"prune-at",
         "baselines: the step by which the method has reached --density, the same for every "
         "baseline: its one cut (slimming, default 50% of the run; snap, crop, random, default 0 = "
         "at initialisation), the last of its gradual cuts (l1norm, default 50%; gradual, default "
         "--target-by of the run), or the latest step of its trigger (earlycrop, default 50%); -1: "
         "the method's default",
         int64_t{-1},
         "baselines",
         {},
         not_baselines(),
         "the baselines",
         [](const train::TrainConfig& c) {
           if (c.get<int64_t>("prune-at") < -1) {
             throw Error("--prune-at must be >= 0, or -1 for the default",
                         "a step number, e.g. --prune-at 500");
           }
         },
         [](const train::TrainConfig& c, int64_t total, std::vector<std::string>* w) {
           const int64_t v = c.get<int64_t>("prune-at");
           if (total > 0 && is_baseline(c) && v >= total) {
             w->push_back(fmt::format("--prune-at {} is beyond the run's {} steps: the method never prunes",
                                      v, total));
           }
         }},
    });

}  // namespace

PruneOptions prune_options(const train::TrainConfig& c) {
  PruneOptions o;
  o.target_params = c.get<double>("target-params");
  o.target_flops = c.get<double>("target-flops");
  o.target_units = c.get<double>("target-units");
  o.target_by = c.get<double>("target-by");
  o.width_multiple = c.get<int64_t>("width-multiple");
  o.prune_every = c.get<int64_t>("prune-every");
  o.prune_after = c.get<int64_t>("prune-after");
  o.density = c.get<double>("density");
  o.prune_at = c.get<int64_t>("prune-at");
  return o;
}

SizeGoal size_goal(const PruneOptions& o) {
  if (o.target_params > 0) return {SizeGoal::Measure::Params, o.target_params, false};
  if (o.target_flops > 0) return {SizeGoal::Measure::Flops, o.target_flops, false};
  if (o.target_units > 0) return {SizeGoal::Measure::Units, o.target_units, false};
  return {SizeGoal::Measure::Units, o.density, true};
}

double cubic_fall(double x) {
  const double r = 1 - std::clamp(x, 0.0, 1.0);
  return r * r * r;
}

SizeGoal partial_goal(const SizeGoal& goal, double fraction) {
  SizeGoal g = goal;
  g.fraction = 1.0 - (1.0 - goal.fraction) * std::clamp(fraction, 0.0, 1.0);
  return g;
}

namespace {
double measure_of(const nn::Arch& a, SizeGoal::Measure m) {
  switch (m) {
    case SizeGoal::Measure::Params:
      return static_cast<double>(a.params());
    case SizeGoal::Measure::Flops:
      return static_cast<double>(a.flops());
    default:
      return static_cast<double>(a.units());
  }
}

int64_t round_up(int64_t n, int64_t multiple, int64_t width) {
  return multiple > 1 ? std::min(width, (n + multiple - 1) / multiple * multiple) : n;
}

std::vector<int64_t> keep_widths(const nn::Arch& a, const prune::KeepSets& keep, int64_t multiple) {
  std::vector<int64_t> w(a.groups.size());
  for (size_t g = 0; g < a.groups.size(); ++g) {
    w[g] = a.groups[g].prunable && !keep[g].empty()
               ? round_up(static_cast<int64_t>(keep[g].size()), multiple, a.groups[g].width)
               : a.groups[g].width;
  }
  return w;
}

// Of two candidates on either side of the goal, the one whose measure is closer (ties: the
// smaller network, so that a baseline never gets more than it was asked for on a tie).
bool closer_above(double below, double above, double goal) { return above - goal < goal - below; }
}  // namespace

double measure_fraction(const nn::Arch& a, const std::vector<int64_t>& widths, SizeGoal::Measure m) {
  nn::Arch now = a, first = a;
  for (size_t g = 0; g < a.groups.size(); ++g) {
    if (!a.groups[g].prunable) continue;
    now.groups[g].width = widths[g];
    first.groups[g].width = a.groups[g].initial;
  }
  return measure_of(now, m) / measure_of(first, m);
}

prune::KeepSets round_up_keep(const nn::Model& model, const GroupScores& scores, prune::KeepSets keep,
                              int64_t multiple) {
  if (multiple <= 1) return keep;
  const auto& a = model.arch();
  for (int g : a.prunable_groups()) {
    auto& k = keep[g];
    if (k.empty()) continue;
    const int64_t want = round_up(static_cast<int64_t>(k.size()), multiple, a.groups[g].width);
    if (want == static_cast<int64_t>(k.size())) continue;
    const auto order = std::get<1>(scores[g].to(torch::kFloat).sort(/*stable=*/true, 0, /*descending=*/true));
    const int64_t* idx = order.data_ptr<int64_t>();
    std::vector<char> in(static_cast<size_t>(a.groups[g].width), 0);
    for (int64_t j : k) in[j] = 1;
    for (int64_t i = 0; i < order.size(0) && static_cast<int64_t>(k.size()) < want; ++i) {
      if (!in[idx[i]]) k.push_back(idx[i]);
    }
    std::sort(k.begin(), k.end());
  }
  return keep;
}

prune::KeepSets keep_global_goal(const nn::Model& model, const GroupScores& scores, const SizeGoal& goal,
                                 int64_t multiple) {
  if (goal.from_density) {
    return round_up_keep(model, scores, keep_global_top(model, scores, target_units(model, goal.fraction)),
                         multiple);
  }
  const auto& a = model.arch();
  auto frac = [&](int64_t k) {
    return measure_fraction(a, keep_widths(a, keep_global_top(model, scores, k), multiple), goal.measure);
  };
  // The top-k sets grow with k, so the measure does too: bisect for the largest k at or under
  // the goal, then take k + 1 when that lands closer.
  int64_t lo = static_cast<int64_t>(a.prunable_groups().size()), hi = a.units();
  int64_t k = lo;
  if (frac(lo) < goal.fraction) {
    while (hi - lo > 1) {
      const int64_t mid = lo + (hi - lo) / 2;
      (frac(mid) <= goal.fraction ? lo : hi) = mid;
    }
    k = closer_above(frac(lo), frac(hi), goal.fraction) ? hi : lo;
  }
  return round_up_keep(model, scores, keep_global_top(model, scores, k), multiple);
}

double per_layer_density(const nn::Model& model, const SizeGoal& goal, int64_t multiple) {
  if (goal.from_density) return goal.fraction;
  const auto& a = model.arch();
  auto frac = [&](double d) {
    std::vector<int64_t> w(a.groups.size());
    for (int g : a.prunable_groups()) {
      const int64_t n = std::llround(d * static_cast<double>(a.groups[g].initial));
      w[g] = round_up(std::min(a.groups[g].width, std::max<int64_t>(1, n)), multiple, a.groups[g].width);
    }
    return measure_fraction(a, w, goal.measure);
  };
  double lo = 0.0, hi = 1.0;
  for (int i = 0; i < 50; ++i) {
    const double mid = 0.5 * (lo + hi);
    (frac(mid) <= goal.fraction ? lo : hi) = mid;
  }
  return closer_above(frac(lo), frac(hi), goal.fraction) ? hi : lo;
}

prune::KeepSets keep_global_top(const nn::Model& model, const GroupScores& scores, int64_t k) {
  const auto& a = model.arch();
  prune::KeepSets keep(a.groups.size());
  std::vector<std::tuple<float, int, int64_t>> rest;  // (score, group, unit) of non-forced units
  for (int g : a.prunable_groups()) {
    const auto s = scores[g].to(torch::kFloat).contiguous();
    const float* p = s.data_ptr<float>();
    const int64_t best = s.argmax().item<int64_t>();
    keep[g].push_back(best);
    for (int64_t j = 0; j < s.size(0); ++j) {
      if (j != best) rest.emplace_back(p[j], g, j);
    }
  }
  const int64_t forced = static_cast<int64_t>(a.prunable_groups().size());
  const int64_t more = std::clamp<int64_t>(k - forced, 0, static_cast<int64_t>(rest.size()));
  // Highest scores first; ties broken by (group, unit) so the choice is deterministic.
  std::partial_sort(rest.begin(), rest.begin() + more, rest.end(), [](const auto& x, const auto& y) {
    if (std::get<0>(x) != std::get<0>(y)) return std::get<0>(x) > std::get<0>(y);
    return std::make_pair(std::get<1>(x), std::get<2>(x)) < std::make_pair(std::get<1>(y), std::get<2>(y));
  });
  for (int64_t i = 0; i < more; ++i) keep[std::get<1>(rest[i])].push_back(std::get<2>(rest[i]));
  for (auto& k2 : keep) std::sort(k2.begin(), k2.end());
  return keep;
}

prune::KeepSets keep_per_layer(const nn::Model& model, const GroupScores& scores, double density,
                               int64_t multiple) {
  const auto& a = model.arch();
  prune::KeepSets keep(a.groups.size());
  for (int g : a.prunable_groups()) {
    const int64_t w = a.groups[g].width;
    const int64_t n = round_up(
        std::min(w, std::max<int64_t>(1, std::llround(density * static_cast<double>(a.groups[g].initial)))),
        multiple, w);
    const auto idx = std::get<1>(scores[g].to(torch::kFloat).topk(n));
    auto sorted = std::get<0>(idx.sort());
    keep[g].assign(sorted.data_ptr<int64_t>(), sorted.data_ptr<int64_t>() + n);
  }
  return keep;
}

GroupScores gate_scores(const nn::Model& model, const Batches& batches, bool hessian) {
  const auto& a = model.arch();
  const auto opts = torch::TensorOptions().dtype(model.parameters()[0].scalar_type()).device(model.device());
  std::vector<torch::Tensor> gates(a.groups.size());
  std::vector<torch::Tensor> gate_list;
  std::vector<int> gate_group;
  for (int g : a.prunable_groups()) {
    gates[g] = torch::ones({a.groups[g].width}, opts).requires_grad_(true);
    gate_list.push_back(gates[g]);
    gate_group.push_back(g);
  }
  // Scoring must not move BatchNorm's running statistics.
  const auto buffers = model.buffers();
  std::vector<torch::Tensor> saved;
  for (const auto& b : buffers) saved.push_back(b.clone());
  std::vector<torch::Tensor> total(gate_list.size());
  for (const auto& [x, y] : batches) {
    const auto logits = model.forward(x.to(model.device()), /*train=*/true, nullptr, &gates);
    const auto loss = at::cross_entropy_loss(logits, y.to(model.device()));
    auto g = torch::autograd::grad({loss}, gate_list, {}, /*retain_graph=*/hessian,
                                   /*create_graph=*/hessian, /*allow_unused=*/true);
    std::vector<torch::Tensor> contrib = g;
    if (hessian) {
      // H g = ∂/∂c (g · stop_grad(g)): one Hessian-vector product through double backward.
      torch::Tensor z;
      for (const auto& gi : g) {
        if (!gi.defined()) continue;
        const auto term = (gi * gi.detach()).sum();
        z = z.defined() ? z + term : term;
      }
      contrib = torch::autograd::grad({z}, gate_list, {}, false, false, /*allow_unused=*/true);
    }
    for (size_t i = 0; i < total.size(); ++i) {
      if (!contrib[i].defined()) continue;
      const auto c = contrib[i].detach();
      total[i] = total[i].defined() ? total[i] + c : c;
    }
  }
  {
    torch::NoGradGuard ng;
    for (size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(saved[i]);
  }
  GroupScores out(a.groups.size());
  for (size_t i = 0; i < gate_list.size(); ++i) {
    out[gate_group[i]] = total[i].defined() ? total[i].abs().to(torch::kFloat).cpu()
                                            : torch::zeros({a.groups[gate_group[i]].width});
  }
  return out;
}

namespace {
// Sums a per-output-unit quantity over every layer that produces a group.
template <class F>
GroupScores per_producer(const nn::Model& model, F f) {
  torch::NoGradGuard ng;
  const auto& a = model.arch();
  GroupScores out(a.groups.size());
  for (size_t l = 0; l < a.layers.size(); ++l) {
    const int g = a.layers[l].out_group;
    if (!a.groups[g].prunable) continue;
    const auto s = f(a.layers[l], model.layers()[l]);
    if (!s.defined()) continue;
    out[g] = out[g].defined() ? out[g] + s : s;
  }
  for (int g : a.prunable_groups()) {
    if (!out[g].defined()) out[g] = torch::zeros({a.groups[g].width});
  }
  return out;
}
}  // namespace

GroupScores gamma_scores(const nn::Model& model) {
  return per_producer(model, [](const nn::Layer& l, const nn::LayerTensors& t) {
    return l.bn ? t.gamma.detach().abs().to(torch::kFloat).cpu() : torch::Tensor();
  });
}

GroupScores filter_l1_scores(const nn::Model& model) {
  return per_producer(model, [](const nn::Layer&, const nn::LayerTensors& t) {
    return t.weight.detach().abs().flatten(1).sum(1).to(torch::kFloat).cpu();
  });
}

GroupScores random_scores(const nn::Model& model, torch::Generator& gen) {
  const auto& a = model.arch();
  GroupScores out(a.groups.size());
  for (int g : a.prunable_groups()) out[g] = torch::rand({a.groups[g].width}, gen, torch::kFloat);
  return out;
}

Batches scoring_batches(train::TrainContext& ctx, int64_t n, int64_t first) {
  data::Batcher b(ctx.data.train, std::min<int64_t>(ctx.cfg.batch_size, ctx.data.train.size()),
                  static_cast<uint64_t>(ctx.cfg.seed), {});
  Batches out;
  for (int64_t i = 0; i < n; ++i) out.push_back(b.batch(first + i));
  return out;
}

std::vector<double> iterative_densities(double density, int64_t steps) {
  // As the authors' iterative_single_shot_pruning: one cut when D >= 0.5; otherwise 0.5, then
  // D - (D - 0.5)·0.5^i for i = 1, 2, ..., and D last.
  if (density >= 0.5 || steps <= 1) return {density};
  std::vector<double> d{0.5};
  for (int64_t i = 1; i + 1 < steps; ++i) {
    d.push_back(density - (density - 0.5) * std::pow(0.5, static_cast<double>(i)));
  }
  d.push_back(density);
  return d;
}

}  // namespace demp::methods
