#pragma once
// `demp frontier`: the comparison the paper's claim rests on, as one resumable command. On one
// network (the train options after "--", typically a recipe), it trains dense and every method
// of a catalogue (DemP in our form and in the paper's, the structured baselines, gradual pruning)
// driven to the same sizes (default 25%, 10%, 5% of the parameters), over several seeds, with the
// same steps, data and optimizer for every run; then one table: mean ± std test accuracy, what
// is left, training time and speed-up against dense, the best method at each level.
// LibTorch-free.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace demp::report {

/// One row family of the frontier: a method with its fixed options.
struct FrontierSeries {
  std::string key;                ///< --methods name and run-name prefix: "demp", "demp-paper", "snap"...
  std::string label;              ///< in tables and plots: "DemP (ours)", "DemP (paper form)", ...
  std::vector<std::string> args;  ///< train options that make this series
  bool sized = true;              ///< driven to each level (false: dense, one run per seed)
  std::string note;               ///< one line on what it is, for --help and the README
};

/// Every series the frontier knows, in table order (dense first).
const std::vector<FrontierSeries>& frontier_catalogue();

struct FrontierOptions {
  std::string out;             ///< the frontier directory
  std::vector<double> levels;  ///< fractions kept; empty: 0.25, 0.1, 0.05 (--quick: 0.25)
  int seeds = 0;               ///< 0: 3 (--quick: 1)
  int first_seed = 0;
  std::vector<std::string> methods;    ///< series keys; empty: all
  std::string measure = "params";      ///< params, flops or units: what --levels are fractions of
  std::vector<std::string> base_args;  ///< train options after "--" (a --config recipe...)
  int jobs = 1;                        ///< runs side by side
  bool quick = false;                  ///< a CI-sized smoke: short runs on a data slice
  bool dry_run = false;
  bool verbose = false;
  std::string exe = "/proc/self/exe";  ///< the demp binary (tests put a stand-in here)
};

/// One run of the frontier.
struct FrontierRun {
  std::string name, dir, series, label, method;
  double level = 0;  ///< 0 for an unsized series (dense)
  int seed = 0;
  std::vector<std::string> argv;   ///< the whole `demp train` command (argv[0] is the binary)
  std::string status = "pending";  ///< finished, diverged, failed, pending
  bool skipped = false;
};

/// The runs of `o` in the order they are run (seed by seed, so that a partial frontier already
/// holds whole seeds). Throws demp::Error for an unknown method, a bad level or a bad option.
std::vector<FrontierRun> plan_frontier(const FrontierOptions& o);

/// One aggregated row per (series, level): seeds finished, mean and sample std of test accuracy,
/// means of params/FLOPs/units kept (fractions), train seconds and speed-up against dense's
/// mean; "at_level" when the mean size in `measure` is at most 2 points above the level (a row
/// that missed its size cannot be compared there); "best" marks, among the rows at their level,
/// the one with the highest mean accuracy at each level.
std::vector<nlohmann::ordered_json> frontier_rows(const std::vector<FrontierRun>& runs,
                                                  const std::string& measure = "params");

/// The rows as an aligned text table (also written as table.md in Markdown); the last column
/// says "best", or "missed" for a row that did not reach its level.
std::string frontier_text(const std::vector<nlohmann::ordered_json>& rows, bool markdown);

/// Plans, writes frontier.json, runs (or skips, or resumes) every run, `jobs` at a time, and
/// keeps table.csv/table.json/table.md and runs.csv up to date. Returns the number of runs that
/// did not finish.
int run_frontier(const FrontierOptions& o);

}  // namespace demp::report
