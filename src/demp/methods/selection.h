#pragma once
// Shared pieces of the structured baselines: unit scores and the selection of units to keep.
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "demp/prune/surgery.h"

namespace demp::nn {
class Model;
struct Arch;
}  // namespace demp::nn
namespace demp::train {
struct TrainContext;
struct TrainConfig;
}  // namespace demp::train

namespace demp::methods {

/// Per group id: one score per unit (float, CPU) for prunable groups; undefined otherwise.
using GroupScores = std::vector<torch::Tensor>;
using Batches = std::vector<std::pair<torch::Tensor, torch::Tensor>>;

/// Units to keep for a global `density` (fraction of the network's initial units).
int64_t target_units(const nn::Model& model, double density);

/// What a baseline cuts to: a fraction of the initial network's units, parameters or FLOPs per
/// image. --target-params/--target-flops/--target-units when one is given (so that baselines and
/// DemP can be driven to the same size), else the units at --density (the paper's form).
struct SizeGoal {
  enum class Measure { Units, Params, Flops };
  Measure measure = Measure::Units;
  double fraction = 1.0;
  bool from_density = true;  ///< --density, not a --target-*
  std::string text() const;  ///< "density 0.3", "params 10.0%"
};

/// The pruning options that DemP and the baselines share (declared in selection.cpp, group
/// "pruning" and "baselines"): the size target, the width multiple, when prune events happen.
/// (The defaults are the declarations'.)
struct PruneOptions {
  double target_params = 0, target_flops = 0, target_units = 0;  ///< --target-*: 0 off
  double target_by = 0;        ///< --target-by: fraction of the run by which a target is reached
  int64_t width_multiple = 0;  ///< --width-multiple
  int64_t prune_every = 0;     ///< --prune-every (0: the method's default)
  int64_t prune_after = 0;     ///< --prune-after
  double density = 0;          ///< --density (baselines without a target)
  int64_t prune_at = 0;        ///< --prune-at (-1: the method's default)
  bool has_target() const { return target_params > 0 || target_flops > 0 || target_units > 0; }
};
/// Reads them from a run's configuration (checked by train::validate before).
PruneOptions prune_options(const train::TrainConfig& cfg);
/// The methods that remove no units (dense, scan), and those that are not baselines (dense, demp,
/// scan): the `not_methods` of the shared options' declarations (OptionSpec), named once.
const std::vector<std::string>& not_pruning();
const std::vector<std::string>& not_baselines();
/// The check of an integer option that must be positive (min 1) or not negative (min 0), for
/// OptionSpec::check: one wording for every method's options.
void check_at_least(const train::TrainConfig& c, const char* name, int64_t min);

SizeGoal size_goal(const PruneOptions& o);

/// The measure of `a` with its prunable groups at `widths` (one per group), as a fraction of
/// the same measure at the groups' initial widths.
double measure_fraction(const nn::Arch& a, const std::vector<int64_t>& widths, SizeGoal::Measure m);

/// The same goal scaled: `fraction` of the way from the whole network to `goal` (for gradual
/// schedules): 1 − (1 − goal)·fraction of the measure.
SizeGoal partial_goal(const SizeGoal& goal, double fraction);
/// Zhu & Gupta's cubic schedule, the share of the way still ahead at fraction x of it: (1 − x)³,
/// x clamped to [0, 1]. Gradual cuts 1 − cubic_fall(τ) of the way; DemP's --target-plan cubic
/// plans its size along it.
double cubic_fall(double x);

/// Global selection towards a goal: the top-k units by score (every group keeps its best; counts
/// rounded up to `multiple`), with k such that the measure of what is kept is closest to the goal.
/// From --density: exactly keep_global_top(model, scores, target_units(model, density)).
prune::KeepSets keep_global_goal(const nn::Model& model, const GroupScores& scores, const SizeGoal& goal,
                                 int64_t multiple = 1);
/// The one per-layer density d (each group keeps max(1, round(d × initial width)) units, never
/// more than it has) whose measure is closest to the goal; the goal's fraction itself for a
/// density goal.
double per_layer_density(const nn::Model& model, const SizeGoal& goal, int64_t multiple = 1);

/// The global top-`k` units by score; every group keeps at least its best unit.
prune::KeepSets keep_global_top(const nn::Model& model, const GroupScores& scores, int64_t k);
/// In every group, the top max(1, round(density × initial width)) units by score, that count
/// rounded up to a multiple of `multiple` (never above the group's width).
prune::KeepSets keep_per_layer(const nn::Model& model, const GroupScores& scores, double density,
                               int64_t multiple = 1);
/// `keep` with each group's count rounded up to a multiple of `multiple` (never above the
/// group's width) by adding its best-scored units not yet kept: the same --width-multiple DemP's
/// scans keep, so that baselines' narrow layers run as fast per unit as DemP's.
prune::KeepSets round_up_keep(const nn::Model& model, const GroupScores& scores, prune::KeepSets keep,
                              int64_t multiple);

/// Gate-trick scores: a multiplicative gate c = 1 on every unit's output.
/// hessian=false (SNAP): |Σ_batches ∂L/∂c_j|; hessian=true (CroP): |Σ_batches (H_c g_c)_j| with
/// g_c = ∂L/∂c, through a double backward. Forward passes in train mode; BatchNorm running
/// statistics are restored afterwards, so scoring leaves the model as it was.
GroupScores gate_scores(const nn::Model& model, const Batches& batches, bool hessian);
/// Σ |γ| over the BatchNorm layers producing each group (Network Slimming).
GroupScores gamma_scores(const nn::Model& model);
/// Σ |W| of each unit's producing filters or rows, over every producer (L1-norm filter pruning).
GroupScores filter_l1_scores(const nn::Model& model);
/// Uniform random scores from the generator (random structured pruning).
GroupScores random_scores(const nn::Model& model, torch::Generator& gen);

/// `n` training batches (no augmentation) starting at global batch index `first` (the order
/// training draws them in): scoring at step s with first = s sees the batches training is about
/// to see, so that every scoring round uses fresh data.
Batches scoring_batches(train::TrainContext& ctx, int64_t n, int64_t first = 0);

/// Densities of the iterative ("-it") schedule towards D in at most `steps` sub-steps, as the
/// authors' code does them: a single cut when D >= 0.5; else d_0 = 0.5,
/// d_i = D − (D − 0.5)·0.5^i for i = 1..steps−2, then D.
std::vector<double> iterative_densities(double density, int64_t steps);

}  // namespace demp::methods
