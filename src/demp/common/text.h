#pragma once
// The string helpers every module parses options with. LibTorch-free, header-only.
#include <string>
#include <vector>

namespace demp {

/// `s` without leading and trailing spaces and tabs.
inline std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t");
  if (a == std::string::npos) return {};
  return s.substr(a, s.find_last_not_of(" \t") - a + 1);
}

/// The pieces between the separators: n separators give n + 1 pieces, empty ones included
/// ("" gives {""}, "a," gives {"a", ""}), so that a stray separator is seen, not dropped.
inline std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t end = s.find(sep, start);
    out.push_back(s.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

}  // namespace demp
