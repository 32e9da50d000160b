#pragma once
// `demp eval`: a run directory, checkpoint or torch export on its (or another) test set.
#include <cstdint>
#include <string>

namespace CLI {
class App;
}

namespace demp::cli {

/// What `eval` parses into; it must outlive the parse (CLI11 binds to it).
struct EvalCommand {
  CLI::App* cmd = nullptr;
  std::string model, data, device = "cpu";
  int64_t batch_size = 1000;
  bool json = false;
};

void add_eval_command(CLI::App& app, EvalCommand& e);
/// Prints test accuracy, loss and the network's size (a line, or JSON) and returns 0; -1 when
/// `eval` was not selected. User errors throw demp::Error.
int run_eval_command(const EvalCommand& e);

}  // namespace demp::cli
