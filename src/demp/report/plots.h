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

/// The fixed palette: kPaletteSize colours readable on white, and as many point types (plus one,
/// so that colour and marker repeat on different periods and any two of the first
/// kPaletteSize * (kPaletteSize + 1) series differ in one of them). Index i is series i.
constexpr int kPaletteSize = 12;
std::string palette_color(int i);  ///< "#rrggbb"
int palette_marker(int i);         ///< a gnuplot point type
/// The reference (dense) colour: black, outside the palette.
constexpr int kReferenceColor = -2;

struct Series {
  // A constructor for the four fields most plots set, so that `{title, xy, dashed, color}` leaves
  // the others at their defaults without -Wmissing-field-initializers.
  Series(std::string title = {}, std::vector<std::pair<double, double>> xy = {}, bool dashed = false,
         int color = -1)
      : title(std::move(title)), xy(std::move(xy)), dashed(dashed), color(color) {}
  std::string title;
  std::vector<std::pair<double, double>> xy;  ///< plotted in this order
  bool dashed = false;
  /// Palette index (colour and marker), shared by related series (one method's curves);
  /// -1: the series' position in the plot; kReferenceColor: black.
  int color = -1;
  std::vector<double> yerr;         ///< ± error bar per point (empty: none)
  std::vector<std::string> labels;  ///< text beside each point (empty: none)
  /// A horizontal line at xy[0]'s y across the whole plot, with a shaded band ± yerr[0]: the
  /// dense reference. Its x does not count towards the x range.
  bool reference = false;
  bool lines = true;   ///< join the points
  bool points = true;  ///< mark the points (also subject to PlotSpec::points)
  int dash = 1;        ///< gnuplot dash type (1 solid): tells apart one method's settings
  bool in_key = true;  ///< listed in the legend
};

struct PlotSpec {
  std::string name;  ///< file stem: NAME.gp, NAME.svg, NAME.png
  std::string title, xlabel, ylabel;
  std::vector<Series> series;
  /// Categorical x axis: x = 0, 1, ... labelled with these (layer names); empty: numeric x.
  std::vector<std::string> xtics;
  bool logx = false, logy = false;
  bool points = true;  ///< draw a point at each datum (lines always join them)
  /// "[0:*]": from 0 to the data's padded top; any other gnuplot range: as given; empty: the
  /// data's padded range.
  std::string yrange;
  /// Vertical dotted lines at these x, labelled at the top (a frontier's target levels).
  std::vector<std::pair<double, std::string>> xmarks;
  /// A legend entry for the points-only series left out of the legend (one per curve), drawn
  /// as a grey marker with this title, e.g. "prune event"; empty: none.
  std::string marker_note;
};

/// [lo, hi] widened so that no datum sits on the frame: by `frac` of the span on each side,
/// measured in log10 space when `log` (which needs lo > 0). A zero span is widened to a factor of
/// 2 (log) or ±1 (linear, ±|lo|/10 when larger).
std::pair<double, double> padded_range(double lo, double hi, bool log, double frac = 0.08);

/// Tick positions for a log axis over [lo, hi]: 1-2-5 per decade, denser (1, 1.5, 2, 3, 5, 7, then
/// 1 to 9) when that gives fewer than 4 ticks; powers of ten only over more than 3 decades (every
/// other one over more than 8).
std::vector<double> log_tics(double lo, double hi);

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
