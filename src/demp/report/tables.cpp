#include "demp/report/tables.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <set>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/common/text.h"
#include "demp/train/run_dir.h"

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
  const train::RunRecord run = train::read_run(dir);
  const std::optional<train::Summary>& s = run.summary;
  // A diverged run's summary is the checkpoint's metadata: its settings sit under "config".
  json cfg = run.config;
  if (!cfg.is_object() && s && s->config.is_object()) cfg = s->config;
  auto opt = [](const auto& v) { return v ? json(*v) : json(nullptr); };
  auto text = [](const std::string& v) { return v.empty() ? json(nullptr) : json(v); };
  // The summary's value, else the config's (a run that has not finished).
  auto or_config = [&](json v, const char* cfg_key) -> json {
    if (!v.is_null()) return v;
    if (cfg.is_object() && cfg.contains(cfg_key)) return cfg[cfg_key];
    return nullptr;
  };
  ordered_json row;
  row["run"] = name;
  for (size_t i = 0; i < axes.size(); ++i) row[axes[i].key] = typed_value(point.at(i));
  auto set = [&](const char* col, json v) {
    if (!row.contains(col)) row[col] = std::move(v);  // a grid key's value stays as given
  };
  set("method", or_config(s ? text(s->method) : json(), "method"));
  set("model", or_config(s ? text(s->model) : json(), "model"));
  set("width", or_config(s ? opt(s->width) : json(), "width"));
  set("dataset", or_config(s ? text(s->dataset) : json(), "data"));
  set("seed", or_config(s ? opt(s->seed) : json(), "seed"));
  set("steps", s ? opt(s->steps) : json());
  row["test_accuracy"] = s ? opt(s->test_accuracy) : json();
  row["best_test_accuracy"] = s ? opt(s->best_test_accuracy) : json();
  for (const char* q : {"units", "params", "flops"}) {
    const auto [initial, final_] =
        s ? s->counts(q) : std::pair<std::optional<int64_t>, std::optional<int64_t>>();
    row[std::string(q) + "_initial"] = opt(initial);
    row[std::string(q) + "_final"] = opt(final_);
    row[std::string(q) + "_fraction"] = s ? opt(s->fraction_left(q)) : json();
  }
  row["train_seconds"] = s ? opt(s->train_seconds) : json();
  row["status"] = !status.empty() ? status
                  : s             ? (s->status.empty() ? std::string("unknown") : s->status)
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
