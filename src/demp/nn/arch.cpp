#include "demp/nn/arch.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "demp/common/error.h"

namespace demp::nn {

bool SkipMap::identity() const {
  for (size_t i = 0; i < src.size(); ++i) {
    if (src[i] != static_cast<int64_t>(i) || dst[i] != static_cast<int64_t>(i)) return false;
  }
  return true;
}

int64_t layer_params(const Arch& a, const Layer& l) {
  const int64_t in = a.groups[l.in_group].width * l.in_block;
  const int64_t out = a.groups[l.out_group].width;
  const int64_t k2 = l.kind == LayerKind::Conv ? l.kernel * l.kernel : 1;
  return in * out * k2 + (l.bias ? out : 0) + (l.bn ? 2 * out : 0);
}

int64_t layer_flops(const Arch& a, const Layer& l) {
  const int64_t in = a.groups[l.in_group].width * l.in_block;
  const int64_t out = a.groups[l.out_group].width;
  const int64_t k2 = l.kind == LayerKind::Conv ? l.kernel * l.kernel : 1;
  return 2 * in * out * k2 * l.out_hw;
}

int64_t Arch::units() const {
  int64_t n = 0;
  for (const auto& g : groups) n += g.prunable ? g.width : 0;
  return n;
}

int64_t Arch::initial_units() const {
  int64_t n = 0;
  for (const auto& g : groups) n += g.prunable ? g.initial : 0;
  return n;
}

int64_t Arch::params() const {
  int64_t n = 0;
  for (const auto& l : layers) n += layer_params(*this, l);
  return n;
}

int64_t Arch::flops() const {
  int64_t n = 0;
  for (const auto& l : layers) n += layer_flops(*this, l);
  return n;
}

std::vector<int> Arch::prunable_groups() const {
  std::vector<int> out;
  for (size_t g = 0; g < groups.size(); ++g) {
    if (groups[g].prunable) out.push_back(static_cast<int>(g));
  }
  return out;
}

std::string Arch::table() const {
  std::string s = fmt::format("{:<22} {:<10} {:>16} {:>12} {:>14}\n", "layer", "kind", "in -> out", "params",
                              "FLOPs/image");
  for (const auto& l : layers) {
    const std::string kind = l.kind == LayerKind::Conv
                                 ? fmt::format("conv{}x{}{}", l.kernel, l.kernel, l.bn ? "+bn" : "")
                                 : fmt::format("linear{}", l.bn ? "+bn" : "");
    const std::string io = fmt::format("{} -> {}", groups[l.in_group].width, groups[l.out_group].width);
    s += fmt::format("{:<22} {:<10} {:>16} {:>12} {:>14}\n", l.name, kind, io, layer_params(*this, l),
                     layer_flops(*this, l));
  }
  s += fmt::format("{:<22} {:<10} {:>16} {:>12} {:>14}\n", "total", model, fmt::format("{} units", units()),
                   params(), flops());
  return s;
}

namespace {

int64_t scaled(int64_t c, double w) {
  return std::max<int64_t>(1, static_cast<int64_t>(std::llround(static_cast<double>(c) * w)));
}

// Builds an Arch while tracking each value slot's group and spatial shape.
class Builder {
 public:
  explicit Builder(const ModelOptions& o) {
    a.model = o.model;
    a.in_channels = o.in_channels;
    a.in_height = o.in_height;
    a.in_width = o.in_width;
    a.classes = o.classes;
    a.width_mult = o.width;
    a.groups.push_back(Group{"input", o.in_channels, o.in_channels, false, o.in_height * o.in_width});
    slots_.push_back({0, o.in_height, o.in_width, 1});
  }

  int group(const std::string& name, int64_t width, bool prunable = true) {
    a.groups.push_back(Group{name, width, width, prunable, 1});
    return static_cast<int>(a.groups.size()) - 1;
  }

  void ensure_slot(int s) {
    if (static_cast<int>(slots_.size()) <= s) slots_.resize(s + 1);
    a.num_slots = std::max(a.num_slots, s + 1);
  }

  void conv(const std::string& name, int src, int dst, int out_group, int64_t k, int64_t stride, int64_t pad,
            bool bn = true, bool zero_bn = false) {
    ensure_slot(dst);
    Slot in = slots_[src];
    Layer l;
    l.name = name;
    l.kind = LayerKind::Conv;
    l.in_group = in.group;
    l.out_group = out_group;
    l.kernel = k;
    l.stride = stride;
    l.padding = pad;
    l.bias = !bn;
    l.bn = bn;
    l.zero_init_bn = zero_bn;
    const int64_t h = (in.h + 2 * pad - k) / stride + 1, w = (in.w + 2 * pad - k) / stride + 1;
    if (h < 1 || w < 1) {
      throw Error(
          fmt::format("input {}x{} is too small for layer {} of {}", a.in_height, a.in_width, name, a.model),
          "use a larger --input-size or another model");
    }
    l.out_hw = h * w;
    push_layer(l, src, dst);
    slots_[dst] = {out_group, h, w, 1};
  }

  void linear(const std::string& name, int src, int dst, int out_group, bool bn) {
    ensure_slot(dst);
    Slot in = slots_[src];
    Layer l;
    l.name = name;
    l.kind = LayerKind::Linear;
    l.in_group = in.group;
    l.out_group = out_group;
    l.in_block = in.flat_hw;
    l.bias = !bn;
    l.bn = bn;
    push_layer(l, src, dst);
    slots_[dst] = {out_group, 1, 1, 1};
  }

  void relu(int slot) {
    const Slot& s = slots_[slot];
    a.groups[s.group].hw = s.h * s.w * s.flat_hw;
    a.program.push_back(Op{Op::Relu, slot, s.group, 0});
  }

  void maxpool(int slot, int64_t k, int64_t s, int64_t p, bool ceil_mode) {
    Slot& v = slots_[slot];
    auto out = [&](int64_t n) {
      const double x = static_cast<double>(n + 2 * p - k) / static_cast<double>(s);
      int64_t o = (ceil_mode ? static_cast<int64_t>(std::ceil(x)) : static_cast<int64_t>(std::floor(x))) + 1;
      if (ceil_mode && (o - 1) * s >= n + p) --o;  // PyTorch: last window must start inside
      return o;
    };
    v.h = out(v.h);
    v.w = out(v.w);
    Op op{Op::MaxPool, slot, ceil_mode ? 1 : 0, 0};
    op.k = k;
    op.s = s;
    op.p = p;
    a.program.push_back(op);
  }

  void global_avg_pool(int slot) {
    slots_[slot].h = slots_[slot].w = 1;
    a.program.push_back(Op{Op::GlobalAvgPool, slot, 0, 0});
  }

  void flatten(int slot) {
    Slot& v = slots_[slot];
    v.flat_hw = v.h * v.w;
    v.h = v.w = 1;
    a.program.push_back(Op{Op::Flatten, slot, 0, 0});
  }

  void copy(int dst, int src) {
    ensure_slot(dst);
    slots_[dst] = slots_[src];
    a.program.push_back(Op{Op::Copy, dst, src, 0});
  }

  /// dst += src; with an identity skip map when the two slots hold different groups.
  void add(int dst, int src) {
    const int gd = slots_[dst].group, gs = slots_[src].group;
    int skip = -1;
    if (gd != gs) {
      SkipMap m;
      m.in_group = gs;
      m.out_group = gd;
      for (int64_t i = 0; i < a.groups[gd].width; ++i) {
        m.src.push_back(i);
        m.dst.push_back(i);
      }
      a.skips.push_back(m);
      skip = static_cast<int>(a.skips.size()) - 1;
    }
    a.program.push_back(Op{Op::Add, dst, src, skip});
  }

  Arch a;

 private:
  struct Slot {
    int group = 0;
    int64_t h = 1, w = 1;
    int64_t flat_hw = 1;
  };
  void push_layer(const Layer& l, int src, int dst) {
    a.layers.push_back(l);
    a.program.push_back(Op{Op::Layer, static_cast<int>(a.layers.size()) - 1, src, dst});
  }
  std::vector<Slot> slots_;
};

Arch build_mlp(const ModelOptions& o) {
  Builder b(o);
  b.flatten(0);
  for (size_t i = 0; i < o.mlp_widths.size(); ++i) {
    const int g = b.group(fmt::format("fc{}", i + 1), scaled(o.mlp_widths[i], o.width));
    b.linear(fmt::format("fc{}", i + 1), 0, 0, g, true);
    b.relu(0);
  }
  const int out = b.group("logits", o.classes, false);
  b.linear("classifier", 0, 0, out, false);
  return b.a;
}

Arch build_vgg16(const ModelOptions& o) {
  Builder b(o);
  const std::vector<int64_t> cfg = {64, 64,  0,   128, 128, 0,   256, 256, 256,
                                    0,  512, 512, 512, 0,   512, 512, 512, 0};
  int n = 0;
  for (int64_t c : cfg) {
    if (c == 0) {
      b.maxpool(0, 2, 2, 0, /*ceil_mode=*/true);
      continue;
    }
    ++n;
    const int g = b.group(fmt::format("conv{}", n), scaled(c, o.width));
    b.conv(fmt::format("conv{}", n), 0, 0, g, 3, 1, 1);
    b.relu(0);
  }
  b.flatten(0);
  for (int i = 1; i <= 2; ++i) {
    const int g = b.group(fmt::format("fc{}", i), scaled(512, o.width));
    b.linear(fmt::format("fc{}", i), 0, 0, g, true);
    b.relu(0);
  }
  const int out = b.group("logits", o.classes, false);
  b.linear("classifier", 0, 0, out, false);
  return b.a;
}

Arch build_resnet18(const ModelOptions& o) {
  Builder b(o);
  int64_t cin = scaled(64, o.width);
  const int stem = b.group("stem", cin);
  if (o.stem == "imagenet") {  // torchvision's resnet18
    b.conv("stem", 0, 0, stem, 7, 2, 3);
    b.relu(0);
    b.maxpool(0, 3, 2, 1, /*ceil_mode=*/false);
  } else {
    b.conv("stem", 0, 0, stem, 3, 1, 1);
    b.relu(0);
  }
  const int64_t widths[4] = {64, 128, 256, 512};
  for (int s = 0; s < 4; ++s) {
    const int64_t c = scaled(widths[s], o.width);
    for (int k = 0; k < 2; ++k) {
      const int64_t stride = (s > 0 && k == 0) ? 2 : 1;
      const std::string p = fmt::format("layer{}.{}", s + 1, k);
      b.copy(1, 0);
      const int mid = b.group(p + ".mid", c);
      b.conv(p + ".conv1", 0, 0, mid, 3, stride, 1);
      b.relu(0);
      const int out = b.group(p + ".out", c);
      b.conv(p + ".conv2", 0, 0, out, 3, 1, 1);
      if (stride != 1 || cin != c) b.conv(p + ".shortcut", 1, 1, out, 1, stride, 0);
      b.add(0, 1);
      b.relu(0);
      cin = c;
    }
  }
  b.global_avg_pool(0);
  b.flatten(0);
  const int logits = b.group("logits", o.classes, false);
  b.linear("classifier", 0, 0, logits, false);
  return b.a;
}

Arch build_resnet50(const ModelOptions& o) {
  Builder b(o);
  int64_t cin = scaled(64, o.width);
  const int stem = b.group("stem", cin);
  if (o.stem == "cifar") {
    b.conv("stem", 0, 0, stem, 3, 1, 1);
    b.relu(0);
  } else {
    b.conv("stem", 0, 0, stem, 7, 2, 3);
    b.relu(0);
    b.maxpool(0, 3, 2, 1, /*ceil_mode=*/false);
  }
  const int64_t planes[4] = {64, 128, 256, 512};
  const int blocks[4] = {3, 4, 6, 3};
  for (int s = 0; s < 4; ++s) {
    const int64_t p = scaled(planes[s], o.width), c = scaled(planes[s] * 4, o.width);
    for (int k = 0; k < blocks[s]; ++k) {
      const int64_t stride = (s > 0 && k == 0) ? 2 : 1;
      const std::string n = fmt::format("layer{}.{}", s + 1, k);
      b.copy(1, 0);
      const int m1 = b.group(n + ".mid1", p);
      b.conv(n + ".conv1", 0, 0, m1, 1, 1, 0);
      b.relu(0);
      const int m2 = b.group(n + ".mid2", p);
      b.conv(n + ".conv2", 0, 0, m2, 3, stride, 1);
      b.relu(0);
      const int out = b.group(n + ".out", c);
      b.conv(n + ".conv3", 0, 0, out, 1, 1, 0, true, /*zero_bn=*/true);
      if (stride != 1 || cin != c) b.conv(n + ".shortcut", 1, 1, out, 1, stride, 0);
      b.add(0, 1);
      b.relu(0);
      cin = c;
    }
  }
  b.global_avg_pool(0);
  b.flatten(0);
  const int logits = b.group("logits", o.classes, false);
  b.linear("classifier", 0, 0, logits, false);
  return b.a;
}

}  // namespace

std::vector<std::string> model_names() { return {"mlp", "vgg16", "resnet18", "resnet50"}; }

std::vector<int64_t> parse_mlp_widths(const std::string& list) {
  std::vector<int64_t> widths;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      const int64_t w = std::stoll(item);
      if (w <= 0) throw std::invalid_argument("");
      widths.push_back(w);
    } catch (const std::exception&) {
      throw Error("bad --mlp-widths '" + list + "'", "give positive integers, e.g. 512,256");
    }
  }
  if (widths.empty()) throw Error("--mlp-widths is empty", "e.g. --mlp-widths 512,256");
  return widths;
}

Arch build_arch(const ModelOptions& o) {
  if (!(o.width > 0) || o.width > 64) {
    throw Error(fmt::format("width multiplier {} is out of range", o.width),
                "use a value in (0, 64], e.g. --width 0.25");
  }
  if (o.classes < 2) throw Error("a classifier needs at least 2 classes", "check the data set's labels");
  for (const int64_t w : o.mlp_widths) {
    if (w < 1 || static_cast<double>(w) * o.width > static_cast<double>(int64_t{1} << 24)) {
      throw Error(fmt::format("hidden width {} (x {}) is out of range", w, o.width),
                  "widths are 1 .. 16777216 units; e.g. --mlp-widths 512,256");
    }
  }
  if (o.stem != "auto" && o.stem != "cifar" && o.stem != "imagenet") {
    throw Error("unknown --stem '" + o.stem + "'", "use auto, cifar or imagenet");
  }
  if (o.stem != "auto" && o.model != "resnet18" && o.model != "resnet50") {
    throw Error("--stem " + o.stem + " applies to resnet18 and resnet50 only",
                "leave --stem out for " + o.model);
  }
  Arch a;
  if (o.model == "mlp") {
    a = build_mlp(o);
  } else if (o.model == "vgg16") {
    a = build_vgg16(o);
  } else if (o.model == "resnet18") {
    a = build_resnet18(o);
  } else if (o.model == "resnet50") {
    a = build_resnet50(o);
  } else {
    throw Error("unknown model '" + o.model + "'", "use one of: mlp, vgg16, resnet18, resnet50");
  }
  try {
    check_arch(a);
  } catch (const Error& e) {
    if (!e.hint().empty()) throw;
    throw Error(fmt::format("cannot build {}: {}", o.model, e.what()), "check the model options");
  }
  return a;
}

// ---- validation ---------------------------------------------------------------------------

void check_arch(const Arch& a) {
  auto bad = [](const std::string& what) { throw Error(what); };
  constexpr int64_t kMaxWidth = int64_t{1} << 24, kMaxSide = int64_t{1} << 16;
  const int ng = static_cast<int>(a.groups.size());
  if (ng < 2) bad("fewer than two unit groups");
  if (a.num_slots < 1 || a.num_slots > 1024) bad(fmt::format("{} value slots", a.num_slots));
  if (a.in_channels < 1 || a.in_height < 1 || a.in_width < 1 || a.in_channels > 4096 ||
      a.in_height > kMaxSide || a.in_width > kMaxSide ||
      a.in_channels * a.in_height * a.in_width > (int64_t{1} << 28)) {
    bad(fmt::format("input shape {}x{}x{} (at most 4096 channels, 65536 pixels a side, 2^28 values)",
                    a.in_channels, a.in_height, a.in_width));
  }
  if (a.classes < 1 || a.classes > kMaxWidth) bad(fmt::format("{} classes", a.classes));
  for (const auto& g : a.groups) {
    if (g.width < 1 || g.width > g.initial || g.initial > kMaxWidth) {
      bad(fmt::format("group '{}': field \"width\": {} (initially {}; 1 .. 2^24, at most the initial width)",
                      g.name, g.width, g.initial));
    }
    if (g.hw < 1 || g.hw > (int64_t{1} << 32)) bad("group '" + g.name + "': field \"hw\" out of range");
  }
  if (a.groups[0].width != a.in_channels) bad("the input group's width is not the input's channels");
  if (a.groups.back().width != a.classes) bad("the last group's width is not the number of classes");
  if (a.layers.empty()) bad("no layers");
  double params = 0, flops = 0;
  for (size_t li = 0; li < a.layers.size(); ++li) {
    const Layer& l = a.layers[li];
    const std::string lw = fmt::format("layer '{}' (#{})", l.name, li);
    if (l.kind != LayerKind::Conv && l.kind != LayerKind::Linear) bad(lw + ": field \"kind\": unknown kind");
    if (l.in_group < 0 || l.in_group >= ng)
      bad(fmt::format("{}: field \"in_group\": {} is not a group (0..{})", lw, l.in_group, ng - 1));
    if (l.out_group < 0 || l.out_group >= ng)
      bad(fmt::format("{}: field \"out_group\": {} is not a group (0..{})", lw, l.out_group, ng - 1));
    if (l.out_group == 0) bad(lw + ": field \"out_group\": a layer cannot write the input group");
    auto in_range = [&](const char* field, int64_t x, int64_t lo, int64_t hi) {
      if (x < lo || x > hi)
        bad(fmt::format("{}: field \"{}\": {} is out of range ({} .. {})", lw, field, x, lo, hi));
    };
    in_range("kernel", l.kernel, 1, 64);
    in_range("stride", l.stride, 1, 64);
    in_range("padding", l.padding, 0, 64);
    in_range("in_block", l.in_block, 1, int64_t{1} << 32);
    in_range("out_hw", l.out_hw, 1, int64_t{1} << 32);
    const double k2 = l.kind == LayerKind::Conv ? static_cast<double>(l.kernel * l.kernel) : 1.0;
    const double w = static_cast<double>(a.groups[l.in_group].width) * static_cast<double>(l.in_block) *
                     static_cast<double>(a.groups[l.out_group].width) * k2;
    params += w + 3.0 * static_cast<double>(a.groups[l.out_group].width);
    flops += 2.0 * w * static_cast<double>(l.out_hw);
  }
  if (params > static_cast<double>(kMaxParams)) {
    throw Error(fmt::format("the network has {:.3g} parameters, more than demp builds ({:.3g}: 8 GiB "
                            "of weights)",
                            params, static_cast<double>(kMaxParams)),
                "use smaller widths (--width, --mlp-widths) or a smaller input");
  }
  if (flops > 1e18) bad(fmt::format("{:.3g} FLOPs per image", flops));
  for (const auto& k : a.skips) {
    if (k.in_group < 0 || k.in_group >= ng || k.out_group < 0 || k.out_group >= ng ||
        k.src.size() != k.dst.size()) {
      bad("skip map");
    }
    for (size_t m = 0; m < k.src.size(); ++m) {
      if (k.src[m] < 0 || k.src[m] >= a.groups[k.in_group].width || k.dst[m] < 0 ||
          k.dst[m] >= a.groups[k.out_group].width) {
        bad("skip map index");
      }
    }
  }
  // The program, run on shapes: every value read was written before, every layer gets the
  // channels (and, after a flatten, the features) it was built for, and the result in slot 0 is
  // the logits as a matrix. This is what would otherwise fail inside LibTorch or in an ONNX
  // runtime.
  if (a.program.empty()) bad("an empty forward program");
  struct Shape {
    bool set = false;
    int group = 0;
    int64_t h = 1, w = 1, flat_hw = 1;
    bool flat = false;  // a matrix (after flatten or a linear layer)
  };
  std::vector<Shape> v(static_cast<size_t>(a.num_slots));
  v[0] = {true, 0, a.in_height, a.in_width, 1, false};
  auto slot = [&](int s, const char* what) -> Shape& {
    if (s < 0 || s >= a.num_slots) bad(fmt::format("forward program: {} slot {} out of range", what, s));
    return v[static_cast<size_t>(s)];
  };
  auto read = [&](int s, const char* what) -> Shape& {
    Shape& x = slot(s, what);
    if (!x.set) bad(fmt::format("forward program: {} reads slot {} before it is written", what, s));
    return x;
  };
  for (size_t oi = 0; oi < a.program.size(); ++oi) {
    const Op& op = a.program[oi];
    switch (op.kind) {
      case Op::Layer: {
        if (op.a < 0 || op.a >= static_cast<int>(a.layers.size())) {
          bad(fmt::format("forward program op #{}: field \"a\": layer index {} out of range (0..{})", oi,
                          op.a, a.layers.size() - 1));
        }
        const Layer& l = a.layers[static_cast<size_t>(op.a)];
        const std::string lw = fmt::format("layer '{}' (#{}) at program op #{}", l.name, op.a, oi);
        const Shape in = read(op.b, "a layer");
        if (in.group != l.in_group) {
          bad(fmt::format(
              "{}: field \"in_group\": built for group '{}' ({} units) but reads group '{}' ({} units)", lw,
              a.groups[static_cast<size_t>(l.in_group)].name, a.groups[static_cast<size_t>(l.in_group)].width,
              a.groups[static_cast<size_t>(in.group)].name, a.groups[static_cast<size_t>(in.group)].width));
        }
        Shape out{true, l.out_group, 1, 1, 1, true};
        if (l.kind == LayerKind::Conv) {
          if (in.flat) bad(lw + ": a convolution on a matrix");
          out.flat = false;
          out.h = (in.h + 2 * l.padding - l.kernel) / l.stride + 1;
          out.w = (in.w + 2 * l.padding - l.kernel) / l.stride + 1;
          if (in.h + 2 * l.padding < l.kernel || in.w + 2 * l.padding < l.kernel) {
            bad(lw + ": field \"kernel\": the input is too small for it");
          }
        } else {
          const int64_t features = in.flat ? in.flat_hw : -1;
          if (features != l.in_block) {
            bad(fmt::format("{}: field \"in_block\": built for {} features per input unit, gets {}", lw,
                            l.in_block, features));
          }
        }
        slot(op.c, "a layer") = out;
        break;
      }
      case Op::Relu: {
        const Shape& x = read(op.a, "relu");
        if (op.b != x.group) bad("forward program: relu names another group");
        break;
      }
      case Op::MaxPool: {
        Shape& x = read(op.a, "maxpool");
        if (x.flat || op.k < 1 || op.k > 64 || op.s < 1 || op.s > 64 || op.p < 0 || 2 * op.p > op.k) {
          bad("forward program: maxpool");
        }
        auto out = [&](int64_t n) {
          const double t = static_cast<double>(n + 2 * op.p - op.k) / static_cast<double>(op.s);
          int64_t o =
              (op.b != 0 ? static_cast<int64_t>(std::ceil(t)) : static_cast<int64_t>(std::floor(t))) + 1;
          if (op.b != 0 && (o - 1) * op.s >= n + op.p) --o;
          return o;
        };
        x.h = out(x.h);
        x.w = out(x.w);
        if (x.h < 1 || x.w < 1) bad("forward program: maxpool on too small an input");
        break;
      }
      case Op::GlobalAvgPool: {
        Shape& x = read(op.a, "gap");
        if (x.flat) bad("forward program: global pooling of a matrix");
        x.h = x.w = 1;
        break;
      }
      case Op::Flatten: {
        Shape& x = read(op.a, "flatten");
        if (x.flat) bad("forward program: flatten of a matrix");
        x.flat_hw = x.h * x.w;
        x.h = x.w = 1;
        x.flat = true;
        break;
      }
      case Op::Copy: {
        const Shape x = read(op.b, "copy");
        slot(op.a, "copy") = x;
        break;
      }
      case Op::Add: {
        const Shape src = read(op.b, "add");
        const Shape& dst = read(op.a, "add");
        if (src.flat != dst.flat || src.h != dst.h || src.w != dst.w) {
          bad("forward program: add of values of different shapes");
        }
        if (op.c < -1 || op.c >= static_cast<int>(a.skips.size())) bad("forward program: skip index");
        if (op.c == -1 ? a.groups[src.group].width != a.groups[dst.group].width
                       : (a.skips[op.c].in_group != src.group || a.skips[op.c].out_group != dst.group)) {
          bad("forward program: add of values from unmatched groups");
        }
        break;
      }
      default:
        bad("forward program: unknown op");
    }
  }
  if (!v[0].flat || v[0].group != ng - 1) bad("the forward program does not end in the logits");
}

// ---- JSON ----------------------------------------------------------------------------------

void to_json(nlohmann::json& j, const Arch& a) {
  j = nlohmann::json{{"model", a.model},        {"in_channels", a.in_channels}, {"in_height", a.in_height},
                     {"in_width", a.in_width},  {"classes", a.classes},         {"width_mult", a.width_mult},
                     {"num_slots", a.num_slots}};
  for (const auto& g : a.groups) {
    j["groups"].push_back({{"name", g.name},
                           {"width", g.width},
                           {"initial", g.initial},
                           {"prunable", g.prunable},
                           {"hw", g.hw}});
  }
  for (const auto& l : a.layers) {
    j["layers"].push_back({{"name", l.name},
                           {"kind", l.kind == LayerKind::Conv ? "conv" : "linear"},
                           {"in_group", l.in_group},
                           {"out_group", l.out_group},
                           {"in_block", l.in_block},
                           {"kernel", l.kernel},
                           {"stride", l.stride},
                           {"padding", l.padding},
                           {"out_hw", l.out_hw},
                           {"bias", l.bias},
                           {"bn", l.bn},
                           {"zero_init_bn", l.zero_init_bn}});
  }
  j["skips"] = nlohmann::json::array();
  for (const auto& s : a.skips) {
    j["skips"].push_back(
        {{"in_group", s.in_group}, {"out_group", s.out_group}, {"src", s.src}, {"dst", s.dst}});
  }
  static const char* names[] = {"layer", "relu", "maxpool", "gap", "flatten", "copy", "add"};
  for (const auto& op : a.program) {
    j["program"].push_back({{"op", names[op.kind]},
                            {"a", op.a},
                            {"b", op.b},
                            {"c", op.c},
                            {"k", op.k},
                            {"s", op.s},
                            {"p", op.p}});
  }
}

void from_json(const nlohmann::json& j, Arch& a) {
  if (j.is_object() && j.contains("format")) {  // an architecture file (arch_file.cpp)
    a = arch_from_file_json(j);
    return;
  }
  try {
    a = Arch{};
    j.at("model").get_to(a.model);
    j.at("in_channels").get_to(a.in_channels);
    j.at("in_height").get_to(a.in_height);
    j.at("in_width").get_to(a.in_width);
    j.at("classes").get_to(a.classes);
    j.at("width_mult").get_to(a.width_mult);
    j.at("num_slots").get_to(a.num_slots);
    for (const auto& g : j.at("groups")) {
      a.groups.push_back(Group{g.at("name"), g.at("width"), g.at("initial"), g.at("prunable"), g.at("hw")});
    }
    for (const auto& x : j.at("layers")) {
      Layer l;
      x.at("name").get_to(l.name);
      const std::string kind = x.at("kind").get<std::string>();
      if (kind != "conv" && kind != "linear") {
        throw Error("unknown layer kind '" + kind + "' in the architecture",
                    "the file is damaged or was edited; layers are conv or linear");
      }
      l.kind = kind == "conv" ? LayerKind::Conv : LayerKind::Linear;
      x.at("in_group").get_to(l.in_group);
      x.at("out_group").get_to(l.out_group);
      x.at("in_block").get_to(l.in_block);
      x.at("kernel").get_to(l.kernel);
      x.at("stride").get_to(l.stride);
      x.at("padding").get_to(l.padding);
      x.at("out_hw").get_to(l.out_hw);
      x.at("bias").get_to(l.bias);
      x.at("bn").get_to(l.bn);
      x.at("zero_init_bn").get_to(l.zero_init_bn);
      a.layers.push_back(l);
    }
    for (const auto& s : j.at("skips")) {
      a.skips.push_back(SkipMap{s.at("in_group"), s.at("out_group"), s.at("src"), s.at("dst")});
    }
    static const std::vector<std::string> names = {"layer",   "relu", "maxpool", "gap",
                                                   "flatten", "copy", "add"};
    for (const auto& x : j.at("program")) {
      const auto it = std::find(names.begin(), names.end(), x.at("op").get<std::string>());
      if (it == names.end()) {
        throw Error("unknown op in architecture: " + x.at("op").dump(),
                    "the file is damaged or was edited, or comes from a newer demp");
      }
      Op op{static_cast<Op::Kind>(it - names.begin()), x.at("a"), x.at("b"), x.at("c")};
      x.at("k").get_to(op.k);
      x.at("s").get_to(op.s);
      x.at("p").get_to(op.p);
      a.program.push_back(op);
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("malformed architecture description: ") + e.what(),
                "the checkpoint may be corrupt or from an incompatible demp version");
  }
}

}  // namespace demp::nn
