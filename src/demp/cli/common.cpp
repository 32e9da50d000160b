#include "demp/cli/common.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <vector>

namespace demp::cli {
namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// The closest of `names` to `word`, if it is close enough to be a typo ("" otherwise).
std::string nearest(const std::string& word, const std::vector<std::string>& names) {
  std::string best;
  size_t best_d = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto& n : names) {
    const size_t d = edit_distance(word, n);
    if (d < best_d) {
      best_d = d;
      best = n;
    }
  }
  return best;
}

}  // namespace

Error explain_parse_error(CLI::App& app, const CLI::ParseError& e, int argc, char** argv) {
  std::vector<std::string> subs;
  for (CLI::App* sc : app.get_subcommands([](CLI::App*) { return true; })) subs.push_back(sc->get_name());
  const std::string first = argc > 1 ? argv[1] : "";
  if (first.empty()) {
    return Error("no subcommand given",
                 "use one of: " + fmt::format("{}", fmt::join(subs, ", ")) + " (see 'demp --help')");
  }
  if (first[0] != '-' && std::find(subs.begin(), subs.end(), first) == subs.end()) {
    const std::string near = nearest(first, subs);
    return Error(
        "unknown subcommand '" + first + "'" + (near.empty() ? "" : " (did you mean '" + near + "'?)"),
        "use one of: " + fmt::format("{}", fmt::join(subs, ", ")) + " (see 'demp --help')");
  }
  CLI::App* sub = first[0] != '-' ? app.get_subcommand(first) : &app;
  std::vector<std::string> longs;
  for (const CLI::Option* o : sub->get_options()) {
    for (const auto& n : o->get_lnames()) longs.push_back(n);
  }
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") break;
    if (a.rfind("--", 0) != 0 || a.size() < 3) continue;
    a = a.substr(2, a.find('=') == std::string::npos ? std::string::npos : a.find('=') - 2);
    if (std::find(longs.begin(), longs.end(), a) != longs.end()) continue;
    const std::string near = nearest(a, longs);
    return Error("unknown option --" + a + " for 'demp " + first + "'" +
                     (near.empty() ? "" : " (did you mean --" + near + "?)"),
                 "see 'demp " + first + " --help'");
  }
  std::string what = e.what();
  while (!what.empty() && (what.back() == '\n' || what.back() == ' ')) what.pop_back();
  return Error(what, "see 'demp " + (first[0] != '-' ? first + " " : std::string()) + "--help'");
}

std::string check_integer(std::string& v) {
  const size_t digits = !v.empty() && (v[0] == '-' || v[0] == '+') ? 1 : 0;
  if (v.size() <= digits || v.find_first_not_of("0123456789", digits) != std::string::npos) {
    return "'" + v + "' is not a whole number";
  }
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (errno == ERANGE) return "'" + v + "' is out of range (-2^63 .. 2^63-1)";
  v = std::to_string(x);  // decimal, so that CLI11's base-0 conversion reads the same number
  return {};
}

}  // namespace demp::cli
