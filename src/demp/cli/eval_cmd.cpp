#include "demp/cli/eval_cmd.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>

#include "demp/common/error.h"
#include "demp/data/dataset.h"
#include "demp/export/export.h"
#include "demp/nn/model.h"
#include "demp/train/trainer.h"

namespace demp::cli {
namespace {

using nlohmann::json;

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

// The data must have the model's input shape and classes; a different normalisation is only
// warned about (another data set of the same shape is a legitimate test).
void check_data_fits(const export_::ModelSource& src, const data::DataBundle& data, const std::string& spec) {
  if (data.channels != src.arch.in_channels || data.height != src.arch.in_height ||
      data.width != src.arch.in_width || data.classes != src.arch.classes) {
    throw Error(fmt::format("data {} ({}x{}x{}, {} classes) does not fit the model ({}x{}x{}, {} classes)",
                            spec, data.channels, data.height, data.width, data.classes, src.arch.in_channels,
                            src.arch.in_height, src.arch.in_width, src.arch.classes),
                "evaluate on the data the model was trained on");
  }
  if (!src.norm.known()) return;
  double diff = 0;
  for (size_t c = 0; c < src.norm.mean.size() && c < data.mean.size(); ++c) {
    diff =
        std::max({diff, std::abs(src.norm.mean[c] - data.mean[c]), std::abs(src.norm.std[c] - data.std[c])});
  }
  if (diff > 1e-6) {
    std::cerr << fmt::format(
        "demp: warning: {} normalises with mean {} std {}, the model was "
        "trained with mean {} std {}\n",
        spec, data.mean, data.std, src.norm.mean, src.norm.std);
  }
}

}  // namespace

void add_eval_command(CLI::App& app, EvalCommand& e) {
  e.cmd = app.add_subcommand("eval", "evaluate a run, checkpoint or torch export on its test set");
  e.cmd->add_option("model", e.model, "a run directory, its model.ckpt, or a torch export")->required();
  e.cmd->add_option("--data", e.data, "data set (default: the one it was trained on)");
  e.cmd->add_option("--device", e.device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  e.cmd->add_option("--batch-size", e.batch_size, "evaluation batch size")->capture_default_str();
  e.cmd->add_flag("--json", e.json, "print the result as JSON");
}

int run_eval_command(const EvalCommand& e) {
  if (!*e.cmd) return -1;
  if (e.batch_size <= 0) {
    throw Error(fmt::format("--batch-size must be positive, got {}", e.batch_size), "e.g. --batch-size 1000");
  }
  const auto src = load_runnable(e.model);
  const train::TrainConfig cfg = export_::source_config(src);
  const std::string data_spec = e.data.empty() ? cfg.data : e.data;
  const auto device = train::resolve_device(e.device);
  // The training split options matter: the normalisation statistics come from the training
  // images that training used (after the validation carve-out and --train-limit).
  data::LoadOptions lo{cfg.val_size, static_cast<uint64_t>(cfg.seed), cfg.train_limit, 0, {}};
  train::image_options(cfg, at::get_num_threads(), &lo.image);  // image folders: as trained
  lo.image.pin_memory = device.is_cuda();
  auto data = data::load(data_spec, lo);
  nn::Model model(src.arch, src.layers);
  check_data_fits(src, data, data_spec);
  model.to(device);
  const auto r = train::evaluate(model, data.test, e.batch_size, device);
  const auto& a = model.arch();
  if (e.json) {
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

}  // namespace demp::cli
