#include "demp/common/process.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>

#include "demp/common/error.h"

extern char** environ;

namespace demp {

namespace {

bool is_executable_file(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
}

std::string trim_line(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.pop_back();
  return s;
}

}  // namespace

std::string find_executable(const std::string& name) {
  if (name.empty()) return {};
  if (name.find('/') != std::string::npos) return is_executable_file(name) ? name : std::string{};
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    const size_t end = std::min(dirs.find(':', start), dirs.size());
    std::string dir = dirs.substr(start, end - start);
    if (dir.empty()) dir = ".";
    const std::string cand = dir + "/" + name;
    if (is_executable_file(cand)) return cand;
    start = end + 1;
  }
  return {};
}

std::string shell_join(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    const bool plain = !a.empty() && a.find_first_not_of(
                                         "abcdefghijklmnopqrstuvwxyz"
                                         "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                         "-_=.,/:+@%") == std::string::npos;
    if (plain) {
      out += a;
    } else {
      out += '\'';
      for (char c : a) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
      out += '\'';
    }
  }
  return out;
}

Spawned spawn_process(const std::vector<std::string>& argv, const SpawnOptions& opt) {
  if (argv.empty()) throw Error("no program given");
  const std::string exe = find_executable(argv[0]);
  if (exe.empty()) throw Error(argv[0] + ": not found or not executable");
  int fds[2] = {-1, -1};
  if (opt.pipe_output && ::pipe2(fds, O_CLOEXEC) != 0) {
    throw Error(std::string("pipe: ") + std::strerror(errno));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (opt.pipe_output) {
    // dup2 clears close-on-exec on the new descriptors, so only 1 and 2 reach the child.
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  }
  if (opt.null_stdin) posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<char*> envp;
  if (opt.env) {
    for (const auto& e : *opt.env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
  }
  Spawned child;
  const int rc =
      ::posix_spawn(&child.pid, exe.c_str(), &actions, nullptr, args.data(), opt.env ? envp.data() : environ);
  posix_spawn_file_actions_destroy(&actions);
  if (fds[1] >= 0) ::close(fds[1]);
  if (rc != 0) {
    if (fds[0] >= 0) ::close(fds[0]);
    throw Error(exe + ": " + std::strerror(rc));
  }
  child.out = fds[0];
  return child;
}

namespace {

// The children run_process is running (0: a free slot), for the signal forwarder. Lock-free
// atomics: the handler reads them.
constexpr int kMaxChildren = 256;
std::atomic<pid_t> g_children[kMaxChildren];
std::atomic<int> g_forwarded{0};

extern "C" void forward_signal(int sig) {
  g_forwarded.store(sig);
  for (auto& c : g_children) {
    const pid_t p = c.load();
    if (p > 0) ::kill(p, sig);
  }
}

int register_child(pid_t pid) {
  for (int i = 0; i < kMaxChildren; ++i) {
    pid_t free_slot = 0;
    if (g_children[i].compare_exchange_strong(free_slot, pid)) return i;
  }
  return -1;
}

}  // namespace

ForwardSignals::ForwardSignals() {
  g_forwarded.store(0);
  struct sigaction sa {};
  sa.sa_handler = forward_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  struct sigaction now {};
  ::sigaction(SIGINT, nullptr, &now);
  int_ = now.sa_handler != SIG_IGN;
  if (int_) ::sigaction(SIGINT, &sa, &old_int_);
  ::sigaction(SIGTERM, &sa, &old_term_);
}

ForwardSignals::~ForwardSignals() {
  if (int_) ::sigaction(SIGINT, &old_int_, nullptr);
  ::sigaction(SIGTERM, &old_term_, nullptr);
}

int ForwardSignals::received() { return g_forwarded.load(); }

ProcessResult run_process(const std::vector<std::string>& argv,
                          const std::function<void(const std::string&)>& on_line) {
  ProcessResult r;
  Spawned child;
  try {
    SpawnOptions so;
    so.null_stdin = true;
    child = spawn_process(argv, so);
  } catch (const Error& e) {
    r.exit_code = -1;
    r.last_line = e.what();
    return r;
  }
  const int out = child.out;
  const pid_t pid = child.pid;
  // A signal that came while it was being started is passed on now.
  const int slot = register_child(pid);
  if (const int sig = g_forwarded.load()) ::kill(pid, sig);

  std::string pending;
  auto emit = [&](std::string line) {
    line = trim_line(std::move(line));
    if (line.empty()) return;
    r.last_line = line;
    if (on_line) on_line(line);
  };
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(out, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t i = 0; i < n; ++i) {
      // '\r' ends a line too: a progress bar redraws with it, and each redraw is a state.
      if (buf[i] == '\n' || buf[i] == '\r') {
        emit(std::move(pending));
        pending.clear();
      } else {
        pending += buf[i];
      }
    }
  }
  emit(std::move(pending));
  ::close(out);
  // Out of the forwarder's list before it is reaped (and its pid can be reused).
  if (slot >= 0) g_children[slot].store(0);

  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      r.exit_code = -1;
      r.last_line = std::string("waitpid: ") + std::strerror(errno);
      return r;
    }
  }
  if (WIFEXITED(status)) {
    r.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    r.signal = WTERMSIG(status);
    r.exit_code = 128 + r.signal;
  }
  return r;
}

}  // namespace demp
