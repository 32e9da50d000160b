#include "demp/cli/compare_cmd.h"

#include <CLI/CLI.hpp>

#include <iostream>

#include "demp/report/compare.h"

namespace demp::cli {

void add_compare_command(CLI::App& app, CompareCommand& o) {
  o.cmd = app.add_subcommand("compare", "one table over finished runs (accuracy, size, speed-up)");
  o.cmd->add_option("runs", o.runs, "run directories")->required();
  o.cmd->add_option("--baseline", o.baseline,
                    "run whose training time is 1.00x (default: the first dense run)");
}

int run_compare_command(const CompareCommand& o) {
  if (!*o.cmd) return -1;
  std::cout << report::compare_table(report::read_summaries(o.runs), o.baseline);
  return 0;
}

}  // namespace demp::cli
