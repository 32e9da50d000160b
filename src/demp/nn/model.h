#pragma once
// A network instantiated from an Arch: the tensors of every layer plus a forward pass that runs
// the architecture's program. Parameters are plain leaf tensors owned here (not torch::nn
// modules), so that surgery can replace them with smaller ones and keep the optimizer state
// aligned by parameter index.
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "demp/nn/arch.h"

namespace demp::nn {

struct LayerTensors {
  torch::Tensor weight, bias, gamma, beta, running_mean, running_var;
};

/// Which tensor of which layer a parameter is, and how surgery slices it.
struct ParamInfo {
  enum Field { Weight, Bias, Gamma, Beta } field;
  int layer = 0;
  int out_group = 0;  ///< dim 0 is sliced by this group's keep set
  int in_group = -1;  ///< dim 1 is sliced by this group's keep set (weights only), else -1
  int64_t in_block = 1;
  std::string name() const;
};

class Model {
 public:
  /// Builds fresh tensors for `arch` (Kaiming init for convs, PyTorch's default for linears,
  /// BN γ = 1 (or 0 where the arch says so) and β = 0), seeded by `seed`.
  Model(Arch arch, uint64_t seed);
  /// Adopts existing tensors (checkpoint loading); shapes are validated against the arch.
  Model(Arch arch, std::vector<LayerTensors> tensors);

  const Arch& arch() const { return arch_; }
  Arch& mutable_arch() { return arch_; }
  std::vector<LayerTensors>& layers() { return layers_; }
  const std::vector<LayerTensors>& layers() const { return layers_; }

  /// Logits for a batch N×C×H×W. `train` selects BatchNorm batch statistics (and updates the
  /// running ones). When `groups` is given it receives, per group id, the post-activation output
  /// (undefined for groups without an activation).
  /// `gates`, when given, holds per group id an optional vector of `width` multipliers applied
  /// to that group's post-activation output (the "gate trick" of score-based pruning methods:
  /// derivatives of the loss with respect to the gates score the units).
  torch::Tensor forward(const torch::Tensor& x, bool train, std::vector<torch::Tensor>* groups = nullptr,
                        const std::vector<torch::Tensor>* gates = nullptr) const;

  /// Parameters in a fixed order (the optimizer's state follows this order).
  std::vector<torch::Tensor> parameters() const;
  std::vector<ParamInfo> param_infos() const;
  /// BatchNorm running statistics (mean and variance of every BN layer), in a fixed order.
  std::vector<torch::Tensor> buffers() const;
  /// BatchNorm scales γ only (for L1-on-γ regularizers).
  std::vector<torch::Tensor> norm_scales() const;

  void to(const torch::Device& device);
  /// Channels-last (NHWC) activations and conv weights: faster convolutions on oneDNN (CPU) and
  /// cuDNN (GPU). On by default for models with convolutions.
  void set_channels_last(bool on);
  bool channels_last() const { return channels_last_; }
  /// Re-applies the memory format to every tensor (after surgery replaced some).
  void apply_memory_format();
  torch::Device device() const;
  /// Synchronised BatchNorm (data-parallel): in training mode every BN layer takes its batch
  /// statistics over all ranks. `sum_over_ranks` must return the elementwise sum of its argument
  /// over the ranks, differentiably (its backward sums the gradients over the ranks too).
  /// An empty function (the default) is ordinary per-rank BatchNorm.
  void set_sync_batch_norm(std::function<torch::Tensor(const torch::Tensor&)> sum_over_ranks) {
    sync_bn_ = std::move(sum_over_ranks);
  }
  /// Re-derives the cached skip index tensors after the arch's skip maps changed.
  void refresh_skips();
  void validate() const;

 private:
  Arch arch_;
  std::vector<LayerTensors> layers_;
  struct SkipIndex {
    torch::Tensor src, dst;
    torch::Tensor select;  ///< 0/1 matrix C_out×C_in×1×1: the map as a 1×1 convolution
    bool identity = false;
  };
  std::vector<SkipIndex> skip_index_;
  bool channels_last_ = false;
  std::function<torch::Tensor(const torch::Tensor&)> sync_bn_;
};

}  // namespace demp::nn
