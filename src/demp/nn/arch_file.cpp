// Architecture files: the user-facing form of nn::Arch (docs/architecture.md).
//
// The internal form (to_json/from_json in arch.cpp, stored in checkpoints) is indices and derived
// sizes; the file form is names and only what a person decides (widths, kernels, the program).
// Everything else is computed here by running the program on shapes, which is also where every
// mistake is caught and reported with the layer, op or group and the field at fault.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/nn/arch.h"

namespace demp::nn {
namespace {

using nlohmann::json;

const char* kHint = "see docs/architecture.md (the file format) and examples/arch/";

[[noreturn]] void fail(const std::string& what) { throw Error(what, kHint); }

std::string type_name(const json& v) {
  if (v.is_number_integer() || v.is_number_unsigned()) return "an integer";
  if (v.is_number_float()) return "a number";
  const std::string t = v.type_name();
  return (t == "object" || t == "array") ? "an " + t : "a " + t;
}

// Fields of one JSON object, read with messages that say where (`where`: "layer 'conv1' (#0)").
class Obj {
 public:
  Obj(const json& j, std::string where, std::vector<std::string> allowed) : j_(j), where_(std::move(where)) {
    if (!j.is_object()) fail(where_ + ": expected an object, got " + type_name(j) + " " + j.dump());
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (std::find(allowed.begin(), allowed.end(), it.key()) == allowed.end()) {
        std::string list;
        for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
        fail(fmt::format("{}: unknown field \"{}\" (known: {})", where_, it.key(), list));
      }
    }
  }
  bool has(const char* k) const { return j_.contains(k); }
  const std::string& where() const { return where_; }

  std::string str(const char* k, std::optional<std::string> def = std::nullopt) const {
    if (!j_.contains(k)) {
      if (def) return *def;
      missing(k);
    }
    const json& v = j_.at(k);
    if (!v.is_string()) wrong(k, "a string", v);
    return v.get<std::string>();
  }
  int64_t integer(const char* k, std::optional<int64_t> def = std::nullopt, int64_t lo = 0,
                  int64_t hi = int64_t{1} << 40) const {
    if (!j_.contains(k)) {
      if (def) return *def;
      missing(k);
    }
    const json& v = j_.at(k);
    if (!v.is_number_integer() && !v.is_number_unsigned()) wrong(k, "an integer", v);
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi)) range(k, v, lo, hi);
    const int64_t x = v.get<int64_t>();
    if (x < lo || x > hi) range(k, v, lo, hi);
    return x;
  }
  bool boolean(const char* k, bool def) const {
    if (!j_.contains(k)) return def;
    const json& v = j_.at(k);
    if (!v.is_boolean()) wrong(k, "true or false", v);
    return v.get<bool>();
  }
  std::vector<int64_t> ints(const json& v, const std::string& field) const {
    if (!v.is_array())
      fail(fmt::format("{}: field \"{}\": expected an array of integers, got {} {}", where_, field,
                       type_name(v), v.dump()));
    std::vector<int64_t> out;
    for (const auto& x : v) {
      if (!x.is_number_integer() && !x.is_number_unsigned()) {
        fail(fmt::format("{}: field \"{}\": expected integers, got {} {}", where_, field, type_name(x),
                         x.dump()));
      }
      out.push_back(x.get<int64_t>());
    }
    return out;
  }
  const json& raw(const char* k) const {
    if (!j_.contains(k)) missing(k);
    return j_.at(k);
  }

 private:
  [[noreturn]] void missing(const char* k) const {
    fail(fmt::format("{}: field \"{}\" is missing", where_, k));
  }
  [[noreturn]] void wrong(const char* k, const char* want, const json& v) const {
    fail(fmt::format("{}: field \"{}\": expected {}, got {} {}", where_, k, want, type_name(v), v.dump()));
  }
  [[noreturn]] void range(const char* k, const json& v, int64_t lo, int64_t hi) const {
    fail(fmt::format("{}: field \"{}\": {} is out of range ({} .. {})", where_, k, v.dump(), lo, hi));
  }
  const json& j_;
  std::string where_;
};

std::string layer_where(const std::string& name, size_t i) {
  return fmt::format("layer '{}' (#{})", name, i);
}

int64_t pool_out(int64_t n, int64_t k, int64_t s, int64_t p, bool ceil_mode) {
  const double x = static_cast<double>(n + 2 * p - k) / static_cast<double>(s);
  int64_t o = (ceil_mode ? static_cast<int64_t>(std::ceil(x)) : static_cast<int64_t>(std::floor(x))) + 1;
  if (ceil_mode && (o - 1) * s >= n + p) --o;  // PyTorch: the last window starts inside
  return o;
}

// One of the file's shape fields against the data's.
int64_t pick(const char* what, const std::optional<int64_t>& file, int64_t data) {
  if (file && data > 0 && *file != data) {
    throw Error(fmt::format("the architecture's {} is {} but the data's is {}", what, *file, data),
                "leave the field out of the file to take it from the data, or use matching data");
  }
  if (file) return *file;
  if (data > 0) return data;
  fail(fmt::format("the architecture file gives no {} and no data set gives it", what));
}

}  // namespace

Arch arch_from_file_json(const json& j, const ArchShape& data) {
  const Obj top(j, "architecture",
                {"format", "version", "name", "input", "classes", "groups", "layers", "program", "comment"});
  if (top.str("format") != "demp-arch") {
    fail("architecture: field \"format\" is \"" + top.str("format") + "\", not \"demp-arch\"");
  }
  const int64_t version = top.integer("version", std::nullopt, 0, int64_t{1} << 30);
  if (version != 1) {
    throw Error(fmt::format("architecture: version {} is not one this demp reads (1)", version),
                "write a version-1 file (docs/architecture.md), or update demp");
  }
  Arch a;
  a.model = top.str("name", std::string("custom"));
  if (a.model.empty()) fail("architecture: field \"name\" is empty");
  std::optional<int64_t> ch, h, w, cl;
  if (top.has("input")) {
    const Obj in(top.raw("input"), "architecture: input", {"channels", "height", "width"});
    ch = in.integer("channels", std::nullopt, 1, 4096);
    h = in.integer("height", std::nullopt, 1, 65536);
    w = in.integer("width", std::nullopt, 1, 65536);
  }
  if (top.has("classes")) cl = top.integer("classes", std::nullopt, 2, int64_t{1} << 24);
  a.in_channels = pick("input channels", ch, data.channels);
  a.in_height = pick("input height", h, data.height);
  a.in_width = pick("input width", w, data.width);
  a.classes = pick("number of classes", cl, data.classes);
  a.width_mult = 1.0;

  // Groups: "input" first, the file's hidden groups, "logits" last.
  std::map<std::string, int> group_id;
  a.groups.push_back(Group{"input", a.in_channels, a.in_channels, false, a.in_height * a.in_width});
  group_id["input"] = 0;
  const json& gs = top.raw("groups");
  if (!gs.is_array()) fail("architecture: field \"groups\": expected an array, got " + type_name(gs));
  for (size_t i = 0; i < gs.size(); ++i) {
    const std::string name = gs[i].is_object() && gs[i].contains("name") && gs[i]["name"].is_string()
                                 ? gs[i]["name"].get<std::string>()
                                 : std::string("?");
    const Obj g(gs[i], fmt::format("group '{}' (#{})", name, i),
                {"name", "width", "initial", "prunable", "comment"});
    const std::string n = g.str("name");
    if (n.empty()) fail(g.where() + ": field \"name\" is empty");
    if (n == "input" || n == "logits")
      fail(g.where() + ": field \"name\": '" + n +
           "' is reserved (the input and the classifier's outputs are implicit groups)");
    if (group_id.count(n)) fail(g.where() + ": field \"name\": a second group named '" + n + "'");
    const int64_t width = g.integer("width", std::nullopt, 1, int64_t{1} << 24);
    const int64_t initial = g.integer("initial", width, 1, int64_t{1} << 24);
    if (initial < width)
      fail(fmt::format("{}: field \"initial\": {} is less than the width {}", g.where(), initial, width));
    group_id[n] = static_cast<int>(a.groups.size());
    a.groups.push_back(Group{n, width, initial, g.boolean("prunable", true), 1});
  }
  group_id["logits"] = static_cast<int>(a.groups.size());
  a.groups.push_back(Group{"logits", a.classes, a.classes, false, 1});

  // Layers (their input group comes from the program).
  std::map<std::string, int> layer_id;
  std::vector<std::string> declared_in;
  const json& ls = top.raw("layers");
  if (!ls.is_array() || ls.empty()) fail("architecture: field \"layers\": expected a non-empty array");
  for (size_t i = 0; i < ls.size(); ++i) {
    const std::string name = ls[i].is_object() && ls[i].contains("name") && ls[i]["name"].is_string()
                                 ? ls[i]["name"].get<std::string>()
                                 : std::string("?");
    const Obj o(ls[i], layer_where(name, i),
                {"name", "kind", "in", "out", "kernel", "stride", "padding", "bias", "bn", "zero_init_bn",
                 "comment"});
    Layer l;
    l.name = o.str("name");
    if (l.name.empty()) fail(o.where() + ": field \"name\" is empty");
    if (layer_id.count(l.name)) fail(o.where() + ": field \"name\": a second layer named '" + l.name + "'");
    const std::string kind = o.str("kind");
    if (kind != "conv" && kind != "linear")
      fail(o.where() + ": field \"kind\": unknown kind '" + kind + "' (conv or linear)");
    l.kind = kind == "conv" ? LayerKind::Conv : LayerKind::Linear;
    const std::string out = o.str("out");
    if (!group_id.count(out) || out == "input")
      fail(o.where() + ": field \"out\": no group named '" + out + "'");
    l.out_group = group_id[out];
    const std::string in = o.str("in", std::string());
    if (!in.empty() && !group_id.count(in)) fail(o.where() + ": field \"in\": no group named '" + in + "'");
    declared_in.push_back(in);
    if (l.kind == LayerKind::Conv) {
      l.kernel = o.integer("kernel", std::nullopt, 1, 64);
      l.stride = o.integer("stride", 1, 1, 64);
      l.padding = o.integer("padding", 0, 0, 64);
    } else {
      for (const char* k : {"kernel", "stride", "padding"}) {
        if (o.has(k)) fail(o.where() + ": field \"" + k + "\": a linear layer has none");
      }
    }
    l.bn = o.boolean("bn", false);
    l.bias = o.boolean("bias", !l.bn);
    l.zero_init_bn = o.boolean("zero_init_bn", false);
    if (l.zero_init_bn && !l.bn)
      fail(o.where() + ": field \"zero_init_bn\": the layer has no BatchNorm (\"bn\": false)");
    layer_id[l.name] = static_cast<int>(a.layers.size());
    a.layers.push_back(l);
  }

  // The program, run on shapes.
  struct Value {
    bool set = false;
    int group = 0;
    int64_t h = 1, w = 1, flat_hw = 1;
    bool flat = false;
  };
  std::map<std::string, int> slot_id{{"x", 0}};
  std::vector<Value> v(1);
  v[0] = {true, 0, a.in_height, a.in_width, 1, false};
  std::vector<int> layer_used(a.layers.size(), -1);
  const json& ps = top.raw("program");
  if (!ps.is_array() || ps.empty()) fail("architecture: field \"program\": expected a non-empty array");
  for (size_t i = 0; i < ps.size(); ++i) {
    // Short forms: "relu", "gap", "flatten", "maxpool" (2x2, stride 2), or a layer's name.
    json opj = ps[i];
    if (opj.is_string()) {
      const std::string s = opj.get<std::string>();
      if (s == "relu" || s == "gap" || s == "flatten" || s == "maxpool") {
        opj = json{{"op", s}};
      } else {
        opj = json{{"op", "layer"}, {"layer", s}};
      }
    }
    std::string op_name =
        opj.is_object() && opj.contains("op") && opj["op"].is_string() ? opj["op"].get<std::string>() : "?";
    std::string where = fmt::format("program op #{} ({})", i, op_name);
    if (op_name == "layer" && opj.contains("layer") && opj["layer"].is_string()) {
      where = fmt::format("program op #{} (layer '{}')", i, opj["layer"].get<std::string>());
    }
    static const std::map<std::string, std::vector<std::string>> fields = {
        {"layer", {"op", "layer", "from", "to", "comment"}},
        {"relu", {"op", "on", "comment"}},
        {"maxpool", {"op", "on", "kernel", "stride", "padding", "ceil", "comment"}},
        {"gap", {"op", "on", "comment"}},
        {"flatten", {"op", "on", "comment"}},
        {"copy", {"op", "from", "to", "comment"}},
        {"add", {"op", "from", "to", "map", "comment"}}};
    if (!opj.is_object()) fail(where + ": expected an object or a string, got " + type_name(opj));
    if (!fields.count(op_name)) {
      fail(where + ": field \"op\": unknown op '" + op_name +
           "' (layer, relu, maxpool, gap, flatten, copy, add)");
    }
    const Obj o(opj, where, fields.at(op_name));
    auto read = [&](const char* field) -> int {
      const std::string s = o.str(field, std::string("x"));
      if (!slot_id.count(s) || !v[static_cast<size_t>(slot_id[s])].set) {
        fail(fmt::format("{}: field \"{}\": value '{}' is read before it is written", where, field, s));
      }
      return slot_id[s];
    };
    auto write = [&](const char* field) -> int {
      const std::string s = o.str(field, std::string("x"));
      if (s.empty()) fail(where + ": field \"" + field + "\" is empty");
      if (!slot_id.count(s)) {
        slot_id[s] = static_cast<int>(v.size());
        v.emplace_back();
      }
      return slot_id[s];
    };
    if (op_name == "layer") {
      const std::string ln = o.str("layer");
      if (!layer_id.count(ln)) fail(where + ": field \"layer\": no layer named '" + ln + "'");
      const int li = layer_id[ln];
      Layer& l = a.layers[static_cast<size_t>(li)];
      const std::string lw = layer_where(l.name, static_cast<size_t>(li));
      if (layer_used[static_cast<size_t>(li)] >= 0) {
        fail(fmt::format(
            "{}: {} already runs at op #{} (a layer holds its own weights: declare another layer)", where, lw,
            layer_used[static_cast<size_t>(li)]));
      }
      layer_used[static_cast<size_t>(li)] = static_cast<int>(i);
      const int src = read("from");
      const Value in = v[static_cast<size_t>(src)];
      l.in_group = in.group;
      const std::string& din = declared_in[static_cast<size_t>(li)];
      if (!din.empty() && group_id[din] != in.group) {
        fail(fmt::format("{}: field \"in\": says group '{}' but the program feeds it group '{}' ({})", lw,
                         din, a.groups[static_cast<size_t>(in.group)].name, where));
      }
      if (in.group == static_cast<int>(a.groups.size()) - 1)
        fail(fmt::format("{}: reads the logits ({})", lw, where));
      Value out{true, l.out_group, 1, 1, 1, true};
      if (l.kind == LayerKind::Conv) {
        if (in.flat)
          fail(
              fmt::format("{}: a convolution on flattened features ({}: the value was flattened or comes "
                          "from a linear layer)",
                          lw, where));
        if (in.h + 2 * l.padding < l.kernel || in.w + 2 * l.padding < l.kernel) {
          fail(fmt::format("{}: field \"kernel\": {}x{} does not fit the {}x{} input (padding {}) ({})", lw,
                           l.kernel, l.kernel, in.h, in.w, l.padding, where));
        }
        out.flat = false;
        out.h = (in.h + 2 * l.padding - l.kernel) / l.stride + 1;
        out.w = (in.w + 2 * l.padding - l.kernel) / l.stride + 1;
        l.out_hw = out.h * out.w;
      } else {
        if (!in.flat) {
          fail(
              fmt::format("{}: a linear layer on a {}x{} feature map ({}: add \"flatten\" before it, or "
                          "\"gap\" then \"flatten\")",
                          lw, in.h, in.w, where));
        }
        l.in_block = in.flat_hw;
        l.out_hw = 1;
      }
      const int dst = write("to");
      v[static_cast<size_t>(dst)] = out;
      a.program.push_back(Op{Op::Layer, li, src, dst});
    } else if (op_name == "relu") {
      const int s = read("on");
      Value& x = v[static_cast<size_t>(s)];
      if (x.group == 0) fail(where + ": a ReLU on the input (it is no unit group)");
      if (x.group == static_cast<int>(a.groups.size()) - 1) fail(where + ": a ReLU on the logits");
      a.groups[static_cast<size_t>(x.group)].hw = x.h * x.w * x.flat_hw;
      a.program.push_back(Op{Op::Relu, s, x.group, 0});
    } else if (op_name == "maxpool") {
      const int s = read("on");
      Value& x = v[static_cast<size_t>(s)];
      Op op{Op::MaxPool, s, o.boolean("ceil", false) ? 1 : 0, 0};
      op.k = o.integer("kernel", 2, 1, 64);
      op.s = o.integer("stride", op.k, 1, 64);
      op.p = o.integer("padding", 0, 0, 64);
      if (2 * op.p > op.k)
        fail(fmt::format("{}: field \"padding\": {} is more than half the kernel {}", where, op.p, op.k));
      if (x.flat) fail(where + ": max-pooling of flattened features");
      x.h = pool_out(x.h, op.k, op.s, op.p, op.b != 0);
      x.w = pool_out(x.w, op.k, op.s, op.p, op.b != 0);
      if (x.h < 1 || x.w < 1) fail(where + ": field \"kernel\": the input is too small to pool");
      a.program.push_back(op);
    } else if (op_name == "gap") {
      const int s = read("on");
      Value& x = v[static_cast<size_t>(s)];
      if (x.flat) fail(where + ": global pooling of flattened features");
      x.h = x.w = 1;
      a.program.push_back(Op{Op::GlobalAvgPool, s, 0, 0});
    } else if (op_name == "flatten") {
      const int s = read("on");
      Value& x = v[static_cast<size_t>(s)];
      if (x.flat) fail(where + ": the value is already flat");
      x.flat_hw = x.h * x.w;
      x.h = x.w = 1;
      x.flat = true;
      a.program.push_back(Op{Op::Flatten, s, 0, 0});
    } else if (op_name == "copy") {
      const int src = read("from");
      const int dst = write("to");
      v[static_cast<size_t>(dst)] = v[static_cast<size_t>(src)];
      a.program.push_back(Op{Op::Copy, dst, src, 0});
    } else {  // add: to += from
      const int src = read("from");
      const int dst = read("to");
      const Value s = v[static_cast<size_t>(src)], d = v[static_cast<size_t>(dst)];
      const Group& gs_ = a.groups[static_cast<size_t>(s.group)];
      const Group& gd = a.groups[static_cast<size_t>(d.group)];
      if (s.flat != d.flat || s.h != d.h || s.w != d.w) {
        fail(fmt::format(
            "{}: adds a {}x{} value (group '{}') to a {}x{} one (group '{}'); the shapes must match "
            "(a strided block needs a strided projection on its shortcut)",
            where, s.h, s.w, gs_.name, d.h, d.w, gd.name));
      }
      int skip = -1;
      if (o.has("map")) {
        const Obj m(o.raw("map"), where + ": field \"map\"", {"src", "dst"});
        SkipMap k{s.group, d.group, m.ints(m.raw("src"), "map.src"), m.ints(m.raw("dst"), "map.dst")};
        if (k.src.size() != k.dst.size()) fail(where + ": field \"map\": src and dst have different lengths");
        for (size_t q = 0; q < k.src.size(); ++q) {
          if (k.src[q] < 0 || k.src[q] >= gs_.width || k.dst[q] < 0 || k.dst[q] >= gd.width) {
            fail(fmt::format(
                "{}: field \"map\": entry {} maps unit {} of '{}' (width {}) to unit {} of '{}' (width {})",
                where, q, k.src[q], gs_.name, gs_.width, k.dst[q], gd.name, gd.width));
          }
        }
        a.skips.push_back(k);
        skip = static_cast<int>(a.skips.size()) - 1;
      } else if (s.group != d.group) {
        if (gs_.width != gd.width) {
          fail(
              fmt::format("{}: adds group '{}' ({} units) to group '{}' ({} units): the widths differ "
                          "(project the shortcut with a 1x1 conv layer into '{}')",
                          where, gs_.name, gs_.width, gd.name, gd.width, gd.name));
        }
        SkipMap k{s.group, d.group, {}, {}};
        for (int64_t u = 0; u < gd.width; ++u) {
          k.src.push_back(u);
          k.dst.push_back(u);
        }
        a.skips.push_back(k);
        skip = static_cast<int>(a.skips.size()) - 1;
      }
      a.program.push_back(Op{Op::Add, dst, src, skip});
    }
  }
  a.num_slots = static_cast<int>(v.size());
  for (size_t i = 0; i < a.layers.size(); ++i) {
    if (layer_used[i] < 0) fail(layer_where(a.layers[i].name, i) + ": never runs (no program op names it)");
  }
  for (size_t g = 1; g + 1 < a.groups.size(); ++g) {
    bool produced = false;
    for (const auto& l : a.layers) produced = produced || l.out_group == static_cast<int>(g);
    if (!produced)
      fail(fmt::format("group '{}' (#{}): no layer produces it (no layer has \"out\": \"{}\")",
                       a.groups[g].name, g - 1, a.groups[g].name));
    bool activated = false;
    for (const auto& op : a.program)
      activated = activated || (op.kind == Op::Relu && op.b == static_cast<int>(g));
    if (!activated && a.groups[g].prunable) {
      fail(
          fmt::format("group '{}' (#{}): no relu follows it (a prunable group's units are its ReLU outputs; "
                      "add \"relu\" after its layer, or mark it \"prunable\": false)",
                      a.groups[g].name, g - 1));
    }
  }
  if (!v[0].flat || v[0].group != static_cast<int>(a.groups.size()) - 1) {
    fail(fmt::format(
        "program: value 'x' ends as group '{}'{}, not the logits (the program must end with a linear layer "
        "into \"logits\" written to 'x')",
        a.groups[static_cast<size_t>(v[0].group)].name, v[0].flat ? "" : " (a feature map)"));
  }
  try {
    check_arch(a);
  } catch (const Error& e) {
    throw Error(e.what(), e.hint().empty() ? kHint : e.hint());
  }
  return a;
}

namespace {

// The file with its keys in reading order ("op" first, then its operands).
nlohmann::ordered_json file_json(const Arch& a) {
  using json = nlohmann::ordered_json;
  json j = json::object();
  j["format"] = "demp-arch";
  j["version"] = 1;
  j["name"] = a.model;
  j["input"] = {{"channels", a.in_channels}, {"height", a.in_height}, {"width", a.in_width}};
  j["classes"] = a.classes;
  j["groups"] = json::array();
  for (size_t g = 1; g + 1 < a.groups.size(); ++g) {
    const Group& x = a.groups[g];
    json o{{"name", x.name}, {"width", x.width}};
    if (x.initial != x.width) o["initial"] = x.initial;
    if (!x.prunable) o["prunable"] = false;
    j["groups"].push_back(o);
  }
  j["layers"] = json::array();
  for (const auto& l : a.layers) {
    json o{{"name", l.name},
           {"kind", l.kind == LayerKind::Conv ? "conv" : "linear"},
           {"in", a.groups[static_cast<size_t>(l.in_group)].name},
           {"out", a.groups[static_cast<size_t>(l.out_group)].name}};
    if (l.kind == LayerKind::Conv) {
      o["kernel"] = l.kernel;
      o["stride"] = l.stride;
      o["padding"] = l.padding;
    }
    o["bn"] = l.bn;
    if (l.bias != !l.bn) o["bias"] = l.bias;
    if (l.zero_init_bn) o["zero_init_bn"] = true;
    j["layers"].push_back(o);
  }
  auto slot = [](int s) {
    return s == 0 ? std::string("x") : s == 1 ? std::string("skip") : fmt::format("s{}", s);
  };
  j["program"] = json::array();
  for (const auto& op : a.program) {
    json o;
    switch (op.kind) {
      case Op::Layer:
        if (op.b == 0 && op.c == 0) {
          o = a.layers[static_cast<size_t>(op.a)].name;
        } else {
          o = {{"op", "layer"},
               {"layer", a.layers[static_cast<size_t>(op.a)].name},
               {"from", slot(op.b)},
               {"to", slot(op.c)}};
        }
        break;
      case Op::Relu:
        o = op.a == 0 ? json("relu") : json{{"op", "relu"}, {"on", slot(op.a)}};
        break;
      case Op::GlobalAvgPool:
        o = op.a == 0 ? json("gap") : json{{"op", "gap"}, {"on", slot(op.a)}};
        break;
      case Op::Flatten:
        o = op.a == 0 ? json("flatten") : json{{"op", "flatten"}, {"on", slot(op.a)}};
        break;
      case Op::MaxPool:
        o = {{"op", "maxpool"}, {"kernel", op.k}, {"stride", op.s}, {"padding", op.p}, {"ceil", op.b != 0}};
        if (op.a != 0) o["on"] = slot(op.a);
        break;
      case Op::Copy:
        o = {{"op", "copy"}, {"from", slot(op.b)}, {"to", slot(op.a)}};
        break;
      case Op::Add: {
        o = {{"op", "add"}, {"from", slot(op.b)}, {"to", slot(op.a)}};
        if (op.c >= 0) {
          const SkipMap& k = a.skips[static_cast<size_t>(op.c)];
          const bool full =
              k.identity() &&
              static_cast<int64_t>(k.src.size()) == a.groups[static_cast<size_t>(k.in_group)].width &&
              static_cast<int64_t>(k.dst.size()) == a.groups[static_cast<size_t>(k.out_group)].width;
          if (!full) o["map"] = {{"src", k.src}, {"dst", k.dst}};
        }
        break;
      }
    }
    j["program"].push_back(o);
  }
  return j;
}

}  // namespace

json arch_to_file_json(const Arch& a) { return json::parse(file_json(a).dump()); }

std::string arch_file_text(const Arch& a) {
  const nlohmann::ordered_json j = file_json(a);
  std::string s = "{\n";
  for (const char* k : {"format", "version", "name", "input", "classes"}) {
    s += fmt::format("  \"{}\": {},\n", k, j[k].dump());
  }
  for (const char* k : {"groups", "layers", "program"}) {
    s += fmt::format("  \"{}\": [\n", k);
    const json& arr = j[k];
    for (size_t i = 0; i < arr.size(); ++i) s += "    " + arr[i].dump() + (i + 1 < arr.size() ? ",\n" : "\n");
    s += std::string("  ]") + (std::string(k) == "program" ? "\n" : ",\n");
  }
  return s + "}\n";
}

Arch load_arch_file(const std::string& path, const ArchShape& data) {
  if (is_directory(path))
    throw Error("--arch " + path + " is a directory",
                "give a JSON architecture file, e.g. examples/arch/small_vgg.json");
  if (!file_exists(path))
    throw Error("architecture file " + path + " does not exist",
                "give a JSON architecture file, e.g. examples/arch/small_vgg.json");
  json j;
  try {
    j = json::parse(read_file(path));
  } catch (const json::parse_error& e) {
    throw Error(fmt::format("architecture file {} is not valid JSON (byte {})", path, e.byte), kHint);
  }
  try {
    return arch_from_file_json(j, data);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what(), e.hint());
  }
}

}  // namespace demp::nn
