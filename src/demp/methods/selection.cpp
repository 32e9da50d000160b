#include "demp/methods/selection.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "demp/data/dataset.h"
#include "demp/nn/model.h"
#include "demp/train/trainer.h"

namespace demp::methods {

int64_t target_units(const nn::Model& model, double density) {
  const auto& a = model.arch();
  const int64_t groups = static_cast<int64_t>(a.prunable_groups().size());
  const int64_t k = std::llround(density * static_cast<double>(a.initial_units()));
  return std::max(groups, k);
}

prune::KeepSets keep_global_top(const nn::Model& model, const GroupScores& scores, int64_t k) {
  const auto& a = model.arch();
  prune::KeepSets keep(a.groups.size());
  std::vector<std::tuple<float, int, int64_t>> rest;  // (score, group, unit) of non-forced units
  for (int g : a.prunable_groups()) {
    const auto s = scores[g].to(torch::kFloat).contiguous();
    const float* p = s.data_ptr<float>();
    const int64_t best = s.argmax().item<int64_t>();
    keep[g].push_back(best);
    for (int64_t j = 0; j < s.size(0); ++j) {
      if (j != best) rest.emplace_back(p[j], g, j);
    }
  }
  const int64_t forced = static_cast<int64_t>(a.prunable_groups().size());
  const int64_t more = std::clamp<int64_t>(k - forced, 0, static_cast<int64_t>(rest.size()));
  // Highest scores first; ties broken by (group, unit) so the choice is deterministic.
  std::partial_sort(rest.begin(), rest.begin() + more, rest.end(), [](const auto& x, const auto& y) {
    if (std::get<0>(x) != std::get<0>(y)) return std::get<0>(x) > std::get<0>(y);
    return std::make_pair(std::get<1>(x), std::get<2>(x)) < std::make_pair(std::get<1>(y), std::get<2>(y));
  });
  for (int64_t i = 0; i < more; ++i) keep[std::get<1>(rest[i])].push_back(std::get<2>(rest[i]));
  for (auto& k2 : keep) std::sort(k2.begin(), k2.end());
  return keep;
}

prune::KeepSets keep_per_layer(const nn::Model& model, const GroupScores& scores, double density) {
  const auto& a = model.arch();
  prune::KeepSets keep(a.groups.size());
  for (int g : a.prunable_groups()) {
    const int64_t w = a.groups[g].width;
    const int64_t n = std::min(w, std::max<int64_t>(1, std::llround(density * static_cast<double>(a.groups[g].initial))));
    const auto idx = std::get<1>(scores[g].to(torch::kFloat).topk(n));
    auto sorted = std::get<0>(idx.sort());
    keep[g].assign(sorted.data_ptr<int64_t>(), sorted.data_ptr<int64_t>() + n);
  }
  return keep;
}

GroupScores gate_scores(const nn::Model& model, const Batches& batches, bool hessian) {
  const auto& a = model.arch();
  const auto opts = torch::TensorOptions().dtype(model.parameters()[0].scalar_type()).device(model.device());
  std::vector<torch::Tensor> gates(a.groups.size());
  std::vector<torch::Tensor> gate_list;
  std::vector<int> gate_group;
  for (int g : a.prunable_groups()) {
    gates[g] = torch::ones({a.groups[g].width}, opts).requires_grad_(true);
    gate_list.push_back(gates[g]);
    gate_group.push_back(g);
  }
  // Scoring must not move BatchNorm's running statistics.
  const auto buffers = model.buffers();
  std::vector<torch::Tensor> saved;
  for (const auto& b : buffers) saved.push_back(b.clone());
  std::vector<torch::Tensor> total(gate_list.size());
  for (const auto& [x, y] : batches) {
    const auto logits = model.forward(x.to(model.device()), /*train=*/true, nullptr, &gates);
    const auto loss = at::cross_entropy_loss(logits, y.to(model.device()));
    auto g = torch::autograd::grad({loss}, gate_list, {}, /*retain_graph=*/hessian,
                                   /*create_graph=*/hessian, /*allow_unused=*/true);
    std::vector<torch::Tensor> contrib = g;
    if (hessian) {
      // H g = ∂/∂c (g · stop_grad(g)): one Hessian-vector product through double backward.
      torch::Tensor z;
      for (const auto& gi : g) {
        if (!gi.defined()) continue;
        const auto term = (gi * gi.detach()).sum();
        z = z.defined() ? z + term : term;
      }
      contrib = torch::autograd::grad({z}, gate_list, {}, false, false, /*allow_unused=*/true);
    }
    for (size_t i = 0; i < total.size(); ++i) {
      if (!contrib[i].defined()) continue;
      const auto c = contrib[i].detach();
      total[i] = total[i].defined() ? total[i] + c : c;
    }
  }
  {
    torch::NoGradGuard ng;
    for (size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(saved[i]);
  }
  GroupScores out(a.groups.size());
  for (size_t i = 0; i < gate_list.size(); ++i) {
    out[gate_group[i]] = total[i].defined() ? total[i].abs().to(torch::kFloat).cpu()
                                            : torch::zeros({a.groups[gate_group[i]].width});
  }
  return out;
}

namespace {
// Sums a per-output-unit quantity over every layer that produces a group.
template <class F>
GroupScores per_producer(const nn::Model& model, F f) {
  torch::NoGradGuard ng;
  const auto& a = model.arch();
  GroupScores out(a.groups.size());
  for (size_t l = 0; l < a.layers.size(); ++l) {
    const int g = a.layers[l].out_group;
    if (!a.groups[g].prunable) continue;
    const auto s = f(a.layers[l], model.layers()[l]);
    if (!s.defined()) continue;
    out[g] = out[g].defined() ? out[g] + s : s;
  }
  for (int g : a.prunable_groups()) {
    if (!out[g].defined()) out[g] = torch::zeros({a.groups[g].width});
  }
  return out;
}
}  // namespace

GroupScores gamma_scores(const nn::Model& model) {
  return per_producer(model, [](const nn::Layer& l, const nn::LayerTensors& t) {
    return l.bn ? t.gamma.detach().abs().to(torch::kFloat).cpu() : torch::Tensor();
  });
}

GroupScores filter_l1_scores(const nn::Model& model) {
  return per_producer(model, [](const nn::Layer&, const nn::LayerTensors& t) {
    return t.weight.detach().abs().flatten(1).sum(1).to(torch::kFloat).cpu();
  });
}

GroupScores random_scores(const nn::Model& model, torch::Generator& gen) {
  const auto& a = model.arch();
  GroupScores out(a.groups.size());
  for (int g : a.prunable_groups()) out[g] = torch::rand({a.groups[g].width}, gen, torch::kFloat);
  return out;
}

Batches scoring_batches(train::TrainContext& ctx, int64_t n, int64_t first) {
  data::Batcher b(ctx.data.train, std::min<int64_t>(ctx.cfg.batch_size, ctx.data.train.size()),
                  static_cast<uint64_t>(ctx.cfg.seed), {});
  Batches out;
  for (int64_t i = 0; i < n; ++i) out.push_back(b.batch(first + i));
  return out;
}

std::vector<double> iterative_densities(double density, int64_t steps) {
  // As the authors' iterative_single_shot_pruning: one cut when D >= 0.5; otherwise 0.5, then
  // D - (D - 0.5)·0.5^i for i = 1, 2, ..., and D last.
  if (density >= 0.5 || steps <= 1) return {density};
  std::vector<double> d{0.5};
  for (int64_t i = 1; i + 1 < steps; ++i) {
    d.push_back(density - (density - 0.5) * std::pow(0.5, static_cast<double>(i)));
  }
  d.push_back(density);
  return d;
}

}  // namespace demp::methods
