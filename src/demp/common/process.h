#pragma once
// Child processes: the one spawning primitive, used by the sweep and the frontier (the demp binary
// itself, one training run at a time), the report (gnuplot) and the local data-parallel launcher.
// posix_spawn rather than fork: the parent may hold LibTorch's thread pools, and spawn does not
// copy them into a half-alive child. LibTorch-free.
#include <signal.h>
#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

namespace demp {

struct ProcessResult {
  int exit_code = 0;      ///< the exit status; 128 + N when killed by signal N; -1 when not started
  int signal = 0;         ///< N when killed by signal N, else 0
  std::string last_line;  ///< the last non-empty line the process printed (stdout or stderr)
};

/// A started child: its pid, and the read end of its joined stdout/stderr pipe (close-on-exec)
/// when its output was piped, else -1. The caller reads `out`, closes it and reaps `pid`.
struct Spawned {
  pid_t pid = -1;
  int out = -1;
};

struct SpawnOptions {
  /// The child's environment as "KEY=value" strings; null: this process's environment.
  const std::vector<std::string>* env = nullptr;
  bool pipe_output = true;  ///< stdout and stderr joined into one pipe; false: inherited
  bool null_stdin = false;  ///< stdin from /dev/null; false: inherited
};

/// Starts `argv` (argv[0] resolved with find_executable). Returns the child, or throws
/// demp::Error saying why it could not be started (nothing is left open or running then).
Spawned spawn_process(const std::vector<std::string>& argv, const SpawnOptions& opt = {});

/// Runs `argv` (argv[0] is a path, or a name looked up on PATH when it holds no '/') with stdout
/// and stderr joined into one pipe; `on_line` sees every line as it comes. Never throws for a
/// failing child: a program that cannot be started gives exit_code -1 and the reason as last_line.
ProcessResult run_process(const std::vector<std::string>& argv,
                          const std::function<void(const std::string&)>& on_line = {});

/// While one is alive, SIGINT and SIGTERM do not end this process: each is passed on to every
/// child that run_process is running (a `demp train` run then finishes its step, writes its
/// checkpoint and stops, resumable), and received() returns it, so that a driver starts no further
/// child and ends. The sweep and the frontier hold one. A SIGINT this process ignores (a
/// background job of a non-interactive shell) stays ignored.
class ForwardSignals {
 public:
  ForwardSignals();
  ~ForwardSignals();
  ForwardSignals(const ForwardSignals&) = delete;
  ForwardSignals& operator=(const ForwardSignals&) = delete;
  /// The signal received since construction, or 0.
  static int received();

 private:
  struct sigaction old_int_ {
  }, old_term_{};
  bool int_ = false;
};

/// The path of an executable: `name` itself when it holds a '/', else the first match on $PATH;
/// empty when there is none.
std::string find_executable(const std::string& name);

/// A command line as a user would type it (arguments quoted where the shell needs it).
std::string shell_join(const std::vector<std::string>& argv);

}  // namespace demp
