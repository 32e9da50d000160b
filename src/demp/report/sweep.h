#pragma once
// A sweep: the Cartesian grid over `demp train` options, one run directory per point, run one at
// a time by spawning the demp binary itself, resumable, and one table of every run's summary
// (table.csv, table.json) kept up to date after each run. LibTorch-free.
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace demp::report {

/// One --grid KEY=V1,V2,... : a train option (long flag name, no dashes) and its values.
struct GridAxis {
  std::string key;
  std::vector<std::string> values;
};

/// Parses "KEY=V1,V2,..." (values split on ';' instead when the list holds one, so that a value
/// may itself hold commas: "mlp-widths=64,32;128,64"). Leading dashes on KEY are dropped. Throws
/// demp::Error on an empty key, an empty value or a repeated value.
GridAxis parse_grid_axis(const std::string& spec);

/// Checks the keys against the train options (and that none is repeated or one the sweep sets
/// itself: out, resume, overwrite, progress); throws demp::Error with a hint.
void check_grid_keys(const std::vector<GridAxis>& axes);

/// Every point of the grid, the first axis varying slowest; each point holds one value per axis.
std::vector<std::vector<std::string>> expand_grid(const std::vector<GridAxis>& axes);

/// The directory name of a point: "KEY=VALUE" joined by '_' in axis order, or `format` with each
/// "{KEY}" replaced by that axis' value. Characters other than letters, digits and ._=+,- become
/// '_'. Throws demp::Error on an unknown "{KEY}" in the format.
std::string run_name(const std::vector<GridAxis>& axes, const std::vector<std::string>& point,
                     const std::string& format = {});

/// The names of every point; throws demp::Error when two points get the same name.
std::vector<std::string> run_names(const std::vector<GridAxis>& axes, const std::string& format);

/// Rejects train options the sweep sets itself or that a grid key also sets.
void check_base_args(const std::vector<std::string>& base_args, const std::vector<GridAxis>& axes);

// ---- the table ------------------------------------------------------------------------------

/// The columns of table.csv/table.json: run, every grid key, then the fixed summary columns.
std::vector<std::string> table_columns(const std::vector<GridAxis>& axes);

/// One row of the table for the run in `dir`: read from its summary.json (and config.json for
/// what a summary without them lacks). `status` overrides the row's status when not empty
/// ("failed", "pending"); otherwise it is the summary's status, or "pending" without one.
nlohmann::ordered_json table_row(const std::string& name, const std::string& dir,
                                 const std::vector<GridAxis>& axes, const std::vector<std::string>& point,
                                 const std::string& status = {});

/// CSV text (RFC 4180 quoting) of `rows` under `columns`; a missing or null cell is empty.
std::string table_csv(const std::vector<std::string>& columns,
                      const std::vector<nlohmann::ordered_json>& rows);

/// Writes DIR/table.csv and DIR/table.json ({"columns": [...], "rows": [{...}]}) atomically.
void write_tables(const std::string& dir, const std::vector<std::string>& columns,
                  const std::vector<nlohmann::ordered_json>& rows);

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

/// Reads a JSON file; a missing or unreadable file gives null (the callers report what lacks).
nlohmann::json read_json_or_null(const std::string& path);

/// A fraction a / b of two summary fields; null when b is missing or zero.
nlohmann::json fraction(const nlohmann::json& s, const char* a, const char* b);

}  // namespace demp::report
