#include "demp/cli/export_cmd.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <CLI/CLI.hpp>

#include <iostream>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/export/export.h"
#include "demp/nn/model.h"
#include "demp/train/run_dir.h"

namespace demp::cli {
namespace {

// The format an --out name implies, when --format is not given.
std::string format_from_name(const std::string& out) {
  auto ends = [&](const std::string& e) {
    return out.size() >= e.size() && out.compare(out.size() - e.size(), e.size(), e) == 0;
  };
  if (ends(".onnx")) return "onnx";
  if (ends(".pt") || ends(".pth")) return "torch";
  return {};
}

// Never over a file of a run directory (its checkpoint, config, metrics...), nor over the
// network being exported: an export must not destroy what it reads.
void refuse_overwrite(const std::string& out, const export_::ModelSource& src, const std::string& format) {
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

// --format (or --out's extension), checked with the options that depend on it.
std::string checked_format(const ExportCommand& x) {
  const std::string format = x.format.empty() ? format_from_name(x.out) : x.format;
  if (format.empty()) {
    throw Error("cannot tell the export format from '" + x.out + "'",
                "pass --format onnx or --format torch (or name the file .onnx / .pt)");
  }
  if (format != "onnx" && format != "torch") {
    throw Error("unknown export format '" + format + "'", "use onnx or torch");
  }
  if (x.pad_channels != 1 && format != "onnx") {
    throw Error("--pad-channels applies to ONNX exports only",
                "the torch export keeps the pruned widths; pad at ONNX export");
  }
  if (x.out.empty()) throw Error("--out is empty", "give the file to write, e.g. --out model.onnx");
  if (is_directory(x.out))
    throw Error("--out " + x.out + " is a directory", "give a file name, e.g. --out model.onnx");
  return format;
}

}  // namespace

void add_export_command(CLI::App& app, ExportCommand& x) {
  x.cmd = app.add_subcommand("export",
                             "write the (pruned) network as ONNX or as a torch.load-able file for Python");
  x.cmd->add_option("model", x.model, "a run directory, its model.ckpt, or a torch export")->required();
  x.cmd->add_option("--out", x.out, "file to write")->required();
  x.cmd->add_option("--format", x.format, "onnx or torch (default: from --out's extension, .onnx or .pt)");
  x.cmd->add_option("--opset", x.opset, "ONNX opset (13 to 17)")->capture_default_str();
  x.cmd
      ->add_option("--pad-channels", x.pad_channels,
                   "ONNX: pad hidden widths with zero units to multiples of this (e.g. 16: "
                   "same outputs, faster blocked kernels in ONNX Runtime)")
      ->capture_default_str();
  x.cmd->add_option("--data", x.data,
                    "data set whose training split gives the input normalisation (default: "
                    "the one it was trained on)");
}

int run_export_command(const ExportCommand& x) {
  if (!*x.cmd) return -1;
  const std::string format = checked_format(x);
  const auto src = export_::load_source(x.model);
  refuse_overwrite(x.out, src, format);
  if (src.kind == export_::SourceKind::Onnx) {
    throw Error(src.path + " is already an ONNX export; its weights cannot be read back",
                "export from the run directory, its model.ckpt or a torch export");
  }
  const export_::ExportInfo info = export_::export_info(src, x.data);
  const nn::Model model(src.arch, src.layers);
  const auto& a = model.arch();
  if (format == "onnx") {
    export_::write_onnx(x.out, model, info, x.opset, x.pad_channels);
  } else {
    export_::write_torch_export(x.out, model, info);
  }
  std::cout << fmt::format(
      "exported {} ({} of {} units, {} params, {} FLOPs/image) to {} ({}{})\n"
      "  input: N x {} x {} x {} float32, pixel / 255 then (x - mean) / std with mean {} std {}\n"
      "  output: N x {} logits\n",
      a.model, a.units(), a.initial_units(), a.params(), a.flops(), x.out, format,
      format == "onnx"
          ? fmt::format(", opset {}{}", x.opset,
                        x.pad_channels > 1
                            ? fmt::format(", hidden widths padded to multiples of {}", x.pad_channels)
                            : std::string())
          : std::string(),
      a.in_channels, a.in_height, a.in_width, info.norm.mean, info.norm.std, a.classes);
  return 0;
}

}  // namespace demp::cli
