// Random structured pruning (per-layer ratio, at --prune-at): the floor every method must beat.
#include <fmt/format.h>
#include <torch/torch.h>

#include "demp/data/dataset.h"
#include "demp/methods/baselines.h"
#include "demp/methods/selection.h"
#include "demp/train/trainer.h"

namespace demp::methods {
namespace {

class RandomPrune : public Method {
 public:
  explicit RandomPrune(const train::TrainConfig& c) : o_(prune_options(c)) {}
  std::string name() const override { return "random"; }
  bool graph_safe() const override { return true; }  // no step hooks
  void prune_point(train::TrainContext& ctx) override {
    if (ctx.step != std::max<int64_t>(0, o_.prune_at)) return;
    auto gen = demp::make_generator(static_cast<uint64_t>(ctx.cfg.seed), demp::kMisc, 1000);
    const auto goal = size_goal(o_);
    const double d = per_layer_density(ctx.model, goal, o_.width_multiple);
    ctx.remove_units(keep_per_layer(ctx.model, random_scores(ctx.model, gen), d, o_.width_multiple),
                     fmt::format("random per-layer density {:.4f} ({})", d, goal.text()));
  }

 private:
  PruneOptions o_;
};

}  // namespace

std::unique_ptr<Method> make_random(const train::TrainConfig& cfg) {
  return std::make_unique<RandomPrune>(cfg);
}

}  // namespace demp::methods
