#pragma once
// `demp train`: every TrainConfig field as a flag (config.cpp's Field table), --config FILE for
// their defaults, the --nproc launcher, and the run's closing lines.
#include <string>
#include <vector>

#include "demp/train/config.h"

namespace CLI {
class App;
}

namespace demp::cli {

/// What `train` parses into; it must outlive the parse (CLI11 binds to it).
struct TrainCommand {
  CLI::App* cmd = nullptr;
  train::TrainConfig cfg;
  std::vector<std::string> config_keys;  ///< the keys the --config file gives
  std::string config_unused;             ///< --config itself (read before parsing)
};

/// Reads --config (found in argv before CLI11 runs: the file gives the defaults, flags override
/// them) and adds `train` to `app`.
void add_train_command(CLI::App& app, TrainCommand& t, int argc, char** argv);

/// Runs training when `train` was selected and returns its exit code (0 ok, 130 interrupted,
/// 4 replicas differ); -1 when it was not selected. `argv` is relaunched once per rank by --nproc.
int run_train_command(TrainCommand& t, int argc, char** argv);

}  // namespace demp::cli
