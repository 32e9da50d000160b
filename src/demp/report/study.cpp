#include "demp/report/study.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/report/plots.h"
#include "demp/train/run_dir.h"

namespace demp::report {

using nlohmann::json;
using nlohmann::ordered_json;

std::vector<std::pair<int64_t, double>> dead_fraction_curve(const std::vector<json>& rows) {
  std::vector<std::pair<int64_t, double>> curve;
  for (const auto& r : rows) {
    if (!r.contains("last_scan") || !r["last_scan"].is_object()) continue;
    const auto& scan = r["last_scan"];
    if (!scan.contains("dead_units") || !r.contains("live_units")) continue;
    const double live = r["live_units"].get<double>();
    if (!(live > 0)) continue;
    // A scan is repeated on every row until the next one; its step is when it was measured.
    const int64_t step = scan.value("step", r.value("step", int64_t{0}));
    if (!curve.empty() && curve.back().first == step) continue;
    curve.emplace_back(step, scan["dead_units"].get<double>() / live);
  }
  return curve;
}

// ---- the expectation checker ----------------------------------------------------------------

namespace {

struct Expectation {
  std::string factor, text;
  int direction;  ///< +1: a larger value kills more units; -1: a smaller one; 0: categorical
};

const std::vector<Expectation>& expectations() {
  static const std::vector<Expectation> e = {
      {"lr", "a higher learning rate gives more dead units", +1},
      {"batch-size", "a smaller batch gives more dead units", -1},
      {"optimizer", "adamw gives more dead units than sgd/sgdw", 0},
      {"lambda", "stronger regularisation (larger lambda) gives more dead units", +1},
      {"weight-decay", "stronger weight decay gives more dead units", +1},
      // DEMP.md: more noise -> more dead units; DemP's injected noise is what drives live units
      // across the ReLU's edge, and dead units get none of it.
      {"noise", "more injected noise gives more dead units", +1},
  };
  return e;
}

double number(const std::string& s) {
  char* end = nullptr;
  const double d = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && !s.empty() ? d : std::nan("");
}

bool is_sgd(const std::string& opt) { return opt == "sgd" || opt == "sgdw"; }

}  // namespace

const std::vector<std::string>& study_factors() {
  static const std::vector<std::string> f = [] {
    std::vector<std::string> v;
    for (const auto& e : expectations()) v.push_back(e.factor);
    return v;
  }();
  return f;
}

std::vector<FactorCheck> check_expectations(const std::vector<GridAxis>& axes,
                                            const std::vector<StudyRun>& runs) {
  std::vector<FactorCheck> checks;
  for (const auto& e : expectations()) {
    FactorCheck c;
    c.factor = e.factor;
    c.expectation = e.text;
    const auto ax =
        std::find_if(axes.begin(), axes.end(), [&](const GridAxis& a) { return a.key == e.factor; });
    if (ax != axes.end()) {
      const size_t k = static_cast<size_t>(ax - axes.begin());
      // Runs that differ in this factor only share every other grid value: group by those.
      std::map<std::string, std::vector<const StudyRun*>> groups;
      for (const auto& r : runs) {
        if (!r.has_final) continue;
        std::string fixed;
        for (size_t i = 0; i < axes.size(); ++i) {
          if (i != k) fixed += (fixed.empty() ? "" : " ") + axes[i].key + "=" + r.point.at(i);
        }
        groups[fixed].push_back(&r);
      }
      auto compare = [&](const StudyRun* lo, const StudyRun* hi, const std::string& fixed, int expect_sign) {
        FactorComparison fc{
            lo->point[k], hi->point[k], lo->final_dead_fraction, hi->final_dead_fraction, fixed, 0};
        const double d = hi->final_dead_fraction - lo->final_dead_fraction;
        // Fractions are ratios of unit counts: below 1e-9 apart means the same count.
        fc.verdict = std::abs(d) < 1e-9 ? 0 : (d > 0) == (expect_sign > 0) ? 1 : -1;
        c.comparisons.push_back(fc);
      };
      for (auto& [fixed, members] : groups) {
        if (e.direction != 0) {
          std::vector<const StudyRun*> v;
          for (const auto* r : members) {
            if (!std::isnan(number(r->point[k]))) v.push_back(r);
          }
          std::sort(v.begin(), v.end(), [&](const StudyRun* a, const StudyRun* b) {
            return number(a->point[k]) < number(b->point[k]);
          });
          for (size_t i = 1; i < v.size(); ++i) compare(v[i - 1], v[i], fixed, e.direction);
        } else {
          for (const auto* adam : members) {
            if (adam->point[k] != "adamw") continue;
            for (const auto* sgd : members) {
              if (is_sgd(sgd->point[k])) compare(sgd, adam, fixed, +1);
            }
          }
        }
      }
    }
    for (const auto& fc : c.comparisons) {
      c.agree += fc.verdict > 0;
      c.disagree += fc.verdict < 0;
      c.ties += fc.verdict == 0;
    }
    c.verdict = c.comparisons.empty()            ? "not tested"
                : c.agree > 0 && c.disagree == 0 ? "agrees"
                : c.disagree > 0 && c.agree == 0 ? "disagrees"
                : c.agree > 0                    ? "mixed"
                                                 : "no difference";
    checks.push_back(std::move(c));
  }
  return checks;
}

std::string expectations_text(const std::vector<FactorCheck>& checks) {
  std::string out =
      "The paper's expectations, on the final dead fraction of runs that differ in "
      "one factor only:\n";
  for (const auto& c : checks) {
    if (c.comparisons.empty()) {
      out += fmt::format("  {:<13} not tested (sweep it with two or more values: {})\n", c.factor,
                         c.expectation);
      continue;
    }
    out += fmt::format("  {:<13} {} ({} agree, {} disagree, {} equal): {}\n", c.factor, c.verdict, c.agree,
                       c.disagree, c.ties, c.expectation);
    for (const auto& fc : c.comparisons) {
      out += fmt::format("      {} {} -> {}: dead {:.2f}% -> {:.2f}%  {}{}\n", c.factor, fc.low, fc.high,
                         100 * fc.dead_low, 100 * fc.dead_high,
                         fc.verdict > 0   ? "agrees"
                         : fc.verdict < 0 ? "disagrees"
                                          : "equal",
                         fc.fixed.empty() ? "" : "  [" + fc.fixed + "]");
    }
  }
  return out;
}

// ---- running it -----------------------------------------------------------------------------

namespace {

bool has_arg(const std::vector<std::string>& args, const std::string& name) {
  for (const auto& a : args) {
    if (a == "--" + name || a.rfind("--" + name + "=", 0) == 0) return true;
  }
  return false;
}

}  // namespace

std::vector<std::string> study_grid(const StudyOptions& o) {
  std::vector<std::string> g;
  const std::pair<const char*, const std::string*> lists[] = {{"lr", &o.lr},
                                                              {"batch-size", &o.batch_size},
                                                              {"optimizer", &o.optimizer},
                                                              {"lambda", &o.lambda},
                                                              {"noise", &o.noise}};
  for (const auto& [key, list] : lists) {
    if (!list->empty()) g.push_back(std::string(key) + "=" + *list);
  }
  g.insert(g.end(), o.grid.begin(), o.grid.end());
  return g;
}

std::vector<std::string> study_base_args(const StudyOptions& o) {
  std::vector<std::string> args = o.sweep.base_args;
  if (has_arg(args, "method")) {
    throw Error("give the study's method with 'demp study --method', not after '--'",
                "demp study --method scan (the default) trains densely and only counts dead units");
  }
  args.insert(args.begin(), {"--method", o.method});
  std::vector<std::string> keys;
  for (const auto& g : study_grid(o)) keys.push_back(parse_grid_axis(g).key);
  for (const char* k : {"lambda", "noise"}) {
    if (!has_arg(args, k) && std::find(keys.begin(), keys.end(), k) == keys.end()) {
      args.insert(args.end(), {std::string("--") + k, "0"});
    }
  }
  return args;
}

int run_study(const StudyOptions& o) {
  SweepOptions so = o.sweep;
  so.kind = "study";
  so.grid = study_grid(o);
  so.base_args = study_base_args(o);
  Gnuplot gp;
  // Fail before hours of training, not after them, when the plot cannot be drawn.
  if (!o.no_plot && !so.dry_run) gp = find_gnuplot(o.gnuplot);
  const SweepResult r = run_sweep(so);
  if (so.dry_run) return 0;
  if (r.interrupted != 0) {  // the study of a part of the grid would read as the whole: none
    std::printf("%s", sweep_summary(r, so.out).c_str());
    return 130;
  }

  std::vector<StudyRun> runs;
  ordered_json sj;
  sj["grid"] = ordered_json::array();
  for (const auto& a : r.axes) sj["grid"].push_back({{"key", a.key}, {"values", a.values}});
  sj["base_args"] = so.base_args;
  sj["definition"] =
      "dead fraction = last_scan.dead_units / live_units of the metrics row "
      "that first carries each scan";
  sj["runs"] = ordered_json::array();
  PlotSpec plot;
  plot.name = "dead_fraction";
  plot.title = o.method == "scan" ? "Dead units over training (dense training, no removal)"
                                  : "Dead units over training (method " + o.method + ")";
  plot.xlabel = "step";
  plot.ylabel = "dead units (% of live units)";
  plot.yrange = "[0:*]";
  std::vector<std::string> notes;
  for (const auto& run : r.runs) {
    StudyRun sr{run.name, run.point, false, 0};
    const auto curve = run.status == "finished" ? dead_fraction_curve(train::read_metrics(run.dir))
                                                : std::vector<std::pair<int64_t, double>>{};
    if (run.status == "finished" && curve.empty()) {
      notes.push_back(run.name + ": its metrics hold no dead-unit scan (was it a dense run?)");
    }
    if (!curve.empty()) {
      sr.has_final = true;
      sr.final_dead_fraction = curve.back().second;
    }
    ordered_json j;
    j["run"] = run.name;
    ordered_json values;
    for (size_t i = 0; i < r.axes.size(); ++i) values[r.axes[i].key] = run.point[i];
    j["values"] = values;
    j["status"] = run.status;
    j["curve"] = ordered_json::array();
    Series s{run.name, {}, false};
    for (const auto& [step, f] : curve) {
      j["curve"].push_back({step, f});
      s.xy.emplace_back(static_cast<double>(step), 100 * f);
    }
    j["final_dead_fraction"] = sr.has_final ? ordered_json(sr.final_dead_fraction) : ordered_json();
    sj["runs"].push_back(j);
    plot.series.push_back(std::move(s));
    runs.push_back(sr);
  }
  const auto checks = check_expectations(r.axes, runs);
  std::string text = expectations_text(checks);
  if (o.method != "scan") {
    notes.push_back("--method " + o.method +
                    " removes the dead units it finds, so its final dead "
                    "fraction is near 0 by construction; the paper's expectations need --method scan");
  }
  for (const auto& n : notes) text += "note: " + n + "\n";
  sj["expectations"] = ordered_json::array();
  for (const auto& c : checks) {
    ordered_json cj{{"factor", c.factor}, {"expectation", c.expectation}, {"verdict", c.verdict},
                    {"agree", c.agree},   {"disagree", c.disagree},       {"equal", c.ties}};
    cj["comparisons"] = ordered_json::array();
    for (const auto& fc : c.comparisons) {
      cj["comparisons"].push_back({{"low", fc.low},
                                   {"high", fc.high},
                                   {"dead_low", fc.dead_low},
                                   {"dead_high", fc.dead_high},
                                   {"fixed", fc.fixed},
                                   {"verdict", fc.verdict > 0   ? "agrees"
                                               : fc.verdict < 0 ? "disagrees"
                                                                : "equal"}});
    }
    sj["expectations"].push_back(cj);
  }
  sj["summary_text"] = text;
  write_file_atomic(so.out + "/study.json", sj.dump(2) + "\n");
  write_file_atomic(so.out + "/study.txt", text);

  // The sweep's table plus the study's one number per run.
  auto columns = table_columns(r.axes);
  columns.insert(columns.end() - 1, "final_dead_fraction");
  std::vector<ordered_json> rows;
  for (size_t i = 0; i < r.runs.size(); ++i) {
    const auto& run = r.runs[i];
    auto row = table_row(run.name, run.dir, r.axes, run.point,
                         run.status == "failed" || !train::has_summary(run.dir) ? run.status : "");
    const std::string status = row["status"].get<std::string>();
    row.erase("status");
    row["final_dead_fraction"] =
        runs[i].has_final ? ordered_json(runs[i].final_dead_fraction) : ordered_json();
    row["status"] = status;
    rows.push_back(row);
  }
  write_tables(so.out, columns, rows);

  std::printf("%s", sweep_summary(r, so.out).c_str());
  std::printf("\n%s", text.c_str());
  if (!o.no_plot && has_data(plot)) {
    render_plot(gp, plot, so.out);
    std::printf("plot: %s/dead_fraction.svg, %s/dead_fraction.png\n", so.out.c_str(), so.out.c_str());
  }
  std::printf("study: %s/study.json, %s/study.txt\n", so.out.c_str(), so.out.c_str());
  return r.failed > 0 ? 1 : 0;
}

}  // namespace demp::report
