#include "demp/report/html.h"

#include <dirent.h>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <set>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/report/plots.h"
#include "demp/report/study.h"
#include "demp/report/sweep.h"
#include "demp/train/run_dir.h"

namespace demp::report {

using nlohmann::json;

bool ReportRun::finished() const { return summary && summary->is_finished(); }

namespace {

std::string strip_slashes(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

std::string basename_of(const std::string& path) {
  const std::string p = strip_slashes(path);
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

std::vector<std::string> subdirectories(const std::string& d) {
  std::vector<std::string> out;
  DIR* dir = ::opendir(d.c_str());
  if (!dir) return out;
  while (const dirent* e = ::readdir(dir)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    if (is_directory(d + "/" + name)) out.push_back(name);
  }
  ::closedir(dir);
  std::sort(out.begin(), out.end(), natural_less);
  return out;
}

ReportRun load_run(const std::string& label, const std::string& dir) {
  ReportRun r;
  r.label = label;
  r.dir = dir;
  train::RunRecord rec = train::read_run(dir);
  r.summary = std::move(rec.summary);
  r.config = std::move(rec.config);
  derive_grouping(r);
  return r;
}

double number_or_nan(const json& o, const char* key) {
  return o.is_object() && o.contains(key) && o[key].is_number() ? o[key].get<double>() : std::nan("");
}

double or_nan(const std::optional<double>& x) { return x ? *x : std::nan(""); }

std::string pct(const std::optional<double>& x) { return x ? fmt::format("{:.1f}", 100 * *x) : "-"; }

// "91.23 ± 0.35" over seeds, "91.23" for one; `scale` 100 for fractions shown as percent.
std::string mean_pm(const Stat& s, double scale, int digits) {
  if (s.n == 0 || !std::isfinite(s.mean)) return "-";
  if (s.n == 1) return fmt::format("{:.{}f}", scale * s.mean, digits);
  return fmt::format("{:.{}f} ± {:.{}f}", scale * s.mean, digits, scale * s.std, digits);
}

// The mean of one summary field (a member such as &train::Summary::test_accuracy) over `runs`.
double mean_of(const std::vector<const ReportRun*>& runs, std::optional<double> train::Summary::*field) {
  std::vector<double> v;
  for (const auto* r : runs) {
    const double x = r->summary ? or_nan((*r->summary).*field) : std::nan("");
    if (std::isfinite(x)) v.push_back(x);
  }
  return stat_of(v).mean;
}

}  // namespace

std::string level_text(double f) {
  if (!std::isfinite(f)) return "";
  return fmt::format("{:.4g}%", 100 * f);
}

void derive_grouping(ReportRun& r) {
  const auto& s = r.summary;
  const json& c = r.config;
  std::string method = s ? s->method : std::string();
  if (method.empty() && c.is_object()) method = c.value("method", std::string());
  if (method.empty()) method = "?";
  const bool demp_like = method == "demp" || method == "scan";
  r.series = method;
  if (method == "demp" && c.is_object() && c.value("l1-step", std::string()) == "loss") {
    r.series = "demp (paper)";
  }
  r.setting.clear();
  r.level = std::nan("");
  if (method != kDenseSeries) {
    const double tp = number_or_nan(c, "target-params"), tf = number_or_nan(c, "target-flops"),
                 tu = number_or_nan(c, "target-units");
    if (tp > 0) {
      r.setting = level_text(tp);
      r.level = tp;
    } else if (tf > 0) {
      r.setting = "FLOPs " + level_text(tf);
    } else if (tu > 0) {
      r.setting = "units " + level_text(tu);
    } else if (!demp_like && std::isfinite(number_or_nan(c, "density"))) {
      r.setting = fmt::format("d {:g}", number_or_nan(c, "density"));
    } else if (demp_like && std::isfinite(number_or_nan(c, "lambda"))) {
      r.setting = fmt::format("λ {:g}", number_or_nan(c, "lambda"));
    }
  }
  double seed = number_or_nan(c, "seed");
  if (!std::isfinite(seed) && s && s->seed) seed = static_cast<double>(*s->seed);
  r.seed = std::isfinite(seed) ? static_cast<int64_t>(seed) : -1;
}

Stat stat_of(const std::vector<double>& v) {
  Stat s;
  s.n = v.size();
  if (v.empty()) return s;
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  double ss = 0;
  for (double x : v) ss += (x - s.mean) * (x - s.mean);
  s.std = v.size() > 1 ? std::sqrt(ss / static_cast<double>(v.size() - 1)) : 0.0;
  return s;
}

const ReportRun* RunGroup::representative() const {
  if (!finished.empty()) return finished.front();
  return runs.empty() ? nullptr : runs.front();
}

std::vector<RunGroup> group_runs(const std::vector<ReportRun>& runs) {
  std::vector<std::string> series_order;
  std::vector<RunGroup> groups;
  for (const auto& r : runs) {
    if (std::find(series_order.begin(), series_order.end(), r.series) == series_order.end()) {
      series_order.push_back(r.series);
    }
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const RunGroup& g) { return g.series == r.series && g.setting == r.setting; });
    if (it == groups.end()) {
      groups.push_back({r.series, r.setting, {}, {}, {}, {}, {}, {}, {}});
      it = groups.end() - 1;
    }
    it->runs.push_back(&r);
  }
  for (auto& g : groups) {
    std::stable_sort(g.runs.begin(), g.runs.end(),
                     [](const ReportRun* a, const ReportRun* b) { return a->seed < b->seed; });
    std::vector<double> acc, par, fl, un, sec;
    for (const auto* r : g.runs) {
      if (!r->finished()) continue;
      g.finished.push_back(r);
      const train::Summary& s = *r->summary;
      auto push = [](std::vector<double>& v, const std::optional<double>& x) {
        if (x && std::isfinite(*x)) v.push_back(*x);
      };
      push(acc, s.test_accuracy);
      push(par, s.fraction_left("params"));
      push(fl, s.fraction_left("flops"));
      push(un, s.fraction_left("units"));
      push(sec, s.train_seconds);
    }
    g.accuracy = stat_of(acc);
    g.params = stat_of(par);
    g.flops = stat_of(fl);
    g.units = stat_of(un);
    g.seconds = stat_of(sec);
  }
  // Dense first: the reference row heads the table, whatever the directories' order.
  auto series_rank = [&](const RunGroup& g) {
    if (g.series == kDenseSeries) return std::ptrdiff_t{-1};
    return std::find(series_order.begin(), series_order.end(), g.series) - series_order.begin();
  };
  std::stable_sort(groups.begin(), groups.end(), [&](const RunGroup& a, const RunGroup& b) {
    if (series_rank(a) != series_rank(b)) return series_rank(a) < series_rank(b);
    const bool fa = std::isfinite(a.params.mean), fb = std::isfinite(b.params.mean);
    if (fa != fb) return fa;
    return fa && a.params.mean > b.params.mean;
  });
  return groups;
}

std::vector<ReportRun> collect_runs(const std::vector<std::string>& dirs,
                                    std::vector<std::string>* study_dirs) {
  std::vector<ReportRun> runs;
  // One sweep given alone: its run names are labels enough; otherwise say which sweep.
  const bool single = dirs.size() == 1;
  for (const auto& given : dirs) {
    const std::string d = strip_slashes(given);
    if (!is_directory(d)) {
      throw Error(d + " is not a directory",
                  "give run directories, or sweep or frontier directories that hold them");
    }
    if (study_dirs && is_regular_file(d + "/study.json")) study_dirs->push_back(d);
    if (train::is_run_dir(d)) {
      runs.push_back(load_run(d, d));
      continue;
    }
    // A frontier names its runs' series, level and seed; a sweep only their order.
    std::vector<std::string> names;
    std::map<std::string, json> frontier_entry;
    const json frontier = read_json_or_null(d + "/frontier.json");
    const json sweep = read_json_or_null(d + "/sweep.json");
    for (const json* listing : {&frontier, &sweep}) {
      if (!listing->is_object() || !listing->contains("runs") || !(*listing)["runs"].is_array()) {
        continue;
      }
      for (const auto& r : (*listing)["runs"]) {
        if (!r.is_object()) continue;
        const std::string n = r.value("name", std::string());
        if (n.empty() || !train::is_run_dir(d + "/" + n)) continue;
        if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
        if (listing == &frontier && !frontier_entry.count(n)) frontier_entry[n] = r;
      }
    }
    for (const auto& n : subdirectories(d)) {
      if (std::find(names.begin(), names.end(), n) == names.end() && train::is_run_dir(d + "/" + n)) {
        names.push_back(n);
      }
    }
    if (names.empty()) {
      throw Error("no runs in " + d,
                  "give run directories (with summary.json), or sweep or frontier directories "
                  "that hold them");
    }
    for (const auto& n : names) {
      ReportRun r = load_run(single ? n : basename_of(d) + "/" + n, d + "/" + n);
      const auto it = frontier_entry.find(n);
      if (it != frontier_entry.end()) {
        const json& e = it->second;
        if (e.contains("series") && e["series"].is_string()) r.series = e["series"];
        if (e.contains("level")) {
          r.level = e["level"].is_number() ? e["level"].get<double>() : std::nan("");
          r.setting = level_text(r.level);
        }
        if (e.contains("seed") && e["seed"].is_number_integer()) r.seed = e["seed"];
      }
      runs.push_back(std::move(r));
    }
  }
  return runs;
}

std::vector<const ReportRun*> reference_runs(const std::vector<ReportRun>& runs, const std::string& baseline,
                                             std::string* label) {
  const auto groups = group_runs(runs);
  const RunGroup* ref = nullptr;
  if (!baseline.empty()) {
    for (const auto& g : groups) {
      for (const auto* r : g.finished) {
        if (r->label == baseline || r->dir == strip_slashes(baseline)) ref = &g;
      }
    }
    if (!ref) {
      throw Error("--baseline " + baseline + " is not one of the finished runs",
                  "give a run's label as shown in the table, or its directory");
    }
  }
  std::vector<const ReportRun*> out;
  if (!ref) {
    // Every dense run, whatever its setting: the dense network is one reference.
    for (const auto& g : groups) {
      if (g.series == kDenseSeries) out.insert(out.end(), g.finished.begin(), g.finished.end());
    }
    if (!out.empty()) {
      if (label)
        *label = fmt::format("{} (mean of {} run{})", kDenseSeries, out.size(), out.size() == 1 ? "" : "s");
      return out;
    }
    for (const auto& g : groups) {
      if (!g.finished.empty()) {
        ref = &g;
        break;
      }
    }
  }
  if (!ref) return out;
  out = ref->finished;
  if (label) {
    *label = fmt::format("{}{}{} (mean of {} run{})", ref->series, ref->setting.empty() ? "" : " ",
                         ref->setting, out.size(), out.size() == 1 ? "" : "s");
  }
  return out;
}

std::vector<std::vector<std::string>> summary_cells(const std::vector<ReportRun>& runs,
                                                    const std::string& baseline,
                                                    std::string* baseline_label) {
  std::vector<std::vector<std::string>> rows = {{"series", "setting", "seeds", "test acc %", "Δ acc",
                                                 "params %", "FLOPs %", "units %", "train s", "speed-up"}};
  const auto ref = reference_runs(runs, baseline, baseline_label);
  const double ref_acc = mean_of(ref, &train::Summary::test_accuracy),
               ref_s = mean_of(ref, &train::Summary::train_seconds);
  for (const auto& g : group_runs(runs)) {
    if (g.finished.empty()) continue;
    size_t collapsed = 0;
    for (const auto* r : g.finished) collapsed += r->summary->warning.has_value();
    rows.push_back(
        {g.series + (collapsed ? fmt::format(" ({} collapsed)", collapsed) : ""),
         g.setting.empty() ? "-" : g.setting, std::to_string(g.finished.size()), mean_pm(g.accuracy, 100, 2),
         std::isfinite(ref_acc) && g.accuracy.n ? fmt::format("{:+.2f}", 100 * (g.accuracy.mean - ref_acc))
                                                : "-",
         mean_pm(g.params, 100, 1), mean_pm(g.flops, 100, 1), mean_pm(g.units, 100, 1),
         g.seconds.n ? fmt::format("{:.1f}", g.seconds.mean) : "-",
         g.seconds.n && g.seconds.mean > 0 && std::isfinite(ref_s)
             ? fmt::format("{:.2f}x", ref_s / g.seconds.mean)
             : "-"});
  }
  return rows;
}

std::vector<std::vector<std::string>> compare_cells(const std::vector<ReportRun>& runs,
                                                    const std::string& baseline,
                                                    std::string* baseline_label) {
  std::vector<std::vector<std::string>> rows = {{"run", "series", "setting", "seed", "test acc", "Δ acc",
                                                 "units %", "params %", "FLOPs %", "train s", "speed-up"}};
  const auto ref = reference_runs(runs, baseline, baseline_label);
  const double base_acc = mean_of(ref, &train::Summary::test_accuracy),
               base_s = mean_of(ref, &train::Summary::train_seconds);
  for (const auto& r : runs) {
    if (!r.finished()) continue;
    const train::Summary& s = *r.summary;
    const double acc = s.test_accuracy.value_or(0.0), secs = s.train_seconds.value_or(0.0);
    rows.push_back({r.label + (s.warning ? " (collapsed)" : ""), r.series,
                    r.setting.empty() ? "-" : r.setting, r.seed >= 0 ? std::to_string(r.seed) : "-",
                    fmt::format("{:.2f}%", 100 * acc), fmt::format("{:+.2f}", 100 * (acc - base_acc)),
                    pct(s.fraction_left("units")), pct(s.fraction_left("params")),
                    pct(s.fraction_left("flops")), fmt::format("{:.1f}", secs),
                    fmt::format("{:.2f}x", secs > 0 ? base_s / secs : 0.0)});
  }
  return rows;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string inline_svg(const std::string& svg, const std::string& prefix) {
  std::string s = svg;
  const size_t start = s.find("<svg");
  if (start != std::string::npos) s.erase(0, start);
  // gnuplot writes ids and references with either quote; these four forms are all it uses.
  const std::pair<const char*, const char*> forms[] = {
      {"id='", "'"}, {"id=\"", "\""}, {"href='#", "'"}, {"href=\"#", "\""}, {"url(#", ")"}};
  for (const auto& [open, close] : forms) {
    std::string out;
    size_t pos = 0;
    for (;;) {
      const size_t at = s.find(open, pos);
      if (at == std::string::npos) break;
      // "id=" must start a word: not the tail of another attribute's name ("grid=").
      const bool word =
          open[0] != 'i' || at == 0 || std::string(" \t\n").find(s[at - 1]) != std::string::npos;
      const size_t val = at + std::strlen(open);
      out += s.substr(pos, val - pos);
      if (word && s.find(close, val) != std::string::npos) out += prefix;
      pos = val;
    }
    out += s.substr(pos);
    s = std::move(out);
  }
  return s;
}

std::string report_out_dir(const ReportOptions& o) {
  if (!o.out.empty()) return strip_slashes(o.out);
  return o.dirs.size() == 1 ? strip_slashes(o.dirs[0]) + "/report" : std::string("report");
}

// ---- the plots ------------------------------------------------------------------------------

namespace {

struct Figure {
  PlotSpec spec;
  std::string section, caption;
  bool preformatted = false;  ///< the caption is a text table (the study's checks)
};

// What every plot of one report shares: the groups, and each series' palette index, so that a
// method has one colour and marker on every plot.
struct Palette {
  std::map<std::string, int> index;
  int of(const std::string& series) const {
    if (series == kDenseSeries) return kReferenceColor;
    const auto it = index.find(series);
    return it == index.end() ? 0 : it->second;
  }
};

Palette make_palette(const std::vector<RunGroup>& groups) {
  Palette p;
  for (const auto& g : groups) {
    if (g.series != kDenseSeries && !p.index.count(g.series)) {
      const int next = static_cast<int>(p.index.size());
      p.index[g.series] = next;
    }
  }
  return p;
}

// A setting as part of a file name: "25%" -> "25pct", "d 0.3" -> "d_0.3", "λ 0.01" -> "0.01".
std::string file_slug(const std::string& setting) {
  std::string out;
  for (unsigned char c : setting) {
    if (std::isalnum(c) || c == '.' || c == '-') {
      out += static_cast<char>(c);
    } else if (c == '%') {
      out += "pct";
    } else if (c < 0x80 && !out.empty() && out.back() != '_') {
      out += '_';
    }
  }
  while (!out.empty() && out.back() == '_') out.pop_back();
  return out;
}

std::string group_title(const RunGroup& g) {
  return g.setting.empty() ? g.series : g.series + " " + g.setting;
}

// Test accuracy against what is left (or the training time): the dense runs as a reference line
// with a ±std band, every other series a curve of its settings with error bars over the seeds.
PlotSpec accuracy_plot(const std::vector<RunGroup>& groups, const Palette& pal, const std::string& name,
                       const std::string& what, const std::string& xlabel, Stat RunGroup::*x_of,
                       double x_scale, bool dense_point = false) {
  PlotSpec p;
  p.name = name;
  p.title = "Test accuracy against " + what;
  p.xlabel = xlabel;
  p.ylabel = "test accuracy (%, mean ± std over seeds)";
  p.logx = true;
  std::vector<double> dense_acc, dense_x;
  std::vector<std::string> order;
  std::map<std::string, Series> by_series;
  for (const auto& g : groups) {
    if (g.series == kDenseSeries) {
      for (const auto* r : g.finished) {
        const double a = or_nan(r->summary->test_accuracy);
        if (std::isfinite(a)) dense_acc.push_back(100 * a);
      }
      if ((g.*x_of).n) dense_x.push_back(x_scale * (g.*x_of).mean);
      continue;
    }
    const Stat& x = g.*x_of;
    if (!x.n || !g.accuracy.n || !(x.mean > 0)) continue;
    if (!by_series.count(g.series)) {
      order.push_back(g.series);
      Series s;
      s.title = g.series;
      s.color = pal.of(g.series);
      by_series[g.series] = s;
    }
    auto& s = by_series[g.series];
    s.xy.emplace_back(x_scale * x.mean, 100 * g.accuracy.mean);
    s.yerr.push_back(100 * g.accuracy.std);
    s.labels.push_back(g.setting);
  }
  if (!dense_acc.empty()) {
    const Stat d = stat_of(dense_acc);
    Series ref;
    ref.title = fmt::format("dense {:.2f} ± {:.2f}% ({} run{})", d.mean, d.std, d.n, d.n == 1 ? "" : "s");
    if (d.n == 1) ref.title = fmt::format("dense {:.2f}% (1 run)", d.mean);
    ref.reference = true;
    ref.dashed = true;
    ref.color = kReferenceColor;
    ref.xy = {{1, d.mean}};
    ref.yerr = {d.std};
    p.series.push_back(std::move(ref));
    if (dense_point && !dense_x.empty()) {
      // Where dense itself sits on x (its training time): the distance to it is the speed-up.
      Series at;
      at.title = "dense";
      at.color = kReferenceColor;
      at.lines = false;
      at.in_key = false;
      at.xy = {{stat_of(dense_x).mean, d.mean}};
      p.series.push_back(std::move(at));
    }
  }
  for (const auto& m : order) {
    auto s = by_series[m];
    // Joined in order of x: sort the points with their error bars and labels.
    std::vector<size_t> idx(s.xy.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return s.xy[a] < s.xy[b]; });
    Series t = s;
    for (size_t i = 0; i < idx.size(); ++i) {
      t.xy[i] = s.xy[idx[i]];
      t.yerr[i] = s.yerr[idx[i]];
      t.labels[i] = s.labels[idx[i]];
    }
    p.series.push_back(std::move(t));
  }
  // A plot with only the reference line says nothing about pruning: leave it out.
  if (order.empty()) p.series.clear();
  return p;
}

// The value of `key` at `step` in metrics rows (linear between the rows around it).
double value_at(const std::vector<json>& rows, const char* key, double step) {
  double s0 = NAN, v0 = NAN;
  for (const auto& r : rows) {
    if (!r.contains("step") || !r.contains(key) || !r[key].is_number()) continue;
    const double s = r["step"].get<double>(), v = r[key].get<double>();
    if (s >= step) {
      if (!std::isfinite(s0) || s == s0) return v;
      return v0 + (v - v0) * (step - s0) / (s - s0);
    }
    s0 = s;
    v0 = v;
  }
  return v0;
}

// Curves over training from each group's representative run: one per group, the series' colour,
// a dash per setting; prune events (summary.json) as markers on the curve when `events`.
PlotSpec over_training(const std::vector<RunGroup>& groups, const Palette& pal,
                       const std::map<const ReportRun*, std::vector<json>>& metrics, const std::string& name,
                       const std::string& title, const char* x_key, const std::string& xlabel,
                       const char* y_key, const std::string& ylabel, double y_scale, bool logy, bool events) {
  PlotSpec p;
  p.name = name;
  p.title = title;
  p.xlabel = xlabel;
  p.ylabel = ylabel;
  p.logy = logy;
  std::map<std::string, int> rank;  // settings seen per series: the dash type
  for (const auto& g : groups) {
    const ReportRun* r = g.representative();
    if (!r) continue;
    const auto& rows = metrics.at(r);
    Series s;
    s.title = group_title(g);
    s.color = pal.of(g.series);
    s.dash = 1 + rank[g.series]++ % 5;
    for (const auto& row : rows) {
      if (!row.contains(x_key) || !row.contains(y_key) || !row[x_key].is_number() ||
          !row[y_key].is_number()) {
        continue;
      }
      s.xy.emplace_back(row[x_key].get<double>(), y_scale * row[y_key].get<double>());
    }
    if (s.xy.empty()) continue;
    // Sparse rows (test accuracy once an epoch) are marked, or one row would be invisible; dense
    // ones are lines, so that the prune events' markers stand out.
    s.points = s.xy.size() <= 12;
    p.series.push_back(s);
    if (events && r->summary && r->summary->prune_events.is_array()) {
      Series e;
      e.title = s.title + " prune events";
      e.color = s.color;
      e.lines = false;
      e.in_key = false;
      for (const auto& ev : r->summary->prune_events) {
        if (!ev.is_object() || !ev.contains("step")) continue;
        const double step = ev["step"].get<double>();
        // On the live-units curve the event's own count; elsewhere the curve's value there.
        const double y = std::string(y_key) == "live_units" && ev.contains("units_after")
                             ? ev["units_after"].get<double>()
                             : y_scale * value_at(rows, y_key, step);
        if (std::isfinite(y)) e.xy.emplace_back(step, y);
      }
      if (!e.xy.empty()) {
        p.series.push_back(std::move(e));
        p.marker_note = "prune event (marker of its curve)";
      }
    }
  }
  // λ is 0 while a size controller holds it, σ may be 0: a log axis would drop those points and
  // hide the holds, so such a plot goes linear.
  for (const auto& s : p.series) {
    for (const auto& [x, y] : s.xy) {
      if (!(y > 0)) p.logy = false;
    }
  }
  if (logy && !p.logy) {
    const size_t at = p.ylabel.find(" (log scale)");
    if (at != std::string::npos) p.ylabel.erase(at);
  }
  return p;
}

// Settings that collapsed (accuracy more than 15 points under the best pruned setting) would
// stretch the accuracy axis until the comparison that matters is a flat line: they leave the
// plot, and the caption names them with their accuracy. (Measured against the other pruned
// settings, not dense: a plot whose settings all trail dense keeps them.)
std::string focus_accuracy(PlotSpec& p) {
  double top = -1e9;
  for (const auto& s : p.series) {
    if (s.reference || !s.in_key) continue;
    for (const auto& [x, y] : s.xy) top = std::max(top, y);
  }
  const double floor = top - 15;
  std::string note;
  std::vector<Series> kept;
  for (auto& s : p.series) {
    if (s.reference) {
      kept.push_back(std::move(s));
      continue;
    }
    Series t = s;
    t.xy.clear();
    t.yerr.clear();
    t.labels.clear();
    for (size_t i = 0; i < s.xy.size(); ++i) {
      if (s.xy[i].second >= floor) {
        t.xy.push_back(s.xy[i]);
        if (i < s.yerr.size()) t.yerr.push_back(s.yerr[i]);
        if (i < s.labels.size()) t.labels.push_back(s.labels[i]);
        continue;
      }
      note +=
          fmt::format("{}{}{} at {:.2f}%", note.empty() ? "" : "; ", s.title,
                      i < s.labels.size() && !s.labels[i].empty() ? " " + s.labels[i] : "", s.xy[i].second);
    }
    if (!t.xy.empty()) kept.push_back(std::move(t));
  }
  p.series = std::move(kept);
  return note.empty() ? note : " Not drawn, more than 15 points under the best (collapsed): " + note + ".";
}

std::vector<Figure> build_figures(const std::vector<ReportRun>& runs,
                                  const std::vector<std::string>& study_dirs) {
  std::vector<Figure> figs;
  const auto groups = group_runs(runs);
  const Palette pal = make_palette(groups);
  const char* acc = "Accuracy against what is left";
  const std::string seeds_note =
      " Each point is one setting (labelled: a target, λ or density), at the mean over its seeds;"
      " error bars: ± one standard deviation of the accuracy over the seeds. The black dashed "
      "line and grey band: the dense runs' mean ± std.";
  auto params = accuracy_plot(groups, pal, "accuracy_vs_params", "parameters left",
                              "parameters left (% of dense, log scale)", &RunGroup::params, 100);
  std::set<double> levels;
  for (const auto& r : runs) {
    if (std::isfinite(r.level) && r.level > 0) levels.insert(r.level);
  }
  for (double l : levels) params.xmarks.emplace_back(100 * l, level_text(l));
  std::string off = focus_accuracy(params);
  figs.push_back({params, acc,
                  "Parameters count BatchNorm's γ and β too. Dotted verticals: the levels the "
                  "runs were asked for." +
                      seeds_note + off});
  auto flops = accuracy_plot(groups, pal, "accuracy_vs_flops", "FLOPs per image",
                             "FLOPs per image left (% of dense, log scale)", &RunGroup::flops, 100);
  off = focus_accuracy(flops);
  figs.push_back({flops, acc, "Forward FLOPs of one image at the end of training." + seeds_note + off});
  auto units = accuracy_plot(groups, pal, "accuracy_vs_units", "units left",
                             "units left (% of dense, log scale)", &RunGroup::units, 100);
  off = focus_accuracy(units);
  figs.push_back({units, acc, "Units: channels and features at the activations." + seeds_note + off});
  auto time = accuracy_plot(groups, pal, "accuracy_vs_time", "training time", "training time (s, log scale)",
                            &RunGroup::seconds, 1, true);
  off = focus_accuracy(time);
  figs.push_back({time, acc,
                  "Training time is the summary's train_seconds (steps only, no evaluation), "
                  "mean over seeds; the black dot: dense's mean time." +
                      seeds_note + off});

  std::map<const ReportRun*, std::vector<json>> metrics;
  for (const auto& g : groups) {
    if (const ReportRun* r = g.representative()) metrics[r] = train::read_metrics(r->dir);
  }
  const std::string rep =
      "One curve per setting, from its first finished seed (the seeds differ little next to the "
      "settings); colour and marker per series, dash per setting.";
  // With many settings shared by the series (a frontier's levels), one set of curves per setting:
  // a dozen methods on one plot can be read, forty cannot.
  std::vector<std::string> settings;
  size_t pruned = 0;
  for (const auto& g : groups) {
    if (g.series == kDenseSeries) continue;
    ++pruned;
    if (std::find(settings.begin(), settings.end(), g.setting) == settings.end()) {
      settings.push_back(g.setting);
    }
  }
  const bool split = pruned > 12 && settings.size() >= 2 && settings.size() <= 6;
  auto add_training = [&](const std::vector<RunGroup>& gs, const std::string& suffix, const std::string& tail,
                          const std::string& train) {
    auto live = over_training(gs, pal, metrics, "live_units" + suffix, "Live units over training" + tail,
                              "step", "step", "live_units", "live units", 1, false, true);
    live.yrange = "[0:*]";
    figs.push_back({live, train,
                    "From metrics.jsonl: the units left after each removal; markers: the prune events "
                    "of summary.json. " +
                        rep});

    PlotSpec dead;
    dead.name = "dead_units" + suffix;
    dead.title = "Dead units found at each scan" + tail;
    dead.xlabel = "step";
    dead.ylabel = "dead units";
    dead.yrange = "[0:*]";
    std::map<std::string, int> rank;
    for (const auto& g : gs) {
      const ReportRun* r = g.representative();
      if (!r) continue;
      Series d;
      d.title = group_title(g);
      d.color = pal.of(g.series);
      d.dash = 1 + rank[g.series]++ % 5;
      int64_t last_scan = -1;
      for (const auto& row : metrics[r]) {
        if (!row.contains("step") || !row.contains("last_scan") || !row["last_scan"].is_object() ||
            !row["last_scan"].contains("dead_units")) {
          continue;
        }
        const int64_t step = row["last_scan"].value("step", row["step"].get<int64_t>());
        if (step != last_scan) {
          d.xy.emplace_back(static_cast<double>(step), row["last_scan"]["dead_units"].get<double>());
          last_scan = step;
        }
      }
      dead.series.push_back(std::move(d));
    }
    figs.push_back({dead, train,
                    "From metrics.jsonl: last_scan.dead_units, at the step of each scan (before "
                    "removal). Runs without scans (dense, most baselines) have no curve. " +
                        rep});
    figs.push_back({over_training(gs, pal, metrics, "lambda_schedule" + suffix,
                                  "Regularisation strength λ(t) over training" + tail, "step", "step",
                                  "reg_lambda", "λ (log scale)", 1, true, true),
                    train,
                    "From metrics.jsonl: reg_lambda, the strength of DemP's L1 penalty on the "
                    "normalisation scales (the schedule, or the size controller's value); markers: "
                    "the prune events of summary.json. " +
                        rep});
    figs.push_back({over_training(gs, pal, metrics, "noise_schedule" + suffix,
                                  "Noise on live units σ(t) over training" + tail, "step", "step",
                                  "noise_std", "σ (log scale)", 1, true, true),
                    train,
                    "From metrics.jsonl: noise_std, the standard deviation of DemP's noise on live "
                    "units; markers: the prune events. " +
                        rep});
    figs.push_back({over_training(gs, pal, metrics, "train_loss" + suffix, "Training loss" + tail, "step",
                                  "step", "train_loss", "training loss (log scale)", 1, true, false),
                    train,
                    "From metrics.jsonl: train_loss, the mean loss over the steps since the previous "
                    "row (the regulariser excluded). " +
                        rep});
    figs.push_back(
        {over_training(gs, pal, metrics, "test_accuracy" + suffix, "Test accuracy over training" + tail,
                       "step", "step", "test_accuracy", "test accuracy (%)", 100, false, false),
         train, "From metrics.jsonl: test_accuracy at each epoch's end and at the end. " + rep});
    figs.push_back(
        {over_training(gs, pal, metrics, "accuracy_vs_wallclock" + suffix,
                       "Test accuracy against wall-clock training time" + tail, "elapsed_seconds",
                       "training time so far (s)", "test_accuracy", "test accuracy (%)", 100, false, false),
         train,
         "From metrics.jsonl: test_accuracy against elapsed_seconds (training steps "
         "only). A curve that ends further left trained faster. " +
             rep});
  };
  if (!split) {
    add_training(groups, "", "", "Over training");
  } else {
    std::set<std::string> used;
    for (size_t k = 0; k < settings.size(); ++k) {
      std::vector<RunGroup> gs;
      for (const auto& g : groups) {
        if (g.series == kDenseSeries || g.setting == settings[k]) gs.push_back(g);
      }
      std::string slug = file_slug(settings[k]);
      if (slug.empty() || !used.insert(slug).second) slug = std::to_string(k + 1);
      const std::string shown = settings[k].empty() ? "no setting" : settings[k];
      add_training(gs, "_" + slug, " (" + shown + ")", "Over training: " + shown);
    }
  }

  // Per-layer widths: one plot per model, so that the x axis is one network's layers.
  std::map<std::string, std::vector<const RunGroup*>> by_model;
  std::vector<std::string> models;
  for (const auto& g : groups) {
    for (const auto* r : g.finished) {
      if (r->summary->live_units_per_group.empty()) continue;
      const std::string m = r->summary->model.empty() ? std::string("model") : r->summary->model;
      if (!by_model.count(m)) models.push_back(m);
      if (by_model[m].empty() || by_model[m].back() != &g) by_model[m].push_back(&g);
    }
  }
  for (const auto& m : models) {
    std::vector<std::string> names;
    for (const auto* g : by_model[m]) {
      for (const auto* r : g->finished) {
        for (const auto& [n, w] : r->summary->live_units_per_group) names.push_back(n);
      }
    }
    names = group_order(names);
    PlotSpec p;
    p.name = models.size() == 1 ? "layer_widths" : "layer_widths_" + m;
    p.title = "Live units per layer at the end (" + m + ")";
    p.xlabel = "unit group (network order)";
    p.ylabel = "live units (mean over seeds, log scale)";
    p.xtics = names;
    p.logy = true;  // a wide first layer and a narrow last one both stay readable
    std::map<std::string, int> wrank;
    for (const auto* g : by_model[m]) {
      Series s;
      s.title = group_title(*g);
      s.color = pal.of(g->series);
      s.dashed = g->series == kDenseSeries;
      s.dash = 1 + wrank[g->series]++ % 5;
      for (size_t i = 0; i < names.size(); ++i) {
        std::vector<double> w;
        for (const auto* r : g->finished) {
          const train::Summary& s = *r->summary;
          if ((s.model.empty() ? std::string("model") : s.model) != m) continue;
          const auto it = s.live_units_per_group.find(names[i]);
          if (it != s.live_units_per_group.end()) w.push_back(static_cast<double>(it->second));
        }
        if (!w.empty()) s.xy.emplace_back(static_cast<double>(i), stat_of(w).mean);
      }
      p.series.push_back(std::move(s));
    }
    figs.push_back({p, "Layer widths at the end",
                    "summary.json's live_units_per_group, one line per setting (mean over its "
                    "seeds); the dense network, dashed black, is the starting width."});
  }

  for (size_t k = 0; k < study_dirs.size(); ++k) {
    const json sj = read_json_or_null(study_dirs[k] + "/study.json");
    if (!sj.is_object() || !sj.contains("runs")) continue;
    PlotSpec p;
    p.name = study_dirs.size() == 1 ? "dead_fraction" : fmt::format("dead_fraction_{}", k + 1);
    p.title = "Dead units over training: " + basename_of(study_dirs[k]);
    p.xlabel = "step";
    p.ylabel = "dead units (% of live units)";
    p.yrange = "[0:*]";
    for (const auto& r : sj["runs"]) {
      Series s;
      s.title = r.value("run", std::string("?"));
      for (const auto& pt : r.value("curve", json::array())) {
        s.xy.emplace_back(pt[0].get<double>(), 100 * pt[1].get<double>());
      }
      p.series.push_back(std::move(s));
    }
    figs.push_back({p, "Study: " + study_dirs[k], sj.value("summary_text", std::string()), true});
  }
  return figs;
}

const char* kStyle = R"(
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
p.meta { color: #666; } p.warning { color: #a40000; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #e4e4e4; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
td:nth-child(2), th:nth-child(2) { text-align: left; }
figure { margin: 1.5em 0; } figure svg { width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; white-space: pre-wrap; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
)";

// `strong`: the (row, column) cells to set in bold.
std::string table_html(const std::vector<std::vector<std::string>>& rows, const std::string& id,
                       const std::set<std::pair<size_t, size_t>>& strong = {}) {
  std::string h = "<table id=\"" + id + "\">\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    h += "<tr>";
    for (size_t j = 0; j < rows[i].size(); ++j) {
      const std::string c = html_escape(rows[i][j]);
      h += fmt::format("<{0}>{1}</{0}>", i == 0 ? "th" : "td", strong.count({i, j}) ? "<b>" + c + "</b>" : c);
    }
    h += "</tr>\n";
  }
  return h + "</table>\n";
}

// Columns padded to their widest cell, counted in characters (UTF-8 lead bytes), not bytes.
std::string text_table(const std::vector<std::vector<std::string>>& rows) {
  auto width = [](const std::string& s) {
    size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
  };
  std::vector<size_t> w;
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) {
      if (w.size() <= i) w.push_back(0);
      w[i] = std::max(w[i], width(r[i]));
    }
  }
  std::string out;
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) {
      const std::string pad(w[i] - width(r[i]), ' ');
      out += i == 0 ? r[i] + pad : "  " + pad + r[i];  // the run name left, numbers right
    }
    out += "\n";
  }
  return out;
}

}  // namespace

int run_report(const ReportOptions& o) {
  if (o.dirs.empty()) throw Error("demp report needs at least one directory");
  const Gnuplot gp = find_gnuplot(o.gnuplot);  // before any work: the plots are the point
  std::vector<std::string> study_dirs;
  const auto runs = collect_runs(o.dirs, &study_dirs);
  const std::string out = report_out_dir(o);
  make_directories(out);

  std::string base_label;
  const auto summary = summary_cells(runs, o.baseline, &base_label);
  const auto cells = compare_cells(runs, o.baseline);
  const auto figs = build_figures(runs, study_dirs);

  size_t n_finished = 0;
  for (const auto& r : runs) n_finished += r.finished();
  std::string dirs_text;
  for (const auto& d : o.dirs) dirs_text += (dirs_text.empty() ? "" : ", ") + strip_slashes(d);

  std::string h = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  h += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  h += "<title>" + html_escape(o.title) + "</title>\n<style>" + kStyle + "</style>\n</head>\n<body>\n";
  h += "<h1>" + html_escape(o.title) + "</h1>\n";
  h += fmt::format(
      "<p class=\"meta\">{} runs ({} finished) from {} &middot; generated {} by demp "
      "report</p>\n",
      runs.size(), n_finished, html_escape(dirs_text), train::utc_now());
  // Grouping goes by series and setting only: one network's 25% and another's would be averaged
  // as seeds. Say so rather than guess which field tells networks apart.
  std::set<std::string> models;
  for (const auto& r : runs) {
    if (r.summary) {  // a summary without them (an early one) says nothing here
      if (!r.summary->model.empty()) {
        models.insert(
            fmt::format("{} w{}", r.summary->model, r.summary->width ? json(*r.summary->width).dump() : "?"));
      }
    } else if (r.config.is_object() && r.config.contains("model")) {
      models.insert(fmt::format("{} w{}", r.config.value("model", std::string("?")),
                                r.config.contains("width") ? r.config["width"].dump() : "?"));
    }
  }
  if (models.size() > 1) {
    std::string list;
    for (const auto& m : models) list += (list.empty() ? "" : ", ") + m;
    const std::string warn = "these runs train " + std::to_string(models.size()) + " different networks (" +
                             list +
                             "); runs are grouped by series and setting only, so report each "
                             "network separately";
    std::fprintf(stderr, "report: warning: %s\n", warn.c_str());
    h += "<p class=\"warning\"><b>Warning:</b> " + html_escape(warn) + ".</p>\n";
  }
  h += "<h2>Summary</h2>\n";
  if (summary.size() > 1) {
    // The best mean accuracy among the series at each setting they share (a frontier's level), in
    // bold: the row order of summary_cells is that of group_runs, less the groups not finished.
    std::map<std::string, std::pair<double, size_t>> best;
    std::map<std::string, size_t> rivals;
    size_t row = 0;
    for (const auto& g : group_runs(runs)) {
      if (g.finished.empty()) continue;
      ++row;
      if (g.series == kDenseSeries || g.setting.empty() || !g.accuracy.n) continue;
      ++rivals[g.setting];
      auto& b = best[g.setting];
      if (b.second == 0 || g.accuracy.mean > b.first) b = {g.accuracy.mean, row};
    }
    std::set<std::pair<size_t, size_t>> strong;
    for (const auto& [setting, b] : best) {
      if (rivals[setting] >= 2) strong.insert({b.second, 3});
    }
    h += table_html(summary, "summary", strong);
    h += "<p class=\"meta\">One row per setting; runs that differ only in their seed are "
         "averaged (mean ± sample std over the seeds). Δ acc (points) and speed-up (training "
         "time) are against " +
         html_escape(base_label) +
         ". params/FLOPs/units %: what is left of the network at the end. In bold: the best mean "
         "accuracy among the series at a setting they share.</p>\n";
    h += "<details><summary>Every run</summary>\n" + table_html(cells, "runs") + "</details>\n";
  } else {
    h += "<p>No finished run yet.</p>\n";
  }
  std::vector<std::vector<std::string>> unfinished = {{"run", "status", "last logged step"}};
  for (const auto& r : runs) {
    if (r.finished()) continue;
    const auto rows = train::read_metrics(r.dir);
    unfinished.push_back({r.label,
                          r.summary ? (r.summary->status.empty() ? "?" : r.summary->status) : "no summary",
                          rows.empty() ? "-" : std::to_string(rows.back().value("step", int64_t{0}))});
  }
  if (unfinished.size() > 1) h += "<h3>Not finished</h3>\n" + table_html(unfinished, "unfinished");

  std::string section;
  std::vector<std::string> written, skipped;
  for (const auto& f : figs) {
    if (!has_data(f.spec)) {
      skipped.push_back(f.spec.name);
      continue;
    }
    render_plot(gp, f.spec, out);
    written.push_back(f.spec.name);
    if (f.section != section) {
      section = f.section;
      h += "<h2>" + html_escape(section) + "</h2>\n";
    }
    std::string svg = inline_svg(read_file(out + "/" + f.spec.name + ".svg"), f.spec.name + "-");
    // gnuplot titles every SVG "Gnuplot"; inline, that would be each plot's tooltip.
    const size_t t = svg.find("<title>Gnuplot</title>");
    if (t != std::string::npos) {
      svg.replace(t, 22, "<title>" + html_escape(f.spec.title) + "</title>");
    }
    h += fmt::format(
        "<figure id=\"{0}\">\n{1}\n<figcaption>{2}{3}<a href=\"{0}.svg\">svg</a> &middot; "
        "<a href=\"{0}.png\">png</a> &middot; <a href=\"{0}.gp\">gnuplot script</a></figcaption>\n"
        "</figure>\n",
        f.spec.name, svg,
        f.preformatted ? "<pre>" + html_escape(f.caption) + "</pre>" : html_escape(f.caption),
        f.preformatted ? "" : " ");
  }
  if (!skipped.empty()) {
    std::string list;
    for (const auto& s : skipped) list += (list.empty() ? "" : ", ") + s;
    h += "<p class=\"meta\">No data for: " + html_escape(list) + ".</p>\n";
  }
  h += "</body>\n</html>\n";
  write_file_atomic(out + "/index.html", h);

  std::printf("%s", text_table(summary).c_str());
  std::printf("report: %s/index.html (%zu runs, %zu plots:", out.c_str(), runs.size(), written.size());
  for (const auto& w : written) std::printf(" %s", w.c_str());
  std::printf(")\n");
  return 0;
}

}  // namespace demp::report
