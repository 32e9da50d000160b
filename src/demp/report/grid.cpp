#include "demp/report/grid.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <set>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/common/text.h"
#include "demp/train/config.h"

namespace demp::report {

namespace {

// Options the sweep sets on every run itself: a grid or a base argument may not set them.
const std::vector<std::string> kReserved = {"out", "resume", "overwrite", "progress", "stop-after"};

std::vector<std::string> train_option_names() {
  train::TrainConfig c;
  std::vector<std::string> names;
  for (const auto& f : train::fields(c)) names.push_back(f.name);
  names.push_back("config");  // not a field, but train takes it (and a grid over recipes is useful)
  return names;
}

bool contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

}  // namespace

GridAxis parse_grid_axis(const std::string& spec) {
  const size_t eq = spec.find('=');
  GridAxis axis;
  axis.key = trim(eq == std::string::npos ? spec : spec.substr(0, eq));
  while (!axis.key.empty() && axis.key[0] == '-') axis.key.erase(0, 1);
  if (eq == std::string::npos || axis.key.empty()) {
    throw Error("--grid '" + spec + "' is not KEY=V1,V2,...",
                "for example --grid lambda=0.001,0.01 (KEY is a demp train option without dashes)");
  }
  const std::string list = spec.substr(eq + 1);
  for (const auto& v : split(list, list.find(';') != std::string::npos ? ';' : ',')) {
    const std::string t = trim(v);
    if (t.empty()) {
      throw Error("--grid '" + spec + "' has an empty value",
                  "separate values with ',' (or with ';' when a value holds commas)");
    }
    // 0.1 and 0.10 (or 1e-1) are one value for the option: two runs of it would be a waste.
    auto as_number = [](const std::string& x, double* out) {
      char* end = nullptr;
      *out = std::strtod(x.c_str(), &end);
      return !x.empty() && end == x.c_str() + x.size();
    };
    for (const auto& prev : axis.values) {
      double a = 0, b = 0;
      if (prev == t || (as_number(prev, &a) && as_number(t, &b) && a == b)) {
        throw Error("--grid '" + spec + "' repeats the value " + t +
                        (prev == t ? std::string() : " (as " + prev + ")"),
                    "give each value once");
      }
    }
    axis.values.push_back(t);
  }
  return axis;
}

void check_grid_keys(const std::vector<GridAxis>& axes) {
  const auto known = train_option_names();
  std::set<std::string> seen;
  for (const auto& a : axes) {
    if (contains(kReserved, a.key)) {
      throw Error("--grid " + a.key + ": the sweep sets --" + a.key + " on every run itself",
                  "sweep over another option");
    }
    if (!contains(known, a.key)) {
      throw Error("--grid " + a.key + ": 'demp train' has no option --" + a.key,
                  "KEY is a long option of 'demp train --help' without the dashes");
    }
    if (!seen.insert(a.key).second) {
      throw Error("--grid " + a.key + " is given twice", "give all its values in one --grid");
    }
  }
}

std::vector<std::vector<std::string>> expand_grid(const std::vector<GridAxis>& axes) {
  std::vector<std::vector<std::string>> points{{}};
  for (const auto& a : axes) {
    std::vector<std::vector<std::string>> next;
    for (const auto& p : points) {
      for (const auto& v : a.values) {
        next.push_back(p);
        next.back().push_back(v);
      }
    }
    points = std::move(next);
  }
  return points;
}

std::string run_name(const std::vector<GridAxis>& axes, const std::vector<std::string>& point,
                     const std::string& format) {
  std::string name;
  if (format.empty()) {
    for (size_t i = 0; i < axes.size(); ++i) {
      if (i) name += '_';
      name += axes[i].key + "=" + point.at(i);
    }
  } else {
    size_t i = 0;
    while (i < format.size()) {
      if (format[i] != '{') {
        name += format[i++];
        continue;
      }
      const size_t close = format.find('}', i);
      if (close == std::string::npos) {
        throw Error("--name-format '" + format + "' has an unclosed '{'", "write {KEY} for a value");
      }
      const std::string key = format.substr(i + 1, close - i - 1);
      auto it = std::find_if(axes.begin(), axes.end(), [&](const GridAxis& a) { return a.key == key; });
      if (it == axes.end()) {
        throw Error("--name-format uses {" + key + "}, which is not a grid key",
                    "use the keys of --grid, e.g. {lambda}");
      }
      name += point.at(static_cast<size_t>(it - axes.begin()));
      i = close + 1;
    }
  }
  for (char& c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '=' || c == '+' || c == ',' || c == '-';
    if (!ok) c = '_';  // a '/' in a value (a config path) must not make a nested directory
  }
  if (name.empty() || name == "." || name == "..") name = "run" + name;
  return name;
}

std::vector<std::string> run_names(const std::vector<GridAxis>& axes, const std::string& format) {
  std::vector<std::string> names;
  std::set<std::string> seen;
  for (const auto& p : expand_grid(axes)) {
    names.push_back(run_name(axes, p, format));
    if (!seen.insert(names.back()).second) {
      throw Error("two runs of the grid would share the directory name '" + names.back() + "'",
                  "put every grid key with several values into --name-format");
    }
  }
  return names;
}

void check_base_args(const std::vector<std::string>& base_args, const std::vector<GridAxis>& axes) {
  const auto known = train_option_names();
  if (!base_args.empty() && base_args[0].rfind("-", 0) != 0) {
    throw Error("'" + base_args[0] + "' is not a train option",
                "each --grid takes one KEY=V1,V2,...; train options go after '--'");
  }
  for (const auto& a : base_args) {
    if (a.rfind("--", 0) != 0 || a.size() == 2) continue;
    const std::string name =
        a.substr(2, a.find('=') == std::string::npos ? std::string::npos : a.find('=') - 2);
    if (contains(kReserved, name)) {
      throw Error("the sweep sets --" + name + " on every run itself", "leave it out after '--'");
    }
    if (!contains(known, name) && name != "help") {
      throw Error("'demp train' has no option --" + name, "see 'demp train --help'");
    }
    for (const auto& ax : axes) {
      if (ax.key == name) {
        throw Error("--" + name + " is both a grid key and a train option after '--'",
                    "give it in one place only");
      }
    }
  }
}

}  // namespace demp::report
