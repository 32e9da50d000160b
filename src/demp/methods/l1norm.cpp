// L1-norm filter pruning (Li et al. 2017): gradual, per-layer ratio, smallest-L1 filters first.
// A cheap reference.
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>

#include "demp/methods/baselines.h"
#include "demp/methods/selection.h"
#include "demp/train/trainer.h"

namespace demp::methods {
namespace {

// Gradual: every K steps from step K to --prune-at (default half of the run) each layer's
// density falls linearly from 1 to D; filters with the smallest L1 norm go first.
class L1Norm : public Method {
 public:
  explicit L1Norm(const train::TrainConfig& c) : o_(prune_options(c)) {}
  std::string name() const override { return "l1norm"; }
  bool graph_safe() const override { return true; }  // no step hooks
  void begin(train::TrainContext& ctx) override {
    end_ = o_.prune_at > 0 ? o_.prune_at : std::max<int64_t>(1, ctx.total_steps / 2);
    every_ = o_.prune_every > 0
                 ? o_.prune_every
                 : std::max<int64_t>(1, std::llround(0.05 * static_cast<double>(ctx.total_steps)));
  }
  void prune_point(train::TrainContext& ctx) override {
    if (ctx.step == 0 || ctx.step > end_ || (ctx.step % every_ != 0 && ctx.step != end_)) return;
    const double frac = std::min(1.0, static_cast<double>(ctx.step) / static_cast<double>(end_));
    const int64_t m = o_.width_multiple;
    const double d = per_layer_density(ctx.model, partial_goal(size_goal(o_), frac), m);
    ctx.remove_units(keep_per_layer(ctx.model, filter_l1_scores(ctx.model), d, m),
                     fmt::format("l1norm per-layer density {:.4f}", d));
  }

 private:
  PruneOptions o_;
  int64_t end_ = 1, every_ = 1;
};

}  // namespace

std::unique_ptr<Method> make_l1norm(const train::TrainConfig& cfg) { return std::make_unique<L1Norm>(cfg); }

}  // namespace demp::methods
