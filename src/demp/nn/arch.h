#pragma once
// The architecture description: structure as data (DESIGN.md principles 1–2).
//
// A network is a set of *unit groups* (one per activation, plus the input and the logits), a list
// of *layers* (conv or linear, optionally followed by BatchNorm) that each read one group and
// produce the channels of one group, a *program* of ops that says how values flow (layers, ReLU,
// pooling, residual adds), and *skip maps* (residual paths as channel-index maps). Pruning edits
// group widths, skip maps and tensors; nothing here knows about a particular model family.
// This header is LibTorch-free on purpose: it is included everywhere.
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace demp::nn {

struct Group {
  std::string name;
  int64_t width = 0;     ///< current number of units (channels or features)
  int64_t initial = 0;   ///< width when the network was built
  bool prunable = true;  ///< false for the input and the logits
  int64_t hw = 1;        ///< spatial positions per unit (H*W); 1 for features
};

enum class LayerKind { Conv, Linear };

struct Layer {
  std::string name;
  LayerKind kind = LayerKind::Conv;
  int in_group = 0;      ///< group whose units are this layer's input channels / features
  int out_group = 0;     ///< group whose units are this layer's output channels
  int64_t in_block = 1;  ///< linear after flatten: input features per input unit (H*W)
  int64_t kernel = 1, stride = 1, padding = 0;
  int64_t out_hw = 1;  ///< output spatial positions (for FLOPs)
  bool bias = false;
  bool bn = false;            ///< followed by BatchNorm on its output channels
  bool zero_init_bn = false;  ///< BN γ starts at 0 (ResNet-50 last BN of each bottleneck)
};

/// A residual path: out[:, dst[m]] += in[:, src[m]] for every m.
struct SkipMap {
  int in_group = 0, out_group = 0;
  std::vector<int64_t> src, dst;
  bool identity() const;  ///< src == dst == 0..n-1 with n = both widths
};

/// One instruction of the forward program, over numbered value slots.
struct Op {
  enum Kind { Layer, Relu, MaxPool, GlobalAvgPool, Flatten, Copy, Add } kind;
  int a = 0;  ///< Layer: layer index; Relu: slot; MaxPool/GlobalAvgPool/Flatten: slot; Copy/Add: dst slot
  int b = 0;  ///< Layer: src slot; Add/Copy: src slot; Relu: group id
  int c = 0;  ///< Layer: dst slot; Add: skip index (-1: plain add, same channel space)
  int64_t k = 0, s = 0, p = 0;  ///< MaxPool kernel, stride, padding (ceil mode)
};

struct Arch {
  std::string model;  ///< "mlp", "vgg16", "resnet18", "resnet50"
  int64_t in_channels = 1, in_height = 28, in_width = 28, classes = 10;
  double width_mult = 1.0;
  std::vector<Group> groups;  ///< groups[0] is the input, the last is the logits
  std::vector<Layer> layers;
  std::vector<SkipMap> skips;
  std::vector<Op> program;
  int num_slots = 1;

  int64_t units() const;  ///< live units over all prunable groups
  int64_t initial_units() const;
  int64_t params() const;  ///< parameters (weights, biases, BN γ and β)
  int64_t flops() const;   ///< FLOPs per image: 2 × multiply-adds of conv and linear
  std::vector<int> prunable_groups() const;
  /// Architecture as a human-readable table (layer, kind, in → out, params, FLOPs/image).
  std::string table() const;
};

struct ModelOptions {
  std::string model = "resnet18";
  /// ResNet stem: "auto" (resnet18: cifar, resnet50: imagenet), "cifar" (3x3 stride 1, no
  /// max-pool) or "imagenet" (torchvision's: 7x7 stride 2, BN, ReLU, 3x3 stride-2 max-pool).
  std::string stem = "auto";
  double width = 1.0;  ///< width multiplier on every hidden group
  int64_t in_channels = 1, in_height = 28, in_width = 28, classes = 10;
  std::vector<int64_t> mlp_widths{512, 256};  ///< MLP hidden widths (before the multiplier)
};

/// "512,256" -> {512, 256}: the MLP hidden widths as the --mlp-widths flag writes them. Throws
/// demp::Error unless there is at least one item and every item is a positive integer.
std::vector<int64_t> parse_mlp_widths(const std::string& list);

/// Builds a zoo model: "mlp", "vgg16", "resnet18", "resnet50". Throws demp::Error if unknown.
Arch build_arch(const ModelOptions& opt);
std::vector<std::string> model_names();

/// Checks everything that indexes or sizes tensors: group/layer/skip/slot references, a forward
/// program that reads the input and ends in the logits, and sizes (widths, input, parameters)
/// small enough to allocate. Throws demp::Error whose text says what is wrong (without a file
/// name: callers add it). Run on every architecture that is loaded or built.
void check_arch(const Arch& a);
/// The most parameters demp builds or loads (2^31: 8 GiB of fp32 weights).
constexpr int64_t kMaxParams = int64_t{1} << 31;

void to_json(nlohmann::json& j, const Arch& a);
void from_json(const nlohmann::json& j, Arch& a);

// ---- architecture files (docs/architecture.md) ---------------------------------------------

/// What an architecture file may leave to the data: 0 = unknown.
struct ArchShape {
  int64_t channels = 0, height = 0, width = 0, classes = 0;
};

/// An architecture file ("format": "demp-arch", "version": 1) as an Arch: groups, layers and the
/// forward program are resolved by name, and every derived size (spatial positions, flattened
/// features, skip maps) is computed by running the program on shapes. The input shape and the
/// number of classes come from the file, else from `data` (where both give them, they must agree).
/// Throws demp::Error naming the layer (name and index), op or group and the field at fault.
Arch arch_from_file_json(const nlohmann::json& j, const ArchShape& data = {});
/// The architecture as a file ("format": "demp-arch", "version": 1), readable by
/// arch_from_file_json (which gives back the same Arch) and by a person.
nlohmann::json arch_to_file_json(const Arch& a);
/// The same, as text: one line per group, layer and op.
std::string arch_file_text(const Arch& a);
/// Reads and compiles an architecture file; errors name the file.
Arch load_arch_file(const std::string& path, const ArchShape& data = {});

/// Layer parameter counts of the current widths (used by params() and table()).
int64_t layer_params(const Arch& a, const Layer& l);
int64_t layer_flops(const Arch& a, const Layer& l);

}  // namespace demp::nn
