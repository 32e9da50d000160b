// SNAP, structured SNIP: a gate c_j = 1 on every unit; score |Σ_batches ∂L/∂c_j|; keep the global
// top-k at one shot, by default at initialisation.
#include <fmt/format.h>
#include <torch/torch.h>

#include "demp/common/error.h"
#include "demp/methods/baselines.h"
#include "demp/methods/selection.h"
#include "demp/train/config.h"
#include "demp/train/trainer.h"

namespace demp::methods {
namespace {

// Shared with CroP-it and EarlyCroP (crop.cpp).
const int kSnapOptions = train::declare_options(
    "snap", {{"score-batches",
              "baselines: training batches summed into SNAP/CroP scores",
              int64_t{1},
              "baselines",
              {},
              not_baselines(),
              "the baselines",
              [](const train::TrainConfig& c) { check_at_least(c, "score-batches", 1); }}});

class Snap : public Method {
 public:
  explicit Snap(const train::TrainConfig& c)
      : o_(prune_options(c)), batches_(c.get<int64_t>("score-batches")) {}
  std::string name() const override { return "snap"; }
  bool graph_safe() const override { return true; }  // no step hooks
  void prune_point(train::TrainContext& ctx) override {
    const int64_t at = std::max<int64_t>(0, o_.prune_at);
    if (ctx.step != at) return;
    const auto scores = gate_scores(ctx.model, scoring_batches(ctx, batches_, ctx.step), false);
    const auto goal = size_goal(o_);
    ctx.remove_units(keep_global_goal(ctx.model, scores, goal, o_.width_multiple), "snap to " + goal.text());
  }

 private:
  PruneOptions o_;
  int64_t batches_;  ///< --score-batches
};

}  // namespace

std::unique_ptr<Method> make_snap(const train::TrainConfig& cfg) { return std::make_unique<Snap>(cfg); }

}  // namespace demp::methods
