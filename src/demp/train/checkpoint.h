#pragma once
// Checkpoints: the architecture, the layers' tensors, the optimizer's state and the run's
// metadata in one file (LibTorch's archive format), written atomically.
#include <torch/types.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "demp/nn/model.h"
#include "demp/train/optim.h"

namespace demp::train {

struct Checkpoint {
  nn::Arch arch;
  std::vector<nn::LayerTensors> layers;
  std::string optimizer;  ///< optimizer name
  int64_t optimizer_steps = 0;
  std::vector<std::vector<torch::Tensor>> optimizer_state;
  nlohmann::json meta;  ///< step, config, method state, bests...
};

/// Writes a checkpoint atomically (temp file + rename).
void save_checkpoint(const std::string& path, const nn::Model& model, const Optimizer* opt,
                     const nlohmann::json& meta);
/// Reads a checkpoint; throws demp::Error naming the file if it is missing or corrupt.
Checkpoint load_checkpoint(const std::string& path);

}  // namespace demp::train
