// Reading a network from any file demp writes, and the torch export (a torch.load-able dict).
#include <caffe2/serialize/inline_container.h>
#include <fmt/format.h>
#include <torch/csrc/jit/serialization/pickler.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/data/dataset.h"
#include "demp/export/export.h"
#include "demp/train/checkpoint.h"
#include "demp/train/run_dir.h"

namespace demp::export_ {

using nlohmann::json;

namespace {

constexpr const char* kTorchFormat = "demp-torch-export-1";
constexpr const char* kOnnxFormat = "demp-onnx-1";
constexpr const char* kExportHint = "give a run directory, its model.ckpt, or a file written by demp export";

// The first bytes of a file (to tell zip archives from ONNX protobufs without reading it all).
std::string file_head(const std::string& path, size_t n) {
  std::string s(n, '\0');
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return {};
  s.resize(std::fread(&s[0], 1, n, f));
  std::fclose(f);
  return s;
}

std::string layer_prefix(const nn::Arch& a, size_t i) {
  const bool conv = a.layers[i].kind == nn::LayerKind::Conv;
  return fmt::format("layers.{}.{}", i, conv ? "conv" : "linear");
}

// Keeps what a user of an exported network may want to know, not the training internals
// (optimizer accumulators, loss sums).
json export_meta(const json& meta) {
  json out = json::object();
  for (const char* k : {"config", "step", "finished", "test_accuracy", "best_test_accuracy", "train_seconds",
                        "source", "source_kind"}) {
    if (meta.contains(k)) out[k] = meta[k];
  }
  return out;
}

Normalization parse_normalization(const json& j) {
  Normalization n;
  if (j.is_object() && j.contains("mean") && j.contains("std")) {
    n.mean = j["mean"].get<std::vector<double>>();
    n.std = j["std"].get<std::vector<double>>();
  }
  return n;
}

// The architecture, checked before anything indexes with it or allocates for it: a hand-edited
// or damaged file must give an error, not an out-of-range read, a huge allocation or an ONNX
// file no runtime loads. nn::check_arch runs the forward program on shapes.
void check_arch(const nn::Arch& a, const std::string& path) {
  try {
    nn::check_arch(a);
  } catch (const Error& e) {
    throw Error(
        path + " has an inconsistent architecture: " + e.what(),
        e.hint().empty() ? "the file is damaged or was edited; export it again from its run" : e.hint());
  }
}

ModelSource read_checkpoint(const std::string& path) {
  train::Checkpoint ck = train::load_checkpoint(path);
  ModelSource s;
  s.kind = SourceKind::Checkpoint;
  s.path = path;
  s.arch = std::move(ck.arch);
  s.layers = std::move(ck.layers);
  s.meta = std::move(ck.meta);
  if (s.meta.contains("normalization")) s.norm = parse_normalization(s.meta["normalization"]);
  check_arch(s.arch, path);
  return s;
}

// Looks a key up in a pickled generic dict; throws a "not a demp export" error when absent or of
// the wrong kind, so that a foreign torch file fails cleanly.
c10::IValue dict_get(const c10::impl::GenericDict& d, const std::string& key, const std::string& path) {
  const auto it = d.find(c10::IValue(key));
  if (it == d.end()) {
    throw Error(fmt::format("{} is not a demp export (no '{}' entry)", path, key), kExportHint);
  }
  return it->value();
}

ModelSource read_torch_export(const std::string& path) {
  const std::string bytes = read_file(path);
  c10::IValue root;
  try {
    root = torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
  } catch (const std::exception&) {
    throw Error(path + " is not a demp checkpoint or export (truncated or corrupt?)", kExportHint);
  }
  if (!root.isGenericDict()) throw Error(path + " is not a demp export (not a dict)", kExportHint);
  const auto d = root.toGenericDict();
  const c10::IValue format = dict_get(d, "format", path);
  if (!format.isString() || format.toStringRef() != kTorchFormat) {
    throw Error(fmt::format("{} is not a demp export (format is not '{}')", path, kTorchFormat), kExportHint);
  }
  ModelSource s;
  s.kind = SourceKind::TorchExport;
  s.path = path;
  try {
    s.arch = json::parse(dict_get(d, "arch", path).toStringRef()).get<nn::Arch>();
    s.meta = json::parse(dict_get(d, "meta", path).toStringRef());
    const auto norm = dict_get(d, "normalization", path).toGenericDict();
    for (const char* k : {"mean", "std"}) {
      auto& out = std::string(k) == "mean" ? s.norm.mean : s.norm.std;
      for (const auto& v : dict_get(norm, k, path).toListRef()) out.push_back(v.toDouble());
    }
    const auto sd = dict_get(d, "state_dict", path).toGenericDict();
    auto get = [&](const std::string& key) {
      const auto it = sd.find(c10::IValue(key));
      return it == sd.end() ? torch::Tensor() : it->value().toTensor();
    };
    for (size_t i = 0; i < s.arch.layers.size(); ++i) {
      nn::LayerTensors t;
      const std::string p = layer_prefix(s.arch, i), bn = fmt::format("layers.{}.bn.", i);
      t.weight = get(p + ".weight");
      t.bias = get(p + ".bias");
      t.gamma = get(bn + "weight");
      t.beta = get(bn + "bias");
      t.running_mean = get(bn + "running_mean");
      t.running_var = get(bn + "running_var");
      s.layers.push_back(t);
    }
  } catch (const Error& e) {
    // Errors of the architecture's JSON reader do not know the file; name it.
    if (std::string(e.what()).rfind(path, 0) == 0) throw;
    throw Error(path + ": " + e.what(), e.hint());
  } catch (const std::exception& e) {
    // A wrong type (c10::Error) or malformed JSON: the file was tampered with or is foreign.
    throw Error(fmt::format("{} is a malformed demp export: {}", path, e.what()), kExportHint);
  }
  // Shapes against the architecture, with the message Model gives for a corrupt checkpoint.
  check_arch(s.arch, path);
  nn::Model check(s.arch, s.layers);
  return s;
}

ModelSource read_onnx(const std::string& path) {
  const std::string bytes = read_file(path);
  const OnnxInfo info = read_onnx_info(bytes, path);
  ModelSource s;
  s.kind = SourceKind::Onnx;
  s.path = path;
  std::string format, arch, meta, mean, std;
  for (const auto& [k, v] : info.metadata) {
    if (k == "demp.format") format = v;
    if (k == "demp.arch") arch = v;
    if (k == "demp.meta") meta = v;
    if (k == "demp.normalization.mean") mean = v;
    if (k == "demp.normalization.std") std = v;
  }
  if (format != kOnnxFormat || arch.empty()) {
    throw Error(path + " is an ONNX model that demp did not write (no demp metadata)",
                "demp reads back only its own exports; inspect it with onnxruntime or netron");
  }
  try {
    s.arch = json::parse(arch).get<nn::Arch>();
    if (!meta.empty()) s.meta = json::parse(meta);
    if (!mean.empty()) s.norm.mean = json::parse(mean).get<std::vector<double>>();
    if (!std.empty()) s.norm.std = json::parse(std).get<std::vector<double>>();
  } catch (const json::exception& e) {
    throw Error(fmt::format("{} has malformed demp metadata: {}", path, e.what()), kExportHint);
  }
  check_arch(s.arch, path);
  return s;
}

// Record names of a zip archive; empty when it is not one LibTorch can open.
bool zip_has_record(const std::string& path, const std::string& name, bool* readable) {
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    *readable = true;
    return reader.hasRecord(name);
  } catch (const std::exception&) {
    *readable = false;
    return false;
  }
}

}  // namespace

std::string kind_name(SourceKind k) {
  switch (k) {
    case SourceKind::Checkpoint:
      return "checkpoint";
    case SourceKind::TorchExport:
      return "torch export";
    case SourceKind::Onnx:
      return "onnx";
  }
  return "?";
}

namespace {
// A recorded normalisation divides by std: zero, negative or non-finite values (an edited file)
// would turn every input into inf or NaN.
ModelSource checked_norm(ModelSource s) {
  if (!s.norm.known()) return s;
  bool ok = s.norm.mean.size() == s.norm.std.size() &&
            static_cast<int64_t>(s.norm.mean.size()) == s.arch.in_channels;
  for (size_t c = 0; ok && c < s.norm.std.size(); ++c) {
    ok = std::isfinite(s.norm.mean[c]) && std::isfinite(s.norm.std[c]) && s.norm.std[c] > 0;
  }
  if (!ok) {
    throw Error(s.path +
                    " records an unusable input normalisation (std must be finite and > 0, one "
                    "mean and std per input channel)",
                "the file is damaged or was edited; export it again from its run");
  }
  return s;
}
}  // namespace

ModelSource load_source(const std::string& path_in) {
  if (path_in.empty()) throw Error("no model given", kExportHint);
  std::string path = path_in;
  if (is_directory(path)) {
    path = train::RunFiles::in(path_in, train::RunFiles::checkpoint);
    if (!file_exists(path)) {
      if (train::has_config(path_in) || train::has_summary(path_in)) {
        // A run that ended (diverged, was killed) before its first checkpoint.
        std::string status;
        const auto summary = train::read_summary(path_in);
        if (summary && !summary->status.empty()) status = " (status " + summary->status + ")";
        throw Error(
            path_in + " holds a demp run that never wrote a checkpoint" + status,
            "there is no network to load: start the run again with demp train --overwrite --out " + path_in);
      }
      throw Error("no checkpoint at " + path + ": " + path_in + " is not a demp run directory", kExportHint);
    }
  }
  if (!file_exists(path)) throw Error("no checkpoint or export at " + path, kExportHint);
  if (!is_regular_file(path)) throw Error(path + " is not a regular file", kExportHint);
  const std::string head = file_head(path, 4);
  if (head == std::string("PK\x03\x04", 4)) {
    // Both checkpoints (a TorchScript archive) and torch exports (a pickle archive) are zip
    // files; the checkpoint's archive alone holds TorchScript constants.
    bool readable = false;
    const bool scripted = zip_has_record(path, "constants.pkl", &readable);
    if (!readable) {
      throw Error("cannot read " + path + " (truncated or corrupt zip archive)", kExportHint);
    }
    return checked_norm(scripted ? read_checkpoint(path) : read_torch_export(path));
  }
  // ONNX files have no magic number; parse them only when they could be one (not empty).
  if (!head.empty() && looks_like_onnx(read_file(path))) return checked_norm(read_onnx(path));
  throw Error(path + " is not a demp checkpoint, torch export or ONNX model (truncated or corrupt?)",
              kExportHint);
}

train::TrainConfig source_config(const ModelSource& src) {
  train::TrainConfig cfg;
  if (src.meta.contains("config")) train::apply_json(cfg, src.meta["config"], src.path);
  return cfg;
}

Normalization training_normalization(const ModelSource& src, const std::string& data_spec) {
  if (data_spec.empty() && src.norm.known()) return src.norm;
  if (data_spec.empty() && !src.meta.contains("config")) {
    throw Error(src.path + " does not record the data it was trained on",
                "pass --data SPEC (the training data set) so that its normalisation is known");
  }
  const train::TrainConfig cfg = source_config(src);
  const std::string spec = data_spec.empty() ? cfg.data : data_spec;
  // Exactly the options training loaded the data with: the statistics come from the training
  // split after the validation carve-out and --train-limit. The test split is not needed.
  data::LoadOptions lo{cfg.val_size, static_cast<uint64_t>(cfg.seed), cfg.train_limit, /*test_limit=*/1, {}};
  train::image_options(cfg, 1, &lo.image);
  const data::DataBundle b = data::load(spec, lo);
  if (b.channels != src.arch.in_channels) {
    throw Error(
        fmt::format("data {} has {} channels but the model takes {}", spec, b.channels, src.arch.in_channels),
        "give the data set the model was trained on");
  }
  return Normalization{b.mean, b.std};
}

nn::Arch dense_arch(const nn::Arch& pruned, const json& config) {
  const auto zoo = nn::model_names();
  if (std::find(zoo.begin(), zoo.end(), pruned.model) == zoo.end()) {
    // An architecture file's network: every group back at its initial width, every skip map the
    // identity it was written as (a file's add of two groups is between equal widths).
    nn::Arch dense = pruned;
    for (auto& g : dense.groups) g.width = g.initial;
    for (auto& k : dense.skips) {
      const int64_t w = dense.groups[static_cast<size_t>(k.out_group)].width;
      if (dense.groups[static_cast<size_t>(k.in_group)].width != w) {
        throw Error("cannot rebuild the dense network of " + pruned.model +
                        ": a skip map joins groups of different initial widths",
                    "compare against a dense run of the architecture file instead");
      }
      k.src.clear();
      k.dst.clear();
      for (int64_t u = 0; u < w; ++u) {
        k.src.push_back(u);
        k.dst.push_back(u);
      }
    }
    nn::check_arch(dense);
    return dense;
  }
  train::TrainConfig cfg;
  if (config.is_object() && !config.empty()) train::apply_json(cfg, config, "the recorded config");
  cfg.model = pruned.model;
  cfg.width = pruned.width_mult;
  const nn::ArchShape shape{pruned.in_channels, pruned.in_height, pruned.in_width, pruned.classes};
  nn::ModelOptions o = train::model_options(cfg, shape);
  if (pruned.model == "mlp" && !(config.is_object() && config.contains("mlp-widths"))) {
    // Without a config the hidden widths are the groups' initial widths (multiplier applied).
    o.width = 1.0;
    o.mlp_widths.clear();
    for (const auto& g : pruned.groups) {
      if (g.prunable) o.mlp_widths.push_back(g.initial);
    }
  }
  nn::Arch dense = nn::build_arch(o);
  dense.width_mult = pruned.width_mult;
  bool same = dense.groups.size() == pruned.groups.size();
  for (size_t g = 0; same && g < dense.groups.size(); ++g) {
    same =
        dense.groups[g].name == pruned.groups[g].name && dense.groups[g].initial == pruned.groups[g].initial;
  }
  if (!same) {
    throw Error("cannot rebuild the dense network of this " + pruned.model +
                    ": its groups do not match the zoo model's",
                "was it trained by another demp version?");
  }
  return dense;
}

ExportInfo export_info(const ModelSource& src, const std::string& data_spec) {
  ExportInfo info;
  info.norm = training_normalization(src, data_spec);
  info.meta = export_meta(src.meta);
  if (!info.meta.contains("source")) {
    info.meta["source"] = src.path;
    info.meta["source_kind"] = kind_name(src.kind);
  }
  return info;
}

void write_torch_export(const std::string& path, const nn::Model& model, const ExportInfo& info) {
  const nn::Arch& a = model.arch();
  // Generic (untyped) containers, pickled without type tags: LibTorch's torch::pickle_save tags
  // every dict with torch.jit._pickle.restore_type_tag, which torch.load's default weights_only
  // unpickler refuses. Plain dicts, lists, strings and tensors load with weights_only=True.
  c10::impl::GenericDict sd(c10::StringType::get(), c10::TensorType::get());
  auto put = [&](const std::string& key, const torch::Tensor& t) {
    if (t.defined()) sd.insert(key, t.detach().to(torch::kCPU).contiguous());
  };
  for (size_t i = 0; i < a.layers.size(); ++i) {
    const auto& t = model.layers()[i];
    const std::string p = layer_prefix(a, i), bn = fmt::format("layers.{}.bn.", i);
    put(p + ".weight", t.weight);
    if (a.layers[i].bias) put(p + ".bias", t.bias);
    if (a.layers[i].bn) {
      put(bn + "weight", t.gamma);
      put(bn + "bias", t.beta);
      put(bn + "running_mean", t.running_mean);
      put(bn + "running_var", t.running_var);
      // torch.nn.BatchNorm keeps this buffer; demp has no use for it (momentum is fixed).
      put(bn + "num_batches_tracked", torch::zeros({}, torch::kLong));
    }
  }
  auto list = [](const std::vector<double>& v) {
    c10::impl::GenericList l(c10::AnyType::get());
    for (double x : v) l.push_back(x);
    return l;
  };
  c10::impl::GenericDict norm(c10::StringType::get(), c10::AnyType::get());
  norm.insert("mean", list(info.norm.mean));
  norm.insert("std", list(info.norm.std));
  c10::impl::GenericDict root(c10::StringType::get(), c10::AnyType::get());
  root.insert("format", std::string(kTorchFormat));
  root.insert("arch", json(a).dump());
  root.insert("state_dict", sd);
  root.insert("normalization", norm);
  root.insert("meta", info.meta.dump());

  std::vector<char> pickle;
  torch::jit::Pickler pickler([&](const char* b, size_t n) { pickle.insert(pickle.end(), b, b + n); },
                              nullptr, nullptr, nullptr, nullptr, /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(root);
  pickler.stop();
  // The layout torch.save writes: tensor storages as data/<key>, then data.pkl.
  std::string bytes;
  {
    caffe2::serialize::PyTorchStreamWriter writer([&](const void* b, size_t n) {
      bytes.append(static_cast<const char*>(b), n);
      return n;
    });
    size_t key = 0;
    for (const auto& t : pickler.tensorData()) {
      const auto w = torch::jit::getWriteableTensorData(t);
      writer.writeRecord("data/" + std::to_string(key++), w.data(), w.sizeInBytes());
    }
    writer.writeRecord("byteorder", "little", 6);
    writer.writeRecord("data.pkl", pickle.data(), pickle.size());
    writer.writeEndOfFile();
  }
  write_file_atomic(path, bytes);
}

}  // namespace demp::export_
