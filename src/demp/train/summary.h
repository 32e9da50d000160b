#pragma once
// A run's summary.json as one typed value: what training writes when a run ends (finished,
// diverged, interrupted) and what the reports read back. LibTorch-free.
//
// Two shapes share the file. A finished run's summary lists its settings and what is left of the
// network; a run that stopped early (diverged, interrupted) writes its checkpoint's metadata
// (step, config, the method's state under "method") plus how it stopped. to_json() writes the
// shape of `status` with the keys and values training has always written; from_json() reads
// either shape, and files written by older versions: a missing key reads as empty (an empty
// optional, an empty string), and a null accuracy stays "not measured", never 0.0.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>

namespace demp::train {

struct Summary {
  // ---- every summary
  std::string status;   ///< "finished", "diverged", "interrupted" (training's return: "stopped")
  std::string run_dir;  ///< the run directory as given to --out
  std::optional<int64_t> seed;
  /// The last evaluation's and the best test accuracy, the best validation accuracy and the test
  /// accuracy at that point: empty when never measured (null in the file).
  std::optional<double> test_accuracy, best_test_accuracy, best_val_accuracy, test_accuracy_at_best_val;
  std::optional<double> train_seconds;  ///< seconds of training steps (no evaluation)
  /// One object per removal: step, reason, units_before/after, params_after, flops_after, groups.
  nlohmann::json prune_events = nlohmann::json::array();
  /// The method's state (DemP's controller and last scan...): "method_state" in a finished
  /// summary, "method" in an early one.
  nlohmann::json method_state = nlohmann::json::object();

  // ---- a finished run's
  std::string method;  ///< the method's name (an early summary's is config["method"])
  std::string model, dataset, optimizer, device, precision;
  std::optional<double> width, epochs;
  std::optional<int64_t> steps, batch_size;
  std::optional<int64_t> units_initial, units_final, params_initial, params_final, flops_initial, flops_final;
  std::map<std::string, int64_t> live_units_per_group;  ///< group -> live units at the end
  bool graph = false;
  int64_t graph_captures = 0, world_size = 1;
  std::optional<std::string> warning;         ///< set when some unit group died entirely
  std::optional<int64_t> bad_images_skipped;  ///< streamed image folders only
  std::optional<std::string> dist_backend;    ///< data-parallel runs only, like the three below
  std::optional<bool> replicas_identical;
  std::optional<int64_t> allreduce_bytes_per_step_initial, allreduce_bytes_per_step_final;

  // ---- an early summary's (the checkpoint's metadata, and how the run stopped)
  int64_t step = 0;
  bool finished = false;
  nlohmann::json config;  ///< the run's settings (as config.json); null when not given
  std::string data_order;
  bool evaluated = false;  ///< whether the accuracies above were measured
  std::optional<int64_t> diverged_at_step, interrupted_at_step;
  std::optional<bool> checkpoint;  ///< diverged: whether a checkpoint was kept

  bool is_finished() const { return status == "finished"; }
  /// (`q`_initial, `q`_final) for q = "units", "params" or "flops".
  std::pair<std::optional<int64_t>, std::optional<int64_t>> counts(const std::string& q) const;
  /// `q`_final over `q`_initial (q as for counts()); empty when either is missing or the initial
  /// count is 0.
  std::optional<double> fraction_left(const std::string& q) const;

  /// The JSON training writes: the finished shape when status is "finished", else the early one.
  nlohmann::json to_json() const;
  /// Reads either shape; tolerant of older files (see above). Throws demp::Error when `j` is not
  /// an object or a key holds the wrong type.
  static Summary from_json(const nlohmann::json& j);
};

}  // namespace demp::train
