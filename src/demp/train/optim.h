#pragma once
// Optimizers written with multi-tensor (_foreach_) kernels. State is one vector of tensors per
// parameter, each shaped like its parameter, so that surgery can slice it with the parameter.
#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

namespace demp::train {

struct OptimOptions {
  std::string name = "adamw";  ///< "sgd" (PyTorch-style), "sgdw" (decoupled decay), "adamw"
  double weight_decay = 5e-4;
  double momentum = 0.9;                          ///< SGD / SGDW
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  ///< AdamW
};

class Optimizer {
 public:
  explicit Optimizer(OptimOptions o) : opt_(std::move(o)) {}
  virtual ~Optimizer() = default;

  /// Sets the learning rate of the next step(s). It lives in a 0-dim tensor on the parameters'
  /// device, so that a step captured once as a CUDA graph reads the current value on replay.
  void set_lr(double lr);
  double lr() const { return lr_; }
  /// The rate as the 0-dim tensor the step reads (for methods whose step hooks scale by it, e.g.
  /// a proximal step: graph-safe, it follows set_lr on replay).
  const torch::Tensor& lr_tensor(const torch::Device& device) { return lr_on(device); }

  /// One update of `params` with their .grad() at the rate of set_lr. Only device work (no host
  /// reads, no allocation that depends on values): safe to capture in a CUDA graph. The step
  /// count used by AdamW's bias correction is a device tensor advanced by the step itself.
  virtual void step(std::vector<torch::Tensor>& params) = 0;
  void step(std::vector<torch::Tensor>& params, double lr) {
    set_lr(lr);
    step(params);
  }
  /// The host-side step count follows a replayed graph's step (which runs no host code).
  void count_replayed_step() { ++steps_; }

  /// Per-parameter state (momentum; AdamW's first and second moments), same shapes as params.
  /// Empty before the first step.
  std::vector<std::vector<torch::Tensor>>& state() { return state_; }
  int64_t steps() const { return steps_; }
  void set_steps(int64_t n) {
    steps_ = n;
    device_steps_ = torch::Tensor();  // re-made from steps_ at the next step
  }
  const OptimOptions& options() const { return opt_; }

 protected:
  OptimOptions opt_;
  std::vector<std::vector<torch::Tensor>> state_;
  int64_t steps_ = 0;
  double lr_ = 0;
  torch::Tensor lr_tensor_;     ///< 0-dim, on the parameters' device
  torch::Tensor device_steps_;  ///< 0-dim float32 step count on the device (AdamW)
  /// lr_tensor_ on `device`, holding lr_.
  const torch::Tensor& lr_on(const torch::Device& device);
};

/// Throws demp::Error for an unknown name.
std::unique_ptr<Optimizer> make_optimizer(const OptimOptions& o);

}  // namespace demp::train
