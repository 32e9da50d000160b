#include "demp/train/context.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "demp/dist/comm.h"
#include "demp/train/run_dir.h"

namespace demp::train {

using nlohmann::json;

void TrainContext::log(const std::string& line, bool echo) const {
  if (run) {
    run->log(line, echo);
  } else if (echo) {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

int64_t TrainContext::rank() const { return comm ? comm->rank() : 0; }
int64_t TrainContext::world_size() const { return comm ? comm->world_size() : 1; }

void TrainContext::sync_buffers() {
  if (world_size() < 2) return;
  auto bufs = model.buffers();
  comm->broadcast(bufs, 0);
}

void TrainContext::all_reduce_max(torch::Tensor& t) {
  if (world_size() < 2) return;
  torch::Tensor d = t.to(device).contiguous();
  comm->all_reduce(d, dist::ReduceOp::Max);
  t.copy_(d);
}

namespace {

// Rank 0's keep sets, on every rank: sizes first, then the indices in one tensor.
prune::KeepSets broadcast_keep(dist::Comm& comm, const prune::KeepSets& keep, const torch::Device& dev) {
  const auto opts = torch::TensorOptions().dtype(torch::kLong);
  auto sizes = torch::empty({static_cast<int64_t>(keep.size())}, opts);
  int64_t total = 0;
  for (size_t g = 0; g < keep.size(); ++g) {
    sizes[static_cast<int64_t>(g)] = static_cast<int64_t>(keep[g].size());
    total += static_cast<int64_t>(keep[g].size());
  }
  std::vector<torch::Tensor> t{sizes.to(dev)};
  comm.broadcast(t, 0);
  sizes = t[0].cpu();
  total = sizes.sum().item<int64_t>();
  auto flat = torch::empty({std::max<int64_t>(1, total)}, opts);
  if (comm.rank() == 0) {
    int64_t k = 0;
    for (const auto& v : keep) {
      for (const int64_t u : v) flat[k++] = u;
    }
  }
  t = {flat.to(dev)};
  comm.broadcast(t, 0);
  flat = t[0].cpu();
  prune::KeepSets out(keep.size());
  const auto* p = flat.data_ptr<int64_t>();
  for (size_t g = 0; g < keep.size(); ++g) {
    const int64_t n = sizes[static_cast<int64_t>(g)].item<int64_t>();
    out[g].assign(p, p + n);
    p += n;
  }
  return out;
}

}  // namespace

std::vector<prune::GroupChange> TrainContext::remove_units(const prune::KeepSets& keep,
                                                           const std::string& why) {
  const int64_t units0 = model.arch().units(), params0 = model.arch().params();
  auto changes = world_size() > 1
                     ? prune::remove_units(model, &optimizer.state(), broadcast_keep(*comm, keep, device))
                     : prune::remove_units(model, &optimizer.state(), keep);
  if (changes.empty()) return changes;
  const auto& a = model.arch();
  log(fmt::format("prune step {} | {} | units {} -> {} | params {} -> {} | flops {}", step, why, units0,
                  a.units(), params0, a.params(), a.flops()),
      /*echo=*/cfg.progress != "none");
  json groups = json::object();
  for (const auto& c : changes) {
    log(fmt::format("prune step {} | group {} | {} -> {}", step, c.group, c.before, c.after));
    groups[c.group] = {c.before, c.after};
  }
  prune_events.push_back({{"step", step},
                          {"reason", why},
                          {"units_before", units0},
                          {"units_after", a.units()},
                          {"params_after", a.params()},
                          {"flops_after", a.flops()},
                          {"groups", groups}});
  return changes;
}

}  // namespace demp::train
