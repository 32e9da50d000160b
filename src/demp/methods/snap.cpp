// SNAP, structured SNIP: a gate c_j = 1 on every unit; score |Σ_batches ∂L/∂c_j|; keep the global
// top-k at one shot, by default at initialisation.
#include <fmt/format.h>
#include <torch/torch.h>

#include "demp/methods/baselines.h"
#include "demp/methods/selection.h"
#include "demp/train/trainer.h"

namespace demp::methods {
namespace {

class Snap : public Method {
 public:
  std::string name() const override { return "snap"; }
  bool graph_safe() const override { return true; }  // no step hooks
  void prune_point(train::TrainContext& ctx) override {
    const int64_t at = std::max<int64_t>(0, ctx.cfg.prune_at);
    if (ctx.step != at) return;
    const auto scores = gate_scores(ctx.model, scoring_batches(ctx, ctx.cfg.score_batches, ctx.step), false);
    const auto goal = size_goal(ctx.cfg);
    ctx.remove_units(keep_global_goal(ctx.model, scores, goal, ctx.cfg.width_multiple),
                     "snap to " + goal.text());
  }
};

}  // namespace

std::unique_ptr<Method> make_snap(const train::TrainConfig&) { return std::make_unique<Snap>(); }

}  // namespace demp::methods
