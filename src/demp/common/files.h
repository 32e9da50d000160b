#pragma once
// File helpers shared by every module: atomic writes (temp file + rename), whole-file reads.
#include <string>

namespace demp {

/// Writes `content` to `path` atomically: a temp file beside it, flushed, then renamed over it.
/// Throws demp::Error (naming the path) when the directory is missing or the disk is full.
void write_file_atomic(const std::string& path, const std::string& content);

/// Appends one line (a '\n' is added) and flushes; throws demp::Error on failure.
void append_line(const std::string& path, const std::string& line);

/// Reads a whole file; throws demp::Error naming the file when it cannot be read.
std::string read_file(const std::string& path);

/// Reads a file that may be gzip-compressed (detected by its magic bytes).
std::string read_maybe_gzip(const std::string& path);

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

}  // namespace demp
