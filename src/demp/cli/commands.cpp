#include "demp/cli/commands.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>

#include "demp/cli/bench.h"
#include "demp/cli/data_cmds.h"
#include "demp/cli/report_cmds.h"
#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/data/dataset.h"
#include "demp/dist/comm.h"
#include "demp/dist/launch.h"
#include "demp/export/export.h"
#include "demp/methods/method.h"
#include "demp/nn/arch.h"
#include "demp/nn/model.h"
#include "demp/nn/state_dict.h"
#include "demp/report/compare.h"
#include "demp/train/config.h"
#include "demp/train/run_dir.h"
#include "demp/train/trainer.h"

namespace demp::cli {
namespace {

using nlohmann::json;

// Finds "--config X" / "--config=X" before CLI11 runs, so that the file gives the defaults and
// the flags override them.
std::string find_config(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--config") == 0 && i + 1 < argc) return argv[i + 1];
    if (std::strncmp(argv[i], "--config=", 9) == 0) return argv[i] + 9;
  }
  return {};
}

// The config file as JSON, refusing what nlohmann accepts silently (a repeated key: the last one
// wins) and saying in one line what it refuses (an overflowing number, a syntax error).
json parse_config_file(const std::string& path) {
  if (is_directory(path)) {
    throw Error("--config " + path + " is a directory", "give a JSON file, e.g. recipes/<name>.json");
  }
  const std::string text = read_file(path);
  std::vector<std::vector<std::string>> keys;  // the keys of each open object
  std::string duplicate;
  const json::parser_callback_t cb = [&](int, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::object_start) keys.emplace_back();
    if (ev == json::parse_event_t::object_end && !keys.empty()) keys.pop_back();
    if (ev == json::parse_event_t::key && !keys.empty()) {
      const std::string k = parsed.get<std::string>();
      if (std::find(keys.back().begin(), keys.back().end(), k) != keys.back().end() && duplicate.empty()) {
        duplicate = k;
      }
      keys.back().push_back(k);
    }
    return true;
  };
  json j;
  try {
    j = json::parse(text, cb);
  } catch (const json::exception& e) {
    // "[json.exception.parse_error.101] parse error at line 1, column 14: syntax error while
    // parsing value - unexpected '}'; last read: ..." or "[json.exception.out_of_range.406]
    // number overflow parsing '1e999'" -> their substance, without the library's prefix.
    std::string detail = e.what();
    const auto close = detail.find("] ");
    if (detail.rfind("[json.exception", 0) == 0 && close != std::string::npos)
      detail = detail.substr(close + 2);
    const auto dash = detail.find(" - ");
    if (dash != std::string::npos) detail = detail.substr(dash + 3);
    const auto semi = detail.find("; last read");
    if (semi != std::string::npos) detail.resize(semi);
    const bool overflow = detail.find("number overflow") != std::string::npos;
    std::string where;
    if (const auto* pe = dynamic_cast<const json::parse_error*>(&e))
      where = fmt::format(" (byte {})", pe->byte);
    throw Error(
        fmt::format("config file {} is not valid JSON{}: {}", path, where, detail),
        overflow ? "the number is too large for a double; give a finite value" : "see recipes/ for examples");
  }
  if (!duplicate.empty()) {
    throw Error("config file " + path + " gives the key '" + duplicate + "' twice", "give each option once");
  }
  return j;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// The closest of `names` to `word`, if it is close enough to be a typo ("" otherwise).
std::string nearest(const std::string& word, const std::vector<std::string>& names) {
  std::string best;
  size_t best_d = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto& n : names) {
    const size_t d = edit_distance(word, n);
    if (d < best_d) {
      best_d = d;
      best = n;
    }
  }
  return best;
}

// A parse error, said better where we can: an unknown subcommand or option gets the nearest
// real one.
Error explain_parse_error(CLI::App& app, const CLI::ParseError& e, int argc, char** argv) {
  std::vector<std::string> subs;
  for (CLI::App* sc : app.get_subcommands([](CLI::App*) { return true; })) subs.push_back(sc->get_name());
  const std::string first = argc > 1 ? argv[1] : "";
  if (first.empty()) {
    return Error("no subcommand given",
                 "use one of: " + fmt::format("{}", fmt::join(subs, ", ")) + " (see 'demp --help')");
  }
  if (first[0] != '-' && std::find(subs.begin(), subs.end(), first) == subs.end()) {
    const std::string near = nearest(first, subs);
    return Error(
        "unknown subcommand '" + first + "'" + (near.empty() ? "" : " (did you mean '" + near + "'?)"),
        "use one of: " + fmt::format("{}", fmt::join(subs, ", ")) + " (see 'demp --help')");
  }
  CLI::App* sub = first[0] != '-' ? app.get_subcommand(first) : &app;
  std::vector<std::string> longs;
  for (const CLI::Option* o : sub->get_options()) {
    for (const auto& n : o->get_lnames()) longs.push_back(n);
  }
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") break;
    if (a.rfind("--", 0) != 0 || a.size() < 3) continue;
    a = a.substr(2, a.find('=') == std::string::npos ? std::string::npos : a.find('=') - 2);
    if (std::find(longs.begin(), longs.end(), a) != longs.end()) continue;
    const std::string near = nearest(a, longs);
    return Error("unknown option --" + a + " for 'demp " + first + "'" +
                     (near.empty() ? "" : " (did you mean --" + near + "?)"),
                 "see 'demp " + first + " --help'");
  }
  std::string what = e.what();
  while (!what.empty() && (what.back() == '\n' || what.back() == ' ')) what.pop_back();
  return Error(what, "see 'demp " + (first[0] != '-' ? first + " " : std::string()) + "--help'");
}

// CLI11 reads integers with strtoll in base 0: "010" is 8, and a value beyond 2^63 is silently
// clamped. Every integer option takes plain decimal digits in range instead.
std::string check_integer(std::string& v) {
  const size_t digits = !v.empty() && (v[0] == '-' || v[0] == '+') ? 1 : 0;
  if (v.size() <= digits || v.find_first_not_of("0123456789", digits) != std::string::npos) {
    return "'" + v + "' is not a whole number";
  }
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (errno == ERANGE) return "'" + v + "' is out of range (-2^63 .. 2^63-1)";
  v = std::to_string(x);  // decimal, so that CLI11's base-0 conversion reads the same number
  return {};
}

void bind_fields(CLI::App* app, train::TrainConfig& cfg) {
  train::TrainConfig defaults;
  auto dfs = train::fields(defaults);
  auto fs = train::fields(cfg);
  for (size_t i = 0; i < fs.size(); ++i) {
    const auto& f = fs[i];
    const std::string flag = "--" + f.name;
    std::visit(
        [&](auto* p) {
          using T = std::remove_pointer_t<decltype(p)>;
          if constexpr (std::is_same_v<T, bool>) {
            app->add_flag(flag, *p, f.help)->group(f.group);
          } else {
            auto* o =
                app->add_option(flag, *p, f.help)->default_str(train::value_string(dfs[i]))->group(f.group);
            if constexpr (std::is_same_v<T, int64_t>) o->transform(CLI::Validator(check_integer, ""));
          }
        },
        f.ptr);
  }
}

// A network from a run directory, checkpoint or torch export, refusing ONNX files (demp does not
// run ONNX graphs; onnxruntime does).
export_::ModelSource load_runnable(const std::string& path) {
  export_::ModelSource src = export_::load_source(path);
  if (src.kind == export_::SourceKind::Onnx) {
    throw Error(src.path +
                    " is an ONNX model: demp eval runs run directories, checkpoints and "
                    "torch exports",
                "evaluate ONNX models with onnxruntime (README: 'The pruned network outside "
                "demp'), or give the run's model.ckpt");
  }
  return src;
}

int cmd_eval(const std::string& path, std::string data_spec, const std::string& device_spec, int64_t batch,
             bool as_json) {
  if (batch <= 0) {
    throw Error(fmt::format("--batch-size must be positive, got {}", batch), "e.g. --batch-size 1000");
  }
  const auto src = load_runnable(path);
  const train::TrainConfig cfg = export_::source_config(src);
  if (data_spec.empty()) data_spec = cfg.data;
  const auto device = train::resolve_device(device_spec);
  // The training split options matter: the normalisation statistics come from the training
  // images that training used (after the validation carve-out and --train-limit).
  data::LoadOptions lo{cfg.val_size, static_cast<uint64_t>(cfg.seed), cfg.train_limit, 0, {}};
  train::image_options(cfg, at::get_num_threads(), &lo.image);  // image folders: as trained
  lo.image.pin_memory = device.is_cuda();
  auto data = data::load(data_spec, lo);
  nn::Model model(src.arch, src.layers);
  if (data.channels != src.arch.in_channels || data.height != src.arch.in_height ||
      data.width != src.arch.in_width || data.classes != src.arch.classes) {
    throw Error(fmt::format("data {} ({}x{}x{}, {} classes) does not fit the model ({}x{}x{}, {} classes)",
                            data_spec, data.channels, data.height, data.width, data.classes,
                            src.arch.in_channels, src.arch.in_height, src.arch.in_width, src.arch.classes),
                "evaluate on the data the model was trained on");
  }
  if (src.norm.known()) {
    double diff = 0;
    for (size_t c = 0; c < src.norm.mean.size() && c < data.mean.size(); ++c) {
      diff = std::max(
          {diff, std::abs(src.norm.mean[c] - data.mean[c]), std::abs(src.norm.std[c] - data.std[c])});
    }
    if (diff > 1e-6) {
      std::cerr << fmt::format(
          "demp: warning: {} normalises with mean {} std {}, the model was "
          "trained with mean {} std {}\n",
          data_spec, data.mean, data.std, src.norm.mean, src.norm.std);
    }
  }
  model.to(device);
  const auto r = train::evaluate(model, data.test, batch, device);
  const auto& a = model.arch();
  if (as_json) {
    std::cout << json{{"checkpoint", src.path}, {"kind", export_::kind_name(src.kind)},
                      {"data", data_spec},      {"test_accuracy", r.accuracy},
                      {"test_loss", r.loss},    {"images", r.n},
                      {"units", a.units()},     {"params", a.params()},
                      {"flops", a.flops()}}
                     .dump(2)
              << "\n";
  } else {
    std::cout << fmt::format(
        "{} on {}: test accuracy {:.2f}% | loss {:.4f} | {} images | {} units | "
        "{} params | {} FLOPs/image\n",
        src.path, data_spec, 100 * r.accuracy, r.loss, r.n, a.units(), a.params(), a.flops());
  }
  return 0;
}

// The format an --out name implies, when --format is not given.
std::string format_from_name(const std::string& out) {
  auto ends = [&](const std::string& e) {
    return out.size() >= e.size() && out.compare(out.size() - e.size(), e.size(), e) == 0;
  };
  if (ends(".onnx")) return "onnx";
  if (ends(".pt") || ends(".pth")) return "torch";
  return {};
}

int cmd_export(const std::string& path, std::string format, const std::string& out, int64_t opset,
               int64_t pad_channels, const std::string& data_spec) {
  if (format.empty()) format = format_from_name(out);
  if (format.empty()) {
    throw Error("cannot tell the export format from '" + out + "'",
                "pass --format onnx or --format torch (or name the file .onnx / .pt)");
  }
  if (format != "onnx" && format != "torch") {
    throw Error("unknown export format '" + format + "'", "use onnx or torch");
  }
  if (pad_channels != 1 && format != "onnx") {
    throw Error("--pad-channels applies to ONNX exports only",
                "the torch export keeps the pruned widths; pad at ONNX export");
  }
  if (out.empty()) throw Error("--out is empty", "give the file to write, e.g. --out model.onnx");
  if (is_directory(out))
    throw Error("--out " + out + " is a directory", "give a file name, e.g. --out model.onnx");
  const auto src = export_::load_source(path);
  // Never over a file of a run directory (its checkpoint, config, metrics...), nor over the
  // network being exported: an export must not destroy what it reads.
  {
    const std::string target = canonical_path(out);
    const auto slash = out.find_last_of('/');
    const std::string parent = slash == std::string::npos ? "." : (slash == 0 ? "/" : out.substr(0, slash));
    const bool run_dir = train::is_run_dir(parent) || train::has_checkpoint(parent) ||
                         file_exists(train::RunFiles::in(parent, train::RunFiles::log));
    if (!target.empty() && (target == canonical_path(src.path) || run_dir)) {
      throw Error("refusing to write over " + out +
                      (run_dir ? ", a file of the run directory " + parent : ", the network being exported"),
                  "write the export to a new file, e.g. --out " +
                      std::string(format == "onnx" ? "model.onnx" : "model.pt"));
    }
  }
  if (src.kind == export_::SourceKind::Onnx) {
    throw Error(src.path + " is already an ONNX export; its weights cannot be read back",
                "export from the run directory, its model.ckpt or a torch export");
  }
  const export_::ExportInfo info = export_::export_info(src, data_spec);
  const nn::Model model(src.arch, src.layers);
  const auto& a = model.arch();
  if (format == "onnx") {
    export_::write_onnx(out, model, info, opset, pad_channels);
  } else {
    export_::write_torch_export(out, model, info);
  }
  std::cout << fmt::format(
      "exported {} ({} of {} units, {} params, {} FLOPs/image) to {} ({}{})\n"
      "  input: N x {} x {} x {} float32, pixel / 255 then (x - mean) / std with mean {} std {}\n"
      "  output: N x {} logits\n",
      a.model, a.units(), a.initial_units(), a.params(), a.flops(), out, format,
      format == "onnx"
          ? fmt::format(", opset {}{}", opset,
                        pad_channels > 1
                            ? fmt::format(", hidden widths padded to multiples of {}", pad_channels)
                            : std::string())
          : std::string(),
      a.in_channels, a.in_height, a.in_width, info.norm.mean, info.norm.std, a.classes);
  return 0;
}

struct ImportOptions {
  std::string from, out, model, arch, stem = "imagenet";
  double width = 1.0;
  int64_t in_channels = 3, input_size = 224, classes = 0;
  bool overwrite = false;
};

// A PyTorch state_dict -> a demp checkpoint (step 0, no optimizer state): `demp train --init`.
int cmd_import(const ImportOptions& o, const std::vector<std::string>& given) {
  auto has = [&](const char* n) { return std::find(given.begin(), given.end(), n) != given.end(); };
  if (o.model.empty() == o.arch.empty()) {
    throw Error(
        o.model.empty() ? "demp import needs --model or --arch" : "--model and --arch both give the network",
        "--model resnet18|resnet50 for torchvision's names, --arch FILE.json for an architecture file's");
  }
  if (!o.arch.empty()) {
    for (const char* n : {"width", "stem"}) {
      if (has(n))
        throw Error(fmt::format("--{} and --arch both give the network", n), "the architecture file sets it");
    }
  }
  if (o.out.empty()) throw Error("--out is empty", "give the checkpoint to write, e.g. --out resnet18.ckpt");
  if (is_directory(o.out))
    throw Error("--out " + o.out + " is a directory", "give a file name, e.g. --out resnet18.ckpt");
  if (file_exists(o.out) && !o.overwrite)
    throw Error(o.out + " exists", "use --overwrite to replace it, or another --out");
  const nn::StateDict sd = nn::read_state_dict(o.from);
  nn::Arch arch;
  nn::Naming naming = nn::Naming::Demp;
  int64_t classes = o.classes;
  if (!o.model.empty()) {
    if (o.model != "resnet18" && o.model != "resnet50") {
      throw Error(
          "demp import --model takes resnet18 or resnet50 (torchvision's names), not '" + o.model + "'",
          "for another network write an architecture file and use --arch (docs/architecture.md)");
    }
    naming = nn::Naming::Torchvision;
    if (classes == 0) {  // from the classifier's weight, as torchvision's num_classes
      for (const auto& [k, t] : sd) {
        if (k == "fc.weight" && t.dim() == 2) classes = t.size(0);
      }
      if (classes == 0)
        throw Error(o.from + " has no fc.weight to take the number of classes from", "give --classes");
    }
    nn::ModelOptions mo;
    mo.model = o.model;
    mo.stem = o.stem;
    mo.width = o.width;
    mo.in_channels = o.in_channels;
    mo.in_height = mo.in_width = o.input_size;
    mo.classes = classes;
    arch = nn::build_arch(mo);
  } else {
    nn::ArchShape shape;
    if (has("in-channels")) shape.channels = o.in_channels;
    if (has("input-size")) shape.height = shape.width = o.input_size;
    shape.classes = classes;
    arch = nn::load_arch_file(o.arch, shape);
  }
  nn::Model model(arch, nn::layers_from_state_dict(arch, sd, naming));
  json meta{{"step", 0},
            {"finished", false},
            {"imported_from", o.from},
            {"naming", naming == nn::Naming::Torchvision ? "torchvision" : "demp"}};
  train::save_checkpoint(o.out, model, nullptr, meta);
  std::cout << fmt::format(
      "imported {} tensors from {} into {} ({} units, {} params, input {}x{}x{}, {} classes): {}\n"
      "  continue with: demp train --init {} --data ...\n",
      sd.size(), o.from, arch.model, arch.units(), arch.params(), arch.in_channels, arch.in_height,
      arch.in_width, arch.classes, o.out, o.out);
  return 0;
}

int cmd_info(const std::string& path, const nn::Arch& zoo, bool as_json) {
  if (path.empty()) {
    std::cout << (as_json ? json(zoo).dump(2) + "\n" : zoo.table());
    return 0;
  }
  const auto src = export_::load_source(path);
  if (as_json) {
    std::cout << json(src.arch).dump(2) << "\n";
    return 0;
  }
  std::cout << fmt::format("{} ({})\n", src.path, export_::kind_name(src.kind)) << src.arch.table();
  if (src.norm.known()) {
    std::cout << fmt::format(
        "input normalisation: pixel / 255, then (x - mean) / std with mean {} "
        "std {}\n",
        src.norm.mean, src.norm.std);
  }
  if (src.meta.contains("test_accuracy") && src.meta["test_accuracy"].is_number()) {
    std::cout << fmt::format("test accuracy at export: {:.2f}% (step {})\n",
                             100 * src.meta["test_accuracy"].get<double>(),
                             src.meta.value("step", int64_t{0}));
  }
  return 0;
}

}  // namespace

int run(int argc, char** argv) {
  CLI::App app{"demp: train compact networks with Demon Pruning (DemP)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "demp 0.1.0");

  // train
  train::TrainConfig cfg;
  const std::string config_path = find_config(argc, argv);
  std::vector<std::string> config_keys;
  if (!config_path.empty()) {
    const json j = parse_config_file(config_path);
    train::apply_json(cfg, j, config_path);
    for (auto it = j.begin(); it != j.end(); ++it) config_keys.push_back(it.key());
  }
  auto* train_cmd = app.add_subcommand("train", "train a network (dense or with a pruning method)");
  bind_fields(train_cmd, cfg);
  // The methods' list comes from their registry (config.cpp's Field table sits below methods/).
  train_cmd->get_option("--method")->description("training/pruning method:" + methods::method_help());
  std::string config_unused;
  train_cmd
      ->add_option("--config", config_unused,
                   "JSON file whose keys are these flags' names; flags override it")
      ->group("run");

  // eval
  auto* eval_cmd = app.add_subcommand("eval", "evaluate a run, checkpoint or torch export on its test set");
  std::string ckpt, eval_data, eval_device = "cpu";
  int64_t eval_batch = 1000;
  bool eval_json = false;
  eval_cmd->add_option("model", ckpt, "a run directory, its model.ckpt, or a torch export")->required();
  eval_cmd->add_option("--data", eval_data, "data set (default: the one it was trained on)");
  eval_cmd->add_option("--device", eval_device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  eval_cmd->add_option("--batch-size", eval_batch, "evaluation batch size")->capture_default_str();
  eval_cmd->add_flag("--json", eval_json, "print the result as JSON");

  // info
  auto* info_cmd = app.add_subcommand("info", "print a model's architecture table");
  std::string info_ckpt;
  nn::ModelOptions mo;
  std::string info_model = "resnet18", mlp_widths = "512,256";
  double info_width = 1.0;
  int64_t info_size = 28;
  info_cmd->add_option("model", info_ckpt,
                       "a run directory, checkpoint, torch or ONNX export (its current widths)");
  info_cmd->add_option("--checkpoint", info_ckpt, "the same, as an option");
  info_cmd->add_option("--model", info_model, "mlp, vgg16, resnet18, resnet50")->capture_default_str();
  info_cmd->add_option("--width", info_width, "width multiplier")->capture_default_str();
  info_cmd->add_option("--mlp-widths", mlp_widths, "MLP hidden widths")->capture_default_str();
  info_cmd->add_option("--in-channels", mo.in_channels, "input channels")->capture_default_str();
  info_cmd->add_option("--input-size", info_size, "input height and width")->capture_default_str();
  info_cmd->add_option("--classes", mo.classes, "number of classes")->capture_default_str();
  std::string info_stem = "auto", info_arch, info_write;
  info_cmd->add_option("--stem", info_stem, "ResNet stem: auto, cifar or imagenet")->capture_default_str();
  info_cmd->add_option("--arch", info_arch,
                       "an architecture file (input size and classes from the file, else from --in-channels, "
                       "--input-size, --classes)");
  info_cmd->add_option("--write-arch", info_write,
                       "write the model (a zoo model, --arch file or checkpoint) as an architecture file");
  bool info_json = false;
  info_cmd->add_flag("--json", info_json, "print the architecture description (JSON) instead of the table");

  // export
  auto* export_cmd = app.add_subcommand(
      "export", "write the (pruned) network as ONNX or as a torch.load-able file for Python");
  std::string export_src, export_format, export_out, export_data;
  int64_t export_opset = export_::kMaxOpset, export_pad = 1;
  export_cmd->add_option("model", export_src, "a run directory, its model.ckpt, or a torch export")
      ->required();
  export_cmd->add_option("--out", export_out, "file to write")->required();
  export_cmd->add_option("--format", export_format,
                         "onnx or torch (default: from --out's extension, .onnx or .pt)");
  export_cmd->add_option("--opset", export_opset, "ONNX opset (13 to 17)")->capture_default_str();
  export_cmd
      ->add_option("--pad-channels", export_pad,
                   "ONNX: pad hidden widths with zero units to multiples of this (e.g. 16: "
                   "same outputs, faster blocked kernels in ONNX Runtime)")
      ->capture_default_str();
  export_cmd->add_option("--data", export_data,
                         "data set whose training split gives the input normalisation (default: "
                         "the one it was trained on)");

  // import
  auto* import_cmd = app.add_subcommand(
      "import", "turn a PyTorch state_dict (torch.save) into a demp checkpoint for train --init");
  ImportOptions io;
  import_cmd->add_option("--from", io.from, "file written by torch.save(model.state_dict(), path)")
      ->required();
  import_cmd->add_option("--out", io.out, "checkpoint to write")->required();
  import_cmd->add_option("--model", io.model, "resnet18 or resnet50, with torchvision's parameter names");
  import_cmd->add_option("--arch", io.arch,
                         "architecture file, with its parameter names (<layer>.weight, ...)");
  import_cmd->add_option("--width", io.width, "width multiplier (--model)")->capture_default_str();
  import_cmd->add_option("--stem", io.stem, "ResNet stem (--model): imagenet (torchvision's) or cifar")
      ->capture_default_str();
  import_cmd->add_option("--in-channels", io.in_channels, "input channels")->capture_default_str();
  import_cmd->add_option("--input-size", io.input_size, "input height and width (the data's)")
      ->capture_default_str();
  import_cmd->add_option("--classes", io.classes, "number of classes (0: from fc.weight, or from the file)")
      ->capture_default_str();
  import_cmd->add_flag("--overwrite", io.overwrite, "replace an existing --out");

  // compare
  auto* compare_cmd =
      app.add_subcommand("compare", "one table over finished runs (accuracy, size, speed-up)");
  std::vector<std::string> compare_dirs;
  std::string compare_base;
  compare_cmd->add_option("runs", compare_dirs, "run directories")->required();
  compare_cmd->add_option("--baseline", compare_base,
                          "run whose training time is 1.00x (default: the first dense run)");

  // bench
  auto* bench_cmd = app.add_subcommand("bench", "paired training-step benchmark: demp vs PyTorch");
  BenchOptions bo;
  add_bench_options(bench_cmd, bo);

  // sweep, study, report
  ReportCommands rc;
  add_report_commands(app, rc);
  DataCommands dc;
  add_data_commands(app, dc);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    throw explain_parse_error(app, e, argc, argv);
  }
  // The options set explicitly (flags and config-file keys): --resume compares them with the
  // run's, and options that do nothing in this configuration are warned about.
  cfg.given = config_keys;
  for (const auto& f : train::fields(cfg)) {
    const CLI::Option* o = train_cmd->get_option_no_throw("--" + f.name);
    if (o && o->count() > 0) cfg.given.push_back(f.name);
  }

  if (const int code = run_report_commands(rc); code >= 0) return code;
  if (const int code = run_data_commands(dc); code >= 0) return code;
  if (*train_cmd) {
    if (cfg.nproc > 1 && std::getenv("RANK") != nullptr && std::getenv("DEMP_LOCAL_LAUNCH") == nullptr) {
      throw Error(fmt::format("--nproc {} and torchrun's RANK/WORLD_SIZE both start ranks", cfg.nproc),
                  "use one: --nproc N alone, or torchrun (or RANK, WORLD_SIZE...) without --nproc");
    }
    if (cfg.nproc > 1 && std::getenv("RANK") == nullptr) {
      train::validate(cfg);  // refused once here, not once per rank
      // The convenience launcher: the same command, once per local rank, with torchrun's
      // environment; each child sees RANK and trains (it does not launch again).
      std::vector<std::string> args{"/proc/self/exe"};  // this very binary, as the sweep runs it
      for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
      return dist::launch_local(args, cfg.nproc);
    }
    const json s = train::run_training(cfg, methods::make_method);
    if (s.value("status", "") == "interrupted") {
      if (s.contains("run_dir")) {
        std::cout << fmt::format(
            "interrupted at step {}; checkpoint and summary written. Continue with:\n"
            "  demp train --resume --out {}\n",
            s.value("interrupted_at_step", int64_t{0}), s["run_dir"].get<std::string>());
      }
      return 130;
    }
    if (s.value("status", "") == "replica") {  // a data-parallel rank other than 0
      std::cout << fmt::format(
          "rank {} | finished | units {} | params {} | prune steps {} | replicas "
          "identical {}\n",
          s["rank"].get<int64_t>(), s["units_final"].get<int64_t>(), s["params_final"].get<int64_t>(),
          s["prune_steps"].dump(), s["replicas_identical"].get<bool>() ? "yes" : "NO");
      return s["replicas_identical"].get<bool>() ? 0 : 4;
    }
    if (s.value("status", "") == "finished") {
      std::cout << fmt::format(
          "\n{:<24}{}\n{:<24}{:.2f}% (best {:.2f}%)\n{:<24}{} / {} ({:.1f}%)\n{:<24}{} / {} ({:.1f}%)\n"
          "{:<24}{} / {} ({:.1f}%)\n{:<24}{:.1f}\n{:<24}{}\n",
          "run", s["run_dir"].get<std::string>(), "test accuracy", 100 * s["test_accuracy"].get<double>(),
          100 * s["best_test_accuracy"].get<double>(), "live units", s["units_final"].get<int64_t>(),
          s["units_initial"].get<int64_t>(),
          100.0 * s["units_final"].get<double>() / s["units_initial"].get<double>(), "parameters",
          s["params_final"].get<int64_t>(), s["params_initial"].get<int64_t>(),
          100.0 * s["params_final"].get<double>() / s["params_initial"].get<double>(), "FLOPs/image",
          s["flops_final"].get<int64_t>(), s["flops_initial"].get<int64_t>(),
          100.0 * s["flops_final"].get<double>() / s["flops_initial"].get<double>(), "train seconds",
          s["train_seconds"].get<double>(), "steps", s["steps"].get<int64_t>());
      if (s.contains("replicas_identical")) {
        const bool same = s["replicas_identical"].get<bool>();
        std::cout << fmt::format("{:<24}{} ({}), replicas identical: {}\n", "ranks",
                                 s["world_size"].get<int64_t>(), s["dist_backend"].get<std::string>(),
                                 same ? "yes" : "NO");
        if (!same) return 4;
      }
    }
    return 0;
  }
  if (*eval_cmd) return cmd_eval(ckpt, eval_data, eval_device, eval_batch, eval_json);
  if (*export_cmd) {
    return cmd_export(export_src, export_format, export_out, export_opset, export_pad, export_data);
  }
  if (*import_cmd) {
    std::vector<std::string> given;
    for (const char* n : {"width", "stem", "in-channels", "input-size", "classes"}) {
      if (import_cmd->get_option("--" + std::string(n))->count() > 0) given.emplace_back(n);
    }
    return cmd_import(io, given);
  }
  if (*info_cmd) {
    nn::Arch a;
    auto count = [&](const char* n) { return info_cmd->get_option(n)->count() > 0; };
    if (!info_arch.empty()) {
      if (!info_ckpt.empty() || count("--model") || count("--width") || count("--mlp-widths") ||
          count("--stem")) {
        throw Error("--arch and a model or checkpoint both given", "give one network to describe");
      }
      // What the file leaves open comes from the options (or their defaults); what it gives, the
      // options must agree with.
      json head;
      try {
        head = json::parse(read_file(info_arch));
      } catch (const std::exception&) {
        head = json::object();  // load_arch_file says what is wrong
      }
      const bool has_input = head.is_object() && head.contains("input");
      const bool has_classes = head.is_object() && head.contains("classes");
      nn::ArchShape shape;
      if (count("--in-channels") || !has_input) shape.channels = mo.in_channels;
      if (count("--input-size") || !has_input) shape.height = shape.width = info_size;
      if (count("--classes") || !has_classes) shape.classes = mo.classes;
      a = nn::load_arch_file(info_arch, shape);
    } else if (!info_ckpt.empty() && !info_write.empty()) {
      a = export_::load_source(info_ckpt).arch;
    } else if (info_ckpt.empty()) {
      train::TrainConfig c;
      c.model = info_model;
      c.width = info_width;
      c.mlp_widths = mlp_widths;
      c.stem = info_stem;
      data::DataBundle shape;
      shape.channels = mo.in_channels;
      shape.height = shape.width = info_size;
      shape.classes = mo.classes;
      a = nn::build_arch(train::model_options(c, shape));
    }
    if (!info_write.empty()) {
      if (is_directory(info_write))
        throw Error("--write-arch " + info_write + " is a directory",
                    "give a file name, e.g. --write-arch resnet18.json");
      write_file_atomic(info_write, nn::arch_file_text(a));
      std::cout << fmt::format("wrote {} ({} layers, {} units, {} params) to {}\n", a.model, a.layers.size(),
                               a.units(), a.params(), info_write);
      return 0;
    }
    return cmd_info(info_arch.empty() ? info_ckpt : std::string(), a, info_json);
  }
  if (*bench_cmd) return run_bench(bo);
  if (*compare_cmd) {
    std::cout << report::compare_table(report::read_summaries(compare_dirs), compare_base);
    return 0;
  }
  return 0;
}

}  // namespace demp::cli
