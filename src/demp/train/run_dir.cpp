#include "demp/train/run_dir.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <sstream>

#include "demp/common/error.h"
#include "demp/common/files.h"

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

RunDir::RunDir(std::string path, bool writer) : path_(std::move(path)), writer_(writer) {
  if (writer_) make_directories(path_);
}

void RunDir::log(const std::string& text, bool echo) const {
  if (!writer_) return;
  append_line(file("log.txt"), utc_now() + " | " + text);
  if (echo) {
    end_progress_line();  // the bar is redrawn below the event at its next update
    std::fprintf(stderr, "%s\n", text.c_str());
  }
}

void RunDir::metrics(const nlohmann::json& row) const {
  if (writer_) append_line(file("metrics.jsonl"), row.dump());
}

void RunDir::truncate_metrics_after(int64_t step) const {
  if (!writer_ || !has("metrics.jsonl")) return;
  std::istringstream in(read_file(file("metrics.jsonl")));
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) continue;  // a line torn by a crash
    if (j.contains("step") && j["step"].get<int64_t>() > step) continue;
    kept += line + "\n";
  }
  write_file_atomic(file("metrics.jsonl"), kept);
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
    std::fprintf(stderr, "step %lld/%lld (%.1f%%) | %.0f img/s | ETA %s | %s\n",
                 static_cast<long long>(done), static_cast<long long>(total_), pct, rate * batch_,
                 hms(eta).c_str(), status.c_str());
  }
  std::fflush(stderr);
}

void Progress::finish() {
  if (bar_ && g_bar_open) std::fprintf(stderr, "\n");
  g_bar_open = false;
}

}  // namespace demp::train
