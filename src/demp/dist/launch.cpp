#include "demp/dist/launch.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>

#include "demp/common/error.h"
#include "demp/common/process.h"

extern char** environ;

namespace demp::dist {

int find_free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw Error(fmt::format("socket: {}", std::strerror(errno)));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(fmt::format("cannot find a free TCP port on 127.0.0.1: {}", std::strerror(err)));
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

namespace {

struct Child {
  int64_t rank = 0;
  pid_t pid = -1;
  int out = -1;  // read end of the joined stdout/stderr pipe (ranks > 0), else -1
  std::string pending;
  bool running = false;
};

void write_all(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

// Reads what is available; forwards complete lines with the rank prefix. Returns false at EOF.
bool pump(Child& c) {
  char buf[4096];
  const ssize_t n = ::read(c.out, buf, sizeof buf);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
  if (n <= 0) {
    if (!c.pending.empty()) write_all(2, fmt::format("[rank {}] {}\n", c.rank, c.pending));
    c.pending.clear();
    return false;
  }
  c.pending.append(buf, static_cast<size_t>(n));
  std::string lines;
  size_t start = 0, nl;
  while ((nl = c.pending.find('\n', start)) != std::string::npos) {
    lines += fmt::format("[rank {}] {}\n", c.rank, c.pending.substr(start, nl - start));
    start = nl + 1;
  }
  c.pending.erase(0, start);
  if (!lines.empty()) write_all(2, lines);
  return true;
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

bool is_rank_var(const char* kv) {
  static const char* names[] = {
      "RANK=",        "LOCAL_RANK=", "WORLD_SIZE=", "LOCAL_WORLD_SIZE=", "MASTER_ADDR=",
      "MASTER_PORT=", "GROUP_RANK=", "ROLE_RANK=",  "DEMP_LOCAL_LAUNCH="};
  for (const char* n : names) {
    if (std::strncmp(kv, n, std::strlen(n)) == 0) return true;
  }
  return false;
}

}  // namespace

namespace {
volatile std::sig_atomic_t g_launcher_signal = 0;
extern "C" void on_launcher_signal(int sig) { g_launcher_signal = sig; }
}  // namespace

int launch_local(const std::vector<std::string>& argv, int64_t nproc, int port) {
  if (argv.empty()) throw Error("launch_local: no program given");
  if (nproc < 1) throw Error(fmt::format("--nproc must be at least 1, got {}", nproc));
  if (find_executable(argv[0]).empty()) throw Error(fmt::format("{}: not found or not executable", argv[0]));
  if (port == 0) port = find_free_port();

  std::vector<std::string> base_env;
  for (char** e = environ; e && *e; ++e) {
    if (!is_rank_var(*e)) base_env.emplace_back(*e);
  }
  std::vector<Child> children(static_cast<size_t>(nproc));
  auto kill_all = [&](int sig) {
    for (auto& c : children) {
      if (c.running) ::kill(c.pid, sig);
    }
  };
  // A rank that cannot be started ends the launch: the ranks already running are killed and reaped.
  auto fail_start = [&](const std::string& why) {
    kill_all(SIGKILL);
    for (auto& o : children) {
      if (o.running) ::waitpid(o.pid, nullptr, 0);
      if (o.out >= 0) ::close(o.out);
      o.running = false;
      o.out = -1;
    }
    throw Error(why);
  };
  for (int64_t r = 0; r < nproc; ++r) {
    Child& c = children[static_cast<size_t>(r)];
    c.rank = r;
    std::vector<std::string> env = base_env;
    env.push_back(fmt::format("RANK={}", r));
    env.push_back(fmt::format("LOCAL_RANK={}", r));
    env.push_back(fmt::format("WORLD_SIZE={}", nproc));
    env.push_back(fmt::format("LOCAL_WORLD_SIZE={}", nproc));
    env.push_back("MASTER_ADDR=127.0.0.1");
    env.push_back(fmt::format("MASTER_PORT={}", port));
    env.push_back("DEMP_LOCAL_LAUNCH=1");  // these ranks came from --nproc, not from torchrun
    SpawnOptions so;
    so.env = &env;
    // Rank 0 keeps this process's stdout and stderr (a terminal stays a terminal); the others
    // share one pipe each, read here and prefixed.
    so.pipe_output = r > 0;
    Spawned sp;
    try {
      sp = spawn_process(argv, so);
    } catch (const Error& e) {
      fail_start(fmt::format("cannot start rank {}: {}", r, e.what()));
    }
    c.pid = sp.pid;
    c.running = true;
    c.out = sp.out;
    if (c.out >= 0) ::fcntl(c.out, F_SETFL, ::fcntl(c.out, F_GETFL) | O_NONBLOCK);
  }

  // SIGINT/SIGTERM: the ranks stop together at a step and rank 0 writes a checkpoint; the
  // launcher passes the signal on (once: a terminal's Ctrl-C reached them already) and waits for
  // them, instead of dying and leaving them behind.
  g_launcher_signal = 0;
  struct sigaction sa {
  }, old_int{}, old_term{};
  sa.sa_handler = on_launcher_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);
  struct Restore {
    struct sigaction *i, *t;
    ~Restore() {
      ::sigaction(SIGINT, i, nullptr);
      ::sigaction(SIGTERM, t, nullptr);
    }
  } restore{&old_int, &old_term};
  bool forwarded = false;
  int result = 0;
  bool failed = false;
  std::chrono::steady_clock::time_point kill_at{};
  for (;;) {
    if (g_launcher_signal != 0 && !forwarded) {
      forwarded = true;
      kill_all(SIGTERM);
    }
    std::vector<pollfd> pfds;
    std::vector<Child*> owners;
    for (auto& c : children) {
      if (c.out >= 0) {
        pfds.push_back({c.out, POLLIN, 0});
        owners.push_back(&c);
      }
    }
    // Exits are found by polling waitpid: a SIGCHLD handler would be process-wide state.
    ::poll(pfds.data(), pfds.size(), 50);
    for (size_t i = 0; i < pfds.size(); ++i) {
      if ((pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) && !pump(*owners[i])) {
        ::close(owners[i]->out);
        owners[i]->out = -1;
      }
    }
    bool any_running = false;
    for (auto& c : children) {
      if (!c.running) continue;
      int status = 0;
      const pid_t w = ::waitpid(c.pid, &status, WNOHANG);
      if (w == 0 || (w < 0 && errno == EINTR)) {
        any_running = true;
        continue;
      }
      c.running = false;
      const int code = w < 0 ? 1 : exit_code(status);
      if (forwarded && code != 0) {
        if (result == 0 || c.rank == 0) result = code;  // rank 0's status (130: interrupted) wins
        continue;
      }
      if (code != 0 && !failed) {
        failed = true;
        result = code;
        std::string how;
        if (w > 0 && WIFSIGNALED(status)) how = fmt::format(" (killed by signal {})", WTERMSIG(status));
        write_all(2, fmt::format("rank {} exited with code {}{}\n", c.rank, code, how));
        kill_all(SIGTERM);
        kill_at = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      }
    }
    if (!any_running) break;
    if (failed && std::chrono::steady_clock::now() >= kill_at) {
      kill_all(SIGKILL);
      kill_at = std::chrono::steady_clock::time_point::max();
    }
  }
  // All ranks have exited. Forward what their pipes still hold, but do not wait for EOF: a
  // grandchild that inherited a pipe could keep it open indefinitely.
  for (auto& c : children) {
    if (c.out < 0) continue;
    for (;;) {
      pollfd p{c.out, POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR)) || !pump(c)) break;
    }
    if (!c.pending.empty()) write_all(2, fmt::format("[rank {}] {}\n", c.rank, c.pending));
    ::close(c.out);
    c.out = -1;
  }
  return result;
}

}  // namespace demp::dist
