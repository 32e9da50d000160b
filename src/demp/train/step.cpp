#include "demp/train/step.h"

#include <ATen/autocast_mode.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <optional>
#include <vector>

#ifdef DEMP_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "demp/common/error.h"
#include "demp/train/hooks.h"
#include "demp/train/trainer.h"

namespace demp::train {

bool cuda_graphs_built() {
#ifdef DEMP_CUDA
  return true;
#else
  return false;
#endif
}

Precision parse_precision(const std::string& spec, const torch::Device& device) {
  if (spec == "auto") return device.is_cuda() ? Precision::Bf16 : Precision::Fp32;
  if (spec == "bf16") return Precision::Bf16;
  if (spec == "fp32") return Precision::Fp32;
  throw Error("unknown --precision '" + spec + "'", "use auto, bf16 or fp32");
}

std::string precision_name(Precision p) { return p == Precision::Bf16 ? "bf16" : "fp32"; }

bool parse_graph(const std::string& spec, const torch::Device& device) {
  if (spec == "off") return false;
  if (spec == "auto") return device.is_cuda() && cuda_graphs_built();
  if (spec == "on") {
    if (!device.is_cuda()) {
      throw Error("--graph on needs a CUDA device (CUDA graphs do not exist on the CPU)",
                  "use --device cuda, or --graph auto/off");
    }
    if (!cuda_graphs_built()) {
      throw Error("--graph on: this demp was built against a LibTorch without CUDA",
                  "rebuild against the CUDA LibTorch of PyTorch's wheel (scripts/setup)");
    }
    return true;
  }
  throw Error("unknown --graph '" + spec + "'", "use auto, on or off");
}

namespace {

// bf16 autocast for the forward pass and the loss, like torch.autocast(dtype=torch.bfloat16).
// The weight-cast cache stays off: a captured graph must recast the (updated) weights on every
// replay, and eager steps then do the same work.
class Autocast {
 public:
  Autocast(bool on, const torch::Device& device) : on_(on), type_(device.type()) {
    if (!on_) return;
    enabled_ = at::autocast::is_autocast_enabled(type_);
    dtype_ = at::autocast::get_autocast_dtype(type_);
    cache_ = at::autocast::is_autocast_cache_enabled();
    at::autocast::set_autocast_enabled(type_, true);
    at::autocast::set_autocast_dtype(type_, at::kBFloat16);
    at::autocast::set_autocast_cache_enabled(false);
  }
  ~Autocast() {
    if (!on_) return;
    at::autocast::set_autocast_enabled(type_, enabled_);
    at::autocast::set_autocast_dtype(type_, dtype_);
    at::autocast::set_autocast_cache_enabled(cache_);
  }

 private:
  bool on_;
  at::DeviceType type_;
  bool enabled_ = false, cache_ = true;
  at::ScalarType dtype_ = at::kBFloat16;
};

// Addresses of every tensor a captured graph reads or writes in place: when any changes (surgery,
// a restored optimizer state), the graph no longer fits and is captured again.
std::vector<const void*> step_tensor_addresses(const std::vector<torch::Tensor>& params, Optimizer& opt) {
  std::vector<const void*> out;
  for (const auto& p : params) {
    out.push_back(p.data_ptr());
    out.push_back(p.grad().defined() ? p.grad().data_ptr() : nullptr);
  }
  for (const auto& s : opt.state()) {
    for (const auto& t : s) out.push_back(t.defined() ? t.data_ptr() : nullptr);
  }
  return out;
}

}  // namespace

struct StepRunner::Impl {
  TrainContext& ctx;
  Method& method;
  StepOptions o;
  torch::Tensor loss_sum, correct_sum, last_loss;
  int64_t seen = 0, eager_since_change = 0, captures = 0, replays = 0;
  bool replayed = false;
  std::vector<const void*> captured_with;
#ifdef DEMP_CUDA
  std::optional<c10::cuda::CUDAStreamGuard> stream_guard;
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  torch::Tensor static_x, static_y;
#endif

  Impl(TrainContext& c, Method& m, StepOptions opt) : ctx(c), method(m), o(opt) {
    const auto dev = ctx.device;
    loss_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kDouble).device(dev));
    correct_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kLong).device(dev));
    last_loss = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat).device(dev));
    if (o.graph && !dev.is_cuda()) {
      throw Error("CUDA graphs need a CUDA device", "use --graph off on the CPU");
    }
#ifdef DEMP_CUDA
    if (dev.is_cuda()) {
      // Work queued so far on the old stream (data moved to the device) finishes first.
      c10::cuda::getCurrentCUDAStream(dev.index()).synchronize();
      stream_guard.emplace(c10::cuda::getStreamFromPool(false, dev.index()));
    }
#else
    if (o.graph) throw Error("this demp was built without CUDA graphs", "use --graph off");
#endif
  }

  ~Impl() {
#ifdef DEMP_CUDA
    graph.reset();
    if (stream_guard) c10::cuda::getCurrentCUDAStream(ctx.device.index()).synchronize();
#endif
  }

  // The step itself. Only device work: this is what a graph records.
  void body(const torch::Tensor& x, const torch::Tensor& y) {
    auto params = ctx.model.parameters();
    for (auto& p : params) {
      if (p.grad().defined()) p.mutable_grad().zero_();
    }
    torch::Tensor logits, ce;
    {
      Autocast ac(o.precision == Precision::Bf16, ctx.device);
      logits = ctx.model.forward(x, /*train=*/true);
      ce = at::cross_entropy_loss(logits, y, {}, at::Reduction::Mean, -100, o.label_smoothing);
    }
    torch::Tensor loss = ce;
    const auto extra = method.extra_loss(ctx);
    if (extra.defined()) loss = loss + extra;
    if (o.before_backward) o.before_backward(params);
    loss.backward();
    if (o.sync_gradients) o.sync_gradients(params);
    method.after_backward(ctx);
    ctx.optimizer.step(params);
    method.after_step(ctx);
    torch::NoGradGuard no_grad;
    loss_sum.add_(ce.detach().to(torch::kDouble) * x.size(0));
    correct_sum.add_(logits.detach().argmax(1).eq(y).sum());
    last_loss.copy_(loss.detach());
  }

  void run(const torch::Tensor& x, const torch::Tensor& y, double lr) {
    method.before_step(ctx);
    ctx.optimizer.set_lr(lr);
    seen += x.size(0);
    replayed = false;
    if (!o.graph) {
      body(x, y);
      return;
    }
#ifdef DEMP_CUDA
    const auto addresses = step_tensor_addresses(ctx.model.parameters(), ctx.optimizer);
    if (graph && (addresses != captured_with || !static_x.sizes().equals(x.sizes()) ||
                  !static_y.sizes().equals(y.sizes()))) {
      graph.reset();
      eager_since_change = 0;
    }
    if (graph) {
      static_x.copy_(x, /*non_blocking=*/true);
      static_y.copy_(y, true);
      graph->replay();
      ctx.optimizer.count_replayed_step();
      ++replays;
      replayed = true;
      return;
    }
    if (eager_since_change < o.warmup_steps) {
      // Warm-up on the capture stream: cuDNN's autotuner and cuBLAS's workspaces see the shapes
      // before capture, and the gradients and optimizer state get their (static) storage.
      body(x, y);
      ++eager_since_change;
      return;
    }
    static_x = x.clone();
    static_y = y.clone();
    graph = std::make_unique<at::cuda::CUDAGraph>();
    for (const auto& g : method.step_generators()) graph->register_generator_state(g);
    graph->capture_begin();
    try {
      body(static_x, static_y);
    } catch (...) {
      try {
        graph->capture_end();
      } catch (...) {
      }
      graph.reset();
      throw;
    }
    graph->capture_end();
    captured_with = step_tensor_addresses(ctx.model.parameters(), ctx.optimizer);
    ++captures;
    // Capturing records the work without doing it: this step is the first replay.
    graph->replay();
    replayed = true;
#endif
  }
};

StepRunner::StepRunner(TrainContext& ctx, Method& method, StepOptions options)
    : impl_(std::make_unique<Impl>(ctx, method, options)) {
  if (options.graph && !method.graph_safe()) {
    impl_->o.graph = false;
    ctx.log("graph off | method " + method.name() + " is not graph-safe: steps run eagerly", true);
  }
  if (options.graph && options.sync_gradients) {
    // Capturing the process group's collectives is not attempted: a data-parallel step is eager.
    impl_->o.graph = false;
    ctx.log("graph off | data-parallel steps run eagerly", true);
  }
}

StepRunner::~StepRunner() = default;

void StepRunner::run(const torch::Tensor& x, const torch::Tensor& y, double lr) { impl_->run(x, y, lr); }
const torch::Tensor& StepRunner::loss_sum() const { return impl_->loss_sum; }
const torch::Tensor& StepRunner::correct_sum() const { return impl_->correct_sum; }
int64_t StepRunner::seen() const { return impl_->seen; }
void StepRunner::reset_sums() {
  impl_->loss_sum.zero_();
  impl_->correct_sum.zero_();
  impl_->seen = 0;
}
const torch::Tensor& StepRunner::last_loss() const { return impl_->last_loss; }
bool StepRunner::last_step_replayed() const { return impl_->replayed; }
int64_t StepRunner::captures() const { return impl_->captures; }
int64_t StepRunner::replays() const { return impl_->replays; }

}  // namespace demp::train
