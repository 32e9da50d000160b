#include "demp/report/sweep.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/common/process.h"
#include "demp/common/text.h"
#include "demp/train/config.h"
#include "demp/train/run_dir.h"

namespace demp::report {

using nlohmann::json;
using nlohmann::ordered_json;

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

std::string percent(const json& x) {
  return x.is_number() ? fmt::format("{:.1f}", 100 * x.get<double>()) : "-";
}

}  // namespace

std::string display_command(std::vector<std::string> argv) {
  argv[0] = "demp";
  return shell_join(argv);
}

std::string continuation(const std::string& dir, std::string* flag) {
  flag->clear();
  if (is_regular_file(dir + "/model.ckpt")) {
    *flag = "--resume";
    return "resume";
  }
  if (is_regular_file(dir + "/config.json")) {
    *flag = "--overwrite";  // started before but never reached a checkpoint: start again
    return "restart";
  }
  return "start";
}

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

// ---- the table ------------------------------------------------------------------------------

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

// ---- running it -----------------------------------------------------------------------------

namespace {

std::vector<std::string> train_argv(const SweepOptions& o, const std::vector<GridAxis>& axes,
                                    const std::vector<std::string>& point, const std::string& dir,
                                    const std::string& extra) {
  std::vector<std::string> argv = {o.exe, "train"};
  argv.insert(argv.end(), o.base_args.begin(), o.base_args.end());
  for (size_t i = 0; i < axes.size(); ++i) {
    argv.push_back("--" + axes[i].key);
    argv.push_back(point[i]);
  }
  argv.insert(argv.end(), {"--out", dir, "--progress", "plain"});
  if (!extra.empty()) argv.push_back(extra);
  return argv;
}

ordered_json sweep_json(const SweepOptions& o, const std::vector<GridAxis>& axes,
                        const std::vector<std::string>& names,
                        const std::vector<std::vector<std::string>>& points, const std::string& created) {
  ordered_json j;
  j["kind"] = o.kind;
  j["created"] = created;
  j["updated"] = train::utc_now();
  j["grid"] = ordered_json::array();
  for (const auto& a : axes) j["grid"].push_back({{"key", a.key}, {"values", a.values}});
  j["name_format"] = o.name_format;
  j["base_args"] = o.base_args;
  j["runs"] = ordered_json::array();
  for (size_t i = 0; i < names.size(); ++i) {
    ordered_json values;
    for (size_t k = 0; k < axes.size(); ++k) values[axes[k].key] = points[i][k];
    j["runs"].push_back({{"name", names[i]}, {"values", values}});
  }
  return j;
}

std::string outcome_text(const json& s) {
  if (!s.is_object()) return {};
  return fmt::format("test acc {:.2f}% | units {}% | params {}% | {:.1f} s of training",
                     100 * s.value("test_accuracy", 0.0),
                     percent(fraction(s, "units_final", "units_initial")),
                     percent(fraction(s, "params_final", "params_initial")), s.value("train_seconds", 0.0));
}

}  // namespace

SweepResult run_sweep(const SweepOptions& o) {
  if (o.out.empty()) throw Error("the " + o.kind + " needs --out DIR", "give the sweep directory");
  SweepResult r;
  for (const auto& g : o.grid) r.axes.push_back(parse_grid_axis(g));
  check_grid_keys(r.axes);
  check_base_args(o.base_args, r.axes);
  const auto names = run_names(r.axes, o.name_format);
  const auto points = expand_grid(r.axes);
  const size_t n = names.size();
  for (size_t i = 0; i < n; ++i) {
    r.runs.push_back({names[i], o.out + "/" + names[i], points[i], "pending", false, 0, {}});
  }
  if (o.dry_run) {
    for (size_t i = 0; i < n; ++i) {
      std::printf("[%zu/%zu] %s: %s\n", i + 1, n, names[i].c_str(),
                  display_command(train_argv(o, r.axes, points[i], r.runs[i].dir, {})).c_str());
    }
    return r;
  }

  make_directories(o.out);
  const std::string sweep_path = o.out + "/sweep.json";
  std::string created = train::utc_now();
  const json old = read_json_or_null(sweep_path);
  if (old.is_object()) {
    // Runs are named by their grid values only, so a run finished under other base options would
    // be skipped as if it matched: refuse rather than mix two settings in one table.
    const json old_args = old.value("base_args", json::array());
    if (old_args != json(o.base_args)) {
      throw Error(fmt::format("{} holds a {} started with other train options ({}), not ({})", o.out,
                              old.value("kind", std::string("sweep")),
                              shell_join(old_args.get<std::vector<std::string>>()), shell_join(o.base_args)),
                  "give the same options after '--' to continue it, or another --out");
    }
    created = old.value("created", created);
  } else if (is_regular_file(sweep_path)) {
    throw Error(sweep_path + " is not valid JSON", "remove it or use another --out");
  }
  write_file_atomic(sweep_path, sweep_json(o, r.axes, names, points, created).dump(2) + "\n");

  const auto columns = table_columns(r.axes);
  auto write_table = [&] {
    std::vector<ordered_json> rows;
    for (const auto& run : r.runs) {
      const bool has_summary = is_regular_file(run.dir + "/summary.json");
      rows.push_back(table_row(run.name, run.dir, r.axes, run.point,
                               run.status == "failed" || !has_summary ? run.status : ""));
    }
    write_tables(o.out, columns, rows);
  };

  size_t done_before = 0;
  for (auto& run : r.runs) {
    const json s = read_json_or_null(run.dir + "/summary.json");
    if (s.is_object()) run.status = s.value("status", std::string("pending"));
    if (run.status == "finished") ++done_before;
  }
  std::fprintf(stderr, "%s: %zu runs in %s (%zu finished before)\n", o.kind.c_str(), n, o.out.c_str(),
               done_before);

  for (size_t i = 0; i < n; ++i) {
    auto& run = r.runs[i];
    const std::string tag = fmt::format("[{}/{}] {}", i + 1, n, run.name);
    if (run.status == "finished") {
      run.skipped = true;
      std::fprintf(stderr, "%s: skipped (finished: %s)\n", tag.c_str(),
                   outcome_text(read_json_or_null(run.dir + "/summary.json")).c_str());
      continue;
    }
    if (run.status == "diverged") {
      // Resuming would replay the same steps and diverge again: a resumed run is exact.
      run.skipped = true;
      ++r.failed;
      std::fprintf(stderr, "%s: skipped (diverged before; delete %s to run it again)\n", tag.c_str(),
                   run.dir.c_str());
      continue;
    }
    std::string extra;
    const std::string verb = continuation(run.dir, &extra);
    const auto argv = train_argv(o, r.axes, run.point, run.dir, extra);
    make_directories(run.dir);
    const std::string log = run.dir + "/output.log";
    append_line(log, "=== " + train::utc_now() + " | " + display_command(argv));
    std::fprintf(stderr, "%s: %s\n", tag.c_str(), verb.c_str());
    std::fflush(stderr);
    const auto t0 = std::chrono::steady_clock::now();
    const auto res = run_process(argv, [&](const std::string& line) {
      append_line(log, line);
      if (o.verbose) {
        std::fprintf(stderr, "  | %s\n", line.c_str());
        std::fflush(stderr);
      }
    });
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    run.exit_code = res.exit_code;
    run.last_line = res.signal ? fmt::format("killed by signal {} ({}); its last line: {}", res.signal,
                                             strsignal(res.signal), res.last_line)
                               : res.last_line;
    const json s = read_json_or_null(run.dir + "/summary.json");
    const std::string st = s.is_object() ? s.value("status", std::string()) : std::string();
    if (res.exit_code == 0 && st == "finished") {
      run.status = "finished";
      std::fprintf(stderr, "%s: finished in %.1f s | %s\n", tag.c_str(), secs, outcome_text(s).c_str());
    } else {
      run.status = st == "diverged" ? "diverged" : "failed";
      ++r.failed;
      std::fprintf(stderr, "%s: %s (exit %d) after %.1f s: %s (output: %s)\n", tag.c_str(),
                   run.status == "diverged" ? "DIVERGED" : "FAILED", res.exit_code, secs,
                   run.last_line.c_str(), log.c_str());
    }
    std::fflush(stderr);
    write_table();
  }
  write_table();
  return r;
}

std::string sweep_summary(const SweepResult& r, const std::string& dir) {
  size_t w = 3;
  for (const auto& run : r.runs) w = std::max(w, run.name.size());
  std::string out = fmt::format("{:<{}}  {:<9} {:>9} {:>8} {:>9} {:>9}\n", "run", w, "status", "test acc",
                                "units %", "params %", "train s");
  int finished = 0, skipped = 0;
  for (const auto& run : r.runs) {
    const json s = read_json_or_null(run.dir + "/summary.json");
    const bool fin = run.status == "finished" && s.is_object();
    finished += fin;
    skipped += fin && run.skipped;
    out += fmt::format("{:<{}}  {:<9} {:>9} {:>8} {:>9} {:>9}\n", run.name, w, run.status,
                       fin ? fmt::format("{:.2f}%", 100 * s.value("test_accuracy", 0.0)) : "-",
                       fin ? percent(fraction(s, "units_final", "units_initial")) : "-",
                       fin ? percent(fraction(s, "params_final", "params_initial")) : "-",
                       fin ? fmt::format("{:.1f}", s.value("train_seconds", 0.0)) : "-");
  }
  out += fmt::format("{} runs: {} finished ({} skipped as already finished), {} failed\n", r.runs.size(),
                     finished, skipped, r.failed);
  for (const auto& run : r.runs) {
    if (run.status == "failed" || run.status == "diverged") {
      out += fmt::format("  {} {}: {}{}\n", run.status, run.name,
                         run.skipped ? std::string("(earlier)") : fmt::format("exit {}: ", run.exit_code),
                         run.skipped ? std::string() : run.last_line);
    }
  }
  out += fmt::format("table: {0}/table.csv, {0}/table.json\n", dir);
  return out;
}

}  // namespace demp::report
