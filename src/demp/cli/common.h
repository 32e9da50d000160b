#pragma once
// What every subcommand's command line shares: parse errors said better (the nearest real
// subcommand or option) and the integer check of every integer option.
#include <string>

#include "demp/common/error.h"

namespace CLI {
class App;
class ParseError;
}  // namespace CLI

namespace demp::cli {

/// A parse error, said better where we can: an unknown subcommand or option gets the nearest
/// real one; anything else keeps CLI11's text, with a hint to the subcommand's --help.
Error explain_parse_error(CLI::App& app, const CLI::ParseError& e, int argc, char** argv);

/// CLI11's validator body for integer options: refuses what is not plain decimal digits in range
/// (CLI11 reads base 0, so "010" would be 8, and clamps beyond 2^63) and rewrites `v` in decimal.
/// Returns the complaint, or "" when `v` is fine.
std::string check_integer(std::string& v);

}  // namespace demp::cli
