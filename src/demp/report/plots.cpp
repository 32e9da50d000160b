#include "demp/report/plots.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <tuple>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/common/process.h"

namespace demp::report {

bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    const bool da = std::isdigit(static_cast<unsigned char>(a[i])) != 0;
    const bool db = std::isdigit(static_cast<unsigned char>(b[j])) != 0;
    if (da && db) {
      size_t ie = i, je = j;
      while (ie < a.size() && std::isdigit(static_cast<unsigned char>(a[ie]))) ++ie;
      while (je < b.size() && std::isdigit(static_cast<unsigned char>(b[je]))) ++je;
      // Compare as numbers without overflow: strip leading zeros, then length, then digits.
      size_t ia = i, jb = j;
      while (ia + 1 < ie && a[ia] == '0') ++ia;
      while (jb + 1 < je && b[jb] == '0') ++jb;
      const std::string na = a.substr(ia, ie - ia), nb = b.substr(jb, je - jb);
      if (na.size() != nb.size()) return na.size() < nb.size();
      if (na != nb) return na < nb;
      i = ie;
      j = je;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  if ((a.size() - i) != (b.size() - j)) return a.size() - i < b.size() - j;
  return a < b;  // equal up to digits' leading zeros: any fixed order
}

std::vector<std::string> group_order(std::vector<std::string> names) {
  std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
    if ((a == "stem") != (b == "stem")) return a == "stem";
    return natural_less(a, b);
  });
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

namespace {

// A gnuplot single-quoted string: only the quote itself needs escaping (doubled).
std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

}  // namespace

bool has_data(const PlotSpec& p) {
  for (const auto& s : p.series) {
    if (!s.xy.empty()) return true;
  }
  return false;
}

Gnuplot find_gnuplot(const std::string& name) {
  Gnuplot g;
  g.exe = find_executable(name);
  if (g.exe.empty()) {
    throw Error("gnuplot not found ('" + name + "' is not " +
                    (name.find('/') == std::string::npos ? "on PATH)" : "an executable)"),
                "install it (Debian: apt-get install gnuplot-nox; scripts/setup does), or give "
                "--gnuplot PATH");
  }
  std::string terminals;
  const auto r =
      run_process({g.exe, "-e", "set terminal"}, [&](const std::string& line) { terminals += line + "\n"; });
  if (r.exit_code != 0) {
    throw Error("gnuplot (" + g.exe + ") does not run: " + r.last_line,
                "check the installation: gnuplot -e 'set terminal'");
  }
  g.pngcairo = terminals.find("pngcairo") != std::string::npos;
  return g;
}

namespace {

// Readable on white, and apart from each other and from the black reference (after Sasha
// Trubetskoy's 20 distinct colours, leaving out the pale ones and grey).
const char* const kColors[kPaletteSize] = {"#4363d8", "#e6194b", "#3cb44b", "#f58231", "#911eb4", "#1ba3c6",
                                           "#f032e6", "#9a6324", "#469990", "#800000", "#808000", "#000075"};
// Filled shapes first (they read best small), then open ones, then a star: 13 of them.
const int kMarkers[] = {7, 5, 9, 11, 13, 15, 6, 4, 8, 10, 12, 14, 3};
constexpr int kMarkerCount = sizeof(kMarkers) / sizeof(kMarkers[0]);

int wrap(int i, int n) { return ((i % n) + n) % n; }

bool usable(double v, bool log) { return std::isfinite(v) && (!log || v > 0); }

std::string num(double v) { return fmt::format("{:.10g}", v); }

// A gnuplot data-block string: double-quoted, with no double quote inside.
std::string data_string(std::string s) {
  std::replace(s.begin(), s.end(), '"', '\'');
  return "\"" + s + "\"";
}

}  // namespace

std::string palette_color(int i) { return kColors[wrap(i, kPaletteSize)]; }
int palette_marker(int i) { return kMarkers[wrap(i, kMarkerCount)]; }

std::pair<double, double> padded_range(double lo, double hi, bool log, double frac) {
  if (lo > hi) std::swap(lo, hi);
  if (log) {
    double a = std::log10(lo), b = std::log10(hi);
    double pad = b - a < 1e-9 ? std::log10(2.0) : frac * (b - a);
    return {std::pow(10.0, a - pad), std::pow(10.0, b + pad)};
  }
  if (hi - lo < 1e-12) {
    const double pad = std::max(1.0, std::abs(lo) / 10);
    return {lo - pad, hi + pad};
  }
  const double pad = frac * (hi - lo);
  return {lo - pad, hi + pad};
}

std::vector<double> log_tics(double lo, double hi) {
  std::vector<double> out;
  if (!(lo > 0) || !(hi > lo)) return out;
  const int d0 = static_cast<int>(std::floor(std::log10(lo))) - 1;
  const int d1 = static_cast<int>(std::ceil(std::log10(hi))) + 1;
  const int decades = d1 - d0 - 2;
  auto fill = [&](const std::vector<double>& mantissas, int every) {
    out.clear();
    for (int d = d0; d <= d1; ++d) {
      if (wrap(d, every) != 0) continue;
      for (double m : mantissas) {
        // Rounded to the printed digits, so that 0.3 is 0.3 and not 0.30000000000000004.
        const double v = std::stod(fmt::format("{:.6g}", m * std::pow(10.0, d)));
        if (v >= lo && v <= hi) out.push_back(v);
      }
    }
  };
  if (decades > 8) {
    fill({1}, 2);  // many decades: every other power of ten
  } else if (decades > 3) {
    fill({1}, 1);
  } else {
    fill({1, 2, 5}, 1);
    if (out.size() < 4) fill({1, 1.5, 2, 3, 5, 7}, 1);
    if (out.size() < 4) fill({1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9}, 1);
  }
  return out;
}

std::string gnuplot_script(const PlotSpec& p, bool pngcairo) {
  std::string s =
      fmt::format("# {}: written by demp; the data is inline. Redraw: gnuplot {}.gp\n", p.title, p.name);
  s += "set encoding utf8\n";
  s += fmt::format("set title {} noenhanced\n", quoted(p.title));
  s += fmt::format("set xlabel {} noenhanced\n", quoted(p.xlabel));
  s += fmt::format("set ylabel {} noenhanced\n", quoted(p.ylabel));
  // The legend goes below the plot, where it cannot cover a curve.
  s += "set grid\nset key below center horizontal noenhanced\n";
  s += "set style fill transparent solid 0.15 noborder\n";

  // Ranges from the data, padded so that no point, error bar or label sits on the frame.
  const bool categorical = !p.xtics.empty();
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  bool labelled = false;
  for (const auto& ser : p.series) {
    for (size_t i = 0; i < ser.xy.size(); ++i) {
      const auto [x, y] = ser.xy[i];
      if (!usable(x, p.logx && !ser.reference) || !usable(y, p.logy)) continue;
      const double e = i < ser.yerr.size() && std::isfinite(ser.yerr[i]) ? ser.yerr[i] : 0;
      if (!ser.reference) {
        x0 = std::min(x0, x);
        x1 = std::max(x1, x);
      }
      y0 = std::min(y0, usable(y - e, p.logy) ? y - e : y);
      y1 = std::max(y1, y + e);
      if (i < ser.labels.size() && !ser.labels[i].empty()) labelled = true;
    }
  }
  double xr0 = 0, xr1 = 1;
  if (categorical) {
    xr0 = -0.5;
    xr1 = static_cast<double>(p.xtics.size()) - 0.5;
  } else if (x0 <= x1) {
    // Labels are written to the right of their points: more room on that side.
    std::tie(xr0, xr1) = padded_range(x0, x1, p.logx, labelled ? 0.14 : 0.06);
  } else if (p.logx) {
    xr0 = 1;
    xr1 = 100;  // only a reference line: any range shows it
  }
  if (p.logx) s += "set logscale x\n";
  if (p.logy) s += "set logscale y\n";
  s += fmt::format("set xrange [{}:{}]\n", num(xr0), num(xr1));
  if (y0 <= y1) {
    auto [yr0, yr1] = padded_range(y0, y1, p.logy, labelled ? 0.12 : 0.08);
    if (p.yrange == "[0:*]" && !p.logy) yr0 = 0;
    s += fmt::format("set yrange [{}:{}]\n", num(yr0), num(yr1));
  } else if (!p.yrange.empty()) {
    s += "set yrange " + p.yrange + "\n";
  }
  if (!p.yrange.empty() && p.yrange != "[0:*]") s += "set yrange " + p.yrange + "\n";
  auto tics = [&](const char* axis, double lo, double hi) {
    const auto t = log_tics(lo, hi);
    if (t.size() < 2) return;
    s += fmt::format("set {}tics (", axis);
    for (size_t i = 0; i < t.size(); ++i) {
      s += fmt::format("{}\"{}\" {}", i ? ", " : "", fmt::format("{:g}", t[i]), num(t[i]));
    }
    s += ")\n";
  };
  if (p.logx && !categorical) tics("x", xr0, xr1);
  if (p.logy && y0 <= y1) {
    const auto [a, b] = padded_range(y0, y1, true, 0.08);
    tics("y", a, b);
  }
  if (categorical) {
    s += "set xtics (";
    for (size_t i = 0; i < p.xtics.size(); ++i) {
      s += fmt::format("{}{} {}", i ? ", " : "", quoted(p.xtics[i]), i);
    }
    s += ") rotate by 45 right noenhanced\n";
  }
  for (const auto& [x, text] : p.xmarks) {
    if (!(x >= xr0 && x <= xr1)) continue;
    s += fmt::format("set arrow from {0}, graph 0 to {0}, graph 1 nohead dt 3 lc rgb '#999999'\n", num(x));
    s += fmt::format("set label {} at {}, graph 1 offset 0,0.6 center tc rgb '#777777' noenhanced\n",
                     quoted(text), num(x));
  }

  std::string plot;
  size_t keyed = 0, longest = 0;
  auto add = [&](const std::string& clause) { plot += (plot.empty() ? "plot " : ", \\\n     ") + clause; };
  int position = 0;
  for (size_t k = 0; k < p.series.size(); ++k) {
    const auto& ser = p.series[k];
    const int pos = position++;
    if (ser.xy.empty()) continue;
    const int c = ser.color == -1 ? pos : ser.color;
    const std::string rgb = c == kReferenceColor ? std::string("#000000") : palette_color(c);
    const std::string title =
        ser.in_key ? "title " + quoted(ser.title) + " noenhanced" : std::string("notitle");
    if (ser.in_key) {
      ++keyed;
      longest = std::max(longest, ser.title.size());
    }
    s += fmt::format("$d{} << EOD\n", k);
    if (ser.reference) {
      // The line and its band span the whole x range: data at the range's two ends.
      const double y = ser.xy[0].second;
      const double e = ser.yerr.empty() || !std::isfinite(ser.yerr[0]) ? 0 : ser.yerr[0];
      for (double x : {xr0, xr1}) s += fmt::format("{} {} {} {}\n", num(x), num(y - e), num(y + e), num(y));
      s += "EOD\n";
      if (e > 0) add(fmt::format("$d{} using 1:2:3 with filledcurves lc rgb '{}' notitle", k, rgb));
      add(fmt::format("$d{} using 1:4 with lines lc rgb '{}' lw 2 dt {} {}", k, rgb,
                      ser.dashed ? 2 : ser.dash, title));
      continue;
    }
    const bool err = !ser.yerr.empty(), lab = !ser.labels.empty();
    for (size_t i = 0; i < ser.xy.size(); ++i) {
      const auto [x, y] = ser.xy[i];
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      s += fmt::format("{} {}", num(x), num(y));
      if (err || lab) {
        s += " " + num(i < ser.yerr.size() && std::isfinite(ser.yerr[i]) ? ser.yerr[i] : 0.0);
      }
      if (lab) s += " " + data_string(i < ser.labels.size() ? ser.labels[i] : "");
      s += "\n";
    }
    s += "EOD\n";
    const bool pts = ser.points && p.points;
    std::string with;
    if (err) {
      with = ser.lines ? "yerrorlines" : "yerrorbars";
    } else {
      with = ser.lines ? (pts ? "linespoints" : "lines") : "points";
    }
    const std::string using_ = err ? "1:2:3" : "1:2";
    add(fmt::format("$d{} using {} with {} lc rgb '{}' lw 1.5 dt {}{} {}", k, using_, with, rgb,
                    ser.dashed ? 2 : ser.dash,
                    pts || err ? fmt::format(" pt {} ps {}", c == kReferenceColor ? 7 : palette_marker(c),
                                             ser.lines ? 1.1 : 1.5)
                               : std::string(),
                    title));
    if (lab) {
      add(
          fmt::format("$d{} using 1:2:4 with labels left offset char 0.6,0.6 font ',10' tc rgb '{}' "
                      "notitle",
                      k, rgb));
    }
  }
  if (!p.marker_note.empty() && !plot.empty()) {
    add(fmt::format("keyentry with points pt 6 ps 1.5 lc rgb '#555555' title {} noenhanced",
                    quoted(p.marker_note)));
    ++keyed;
  }
  // The legend's rows (below the plot) make the picture taller, not the plot smaller.
  const size_t per_row = std::max<size_t>(1, 900 / (longest * 7 + 60));
  const size_t key_rows = (keyed + per_row - 1) / per_row;
  const int h = 560 + 20 * static_cast<int>(key_rows);
  s += fmt::format("set terminal svg size 960,{} dynamic font 'sans,12' background rgb 'white'\n", h);
  s += fmt::format("set termoption noenhanced\nset output {}\n", quoted(p.name + ".svg"));
  s += plot + "\n";
  s += pngcairo ? fmt::format("set terminal pngcairo size 1200,{} font 'sans,11'\n", h * 5 / 4)
                : fmt::format("set terminal png size 1200,{}\n", h * 5 / 4);
  s += fmt::format("set termoption noenhanced\nset output {}\nreplot\nunset output\n",
                   quoted(p.name + ".png"));
  return s;
}

void render_plot(const Gnuplot& g, const PlotSpec& p, const std::string& dir) {
  if (!has_data(p)) return;
  write_file_atomic(dir + "/" + p.name + ".gp", gnuplot_script(p, g.pngcairo));
  remove_file(dir + "/" + p.name + ".svg");  // a stale picture must not pass for a new one
  remove_file(dir + "/" + p.name + ".png");
  std::string output;
  // gnuplot's own "cd" keeps the script's file names relative, so it can be rerun in place.
  const auto r = run_process({g.exe, "-e", "cd " + quoted(dir), p.name + ".gp"},
                             [&](const std::string& line) { output += line + "\n"; });
  if (r.exit_code != 0 || !is_regular_file(dir + "/" + p.name + ".svg")) {
    throw Error(fmt::format("gnuplot failed on {}/{}.gp (exit {}): {}", dir, p.name, r.exit_code,
                            output.empty() ? r.last_line : output),
                "this is likely a bug in demp's plot script; please report it with that file");
  }
}

}  // namespace demp::report
