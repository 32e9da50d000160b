#pragma once
// Data-parallel communication over c10d: a rendezvous through a TCPStore, a Gloo (CPU) or NCCL
// (CUDA) process group, and the few collectives training needs (the launcher behind
// `demp train --nproc N` is in launch.h). c10d headers stay in comm.cpp: they are heavy, and Gloo's come from
// a system package that only that file needs.
#include <torch/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace demp::dist {

/// torchrun's conventions: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR (default 127.0.0.1),
/// MASTER_PORT (default 29500). An unset or empty variable takes its default.
struct Env {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int port = 29500;
  bool distributed() const { return world_size > 1; }
};

/// Reads the environment; throws demp::Error for malformed or inconsistent values (non-numeric,
/// negative, rank >= world size, port outside 1..65535).
Env env_from_environment();

/// True when this build has Gloo's headers (Debian's libgloo-dev), i.e. Comm works on CPU tensors.
bool gloo_available();
/// True when this build has the NCCL process group (a CUDA LibTorch and nccl.h).
bool nccl_available();

enum class ReduceOp { Sum, Min, Max };

class Comm {
 public:
  /// Rendezvous through a c10d TCPStore (rank 0 hosts it, the others connect to
  /// master_addr:port) and create a Gloo process group for CPU tensors, or NCCL when `device` is
  /// CUDA. A peer that does not arrive within `timeout` ends in demp::Error, never a hang; the
  /// process group's collectives use the same timeout. With world_size 1 there is no store and no
  /// process group: every collective is the identity.
  Comm(const Env& env, const torch::Device& device, std::chrono::milliseconds timeout);
  ~Comm();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;
  Comm(Comm&&) noexcept;
  Comm& operator=(Comm&&) noexcept;

  int64_t rank() const;
  int64_t world_size() const;
  /// "gloo", "nccl", or "local" (world size 1).
  std::string backend_name() const;

  /// Averages the .grad() of `params` across ranks in place (undefined grads count as zeros and
  /// get defined). Gradients are flattened into buckets of about `bucket_bytes` (per dtype), all
  /// buckets' all-reduces are issued asynchronously and then waited, and the means copied back.
  void average_gradients(const std::vector<torch::Tensor>& params, int64_t bucket_bytes = int64_t{25} << 20);
  /// The same averaging, overlapped with backward. Call begin_gradients(params) before
  /// backward: it hooks every parameter's gradient accumulator (again only when the parameter
  /// tensors changed, e.g. after surgery), so that a bucket's all-reduce starts as soon as
  /// backward has produced all its gradients (the first bucket holds at most 1 MB, as in DDP,
  /// so that communication starts early). Buckets follow the reverse parameter order and
  /// launch strictly in order on every rank. finish_gradients() after backward launches what
  /// is left, waits, and writes the means into .grad(). A failure inside a hook is reported by
  /// finish_gradients, on the calling thread.
  void begin_gradients(const std::vector<torch::Tensor>& params, int64_t bucket_bytes = int64_t{25} << 20);
  void finish_gradients();
  /// Of the last begin/finish_gradients step: buckets whose all-reduce started during backward,
  /// and buckets in all.
  std::pair<size_t, size_t> last_overlap() const;
  /// In-place all-reduce of one tensor (bool is reduced as uint8: Max = any, Min = all).
  void all_reduce(torch::Tensor& t, ReduceOp op);
  /// The elementwise sum of `t` over the ranks, differentiably: its backward sums the incoming
  /// gradients over the ranks too (what synchronised BatchNorm needs). Every rank must call it,
  /// and run the backward through it, in the same order.
  torch::Tensor sum_over_ranks(const torch::Tensor& t);
  /// In-place broadcast of every tensor from `root`.
  void broadcast(std::vector<torch::Tensor>& tensors, int64_t root = 0);
  void barrier();
  /// True on every rank iff all ranks hold bit-identical `tensors` (same count, dtypes and shapes
  /// too). For tests and debug checks: it all-reduces twice the tensors' bytes.
  bool all_equal(const std::vector<torch::Tensor>& tensors);

  /// Payload bytes handed to all-reduces since construction (not wire bytes; includes
  /// average_gradients and all_equal), and the bytes of the last average_gradients call.
  uint64_t bytes_all_reduced() const;
  uint64_t last_gradient_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace demp::dist
