#pragma once
namespace demp::cli {
/// Parses the command line and runs the subcommand; returns the exit code.
int run(int argc, char** argv);
}  // namespace demp::cli
