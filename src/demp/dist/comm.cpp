#include "demp/dist/comm.h"

#include <netdb.h>

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

// The wheel ships c10d's headers but not Gloo's, which ProcessGroupGloo.hpp includes. Debian's
// libgloo-dev provides them. Only c10d's own types are used from here (Gloo objects are held by
// shared_ptr inside c10d), so an older Gloo header set is enough to compile the class; comm.cpp
// calls nothing of Gloo itself. Without the headers, CPU process groups are unavailable.
#if defined(USE_C10D_GLOO) && __has_include(<gloo/config.h>)
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#define DEMP_HAVE_GLOO 1
#else
#define DEMP_HAVE_GLOO 0
#endif

// ProcessGroupNCCL lives in libtorch_cuda; USE_C10D_NCCL comes from a CUDA LibTorch's CMake config
// and nccl.h from the CUDA toolkit (or the nvidia-nccl wheel).
#if defined(USE_C10D_NCCL) && __has_include(<nccl.h>)
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#define DEMP_HAVE_NCCL 1
#else
#define DEMP_HAVE_NCCL 0
#endif

#include "demp/common/error.h"

namespace demp::dist {

namespace {

constexpr const char* kPeerHint = "a peer rank exited or the network failed; see the other ranks' logs";

std::string first_line(std::string s) {
  const auto nl = s.find('\n');
  if (nl != std::string::npos) s.resize(nl);
  return s;
}

// c10::Error::what() carries a C++ backtrace; users get the message only.
std::string describe(const std::exception& e) {
  if (const auto* ce = dynamic_cast<const c10::Error*>(&e)) return first_line(ce->what_without_backtrace());
  return first_line(e.what());
}

std::string seconds(std::chrono::milliseconds t) {
  return fmt::format("{:g} s", static_cast<double>(t.count()) / 1000.0);
}

int64_t parse_int(const char* name, const std::string& value, int64_t lo, int64_t hi) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(value.c_str(), &end, 10);
  const bool digits = !value.empty() && value.find_first_not_of("+-0123456789") == std::string::npos;
  if (!digits || errno != 0 || end != value.c_str() + value.size() || v < lo || v > hi) {
    throw Error(fmt::format("{}='{}' is not an integer in {}..{}", name, value, lo, hi),
                "set the torchrun variables RANK, WORLD_SIZE, LOCAL_RANK, MASTER_PORT to integers, "
                "or unset them for a single process");
  }
  return v;
}

std::string getenv_str(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

}  // namespace

Env env_from_environment() {
  Env env;
  constexpr int64_t kMaxRanks = int64_t{1} << 24;
  const std::string rank = getenv_str("RANK"), world = getenv_str("WORLD_SIZE"),
                    local = getenv_str("LOCAL_RANK"), addr = getenv_str("MASTER_ADDR"),
                    port = getenv_str("MASTER_PORT");
  // torchrun sets both; one without the other is a hand-made environment gone wrong (RANK alone
  // used to run rank 0 of 1, or fail as "RANK=1 is not below WORLD_SIZE=1").
  if (rank.empty() != world.empty()) {
    throw Error(rank.empty() ? "WORLD_SIZE=" + world + " is set but RANK is not"
                             : "RANK=" + rank + " is set but WORLD_SIZE is not",
                "set RANK and WORLD_SIZE together (torchrun sets both), or neither for one process");
  }
  if (!world.empty()) env.world_size = parse_int("WORLD_SIZE", world, 1, kMaxRanks);
  if (!rank.empty()) env.rank = parse_int("RANK", rank, 0, kMaxRanks);
  if (!local.empty()) env.local_rank = parse_int("LOCAL_RANK", local, 0, kMaxRanks);
  if (!addr.empty()) env.master_addr = addr;
  if (!port.empty()) env.port = static_cast<int>(parse_int("MASTER_PORT", port, 1, 65535));
  if (env.rank >= env.world_size) {
    throw Error(fmt::format("RANK={} is not below WORLD_SIZE={}", env.rank, env.world_size),
                world.empty() ? "set WORLD_SIZE along with RANK (torchrun sets both)"
                              : "ranks are numbered 0..WORLD_SIZE-1");
  }
  if (env.local_rank >= env.world_size) {
    throw Error(fmt::format("LOCAL_RANK={} is not below WORLD_SIZE={}", env.local_rank, env.world_size),
                "LOCAL_RANK numbers the ranks on one machine, 0..(ranks per machine - 1)");
  }
  return env;
}

bool gloo_available() { return DEMP_HAVE_GLOO; }
bool nccl_available() { return DEMP_HAVE_NCCL; }

// ---------------------------------------------------------------------------------------------
// Comm

struct Comm::Impl {
  Env env;
  torch::Device device{torch::kCPU};
  std::chrono::milliseconds timeout{};
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;  // null for world size 1
  bool nccl = false;
  bool failed = false;  // a collective failed: the group may be half-broken
  uint64_t bytes = 0;
  uint64_t last_grad_bytes = 0;

  // Every c10d failure (a dead peer shows up as c10::DistBackendError, a Gloo IoException, or a
  // timeout) becomes one demp::Error naming this rank and the operation.
  template <class F>
  auto guarded(const char* op, F&& f) -> decltype(f()) {
    try {
      return f();
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      failed = true;
      throw Error(fmt::format("rank {}: {} failed: {}", env.rank, op, describe(e)), kPeerHint);
    }
  }

  void wait_all(const char* op, std::vector<c10::intrusive_ptr<c10d::Work>>& works) {
    guarded(op, [&] {
      for (auto& w : works) w->wait();
    });
  }

  static c10d::ReduceOp to_c10d(ReduceOp op) {
    switch (op) {
      case ReduceOp::Min:
        return c10d::ReduceOp::MIN;
      case ReduceOp::Max:
        return c10d::ReduceOp::MAX;
      case ReduceOp::Sum:
        break;
    }
    return c10d::ReduceOp::SUM;
  }

  void check_device(const torch::Tensor& t, const char* op) const {
    if (!t.defined()) throw Error(fmt::format("rank {}: {} got an undefined tensor", env.rank, op));
    if (backend && t.device().type() != device.type()) {
      throw Error(fmt::format("rank {}: {} got a tensor on {}, but the process group is for {}", env.rank, op,
                              t.device().str(), device.str()),
                  "move the tensors to the device the Comm was created for");
    }
  }

  // Starts an all-reduce of `t` (contiguous, on this Comm's device); null work for world size 1.
  c10::intrusive_ptr<c10d::Work> start_all_reduce(torch::Tensor& t, ReduceOp op, const char* what) {
    bytes += static_cast<uint64_t>(t.numel()) * t.element_size();
    if (!backend) return {};
    return guarded(what, [&] {
      std::vector<torch::Tensor> ts{t};
      c10d::AllreduceOptions o;
      o.reduceOp = to_c10d(op);
      o.timeout = timeout;
      return backend->allreduce(ts, o);
    });
  }

  void all_reduce_now(torch::Tensor& t, ReduceOp op, const char* what) {
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    if (auto w = start_all_reduce(t, op, what)) works.push_back(std::move(w));
    wait_all(what, works);
  }

  void rendezvous();
  void create_backend();

  // ---- gradient averaging: average_gradients, and begin/finish_gradients (overlapped) ----
  struct Bucket {
    std::vector<size_t> members;  // parameter indices
    size_t pending = 0;           // members whose gradient backward has not produced yet
    torch::Tensor flat;
    c10::intrusive_ptr<c10d::Work> work;
  };

  // Buckets of one dtype each (a flat buffer has one), in reverse parameter order (roughly the
  // order backward produces gradients). As in PyTorch's DDP the first bucket is small (1 MB), so
  // that communication starts early in backward; the others hold up to bucket_bytes.
  std::vector<Bucket> plan_buckets(const std::vector<torch::Tensor>& params, int64_t bucket_bytes,
                                   const char* op) const {
    std::vector<Bucket> out;
    std::vector<int64_t> bytes;
    std::map<torch::ScalarType, size_t> open;  // dtype -> its bucket being filled
    for (size_t k = params.size(); k-- > 0;) {
      const auto& p = params[k];
      check_device(p, op);
      auto it = open.find(p.scalar_type());
      const int64_t cap = it != open.end() && it->second == 0
                              ? std::min<int64_t>(int64_t{1} << 20, bucket_bytes)
                              : bucket_bytes;
      if (it == open.end() || bytes[it->second] >= cap) {
        out.emplace_back();
        bytes.push_back(0);
        it = open.insert_or_assign(p.scalar_type(), out.size() - 1).first;
      }
      out[it->second].members.push_back(k);
      bytes[it->second] += p.numel() * static_cast<int64_t>(p.element_size());
    }
    return out;
  }
  // Flattens a bucket's gradients (a missing one counts as zeros and gets defined) and starts its
  // all-reduce.
  void launch(Bucket& b, std::vector<torch::Tensor>& params) {
    std::vector<torch::Tensor> parts;
    for (size_t i : b.members) {
      torch::Tensor& p = params[i];
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      parts.push_back(p.grad().reshape({-1}));
    }
    b.flat = torch::cat(parts);
    b.work = start_all_reduce(b.flat, ReduceOp::Sum, "average_gradients");
  }
  // Waits for every bucket's sum and writes the means back into the gradients.
  void write_back_means(std::vector<Bucket>& bs, std::vector<torch::Tensor>& params) {
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (auto& b : bs) {
      if (b.work) works.push_back(b.work);
    }
    wait_all("average_gradients", works);
    const double inv = 1.0 / static_cast<double>(env.world_size);
    for (auto& b : bs) {
      if (env.world_size > 1) b.flat.mul_(inv);
      int64_t offset = 0;
      for (size_t i : b.members) {
        auto& g = params[i].mutable_grad();
        const int64_t n = g.numel();
        g.copy_(b.flat.narrow(0, offset, n).view(g.sizes()));
        offset += n;
      }
      b.flat = torch::Tensor();
      b.work.reset();
    }
  }

  std::mutex overlap_mu;
  std::vector<const void*> hooked_key;  // the parameters' TensorImpls when hooked
  std::vector<torch::Tensor> hooked;
  std::vector<std::pair<std::shared_ptr<torch::autograd::Node>, uintptr_t>> hooks;
  std::vector<Bucket> buckets;
  std::vector<size_t> bucket_of;
  size_t next_launch = 0;
  size_t launched_in_backward = 0;  // buckets started before finish_gradients (the overlap)
  bool overlap_active = false;
  std::string overlap_error;
  uint64_t overlap_bytes_before = 0;

  void unhook() {
    for (auto& [acc, key] : hooks) acc->del_post_hook(key);
    hooks.clear();
    hooked.clear();
    hooked_key.clear();
  }
  // Buckets launch strictly in order, so every rank issues the same collectives in the same order
  // (NCCL requires it) even if backward finished them in another.
  void launch_ready() {
    while (next_launch < buckets.size() && buckets[next_launch].pending == 0) {
      launch(buckets[next_launch++], hooked);
    }
  }
  void gradient_ready(size_t i) {
    std::lock_guard<std::mutex> lock(overlap_mu);
    if (!overlap_active || !overlap_error.empty()) return;
    try {
      torch::NoGradGuard no_grad;
      Bucket& b = buckets[bucket_of[i]];
      if (b.pending > 0) --b.pending;
      launch_ready();
    } catch (const std::exception& e) {
      overlap_error = e.what();  // rethrown by finish_gradients on the training thread
    }
  }
};

void Comm::Impl::rendezvous() {
  const std::string where = fmt::format("{}:{}", env.master_addr, env.port);
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(env.port);
  o.isServer = env.rank == 0;
  o.numWorkers = static_cast<size_t>(env.world_size);
  // Arrival is counted below, so that a missing peer can be reported as "K of N".
  o.waitWorkers = false;
  o.timeout = timeout;
  {
    // A host name that does not resolve is a typo, not a rank 0 that is late: say so at once.
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const int rc = ::getaddrinfo(env.master_addr.c_str(), nullptr, &hints, &res);
    if (res) ::freeaddrinfo(res);
    if (rc != 0) {
      throw Error(fmt::format("rank {}: MASTER_ADDR '{}' does not resolve ({})", env.rank, env.master_addr,
                              ::gai_strerror(rc)),
                  "set MASTER_ADDR to rank 0's host name or IP address (127.0.0.1 on one machine)");
    }
  }
  try {
    store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, o);
  } catch (const std::exception& e) {
    if (env.rank == 0) {
      throw Error(fmt::format("rank 0: cannot host the rendezvous at {}: {}", where, describe(e)),
                  "is MASTER_PORT in use by another job? pick another one");
    }
    throw Error(fmt::format("rank {}: rank 0 did not arrive at {} within {} ({})", env.rank, where,
                            seconds(timeout), describe(e)),
                "start every rank with the same MASTER_ADDR and MASTER_PORT; rank 0 hosts the rendezvous");
  }
  // The last rank to arrive opens the gate; everyone waits on it with the deadline.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  try {
    if (store->add("demp/arrived", 1) == env.world_size) store->set("demp/gate", std::vector<uint8_t>{1});
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    store->wait({"demp/gate"}, std::max(left, std::chrono::milliseconds(1)));
  } catch (const std::exception& e) {
    int64_t arrived = -1;
    try {
      arrived = store->add("demp/arrived", 0);
    } catch (const std::exception&) {
    }
    const std::string count = arrived >= 0 ? std::to_string(arrived) : std::string("not all");
    throw Error(fmt::format("rank {}: only {} of {} ranks arrived at {} within {}", env.rank, count,
                            env.world_size, where, seconds(timeout)),
                "start all WORLD_SIZE ranks (demp train --nproc N does), or raise the timeout; "
                "see the other ranks' logs");
  }
}

void Comm::Impl::create_backend() {
  auto prefixed = [&](const char* p) { return c10::make_intrusive<c10d::PrefixStore>(p, store); };
  if (device.is_cuda()) {
#if DEMP_HAVE_NCCL
    const auto index = device.has_index() ? device.index() : static_cast<c10::DeviceIndex>(env.local_rank);
    device = torch::Device(torch::kCUDA, index);
    c10::cuda::set_device(index);
    // Without blocking wait, a timed-out NCCL collective is handled by the watchdog thread, which
    // kills the process; with it, wait() throws in this thread and the Error below reaches the user.
    ::setenv("TORCH_NCCL_BLOCKING_WAIT", "1", 0);
    auto o = c10d::ProcessGroupNCCL::Options::create();
    o->timeout = timeout;
    nccl = true;
    backend = guarded("creating the NCCL process group", [&] {
      auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          prefixed("demp/nccl/"), static_cast<int>(env.rank), static_cast<int>(env.world_size), o);
      pg->setBoundDeviceId(device);
      pg->eagerConnectSingleDevice(device);
      return c10::intrusive_ptr<c10d::Backend>(pg);
    });
    return;
#else
    throw Error(fmt::format("rank {}: this build has no NCCL process group", env.rank),
                "build demp against a CUDA LibTorch with nccl.h on the include path");
#endif
  }
  if (!device.is_cpu()) {
    throw Error(fmt::format("rank {}: data-parallel training supports CPU (Gloo) and CUDA (NCCL), not {}",
                            env.rank, device.str()));
  }
#if DEMP_HAVE_GLOO
  auto o = c10d::ProcessGroupGloo::Options::create(timeout);
  backend = guarded("creating the Gloo process group", [&] {
    // Gloo needs an address its peers can reach: loopback when everything runs on this machine,
    // the interface GLOO_SOCKET_IFNAME names when set (as in PyTorch), else this host's name.
    const std::string ifname = getenv_str("GLOO_SOCKET_IFNAME");
    const bool local = env.master_addr == "localhost" || env.master_addr.rfind("127.", 0) == 0;
    if (!ifname.empty()) {
      o->devices.push_back(
          c10d::ProcessGroupGloo::createDeviceForInterface(ifname.substr(0, ifname.find(','))));
    } else if (local) {
      o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    return c10::intrusive_ptr<c10d::Backend>(c10::make_intrusive<c10d::ProcessGroupGloo>(
        prefixed("demp/gloo/"), static_cast<int>(env.rank), static_cast<int>(env.world_size), o));
  });
#else
  throw Error(
      fmt::format("rank {}: this build has no Gloo process group for CPU tensors", env.rank),
      "install Gloo's headers (Debian: libgloo-dev) and rebuild; LibTorch's wheel does not ship them");
#endif
}

Comm::Comm(const Env& env, const torch::Device& device, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>()) {
  if (env.world_size < 1 || env.rank < 0 || env.rank >= env.world_size) {
    throw Error(fmt::format("invalid ranks: rank {} of world size {}", env.rank, env.world_size));
  }
  if (env.port < 1 || env.port > 65535) throw Error(fmt::format("invalid MASTER_PORT {}", env.port));
  impl_->env = env;
  impl_->device = device;
  impl_->timeout = timeout;
  if (!env.distributed()) return;
  impl_->rendezvous();
  impl_->create_backend();
}

Comm::~Comm() {
  if (!impl_) return;
  impl_->unhook();
  if (impl_->backend && impl_->nccl) {
    // ProcessGroupNCCL wants an explicit shutdown before destruction; after a failed collective a
    // graceful shutdown could wait on the dead peer, so the communicators are aborted instead.
    try {
      if (impl_->failed)
        impl_->backend->abort();
      else
        impl_->backend->shutdown();
    } catch (const std::exception&) {
    }
  }
  impl_->backend.reset();
  impl_->store.reset();
}

Comm::Comm(Comm&&) noexcept = default;
Comm& Comm::operator=(Comm&&) noexcept = default;

int64_t Comm::rank() const { return impl_->env.rank; }
int64_t Comm::world_size() const { return impl_->env.world_size; }
std::string Comm::backend_name() const {
  if (!impl_->backend) return "local";
  return impl_->nccl ? "nccl" : "gloo";
}
uint64_t Comm::bytes_all_reduced() const { return impl_->bytes; }
uint64_t Comm::last_gradient_bytes() const { return impl_->last_grad_bytes; }
std::pair<size_t, size_t> Comm::last_overlap() const {
  return {impl_->launched_in_backward, impl_->buckets.size()};
}

void Comm::all_reduce(torch::Tensor& t, ReduceOp op) {
  torch::NoGradGuard no_grad;
  impl_->check_device(t, "all_reduce");
  if (t.scalar_type() == torch::kBool) {
    // Neither Gloo nor NCCL reduces bool; as bytes, Max is "any" and Min is "all".
    auto u = t.to(torch::kUInt8).contiguous();
    impl_->all_reduce_now(u, op, "all_reduce");
    t.copy_(u.ne(0));
    return;
  }
  if (t.is_contiguous()) {
    impl_->all_reduce_now(t, op, "all_reduce");
  } else {
    auto c = t.contiguous();
    impl_->all_reduce_now(c, op, "all_reduce");
    t.copy_(c);
  }
}

void Comm::average_gradients(const std::vector<torch::Tensor>& params, int64_t bucket_bytes) {
  torch::NoGradGuard no_grad;
  auto& im = *impl_;
  const uint64_t before = im.bytes;
  std::vector<torch::Tensor> ps;
  for (const auto& p : params) {
    if (p.defined()) ps.push_back(p);
  }
  auto bs = im.plan_buckets(ps, bucket_bytes, "average_gradients");
  for (auto& b : bs) im.launch(b, ps);
  im.write_back_means(bs, ps);
  im.last_grad_bytes = im.bytes - before;
}

void Comm::begin_gradients(const std::vector<torch::Tensor>& params, int64_t bucket_bytes) {
  auto& im = *impl_;
  std::lock_guard<std::mutex> lock(im.overlap_mu);
  if (im.overlap_active)
    throw Error(fmt::format("rank {}: begin_gradients twice without finish_gradients", im.env.rank));
  std::vector<const void*> key;
  for (const auto& p : params) key.push_back(p.defined() ? p.unsafeGetTensorImpl() : nullptr);
  if (key != im.hooked_key) {
    // New parameter tensors (the first step, or surgery replaced them): new buckets and hooks.
    im.unhook();
    for (const auto& p : params) {
      if (!p.defined())
        throw Error(fmt::format("rank {}: begin_gradients got an undefined tensor", im.env.rank));
    }
    im.buckets = im.plan_buckets(params, bucket_bytes, "begin_gradients");
    im.bucket_of.assign(params.size(), 0);
    for (size_t b = 0; b < im.buckets.size(); ++b) {
      for (size_t k : im.buckets[b].members) im.bucket_of[k] = b;
    }
    im.hooked = params;
    im.hooked_key = key;
    Impl* self = &im;
    for (size_t k = 0; k < params.size(); ++k) {
      // The accumulator's post hook runs once backward has added this step's gradient into .grad.
      auto acc = torch::autograd::impl::grad_accumulator(params[k]);
      if (!acc)
        throw Error(fmt::format("rank {}: begin_gradients: parameter {} is not a leaf that requires grad",
                                im.env.rank, k));
      const uintptr_t h = acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
          [self, k](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
            self->gradient_ready(k);
            return outputs;
          }));
      im.hooks.emplace_back(std::move(acc), h);
    }
  }
  for (auto& b : im.buckets) b.pending = b.members.size();
  im.next_launch = 0;
  im.overlap_error.clear();
  im.overlap_bytes_before = im.bytes;
  im.overlap_active = true;
}

void Comm::finish_gradients() {
  auto& im = *impl_;
  torch::NoGradGuard no_grad;
  {
    std::lock_guard<std::mutex> lock(im.overlap_mu);
    if (!im.overlap_active)
      throw Error(fmt::format("rank {}: finish_gradients without begin_gradients", im.env.rank));
    im.overlap_active = false;
    if (!im.overlap_error.empty()) {
      im.failed = true;
      throw Error(fmt::format("rank {}: average_gradients failed: {}", im.env.rank, im.overlap_error),
                  kPeerHint);
    }
    im.launched_in_backward = im.next_launch;
    // Parameters that got no gradient this step count as zeros; their buckets launch now.
    for (auto& b : im.buckets) b.pending = 0;
    im.launch_ready();
  }
  im.write_back_means(im.buckets, im.hooked);
  im.last_grad_bytes = im.bytes - im.overlap_bytes_before;
}

namespace {

// all-reduce(SUM) as an autograd function: the forward sums over the ranks, and so does the
// backward (every rank's loss depends on every rank's input through the sum), as in PyTorch's
// SyncBatchNorm.
struct SumOverRanks : public torch::autograd::Function<SumOverRanks> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& t, int64_t comm) {
    ctx->saved_data["comm"] = comm;
    auto out = t.detach().clone().contiguous();
    reinterpret_cast<Comm*>(comm)->all_reduce(out, ReduceOp::Sum);
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* comm = reinterpret_cast<Comm*>(ctx->saved_data["comm"].toInt());
    auto g = grads[0].contiguous().clone();
    comm->all_reduce(g, ReduceOp::Sum);
    return {g, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor Comm::sum_over_ranks(const torch::Tensor& t) {
  if (!impl_->backend) return t;
  return SumOverRanks::apply(t, reinterpret_cast<int64_t>(this));
}

void Comm::broadcast(std::vector<torch::Tensor>& tensors, int64_t root) {
  torch::NoGradGuard no_grad;
  auto& im = *impl_;
  if (root < 0 || root >= im.env.world_size) {
    throw Error(
        fmt::format("rank {}: broadcast root {} is not a rank of {}", im.env.rank, root, im.env.world_size));
  }
  for (const auto& t : tensors) im.check_device(t, "broadcast");
  if (!im.backend) return;
  // Gloo broadcasts one tensor per call on CPU; all calls are issued before any is waited for.
  std::vector<torch::Tensor> bufs;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (auto& t : tensors) {
    bufs.push_back(t.scalar_type() == torch::kBool ? t.to(torch::kUInt8).contiguous() : t.contiguous());
    works.push_back(im.guarded("broadcast", [&] {
      std::vector<torch::Tensor> ts{bufs.back()};
      c10d::BroadcastOptions o;
      o.rootRank = root;
      o.timeout = im.timeout;
      return im.backend->broadcast(ts, o);
    }));
  }
  im.wait_all("broadcast", works);
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!bufs[i].is_same(tensors[i])) tensors[i].copy_(bufs[i]);
  }
}

void Comm::barrier() {
  auto& im = *impl_;
  if (!im.backend) return;
  im.guarded("barrier", [&] {
    c10d::BarrierOptions o;
    o.timeout = im.timeout;
    if (im.nccl) o.device_ids = {im.device.index()};
    im.backend->barrier(o)->wait();
  });
}

bool Comm::all_equal(const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  auto& im = *impl_;
  if (!im.backend) return true;
  const auto dev = im.device;
  // A fixed-size header (count, bytes, a hash of dtypes and shapes) first, so that ranks whose
  // tensors differ in size never reach a mismatched all-reduce. Max over [x, -x] gives max and
  // -min at once: everyone agrees iff max == min.
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  auto mix = [&](int64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= static_cast<uint64_t>(v >> (8 * i)) & 0xff;
      h *= 1099511628211ull;
    }
  };
  int64_t total = 0;
  for (const auto& t : tensors) {
    im.check_device(t, "all_equal");
    mix(static_cast<int64_t>(t.scalar_type()));
    mix(t.dim());
    for (auto s : t.sizes()) mix(s);
    total += t.numel() * static_cast<int64_t>(t.element_size());
  }
  const int64_t hv = static_cast<int64_t>(h >> 1);  // non-negative, so -hv does not overflow
  auto head = torch::tensor({static_cast<int64_t>(tensors.size()), total, hv}, torch::kInt64).to(dev);
  auto both = torch::cat({head, -head});
  im.all_reduce_now(both, ReduceOp::Max, "all_equal");
  if (!torch::equal(both.narrow(0, 0, 3), -both.narrow(0, 3, 3))) return false;
  if (total == 0) return true;
  std::vector<torch::Tensor> parts;
  for (const auto& t : tensors) {
    if (t.numel() > 0) parts.push_back(t.detach().contiguous().reshape({-1}).view(torch::kUInt8));
  }
  auto x = torch::cat(parts).to(torch::kInt16);
  auto payload = torch::cat({x, 255 - x}).to(torch::kUInt8);
  im.all_reduce_now(payload, ReduceOp::Max, "all_equal");
  const auto n = x.numel();
  return torch::equal(payload.narrow(0, 0, n),
                      (255 - payload.narrow(0, n, n).to(torch::kInt16)).to(torch::kUInt8));
}

}  // namespace demp::dist
