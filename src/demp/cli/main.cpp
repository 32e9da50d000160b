// demp: the command-line front end (subcommands in commands.cpp and report_cmds.cpp).
#include <fmt/format.h>
#include <torch/torch.h>
#include <CLI/CLI.hpp>

#include <c10/util/Logging.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "demp/cli/commands.h"
#include "demp/common/error.h"
#include "demp/train/run_dir.h"

namespace {

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
    return demp::cli::run(argc, argv);
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
