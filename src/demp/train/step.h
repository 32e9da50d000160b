#pragma once
// One training step: forward (optionally under bf16 autocast), cross-entropy plus the method's
// term, backward, the method's hooks, the optimizer. Run eagerly, or on a GPU captured once as a
// CUDA graph and replayed, which removes the per-operation launch overhead that otherwise makes
// a pruned network no faster than the dense one (DESIGN.md, measured anchors).
//
// The graph is (re)captured automatically whenever the tensors it was recorded with change: a
// prune event replaces the parameters, gradients and optimizer state, so the next steps run
// eagerly (warm-up: cuDNN picks its algorithms for the new shapes) and then the step is
// captured again.
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace demp::train {

struct TrainContext;
class Method;

enum class Precision { Fp32, Bf16 };

/// "auto" (bf16 on CUDA, fp32 elsewhere), "bf16", "fp32"; throws demp::Error otherwise.
Precision parse_precision(const std::string& spec, const torch::Device& device);
std::string precision_name(Precision p);
/// "auto" (on for CUDA), "on" (CUDA only: demp::Error on a CPU), "off".
bool parse_graph(const std::string& spec, const torch::Device& device);
/// Whether this build of demp can capture CUDA graphs (LibTorch with CUDA).
bool cuda_graphs_built();

struct StepOptions {
  Precision precision = Precision::Fp32;
  bool graph = false;
  double label_smoothing = 0;
  int64_t warmup_steps = 2;  ///< eager steps before each (re)capture
  /// Data-parallel: called just before backward (to start averaging gradients while backward
  /// runs) and right after it (to finish: every rank then holds the mean gradient), before the
  /// method's after_backward and the optimizer. Steps with them run eagerly.
  std::function<void(const std::vector<torch::Tensor>&)> before_backward;
  std::function<void(const std::vector<torch::Tensor>&)> sync_gradients;
};

class StepRunner {
 public:
  /// On CUDA the runner makes a stream of its own the current one until it is destroyed (graphs
  /// cannot be captured on the default stream); everything the loop does in between (batches,
  /// scans, surgery, evaluation) runs on it in order. Runners nest like scopes: destroy one
  /// before making the next, or in reverse order of creation.
  StepRunner(TrainContext& ctx, Method& method, StepOptions options);
  ~StepRunner();
  StepRunner(const StepRunner&) = delete;
  StepRunner& operator=(const StepRunner&) = delete;

  /// Runs step ctx.step on the batch (x, y) (on ctx.device) at learning rate `lr`. Calls the
  /// method's before_step. Does not advance ctx.step. No host synchronisation on a GPU.
  void run(const torch::Tensor& x, const torch::Tensor& y, double lr);

  /// Device sums since reset_sums(): cross-entropy × images (float64) and correct predictions.
  const torch::Tensor& loss_sum() const;
  const torch::Tensor& correct_sum() const;
  int64_t seen() const;
  void reset_sums();
  /// The last step's total loss (with the method's term), a device scalar.
  const torch::Tensor& last_loss() const;

  bool last_step_replayed() const;
  int64_t captures() const;  ///< graphs captured so far
  int64_t replays() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace demp::train
