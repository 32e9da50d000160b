#pragma once
// `demp export`: the (pruned) network as ONNX or as a torch.load-able file for Python.
#include <cstdint>
#include <string>

#include "demp/export/export.h"

namespace CLI {
class App;
}

namespace demp::cli {

/// What `export` parses into; it must outlive the parse (CLI11 binds to it).
struct ExportCommand {
  CLI::App* cmd = nullptr;
  std::string model, format, out, data;
  int64_t opset = export_::kMaxOpset, pad_channels = 1;
};

void add_export_command(CLI::App& app, ExportCommand& x);
/// Writes the export and prints what it holds; returns 0, or -1 when `export` was not selected.
/// User errors throw demp::Error.
int run_export_command(const ExportCommand& x);

}  // namespace demp::cli
