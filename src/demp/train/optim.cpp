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

void init_state(std::vector<std::vector<torch::Tensor>>& state, const std::vector<torch::Tensor>& params,
                size_t per_param) {
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
  using Optimizer::step;
  void step(std::vector<torch::Tensor>& params) override {
    torch::NoGradGuard no_grad;
    if (params.empty()) return;
    init_state(state_, params, 1);
    auto g = grads_of(params);
    auto m = column(state_, 0);
    const double wd = opt_.weight_decay;
    const torch::Tensor& lr = lr_on(params[0].device());
    if (decoupled_ && wd != 0) at::_foreach_mul_(params, 1 - lr * wd);
    // The momentum buffers start at zero, so mu*m + g on the first step is g, as in PyTorch.
    at::_fused_sgd_(params, g, m, decoupled_ ? 0.0 : wd, opt_.momentum, lr, /*dampening=*/0.0,
                    /*nesterov=*/false, /*maximize=*/false, /*is_first_step=*/false);
    ++steps_;
  }

 private:
  bool decoupled_;
};

// AdamW on PyTorch's fused kernel. The step count is one device scalar, advanced on the device
// and handed to the kernel once per parameter (its interface), so that surgery never touches it
// and a captured step counts on replay.
class AdamW : public Optimizer {
 public:
  using Optimizer::Optimizer;
  using Optimizer::step;
  void step(std::vector<torch::Tensor>& params) override {
    torch::NoGradGuard no_grad;
    if (params.empty()) return;
    init_state(state_, params, 2);
    auto g = grads_of(params);
    auto m = column(state_, 0);
    auto v = column(state_, 1);
    const auto dev = params[0].device();
    if (!device_steps_.defined() || device_steps_.device() != dev) {
      device_steps_ = torch::full({}, static_cast<double>(steps_),
                                  torch::TensorOptions().dtype(torch::kFloat).device(dev));
    }
    ++steps_;
    device_steps_.add_(1);
    const std::vector<torch::Tensor> counts(params.size(), device_steps_);
    at::_fused_adamw_(params, g, m, v, /*max_exp_avg_sqs=*/{}, counts, lr_on(dev), opt_.beta1, opt_.beta2,
                      opt_.weight_decay, opt_.eps, /*amsgrad=*/false,
                      /*maximize=*/false);
  }
};

}  // namespace

void Optimizer::set_lr(double lr) {
  lr_ = lr;
  if (lr_tensor_.defined()) lr_tensor_.fill_(lr);
}

const torch::Tensor& Optimizer::lr_on(const torch::Device& device) {
  if (!lr_tensor_.defined() || lr_tensor_.device() != device) {
    // The CUDA fused kernels read a float32 rate; on the CPU they take the tensor's value as a
    // double, so keep full precision there.
    lr_tensor_ = torch::full(
        {}, lr_,
        torch::TensorOptions().dtype(device.is_cuda() ? torch::kFloat : torch::kDouble).device(device));
  }
  return lr_tensor_;
}

std::unique_ptr<Optimizer> make_optimizer(const OptimOptions& o) {
  if (o.name == "sgd") return std::make_unique<Sgd>(o, false);
  if (o.name == "sgdw") return std::make_unique<Sgd>(o, true);
  if (o.name == "adamw") return std::make_unique<AdamW>(o);
  throw Error("unknown optimizer '" + o.name + "'", "use one of: sgd, sgdw, adamw");
}

}  // namespace demp::train
