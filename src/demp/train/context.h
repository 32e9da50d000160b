#pragma once
// What a method sees of the run while it trains (the hook contract's argument): the
// configuration, data, model, optimizer, step counters, the process group, and surgery with
// bookkeeping.
#include <torch/types.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "demp/data/dataset.h"
#include "demp/nn/model.h"
#include "demp/prune/surgery.h"
#include "demp/train/config.h"
#include "demp/train/optim.h"

namespace demp::dist {
class Comm;
}

namespace demp::train {

class RunDir;

/// What a method can see and do during training.
struct TrainContext {
  const TrainConfig& cfg;
  data::DataBundle& data;
  nn::Model& model;
  Optimizer& optimizer;
  const RunDir* run = nullptr;
  torch::Device device{torch::kCPU};
  int64_t step = 0;  ///< optimizer steps completed
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

}  // namespace demp::train
