#include "demp/cli/commands.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>

#include "demp/cli/bench.h"
#include "demp/cli/report_cmds.h"
#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/data/dataset.h"
#include "demp/dist/comm.h"
#include "demp/export/export.h"
#include "demp/nn/arch.h"
#include "demp/nn/model.h"
#include "demp/report/compare.h"
#include "demp/train/config.h"
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
            app->add_option(flag, *p, f.help)->default_str(train::value_string(dfs[i]))->group(f.group);
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
    throw Error(src.path + " is an ONNX model: demp eval runs run directories, checkpoints and "
                           "torch exports",
                "evaluate ONNX models with onnxruntime (README: 'The pruned network outside "
                "demp'), or give the run's model.ckpt");
  }
  return src;
}

int cmd_eval(const std::string& path, std::string data_spec, const std::string& device_spec,
             int64_t batch, bool as_json) {
  const auto src = load_runnable(path);
  const train::TrainConfig cfg = export_::source_config(src);
  if (data_spec.empty()) data_spec = cfg.data;
  const auto device = train::resolve_device(device_spec);
  // The training split options matter: the normalisation statistics come from the training
  // images that training used (after the validation carve-out and --train-limit).
  auto data = data::load(data_spec, {cfg.val_size, static_cast<uint64_t>(cfg.seed),
                                     cfg.train_limit, 0});
  nn::Model model(src.arch, src.layers);
  if (data.channels != src.arch.in_channels || data.height != src.arch.in_height ||
      data.width != src.arch.in_width || data.classes != src.arch.classes) {
    throw Error(fmt::format("data {} ({}x{}x{}, {} classes) does not fit the model ({}x{}x{}, {} classes)",
                            data_spec, data.channels, data.height, data.width, data.classes,
                            src.arch.in_channels, src.arch.in_height, src.arch.in_width,
                            src.arch.classes),
                "evaluate on the data the model was trained on");
  }
  if (src.norm.known()) {
    double diff = 0;
    for (size_t c = 0; c < src.norm.mean.size() && c < data.mean.size(); ++c) {
      diff = std::max({diff, std::abs(src.norm.mean[c] - data.mean[c]),
                       std::abs(src.norm.std[c] - data.std[c])});
    }
    if (diff > 1e-6) {
      std::cerr << fmt::format("demp: warning: {} normalises with mean {} std {}, the model was "
                               "trained with mean {} std {}\n",
                               data_spec, data.mean, data.std, src.norm.mean, src.norm.std);
    }
  }
  model.to(device);
  const auto r = train::evaluate(model, data.test, batch, device);
  const auto& a = model.arch();
  if (as_json) {
    std::cout << json{{"checkpoint", src.path}, {"kind", export_::kind_name(src.kind)},
                      {"data", data_spec}, {"test_accuracy", r.accuracy},
                      {"test_loss", r.loss}, {"images", r.n}, {"units", a.units()},
                      {"params", a.params()}, {"flops", a.flops()}}
                     .dump(2)
              << "\n";
  } else {
    std::cout << fmt::format("{} on {}: test accuracy {:.2f}% | loss {:.4f} | {} images | {} units | "
                             "{} params | {} FLOPs/image\n",
                             src.path, data_spec, 100 * r.accuracy, r.loss, r.n, a.units(),
                             a.params(), a.flops());
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

int cmd_export(const std::string& path, std::string format, const std::string& out,
               int64_t opset, int64_t pad_channels, const std::string& data_spec) {
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
  const auto src = export_::load_source(path);
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
      format == "onnx" ? fmt::format(", opset {}{}", opset,
                                     pad_channels > 1
                                         ? fmt::format(", hidden widths padded to multiples of {}",
                                                       pad_channels)
                                         : std::string())
                       : std::string(),
      a.in_channels,
      a.in_height, a.in_width, info.norm.mean, info.norm.std, a.classes);
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
    std::cout << fmt::format("input normalisation: pixel / 255, then (x - mean) / std with mean {} "
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
  if (!config_path.empty()) {
    json j;
    try {
      j = json::parse(read_file(config_path));
    } catch (const json::parse_error& e) {
      throw Error("config file " + config_path + " is not valid JSON: " + e.what(),
                  "see recipes/ for examples");
    }
    train::apply_json(cfg, j, config_path);
  }
  auto* train_cmd = app.add_subcommand("train", "train a network (dense or with a pruning method)");
  bind_fields(train_cmd, cfg);
  std::string config_unused;
  train_cmd->add_option("--config", config_unused,
                        "JSON file whose keys are these flags' names; flags override it")
      ->group("run");

  // eval
  auto* eval_cmd =
      app.add_subcommand("eval", "evaluate a run, checkpoint or torch export on its test set");
  std::string ckpt, eval_data, eval_device = "cpu";
  int64_t eval_batch = 1000;
  bool eval_json = false;
  eval_cmd->add_option("model", ckpt, "a run directory, its model.ckpt, or a torch export")
      ->required();
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
  export_cmd->add_option("--pad-channels", export_pad,
                         "ONNX: pad hidden widths with zero units to multiples of this (e.g. 16: "
                         "same outputs, faster blocked kernels in ONNX Runtime)")
      ->capture_default_str();
  export_cmd->add_option("--data", export_data,
                         "data set whose training split gives the input normalisation (default: "
                         "the one it was trained on)");

  // compare
  auto* compare_cmd = app.add_subcommand("compare", "one table over finished runs (accuracy, size, speed-up)");
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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    throw Error(e.what(), "see 'demp " + std::string(argc > 1 ? argv[1] : "") + " --help'");
  }

  if (const int code = run_report_commands(rc); code >= 0) return code;
  if (*train_cmd) {
    if (cfg.nproc > 1 && std::getenv("RANK") == nullptr) {
      // The convenience launcher: the same command, once per local rank, with torchrun's
      // environment; each child sees RANK and trains (it does not launch again).
      std::vector<std::string> args{"/proc/self/exe"};  // this very binary, as the sweep runs it
      for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
      return dist::launch_local(args, cfg.nproc);
    }
    const json s = train::run_training(cfg);
    if (s.value("status", "") == "replica") {  // a data-parallel rank other than 0
      std::cout << fmt::format("rank {} | finished | units {} | params {} | prune steps {} | replicas "
                               "identical {}\n",
                               s["rank"].get<int64_t>(), s["units_final"].get<int64_t>(),
                               s["params_final"].get<int64_t>(), s["prune_steps"].dump(),
                               s["replicas_identical"].get<bool>() ? "yes" : "NO");
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
  if (*info_cmd) {
    nn::Arch a;
    if (info_ckpt.empty()) {
      train::TrainConfig c;
      c.model = info_model;
      c.width = info_width;
      c.mlp_widths = mlp_widths;
      data::DataBundle shape;
      shape.channels = mo.in_channels;
      shape.height = shape.width = info_size;
      shape.classes = mo.classes;
      a = nn::build_arch(train::model_options(c, shape));
    }
    return cmd_info(info_ckpt, a, info_json);
  }
  if (*bench_cmd) return run_bench(bo);
  if (*compare_cmd) {
    std::cout << report::compare_table(report::read_summaries(compare_dirs), compare_base);
    return 0;
  }
  return 0;
}

}  // namespace demp::cli
