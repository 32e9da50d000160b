// c10d communication: several ranks as threads of this process on 127.0.0.1, each with its own
// Comm (store, Gloo process group), and the local launcher with /bin/sh children.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <functional>
#include <future>
#include <iostream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/data/dataset.h"
#include "demp/dist/comm.h"
#include "demp/dist/launch.h"
#include "test_util.h"

namespace {

using demp::dist::Comm;
using demp::dist::Env;
using demp::dist::ReduceOp;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kTimeout{10000};

// c10d's flight recorder (one per process) inserts a new group's status into a map before taking
// its lock (FlightRecorderDetail.hpp, recordWithResetEnabled), so the first collectives of several
// groups in one process race and crash now and then. One group per process, as in training, never
// meets it; these tests run several ranks as threads, so they switch the recorder off before
// any group exists.
const bool kFlightRecorderOff = ::setenv("TORCH_FR_BUFFER_SIZE", "0", 1) == 0;

Env env_for(int64_t rank, int64_t world, int port) {
  Env e;
  e.rank = rank;
  e.world_size = world;
  e.local_rank = rank;
  e.port = port;
  return e;
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Runs body(comm) on `world` threads, one rank each; rethrows the first failure on this thread,
// so that a rank's exception fails the test instead of terminating the process.
void run_ranks(int64_t world, const std::function<void(Comm&)>& body) {
  const int port = demp::dist::find_free_port();
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(world));
  for (int64_t r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        // A client that finds no store yet backs off for up to seconds (TCPStore's retry); giving
        // rank 0 a head start keeps these tests fast. Correctness never depends on it.
        if (r > 0) std::this_thread::sleep_for(milliseconds(100));
        Comm comm(env_for(r, world, port), torch::kCPU, kTimeout);
        body(comm);
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

#define SKIP_WITHOUT_GLOO() \
  if (!demp::dist::gloo_available()) GTEST_SKIP() << "built without Gloo headers (libgloo-dev)"

// Sets environment variables for one test and restores the previous values afterwards.
class ScopedEnv {
 public:
  ~ScopedEnv() {
    for (auto& [name, old] : saved_) {
      if (old)
        ::setenv(name.c_str(), old->c_str(), 1);
      else
        ::unsetenv(name.c_str());
    }
  }
  void set(const std::string& name, const char* value) {
    bool known = false;
    for (auto& s : saved_) known = known || s.first == name;
    if (!known) {
      const char* old = std::getenv(name.c_str());
      saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
    }
    if (value)
      ::setenv(name.c_str(), value, 1);
    else
      ::unsetenv(name.c_str());
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const demp::Error& e) {
    return std::string(e.what()) + " | hint: " + e.hint();
  }
  return "no error";
}

// ---------------------------------------------------------------------------------------------

TEST(DistEnv, ReadsTorchrunVariablesWithDefaults) {
  ScopedEnv env;
  for (const char* n : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"})
    env.set(n, nullptr);
  auto e = demp::dist::env_from_environment();
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.world_size, 1);
  EXPECT_EQ(e.local_rank, 0);
  EXPECT_EQ(e.master_addr, "127.0.0.1");
  EXPECT_EQ(e.port, 29500);
  EXPECT_FALSE(e.distributed());

  env.set("RANK", "3");
  env.set("WORLD_SIZE", "4");
  env.set("LOCAL_RANK", "1");
  env.set("MASTER_ADDR", "node7");
  env.set("MASTER_PORT", "1234");
  e = demp::dist::env_from_environment();
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.world_size, 4);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.master_addr, "node7");
  EXPECT_EQ(e.port, 1234);
  EXPECT_TRUE(e.distributed());
}

TEST(DistEnv, RejectsMalformedAndInconsistentValues) {
  ScopedEnv env;
  for (const char* n : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"})
    env.set(n, nullptr);
  auto expect_error = [](const std::string& needle) {
    const std::string msg = error_of([] { demp::dist::env_from_environment(); });
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  };
  env.set("WORLD_SIZE", "2");
  env.set("RANK", "2");
  expect_error("RANK=2 is not below WORLD_SIZE=2");
  env.set("RANK", "1x");
  expect_error("RANK='1x'");
  env.set("RANK", "-1");
  expect_error("RANK='-1'");
  env.set("RANK", "1");
  env.set("WORLD_SIZE", "0");
  expect_error("WORLD_SIZE='0'");
  env.set("WORLD_SIZE", "two");
  expect_error("WORLD_SIZE='two'");
  env.set("WORLD_SIZE", nullptr);  // RANK without WORLD_SIZE (and the reverse): refused
  expect_error("RANK=1 is set but WORLD_SIZE is not");
  env.set("RANK", nullptr);
  env.set("WORLD_SIZE", "2");
  expect_error("WORLD_SIZE=2 is set but RANK is not");
  env.set("RANK", "1");
  env.set("WORLD_SIZE", "2");
  env.set("LOCAL_RANK", "5");
  expect_error("LOCAL_RANK=5");
  env.set("LOCAL_RANK", "1");
  env.set("MASTER_PORT", "70000");
  expect_error("MASTER_PORT='70000'");
  env.set("MASTER_PORT", "0");
  expect_error("MASTER_PORT='0'");
  env.set("MASTER_PORT", "");  // empty means unset
  EXPECT_EQ(demp::dist::env_from_environment().port, 29500);
}

TEST(DistComm, SingleRankIsLocalAndCountsBytes) {
  Comm comm(Env{}, torch::kCPU, kTimeout);
  EXPECT_EQ(comm.backend_name(), "local");
  auto p = torch::ones({4}, torch::requires_grad());
  p.mutable_grad() = torch::full({4}, 3.0);
  auto q = torch::ones({2}, torch::requires_grad());
  comm.average_gradients({p, q});
  EXPECT_TRUE(torch::equal(p.grad(), torch::full({4}, 3.0)));
  ASSERT_TRUE(q.grad().defined());
  EXPECT_TRUE(torch::equal(q.grad(), torch::zeros({2})));
  EXPECT_EQ(comm.last_gradient_bytes(), 24u);
  auto t = torch::tensor({1, 2}, torch::kInt32);
  comm.all_reduce(t, ReduceOp::Sum);
  EXPECT_TRUE(torch::equal(t, torch::tensor({1, 2}, torch::kInt32)));
  EXPECT_EQ(comm.bytes_all_reduced(), 32u);
  EXPECT_TRUE(comm.all_equal({t}));
}

// Rank r's gradients: distinct per rank and per parameter, so a wrong offset or a missing
// division shows. Parameter 2 has a gradient only on rank 0 (the others count as zeros);
// parameter 3 has none anywhere; parameter 4 is double (its own bucket).
std::vector<torch::Tensor> make_params(int64_t rank) {
  std::vector<torch::Tensor> ps = {torch::zeros({3, 4}, torch::requires_grad()),
                                   torch::zeros({5}, torch::requires_grad()),
                                   torch::zeros({2, 2, 2}, torch::requires_grad()),
                                   torch::zeros({7}, torch::requires_grad()),
                                   torch::zeros({6}, torch::dtype(torch::kFloat64).requires_grad(true)),
                                   torch::zeros({1, 9}, torch::requires_grad())};
  for (size_t i = 0; i < ps.size(); ++i) {
    if (i == 3 || (i == 2 && rank != 0)) continue;
    auto g = torch::arange(ps[i].numel(), torch::TensorOptions().dtype(ps[i].dtype())).reshape(ps[i].sizes());
    ps[i].mutable_grad() = g * static_cast<double>(rank + 1) + static_cast<double>(10 * i);
  }
  return ps;
}

void check_average(int64_t world, int64_t bucket_bytes) {
  std::vector<torch::Tensor> expected;
  {
    auto sum = make_params(0);
    for (auto& p : sum) {
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    }
    for (int64_t r = 1; r < world; ++r) {
      auto other = make_params(r);
      for (size_t i = 0; i < sum.size(); ++i) {
        if (other[i].grad().defined()) sum[i].mutable_grad() += other[i].grad();
      }
    }
    for (auto& p : sum) expected.push_back(p.grad() / static_cast<double>(world));
  }
  uint64_t total = 0;
  for (const auto& p : make_params(0)) total += p.numel() * p.element_size();

  run_ranks(world, [&](Comm& comm) {
    EXPECT_EQ(comm.backend_name(), "gloo");
    auto ps = make_params(comm.rank());
    comm.average_gradients(ps, bucket_bytes);
    for (size_t i = 0; i < ps.size(); ++i) {
      ASSERT_TRUE(ps[i].grad().defined()) << "param " << i;
      EXPECT_EQ(ps[i].grad().sizes(), ps[i].sizes());
      EXPECT_TRUE(torch::allclose(ps[i].grad(), expected[i]))
          << "rank " << comm.rank() << " param " << i << "\n"
          << ps[i].grad() << "\n"
          << expected[i];
    }
    EXPECT_EQ(comm.last_gradient_bytes(), total);
    EXPECT_EQ(comm.bytes_all_reduced(), total);
    comm.average_gradients(ps, bucket_bytes);  // the mean of equal gradients is themselves
    for (size_t i = 0; i < ps.size(); ++i) EXPECT_TRUE(torch::allclose(ps[i].grad(), expected[i]));
    EXPECT_EQ(comm.last_gradient_bytes(), total);
    EXPECT_EQ(comm.bytes_all_reduced(), 2 * total);
  });
}

TEST(DistComm, AverageGradientsTwoRanksManyBuckets) {
  SKIP_WITHOUT_GLOO();
  check_average(2, 40);  // 40 bytes: nearly every parameter gets its own bucket
}

TEST(DistComm, AverageGradientsThreeRanksOneBucketPerDtype) {
  SKIP_WITHOUT_GLOO();
  check_average(3, int64_t{25} << 20);
}

// Averaging overlapped with backward gives what average_gradients gives after backward, on a
// real network's backward: many small buckets (so several start during backward), a parameter
// that gets no gradient, and new parameter tensors half-way (as after surgery: re-hooked).
TEST(DistComm, OverlappedAveragingEqualsAveragingAfterBackward) {
  SKIP_WITHOUT_GLOO();
  run_ranks(2, [](Comm& comm) {
    torch::manual_seed(0);  // the same initial weights on both ranks...
    auto make = [](int64_t in) {
      return std::vector<torch::Tensor>{
          torch::randn({3}).requires_grad_(),  // unused
          torch::randn({16, in}).requires_grad_(), torch::randn({16}).requires_grad_(),
          torch::randn({4, 16}).requires_grad_(), torch::randn({4}).requires_grad_()};
    };
    auto loss_of = [](const std::vector<torch::Tensor>& p, const torch::Tensor& x) {
      return torch::relu(x.matmul(p[1].t()) + p[2]).matmul(p[3].t()).add(p[4]).square().sum();
    };
    for (int64_t in : {8, 6}) {  // 6: "surgery" replaced every parameter tensor
      auto a = make(in);
      std::vector<torch::Tensor> b;
      for (const auto& t : a) b.push_back(t.detach().clone().requires_grad_());
      for (int step = 0; step < 3; ++step) {
        // ...and different data on each rank
        auto x =
            torch::randn({5, in}, demp::make_generator(static_cast<uint64_t>(comm.rank()) + 1,
                                                             demp::kMisc, static_cast<uint64_t>(step)));
        for (auto* ps : {&a, &b}) {
          for (auto& p : *ps) {
            if (p.grad().defined()) p.mutable_grad().zero_();
          }
        }
        comm.begin_gradients(a, /*bucket_bytes=*/64);
        loss_of(a, x).backward();
        comm.finish_gradients();
        const uint64_t overlapped = comm.last_gradient_bytes();
        // buckets did start while backward was still running (all but the unused parameter's)
        const auto [early, buckets] = comm.last_overlap();
        EXPECT_GE(buckets, 3u);
        EXPECT_EQ(early, buckets - 1);
        loss_of(b, x).backward();
        comm.average_gradients(b, 64);
        EXPECT_EQ(overlapped, comm.last_gradient_bytes());
        for (size_t i = 0; i < a.size(); ++i) {
          ASSERT_TRUE(a[i].grad().defined()) << i;
          EXPECT_TRUE(torch::equal(a[i].grad(), b[i].grad())) << "rank " << comm.rank() << " param " << i;
        }
        EXPECT_EQ(a[0].grad().abs().sum().item<float>(), 0.0f);  // unused: zeros
        EXPECT_GT(a[1].grad().abs().sum().item<float>(), 0.0f);
      }
      // both ranks hold the same (averaged) gradients although their data differed
      EXPECT_TRUE(comm.all_equal({a[1].grad(), a[3].grad()}));
    }
  });
}

// Synchronised BatchNorm over 2 ranks, each with half the batch, is BatchNorm on the whole batch:
// same outputs, same (averaged) gradients, same running statistics. Per-rank BatchNorm is not.
TEST(DistComm, SyncBatchNormIsTheFullBatchBatchNorm) {
  SKIP_WITHOUT_GLOO();
  const auto arch = demp::test::tiny_arch("resnet18");
  auto gen = demp::make_generator(3, demp::kMisc, 0);
  const auto x = torch::randn({16, 3, 16, 16}, gen, torch::kFloat);
  const auto y = torch::randint(5, {16}, gen, torch::kLong);
  demp::nn::Model ref(arch, 7);
  const auto ref_logits = ref.forward(x, true).detach();
  at::cross_entropy_loss(ref.forward(x, true), y).backward();  // second pass: stats updated twice
  const auto ref_params = ref.parameters();
  run_ranks(2, [&](Comm& comm) {
    demp::nn::Model m(arch, 7), plain(arch, 7);
    m.set_sync_batch_norm([&](const torch::Tensor& t) { return comm.sum_over_ranks(t); });
    const int64_t r = comm.rank();
    const auto xs = x.narrow(0, 8 * r, 8), ys = y.narrow(0, 8 * r, 8);
    const auto logits = m.forward(xs, true).detach();
    at::cross_entropy_loss(m.forward(xs, true), ys).backward();
    comm.average_gradients(m.parameters());
    const auto want = ref_logits.narrow(0, 8 * r, 8);
    EXPECT_LE((logits - want).abs().max().item<double>(), 1e-4) << "rank " << r;
    EXPECT_GT((plain.forward(xs, true) - want).abs().max().item<double>(), 1e-2)
        << "per-rank BN should differ";
    const auto ps = m.parameters();
    for (size_t i = 0; i < ps.size(); ++i) {
      const double scale = ref_params[i].grad().abs().max().item<double>() + 1e-6;
      EXPECT_LE((ps[i].grad() - ref_params[i].grad()).abs().max().item<double>() / scale, 1e-3)
          << "rank " << r << " parameter " << i;
    }
    for (size_t l = 0; l < m.layers().size(); ++l) {
      if (!m.layers()[l].running_mean.defined()) continue;
      EXPECT_TRUE(torch::allclose(m.layers()[l].running_mean, ref.layers()[l].running_mean, 1e-4, 1e-5)) << l;
      EXPECT_TRUE(torch::allclose(m.layers()[l].running_var, ref.layers()[l].running_var, 1e-4, 1e-5)) << l;
    }
  });
}

TEST(DistComm, AllReduceOpsAndDtypes) {
  SKIP_WITHOUT_GLOO();
  run_ranks(3, [](Comm& comm) {
    const int64_t r = comm.rank();
    auto i32 = [&] { return torch::tensor({static_cast<int>(r), static_cast<int>(-r), 10}, torch::kInt32); };
    auto t = i32();
    comm.all_reduce(t, ReduceOp::Sum);
    EXPECT_TRUE(torch::equal(t, torch::tensor({3, -3, 30}, torch::kInt32)));
    t = i32();
    comm.all_reduce(t, ReduceOp::Min);
    EXPECT_TRUE(torch::equal(t, torch::tensor({0, -2, 10}, torch::kInt32)));
    t = i32();
    comm.all_reduce(t, ReduceOp::Max);
    EXPECT_TRUE(torch::equal(t, torch::tensor({2, 0, 10}, torch::kInt32)));

    auto u = torch::tensor({static_cast<int>(200 + r), static_cast<int>(r)}, torch::kUInt8);
    comm.all_reduce(u, ReduceOp::Max);
    EXPECT_TRUE(torch::equal(u, torch::tensor({202, 2}, torch::kUInt8)));

    auto f = torch::full({2, 3}, 0.5 * static_cast<double>(r + 1));
    comm.all_reduce(f, ReduceOp::Sum);
    EXPECT_TRUE(torch::equal(f, torch::full({2, 3}, 3.0)));
    auto l = torch::tensor({int64_t{1} << 40}, torch::kInt64) * (r + 1);
    comm.all_reduce(l, ReduceOp::Min);
    EXPECT_EQ(l.item<int64_t>(), int64_t{1} << 40);

    auto b = torch::tensor({r == 1, true, false});
    auto b_all = b.clone();
    comm.all_reduce(b, ReduceOp::Max);
    comm.all_reduce(b_all, ReduceOp::Min);
    EXPECT_TRUE(torch::equal(b, torch::tensor({true, true, false})));
    EXPECT_TRUE(torch::equal(b_all, torch::tensor({false, true, false})));

    // A non-contiguous view is reduced in place.
    auto base = torch::arange(6, torch::kFloat32).reshape({2, 3}) * static_cast<double>(r + 1);
    auto view = base.t();
    comm.all_reduce(view, ReduceOp::Sum);
    EXPECT_TRUE(torch::equal(base, torch::arange(6, torch::kFloat32).reshape({2, 3}) * 6.0));

    const uint64_t expected_bytes = 3 * 12 + 2 + 24 + 8 + 3 + 3 + 24;
    EXPECT_EQ(comm.bytes_all_reduced(), expected_bytes);
  });
}

TEST(DistComm, BroadcastFromAnyRoot) {
  SKIP_WITHOUT_GLOO();
  run_ranks(3, [](Comm& comm) {
    const auto r = static_cast<double>(comm.rank());
    std::vector<torch::Tensor> ts = {torch::full({4}, r), torch::tensor({int64_t(comm.rank()) * 7}),
                                     torch::tensor({comm.rank() == 1, false})};
    auto base = torch::arange(6, torch::kFloat64).reshape({2, 3}) + r;
    ts.push_back(base.t());  // non-contiguous: received in place into base's storage
    comm.broadcast(ts, 1);
    EXPECT_TRUE(torch::equal(ts[0], torch::full({4}, 1.0)));
    EXPECT_EQ(ts[1].item<int64_t>(), 7);
    EXPECT_TRUE(torch::equal(ts[2], torch::tensor({true, false})));
    EXPECT_TRUE(torch::equal(base, torch::arange(6, torch::kFloat64).reshape({2, 3}) + 1));
    std::vector<torch::Tensor> one = {torch::full({2}, r)};
    comm.broadcast(one);  // root 0
    EXPECT_TRUE(torch::equal(one[0], torch::zeros({2})));
    comm.barrier();
    EXPECT_EQ(comm.bytes_all_reduced(), 0u);
    EXPECT_THROW(comm.broadcast(one, 3), demp::Error);  // checked locally on every rank
  });
}

TEST(DistComm, AllEqualDetectsAnyDifference) {
  SKIP_WITHOUT_GLOO();
  run_ranks(2, [](Comm& comm) {
    const bool r1 = comm.rank() == 1;
    auto a = torch::arange(10, torch::kFloat32);
    auto b = torch::tensor({1, 2, 3}, torch::kInt64);
    EXPECT_TRUE(comm.all_equal({a, b}));
    EXPECT_TRUE(comm.all_equal({}));
    auto a2 = a.clone();
    if (r1) a2[7] = 7.0001f;
    EXPECT_FALSE(comm.all_equal({a2, b}));
    // One bit: +0.0 and -0.0 compare equal as numbers but are not the same bits.
    auto z = torch::zeros({3});
    if (r1) z[1] = -0.0f;
    EXPECT_FALSE(comm.all_equal({z}));
    // Same bytes, different shape, dtype, or count.
    EXPECT_FALSE(comm.all_equal({r1 ? a.reshape({2, 5}) : a}));
    EXPECT_FALSE(comm.all_equal({r1 ? a.view(torch::kInt32) : a}));
    EXPECT_FALSE(comm.all_equal(r1 ? std::vector<torch::Tensor>{a} : std::vector<torch::Tensor>{a, b}));
    EXPECT_TRUE(comm.all_equal({a, b}));  // and the group still works afterwards
  });
}

TEST(DistComm, MissingPeerEndsWithErrorNotHang) {
  SKIP_WITHOUT_GLOO();
  const int port = demp::dist::find_free_port();
  auto t0 = Clock::now();
  std::string msg = error_of([&] { Comm c(env_for(0, 2, port), torch::kCPU, milliseconds(2000)); });
  EXPECT_LT(seconds_since(t0), 8.0);
  EXPECT_NE(
      msg.find("rank 0: only 1 of 2 ranks arrived at 127.0.0.1:" + std::to_string(port) + " within 2 s"),
      std::string::npos)
      << msg;
  EXPECT_NE(msg.find("hint: "), std::string::npos);

  // A non-zero rank with nobody hosting the rendezvous.
  t0 = Clock::now();
  msg = error_of([&] { Comm c(env_for(1, 2, port), torch::kCPU, milliseconds(2000)); });
  EXPECT_LT(seconds_since(t0), 8.0);
  EXPECT_NE(msg.find("rank 1: rank 0 did not arrive at 127.0.0.1:" + std::to_string(port)), std::string::npos)
      << msg;
}

// One rank leaves (its Comm is destroyed, as when its process exits); the other's next
// collective must fail with a demp::Error within the timeout instead of hanging.
void check_peer_leaves(int64_t leaver) {
  const int port = demp::dist::find_free_port();
  std::promise<void> left;
  auto left_future = left.get_future();
  std::string msg;
  double elapsed = 0;
  std::exception_ptr error;
  std::thread leaving([&] {
    try {
      if (leaver > 0) std::this_thread::sleep_for(milliseconds(100));  // see run_ranks
      Comm comm(env_for(leaver, 2, port), torch::kCPU, milliseconds(3000));
      auto t = torch::ones({4});
      comm.all_reduce(t, ReduceOp::Sum);
    } catch (...) {
      error = std::current_exception();
    }
    left.set_value();
  });
  {
    if (leaver == 0) std::this_thread::sleep_for(milliseconds(100));
    Comm comm(env_for(1 - leaver, 2, port), torch::kCPU, milliseconds(3000));
    auto t = torch::ones({4});
    comm.all_reduce(t, ReduceOp::Sum);
    EXPECT_TRUE(torch::equal(t, torch::full({4}, 2.0)));
    left_future.wait();
    auto t0 = Clock::now();
    msg = error_of([&] {
      auto big = torch::ones({1 << 16});
      comm.all_reduce(big, ReduceOp::Sum);
    });
    elapsed = seconds_since(t0);
  }
  leaving.join();
  if (error) std::rethrow_exception(error);
  std::cout << "  the error: " << msg << "\n";
  EXPECT_LT(elapsed, 6.0);
  EXPECT_NE(msg.find("rank " + std::to_string(1 - leaver) + ": all_reduce failed"), std::string::npos) << msg;
  EXPECT_NE(msg.find("a peer rank exited"), std::string::npos) << msg;
}

TEST(DistComm, PeerThatLeavesFailsTheOthersCollective) {
  SKIP_WITHOUT_GLOO();
  check_peer_leaves(1);
}

TEST(DistComm, StoreHostThatLeavesFailsTheOthersCollective) {
  SKIP_WITHOUT_GLOO();
  check_peer_leaves(0);
}

// ---------------------------------------------------------------------------------------------

TEST(DistLaunch, StartsRanksWithTorchrunEnvironment) {
  demp::test::TempDir dir;
  const std::string script = "echo \"$RANK $LOCAL_RANK $WORLD_SIZE $MASTER_ADDR $MASTER_PORT\" > " +
                             dir.path + "/rank$RANK; echo hello from $RANK; echo to stderr >&2";
  testing::internal::CaptureStderr();
  const int rc = demp::dist::launch_local({"/bin/sh", "-c", script}, 2, 23456);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(demp::read_file(dir.path + "/rank0"), "0 0 2 127.0.0.1 23456\n");
  EXPECT_EQ(demp::read_file(dir.path + "/rank1"), "1 1 2 127.0.0.1 23456\n");
  EXPECT_NE(err.find("[rank 1] hello from 1\n"), std::string::npos) << err;
  EXPECT_NE(err.find("[rank 1] to stderr\n"), std::string::npos) << err;
  EXPECT_EQ(err.find("[rank 0]"), std::string::npos) << err;  // rank 0's output is not rewritten
  EXPECT_EQ(err.find("exited with code"), std::string::npos) << err;

  // Port 0 picks a free one, the same for every rank.
  EXPECT_EQ(demp::dist::launch_local({"/bin/sh", "-c", script}, 3, 0), 0);
  const std::string p0 = demp::read_file(dir.path + "/rank0");
  EXPECT_EQ(p0.substr(0, 16), "0 0 3 127.0.0.1 ");
  EXPECT_NE(p0, "0 0 3 127.0.0.1 0\n");
  EXPECT_EQ(demp::read_file(dir.path + "/rank2").substr(16), p0.substr(16));
}

TEST(DistLaunch, FailingRankStopsTheOthers) {
  const std::string script = "if [ \"$RANK\" = 1 ]; then echo bye; exit 3; fi; exec sleep 60";
  testing::internal::CaptureStderr();
  auto t0 = Clock::now();
  const int rc = demp::dist::launch_local({"sh", "-c", script}, 2);
  const double elapsed = seconds_since(t0);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(rc, 3);
  EXPECT_LT(elapsed, 4.0);
  EXPECT_NE(err.find("rank 1 exited with code 3"), std::string::npos) << err;
  EXPECT_NE(err.find("[rank 1] bye"), std::string::npos) << err;
}

TEST(DistLaunch, KilledRankAndIgnoredSigtermEscalate) {
  // Rank 1 is killed by SIGKILL once rank 0 ignores SIGTERM, so rank 0 needs the SIGKILL that follows.
  demp::test::TempDir dir;
  const std::string ready = dir.path + "/ready";
  const std::string script = "if [ \"$RANK\" = 1 ]; then while [ ! -e " + ready +
                             " ]; do sleep 0.05; done; kill -9 $$; fi; trap '' TERM; touch " + ready +
                             "; exec sleep 60";
  testing::internal::CaptureStderr();
  auto t0 = Clock::now();
  const int rc = demp::dist::launch_local({"/bin/sh", "-c", script}, 2);
  const double elapsed = seconds_since(t0);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(rc, 128 + 9);
  EXPECT_GT(elapsed, 3.0);  // SIGTERM alone did not stop rank 0
  EXPECT_LT(elapsed, 15.0);
  EXPECT_NE(err.find("rank 1 exited with code 137 (killed by signal 9)"), std::string::npos) << err;
}

TEST(DistLaunch, MissingProgramIsAnError) {
  EXPECT_THROW(demp::dist::launch_local({"/nonexistent/demp"}, 2), demp::Error);
  EXPECT_THROW(demp::dist::launch_local({"/bin/true"}, 0), demp::Error);
  EXPECT_EQ(demp::dist::launch_local({"/bin/true"}, 1), 0);
}

}  // namespace
