#pragma once
// The one training loop. It knows nothing of any particular pruning method: methods plug in at
// the hook points of train::Method (hooks.h), and run_training receives the factory that builds
// the method a run asks for.
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <cstdint>
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

nn::ModelOptions model_options(const TrainConfig& cfg, const data::DataBundle& data);

/// Runs a whole training run as configured (run directory, resume, checkpoints, summary) and
/// returns summary.json's content. `make_method` builds the run's method from the configuration
/// (the CLI passes methods::make_method). Throws demp::Error on bad input or a NaN loss.
nlohmann::json run_training(TrainConfig cfg, const MethodFactory& make_method);

}  // namespace demp::train
