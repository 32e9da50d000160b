#pragma once
// TensorBoard event files, written without TensorFlow or protobuf: TFRecord framing around
// hand-encoded `Event` messages holding scalar summaries. LibTorch-free.
//
// A record is: uint64 length (little-endian), uint32 masked CRC32C of those 8 bytes, the data,
// uint32 masked CRC32C of the data. The data is a serialized tensorflow.Event:
//   wall_time = 1 (double), step = 2 (int64), file_version = 3 (string, first record only),
//   summary = 5 { value = 1 { tag = 1 (string), simple_value = 2 (float) } },
//   session_log = 7 { status = 1 (enum, START = 1) } (marks a resume: TensorBoard then drops the
//   events a killed run wrote past its checkpoint).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace demp::train {

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord uses. `crc` continues a
/// previous value (0 to start).
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
/// TFRecord's masked CRC: ((c >> 15) | (c << 17)) + 0xa282ead8.
uint32_t masked_crc32c(const void* data, size_t n);

/// One TFRecord record around `data`.
std::string tfrecord(const std::string& data);

using Scalars = std::vector<std::pair<std::string, double>>;

/// Serialized Event messages.
std::string event_file_version(double wall_time);
std::string event_scalars(double wall_time, int64_t step, const Scalars& values);
std::string event_session_start(double wall_time, int64_t step);

/// The TensorBoard scalars of one metrics.jsonl row, tag -> value, in the row's order. Known keys
/// get readable tags (train/loss, eval/test_acc, prune/lambda, units/<group>, ...; README,
/// "TensorBoard"); any other number in the row (nested objects flattened with '/') appears under
/// other/<key>. `step_seconds` < 0: not known (no time/step_seconds).
Scalars tensorboard_scalars(const nlohmann::json& row, double step_seconds);

/// An events file in a directory: events.out.tfevents.<unix time>.<host>[.N] (a new file per
/// writer: a resumed run appends a file, and TensorBoard merges a directory's files in name
/// order). Every record is flushed to the OS as it is written, so a live TensorBoard sees it.
class EventWriter {
 public:
  /// Creates `dir` if needed and a new events file in it. `resume_step` >= 0 writes a
  /// SessionLog START at resume_step + 1 (TensorBoard then discards the older events past
  /// resume_step: what a killed run logged after its checkpoint).
  /// Throws demp::Error naming the file when it cannot be created.
  EventWriter(const std::string& dir, int64_t resume_step = -1);
  ~EventWriter();
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;

  void scalars(int64_t step, const Scalars& values);
  const std::string& path() const { return path_; }

 private:
  void write(const std::string& event);
  std::string path_;
  std::FILE* f_ = nullptr;
};

/// Removes the TensorBoard events files (events.out.tfevents.*) in `dir` (an --overwrite).
void remove_event_files(const std::string& dir);
/// Whether `dir` holds TensorBoard events files.
bool has_event_files(const std::string& dir);

}  // namespace demp::train
