// CroP-it and EarlyCroP: structured gradient-flow preservation. The score of unit j is
// |(H_c g_c)_j| with g_c = ∂L/∂c (gate trick, double backward); the network is pruned to the
// target density through a few sub-steps, rescoring the shrunk network each time.
#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>

#include "demp/common/error.h"
#include "demp/methods/baselines.h"
#include "demp/methods/selection.h"
#include "demp/train/config.h"
#include "demp/train/trainer.h"

namespace demp::methods {
namespace {

const int kCropOptions = train::declare_options(
    "crop", {{"crop-steps",
              "baselines: sub-steps of the iterative CroP-it/EarlyCroP pruning",
              int64_t{5},
              "baselines",
              {},
              not_baselines(),
              "the baselines",
              [](const train::TrainConfig& c) { check_at_least(c, "crop-steps", 1); }}});

/// CroP-it's options (--score-batches is SNAP's, snap.cpp).
struct CropOptions {
  explicit CropOptions(const train::TrainConfig& c)
      : prune(prune_options(c)),
        steps(c.get<int64_t>("crop-steps")),
        batches(c.get<int64_t>("score-batches")) {}
  PruneOptions prune;
  int64_t steps, batches;
};

// The unit density of the goal: --density, or for a size target the per-layer density of that
// size (EarlyCroP's trigger threshold is 1 − it).
double schedule_density(const train::TrainContext& ctx, const CropOptions& o) {
  return per_layer_density(ctx.model, size_goal(o.prune), o.prune.width_multiple);
}

// The iterative ("-it") pruning: the authors' densities towards D in units, or, with a size
// target F, the same schedule in the target's measure (0.5, F − (F − 0.5)·0.5^i, ..., F of the
// parameters, say), each cut the closest to its fraction. (Unit densities would overshoot a
// parameter target: the global ranking removes parameter-heavy units first.)
void crop_iterative(train::TrainContext& ctx, const CropOptions& o, const std::string& why, double density) {
  const auto goal = size_goal(o.prune);
  const int64_t m = o.prune.width_multiple;
  int64_t round = 0;
  for (double f : iterative_densities(goal.from_density ? density : goal.fraction, o.steps)) {
    const auto& a = ctx.model.arch();
    SizeGoal sub = goal;
    sub.fraction = f;
    if (goal.from_density) {
      if (target_units(ctx.model, f) >= a.units()) continue;
    } else {
      std::vector<int64_t> widths;
      for (const auto& g : a.groups) widths.push_back(g.width);
      if (measure_fraction(a, widths, goal.measure) <= f) continue;
    }
    // Each sub-step rescores the shrunk network on batches it has not seen yet.
    const int64_t n = o.batches;
    const auto scores = gate_scores(ctx.model, scoring_batches(ctx, n, ctx.step + n * round++), true);
    ctx.remove_units(keep_global_goal(ctx.model, scores, sub, m),
                     fmt::format("{} sub-step to {}", why, sub.text()));
  }
}

class CropIt : public Method {
 public:
  explicit CropIt(const train::TrainConfig& c) : o_(c) {}
  std::string name() const override { return "crop"; }
  bool graph_safe() const override { return true; }  // no step hooks
  void prune_point(train::TrainContext& ctx) override {
    if (ctx.step == std::max<int64_t>(0, o_.prune.prune_at))
      crop_iterative(ctx, o_, "crop-it", schedule_density(ctx, o_));
  }

 private:
  CropOptions o_;
};

// Prunes at the first epoch end where 0 < | ‖θ_t − θ_0‖ − ‖θ_{t−1} − θ_0‖ | / ‖θ_0‖ < 1 − D
// (t, t−1: consecutive epoch ends). If that never happens by --prune-at (default: half of the
// run), it prunes there,
// and says so: a baseline that never prunes would not be a baseline.
class EarlyCrop : public Method {
 public:
  explicit EarlyCrop(const train::TrainConfig& c) : o_(c) {}
  std::string name() const override { return "earlycrop"; }
  bool graph_safe() const override { return true; }  // no step hooks
  void begin(train::TrainContext& ctx) override {
    density_ = schedule_density(ctx, o_);
    if (ctx.step == 0) {
      theta0_ = flat(ctx);
      norm0_ = theta0_.norm().item<double>();
    }
  }
  void prune_point(train::TrainContext& ctx) override {
    if (done_ || ctx.step == 0 || ctx.step % ctx.steps_per_epoch != 0) {
      const int64_t latest = o_.prune.prune_at >= 0 ? o_.prune.prune_at : ctx.total_steps / 2;
      if (!done_ && ctx.step >= latest && ctx.step > 0)
        fire(ctx, "earlycrop (trigger not met by --prune-at)");
      return;
    }
    if (!theta0_.defined()) return;  // resumed after the trigger point: nothing left to do
    const double dist = (flat(ctx) - theta0_).norm().item<double>();
    const double rel = std::abs(dist - last_dist_) / norm0_;
    last_dist_ = dist;
    ctx.log(fmt::format("earlycrop step {} | relative distance change {:.6f} | threshold {:.4f}", ctx.step,
                        rel, 1 - density_));
    if (rel > 0 && rel < 1 - density_) fire(ctx, "earlycrop");
  }
  nlohmann::json state() const override { return {{"done", done_}, {"last_dist", last_dist_}}; }
  void load_state(const nlohmann::json& s) override {
    done_ = s.value("done", false);
    last_dist_ = s.value("last_dist", 0.0);
  }

 private:
  static torch::Tensor flat(train::TrainContext& ctx) {
    std::vector<torch::Tensor> v;
    for (const auto& p : ctx.model.parameters()) v.push_back(p.detach().flatten().to(torch::kDouble));
    return torch::cat(v);
  }
  void fire(train::TrainContext& ctx, const std::string& why) {
    crop_iterative(ctx, o_, why, density_);
    done_ = true;
    theta0_ = torch::Tensor();
  }
  CropOptions o_;
  torch::Tensor theta0_;
  double norm0_ = 1, last_dist_ = 0;
  double density_ = 1;  ///< the unit density of the goal (the trigger's threshold is 1 − it)
  bool done_ = false;
};

}  // namespace

std::unique_ptr<Method> make_crop(const train::TrainConfig& cfg) { return std::make_unique<CropIt>(cfg); }
std::unique_ptr<Method> make_earlycrop(const train::TrainConfig& cfg) {
  return std::make_unique<EarlyCrop>(cfg);
}

}  // namespace demp::methods
