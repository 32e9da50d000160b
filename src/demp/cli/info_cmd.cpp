#include "demp/cli/info_cmd.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <CLI/CLI.hpp>

#include <iostream>
#include <nlohmann/json.hpp>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/export/export.h"
#include "demp/nn/arch.h"

namespace demp::cli {
namespace {

using nlohmann::json;

bool given(const InfoCommand& o, const char* flag) { return o.cmd->get_option(flag)->count() > 0; }

// --arch FILE: what the file leaves open comes from the options (or their defaults); what it
// gives, the options must agree with.
nn::Arch arch_from_file(const InfoCommand& o) {
  if (!o.checkpoint.empty() || given(o, "--model") || given(o, "--width") || given(o, "--mlp-widths") ||
      given(o, "--stem")) {
    throw Error("--arch and a model or checkpoint both given", "give one network to describe");
  }
  json head;
  try {
    head = json::parse(read_file(o.arch));
  } catch (const std::exception&) {
    head = json::object();  // load_arch_file says what is wrong
  }
  const bool has_input = head.is_object() && head.contains("input");
  const bool has_classes = head.is_object() && head.contains("classes");
  nn::ArchShape shape;
  if (given(o, "--in-channels") || !has_input) shape.channels = o.in_channels;
  if (given(o, "--input-size") || !has_input) shape.height = shape.width = o.input_size;
  if (given(o, "--classes") || !has_classes) shape.classes = o.classes;
  return nn::load_arch_file(o.arch, shape);
}

// The zoo model the options describe.
nn::Arch zoo_arch(const InfoCommand& o) {
  nn::ModelOptions mo;
  mo.model = o.model;
  mo.stem = o.stem;
  mo.width = o.width;
  mo.mlp_widths = nn::parse_mlp_widths(o.mlp_widths);
  mo.in_channels = o.in_channels;
  mo.in_height = mo.in_width = o.input_size;
  mo.classes = o.classes;
  return nn::build_arch(mo);
}

int write_arch(const nn::Arch& a, const std::string& path) {
  if (is_directory(path))
    throw Error("--write-arch " + path + " is a directory",
                "give a file name, e.g. --write-arch resnet18.json");
  write_file_atomic(path, nn::arch_file_text(a));
  std::cout << fmt::format("wrote {} ({} layers, {} units, {} params) to {}\n", a.model, a.layers.size(),
                           a.units(), a.params(), path);
  return 0;
}

// The table (or JSON) of a run, checkpoint or export, with what it records about its input and
// accuracy.
int print_source(const std::string& path, bool as_json) {
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

void add_info_command(CLI::App& app, InfoCommand& o) {
  o.cmd = app.add_subcommand("info", "print a model's architecture table");
  auto* c = o.cmd;
  c->add_option("model", o.checkpoint,
                "a run directory, checkpoint, torch or ONNX export (its current widths)");
  c->add_option("--checkpoint", o.checkpoint, "the same, as an option");
  c->add_option("--model", o.model, "mlp, vgg16, resnet18, resnet50")->capture_default_str();
  c->add_option("--width", o.width, "width multiplier")->capture_default_str();
  c->add_option("--mlp-widths", o.mlp_widths, "MLP hidden widths")->capture_default_str();
  c->add_option("--in-channels", o.in_channels, "input channels")->capture_default_str();
  c->add_option("--input-size", o.input_size, "input height and width")->capture_default_str();
  c->add_option("--classes", o.classes, "number of classes")->capture_default_str();
  c->add_option("--stem", o.stem, "ResNet stem: auto, cifar or imagenet")->capture_default_str();
  c->add_option("--arch", o.arch,
                "an architecture file (input size and classes from the file, else from --in-channels, "
                "--input-size, --classes)");
  c->add_option("--write-arch", o.write_arch,
                "write the model (a zoo model, --arch file or checkpoint) as an architecture file");
  c->add_flag("--json", o.json, "print the architecture description (JSON) instead of the table");
}

int run_info_command(const InfoCommand& o) {
  if (!*o.cmd) return -1;
  nn::Arch a;
  if (!o.arch.empty()) {
    a = arch_from_file(o);
  } else if (!o.checkpoint.empty() && !o.write_arch.empty()) {
    a = export_::load_source(o.checkpoint).arch;
  } else if (o.checkpoint.empty()) {
    a = zoo_arch(o);
  }
  if (!o.write_arch.empty()) return write_arch(a, o.write_arch);
  if (!o.arch.empty() || o.checkpoint.empty()) {
    std::cout << (o.json ? json(a).dump(2) + "\n" : a.table());
    return 0;
  }
  return print_source(o.checkpoint, o.json);
}

}  // namespace demp::cli
