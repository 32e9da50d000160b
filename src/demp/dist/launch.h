#pragma once
// The local launcher behind `demp train --nproc N`: N ranks of one program on this machine, with
// torchrun's environment variables. LibTorch-free.
#include <cstdint>
#include <string>
#include <vector>

namespace demp::dist {

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick for port 0).
int find_free_port();

/// `demp train --nproc N`: starts N copies of argv (argv[0] = the demp binary, a path or a name on
/// PATH) as local ranks with RANK/LOCAL_RANK/WORLD_SIZE/LOCAL_WORLD_SIZE/MASTER_ADDR=127.0.0.1/
/// MASTER_PORT=port (a free port when port == 0), forwards their output (rank 0's as is, other
/// ranks' lines prefixed "[rank r] " on stderr) and waits. If one rank exits non-zero or is
/// killed, the others get SIGTERM (SIGKILL a few seconds later), "rank r exited with code c" goes
/// to stderr, and that code is returned (128 + N for signal N). Returns 0 when all succeed.
/// Throws demp::Error when argv[0] cannot be started.
int launch_local(const std::vector<std::string>& argv, int64_t nproc, int port = 0);

}  // namespace demp::dist
