#include "demp/train/evaluate.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>

#include "demp/common/error.h"

namespace demp::train {

EvalResult evaluate(const nn::Model& model, const data::Dataset& ds, int64_t batch,
                    const torch::Device& device) {
  if (batch <= 0)
    throw Error(fmt::format("evaluation batch size must be positive, got {}", batch), "e.g. 1000");
  torch::NoGradGuard no_grad;
  EvalResult r;
  const int64_t n = ds.size();
  if (n == 0) return r;
  torch::Tensor correct = torch::zeros({}, torch::TensorOptions().dtype(torch::kLong).device(device));
  torch::Tensor loss = torch::zeros({}, torch::TensorOptions().dtype(torch::kDouble).device(device));
  for (int64_t s = 0; s < n; s += batch) {
    const int64_t e = std::min(n, s + batch);
    const auto [xs, ys] = data::eval_slice(ds, s, e);
    const auto x = xs.to(device, /*non_blocking=*/true);
    const auto y = ys.to(device, true);
    const auto logits = model.forward(x, false);
    correct += logits.argmax(1).eq(y).sum();
    loss += at::cross_entropy_loss(logits.to(torch::kFloat), y, {}, at::Reduction::Sum).to(torch::kDouble);
  }
  r.n = n;
  r.accuracy = static_cast<double>(correct.item<int64_t>()) / static_cast<double>(n);
  r.loss = loss.item<double>() / static_cast<double>(n);
  return r;
}

}  // namespace demp::train
