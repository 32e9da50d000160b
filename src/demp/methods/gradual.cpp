// Gradual pruning during training: what users of the popular Python pruning libraries run
// (Torch-Pruning's iterative pruners with a global BN-scale or normalised-magnitude importance,
// on the gradual schedule of Zhu & Gupta 2017). Every K steps from --prune-after, the globally
// least important units are removed, the size falling along the cubic schedule
//   kept(τ) = goal + (1 − goal)·(1 − τ)³,   τ = (t − start) / (end − start),
// until the goal is reached at --prune-at (default: --target-by of the run, the point by which
// DemP's size controller reaches its target, so both spend the same steps on the small network);
// training then goes on. Not in the DemP paper: the strongest practical baseline.
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>

#include "demp/common/error.h"
#include "demp/methods/baselines.h"
#include "demp/methods/selection.h"
#include "demp/nn/model.h"
#include "demp/train/config.h"
#include "demp/train/trainer.h"

namespace demp::methods {
namespace {

const int kGradualOptions = train::declare_options(
    "gradual", {{"gradual-score",
                 "gradual: the global ranking: gamma (BatchNorm |γ|) or magnitude (each unit's filter L1 "
                 "norm over its layer's mean); it prunes every --prune-every steps (default 2% of the run) "
                 "from --prune-after to --prune-at along Zhu & Gupta's cubic schedule",
                 std::string("gamma"),
                 "baselines",
                 {"gradual"},
                 {},
                 "",
                 [](const train::TrainConfig& c) {
                   const std::string v = c.get<std::string>("gradual-score");
                   if (v != "gamma" && v != "magnitude") {
                     throw Error("unknown --gradual-score '" + v + "'", "use gamma or magnitude");
                   }
                 }}});

class Gradual : public Method {
 public:
  explicit Gradual(const train::TrainConfig& c)
      : o_(prune_options(c)), score_(c.get<std::string>("gradual-score")) {}
  std::string name() const override { return "gradual"; }
  bool graph_safe() const override { return true; }  // no step hooks
  void begin(train::TrainContext& ctx) override {
    const PruneOptions& c = o_;
    const double total = static_cast<double>(ctx.total_steps);
    end_ = c.prune_at >= 0 ? c.prune_at : std::max<int64_t>(1, std::llround(c.target_by * total));
    start_ = std::min(c.prune_after, end_ - 1);
    if (start_ < 0) start_ = 0;
    every_ = c.prune_every > 0 ? c.prune_every : std::max<int64_t>(1, std::llround(0.02 * total));
  }
  void prune_point(train::TrainContext& ctx) override {
    if (ctx.step <= start_ || ctx.step > end_) return;
    if ((ctx.step - start_) % every_ != 0 && ctx.step != end_) return;
    const double tau = static_cast<double>(ctx.step - start_) / static_cast<double>(end_ - start_);
    const auto goal = partial_goal(size_goal(o_), 1.0 - cubic_fall(tau));
    const auto keep = keep_global_goal(ctx.model, scores(ctx), goal, o_.width_multiple);
    const auto& a = ctx.model.arch();
    bool changes = false;
    for (int g : a.prunable_groups()) {
      changes |= !keep[g].empty() && static_cast<int64_t>(keep[g].size()) < a.groups[g].width;
    }
    if (!changes) return;
    ctx.remove_units(
        keep, fmt::format("gradual ({}) step {} of the schedule to {}", score_, ctx.step, goal.text()));
  }

 private:
  GroupScores scores(train::TrainContext& ctx) const {
    if (score_ == "gamma") return gamma_scores(ctx.model);
    // magnitude: each unit's producing-filter L1 norm over the mean of its group, so that one
    // global ranking compares layers of different fan-in fairly (Torch-Pruning's mean-normalised
    // group importance).
    auto s = filter_l1_scores(ctx.model);
    for (int g : ctx.model.arch().prunable_groups()) {
      const double mean = s[g].mean().item<double>();
      if (mean > 0) s[g] = s[g] / mean;
    }
    return s;
  }

  PruneOptions o_;
  std::string score_;  ///< --gradual-score
  int64_t start_ = 0, end_ = 1, every_ = 1;
};

}  // namespace

std::unique_ptr<Method> make_gradual(const train::TrainConfig& cfg) { return std::make_unique<Gradual>(cfg); }

}  // namespace demp::methods
