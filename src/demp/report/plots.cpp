#include "demp/report/plots.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/report/process.h"

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
  const auto r = run_process({g.exe, "-e", "set terminal"},
                             [&](const std::string& line) { terminals += line + "\n"; });
  if (r.exit_code != 0) {
    throw Error("gnuplot (" + g.exe + ") does not run: " + r.last_line,
                "check the installation: gnuplot -e 'set terminal'");
  }
  g.pngcairo = terminals.find("pngcairo") != std::string::npos;
  return g;
}

std::string gnuplot_script(const PlotSpec& p, bool pngcairo) {
  std::string s = fmt::format("# {}: written by demp; the data is inline. Redraw: gnuplot {}.gp\n",
                              p.title, p.name);
  s += "set encoding utf8\n";
  s += fmt::format("set title {} noenhanced\n", quoted(p.title));
  s += fmt::format("set xlabel {} noenhanced\n", quoted(p.xlabel));
  s += fmt::format("set ylabel {} noenhanced\n", quoted(p.ylabel));
  s += "set grid\nset key outside right top noenhanced\n";
  if (p.logx) s += "set logscale x\n";
  if (!p.yrange.empty()) s += "set yrange " + p.yrange + "\n";
  if (!p.xtics.empty()) {
    s += "set xtics (";
    for (size_t i = 0; i < p.xtics.size(); ++i) {
      s += fmt::format("{}{} {}", i ? ", " : "", quoted(p.xtics[i]), i);
    }
    s += fmt::format(") rotate by 45 right noenhanced\nset xrange [-0.5:{}]\n",
                     static_cast<double>(p.xtics.size()) - 0.5);
  }
  std::string plot;
  for (size_t k = 0; k < p.series.size(); ++k) {
    const auto& ser = p.series[k];
    if (ser.xy.empty()) continue;
    s += fmt::format("$d{} << EOD\n", k);
    for (const auto& [x, y] : ser.xy) {
      if (std::isfinite(x) && std::isfinite(y)) s += fmt::format("{} {}\n", x, y);
    }
    s += "EOD\n";
    // "lt" first: it resets every line property, so the point type and dash must follow it.
    plot +=
        fmt::format("{}$d{} using 1:2 with {}{}{} lw 1.5 dt {} title {} noenhanced",
                    plot.empty() ? "plot " : ", \\\n     ", k, p.points ? "linespoints" : "lines",
                    ser.color >= 0 ? fmt::format(" lt {}", ser.color + 1) : std::string(),
                    p.points ? " pt 7 ps 0.6" : "", ser.dashed ? 2 : 1, quoted(ser.title));
  }
  s += "set terminal svg size 960,600 dynamic font 'sans,12' background rgb 'white'\n";
  s += fmt::format("set termoption noenhanced\nset output {}\n", quoted(p.name + ".svg"));
  s += plot + "\n";
  s += pngcairo ? "set terminal pngcairo size 1200,750 font 'sans,11'\n"
                : "set terminal png size 1200,750\n";
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
