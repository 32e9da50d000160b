#pragma once
// A sweep: the Cartesian grid over `demp train` options, one run directory per point, run one at
// a time by spawning the demp binary itself, resumable, and one table of every run's summary
// (table.csv, table.json) kept up to date after each run. LibTorch-free.
#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

#include "demp/report/grid.h"
#include "demp/report/tables.h"

namespace demp::report {

// ---- running it -----------------------------------------------------------------------------

struct SweepOptions {
  std::string out;                     ///< the sweep directory
  std::vector<std::string> grid;       ///< --grid specs
  std::string name_format;             ///< empty: KEY=VALUE joined by '_'
  std::vector<std::string> base_args;  ///< train options given after "--"
  bool verbose = false;                ///< echo each run's output
  bool dry_run = false;                ///< print the runs and their commands, run nothing
  /// The demp binary that runs `train`. /proc/self/exe is this very binary, so a sweep never
  /// mixes versions; tests put a stand-in here.
  std::string exe = "/proc/self/exe";
  std::string kind = "sweep";  ///< "sweep" or "study": the name in sweep.json and messages
};

struct SweepRun {
  std::string name, dir;
  std::vector<std::string> point;  ///< one value per grid axis
  std::string status;              ///< finished, diverged, failed, pending
  bool skipped = false;            ///< already finished (or diverged) before this sweep started it
  int exit_code = 0;
  std::string last_line;
};

struct SweepResult {
  std::vector<GridAxis> axes;
  std::vector<SweepRun> runs;
  int failed = 0;  ///< runs that did not finish (failed or diverged)
  /// The signal (SIGINT, SIGTERM) that stopped the sweep, or 0. It was passed on to the running
  /// run, which wrote its checkpoint; the same command resumes it and runs the rest.
  int interrupted = 0;
};

/// Runs (or skips, or resumes) every point of the grid; writes sweep.json first and the tables
/// after every run; prints one line per run start and end on stderr. Throws demp::Error for a
/// bad grid or option, or when DIR holds a sweep started with other train options.
SweepResult run_sweep(const SweepOptions& o);

/// The end-of-sweep text: a compact table of every run and the failures with their last line.
std::string sweep_summary(const SweepResult& r, const std::string& dir);

// ---- small helpers shared by the report modules ---------------------------------------------

/// A demp command line as a user would retype it: "demp" in place of argv[0] (/proc/self/exe).
std::string display_command(std::vector<std::string> argv);

/// How a driver (sweep, study, frontier) continues the run in `dir` that did not finish: "resume"
/// from its checkpoint (`flag` = "--resume"), "restart" a run that never reached one
/// ("--overwrite"), or "start" a new one (no flag).
std::string continuation(const std::string& dir, std::string* flag);

}  // namespace demp::report
