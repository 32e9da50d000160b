#pragma once
// demp as a library: the public API, installed as <demp/demp.h> (README, "demp as a C++ library").
//
//   find_package(demp REQUIRED)            # with CMAKE_PREFIX_PATH naming demp's and LibTorch's prefixes
//   target_link_libraries(app PRIVATE demp::demp)
//
// These few functions cover the whole life of a network: build it from an architecture, train it
// with a method (and callbacks at each step, metrics row and prune event), prune it by keep sets,
// save and load it, export it. They are thin: the types they hand out (nn::Arch, nn::Model,
// prune::KeepSets, train::TrainConfig, train::TrainHooks) are demp's own, and every header below
// is installed with this one, for programs that need more (methods, schedules, the scan...).
// Errors are demp::Error (a message and a hint).
#include <torch/types.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "demp/common/error.h"
#include "demp/nn/arch.h"
#include "demp/nn/model.h"
#include "demp/prune/surgery.h"
#include "demp/train/config.h"
#include "demp/train/optim.h"
#include "demp/train/trainer.h"

namespace demp {

/// The library's version ("0.1.0"), as in the CMake package's version file.
std::string version();

/// A built-in architecture: o.model is "mlp", "vgg16", "resnet18" or "resnet50"; the input shape,
/// the classes, the width multiplier (and the MLP's hidden widths) come from `o`.
nn::Arch builtin_arch(const nn::ModelOptions& o);

/// A network with fresh weights for `arch` (Kaiming init, BN γ = 1, β = 0), seeded.
nn::Model build_model(const nn::Arch& arch, uint64_t seed = 0);

/// Trains as `cfg` says (the same options as `demp train`, by their field names: cfg.model,
/// cfg.method = "demp", cfg.data, cfg.steps, cfg.out...), writing the run directory cfg.out, and
/// calls `hooks` after every step, every metrics row and every prune event. Returns the summary
/// (summary.json's content); the trained network is cfg.out + "/model.ckpt" (see load()).
nlohmann::json train_network(const train::TrainConfig& cfg, const train::TrainHooks& hooks = {});

/// The keep sets of DemP's dead-unit test: the units whose post-ReLU output summed over each
/// batch of `images` (N×C×H×W, already normalised) is > eps in some batch, in eval mode.
/// multiple > 1 keeps each group's width a multiple of it (the most active dead units fill up).
prune::KeepSets live_units(const nn::Model& model, const torch::Tensor& images, double eps = 0,
                           int64_t batch = 512, int64_t multiple = 1);

/// Removes every unit outside `keep` (keep[g]: the unit indices of group g to keep; an empty
/// entry leaves the group alone) from the network, its consumers, skip maps and, when given,
/// the optimizer's state. Returns the groups that changed.
std::vector<prune::GroupChange> remove_units(nn::Model& model, const prune::KeepSets& keep,
                                             train::Optimizer* optimizer = nullptr);

/// Writes a demp checkpoint (architecture + weights + BatchNorm statistics + `meta`), atomically.
void save(const std::string& path, const nn::Model& model,
          const nlohmann::json& meta = nlohmann::json::object());
/// Reads a network back from a checkpoint, a run directory or a torch export written by demp.
nn::Model load(const std::string& path);

/// Writes the network for ONNX runtimes (BatchNorm folded; input "input", already normalised by
/// x = (pixel/255 − mean[c]) / std[c] when given, recorded in the metadata).
void export_onnx(const std::string& path, const nn::Model& model, const std::vector<double>& mean = {},
                 const std::vector<double>& std = {});
/// Writes the network as a file Python's torch.load reads (with python/demp_load.py).
void export_torch(const std::string& path, const nn::Model& model, const std::vector<double>& mean = {},
                  const std::vector<double>& std = {});

}  // namespace demp
