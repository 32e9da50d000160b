#include "demp/cli/commands.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "demp/cli/bench.h"
#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/data/dataset.h"
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

int cmd_eval(const std::string& ckpt, std::string data_spec, const std::string& device_spec,
             int64_t batch, bool as_json) {
  const auto ck = train::load_checkpoint(ckpt);
  train::TrainConfig cfg;
  if (ck.meta.contains("config")) train::apply_json(cfg, ck.meta["config"], ckpt);
  if (data_spec.empty()) data_spec = cfg.data;
  const auto device = train::resolve_device(device_spec);
  auto data = data::load(data_spec, {cfg.val_size, static_cast<uint64_t>(cfg.seed), 0, 0});
  nn::Model model(ck.arch, ck.layers);
  if (data.channels != ck.arch.in_channels || data.height != ck.arch.in_height ||
      data.width != ck.arch.in_width || data.classes != ck.arch.classes) {
    throw Error(fmt::format("data {} ({}x{}x{}, {} classes) does not fit the model ({}x{}x{}, {} classes)",
                            data_spec, data.channels, data.height, data.width, data.classes,
                            ck.arch.in_channels, ck.arch.in_height, ck.arch.in_width, ck.arch.classes),
                "evaluate on the data the model was trained on");
  }
  model.to(device);
  const auto r = train::evaluate(model, data.test, batch, device);
  const auto& a = model.arch();
  if (as_json) {
    std::cout << json{{"checkpoint", ckpt}, {"data", data_spec}, {"test_accuracy", r.accuracy},
                      {"test_loss", r.loss}, {"images", r.n}, {"units", a.units()},
                      {"params", a.params()}, {"flops", a.flops()}}
                     .dump(2)
              << "\n";
  } else {
    std::cout << fmt::format("{} on {}: test accuracy {:.2f}% | loss {:.4f} | {} images | {} units | "
                             "{} params | {} FLOPs/image\n",
                             ckpt, data_spec, 100 * r.accuracy, r.loss, r.n, a.units(), a.params(),
                             a.flops());
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
  auto* eval_cmd = app.add_subcommand("eval", "evaluate a checkpoint on its test set");
  std::string ckpt, eval_data, eval_device = "cpu";
  int64_t eval_batch = 1000;
  bool eval_json = false;
  eval_cmd->add_option("checkpoint", ckpt, "path of a model.ckpt")->required();
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
  info_cmd->add_option("--checkpoint", info_ckpt, "a model.ckpt (shows its current widths)");
  info_cmd->add_option("--model", info_model, "mlp, vgg16, resnet18, resnet50")->capture_default_str();
  info_cmd->add_option("--width", info_width, "width multiplier")->capture_default_str();
  info_cmd->add_option("--mlp-widths", mlp_widths, "MLP hidden widths")->capture_default_str();
  info_cmd->add_option("--in-channels", mo.in_channels, "input channels")->capture_default_str();
  info_cmd->add_option("--input-size", info_size, "input height and width")->capture_default_str();
  info_cmd->add_option("--classes", mo.classes, "number of classes")->capture_default_str();
  bool info_json = false;
  info_cmd->add_flag("--json", info_json, "print the architecture description (JSON) instead of the table");

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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    throw Error(e.what(), "see 'demp " + std::string(argc > 1 ? argv[1] : "") + " --help'");
  }

  if (*train_cmd) {
    const json s = train::run_training(cfg);
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
    }
    return 0;
  }
  if (*eval_cmd) return cmd_eval(ckpt, eval_data, eval_device, eval_batch, eval_json);
  if (*info_cmd) {
    nn::Arch a;
    if (!info_ckpt.empty()) {
      a = train::load_checkpoint(info_ckpt).arch;
    } else {
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
    std::cout << (info_json ? json(a).dump(2) + "\n" : a.table());
    return 0;
  }
  if (*bench_cmd) return run_bench(bo);
  if (*compare_cmd) {
    std::cout << report::compare_table(report::read_summaries(compare_dirs), compare_base);
    return 0;
  }
  return 0;
}

}  // namespace demp::cli
