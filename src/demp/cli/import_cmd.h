#pragma once
// `demp import`: a PyTorch state_dict (torch.save) as a demp checkpoint for `train --init`.
#include <cstdint>
#include <string>

namespace CLI {
class App;
}

namespace demp::cli {

/// What `import` parses into; it must outlive the parse (CLI11 binds to it).
struct ImportCommand {
  CLI::App* cmd = nullptr;
  std::string from, out, model, arch, stem = "imagenet";
  double width = 1.0;
  int64_t in_channels = 3, input_size = 224, classes = 0;
  bool overwrite = false;
};

void add_import_command(CLI::App& app, ImportCommand& o);
/// Writes the checkpoint (step 0, no optimizer state) and returns 0; -1 when `import` was not
/// selected. User errors throw demp::Error.
int run_import_command(const ImportCommand& o);

}  // namespace demp::cli
