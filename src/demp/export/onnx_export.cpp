// The network as an ONNX graph (inference mode). Walks the architecture's program once, tracking
// each value slot's ONNX name and shape, so that every model the program language can describe
// exports without per-model code.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/export/export.h"

namespace demp::export_ {

using nlohmann::json;

namespace {

constexpr double kBnEps = 1e-5;  // nn::Model's BatchNorm epsilon

OnnxAttr attr_int(const std::string& name, int64_t v) {
  OnnxAttr a;
  a.kind = OnnxAttr::Int;
  a.name = name;
  a.i = v;
  return a;
}

OnnxAttr attr_ints(const std::string& name, std::vector<int64_t> v) {
  OnnxAttr a;
  a.kind = OnnxAttr::Ints;
  a.name = name;
  a.ints = std::move(v);
  return a;
}

std::vector<float> to_floats(const torch::Tensor& t) {
  const auto c = t.to(torch::kCPU, torch::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// A value slot of the program: its current ONNX value name and shape.
struct Slot {
  std::string name;
  int group = 0;
  int rank = 4;  // 4: N×C×H×W, 2: N×F
  int64_t h = 1, w = 1;
};

class GraphBuilder {
 public:
  GraphBuilder(const nn::Model& model, OnnxModel& out, int64_t multiple)
      : model_(model), a_(model.arch()), g_(out), multiple_(multiple) {}

  void run() {
    std::vector<Slot> v(a_.num_slots);
    v[0] = Slot{"input", 0, 4, a_.in_height, a_.in_width};
    for (size_t k = 0; k < a_.program.size(); ++k) {
      const nn::Op& op = a_.program[k];
      switch (op.kind) {
        case nn::Op::Layer:
          layer(op, v);
          break;
        case nn::Op::Relu:
          v[op.a].name = node("Relu", {v[op.a].name}, v[op.a].name + "_relu");
          break;
        case nn::Op::MaxPool:
          maxpool(op, v[op.a]);
          break;
        case nn::Op::GlobalAvgPool:
          v[op.a].name = node("GlobalAveragePool", {v[op.a].name}, v[op.a].name + "_gap");
          v[op.a].h = v[op.a].w = 1;
          break;
        case nn::Op::Flatten:
          // Channel-major like torch.flatten on N×C×H×W: feature c·H·W + y·W + x, which is
          // the order linear layers with in_block = H·W were trained on.
          v[op.a].name = node("Flatten", {v[op.a].name}, v[op.a].name + "_flat", {attr_int("axis", 1)});
          v[op.a].rank = 2;
          v[op.a].h = v[op.a].w = 1;
          break;
        case nn::Op::Copy:
          v[op.a] = v[op.b];
          break;
        case nn::Op::Add:
          add(op, v[op.a], v[op.b]);
          break;
      }
    }
    // The program leaves the logits in slot 0; give that value the public name.
    const std::string last = v[0].name;
    if (last == "input") {
      node("Identity", {last}, "logits");
      return;
    }
    for (auto& n : g_.nodes) {
      for (auto& o : n.outputs) o = o == last ? "logits" : o;
      for (auto& i : n.inputs) i = i == last ? "logits" : i;
    }
  }

 private:
  // A group's width in the graph: hidden groups padded with zero units to the channel multiple.
  int64_t width(int g) const {
    const nn::Group& x = a_.groups[g];
    if (!x.prunable || multiple_ <= 1) return x.width;
    return (x.width + multiple_ - 1) / multiple_ * multiple_;
  }

  // Adds a node with one output named after `want` (made unique); returns the output name.
  std::string node(const std::string& op, std::vector<std::string> inputs, const std::string& want,
                   std::vector<OnnxAttr> attrs = {}) {
    std::string name = want;
    for (int n = 2; !used_.insert(name).second; ++n) name = fmt::format("{}_{}", want, n);
    OnnxNode nd;
    nd.op_type = op;
    nd.name = name;
    nd.inputs = std::move(inputs);
    nd.outputs = {name};
    nd.attrs = std::move(attrs);
    g_.nodes.push_back(std::move(nd));
    return name;
  }

  std::string initializer(const std::string& name, std::vector<int64_t> dims, std::vector<float> data) {
    OnnxTensor t;
    t.name = name;
    t.dims = std::move(dims);
    t.floats = std::move(data);
    used_.insert(name);
    g_.initializers.push_back(std::move(t));
    return name;
  }

  std::string int_initializer(const std::string& want, std::vector<int64_t> data) {
    std::string name = want;
    for (int n = 2; !used_.insert(name).second; ++n) name = fmt::format("{}_{}", want, n);
    OnnxTensor t;
    t.name = name;
    t.dims = {static_cast<int64_t>(data.size())};
    t.ints = std::move(data);
    t.is_int64 = true;
    g_.initializers.push_back(std::move(t));
    return name;
  }

  // Conv or linear with its BatchNorm folded in: y = scale·(W x + b − μ) + β with
  // scale = γ / sqrt(σ² + ε) becomes W' = scale·W, b' = scale·(b − μ) + β. The fold is the same
  // affine map (no nonlinearity sits between the two); it is computed in double so that the only
  // difference to demp's unfolded float evaluation is float rounding. Padding units (see
  // width()) get zero weights and bias: their outputs are exactly 0 everywhere, and nothing reads
  // them.
  void layer(const nn::Op& op, std::vector<Slot>& v) {
    const nn::Layer& l = a_.layers[op.a];
    const nn::LayerTensors& t = model_.layers()[op.a];
    torch::NoGradGuard no_grad;
    torch::Tensor w = t.weight.detach().to(torch::kCPU, torch::kDouble).contiguous();
    const int64_t out = w.size(0);
    torch::Tensor b =
        l.bias ? t.bias.detach().to(torch::kCPU, torch::kDouble) : torch::zeros({out}, torch::kDouble);
    if (l.bn) {
      const auto scale = t.gamma.detach().to(torch::kCPU, torch::kDouble) /
                         (t.running_var.detach().to(torch::kCPU, torch::kDouble) + kBnEps).sqrt();
      std::vector<int64_t> shape(w.dim(), 1);
      shape[0] = out;
      w = w * scale.view(shape);
      b = (b - t.running_mean.detach().to(torch::kCPU, torch::kDouble)) * scale +
          t.beta.detach().to(torch::kCPU, torch::kDouble);
    }
    const int64_t pout = width(l.out_group), pin = width(l.in_group) * l.in_block;
    if (pout != out || pin != w.size(1)) {
      // Linear after flatten: unit c owns features [c·block, (c+1)·block), so the real units'
      // features stay where they are and the padding units' come after them.
      auto shape = w.sizes().vec();
      shape[0] = pout;
      shape[1] = l.kind == nn::LayerKind::Conv ? width(l.in_group) : pin;
      torch::Tensor pw = torch::zeros(shape, torch::kDouble);
      pw.slice(0, 0, out).slice(1, 0, w.size(1)).copy_(w);
      torch::Tensor pb = torch::zeros({pout}, torch::kDouble);
      pb.slice(0, 0, out).copy_(b);
      w = pw;
      b = pb;
    }
    const bool has_bias = l.bias || l.bn;
    const std::string wn = initializer(l.name + ".weight", w.sizes().vec(), to_floats(w));
    std::vector<std::string> inputs = {v[op.b].name, wn};
    if (has_bias) inputs.push_back(initializer(l.name + ".bias", {pout}, to_floats(b)));

    Slot s = v[op.b];
    s.group = l.out_group;
    if (l.kind == nn::LayerKind::Conv) {
      if (s.rank != 4) throw Error("layer " + l.name + " is a convolution over flattened features");
      s.name =
          node("Conv", inputs, l.name,
               {attr_ints("kernel_shape", {l.kernel, l.kernel}), attr_ints("strides", {l.stride, l.stride}),
                attr_ints("pads", {l.padding, l.padding, l.padding, l.padding}),
                attr_ints("dilations", {1, 1}), attr_int("group", 1)});
      s.h = (s.h + 2 * l.padding - l.kernel) / l.stride + 1;
      s.w = (s.w + 2 * l.padding - l.kernel) / l.stride + 1;
    } else {
      if (s.rank != 2) throw Error("layer " + l.name + " is a linear layer over unflattened input");
      s.name = node("Gemm", inputs, l.name, {attr_int("transB", 1)});
    }
    v[op.c] = s;
  }

  // PyTorch's ceil mode (the last window must start inside the input or its left padding) is
  // written as explicit extra end padding with floor mode, which every runtime reads the same
  // way; runtimes have disagreed on ceil_mode's edge cases.
  void maxpool(const nn::Op& op, Slot& s) {
    const bool ceil_mode = op.b != 0;
    auto size = [&](int64_t n, bool ceil) {
      const int64_t span = n + 2 * op.p - op.k;
      int64_t o = (ceil ? (span + op.s - 1) / op.s : span / op.s) + 1;
      if (ceil && (o - 1) * op.s >= n + op.p) --o;
      return o;
    };
    const int64_t oh = size(s.h, ceil_mode), ow = size(s.w, ceil_mode);
    const int64_t eh = std::max<int64_t>(0, (oh - 1) * op.s + op.k - (s.h + 2 * op.p));
    const int64_t ew = std::max<int64_t>(0, (ow - 1) * op.s + op.k - (s.w + 2 * op.p));
    std::vector<OnnxAttr> attrs = {attr_ints("kernel_shape", {op.k, op.k}),
                                   attr_ints("strides", {op.s, op.s})};
    if (op.p + std::max(eh, ew) < op.k) {
      attrs.push_back(attr_ints("pads", {op.p, op.p, op.p + eh, op.p + ew}));
    } else {
      // Padding as large as the window is invalid ONNX; only then rely on ceil_mode.
      attrs.push_back(attr_ints("pads", {op.p, op.p, op.p, op.p}));
      attrs.push_back(attr_int("ceil_mode", ceil_mode ? 1 : 0));
    }
    s.name = node("MaxPool", {s.name}, s.name + "_pool", std::move(attrs));
    s.h = oh;
    s.w = ow;
  }

  // dst += src. A non-identity skip map (out[:, dst[m]] += in[:, src[m]]) becomes an exact
  // channel gather: output channel c takes source channel src[m] where dst[m] == c, else a zero
  // channel (a padding unit of the source, which is exactly 0, or one appended by a Pad node).
  // Adding 0.0 changes no value, so the result equals demp's index_add bit for bit.
  void add(const nn::Op& op, Slot& dst, const Slot& src) {
    std::string rhs = src.name;
    if (op.c >= 0) {
      const nn::SkipMap& m = a_.skips[op.c];
      const int64_t win = a_.groups[m.in_group].width, wout = a_.groups[m.out_group].width;
      const bool identity = m.identity() && static_cast<int64_t>(m.src.size()) == win &&
                            static_cast<int64_t>(m.dst.size()) == wout;
      if (!identity) {
        // The zero channel: the source's first padding unit if it has one, else appended.
        const int64_t zero = win < width(m.in_group) ? win : width(m.in_group);
        std::vector<int64_t> index(width(m.out_group), zero);
        for (size_t i = 0; i < m.src.size(); ++i) index[m.dst[i]] = m.src[i];
        bool complete = true;
        for (int64_t x : index) complete = complete && x < width(m.in_group);
        std::string from = src.name;
        if (!complete) {
          std::vector<int64_t> pads(2 * src.rank, 0);
          pads[src.rank + 1] = 1;  // one more channel at the end of axis 1
          from = node("Pad", {src.name, int_initializer(fmt::format("skip{}.pads", op.c), pads)},
                      src.name + "_pad0");
        }
        rhs = node("Gather", {from, int_initializer(fmt::format("skip{}.index", op.c), index)},
                   fmt::format("skip{}", op.c), {attr_int("axis", 1)});
      }
    }
    dst.name = node("Add", {dst.name, rhs}, dst.name + "_add");
  }

  const nn::Model& model_;
  const nn::Arch& a_;
  OnnxModel& g_;
  int64_t multiple_;
  std::set<std::string> used_{"input", "logits"};
};

std::string doubles(const std::vector<double>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += fmt::format("{}{:.17g}", i ? ", " : "", v[i]);
  return s + "]";
}

}  // namespace

OnnxModel build_onnx(const nn::Model& model, const ExportInfo& info, int64_t opset,
                     int64_t channel_multiple) {
  if (opset < kMinOpset || opset > kMaxOpset) {
    throw Error(fmt::format("ONNX opset {} is not supported", opset),
                fmt::format("use an opset from {} to {}", kMinOpset, kMaxOpset));
  }
  if (channel_multiple < 1 || channel_multiple > 1024) {
    throw Error(fmt::format("channel multiple {} is out of range", channel_multiple),
                "use 1 (no padding) or a small power of two such as 8 or 16");
  }
  const nn::Arch& a = model.arch();
  OnnxModel m;
  m.opset = opset;
  m.producer_version = "0.1.0";
  m.graph_name = "demp_" + a.model;
  OnnxValue in;
  in.name = "input";
  in.dims = {-1, a.in_channels, a.in_height, a.in_width};
  in.symbols = {"N", "", "", ""};
  const std::string norm_text =
      info.norm.known() ? fmt::format(
                              "pixel values scaled to [0, 1] (÷255), then per channel c: (x - mean[c]) / "
                              "std[c] with mean {} and std {}",
                              doubles(info.norm.mean), doubles(info.norm.std))
                        : std::string("normalised as in training (the normalisation was not recorded)");
  in.doc = fmt::format("float32 N×{}×{}×{} images, {}", a.in_channels, a.in_height, a.in_width, norm_text);
  m.inputs.push_back(in);
  OnnxValue out;
  out.name = "logits";
  out.dims = {-1, a.classes};
  out.symbols = {"N", ""};
  out.doc = fmt::format("float32 N×{} class scores (softmax gives probabilities)", a.classes);
  m.outputs.push_back(out);
  m.doc = fmt::format(
      "{} ({} units of {}, {} parameters, {} FLOPs/image) trained and pruned by demp, in inference "
      "mode (BatchNorm folded into the preceding layer). Input 'input': {}. Output 'logits': {}. "
      "The batch size N is dynamic.{}",
      a.model, a.units(), a.initial_units(), a.params(), a.flops(), in.doc, out.doc,
      channel_multiple > 1
          ? fmt::format(" Hidden layers are padded with zero units to multiples of {} channels "
                        "(same outputs; widths that blocked kernels run fast).",
                        channel_multiple)
          : std::string());
  m.metadata = {{"demp.format", "demp-onnx-1"},
                {"demp.arch", json(a).dump()},
                {"demp.meta", info.meta.dump()},
                {"demp.input_scale", "pixel / 255"},
                {"demp.channel_multiple", std::to_string(channel_multiple)}};
  if (info.norm.known()) {
    m.metadata.emplace_back("demp.normalization.mean", doubles(info.norm.mean));
    m.metadata.emplace_back("demp.normalization.std", doubles(info.norm.std));
  }
  GraphBuilder(model, m, channel_multiple).run();
  return m;
}

void write_onnx(const std::string& path, const nn::Model& model, const ExportInfo& info, int64_t opset,
                int64_t channel_multiple) {
  write_file_atomic(path, serialize_onnx(build_onnx(model, info, opset, channel_multiple)));
}

}  // namespace demp::export_
