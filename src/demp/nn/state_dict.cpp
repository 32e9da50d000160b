#include "demp/nn/state_dict.h"

#include <caffe2/serialize/inline_container.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <cstring>
#include <map>
#include <memory>
#include <set>

#include "demp/common/error.h"
#include "demp/common/files.h"

namespace demp::nn {
namespace {

const char* kSafeHint =
    "demp reads files of torch.save(model.state_dict(), path): a dict of tensors, as "
    "torch.load(weights_only=True) would";

// A value on the unpickler's stack. Objects of globals outside the allow-list are kept as inert
// "Object"s (nothing runs) and refused where they end up: as a value of the dict, they name the key.
struct Value;
using V = std::shared_ptr<Value>;
struct Value {
  enum Kind {
    None,
    Bool,
    Int,
    Float,
    Str,
    Tuple,
    List,
    Dict,
    Global,
    Storage,
    Tensor,
    Object,
    Mark
  } kind = None;
  int64_t i = 0;
  double f = 0;
  std::string s;                      // Str; Global and Object: "module.name"
  std::vector<V> items;               // Tuple, List
  std::vector<std::pair<V, V>> dict;  // Dict
  torch::Tensor t;                    // Storage (1-D), Tensor
};

V make(Value::Kind k) {
  auto v = std::make_shared<Value>();
  v->kind = k;
  return v;
}

std::string describe(const Value& v) {
  switch (v.kind) {
    case Value::None:
      return "None";
    case Value::Bool:
      return "a bool";
    case Value::Int:
      return "an int";
    case Value::Float:
      return "a float";
    case Value::Str:
      return "a string";
    case Value::Tuple:
      return "a tuple";
    case Value::List:
      return "a list";
    case Value::Dict:
      return "a dict";
    case Value::Global:
      return "the global " + v.s;
    case Value::Storage:
      return "a bare storage";
    case Value::Tensor:
      return "a tensor";
    case Value::Object:
      return "an object of the global " + v.s;
    case Value::Mark:
      return "a mark";
  }
  return "?";
}

const std::map<std::string, c10::ScalarType>& storage_types() {
  static const std::map<std::string, c10::ScalarType> m = {
      {"torch.FloatStorage", torch::kFloat}, {"torch.DoubleStorage", torch::kDouble},
      {"torch.HalfStorage", torch::kHalf},   {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kLong},   {"torch.IntStorage", torch::kInt},
      {"torch.ShortStorage", torch::kShort}, {"torch.CharStorage", torch::kChar},
      {"torch.ByteStorage", torch::kByte},   {"torch.BoolStorage", torch::kBool}};
  return m;
}

class Unpickler {
 public:
  Unpickler(std::string data, caffe2::serialize::PyTorchStreamReader& zip, std::string path)
      : d_(std::move(data)), zip_(zip), path_(std::move(path)) {}

  V run() {
    while (true) {
      const uint8_t op = u8();
      switch (op) {
        case 0x80:
          u8();
          break;  // PROTO
        case 0x95:
          bytes(8);
          break;  // FRAME
        case '}':
          push(make(Value::Dict));
          break;  // EMPTY_DICT
        case ']':
          push(make(Value::List));
          break;  // EMPTY_LIST
        case ')':
          push(make(Value::Tuple));
          break;  // EMPTY_TUPLE
        case '(':
          push(make(Value::Mark));
          break;  // MARK
        case 'N':
          push(make(Value::None));
          break;
        case 0x88:
        case 0x89: {  // NEWTRUE, NEWFALSE
          auto v = make(Value::Bool);
          v->i = op == 0x88;
          push(v);
          break;
        }
        case 'K':
          push_int(u8());
          break;  // BININT1
        case 'M':
          push_int(le(2));
          break;  // BININT2
        case 'J':
          push_int(static_cast<int32_t>(le(4)));
          break;      // BININT
        case 0x8a: {  // LONG1
          const size_t n = u8();
          if (n > 8) fail("an integer wider than 64 bits");
          const std::string b = bytes(n);
          uint64_t x = 0;
          for (size_t k = 0; k < n; ++k) x |= static_cast<uint64_t>(static_cast<uint8_t>(b[k])) << (8 * k);
          if (n > 0 && n < 8 && (static_cast<uint8_t>(b[n - 1]) & 0x80)) x |= ~uint64_t{0} << (8 * n);
          push_int(static_cast<int64_t>(x));
          break;
        }
        case 'G': {  // BINFLOAT (big-endian)
          const std::string b = bytes(8);
          uint64_t x = 0;
          for (int k = 0; k < 8; ++k) x = (x << 8) | static_cast<uint8_t>(b[k]);
          auto v = make(Value::Float);
          std::memcpy(&v->f, &x, 8);
          push(v);
          break;
        }
        case 'X':
          push_str(bytes(le(4)));
          break;  // BINUNICODE
        case 0x8c:
          push_str(bytes(u8()));
          break;  // SHORT_BINUNICODE
        case 0x8d:
          push_str(bytes(le(8)));
          break;  // BINUNICODE8
        case 'T':
          push_str(bytes(le(4)));
          break;  // BINSTRING
        case 'U':
          push_str(bytes(u8()));
          break;  // SHORT_BINSTRING
        case 'q':
          memo_[u8()] = top();
          break;  // BINPUT
        case 'r':
          memo_[le(4)] = top();
          break;  // LONG_BINPUT
        case 0x94:
          memo_[memo_.size()] = top();
          break;  // MEMOIZE
        case 'h':
          push(get_memo(u8()));
          break;  // BINGET
        case 'j':
          push(get_memo(le(4)));
          break;     // LONG_BINGET
        case 'c': {  // GLOBAL
          const std::string module = line(), name = line();
          push_global(module, name);
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          const V name = pop(), module = pop();
          if (name->kind != Value::Str || module->kind != Value::Str) fail("STACK_GLOBAL of non-strings");
          push_global(module->s, name->s);
          break;
        }
        case 't': {  // TUPLE
          auto v = make(Value::Tuple);
          v->items = pop_mark();
          push(v);
          break;
        }
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1..3
          auto v = make(Value::Tuple);
          v->items.resize(op - 0x84);
          for (size_t k = v->items.size(); k-- > 0;) v->items[k] = pop();
          push(v);
          break;
        }
        case 'a': {  // APPEND
          const V x = pop();
          list(top())->items.push_back(x);
          break;
        }
        case 'e': {  // APPENDS
          auto xs = pop_mark();
          auto& l = list(top())->items;
          l.insert(l.end(), xs.begin(), xs.end());
          break;
        }
        case 's': {  // SETITEM
          const V val = pop(), key = pop();
          dict(top())->dict.emplace_back(key, val);
          break;
        }
        case 'u': {  // SETITEMS
          auto xs = pop_mark();
          if (xs.size() % 2) fail("SETITEMS with an odd number of values");
          auto* dct = dict(top());
          for (size_t k = 0; k < xs.size(); k += 2) dct->dict.emplace_back(xs[k], xs[k + 1]);
          break;
        }
        case 'b':
          pop();
          break;  // BUILD: the state of an OrderedDict is its _metadata: not needed
        case 'Q':
          push(persistent_load(pop()));
          break;     // BINPERSID
        case 'R': {  // REDUCE
          const V args = pop(), fn = pop();
          push(reduce(*fn, *args));
          break;
        }
        case '.': {  // STOP
          if (stack_.size() != 1) fail("the pickle ends with more than one value");
          return stack_.back();
        }
        default:
          fail(fmt::format("unsupported pickle opcode 0x{:02x} at byte {}", op, pos_ - 1));
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(fmt::format("{}: cannot read the state_dict: {}", path_, what), kSafeHint);
  }
  uint8_t u8() {
    if (pos_ >= d_.size()) fail("the pickle is truncated");
    return static_cast<uint8_t>(d_[pos_++]);
  }
  uint64_t le(int n) {
    uint64_t x = 0;
    for (int k = 0; k < n; ++k) x |= static_cast<uint64_t>(u8()) << (8 * k);
    return x;
  }
  std::string bytes(uint64_t n) {
    if (n > d_.size() - pos_) fail("the pickle is truncated");
    std::string s = d_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  std::string line() {
    const size_t e = d_.find('\n', pos_);
    if (e == std::string::npos) fail("the pickle is truncated");
    std::string s = d_.substr(pos_, e - pos_);
    pos_ = e + 1;
    return s;
  }
  void push(V v) {
    if (stack_.size() > 100000) fail("the pickle nests too deep");
    stack_.push_back(std::move(v));
  }
  void push_int(int64_t x) {
    auto v = make(Value::Int);
    v->i = x;
    push(v);
  }
  void push_str(std::string s) {
    auto v = make(Value::Str);
    v->s = std::move(s);
    push(v);
  }
  void push_global(const std::string& module, const std::string& name) {
    auto v = make(Value::Global);
    v->s = module + "." + name;
    push(v);
  }
  V pop() {
    if (stack_.empty() || stack_.back()->kind == Value::Mark) fail("a malformed pickle (stack underflow)");
    V v = stack_.back();
    stack_.pop_back();
    return v;
  }
  V top() {
    if (stack_.empty()) fail("a malformed pickle (stack underflow)");
    return stack_.back();
  }
  std::vector<V> pop_mark() {
    std::vector<V> out;
    while (!stack_.empty() && stack_.back()->kind != Value::Mark) {
      out.push_back(stack_.back());
      stack_.pop_back();
    }
    if (stack_.empty()) fail("a malformed pickle (no mark)");
    stack_.pop_back();
    return {out.rbegin(), out.rend()};
  }
  V get_memo(uint64_t k) {
    const auto it = memo_.find(k);
    if (it == memo_.end()) fail("a malformed pickle (memo entry missing)");
    return it->second;
  }
  Value* list(const V& v) {
    if (v->kind != Value::List) fail("APPEND to " + describe(*v));
    return v.get();
  }
  Value* dict(const V& v) {
    if (v->kind != Value::Dict) fail("SETITEM on " + describe(*v));
    return v.get();
  }

  // ('storage', torch.FloatStorage, key, location, numel) -> the storage's bytes as a 1-D tensor.
  V persistent_load(const V& pid) {
    if (pid->kind != Value::Tuple || pid->items.size() != 5 || pid->items[0]->kind != Value::Str ||
        pid->items[0]->s != "storage" || pid->items[1]->kind != Value::Global ||
        pid->items[2]->kind != Value::Str || pid->items[4]->kind != Value::Int) {
      fail("a persistent id that is not a tensor storage");
    }
    const std::string& type = pid->items[1]->s;
    const auto st = storage_types().find(type);
    if (st == storage_types().end()) fail("the storage type '" + type + "' is not allowed");
    const std::string key = pid->items[2]->s;
    const auto cached = storages_.find(key);
    if (cached != storages_.end()) return cached->second;
    const int64_t numel = pid->items[4]->i;
    const std::string record = "data/" + key;
    if (key.empty() || key.find('/') != std::string::npos || !zip_.hasRecord(record)) {
      fail("storage '" + key + "' is missing from the archive");
    }
    auto [ptr, size] = zip_.getRecord(record);
    const size_t elem = c10::elementSize(st->second);
    if (numel < 0 || static_cast<uint64_t>(numel) * elem != size) {
      fail(fmt::format("storage '{}' holds {} bytes, not {} elements of {}", key, size, numel,
                       c10::toString(st->second)));
    }
    auto v = make(Value::Storage);
    v->t = torch::empty({numel}, torch::TensorOptions().dtype(st->second));
    if (size > 0) std::memcpy(v->t.data_ptr(), ptr.get(), size);
    storages_[key] = v;
    return v;
  }

  std::vector<int64_t> int_tuple(const Value& v, const char* what) const {
    if (v.kind != Value::Tuple) fail(std::string("a tensor's ") + what + " is not a tuple");
    std::vector<int64_t> out;
    for (const auto& x : v.items) {
      if (x->kind != Value::Int || x->i < 0)
        fail(std::string("a tensor's ") + what + " holds a non-integer or a negative value");
      out.push_back(x->i);
    }
    return out;
  }

  V reduce(const Value& fn, const Value& args) {
    if (args.kind != Value::Tuple) fail("REDUCE without an argument tuple");
    if (fn.kind != Value::Global) fail("REDUCE of " + describe(fn));
    if (fn.s == "collections.OrderedDict") {
      if (!args.items.empty()) fail("collections.OrderedDict called with arguments");
      return make(Value::Dict);
    }
    if (fn.s == "torch._utils._rebuild_tensor_v2") {
      if (args.items.size() < 4 || args.items[0]->kind != Value::Storage ||
          args.items[1]->kind != Value::Int) {
        fail("torch._utils._rebuild_tensor_v2 with unexpected arguments");
      }
      const torch::Tensor& storage = args.items[0]->t;
      const int64_t offset = args.items[1]->i;
      const auto size = int_tuple(*args.items[2], "size");
      const auto stride = int_tuple(*args.items[3], "stride");
      if (size.size() != stride.size()) fail("a tensor's size and stride differ in length");
      int64_t last = offset, n = 1;
      for (size_t k = 0; k < size.size(); ++k) {
        if (size[k] > (int64_t{1} << 40) || stride[k] > (int64_t{1} << 40))
          fail("a tensor's size or stride is too large");
        n *= size[k] == 0 ? 0 : 1;
        last += (size[k] - 1) * stride[k];
      }
      if (offset < 0 || (n != 0 && last >= storage.numel())) fail("a tensor reaches outside its storage");
      auto v = make(Value::Tensor);
      v->t =
          n == 0 ? torch::empty(size, storage.options()) : storage.as_strided(size, stride, offset).clone();
      return v;
    }
    if (fn.s == "torch._utils._rebuild_parameter") {
      if (args.items.empty() || args.items[0]->kind != Value::Tensor)
        fail("torch._utils._rebuild_parameter without a tensor");
      return args.items[0];
    }
    // Anything else stays inert: an object of a global that is not allowed.
    auto v = make(Value::Object);
    v->s = fn.s;
    return v;
  }

  std::string d_;
  size_t pos_ = 0;
  caffe2::serialize::PyTorchStreamReader& zip_;
  std::string path_;
  std::vector<V> stack_;
  std::map<uint64_t, V> memo_;
  std::map<std::string, V> storages_;
};

std::string shape_str(at::IntArrayRef s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

}  // namespace

StateDict read_state_dict(const std::string& path) {
  if (!file_exists(path))
    throw Error("no file at " + path, "give a file written by torch.save(model.state_dict(), path)");
  if (is_directory(path))
    throw Error(path + " is a directory", "give a file written by torch.save(model.state_dict(), path)");
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> zip;
  std::string pickle;
  try {
    zip = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
    if (!zip->hasRecord("data.pkl")) {
      throw Error(path + " holds no data.pkl: it is not a torch.save file (perhaps a TorchScript archive)",
                  "save with torch.save(model.state_dict(), path)");
    }
    if (zip->hasRecord("byteorder")) {
      auto [p, n] = zip->getRecord("byteorder");
      const std::string order(static_cast<const char*>(p.get()), n);
      if (order != "little")
        throw Error(path + " was written on a big-endian machine", "save it on a little-endian one");
    }
    auto [p, n] = zip->getRecord("data.pkl");
    pickle.assign(static_cast<const char*>(p.get()), n);
  } catch (const Error&) {
    throw;
  } catch (const std::exception&) {
    throw Error(path + " is not a torch.save zip file (or it is truncated)",
                "save with torch.save(model.state_dict(), path) from PyTorch 1.6 or newer (the zip format)");
  }
  V root;
  try {
    root = Unpickler(std::move(pickle), *zip, path).run();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(path + ": cannot read the state_dict (" + e.what() + ")", kSafeHint);
  }
  if (root->kind != Value::Dict) {
    throw Error(path + " holds " + describe(*root) + ", not a dict of tensors", kSafeHint);
  }
  StateDict out;
  std::set<std::string> seen;
  for (const auto& [k, v] : root->dict) {
    if (k->kind != Value::Str)
      throw Error(path + ": a key of the dict is " + describe(*k) + ", not a string", kSafeHint);
    if (v->kind != Value::Tensor) {
      throw Error(fmt::format("{}: key '{}' holds {}, not a tensor", path, k->s, describe(*v)),
                  v->kind == Value::Dict ? "save the model's state_dict() itself, not a dict that contains it"
                                         : std::string(kSafeHint));
    }
    if (!seen.insert(k->s).second) throw Error(path + ": key '" + k->s + "' appears twice", kSafeHint);
    out.emplace_back(k->s, v->t);
  }
  return out;
}

std::pair<std::string, std::string> param_prefixes(const Layer& l, Naming naming) {
  if (naming == Naming::Demp) return {l.name, l.name + ".bn"};
  const std::string& n = l.name;
  if (n == "stem") return {"conv1", "bn1"};
  if (n == "classifier") return {"fc", "fc.bn"};
  const auto dot = n.rfind('.');
  const std::string block = dot == std::string::npos ? "" : n.substr(0, dot), leaf = n.substr(dot + 1);
  if (leaf == "shortcut") return {block + ".downsample.0", block + ".downsample.1"};
  if (leaf.rfind("conv", 0) == 0) return {n, block + ".bn" + leaf.substr(4)};
  return {n, n + ".bn"};
}

std::vector<LayerTensors> layers_from_state_dict(const Arch& arch, const StateDict& sd, Naming naming) {
  std::map<std::string, const torch::Tensor*> by_name;
  for (const auto& [k, t] : sd) by_name[k] = &t;
  std::set<std::string> used;
  std::vector<std::string> missing;
  std::vector<LayerTensors> out;
  for (size_t i = 0; i < arch.layers.size(); ++i) {
    const Layer& l = arch.layers[i];
    const auto [p, b] = param_prefixes(l, naming);
    const int64_t o = arch.groups[static_cast<size_t>(l.out_group)].width;
    const int64_t in = arch.groups[static_cast<size_t>(l.in_group)].width;
    const std::vector<int64_t> wshape = l.kind == LayerKind::Conv
                                            ? std::vector<int64_t>{o, in, l.kernel, l.kernel}
                                            : std::vector<int64_t>{o, in * l.in_block};
    auto take = [&](const std::string& key, const std::vector<int64_t>& shape) -> torch::Tensor {
      const auto it = by_name.find(key);
      if (it == by_name.end()) {
        missing.push_back(key);
        return {};
      }
      used.insert(key);
      const torch::Tensor& t = *it->second;
      if (t.sizes().vec() != shape) {
        throw Error(
            fmt::format("key '{}' has shape {} in the file but layer '{}' (#{}) needs {}", key,
                        shape_str(t.sizes()), l.name, i, shape_str(shape)),
            "import into the architecture the weights were trained with (model, --width, --classes, --stem)");
      }
      if (!t.is_floating_point()) {
        throw Error(
            fmt::format("key '{}' holds {} values, not floating point", key, c10::toString(t.scalar_type())),
            "the file does not hold this layer's weights");
      }
      return t.to(torch::kFloat).contiguous().clone();
    };
    LayerTensors t;
    t.weight = take(p + ".weight", wshape);
    if (l.bias) t.bias = take(p + ".bias", {o});
    if (l.bn) {
      t.gamma = take(b + ".weight", {o});
      t.beta = take(b + ".bias", {o});
      t.running_mean = take(b + ".running_mean", {o});
      t.running_var = take(b + ".running_var", {o});
      if (by_name.count(b + ".num_batches_tracked")) used.insert(b + ".num_batches_tracked");
    }
    out.push_back(t);
  }
  std::vector<std::string> unexpected;
  for (const auto& [k, t] : sd) {
    if (!used.count(k)) unexpected.push_back(k);
  }
  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (size_t k = 0; k < v.size() && k < 20; ++k) s += (k ? ", " : "") + v[k];
    if (v.size() > 20) s += fmt::format(", ... ({} in all)", v.size());
    return s;
  };
  if (!missing.empty() || !unexpected.empty()) {
    std::string what;
    if (!missing.empty()) what += fmt::format("missing keys: {}", list(missing));
    if (!unexpected.empty())
      what += fmt::format("{}unexpected keys: {}", what.empty() ? "" : "; ", list(unexpected));
    throw Error(
        "the state_dict does not match the network: " + what,
        naming == Naming::Torchvision
            ? "torchvision names are expected (conv1, bn1, layer1.0.conv1, ..., fc); check --model and --stem"
            : "architecture files use <layer>.weight, <layer>.bias and "
              "<layer>.bn.{weight,bias,running_mean,running_var} (docs/architecture.md)");
  }
  return out;
}

}  // namespace demp::nn
