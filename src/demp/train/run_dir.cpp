#include "demp/train/run_dir.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <sstream>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/train/tensorboard.h"

namespace demp::train {

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

namespace {
bool g_bar_open = false;  // a bar line is on stderr without its newline
}  // namespace

bool progress_line_open() { return g_bar_open; }

void end_progress_line() {
  if (!g_bar_open) return;
  std::fprintf(stderr, "\r\x1b[K");
  std::fflush(stderr);
  g_bar_open = false;
}

// ---- reading ---------------------------------------------------------------------------------

namespace {

// Null for a missing or unreadable file: a run directory is read while its run may still write it.
nlohmann::json json_file_or_null(const std::string& path) {
  if (!is_regular_file(path)) return nullptr;
  try {
    auto j = nlohmann::json::parse(read_file(path), nullptr, /*allow_exceptions=*/false);
    return j.is_discarded() ? nlohmann::json(nullptr) : j;
  } catch (const Error&) {
    return nullptr;
  }
}

}  // namespace

bool has_checkpoint(const std::string& dir) {
  return is_regular_file(RunFiles::in(dir, RunFiles::checkpoint));
}
bool has_config(const std::string& dir) { return is_regular_file(RunFiles::in(dir, RunFiles::config)); }
bool has_summary(const std::string& dir) { return is_regular_file(RunFiles::in(dir, RunFiles::summary)); }

bool is_run_dir(const std::string& dir) {
  return has_summary(dir) || has_config(dir) || is_regular_file(RunFiles::in(dir, RunFiles::metrics));
}

std::optional<Summary> read_summary(const std::string& dir) {
  const nlohmann::json j = json_file_or_null(RunFiles::in(dir, RunFiles::summary));
  if (!j.is_object()) return std::nullopt;
  try {
    return Summary::from_json(j);
  } catch (const Error&) {
    return std::nullopt;
  }
}

Summary load_summary(const std::string& dir) {
  const std::string path = RunFiles::in(dir, RunFiles::summary);
  if (!file_exists(path)) {
    throw Error(std::string("no ") + RunFiles::summary + " in " + dir,
                "give the directories of finished runs");
  }
  nlohmann::json j = nlohmann::json::parse(read_file(path), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    throw Error(path + " is not valid JSON", "the file is damaged; the run writes it when it ends");
  }
  try {
    return Summary::from_json(j);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what(), e.hint());
  }
}

nlohmann::json read_config(const std::string& dir) {
  return json_file_or_null(RunFiles::in(dir, RunFiles::config));
}

RunRecord read_run(const std::string& dir) { return {dir, read_summary(dir), read_config(dir)}; }

std::vector<nlohmann::json> read_metrics(const std::string& dir) {
  std::vector<nlohmann::json> rows;
  const std::string path = RunFiles::in(dir, RunFiles::metrics);
  if (!is_regular_file(path)) return rows;
  std::istringstream in(read_file(path));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_discarded() && j.is_object()) rows.push_back(std::move(j));
  }
  return rows;
}

// ---- writing ---------------------------------------------------------------------------------

RunDir::RunDir(std::string path, bool writer) : path_(std::move(path)), writer_(writer) {
  if (writer_) make_directories(path_);
}

void RunDir::log(const std::string& text, bool echo) const {
  if (!writer_) return;
  append_line(file(RunFiles::log), utc_now() + " | " + text);
  if (echo) {
    end_progress_line();  // the bar is redrawn below the event at its next update
    std::fprintf(stderr, "%s\n", text.c_str());
  }
}

// ---- metrics: metrics.jsonl, metrics.csv, TensorBoard -------------------------------------------

const std::vector<std::string>& metrics_csv_columns() {
  static const std::vector<std::string> cols = {"step",
                                                "epoch",
                                                "lr",
                                                "train_loss",
                                                "train_accuracy",
                                                "test_loss",
                                                "test_accuracy",
                                                "val_loss",
                                                "val_accuracy",
                                                "live_units",
                                                "params",
                                                "flops",
                                                "elapsed_seconds",
                                                "step_seconds",
                                                "reg_lambda",
                                                "noise_std",
                                                "dead_units",
                                                "target",
                                                "target_planned",
                                                "target_projected",
                                                "live_units_per_group"};
  return cols;
}

namespace {

std::string csv_number(const nlohmann::json& v) {
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number()) return fmt::format("{}", v.get<double>());
  if (v.is_boolean()) return v.get<bool>() ? "1" : "0";
  return "";
}

// RFC 4180: a field with a comma, quote or line break is quoted, its quotes doubled.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string q = "\"";
  for (const char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

}  // namespace

std::string metrics_csv_row(const nlohmann::json& row, double step_seconds) {
  std::string line;
  bool first = true;
  for (const auto& c : metrics_csv_columns()) {
    std::string v;
    if (c == "step_seconds") {
      if (step_seconds >= 0) v = fmt::format("{}", step_seconds);
    } else if (c == "dead_units") {
      if (row.contains("last_scan")) v = csv_number(row["last_scan"].value("dead_units", nlohmann::json()));
    } else if (c == "target") {
      for (const char* k : {"target_params", "target_flops", "target_units"}) {
        if (row.contains(k)) v = csv_number(row[k]);
      }
    } else if (c == "live_units_per_group") {
      if (row.contains(c) && row[c].is_object()) {
        for (auto it = row[c].begin(); it != row[c].end(); ++it) {
          v += (v.empty() ? "" : ";") + it.key() + "=" + csv_number(it.value());
        }
      }
    } else if (row.contains(c)) {
      v = csv_number(row[c]);
    }
    line += (first ? "" : ",") + csv_field(v);
    first = false;
  }
  return line;
}

double RunDir::step_seconds(const nlohmann::json& row) const {
  if (!row.contains("step") || !row.contains("elapsed_seconds")) return -1;
  const int64_t step = row["step"].get<int64_t>();
  const double el = row["elapsed_seconds"].get<double>();
  const double s = step > prev_step_ ? (el - prev_elapsed_) / static_cast<double>(step - prev_step_) : -1;
  prev_step_ = step;
  prev_elapsed_ = el;
  return s;
}

void RunDir::metrics(const nlohmann::json& row) const {
  if (!writer_) return;
  append_line(file(RunFiles::metrics), row.dump());
  const double ss = step_seconds(row);
  if (!has(RunFiles::metrics_csv)) {
    std::string header;
    for (const auto& c : metrics_csv_columns()) header += (header.empty() ? "" : ",") + c;
    append_line(file(RunFiles::metrics_csv), header);
  }
  append_line(file(RunFiles::metrics_csv), metrics_csv_row(row, ss));
  if (tb_ && row.contains("step")) tb_->scalars(row["step"].get<int64_t>(), tensorboard_scalars(row, ss));
}

void RunDir::truncate_metrics_after(int64_t step) const {
  if (!writer_ || !has(RunFiles::metrics)) return;
  std::istringstream in(read_file(file(RunFiles::metrics)));
  std::string line, kept, csv;
  for (const auto& c : metrics_csv_columns()) csv += (csv.empty() ? "" : ",") + c;
  csv += "\n";
  prev_step_ = 0;
  prev_elapsed_ = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) continue;  // a line torn by a crash
    if (j.contains("step") && j["step"].get<int64_t>() > step) continue;
    kept += line + "\n";
    csv += metrics_csv_row(j, step_seconds(j)) + "\n";
  }
  write_file_atomic(file(RunFiles::metrics), kept);
  // metrics.csv is a view of metrics.jsonl: rebuilt from the rows kept, so that it holds each of
  // them once whatever a crash left in it (or if the run started before it existed).
  write_file_atomic(file(RunFiles::metrics_csv), csv);
}

void RunDir::open_tensorboard(const std::string& dir, int64_t resume_step, bool replace) {
  if (!writer_) return;
  if (replace) remove_event_files(dir);
  // A run resumed with --tensorboard into a directory without events (it ran without it, or the
  // events went elsewhere): its rows so far (already cut back to the resume step) come first.
  const bool backfill = resume_step >= 0 && !has_event_files(dir) && has(RunFiles::metrics);
  tb_ = std::make_shared<EventWriter>(dir, resume_step);
  if (!backfill) return;
  std::istringstream in(read_file(file(RunFiles::metrics)));
  std::string line;
  const int64_t step0 = prev_step_;
  const double elapsed0 = prev_elapsed_;
  prev_step_ = 0;
  prev_elapsed_ = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("step")) continue;
    tb_->scalars(j["step"].get<int64_t>(), tensorboard_scalars(j, step_seconds(j)));
  }
  prev_step_ = step0;
  prev_elapsed_ = elapsed0;
}

void RunDir::write_json(const std::string& name, const nlohmann::json& j) const {
  if (writer_) write_file_atomic(file(name), j.dump(2) + "\n");
}

bool RunDir::has(const std::string& name) const { return file_exists(file(name)); }

// ---- progress -------------------------------------------------------------------------------

Progress::Progress(std::string mode, int64_t total, int64_t start, int64_t batch)
    : total_(total), start_(start), batch_(batch) {
  const bool tty = ::isatty(fileno(stderr)) != 0;
  bar_ = mode == "bar" || (mode == "auto" && tty);
  plain_ = mode == "plain" || (mode == "auto" && !tty);
  t0_ = last_ = std::chrono::steady_clock::now();
}

namespace {
std::string hms(double s) {
  if (!(s >= 0) || s > 1e7) return "--:--";
  const int64_t x = static_cast<int64_t>(s);
  return x >= 3600 ? fmt::format("{}:{:02}:{:02}", x / 3600, x / 60 % 60, x % 60)
                   : fmt::format("{:02}:{:02}", x / 60, x % 60);
}
}  // namespace

void Progress::update(int64_t done, const std::string& status, bool force_line) {
  if (!bar_ && !plain_) return;
  const auto now = std::chrono::steady_clock::now();
  const double since_last = std::chrono::duration<double>(now - last_).count();
  if (!force_line && since_last < (bar_ ? 0.2 : 10.0) && done < total_) return;
  last_ = now;
  const double el = std::chrono::duration<double>(now - t0_).count();
  const double rate = el > 0 ? static_cast<double>(done - start_) / el : 0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : -1;
  const double pct = total_ > 0 ? 100.0 * static_cast<double>(done) / static_cast<double>(total_) : 100;
  if (bar_) {
    const int width = 24, fill = static_cast<int>(pct / 100 * width);
    std::fprintf(stderr, "\r[%s%s] %5.1f%% %lld/%lld | %.0f img/s | ETA %s | %s\x1b[K",
                 std::string(fill, '#').c_str(), std::string(width - fill, ' ').c_str(), pct,
                 static_cast<long long>(done), static_cast<long long>(total_), rate * batch_,
                 hms(eta).c_str(), status.c_str());
    g_bar_open = true;
  } else {
    std::fprintf(stderr, "step %lld/%lld (%.1f%%) | %.0f img/s | ETA %s | %s\n", static_cast<long long>(done),
                 static_cast<long long>(total_), pct, rate * batch_, hms(eta).c_str(), status.c_str());
  }
  std::fflush(stderr);
}

void Progress::finish() {
  if (bar_ && g_bar_open) std::fprintf(stderr, "\n");
  g_bar_open = false;
}

}  // namespace demp::train
