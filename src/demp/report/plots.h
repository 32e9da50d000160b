#pragma once
// Plots through gnuplot, run as a subprocess on a generated script. Each plot keeps its script
// (NAME.gp, data inline) beside NAME.svg and NAME.png, so that a user can restyle it by hand.
// LibTorch-free.
#include <string>
#include <utility>
#include <vector>

namespace demp::report {

/// "a" < "b" comparing runs of digits as numbers: conv2 < conv10, layer1.1 < layer2.0.
bool natural_less(const std::string& a, const std::string& b);

/// Unit-group names in network order: "stem" first, then the rest in natural order (layer1.0.mid
/// < layer1.0.out < layer1.1.mid; conv1 < ... < conv13 < fc1). summary.json cannot give the order
/// itself: its objects are written with sorted keys.
std::vector<std::string> group_order(std::vector<std::string> names);

struct Series {
  std::string title;
  std::vector<std::pair<double, double>> xy;  ///< plotted in this order
  bool dashed = false;
  int color = -1;  ///< a gnuplot line type (colour) shared by related series; -1: the next one
};

struct PlotSpec {
  std::string name;  ///< file stem: NAME.gp, NAME.svg, NAME.png
  std::string title, xlabel, ylabel;
  std::vector<Series> series;
  /// Categorical x axis: x = 0, 1, ... labelled with these (layer names); empty: numeric x.
  std::vector<std::string> xtics;
  bool logx = false;
  bool points = true;  ///< draw a point at each datum (lines always join them)
  std::string yrange;  ///< e.g. "[0:*]"; empty: autoscale
};

/// A found gnuplot and whether it has the cairo PNG terminal.
struct Gnuplot {
  std::string exe;
  bool pngcairo = false;
};

/// Finds gnuplot (`name` is a path or a name on $PATH); throws demp::Error with an install hint
/// when it is missing.
Gnuplot find_gnuplot(const std::string& name = "gnuplot");

/// The script that draws `p` as NAME.svg then NAME.png in the current directory of gnuplot.
std::string gnuplot_script(const PlotSpec& p, bool pngcairo);

/// True when some series has a datum (a plot without one is left out, not drawn empty).
bool has_data(const PlotSpec& p);

/// Writes DIR/NAME.gp and runs it in DIR, giving DIR/NAME.svg and DIR/NAME.png; throws
/// demp::Error with gnuplot's message when it fails.
void render_plot(const Gnuplot& g, const PlotSpec& p, const std::string& dir);

}  // namespace demp::report
