#include "demp/prune/surgery.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <unordered_map>

#include "demp/common/error.h"
#include "demp/nn/model.h"

namespace demp::prune {

namespace {

// Slices a parameter-shaped tensor: dim 0 by `out` (if defined), dim 1 by `in` (if defined).
torch::Tensor slice(const torch::Tensor& t, const torch::Tensor& out, const torch::Tensor& in) {
  torch::Tensor r = t;
  if (out.defined()) r = r.index_select(0, out.to(r.device()));
  if (in.defined()) r = r.index_select(1, in.to(r.device()));
  return r.contiguous(t.suggest_memory_format());  // keep channels-last weights channels-last
}

}  // namespace

std::vector<GroupChange> remove_units(nn::Model& model, OptimizerState* optimizer_state,
                                      const KeepSets& keep) {
  nn::Arch& arch = model.mutable_arch();
  const size_t ng = arch.groups.size();
  if (keep.size() > ng) throw Error("keep sets name more groups than the model has");

  // Which groups change, and their keep indices as tensors.
  std::vector<torch::Tensor> idx(ng);
  std::vector<GroupChange> changes;
  for (size_t g = 0; g < keep.size(); ++g) {
    const auto& k = keep[g];
    const int64_t w = arch.groups[g].width;
    if (k.empty() || static_cast<int64_t>(k.size()) == w) continue;
    if (!arch.groups[g].prunable) {
      throw Error("group '" + arch.groups[g].name + "' cannot be pruned");
    }
    for (size_t i = 0; i < k.size(); ++i) {
      if (k[i] < 0 || k[i] >= w || (i > 0 && k[i] <= k[i - 1])) {
        throw Error(fmt::format("keep set of group '{}' is not sorted, unique and in [0, {})",
                                arch.groups[g].name, w));
      }
    }
    idx[g] = torch::tensor(k, torch::kLong);
    changes.push_back({arch.groups[g].name, w, static_cast<int64_t>(k.size())});
  }
  if (changes.empty()) return changes;

  // Parameters, their gradients and optimizer state, sliced alike.
  torch::NoGradGuard no_grad;
  const auto infos = model.param_infos();
  auto params = model.parameters();
  OptimizerState* state = optimizer_state && !optimizer_state->empty() ? optimizer_state : nullptr;
  if (state && state->size() != params.size()) {
    throw Error("optimizer state does not match the model's parameters");
  }
  std::unordered_map<int64_t, torch::Tensor> block_idx;  // expanded keep sets for flatten inputs
  for (size_t i = 0; i < infos.size(); ++i) {
    const nn::ParamInfo& pi = infos[i];
    const torch::Tensor out = idx[pi.out_group];
    torch::Tensor in;
    if (pi.in_group >= 0 && idx[pi.in_group].defined()) {
      in = idx[pi.in_group];
      if (pi.in_block > 1) {
        // Linear after flatten: unit c owns features [c*block, (c+1)*block).
        in = (in.unsqueeze(1) * pi.in_block + torch::arange(pi.in_block).unsqueeze(0)).flatten();
      }
    }
    if (!out.defined() && !in.defined()) continue;
    const torch::Tensor& p = params[i];
    torch::Tensor np = slice(p.detach(), out, in).requires_grad_(p.requires_grad());
    if (p.grad().defined()) np.mutable_grad() = slice(p.grad(), out, in);
    if (state) {
      for (auto& s : (*state)[i]) {
        if (s.defined() && s.sizes() == p.sizes()) s = slice(s, out, in);
      }
    }
    nn::LayerTensors& lt = model.layers()[pi.layer];
    switch (pi.field) {
      case nn::ParamInfo::Weight:
        lt.weight = np;
        break;
      case nn::ParamInfo::Bias:
        lt.bias = np;
        break;
      case nn::ParamInfo::Gamma:
        lt.gamma = np;
        break;
      case nn::ParamInfo::Beta:
        lt.beta = np;
        break;
    }
  }
  // BatchNorm running statistics follow their layer's output group.
  for (size_t l = 0; l < arch.layers.size(); ++l) {
    const auto& out = idx[arch.layers[l].out_group];
    if (!arch.layers[l].bn || !out.defined()) continue;
    auto& lt = model.layers()[l];
    lt.running_mean = slice(lt.running_mean, out, {});
    lt.running_var = slice(lt.running_var, out, {});
  }
  // Skip maps: keep the entries whose source and target both survive, renumbered.
  for (auto& s : arch.skips) {
    if (!idx[s.in_group].defined() && !idx[s.out_group].defined()) continue;
    auto renumber = [&](int g) {
      std::vector<int64_t> pos(arch.groups[g].width, -1);
      if (!idx[g].defined()) {
        for (size_t i = 0; i < pos.size(); ++i) pos[i] = static_cast<int64_t>(i);
      } else {
        const auto& k = keep[g];
        for (size_t i = 0; i < k.size(); ++i) pos[k[i]] = static_cast<int64_t>(i);
      }
      return pos;
    };
    const auto ps = renumber(s.in_group), pd = renumber(s.out_group);
    std::vector<int64_t> src, dst;
    for (size_t m = 0; m < s.src.size(); ++m) {
      if (ps[s.src[m]] >= 0 && pd[s.dst[m]] >= 0) {
        src.push_back(ps[s.src[m]]);
        dst.push_back(pd[s.dst[m]]);
      }
    }
    s.src = std::move(src);
    s.dst = std::move(dst);
  }
  for (size_t g = 0; g < ng; ++g) {
    if (idx[g].defined()) arch.groups[g].width = idx[g].size(0);
  }
  model.refresh_skips();
  model.apply_memory_format();
  model.validate();
  return changes;
}

ScanResult scan_dead(const nn::Model& model, const torch::Tensor& images, int64_t batch, double eps,
                     const std::vector<double>& quasi_eps,
                     const std::function<void(torch::Tensor&)>& combine_max) {
  torch::NoGradGuard no_grad;
  const auto& arch = model.arch();
  const size_t ng = arch.groups.size();
  ScanResult r;
  r.dead.resize(ng);
  r.activity.resize(ng);
  std::vector<torch::Tensor> max_act(ng);
  std::vector<torch::Tensor> outs;
  const int64_t n = images.size(0);
  if (n == 0) throw Error("the check set is empty");
  for (int64_t s = 0; s < n; s += batch) {
    const auto x = images.slice(0, s, std::min(n, s + batch)).to(model.device());
    model.forward(x, /*train=*/false, &outs);
    for (size_t g = 0; g < ng; ++g) {
      if (!arch.groups[g].prunable || !outs[g].defined()) continue;
      const auto& o = outs[g];
      torch::Tensor a = o.dim() == 4 ? o.sum({0, 2, 3}) : o.sum(0);
      a = a.to(torch::kFloat).cpu();
      max_act[g] = max_act[g].defined() ? torch::maximum(max_act[g], a) : a;
    }
  }
  r.quasi_dead.assign(quasi_eps.size(), 0);
  if (combine_max) {
    for (size_t g = 0; g < ng; ++g) {
      if (max_act[g].defined()) combine_max(max_act[g]);
    }
  }
  for (size_t g = 0; g < ng; ++g) {
    if (!max_act[g].defined()) continue;
    r.activity[g] = max_act[g];
    r.dead[g] = max_act[g] <= eps;
    r.dead_total += r.dead[g].sum().item<int64_t>();
    r.units_total += max_act[g].size(0);
    for (size_t e = 0; e < quasi_eps.size(); ++e) {
      r.quasi_dead[e] += (max_act[g] <= quasi_eps[e]).sum().item<int64_t>();
    }
  }
  return r;
}

KeepSets keep_live(const nn::Model& model, const ScanResult& scan, int64_t multiple) {
  KeepSets keep(model.arch().groups.size());
  for (size_t g = 0; g < keep.size(); ++g) {
    if (!scan.dead[g].defined()) continue;
    const int64_t width = scan.dead[g].size(0);
    const int64_t live = width - scan.dead[g].sum().item<int64_t>();
    int64_t n = std::max<int64_t>(1, live);
    if (multiple > 1) n = std::min(width, (n + multiple - 1) / multiple * multiple);
    // Live units first, then the most active dead ones; activity breaks no tie among the live.
    const auto order = std::get<1>(torch::sort(
        scan.activity[g] + scan.dead[g].logical_not().to(torch::kFloat) * 1e30f, 0, /*descending=*/true));
    const auto chosen = std::get<0>(order.slice(0, 0, n).sort());
    const auto* p = chosen.data_ptr<int64_t>();
    keep[g].assign(p, p + n);
  }
  return keep;
}

std::string changes_table(const std::vector<GroupChange>& changes) {
  std::string s;
  for (const auto& c : changes) s += fmt::format("  {:<20} {:>6} -> {:<6}\n", c.group, c.before, c.after);
  return s;
}

}  // namespace demp::prune
