#pragma once
// The run directory (one layout for every method): config.json, metrics.jsonl (and the same
// rows as metrics.csv, and optionally as TensorBoard events), log.txt, summary.json, model.ckpt.
// Written by training (here, beside the loop); report/ and export/ read run directories through
// it (read_run, read_summary, read_metrics). Plus the terminal progress display. LibTorch-free.
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "demp/train/summary.h"

namespace demp::train {

class EventWriter;

/// The names of a run directory's files: the one place that spells them.
struct RunFiles {
  static constexpr const char* config = "config.json";       ///< the settings (TrainConfig's JSON)
  static constexpr const char* summary = "summary.json";     ///< Summary, written when the run ends
  static constexpr const char* metrics = "metrics.jsonl";    ///< one JSON row per logging point
  static constexpr const char* metrics_csv = "metrics.csv";  ///< the same rows, fixed columns
  static constexpr const char* log = "log.txt";
  static constexpr const char* checkpoint = "model.ckpt";
  static constexpr const char* checkpoint_tmp = "model.ckpt.tmp";  ///< a checkpoint being written
  static constexpr const char* arch = "arch.json";  ///< --arch / --init runs: the architecture file
  static constexpr const char* lock = ".lock";      ///< held by the run writing the directory
  /// A sweep's or frontier's run: the output of `demp train` as the sweep ran it.
  static constexpr const char* output_log = "output.log";
  /// Every file a run writes (--overwrite removes them), the lock aside.
  static constexpr const char* written[] = {config,  metrics,    metrics_csv,    log,
                                            summary, checkpoint, checkpoint_tmp, arch};
  /// DIR/name.
  static std::string in(const std::string& dir, const char* name) { return dir + "/" + name; }
};

class RunDir {
 public:
  /// Opens (creating if needed) the directory. Throws demp::Error if it cannot be created.
  /// writer=false (the ranks other than 0 of a data-parallel run): nothing is created or written,
  /// and log() echoes nothing; reading (file, has) still works.
  explicit RunDir(std::string path, bool writer = true);
  bool writer() const { return writer_; }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

  /// One greppable line in log.txt: "<utc time> | <text>"; also echoed to stderr when `echo`.
  void log(const std::string& text, bool echo = false) const;
  /// One JSON object per line in metrics.jsonl, the same row in metrics.csv, and its scalars in
  /// the TensorBoard events file when one is open.
  void metrics(const nlohmann::json& row) const;
  /// Drops metrics rows whose "step" is greater than `step` (resume after an interruption), and
  /// rewrites metrics.csv from the rows kept.
  void truncate_metrics_after(int64_t step) const;
  /// Also writes every metrics row to a new TensorBoard events file in `dir` (--tensorboard).
  /// `resume_step` >= 0: a resumed run (TensorBoard drops older events past it); `replace`:
  /// remove the events files already in `dir` first (--overwrite).
  void open_tensorboard(const std::string& dir, int64_t resume_step, bool replace);
  void write_json(const std::string& name, const nlohmann::json& j) const;
  bool has(const std::string& name) const;

 private:
  /// Seconds per training step since the previous row (elapsed_seconds over steps); -1 if unknown.
  double step_seconds(const nlohmann::json& row) const;
  std::string path_;
  bool writer_ = true;
  std::shared_ptr<EventWriter> tb_;
  mutable int64_t prev_step_ = 0;  // the previous row's step and training time (a run starts at 0)
  mutable double prev_elapsed_ = 0;
};

// ---- reading a run directory (report/, export/) --------------------------------------------

/// A run directory as read back: what `demp report`, sweeps, studies, frontiers and compare need.
struct RunRecord {
  std::string dir;
  std::optional<Summary> summary;  ///< empty without a readable summary.json (the run never ended)
  nlohmann::json config;           ///< config.json; null without a readable one
};

/// Whether DIR holds a run: a summary.json, config.json or metrics.jsonl.
bool is_run_dir(const std::string& dir);
/// Whether DIR holds a checkpoint (model.ckpt).
bool has_checkpoint(const std::string& dir);
/// Whether DIR holds a config.json (the run started).
bool has_config(const std::string& dir);
/// Whether DIR holds a summary.json (the run ended: finished, diverged or interrupted).
bool has_summary(const std::string& dir);

/// DIR's summary.json; empty when there is none or it cannot be read (a damaged file reads as
/// none, as for a run still going). See load_summary() for the strict reading.
std::optional<Summary> read_summary(const std::string& dir);
/// DIR's summary.json; throws demp::Error (with a hint) when it is missing or damaged.
Summary load_summary(const std::string& dir);
/// DIR's config.json as JSON; null when there is none or it is not valid JSON.
nlohmann::json read_config(const std::string& dir);
/// read_summary() and read_config() together.
RunRecord read_run(const std::string& dir);
/// The rows of DIR/metrics.jsonl (a line torn by a crash is skipped; no file gives none).
std::vector<nlohmann::json> read_metrics(const std::string& dir);

/// metrics.csv: its fixed columns (README, "The run directory"), and one row of them from a
/// metrics.jsonl row (an empty field where the row lacks the value).
const std::vector<std::string>& metrics_csv_columns();
std::string metrics_csv_row(const nlohmann::json& row, double step_seconds);

/// Progress on a long loop: a redrawn bar with rate and ETA on a terminal, plain periodic lines
/// otherwise, nothing with mode "none".
class Progress {
 public:
  Progress(std::string mode, int64_t total, int64_t start, int64_t batch);
  /// Called every step; `status` is the tail of the line (loss, accuracy...).
  void update(int64_t done, const std::string& status, bool force_line = false);
  void finish();

 private:
  bool bar_ = false, plain_ = false;
  int64_t total_, start_, batch_;
  std::chrono::steady_clock::time_point t0_, last_;
};

std::string utc_now();

/// True while a progress bar's line is on the terminal without its newline; an event line or an
/// error printed then must first end it (else the two collide on one line).
bool progress_line_open();
/// Ends an open progress-bar line (clears it), so that the next output starts on a fresh line.
void end_progress_line();

}  // namespace demp::train
