#pragma once
// `demp info`: a network's architecture table (or its JSON description, or an architecture file
// written from it): a zoo model, an architecture file, or the current widths of a run,
// checkpoint, torch or ONNX export.
#include <cstdint>
#include <string>

namespace CLI {
class App;
}

namespace demp::cli {

/// What `info` parses into; it must outlive the parse (CLI11 binds to it).
struct InfoCommand {
  CLI::App* cmd = nullptr;
  std::string checkpoint, model = "resnet18", mlp_widths = "512,256", stem = "auto", arch, write_arch;
  double width = 1.0;
  int64_t in_channels = 1, input_size = 28, classes = 10;
  bool json = false;
};

void add_info_command(CLI::App& app, InfoCommand& o);
/// Prints the table (or JSON, or writes --write-arch) and returns 0; -1 when `info` was not
/// selected. User errors throw demp::Error.
int run_info_command(const InfoCommand& o);

}  // namespace demp::cli
