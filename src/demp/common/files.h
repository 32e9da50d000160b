#pragma once
// File helpers shared by every module: atomic writes (temp file + rename), whole-file reads.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace demp {

/// Writes `content` to `path` atomically: a temp file beside it, flushed, then renamed over it.
/// Throws demp::Error (naming the path) when the directory is missing or the disk is full.
/// `durable` false skips the fsync (many small files written in a row, synced once at the end:
/// still never a half-written file under `path`).
void write_file_atomic(const std::string& path, const std::string& content, bool durable = true);

/// Appends one line (a '\n' is added) with one write(2); on failure (a full disk) the file is
/// cut back to its old length, so that it never ends in half a line, and demp::Error is thrown.
void append_line(const std::string& path, const std::string& line);

/// Streams bytes into `path` through a temp file beside it (fsync, then rename over `path`).
/// `produce` is handed a sink; the sink never throws (a library may call it from a destructor,
/// as LibTorch's zip writer does): a failed write is remembered and the rest is dropped. After
/// `produce` returns, a failure removes the temp file, leaves `path` as it was, and throws
/// demp::Error naming `path` and the cause.
class ByteSink {
 public:
  virtual ~ByteSink() = default;
  virtual size_t write(const void* data, size_t n) noexcept = 0;
};
void write_file_streamed(const std::string& path, const std::string& what,
                         const std::function<void(ByteSink&)>& produce);

/// Reads a whole file; throws demp::Error naming the file when it cannot be read.
std::string read_file(const std::string& path);

/// Reads a file that may be gzip-compressed (detected by its magic bytes). `max_size` (0: no
/// limit) bounds what it may inflate to, so that a small "zip bomb" is refused before it takes
/// the machine's memory; `limit_from_head`, when given, is asked for that bound once the first
/// bytes are inflated (a file format's header says how large its payload is).
std::string read_maybe_gzip(const std::string& path, uint64_t max_size = 0,
                            const std::function<uint64_t(const std::string& head)>& limit_from_head = {});

// Path helpers on POSIX calls. std::filesystem is avoided on purpose: the torch wheel's
// libtorch.so exports its own, ABI-incompatible copies of std::filesystem functions that win at
// link time (remove_all crashes on a non-empty directory).
bool file_exists(const std::string& path);
bool is_directory(const std::string& path);
bool is_regular_file(const std::string& path);
/// mkdir -p; throws demp::Error naming the path on failure.
void make_directories(const std::string& path);
/// Removes a file if it exists (no error if absent).
void remove_file(const std::string& path);
/// rename(2); throws demp::Error naming both paths on failure.
void rename_file(const std::string& from, const std::string& to);
/// Removes a directory tree (tests and temp files only).
void remove_tree(const std::string& path);
/// $TMPDIR or /tmp.
std::string temp_directory();

/// An exclusive advisory lock (flock(2)) on `path` (created if needed), held while the object
/// lives; the lock file records the holder's pid. Throws demp::Error, naming the holder, when
/// another process holds it. The kernel drops the lock when the process dies, so a killed run
/// never leaves a stale lock behind.
class FileLock {
 public:
  FileLock() = default;
  FileLock(const std::string& path, const std::string& what);
  FileLock(FileLock&& o) noexcept;
  FileLock& operator=(FileLock&& o) noexcept;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock();
  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

/// The canonical absolute path (realpath(3)) of an existing file or directory; "" if absent.
std::string canonical_path(const std::string& path);

}  // namespace demp
