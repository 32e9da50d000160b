// demp: the command-line front end. Each subcommand is one file of cli/ (an add_X_command that
// declares its options, a run_X_command that runs it when selected); this file wires them in the
// order `demp --help` lists them and turns every failure into one line.
#include <fmt/format.h>
#include <torch/torch.h>
#include <CLI/CLI.hpp>

#include <c10/util/Logging.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "demp/cli/bench.h"
#include "demp/cli/common.h"
#include "demp/cli/compare_cmd.h"
#include "demp/cli/data_cmds.h"
#include "demp/cli/eval_cmd.h"
#include "demp/cli/export_cmd.h"
#include "demp/cli/import_cmd.h"
#include "demp/cli/info_cmd.h"
#include "demp/cli/report_cmds.h"
#include "demp/cli/train_cmd.h"
#include "demp/common/error.h"
#include "demp/train/run_dir.h"

namespace {

using namespace demp::cli;

// Parses the command line and runs the subcommand; returns the exit code.
int run(int argc, char** argv) {
  CLI::App app{"demp: train compact networks with Demon Pruning (DemP)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "demp 0.1.0");
  // What each subcommand parses into: it must outlive the parse.
  TrainCommand train;
  EvalCommand eval;
  InfoCommand info;
  ExportCommand export_;
  ImportCommand import;
  CompareCommand compare;
  BenchOptions bench;
  ReportCommands report;
  DataCommands data;
  add_train_command(app, train, argc, argv);  // first: it reads --config before anything parses
  add_eval_command(app, eval);
  add_info_command(app, info);
  add_export_command(app, export_);
  add_import_command(app, import);
  add_compare_command(app, compare);
  CLI::App* bench_cmd = app.add_subcommand("bench", "paired training-step benchmark: demp vs PyTorch");
  add_bench_options(bench_cmd, bench);
  add_report_commands(app, report);  // sweep, study, frontier, report
  add_data_commands(app, data);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    throw explain_parse_error(app, e, argc, argv);
  }
  // Exactly one subcommand was selected; each run_X_command returns -1 when it was not that one.
  if (const int code = run_train_command(train, argc, argv); code >= 0) return code;
  if (const int code = run_eval_command(eval); code >= 0) return code;
  if (const int code = run_info_command(info); code >= 0) return code;
  if (const int code = run_export_command(export_); code >= 0) return code;
  if (const int code = run_import_command(import); code >= 0) return code;
  if (const int code = run_compare_command(compare); code >= 0) return code;
  if (*bench_cmd) return run_bench(bench);
  if (const int code = run_report_commands(report); code >= 0) return code;
  if (const int code = run_data_commands(data); code >= 0) return code;
  return 0;
}

// One line, starting on a fresh line (an open progress bar is ended first, not collided with).
int fail(int code, const std::string& what, const std::string& hint) {
  demp::train::end_progress_line();
  std::fprintf(stderr, "demp: error: %s (hint: %s)\n", what.c_str(), hint.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  // LibTorch's own logging (c10d's connection retries, each with a stack trace) would bury the
  // one line demp prints for every failure it turns into an error; TORCH_CPP_LOG_LEVEL still
  // brings it back for debugging.
  if (std::getenv("TORCH_CPP_LOG_LEVEL") == nullptr) FLAGS_caffe2_log_level = 3;
  const std::string sub = argc > 1 && argv[1][0] != '-' ? std::string(argv[1]) + " " : std::string();
  try {
    return run(argc, argv);
  } catch (const demp::Error& e) {
    return fail(2, e.what(), e.hint().empty() ? "see 'demp " + sub + "--help'" : e.hint());
  } catch (const c10::Error& e) {
    std::string what = e.what_without_backtrace();
    const auto nl = what.find('\n');
    if (nl != std::string::npos) what.resize(nl);
    return fail(3, "LibTorch: " + what, "this may be a bug in demp; please report it");
  } catch (const std::bad_alloc&) {
    return fail(3, "out of memory", "use a smaller model, batch size or data set");
  } catch (const std::exception& e) {
    return fail(3, e.what(), "this may be a bug in demp; please report it");
  }
}
