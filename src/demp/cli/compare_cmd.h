#pragma once
// `demp compare`: one table over finished runs (accuracy, size, speed-up).
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace demp::cli {

/// What `compare` parses into; it must outlive the parse (CLI11 binds to it).
struct CompareCommand {
  CLI::App* cmd = nullptr;
  std::vector<std::string> runs;
  std::string baseline;
};

void add_compare_command(CLI::App& app, CompareCommand& o);
/// Prints the table and returns 0; -1 when `compare` was not selected.
int run_compare_command(const CompareCommand& o);

}  // namespace demp::cli
