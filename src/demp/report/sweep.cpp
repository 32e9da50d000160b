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

std::string percent(const std::optional<double>& x) { return x ? fmt::format("{:.1f}", 100 * *x) : "-"; }

}  // namespace

std::string display_command(std::vector<std::string> argv) {
  argv[0] = "demp";
  return shell_join(argv);
}

std::string continuation(const std::string& dir, std::string* flag) {
  flag->clear();
  if (train::has_checkpoint(dir)) {
    *flag = "--resume";
    return "resume";
  }
  if (train::has_config(dir)) {
    *flag = "--overwrite";  // started before but never reached a checkpoint: start again
    return "restart";
  }
  return "start";
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

std::string outcome_text(const std::optional<train::Summary>& s) {
  if (!s) return {};
  return fmt::format("test acc {:.2f}% | units {}% | params {}% | {:.1f} s of training",
                     100 * s->test_accuracy.value_or(0.0), percent(s->fraction_left("units")),
                     percent(s->fraction_left("params")), s->train_seconds.value_or(0.0));
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
      rows.push_back(table_row(run.name, run.dir, r.axes, run.point,
                               run.status == "failed" || !train::has_summary(run.dir) ? run.status : ""));
    }
    write_tables(o.out, columns, rows);
  };

  size_t done_before = 0;
  for (auto& run : r.runs) {
    const auto s = train::read_summary(run.dir);
    if (s) run.status = s->status.empty() ? std::string("pending") : s->status;
    if (run.status == "finished") ++done_before;
  }
  std::fprintf(stderr, "%s: %zu runs in %s (%zu finished before)\n", o.kind.c_str(), n, o.out.c_str(),
               done_before);

  ForwardSignals forward;  // a SIGINT or SIGTERM stops the running run cleanly, and the sweep
  for (size_t i = 0; i < n && ForwardSignals::received() == 0; ++i) {
    auto& run = r.runs[i];
    const std::string tag = fmt::format("[{}/{}] {}", i + 1, n, run.name);
    if (run.status == "finished") {
      run.skipped = true;
      std::fprintf(stderr, "%s: skipped (finished: %s)\n", tag.c_str(),
                   outcome_text(train::read_summary(run.dir)).c_str());
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
    const std::string log = train::RunFiles::in(run.dir, train::RunFiles::output_log);
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
    const auto s = train::read_summary(run.dir);
    const std::string st = s ? s->status : std::string();
    if (res.exit_code == 0 && st == "finished") {
      run.status = "finished";
      std::fprintf(stderr, "%s: finished in %.1f s | %s\n", tag.c_str(), secs, outcome_text(s).c_str());
    } else if (ForwardSignals::received() != 0 && st == "interrupted") {
      run.status = "interrupted";
      std::fprintf(stderr, "%s: interrupted after %.1f s (its checkpoint is written)\n", tag.c_str(), secs);
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
  r.interrupted = ForwardSignals::received();
  if (r.interrupted != 0) {
    std::fprintf(stderr, "%s: stopped by signal %d (%s); run the same command again to resume\n",
                 o.kind.c_str(), r.interrupted, strsignal(r.interrupted));
  }
  return r;
}

std::string sweep_summary(const SweepResult& r, const std::string& dir) {
  size_t w = 3;
  for (const auto& run : r.runs) w = std::max(w, run.name.size());
  std::string out = fmt::format("{:<{}}  {:<9} {:>9} {:>8} {:>9} {:>9}\n", "run", w, "status", "test acc",
                                "units %", "params %", "train s");
  int finished = 0, skipped = 0;
  for (const auto& run : r.runs) {
    const auto s = train::read_summary(run.dir);
    const bool fin = run.status == "finished" && s;
    finished += fin;
    skipped += fin && run.skipped;
    out += fmt::format("{:<{}}  {:<9} {:>9} {:>8} {:>9} {:>9}\n", run.name, w, run.status,
                       fin ? fmt::format("{:.2f}%", 100 * s->test_accuracy.value_or(0.0)) : "-",
                       fin ? percent(s->fraction_left("units")) : "-",
                       fin ? percent(s->fraction_left("params")) : "-",
                       fin ? fmt::format("{:.1f}", s->train_seconds.value_or(0.0)) : "-");
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
