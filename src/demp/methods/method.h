#pragma once
// Methods are plug-ins on the one training loop (DESIGN.md principle 3). Each hook has a no-op
// default; a method overrides what it needs. A new method is one new file plus one line in
// make_method().
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

namespace demp::train {
struct TrainContext;
struct TrainConfig;
}  // namespace demp::train

namespace demp::methods {

class Method {
 public:
  virtual ~Method() = default;
  virtual std::string name() const = 0;
  /// Once, before the first step of this process (after a resume too).
  virtual void begin(train::TrainContext&) {}
  /// Before the step with index ctx.step, and once more after the last step with
  /// ctx.step == ctx.total_steps: where methods remove units.
  virtual void prune_point(train::TrainContext&) {}
  /// Before every step, outside any captured region: where a method sets the per-step values
  /// (scheduled coefficients, generator seeds) that its step hooks read. On a GPU the step
  /// (extra_loss, after_backward, after_step) may be captured once as a CUDA graph and replayed,
  /// so those hooks must take anything that changes from step to step from device tensors set
  /// here, not from host values baked in at capture.
  virtual void before_step(train::TrainContext&) {}
  /// True when the step hooks follow the rule above (a method without step hooks trivially
  /// does). The trainer runs the steps of a method that is not graph-safe eagerly.
  virtual bool graph_safe() const = 0;
  /// Generators the step hooks draw from on the device (registered with a captured graph).
  virtual std::vector<at::Generator> step_generators() { return {}; }
  /// A term added to the loss of this step (undefined: none).
  virtual torch::Tensor extra_loss(train::TrainContext&) { return {}; }
  /// After backward, before the optimizer step (gradients are available).
  virtual void after_backward(train::TrainContext&) {}
  /// After the optimizer step (gradients still available).
  virtual void after_step(train::TrainContext&) {}
  /// Extra fields of a metrics row.
  virtual nlohmann::json metrics(train::TrainContext&) { return nlohmann::json::object(); }
  /// State a resumed run needs; restored with load_state before begin().
  virtual nlohmann::json state() const { return nlohmann::json::object(); }
  virtual void load_state(const nlohmann::json&) {}
};

/// Throws demp::Error for an unknown method name.
std::unique_ptr<Method> make_method(const train::TrainConfig& cfg);

}  // namespace demp::methods
