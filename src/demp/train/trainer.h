#pragma once
// The one training loop. It knows nothing of any particular pruning method: methods plug in at
// the hook points of demp::methods::Method.
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "demp/data/dataset.h"
#include "demp/nn/model.h"
#include "demp/prune/surgery.h"
#include "demp/train/config.h"
#include "demp/train/optim.h"

namespace demp::report { class RunDir; }
namespace demp::dist { class Comm; }

namespace demp::train {

/// What a method can see and do during training.
struct TrainContext {
  const TrainConfig& cfg;
  data::DataBundle& data;
  nn::Model& model;
  Optimizer& optimizer;
  const report::RunDir* run = nullptr;
  torch::Device device{torch::kCPU};
  int64_t step = 0;            ///< optimizer steps completed
  int64_t total_steps = 0;
  int64_t steps_per_epoch = 0;
  nlohmann::json prune_events = nlohmann::json::array();
  /// A data-parallel run's process group (null: one process). Every rank holds the same
  /// replica; methods that decide from data combine what they saw through it.
  dist::Comm* comm = nullptr;

  int64_t rank() const;
  int64_t world_size() const;
  /// Data-parallel: every rank's BatchNorm running statistics become rank 0's (as DDP does).
  void sync_buffers();
  /// Data-parallel: `t` (any device) becomes its elementwise maximum over the ranks.
  void all_reduce_max(torch::Tensor& t);

  /// Surgery with bookkeeping: removes the units outside `keep`, logs one line and a per-group
  /// table, records the event for summary.json. Returns the groups that changed. Data-parallel:
  /// rank 0's keep sets are applied on every rank, so the replicas cannot drift apart.
  std::vector<prune::GroupChange> remove_units(const prune::KeepSets& keep, const std::string& why);
  void log(const std::string& line, bool echo = false) const;
};

struct EvalResult {
  double accuracy = 0, loss = 0;
  int64_t n = 0;
};

/// Eval-mode accuracy and mean cross-entropy of `model` on `ds`, in batches.
EvalResult evaluate(const nn::Model& model, const data::Dataset& ds, int64_t batch,
                    const torch::Device& device);

/// Resolves "cpu", "cuda", "cuda:N", "auto"; throws demp::Error if CUDA is asked for but absent.
torch::Device resolve_device(const std::string& spec);

nn::ModelOptions model_options(const TrainConfig& cfg, const data::DataBundle& data);

/// What a program that runs training (the library API, demp/demp.h) hears from the loop, in the
/// process that calls run_training (each rank of a data-parallel run calls its own).
struct TrainHooks {
  struct Step {
    int64_t step = 0;         ///< optimizer steps completed
    int64_t total_steps = 0;
    double lr = 0;
    double loss = 0;          ///< this step's training loss (this rank's batch)
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
/// returns summary.json's content. Throws demp::Error on bad input or a NaN loss.
nlohmann::json run_training(TrainConfig cfg, const TrainHooks& hooks = {});

// ---- checkpoints ----------------------------------------------------------------------------

struct Checkpoint {
  nn::Arch arch;
  std::vector<nn::LayerTensors> layers;
  std::string optimizer;                      ///< optimizer name
  int64_t optimizer_steps = 0;
  std::vector<std::vector<torch::Tensor>> optimizer_state;
  nlohmann::json meta;                        ///< step, config, method state, bests...
};

/// Writes a checkpoint atomically (temp file + rename).
void save_checkpoint(const std::string& path, const nn::Model& model, const Optimizer* opt,
                     const nlohmann::json& meta);
/// Reads a checkpoint; throws demp::Error naming the file if it is missing or corrupt.
Checkpoint load_checkpoint(const std::string& path);

}  // namespace demp::train
