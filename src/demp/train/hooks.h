#pragma once
// The hook contract between the one training loop and the pruning methods (DESIGN.md principle 3).
// It lives with the loop, which never names a method: run_training receives a factory. Each hook
// has a no-op default; a method (src/demp/methods/) overrides what it needs.
#include <torch/types.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace demp::train {

struct TrainContext;
struct TrainConfig;

class Method {
 public:
  virtual ~Method() = default;
  virtual std::string name() const = 0;
  /// Once, before the first step of this process (after a resume too).
  virtual void begin(TrainContext&) {}
  /// Before the step with index ctx.step, and once more after the last step with
  /// ctx.step == ctx.total_steps: where methods remove units.
  virtual void prune_point(TrainContext&) {}
  /// Before every step, outside any captured region: where a method sets the per-step values
  /// (scheduled coefficients, generator seeds) that its step hooks read. On a GPU the step
  /// (extra_loss, after_backward, after_step) may be captured once as a CUDA graph and replayed,
  /// so those hooks must take anything that changes from step to step from device tensors set
  /// here, not from host values baked in at capture.
  virtual void before_step(TrainContext&) {}
  /// True when the step hooks follow the rule above (a method without step hooks trivially
  /// does). The trainer runs the steps of a method that is not graph-safe eagerly.
  virtual bool graph_safe() const = 0;
  /// Generators the step hooks draw from on the device (registered with a captured graph).
  virtual std::vector<at::Generator> step_generators() { return {}; }
  /// A term added to the loss of this step (undefined: none).
  virtual torch::Tensor extra_loss(TrainContext&) { return {}; }
  /// After backward, before the optimizer step (gradients are available).
  virtual void after_backward(TrainContext&) {}
  /// After the optimizer step (gradients still available).
  virtual void after_step(TrainContext&) {}
  /// Extra fields of a metrics row.
  virtual nlohmann::json metrics(TrainContext&) { return nlohmann::json::object(); }
  /// State a resumed run needs; restored with load_state before begin().
  virtual nlohmann::json state() const { return nlohmann::json::object(); }
  virtual void load_state(const nlohmann::json&) {}
};

/// Builds the method a run asks for (cfg.method); throws demp::Error when it cannot.
using MethodFactory = std::function<std::unique_ptr<Method>(const TrainConfig& cfg)>;

}  // namespace demp::train
