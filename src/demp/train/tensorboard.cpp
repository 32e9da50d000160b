#include "demp/train/tensorboard.h"

#include <dirent.h>
#include <fmt/format.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>

#include "demp/common/error.h"
#include "demp/common/files.h"

namespace demp::train {

namespace {

const std::array<uint32_t, 256>& crc_table() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}

// ---- protobuf wire format (only what Event needs) ----

void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void key(std::string& out, uint32_t field, uint32_t wire) { varint(out, (field << 3) | wire); }

template <typename T>
void fixed(std::string& out, T v) {  // little-endian, as the x86/ARM hosts we build for
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

void bytes_field(std::string& out, uint32_t field, const std::string& s) {
  key(out, field, 2);
  varint(out, s.size());
  out += s;
}

std::string event_head(double wall_time, int64_t step) {
  std::string e;
  key(e, 1, 1);  // wall_time: double
  fixed(e, wall_time);
  if (step != 0) {  // proto3: a zero is left out
    key(e, 2, 0);
    varint(e, static_cast<uint64_t>(step));
  }
  return e;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

uint32_t crc32c(const void* data, size_t n, uint32_t crc) {
  const auto& t = crc_table();
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = t[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

uint32_t masked_crc32c(const void* data, size_t n) {
  const uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string tfrecord(const std::string& data) {
  std::string r;
  const uint64_t len = data.size();
  fixed(r, len);
  fixed(r, masked_crc32c(r.data(), 8));
  r += data;
  fixed(r, masked_crc32c(data.data(), data.size()));
  return r;
}

std::string event_file_version(double wall_time) {
  std::string e = event_head(wall_time, 0);
  bytes_field(e, 3, "brain.Event:2");
  return e;
}

std::string event_scalars(double wall_time, int64_t step, const Scalars& values) {
  std::string summary;
  for (const auto& [tag, v] : values) {
    std::string value;
    bytes_field(value, 1, tag);
    key(value, 2, 5);  // simple_value: float
    fixed(value, static_cast<float>(v));
    bytes_field(summary, 1, value);
  }
  std::string e = event_head(wall_time, step);
  bytes_field(e, 5, summary);
  return e;
}

std::string event_session_start(double wall_time, int64_t step) {
  std::string log;
  key(log, 1, 0);  // status = START
  varint(log, 1);
  std::string e = event_head(wall_time, step);
  bytes_field(e, 7, log);
  return e;
}

// ---- the row -> tags mapping ----

namespace {

void flatten(const nlohmann::json& j, const std::string& path, Scalars& out) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      flatten(it.value(), path.empty() ? it.key() : path + "/" + it.key(), out);
    }
  } else if (j.is_number()) {
    out.emplace_back(path, j.get<double>());
  }
}

std::string tag_of(const std::string& key) {
  static const std::vector<std::pair<std::string, std::string>> exact = {
      {"epoch", "train/epoch"},
      {"lr", "train/lr"},
      {"train_loss", "train/loss"},
      {"train_accuracy", "train/accuracy"},
      {"test_accuracy", "eval/test_acc"},
      {"test_loss", "eval/test_loss"},
      {"val_accuracy", "eval/val_acc"},
      {"val_loss", "eval/val_loss"},
      {"live_units", "units/total"},
      {"params", "size/params"},
      {"flops", "size/flops"},
      {"elapsed_seconds", "time/elapsed_seconds"},
      {"reg_lambda", "prune/lambda"},
      {"noise_std", "prune/sigma"},
      {"target_params", "prune/target"},
      {"target_flops", "prune/target"},
      {"target_units", "prune/target"},
      {"target_planned", "prune/target_planned"},
      {"target_projected", "prune/target_projected"},
      {"last_scan/dead_units", "prune/dead_units"},
      {"last_scan/step", ""},  // the step of the scan: not a curve
  };
  for (const auto& [k, t] : exact) {
    if (k == key) return t;
  }
  static const std::vector<std::pair<std::string, std::string>> prefix = {
      {"live_units_per_group/", "units/"},
      {"last_scan/dead_units_per_group/", "prune/dead/"},
      {"last_scan/quasi_dead/", "prune/quasi_dead/"},
  };
  for (const auto& [p, t] : prefix) {
    if (key.compare(0, p.size(), p) == 0) return t + key.substr(p.size());
  }
  return "other/" + key;
}

}  // namespace

Scalars tensorboard_scalars(const nlohmann::json& row, double step_seconds) {
  Scalars flat, out;
  flatten(row, "", flat);
  for (const auto& [k, v] : flat) {
    if (k == "step") continue;
    const std::string t = tag_of(k);
    if (!t.empty()) out.emplace_back(t, v);
  }
  if (step_seconds >= 0) out.emplace_back("time/step_seconds", step_seconds);
  return out;
}

// ---- the file ----

EventWriter::EventWriter(const std::string& dir, int64_t resume_step) {
  make_directories(dir);
  char host[256] = "localhost";
  if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "localhost");
  host[sizeof host - 1] = 0;
  const std::string base =
      fmt::format("{}/events.out.tfevents.{}.{}", dir, static_cast<int64_t>(now_seconds()), host);
  // A second writer within the same second (a quick resume) gets its own file, after the first
  // one in name order.
  path_ = base;
  for (int i = 1; file_exists(path_); ++i) path_ = base + "." + std::to_string(i);
  f_ = std::fopen(path_.c_str(), "wbx");
  if (!f_) {
    throw Error("cannot create the TensorBoard events file " + path_ + ": " + std::strerror(errno),
                "check that --tensorboard names a writable directory");
  }
  write(event_file_version(now_seconds()));
  // TensorBoard's reader drops the events it has seen at steps >= a START's step: at
  // resume_step + 1, what the checkpoint's own step logged stays and what came after it goes.
  if (resume_step >= 0) write(event_session_start(now_seconds(), resume_step + 1));
}

EventWriter::~EventWriter() {
  if (f_) std::fclose(f_);
}

void EventWriter::scalars(int64_t step, const Scalars& values) {
  write(event_scalars(now_seconds(), step, values));
}

void EventWriter::write(const std::string& event) {
  const std::string r = tfrecord(event);
  if (std::fwrite(r.data(), 1, r.size(), f_) != r.size() || std::fflush(f_) != 0) {
    // A full disk: TensorBoard logs are a view of metrics.jsonl; losing them must not end a run.
    std::clearerr(f_);
  }
}

namespace {
std::vector<std::string> event_file_names(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return names;
  while (const dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n.rfind("events.out.tfevents.", 0) == 0) names.push_back(n);
  }
  ::closedir(d);
  return names;
}
}  // namespace

void remove_event_files(const std::string& dir) {
  for (const auto& n : event_file_names(dir)) remove_file(dir + "/" + n);
}

bool has_event_files(const std::string& dir) { return !event_file_names(dir).empty(); }

}  // namespace demp::train
