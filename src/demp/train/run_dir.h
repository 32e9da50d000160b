#pragma once
// The run directory (one layout for every method): config.json, metrics.jsonl (and the same
// rows as metrics.csv, and optionally as TensorBoard events), log.txt, summary.json, model.ckpt.
// Written by training (here, beside the loop); report/ reads run directories through it. Plus the
// terminal progress display. LibTorch-free.
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace demp::train {

class EventWriter;

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
