#include "demp/report/html.h"

#include <dirent.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <set>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/report/plots.h"
#include "demp/report/run_dir.h"
#include "demp/report/study.h"
#include "demp/report/sweep.h"

namespace demp::report {

using nlohmann::json;

bool ReportRun::finished() const {
  return summary.is_object() && summary.value("status", std::string()) == "finished";
}

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

bool is_run_dir(const std::string& d) {
  return is_regular_file(d + "/summary.json") || is_regular_file(d + "/config.json") ||
         is_regular_file(d + "/metrics.jsonl");
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
  return {label, dir, read_json_or_null(dir + "/summary.json"),
          read_json_or_null(dir + "/config.json")};
}

std::string pct(const json& x) {
  return x.is_number() ? fmt::format("{:.1f}", 100 * x.get<double>()) : "-";
}

}  // namespace

std::vector<ReportRun> collect_runs(const std::vector<std::string>& dirs,
                                    std::vector<std::string>* study_dirs) {
  std::vector<ReportRun> runs;
  // One sweep given alone: its run names are labels enough; otherwise say which sweep.
  const bool single = dirs.size() == 1;
  for (const auto& given : dirs) {
    const std::string d = strip_slashes(given);
    if (!is_directory(d)) {
      throw Error(d + " is not a directory", "give run directories or sweep directories");
    }
    if (study_dirs && is_regular_file(d + "/study.json")) study_dirs->push_back(d);
    if (is_run_dir(d)) {
      runs.push_back(load_run(d, d));
      continue;
    }
    std::vector<std::string> names;
    const json sweep = read_json_or_null(d + "/sweep.json");
    if (sweep.is_object() && sweep.contains("runs") && sweep["runs"].is_array()) {
      for (const auto& r : sweep["runs"]) {
        const std::string n = r.value("name", std::string());
        if (!n.empty() && is_run_dir(d + "/" + n)) names.push_back(n);
      }
    }
    for (const auto& n : subdirectories(d)) {
      if (std::find(names.begin(), names.end(), n) == names.end() && is_run_dir(d + "/" + n)) {
        names.push_back(n);
      }
    }
    if (names.empty()) {
      throw Error("no runs in " + d,
                  "give run directories (with summary.json) or sweep directories that hold them");
    }
    for (const auto& n : names) {
      runs.push_back(load_run(single ? n : basename_of(d) + "/" + n, d + "/" + n));
    }
  }
  return runs;
}

std::vector<std::vector<std::string>> compare_cells(const std::vector<ReportRun>& runs,
                                                    const std::string& baseline,
                                                    std::string* baseline_label) {
  std::vector<std::vector<std::string>> rows = {{"run", "method", "test acc", "Δ acc", "units %",
                                                 "params %", "FLOPs %", "train s", "speed-up"}};
  std::vector<const ReportRun*> fin;
  for (const auto& r : runs) {
    if (r.finished()) fin.push_back(&r);
  }
  if (fin.empty()) return rows;
  // The same choice as `demp compare`: the named run, else the first dense one, else the first.
  const ReportRun* base = nullptr;
  for (const auto* r : fin) {
    if (!baseline.empty() ? (r->label == baseline || r->dir == strip_slashes(baseline))
                          : r->summary.value("method", std::string()) == "dense") {
      base = r;
      break;
    }
  }
  if (!base && !baseline.empty()) {
    throw Error("--baseline " + baseline + " is not one of the finished runs",
                "give a run's label as shown in the table, or its directory");
  }
  if (!base) base = fin[0];
  if (baseline_label) *baseline_label = base->label;
  const double base_s = base->summary.value("train_seconds", 0.0);
  const double base_acc = base->summary.value("test_accuracy", 0.0);
  for (const auto* r : fin) {
    const auto& s = r->summary;
    const double acc = s.value("test_accuracy", 0.0), secs = s.value("train_seconds", 0.0);
    rows.push_back({r->label + (s.contains("warning") ? " (collapsed)" : ""),
                    s.value("method", std::string("?")), fmt::format("{:.2f}%", 100 * acc),
                    fmt::format("{:+.2f}", 100 * (acc - base_acc)),
                    pct(fraction(s, "units_final", "units_initial")),
                    pct(fraction(s, "params_final", "params_initial")),
                    pct(fraction(s, "flops_final", "flops_initial")), fmt::format("{:.1f}", secs),
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

// One curve per method: accuracy against x (units or params left, or training time).
PlotSpec accuracy_plot(const std::vector<ReportRun>& runs, const std::string& name,
                       const std::string& xlabel, const std::function<json(const json&)>& x_of) {
  PlotSpec p;
  p.name = name;
  p.title = "Test accuracy against " + xlabel;
  p.xlabel = xlabel;
  p.ylabel = "test accuracy (%)";
  std::map<std::string, Series> by_method;
  std::vector<std::string> order;
  for (const auto& r : runs) {
    if (!r.finished()) continue;
    const json x = x_of(r.summary);
    if (!x.is_number() || !r.summary.contains("test_accuracy")) continue;
    const std::string m = r.summary.value("method", std::string("?"));
    if (!by_method.count(m)) order.push_back(m);
    by_method[m].title = m;
    by_method[m].xy.emplace_back(x.get<double>(), 100 * r.summary["test_accuracy"].get<double>());
  }
  for (const auto& m : order) {
    auto s = by_method[m];
    std::sort(s.xy.begin(), s.xy.end());
    p.series.push_back(std::move(s));
  }
  return p;
}

std::vector<Figure> build_figures(const std::vector<ReportRun>& runs,
                                  const std::vector<std::string>& study_dirs) {
  std::vector<Figure> figs;
  const char* acc = "Accuracy against what is left";
  figs.push_back({accuracy_plot(runs, "accuracy_vs_units", "units remaining (%)",
                                [](const json& s) {
                                  json f = fraction(s, "units_final", "units_initial");
                                  return f.is_number() ? json(100 * f.get<double>()) : f;
                                }),
                  acc, "One curve per method, one point per finished run, joined in order of x."});
  figs.push_back({accuracy_plot(runs, "accuracy_vs_params", "parameters remaining (%)",
                                [](const json& s) {
                                  json f = fraction(s, "params_final", "params_initial");
                                  return f.is_number() ? json(100 * f.get<double>()) : f;
                                }),
                  acc, "Parameters count BatchNorm's γ and β too."});
  figs.push_back(
      {accuracy_plot(
           runs, "accuracy_vs_time", "training time (s)",
           [](const json& s) { return s.contains("train_seconds") ? s["train_seconds"] : json(); }),
       acc, "Training time is the summary's train_seconds (steps only, no evaluation)."});

  PlotSpec live, dead;
  live.name = "live_units";
  live.title = "Live units over training";
  live.xlabel = "step";
  live.ylabel = "live units";
  live.points = false;
  live.yrange = "[0:*]";
  dead = live;
  dead.name = "dead_units";
  dead.title = "Dead units found at each scan";
  dead.ylabel = "dead units";
  dead.points = true;
  for (size_t i = 0; i < runs.size(); ++i) {
    const auto rows = read_metrics(runs[i].dir);
    Series l{runs[i].label, {}, false, static_cast<int>(i)};
    Series d{runs[i].label, {}, false, static_cast<int>(i)};
    int64_t last_scan = -1;
    for (const auto& row : rows) {
      if (!row.contains("step") || !row.contains("live_units")) continue;
      l.xy.emplace_back(row["step"].get<double>(), row["live_units"].get<double>());
      if (row.contains("last_scan") && row["last_scan"].is_object() &&
          row["last_scan"].contains("dead_units")) {
        const int64_t step = row["last_scan"].value("step", row["step"].get<int64_t>());
        if (step != last_scan) {
          d.xy.emplace_back(static_cast<double>(step),
                            row["last_scan"]["dead_units"].get<double>());
          last_scan = step;
        }
      }
    }
    live.series.push_back(std::move(l));
    dead.series.push_back(std::move(d));
  }
  figs.push_back({live, "Over training", "From metrics.jsonl: the units left after each removal."});
  figs.push_back({dead, "Over training",
                  "From metrics.jsonl: last_scan.dead_units, at the step of each scan (before "
                  "removal). Runs without scans (dense) have no curve."});

  // Per-layer widths: one plot per model, so that the x axis is one network's layers.
  std::map<std::string, std::vector<const ReportRun*>> by_model;
  std::vector<std::string> models;
  for (const auto& r : runs) {
    if (!r.finished() || !r.summary.contains("live_units_per_group")) continue;
    const std::string m = r.summary.value("model", std::string("model"));
    if (!by_model.count(m)) models.push_back(m);
    by_model[m].push_back(&r);
  }
  for (const auto& m : models) {
    std::vector<std::string> groups;
    for (const auto* r : by_model[m]) {
      for (const auto& [g, w] : r->summary["live_units_per_group"].items()) groups.push_back(g);
    }
    groups = group_order(groups);
    PlotSpec p;
    p.name = models.size() == 1 ? "layer_widths" : "layer_widths_" + m;
    p.title = "Live units per layer at the end (" + m + ")";
    p.xlabel = "unit group (network order)";
    p.ylabel = "live units";
    p.xtics = groups;
    p.yrange = "[0:*]";
    for (const auto* r : by_model[m]) {
      Series s{r->label, {}, false, -1};
      const auto& per = r->summary["live_units_per_group"];
      for (size_t i = 0; i < groups.size(); ++i) {
        if (per.contains(groups[i])) {
          s.xy.emplace_back(static_cast<double>(i), per[groups[i]].get<double>());
        }
      }
      p.series.push_back(std::move(s));
    }
    figs.push_back({p, "Layer widths after pruning",
                    "summary.json's live_units_per_group, one line per finished run."});
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
      Series s{r.value("run", std::string("?")), {}, false, -1};
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
p.meta { color: #666; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #e4e4e4; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
td:nth-child(2), th:nth-child(2) { text-align: left; }
figure { margin: 1.5em 0; } figure svg { width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; white-space: pre-wrap; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
)";

std::string table_html(const std::vector<std::vector<std::string>>& rows) {
  std::string h = "<table>\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    h += "<tr>";
    for (const auto& c : rows[i]) {
      h += fmt::format("<{0}>{1}</{0}>", i == 0 ? "th" : "td", html_escape(c));
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
  const auto cells = compare_cells(runs, o.baseline, &base_label);
  const auto figs = build_figures(runs, study_dirs);

  size_t n_finished = 0;
  for (const auto& r : runs) n_finished += r.finished();
  std::string dirs_text;
  for (const auto& d : o.dirs) dirs_text += (dirs_text.empty() ? "" : ", ") + strip_slashes(d);

  std::string h = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  h += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  h += "<title>" + html_escape(o.title) + "</title>\n<style>" + kStyle +
       "</style>\n</head>\n<body>\n";
  h += "<h1>" + html_escape(o.title) + "</h1>\n";
  h += fmt::format(
      "<p class=\"meta\">{} runs ({} finished) from {} &middot; generated {} by demp "
      "report</p>\n",
      runs.size(), n_finished, html_escape(dirs_text), utc_now());
  h += "<h2>Summary</h2>\n";
  if (cells.size() > 1) {
    h += table_html(cells);
    h += "<p class=\"meta\">Δ acc and speed-up are against " + html_escape(base_label) +
         ". units/params/FLOPs %: what is left of the network at the end.</p>\n";
  } else {
    h += "<p>No finished run yet.</p>\n";
  }
  std::vector<std::vector<std::string>> unfinished = {{"run", "status", "last logged step"}};
  for (const auto& r : runs) {
    if (r.finished()) continue;
    const auto rows = read_metrics(r.dir);
    unfinished.push_back(
        {r.label,
         r.summary.is_object() ? r.summary.value("status", std::string("?")) : "no summary",
         rows.empty() ? "-" : std::to_string(rows.back().value("step", int64_t{0}))});
  }
  if (unfinished.size() > 1) h += "<h3>Not finished</h3>\n" + table_html(unfinished);

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

  std::printf("%s", text_table(cells).c_str());
  std::printf("report: %s/index.html (%zu runs, %zu plots:", out.c_str(), runs.size(),
              written.size());
  for (const auto& w : written) std::printf(" %s", w.c_str());
  std::printf(")\n");
  return 0;
}

}  // namespace demp::report
