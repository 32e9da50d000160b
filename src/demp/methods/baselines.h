#pragma once
// The structured baselines DemP is compared with (DEMP.md), each in its own file, all on the
// same loop and surgery as DemP, all taking a target density (--density) or, to compare them with
// DemP at equal size, a size target (--target-params/--target-flops/--target-units).
#include <memory>

#include "demp/methods/method.h"

namespace demp::methods {

/// Network Slimming: constant-λ L1 on BN γ, one global |γ| cut at --prune-at, then fine-tuning.
std::unique_ptr<Method> make_slimming(const train::TrainConfig& cfg);
/// SNAP (structured SNIP): |Σ ∂L/∂c| at --prune-at (default: initialisation), one shot.
std::unique_ptr<Method> make_snap(const train::TrainConfig& cfg);
/// CroP-it: |H_c g_c| at initialisation, iteratively over --crop-steps sub-steps.
std::unique_ptr<Method> make_crop(const train::TrainConfig& cfg);
/// EarlyCroP: the CroP-it pruning at the first epoch end where the weights' relative distance
/// from initialisation has settled (DEMP.md's trigger).
std::unique_ptr<Method> make_earlycrop(const train::TrainConfig& cfg);
/// L1-norm filter pruning (Li et al. 2017): gradual, per-layer ratio, smallest-L1 filters first.
std::unique_ptr<Method> make_l1norm(const train::TrainConfig& cfg);
/// Random structured pruning at --prune-at, per-layer ratio: the floor every method must beat.
std::unique_ptr<Method> make_random(const train::TrainConfig& cfg);
/// Gradual pruning during training (ours as a baseline; Zhu & Gupta's cubic schedule with a
/// global BN-scale or normalised-magnitude ranking, as the popular Python pruning libraries run).
std::unique_ptr<Method> make_gradual(const train::TrainConfig& cfg);

}  // namespace demp::methods
