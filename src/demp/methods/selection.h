#pragma once
// Shared pieces of the structured baselines: unit scores and the selection of units to keep.
#include <torch/types.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "demp/prune/surgery.h"

namespace demp::nn { class Model; }
namespace demp::train { struct TrainContext; }

namespace demp::methods {

/// Per group id: one score per unit (float, CPU) for prunable groups; undefined otherwise.
using GroupScores = std::vector<torch::Tensor>;
using Batches = std::vector<std::pair<torch::Tensor, torch::Tensor>>;

/// Units to keep for a global `density` (fraction of the network's initial units).
int64_t target_units(const nn::Model& model, double density);

/// The global top-`k` units by score; every group keeps at least its best unit.
prune::KeepSets keep_global_top(const nn::Model& model, const GroupScores& scores, int64_t k);
/// In every group, the top max(1, round(density × initial width)) units by score.
prune::KeepSets keep_per_layer(const nn::Model& model, const GroupScores& scores, double density);

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
