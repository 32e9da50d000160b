#pragma once
// The one training loop. It knows nothing of any particular pruning method: methods plug in at
// the hook points of train::Method (hooks.h), and run_training receives the factory that builds
// the method a run asks for.
#include <torch/types.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "demp/data/dataset.h"
#include "demp/nn/model.h"
#include "demp/train/checkpoint.h"
#include "demp/train/config.h"
#include "demp/train/context.h"
#include "demp/train/evaluate.h"
#include "demp/train/hooks.h"

namespace demp::train {

/// Resolves "cpu", "cuda", "cuda:N", "auto"; throws demp::Error if CUDA is asked for but absent.
torch::Device resolve_device(const std::string& spec);

/// What a program that runs training (the library API, demp/demp.h) hears from the loop, in the
/// process that calls run_training (each rank of a data-parallel run calls its own).
struct TrainHooks {
  struct Step {
    int64_t step = 0;  ///< optimizer steps completed
    int64_t total_steps = 0;
    double lr = 0;
    double loss = 0;  ///< this step's training loss (this rank's batch)
  };
  /// After every optimizer step. Reading the loss waits for the device: on a GPU this costs the
  /// step's asynchrony; leave it empty there for speed.
  std::function<void(const Step&)> on_step;
  /// Every metrics.jsonl row, as written.
  std::function<void(const nlohmann::json& row)> on_metrics;
  /// Every prune event, as recorded in summary.json's prune_events (step, reason, units_before,
  /// units_after, params_after, flops_after, groups {name: [before, after]}).
  std::function<void(const nlohmann::json& event)> on_prune;
};

/// Runs a whole training run as configured (run directory, resume, checkpoints, summary) and
/// returns summary.json's content. `make_method` builds the run's method from the configuration
/// (the CLI passes methods::make_method). Throws demp::Error on bad input or a NaN loss.
nlohmann::json run_training(TrainConfig cfg, const MethodFactory& make_method, const TrainHooks& hooks = {});

}  // namespace demp::train
