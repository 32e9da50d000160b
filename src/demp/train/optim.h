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
  double momentum = 0.9;       ///< SGD / SGDW
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  ///< AdamW
};

class Optimizer {
 public:
  explicit Optimizer(OptimOptions o) : opt_(std::move(o)) {}
  virtual ~Optimizer() = default;

  /// One update of `params` with their .grad() at learning rate `lr`.
  virtual void step(std::vector<torch::Tensor>& params, double lr) = 0;

  /// Per-parameter state (momentum; AdamW's first and second moments), same shapes as params.
  /// Empty before the first step.
  std::vector<std::vector<torch::Tensor>>& state() { return state_; }
  int64_t steps() const { return steps_; }
  void set_steps(int64_t n) { steps_ = n; }
  const OptimOptions& options() const { return opt_; }

 protected:
  OptimOptions opt_;
  std::vector<std::vector<torch::Tensor>> state_;
  int64_t steps_ = 0;
};

/// Throws demp::Error for an unknown name.
std::unique_ptr<Optimizer> make_optimizer(const OptimOptions& o);

}  // namespace demp::train
