#include "demp/nn/model.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <cmath>

#include "demp/common/error.h"
#include "demp/common/seeds.h"

namespace demp::nn {

std::string ParamInfo::name() const {
  static const char* f[] = {"weight", "bias", "bn.weight", "bn.bias"};
  return fmt::format("layer{}.{}", layer, f[field]);
}

namespace {

std::vector<int64_t> weight_shape(const Arch& a, const Layer& l) {
  const int64_t out = a.groups[l.out_group].width, in = a.groups[l.in_group].width * l.in_block;
  if (l.kind == LayerKind::Conv) return {out, a.groups[l.in_group].width, l.kernel, l.kernel};
  return {out, in};
}

}  // namespace

Model::Model(Arch arch, uint64_t seed) : arch_(std::move(arch)) {
  auto gen = make_generator(seed, kInit, 0);
  torch::NoGradGuard no_grad;
  for (const auto& l : arch_.layers) {
    LayerTensors t;
    const auto shape = weight_shape(arch_, l);
    const int64_t out = shape[0];
    if (l.kind == LayerKind::Conv) {
      // Kaiming normal, fan_out, ReLU gain (torchvision's ResNet/VGG init).
      const double fan_out = static_cast<double>(out * l.kernel * l.kernel);
      t.weight = torch::randn(shape, gen, torch::kFloat) * std::sqrt(2.0 / fan_out);
    } else {
      // PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
      const double bound = 1.0 / std::sqrt(static_cast<double>(shape[1]));
      t.weight = torch::rand(shape, gen, torch::kFloat) * (2 * bound) - bound;
    }
    if (l.bias) {
      const int64_t fan_in = l.kind == LayerKind::Conv ? shape[1] * l.kernel * l.kernel : shape[1];
      const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
      t.bias = torch::rand({out}, gen, torch::kFloat) * (2 * bound) - bound;
    }
    if (l.bn) {
      t.gamma = l.zero_init_bn ? torch::zeros({out}) : torch::ones({out});
      t.beta = torch::zeros({out});
      t.running_mean = torch::zeros({out});
      t.running_var = torch::ones({out});
    }
    layers_.push_back(t);
  }
  for (auto p : parameters()) p.requires_grad_(true);
  refresh_skips();
  set_channels_last(true);
}

Model::Model(Arch arch, std::vector<LayerTensors> tensors)
    : arch_(std::move(arch)), layers_(std::move(tensors)) {
  validate();
  for (auto p : parameters()) p.requires_grad_(true);
  refresh_skips();
  set_channels_last(true);
}

void Model::set_channels_last(bool on) {
  bool convs = false;
  for (const auto& l : arch_.layers) convs = convs || l.kind == LayerKind::Conv;
  channels_last_ = on && convs;
  apply_memory_format();
  refresh_skips();
}

void Model::apply_memory_format() {
  const auto fmt = channels_last_ ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < layers_.size(); ++i) {
    auto& w = layers_[i].weight;
    if (arch_.layers[i].kind != LayerKind::Conv || w.is_contiguous(fmt)) continue;
    // Same values, same leaf identity semantics: a fresh leaf in the new layout.
    auto g = w.grad();
    w = w.detach().contiguous(fmt).requires_grad_(true);
    if (g.defined()) w.mutable_grad() = g.contiguous(fmt);
  }
}

void Model::validate() const {
  if (layers_.size() != arch_.layers.size()) {
    throw Error(fmt::format("architecture has {} layers but {} tensor sets were given", arch_.layers.size(),
                            layers_.size()),
                "the checkpoint is corrupt or does not match its architecture");
  }
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = arch_.layers[i];
    const LayerTensors& t = layers_[i];
    const int64_t out = arch_.groups[l.out_group].width;
    auto check = [&](const torch::Tensor& x, std::vector<int64_t> shape, const char* what) {
      if (!x.defined() || x.sizes().vec() != shape) {
        throw Error(
            fmt::format("tensor {} of layer {} has shape {} but the architecture says {}", what, l.name,
                        x.defined() ? fmt::format("{}", x.sizes().vec()) : "none", fmt::format("{}", shape)),
            "the checkpoint is corrupt or does not match its architecture");
      }
      if (!x.is_floating_point() || x.scalar_type() != layers_[0].weight.scalar_type()) {
        throw Error(fmt::format("tensor {} of layer {} holds {}, not floating point like the first weight",
                                what, l.name, c10::toString(x.scalar_type())),
                    "the checkpoint is damaged or was edited; demp stores weights as float32");
      }
    };
    check(t.weight, weight_shape(arch_, l), "weight");
    if (l.bias) check(t.bias, {out}, "bias");
    if (l.bn) {
      check(t.gamma, {out}, "bn.weight");
      check(t.beta, {out}, "bn.bias");
      check(t.running_mean, {out}, "bn.running_mean");
      check(t.running_var, {out}, "bn.running_var");
    }
  }
}

void Model::refresh_skips() {
  skip_index_.clear();
  const auto dev = layers_.empty() ? torch::Device(torch::kCPU) : layers_[0].weight.device();
  for (const auto& s : arch_.skips) {
    SkipIndex si;
    si.identity = s.identity() && static_cast<int64_t>(s.src.size()) == arch_.groups[s.in_group].width &&
                  static_cast<int64_t>(s.dst.size()) == arch_.groups[s.out_group].width;
    si.src = torch::tensor(s.src, torch::kLong).to(dev);
    si.dst = torch::tensor(s.dst, torch::kLong).to(dev);
    // The same map as a fixed 0/1 1×1 convolution. Measured on the CPU (2 threads, pruned
    // ResNet-18): index_select/index_add hand back NCHW gradients into a channels-last network,
    // which sends BatchNorm's backward down a slow generic path (6× slower); the convolution keeps
    // every tensor channels-last and costs C_in·C_out multiply-adds per position, small next to
    // the 3×3 convolutions of the block.
    const auto dtype = layers_.empty() ? torch::kFloat : layers_[0].weight.scalar_type();
    auto sel = torch::zeros({arch_.groups[s.out_group].width, arch_.groups[s.in_group].width, 1, 1},
                            torch::TensorOptions().dtype(dtype));
    if (!s.src.empty()) {
      sel.view({sel.size(0), sel.size(1)})
          .index_put_({torch::tensor(s.dst, torch::kLong), torch::tensor(s.src, torch::kLong)},
                      torch::ones({}, sel.options()));
    }
    si.select = sel.to(dev).contiguous(channels_last_ ? at::MemoryFormat::ChannelsLast
                                                      : at::MemoryFormat::Contiguous);
    skip_index_.push_back(si);
  }
}

namespace {

// Training-mode BatchNorm whose statistics are the whole global batch's: per-channel sums of x and
// x² and the element count, summed over the ranks, give the mean and the biased variance; the
// running statistics take the unbiased one, as at::batch_norm does (momentum 0.1, eps 1e-5).
torch::Tensor sync_batch_norm(const torch::Tensor& x, const LayerTensors& t,
                              const std::function<torch::Tensor(const torch::Tensor&)>& sum_over_ranks) {
  const bool conv = x.dim() == 4;
  const std::vector<int64_t> dims = conv ? std::vector<int64_t>{0, 2, 3} : std::vector<int64_t>{0};
  const auto xf = x.to(t.gamma.scalar_type());  // statistics in the parameters' precision
  const int64_t c = xf.size(1);
  const double local = static_cast<double>(xf.numel() / c);
  const auto stats = sum_over_ranks(
      torch::cat({xf.sum(dims), xf.square().sum(dims), torch::full({1}, local, xf.options())}));
  const auto n = stats[2 * c].detach();
  const auto mean = stats.slice(0, 0, c) / n;
  const auto var = (stats.slice(0, c, 2 * c) / n - mean.square()).clamp_min(0);
  {
    torch::NoGradGuard no_grad;
    t.running_mean.mul_(0.9).add_(mean.detach(), 0.1);
    t.running_var.mul_(0.9).add_(var.detach() * n / (n - 1), 0.1);
  }
  const auto shape = conv ? std::vector<int64_t>{1, c, 1, 1} : std::vector<int64_t>{1, c};
  const auto scale = (t.gamma * (var + 1e-5).rsqrt()).view(shape);
  return (xf - mean.view(shape)) * scale + t.beta.view(shape);
}

}  // namespace

torch::Tensor Model::forward(const torch::Tensor& x, bool train, std::vector<torch::Tensor>* groups,
                             const std::vector<torch::Tensor>* gates) const {
  if (x.dim() != 4 || x.size(1) != arch_.in_channels || x.size(2) != arch_.in_height ||
      x.size(3) != arch_.in_width) {
    throw Error(fmt::format("input of shape {} does not fit {} built for {}x{}x{} images", x.sizes().vec(),
                            arch_.model, arch_.in_channels, arch_.in_height, arch_.in_width),
                "build the model with the data's shape (--input-size / data set)");
  }
  if (groups) groups->assign(arch_.groups.size(), torch::Tensor());
  std::vector<torch::Tensor> v(arch_.num_slots);
  v[0] = channels_last_ ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
  for (const Op& op : arch_.program) {
    switch (op.kind) {
      case Op::Layer: {
        const Layer& l = arch_.layers[op.a];
        const LayerTensors& t = layers_[op.a];
        torch::Tensor y = l.kind == LayerKind::Conv ? at::conv2d(v[op.b], t.weight, t.bias,
                                                                 {l.stride, l.stride}, {l.padding, l.padding})
                                                    : at::linear(v[op.b], t.weight, t.bias);
        // A 1-channel input makes the layout ambiguous and the convolution then answers in NCHW;
        // one NCHW tensor in a channels-last network sends later BatchNorm backwards down slow
        // mixed-layout paths, so pin the layout here.
        if (channels_last_ && y.dim() == 4 && !y.is_contiguous(at::MemoryFormat::ChannelsLast)) {
          y = y.contiguous(at::MemoryFormat::ChannelsLast);
        }
        if (l.bn && train && sync_bn_) {
          y = sync_batch_norm(y, t, sync_bn_);
        } else if (l.bn) {
          y = at::batch_norm(y, t.gamma, t.beta, t.running_mean, t.running_var, train, 0.1, 1e-5,
                             /*cudnn_enabled=*/true);
        }
        v[op.c] = y;
        break;
      }
      case Op::Relu:
        v[op.a] = at::relu_(v[op.a]);
        if (gates && static_cast<size_t>(op.b) < gates->size() && (*gates)[op.b].defined()) {
          const auto& g = (*gates)[op.b];
          v[op.a] = v[op.a] * (v[op.a].dim() == 4 ? g.view({1, -1, 1, 1}) : g.view({1, -1}));
        }
        if (groups) (*groups)[op.b] = v[op.a];
        break;
      case Op::MaxPool:
        v[op.a] = at::max_pool2d(v[op.a], {op.k, op.k}, {op.s, op.s}, {op.p, op.p}, {1, 1},
                                 /*ceil_mode=*/op.b != 0);
        break;
      case Op::GlobalAvgPool:
        v[op.a] = v[op.a].mean({2, 3}, /*keepdim=*/true);
        break;
      case Op::Flatten:
        v[op.a] = v[op.a].flatten(1);
        break;
      case Op::Copy:
        v[op.a] = v[op.b];
        break;
      case Op::Add: {
        if (op.c < 0 || skip_index_[op.c].identity) {
          v[op.a] = v[op.a] + v[op.b];
        } else {
          const SkipIndex& s = skip_index_[op.c];
          if (v[op.b].dim() == 4) {
            v[op.a] = v[op.a] + at::conv2d(v[op.b], s.select.to(v[op.b].scalar_type()));
          } else {
            v[op.a] = v[op.a].index_add(1, s.dst, v[op.b].index_select(1, s.src));
          }
        }
        break;
      }
    }
  }
  return v[0];
}

std::vector<torch::Tensor> Model::parameters() const {
  std::vector<torch::Tensor> out;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const auto& t = layers_[i];
    out.push_back(t.weight);
    if (arch_.layers[i].bias) out.push_back(t.bias);
    if (arch_.layers[i].bn) {
      out.push_back(t.gamma);
      out.push_back(t.beta);
    }
  }
  return out;
}

std::vector<ParamInfo> Model::param_infos() const {
  std::vector<ParamInfo> out;
  for (size_t i = 0; i < arch_.layers.size(); ++i) {
    const Layer& l = arch_.layers[i];
    const int li = static_cast<int>(i);
    out.push_back({ParamInfo::Weight, li, l.out_group, l.in_group, l.in_block});
    if (l.bias) out.push_back({ParamInfo::Bias, li, l.out_group, -1, 1});
    if (l.bn) {
      out.push_back({ParamInfo::Gamma, li, l.out_group, -1, 1});
      out.push_back({ParamInfo::Beta, li, l.out_group, -1, 1});
    }
  }
  return out;
}

std::vector<torch::Tensor> Model::buffers() const {
  std::vector<torch::Tensor> out;
  for (const auto& l : layers_) {
    if (l.running_mean.defined()) out.push_back(l.running_mean);
    if (l.running_var.defined()) out.push_back(l.running_var);
  }
  return out;
}

std::vector<torch::Tensor> Model::norm_scales() const {
  std::vector<torch::Tensor> out;
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (arch_.layers[i].bn) out.push_back(layers_[i].gamma);
  }
  return out;
}

void Model::to(const torch::Device& device) {
  torch::NoGradGuard no_grad;
  auto move = [&](torch::Tensor& t, bool param) {
    if (!t.defined()) return;
    t = t.to(device).detach();
    if (param) t.requires_grad_(true);
  };
  for (auto& t : layers_) {
    move(t.weight, true);
    move(t.bias, true);
    move(t.gamma, true);
    move(t.beta, true);
    move(t.running_mean, false);
    move(t.running_var, false);
  }
  refresh_skips();
  apply_memory_format();
}

torch::Device Model::device() const {
  return layers_.empty() ? torch::Device(torch::kCPU) : layers_[0].weight.device();
}

}  // namespace demp::nn
