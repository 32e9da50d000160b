#include "demp/train/optim.h"

#include <torch/torch.h>

#include <cmath>

#include "demp/common/error.h"

namespace demp::train {
namespace {

std::vector<torch::Tensor> grads_of(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> g;
  g.reserve(params.size());
  for (const auto& p : params) {
    g.push_back(p.grad().defined() ? p.grad() : torch::zeros_like(p));
  }
  return g;
}

std::vector<torch::Tensor> column(std::vector<std::vector<torch::Tensor>>& state, size_t k) {
  std::vector<torch::Tensor> out;
  out.reserve(state.size());
  for (auto& s : state) out.push_back(s[k]);
  return out;
}

void init_state(std::vector<std::vector<torch::Tensor>>& state,
                const std::vector<torch::Tensor>& params, size_t per_param) {
  if (state.size() == params.size()) return;
  state.clear();
  for (const auto& p : params) {
    std::vector<torch::Tensor> s;
    for (size_t k = 0; k < per_param; ++k) s.push_back(torch::zeros_like(p).detach());
    state.push_back(s);
  }
}

// Momentum SGD. decoupled=false: PyTorch's SGD (decay added to the gradient before momentum);
// decoupled=true: "SGDW" of the DemP reference, m <- mu*m + g; p <- p - lr*(m + wd*p).
class Sgd : public Optimizer {
 public:
  Sgd(OptimOptions o, bool decoupled) : Optimizer(std::move(o)), decoupled_(decoupled) {}
  void step(std::vector<torch::Tensor>& params, double lr) override {
    torch::NoGradGuard no_grad;
    init_state(state_, params, 1);
    auto g = grads_of(params);
    auto m = column(state_, 0);
    const double wd = opt_.weight_decay;
    if (!decoupled_ && wd != 0) g = at::_foreach_add(g, params, wd);
    at::_foreach_mul_(m, opt_.momentum);
    at::_foreach_add_(m, g);
    if (decoupled_ && wd != 0) {
      auto upd = at::_foreach_add(m, params, wd);
      at::_foreach_add_(params, upd, -lr);
    } else {
      at::_foreach_add_(params, m, -lr);
    }
    ++steps_;
  }

 private:
  bool decoupled_;
};

class AdamW : public Optimizer {
 public:
  using Optimizer::Optimizer;
  void step(std::vector<torch::Tensor>& params, double lr) override {
    torch::NoGradGuard no_grad;
    init_state(state_, params, 2);
    auto g = grads_of(params);
    auto m = column(state_, 0);
    auto v = column(state_, 1);
    ++steps_;
    const double b1 = opt_.beta1, b2 = opt_.beta2;
    const double bc1 = 1 - std::pow(b1, static_cast<double>(steps_));
    const double bc2 = 1 - std::pow(b2, static_cast<double>(steps_));
    if (opt_.weight_decay != 0) at::_foreach_mul_(params, 1 - lr * opt_.weight_decay);
    at::_foreach_lerp_(m, g, 1 - b1);
    at::_foreach_mul_(v, b2);
    at::_foreach_addcmul_(v, g, g, 1 - b2);
    auto denom = at::_foreach_sqrt(v);
    at::_foreach_div_(denom, std::sqrt(bc2));
    at::_foreach_add_(denom, opt_.eps);
    at::_foreach_addcdiv_(params, m, denom, -lr / bc1);
  }
};

}  // namespace

std::unique_ptr<Optimizer> make_optimizer(const OptimOptions& o) {
  if (o.name == "sgd") return std::make_unique<Sgd>(o, false);
  if (o.name == "sgdw") return std::make_unique<Sgd>(o, true);
  if (o.name == "adamw") return std::make_unique<AdamW>(o);
  throw Error("unknown optimizer '" + o.name + "'", "use one of: sgd, sgdw, adamw");
}

}  // namespace demp::train
