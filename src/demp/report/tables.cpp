#include "demp/report/tables.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <set>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/common/text.h"

namespace demp::report {

using nlohmann::json;
using nlohmann::ordered_json;

namespace {

// A grid value that reads as a number is stored as one in table.json, so that consumers (pandas,
// jq) sort and plot it as a number; the CSV keeps the text as given.
json typed_value(const std::string& v) {
  if (v.empty()) return v;
  char* end = nullptr;
  const double d = std::strtod(v.c_str(), &end);
  if (end != v.c_str() + v.size()) return v;
  char* iend = nullptr;
  const long long i = std::strtoll(v.c_str(), &iend, 10);
  if (iend == v.c_str() + v.size()) return i;
  return d;
}

}  // namespace

json read_json_or_null(const std::string& path) {
  if (!is_regular_file(path)) return nullptr;
  try {
    json j = json::parse(read_file(path), nullptr, /*allow_exceptions=*/false);
    return j.is_discarded() ? json(nullptr) : j;
  } catch (const Error&) {
    return nullptr;
  }
}

json fraction(const json& s, const char* a, const char* b) {
  if (!s.is_object() || !s.contains(a) || !s.contains(b) || !s[a].is_number() || !s[b].is_number()) {
    return nullptr;
  }
  const double d = s[b].get<double>();
  return d > 0 ? json(s[a].get<double>() / d) : json(nullptr);
}

std::vector<std::string> table_columns(const std::vector<GridAxis>& axes) {
  std::vector<std::string> c = {"run"};
  for (const auto& a : axes) c.push_back(a.key);
  for (const char* x :
       {"method", "model", "width", "dataset", "seed", "steps", "test_accuracy", "best_test_accuracy",
        "units_initial", "units_final", "units_fraction", "params_initial", "params_final", "params_fraction",
        "flops_initial", "flops_final", "flops_fraction", "train_seconds", "status"}) {
    // A grid key that is also a summary column (seed, width, method...) keeps its grid place.
    if (std::none_of(axes.begin(), axes.end(), [&](const GridAxis& a) { return a.key == x; })) {
      c.push_back(x);
    }
  }
  return c;
}

ordered_json table_row(const std::string& name, const std::string& dir, const std::vector<GridAxis>& axes,
                       const std::vector<std::string>& point, const std::string& status) {
  const json s = read_json_or_null(dir + "/summary.json");
  // A diverged run's summary is the checkpoint's metadata: its settings sit under "config".
  json cfg = read_json_or_null(dir + "/config.json");
  if (!cfg.is_object() && s.is_object() && s.contains("config")) cfg = s["config"];
  auto pick = [&](const char* key, const char* cfg_key) -> json {
    if (s.is_object() && s.contains(key)) return s[key];
    if (cfg.is_object() && cfg.contains(cfg_key)) return cfg[cfg_key];
    return nullptr;
  };
  auto from_summary = [&](const char* key) -> json {
    return s.is_object() && s.contains(key) ? s[key] : json(nullptr);
  };
  ordered_json row;
  row["run"] = name;
  for (size_t i = 0; i < axes.size(); ++i) row[axes[i].key] = typed_value(point.at(i));
  auto set = [&](const char* col, json v) {
    if (!row.contains(col)) row[col] = std::move(v);  // a grid key's value stays as given
  };
  set("method", pick("method", "method"));
  set("model", pick("model", "model"));
  set("width", pick("width", "width"));
  set("dataset", pick("dataset", "data"));
  set("seed", pick("seed", "seed"));
  set("steps", from_summary("steps"));
  for (const char* k : {"test_accuracy", "best_test_accuracy"}) row[k] = from_summary(k);
  for (const char* q : {"units", "params", "flops"}) {
    const std::string a = std::string(q) + "_initial", b = std::string(q) + "_final";
    row[a] = from_summary(a.c_str());
    row[b] = from_summary(b.c_str());
    row[std::string(q) + "_fraction"] = fraction(s, b.c_str(), a.c_str());
  }
  row["train_seconds"] = from_summary("train_seconds");
  row["status"] = !status.empty() ? status
                  : s.is_object() ? s.value("status", std::string("unknown"))
                                  : std::string("pending");
  return row;
}

std::string table_csv(const std::vector<std::string>& columns, const std::vector<ordered_json>& rows) {
  auto cell = [](const std::string& t) {
    if (t.find_first_of(",\"\n\r") == std::string::npos) return t;
    std::string q = "\"";
    for (char c : t) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  };
  std::string out;
  for (size_t i = 0; i < columns.size(); ++i) out += (i ? "," : "") + cell(columns[i]);
  out += "\n";
  for (const auto& r : rows) {
    for (size_t i = 0; i < columns.size(); ++i) {
      if (i) out += ",";
      if (!r.contains(columns[i])) continue;
      const auto& v = r[columns[i]];
      if (v.is_null()) continue;
      out += cell(v.is_string() ? v.get<std::string>() : v.dump());
    }
    out += "\n";
  }
  return out;
}

void write_tables(const std::string& dir, const std::vector<std::string>& columns,
                  const std::vector<ordered_json>& rows) {
  write_file_atomic(dir + "/table.csv", table_csv(columns, rows));
  ordered_json j;
  j["columns"] = columns;
  j["rows"] = rows;
  write_file_atomic(dir + "/table.json", j.dump(2) + "\n");
}

}  // namespace demp::report
