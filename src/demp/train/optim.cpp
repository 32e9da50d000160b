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
    torch::Tensor x = p.grad().defined() ? p.grad() : torch::zeros_like(p);
    // The fused kernels walk parameter, gradient and state as flat memory: layouts must agree.
    if (x.strides() != p.strides()) x = at::empty_like(p).copy_(x);
    g.push_back(x);
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

// Momentum SGD on PyTorch's fused multi-tensor kernel (one pass over each tensor: on the CPU
// this keeps a parameter, its gradient and its momentum in cache, which measurably beats one
// _foreach_ pass per operation). decoupled=false: PyTorch's SGD (decay added to the gradient
// before momentum); decoupled=true: "SGDW" of the DemP reference, m <- mu*m + g;
// p <- p - lr*(m + wd*p), computed as p <- p*(1 - lr*wd) followed by the fused step with wd = 0.
class Sgd : public Optimizer {
 public:
  Sgd(OptimOptions o, bool decoupled) : Optimizer(std::move(o)), decoupled_(decoupled) {}
  void step(std::vector<torch::Tensor>& params, double lr) override {
    torch::NoGradGuard no_grad;
    init_state(state_, params, 1);
    auto g = grads_of(params);
    auto m = column(state_, 0);
    const double wd = opt_.weight_decay;
    if (decoupled_ && wd != 0) at::_foreach_mul_(params, 1 - lr * wd);
    // The momentum buffers start at zero, so mu*m + g on the first step is g, as in PyTorch.
    at::_fused_sgd_(params, g, m, decoupled_ ? 0.0 : wd, opt_.momentum, lr, /*dampening=*/0.0,
                    /*nesterov=*/false, /*maximize=*/false, /*is_first_step=*/false);
    ++steps_;
  }

 private:
  bool decoupled_;
};

// AdamW on PyTorch's fused kernel; the step count lives in steps_ and is handed to the kernel as
// per-parameter scalars (its interface), so surgery never has to touch it.
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
    if (step_tensors_.size() != params.size() ||
        (!params.empty() && step_tensors_[0].device() != params[0].device())) {
      step_tensors_.clear();
      for (const auto& p : params) {
        step_tensors_.push_back(torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat).device(p.device())));
      }
    }
    for (auto& t : step_tensors_) t.fill_(static_cast<double>(steps_));
    at::_fused_adamw_(params, g, m, v, /*max_exp_avg_sqs=*/{}, step_tensors_, lr, opt_.beta1,
                      opt_.beta2, opt_.weight_decay, opt_.eps, /*amsgrad=*/false,
                      /*maximize=*/false);
  }

 private:
  std::vector<torch::Tensor> step_tensors_;
};

}  // namespace

std::unique_ptr<Optimizer> make_optimizer(const OptimOptions& o) {
  if (o.name == "sgd") return std::make_unique<Sgd>(o, false);
  if (o.name == "sgdw") return std::make_unique<Sgd>(o, true);
  if (o.name == "adamw") return std::make_unique<AdamW>(o);
  throw Error("unknown optimizer '" + o.name + "'", "use one of: sgd, sgdw, adamw");
}

}  // namespace demp::train
