#pragma once
// Structured surgery and the dead-unit scan: the two pieces every pruning method shares.
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace demp::nn {
class Model;
}

namespace demp::prune {

/// keep[g] lists the unit indices of group g to keep (sorted, unique). An empty entry or one
/// listing every unit leaves that group alone. Non-prunable groups (input, logits) must be left
/// alone.
using KeepSets = std::vector<std::vector<int64_t>>;

/// An optimizer's per-parameter state slots (state[i] belongs to the model's parameter i), the
/// part of an optimizer that surgery must slice along with the parameters.
using OptimizerState = std::vector<std::vector<torch::Tensor>>;

struct GroupChange {
  std::string group;
  int64_t before = 0, after = 0;
};

/// Removes every unit not in `keep` from the model: producer weights/biases/BN γ, β and running
/// statistics, consumer input channels (or flattened feature blocks), residual skip maps, the
/// parameters' gradients and each touched parameter's slots in `optimizer_state` (null or empty:
/// none; the optimizer's step count is not surgery's business). Groups are never emptied: an empty keep set
/// is an error. Returns the groups that changed.
std::vector<GroupChange> remove_units(nn::Model& model, OptimizerState* optimizer_state,
                                      const KeepSets& keep);

/// Result of the dead-unit scan.
struct ScanResult {
  std::vector<torch::Tensor> dead;      ///< per group: bool mask of dead units (undefined if not prunable)
  std::vector<torch::Tensor> activity;  ///< per group: max over batches of the per-unit activity sum
  int64_t dead_total = 0, units_total = 0;
  /// quasi-dead counts at each epsilon in `quasi_eps` (total over groups)
  std::vector<int64_t> quasi_dead;
};

/// Eval-mode scan over the check-set `images` in batches of `batch`: unit j of a group is dead iff
/// its post-activation output summed over the batch and all positions is <= eps in every batch.
/// `combine_max`, when given, replaces each group's per-unit activity (float, CPU) by its maximum
/// over the ranks of a data-parallel run before anything is decided from it: a unit is then dead
/// only if it is dead on every rank's check images.
ScanResult scan_dead(const nn::Model& model, const torch::Tensor& images, int64_t batch, double eps = 0.0,
                     const std::vector<double>& quasi_eps = {},
                     const std::function<void(torch::Tensor&)>& combine_max = {});

/// Keep sets from a scan: the live units of each group, or its most active unit if all are dead.
/// With multiple > 1, each group keeps min(width, live rounded up to a multiple) units: the
/// extra ones are the most active dead units. Dead units add only zeros, so the network's
/// output is the same either way; the rounding exists because CPU kernels (BatchNorm above all)
/// run several times slower per element on odd channel counts.
KeepSets keep_live(const nn::Model& model, const ScanResult& scan, int64_t multiple = 1);

/// A one-line-per-group table "group: before -> after".
std::string changes_table(const std::vector<GroupChange>& changes);

}  // namespace demp::prune
