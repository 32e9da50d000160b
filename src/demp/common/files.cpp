#include "demp/common/files.h"

#include <zlib.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "demp/common/error.h"

namespace demp {

void write_file_atomic(const std::string& path, const std::string& content, bool durable) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) {
    throw Error("cannot write " + path + ": " + std::strerror(errno),
                "check that the directory exists and is writable");
  }
  const size_t n = std::fwrite(content.data(), 1, content.size(), f);
  const bool ok = n == content.size() && std::fflush(f) == 0 && (!durable || ::fsync(fileno(f)) == 0);
  const int err = errno;
  std::fclose(f);
  if (!ok) {
    std::remove(tmp.c_str());
    throw Error("cannot write " + path + ": " + std::strerror(err), "is the disk full?");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw Error("cannot rename " + tmp + " to " + path + ": " + std::strerror(e),
                "check the directory's permissions");
  }
}

void append_line(const std::string& path, const std::string& line) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw Error("cannot append to " + path + ": " + std::strerror(errno),
                "check that the directory exists and is writable");
  }
  const off_t before = ::lseek(fd, 0, SEEK_END);
  const std::string s = line + "\n";
  size_t done = 0;
  int err = 0;
  while (done < s.size()) {
    const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = n < 0 ? errno : ENOSPC;
      break;
    }
    done += static_cast<size_t>(n);
  }
  if (err != 0 && before >= 0 && ::ftruncate(fd, before) != 0) {
    // Nothing more to do: the error below names the file.
  }
  ::close(fd);
  if (err != 0) {
    throw Error("cannot append to " + path + ": " + std::strerror(err),
                "is the disk full? the file keeps its complete lines");
  }
}

namespace {

class FileSink : public ByteSink {
 public:
  explicit FileSink(int fd) : fd_(fd) {}
  size_t write(const void* data, size_t n) noexcept override {
    if (err_ != 0) return n;  // dropped: the caller learns of the failure afterwards
    const char* p = static_cast<const char*>(data);
    size_t done = 0;
    while (done < n) {
      const ssize_t w = ::write(fd_, p + done, n - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        err_ = w < 0 ? errno : ENOSPC;
        break;
      }
      done += static_cast<size_t>(w);
    }
    return n;
  }
  int error() const { return err_; }

 private:
  int fd_;
  int err_ = 0;
};

}  // namespace

void write_file_streamed(const std::string& path, const std::string& what,
                         const std::function<void(ByteSink&)>& produce) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw Error("cannot write " + what + " " + path + ": " + std::strerror(errno),
                "check that the directory exists and is writable");
  }
  FileSink sink(fd);
  int err = 0;
  std::string failure;
  try {
    produce(sink);
  } catch (const std::exception& e) {
    failure = e.what();
  }
  err = sink.error();
  if (err == 0 && failure.empty() && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0 && failure.empty()) err = errno;
  if (err != 0 || !failure.empty()) {
    ::unlink(tmp.c_str());
    throw Error("cannot write " + what + " " + path + ": " +
                    (err != 0 ? std::string(std::strerror(err)) : failure) +
                    (file_exists(path) ? "; the previous one is kept" : ""),
                err == ENOSPC || err == EDQUOT ? "free some disk space (or use another --out)"
                                               : "is the disk full or the directory read-only?");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw Error("cannot rename " + tmp + " to " + path + ": " + std::strerror(e),
                "check the directory's permissions");
  }
}

std::string read_file(const std::string& path) {
  if (is_directory(path)) throw Error(path + " is a directory, not a file", "give the path of a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path + ": " + std::strerror(errno), "check the path");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string read_maybe_gzip(const std::string& path, uint64_t max_size,
                            const std::function<uint64_t(const std::string& head)>& limit_from_head) {
  std::string raw = read_file(path);
  if (raw.size() < 2 || static_cast<unsigned char>(raw[0]) != 0x1f ||
      static_cast<unsigned char>(raw[1]) != 0x8b) {
    return raw;
  }
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 32) != Z_OK) throw Error("zlib init failed for " + path, "out of memory?");
  zs.next_in = reinterpret_cast<Bytef*>(raw.data());
  zs.avail_in = static_cast<uInt>(raw.size());
  std::string out;
  std::vector<char> buf(1 << 16);
  bool asked = !limit_from_head;
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    zs.next_out = reinterpret_cast<Bytef*>(buf.data());
    zs.avail_out = static_cast<uInt>(buf.size());
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&zs);
      throw Error(path + " is not a valid gzip file (truncated or corrupt)", "download the file again");
    }
    out.append(buf.data(), buf.size() - zs.avail_out);
    if (!asked && (out.size() >= 64 || rc == Z_STREAM_END)) {
      asked = true;
      uint64_t lim = 0;
      try {
        lim = limit_from_head(out);  // may refuse the header itself
      } catch (...) {
        inflateEnd(&zs);
        throw;
      }
      if (lim > 0 && (max_size == 0 || lim < max_size)) max_size = lim;
    }
    if (max_size > 0 && out.size() > max_size) {
      inflateEnd(&zs);
      throw Error(path + " inflates to more than the " + std::to_string(max_size) +
                      " bytes its header promises (a corrupt file or a decompression bomb)",
                  "download the file again");
    }
    if (rc == Z_OK && zs.avail_in == 0 && zs.avail_out != 0) {
      inflateEnd(&zs);
      throw Error(path + " is a truncated gzip file", "download the file again");
    }
  }
  inflateEnd(&zs);
  return out;
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_regular_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

void make_directories(const std::string& path) {
  if (path.empty() || is_directory(path)) return;
  const auto slash = path.find_last_of('/');
  if (slash != std::string::npos && slash > 0) make_directories(path.substr(0, slash));
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    throw Error("cannot create directory " + path + ": " + std::strerror(errno),
                "check the path and its permissions");
  }
}

void remove_file(const std::string& path) { ::unlink(path.c_str()); }

void rename_file(const std::string& from, const std::string& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0) {
    throw Error("cannot rename " + from + " to " + to + ": " + std::strerror(errno),
                "check the directory's permissions");
  }
}

void remove_tree(const std::string& path) {
  if (DIR* d = ::opendir(path.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      const std::string child = path + "/" + name;
      if (is_directory(child)) {
        remove_tree(child);
      } else {
        ::unlink(child.c_str());
      }
    }
    ::closedir(d);
  }
  ::rmdir(path.c_str());
}

std::string temp_directory() {
  const char* t = std::getenv("TMPDIR");
  return t && *t ? t : "/tmp";
}

FileLock::FileLock(const std::string& path, const std::string& what) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    throw Error("cannot create the lock file " + path + ": " + std::strerror(errno),
                "check that the directory is writable");
  }
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {0};
    const ssize_t n = ::pread(fd_, buf, sizeof(buf) - 1, 0);
    ::close(fd_);
    fd_ = -1;
    std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    if (err == EWOULDBLOCK) {
      throw Error(what + " is in use by another demp process" +
                      (holder.empty() ? std::string() : " (pid " + holder + ")"),
                  "wait for it to finish, stop it, or use another --out");
    }
    // A file system without flock (some network mounts): run unlocked rather than not at all;
    // held() says so, and the caller warns.
    return;
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
    // The pid is informative only.
  }
}

FileLock::FileLock(FileLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }

FileLock& FileLock::operator=(FileLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);  // closing drops the flock
}

std::string canonical_path(const std::string& path) {
  char* r = ::realpath(path.c_str(), nullptr);
  if (!r) return {};
  std::string out = r;
  std::free(r);
  return out;
}

}  // namespace demp
