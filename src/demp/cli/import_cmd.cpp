#include "demp/cli/import_cmd.h"

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>
#include <vector>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/nn/arch.h"
#include "demp/nn/model.h"
#include "demp/nn/state_dict.h"
#include "demp/train/checkpoint.h"

namespace demp::cli {
namespace {

// The options of the network's shape that were given on the command line.
std::vector<std::string> given_options(const ImportCommand& o) {
  std::vector<std::string> given;
  for (const char* n : {"width", "stem", "in-channels", "input-size", "classes"}) {
    if (o.cmd->get_option("--" + std::string(n))->count() > 0) given.emplace_back(n);
  }
  return given;
}

void check_options(const ImportCommand& o, const std::vector<std::string>& given) {
  if (o.model.empty() == o.arch.empty()) {
    throw Error(
        o.model.empty() ? "demp import needs --model or --arch" : "--model and --arch both give the network",
        "--model resnet18|resnet50 for torchvision's names, --arch FILE.json for an architecture file's");
  }
  if (!o.arch.empty()) {
    for (const char* n : {"width", "stem"}) {
      if (std::find(given.begin(), given.end(), n) != given.end())
        throw Error(fmt::format("--{} and --arch both give the network", n), "the architecture file sets it");
    }
  }
  if (o.out.empty()) throw Error("--out is empty", "give the checkpoint to write, e.g. --out resnet18.ckpt");
  if (is_directory(o.out))
    throw Error("--out " + o.out + " is a directory", "give a file name, e.g. --out resnet18.ckpt");
  if (file_exists(o.out) && !o.overwrite)
    throw Error(o.out + " exists", "use --overwrite to replace it, or another --out");
}

// torchvision's ResNet (--model), its classes from fc.weight unless --classes says.
nn::Arch torchvision_arch(const ImportCommand& o, const nn::StateDict& sd) {
  if (o.model != "resnet18" && o.model != "resnet50") {
    throw Error("demp import --model takes resnet18 or resnet50 (torchvision's names), not '" + o.model + "'",
                "for another network write an architecture file and use --arch (docs/architecture.md)");
  }
  int64_t classes = o.classes;
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
  return nn::build_arch(mo);
}

// An architecture file (--arch): what the file leaves open comes from the options given.
nn::Arch file_arch(const ImportCommand& o, const std::vector<std::string>& given) {
  auto has = [&](const char* n) { return std::find(given.begin(), given.end(), n) != given.end(); };
  nn::ArchShape shape;
  if (has("in-channels")) shape.channels = o.in_channels;
  if (has("input-size")) shape.height = shape.width = o.input_size;
  shape.classes = o.classes;
  return nn::load_arch_file(o.arch, shape);
}

}  // namespace

void add_import_command(CLI::App& app, ImportCommand& o) {
  o.cmd = app.add_subcommand(
      "import", "turn a PyTorch state_dict (torch.save) into a demp checkpoint for train --init");
  auto* c = o.cmd;
  c->add_option("--from", o.from, "file written by torch.save(model.state_dict(), path)")->required();
  c->add_option("--out", o.out, "checkpoint to write")->required();
  c->add_option("--model", o.model, "resnet18 or resnet50, with torchvision's parameter names");
  c->add_option("--arch", o.arch, "architecture file, with its parameter names (<layer>.weight, ...)");
  c->add_option("--width", o.width, "width multiplier (--model)")->capture_default_str();
  c->add_option("--stem", o.stem, "ResNet stem (--model): imagenet (torchvision's) or cifar")
      ->capture_default_str();
  c->add_option("--in-channels", o.in_channels, "input channels")->capture_default_str();
  c->add_option("--input-size", o.input_size, "input height and width (the data's)")->capture_default_str();
  c->add_option("--classes", o.classes, "number of classes (0: from fc.weight, or from the file)")
      ->capture_default_str();
  c->add_flag("--overwrite", o.overwrite, "replace an existing --out");
}

int run_import_command(const ImportCommand& o) {
  if (!*o.cmd) return -1;
  const std::vector<std::string> given = given_options(o);
  check_options(o, given);
  const nn::StateDict sd = nn::read_state_dict(o.from);
  const nn::Naming naming = o.model.empty() ? nn::Naming::Demp : nn::Naming::Torchvision;
  const nn::Arch arch = o.model.empty() ? file_arch(o, given) : torchvision_arch(o, sd);
  nn::Model model(arch, nn::layers_from_state_dict(arch, sd, naming));
  nlohmann::json meta{{"step", 0},
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

}  // namespace demp::cli
