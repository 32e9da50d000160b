// Network Slimming (Liu et al. 2017): the same L1 on BatchNorm γ as DemP but with a constant λ,
// one cut of the channels under a global |γ| percentile, then fine-tuning without the penalty.
#include <fmt/format.h>
#include <torch/torch.h>

#include "demp/methods/baselines.h"
#include "demp/methods/demp.h"
#include "demp/methods/selection.h"
#include "demp/train/config.h"
#include "demp/train/trainer.h"

namespace demp::methods {
namespace {

class Slimming : public Method {
 public:
  explicit Slimming(const train::TrainConfig& c)
      : o_(prune_options(c)), lambda_value_(c.get<double>("lambda")) {}
  std::string name() const override { return "slimming"; }
  void begin(train::TrainContext& ctx) override {
    at_ = o_.prune_at >= 0 ? o_.prune_at : ctx.total_steps / 2;
  }
  bool graph_safe() const override { return true; }
  void before_step(train::TrainContext& ctx) override {
    // λ until the cut, 0 after it: a device scalar, so that a captured step follows the switch.
    const double lambda = ctx.step < at_ ? lambda_value_ : 0.0;
    if (!lambda_.defined()) {  // made once, then filled: a captured graph reads this tensor
      lambda_ = torch::full({}, lambda, torch::TensorOptions().device(ctx.device));
    } else {
      lambda_.fill_(lambda);
    }
  }
  torch::Tensor extra_loss(train::TrainContext& ctx) override {
    if (lambda_value_ == 0) return {};
    return regularizer("l1-gamma", ctx.model) * lambda_;
  }
  void prune_point(train::TrainContext& ctx) override {
    if (ctx.step != at_) return;
    const auto goal = size_goal(o_);
    const auto keep = keep_global_goal(ctx.model, gamma_scores(ctx.model), goal, o_.width_multiple);
    ctx.remove_units(keep, "slimming |gamma| cut to " + goal.text());
  }
  nlohmann::json metrics(train::TrainContext& ctx) override {
    return {{"reg_lambda", ctx.step < at_ ? lambda_value_ : 0.0}};
  }

 private:
  PruneOptions o_;
  double lambda_value_;  ///< --lambda (declared by DemP, demp.cpp)
  int64_t at_ = 0;
  torch::Tensor lambda_;  ///< 0-dim, on the model's device
};

}  // namespace

std::unique_ptr<Method> make_slimming(const train::TrainConfig& cfg) {
  return std::make_unique<Slimming>(cfg);
}

}  // namespace demp::methods
