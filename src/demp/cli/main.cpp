// demp: the command-line front end (subcommands in commands.cpp and report_cmds.cpp).
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <cstdio>
#include <iostream>

#include "demp/cli/commands.h"
#include "demp/common/error.h"

int main(int argc, char** argv) {
  try {
    return demp::cli::run(argc, argv);
  } catch (const demp::Error& e) {
    std::fprintf(stderr, "\ndemp: error: %s%s%s\n", e.what(), e.hint().empty() ? "" : " (hint: ",
                 e.hint().empty() ? "" : (e.hint() + ")").c_str());
    return 2;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "\ndemp: error: LibTorch: %s (hint: this may be a bug in demp; please report it)\n",
                 e.what_without_backtrace());
    return 3;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\ndemp: error: %s\n", e.what());
    return 3;
  }
}
