#pragma once
// `demp report`: run, sweep and frontier directories in, plots (gnuplot) and one self-contained
// index.html out — the plots inline as SVG, a summary table over the settings (seeds averaged)
// and one over the runs. LibTorch-free.
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "demp/train/summary.h"

namespace demp::report {

struct ReportRun {
  std::string label;  ///< name in tables and legends
  std::string dir;
  std::optional<train::Summary> summary;  ///< empty without summary.json
  nlohmann::json config;                  ///< null without config.json
  /// The curve the run belongs to and its point on it; runs that share both are seeds of one
  /// point. From frontier.json when the run is listed there, else derive_grouping().
  std::string series;
  std::string setting;  ///< "25%", "λ 0.01", "d 0.3"; empty for dense
  int64_t seed = -1;    ///< -1: not known
  /// The fraction of parameters the run was asked to keep (a frontier level, --target-params);
  /// NaN when none.
  double level = std::nan("");
  bool finished() const;
};

/// The grouping of a run outside a frontier directory: series = the method (summary's, else
/// config's), "demp (paper)" for demp with `l1-step` "loss"; setting = `target-params` when > 0
/// ("25%"; `target-flops`/`target-units` likewise, "FLOPs 25%"), else `density` for baselines
/// ("d 0.3"), else `lambda` for demp and scan ("λ 0.01"), empty for dense; seed from config, else
/// summary.
void derive_grouping(ReportRun& r);

/// A fraction as a percentage with no needless digits: 0.25 -> "25%", 0.125 -> "12.5%".
std::string level_text(double fraction);

/// The series drawn as the reference line (and, by default, the 1.00x of the speed-ups).
inline const char* const kDenseSeries = "dense";

/// Mean and sample standard deviation (0 for one value; NaN for none).
struct Stat {
  double mean = std::nan(""), std = std::nan("");
  size_t n = 0;
};
Stat stat_of(const std::vector<double>& v);

/// The runs that share (series, setting): the seeds of one point.
struct RunGroup {
  std::string series, setting;
  std::vector<const ReportRun*> runs;      ///< all of them, in seed order
  std::vector<const ReportRun*> finished;  ///< those with a finished summary
  /// Over the finished runs: test accuracy and the fractions left (0..1), train seconds.
  Stat accuracy, params, flops, units, seconds;
  /// The run whose curves stand for the group over training: the first finished seed, else the
  /// first run.
  const ReportRun* representative() const;
};

/// The groups of `runs` (which must outlive them): dense first, then the series in order of first
/// appearance; within a series from the most parameters left to the fewest (groups with no
/// finished run last).
std::vector<RunGroup> group_runs(const std::vector<ReportRun>& runs);

/// The runs of each directory: a run directory (it holds summary.json, config.json or
/// metrics.jsonl) is one run; any other directory is a frontier (it holds frontier.json: its runs
/// in that order, with their series, level and seed) or a sweep whose subdirectories are runs (in
/// sweep.json's order, then natural order). Runs a frontier.json does not name get
/// derive_grouping(). `study_dirs` receives the directories that hold a study.json. Throws
/// demp::Error for a missing directory or when no run is found.
std::vector<ReportRun> collect_runs(const std::vector<std::string>& dirs,
                                    std::vector<std::string>* study_dirs = nullptr);

/// The finished runs whose means are the reference for Δ acc and speed-up: the group of
/// `baseline` (a run's label or directory) when given, else the dense series, else the first
/// group. `label` receives a name for them. Throws demp::Error for an unknown baseline.
std::vector<const ReportRun*> reference_runs(const std::vector<ReportRun>& runs, const std::string& baseline,
                                             std::string* label = nullptr);

/// One row per group with a finished run: series, setting, seeds, test acc % (mean ± std over
/// the seeds), Δ acc, params %, FLOPs %, units % (mean ± std), train s, speed-up (the reference's
/// mean train seconds over the group's). The first row is the header.
std::vector<std::vector<std::string>> summary_cells(const std::vector<ReportRun>& runs,
                                                    const std::string& baseline,
                                                    std::string* baseline_label = nullptr);

/// One row per finished run: run, series, setting, seed, test acc, Δ acc, units %, params %,
/// FLOPs %, train s, speed-up, against reference_runs(). The first row is the header.
std::vector<std::vector<std::string>> compare_cells(const std::vector<ReportRun>& runs,
                                                    const std::string& baseline,
                                                    std::string* baseline_label = nullptr);

std::string html_escape(const std::string& s);
/// An SVG file made fit to sit inside HTML: the XML prolog dropped, every id (and each reference
/// to one) prefixed with `prefix`, so that several gnuplot SVGs on one page do not share ids.
std::string inline_svg(const std::string& svg, const std::string& prefix);

struct ReportOptions {
  std::vector<std::string> dirs;
  std::string out;  ///< default: DIR/report for one DIR, else ./report
  std::string baseline;
  std::string title = "demp report";
  std::string gnuplot = "gnuplot";
};

/// The report directory for `o` (resolving the default).
std::string report_out_dir(const ReportOptions& o);

/// Writes the plots and index.html; prints where they are. Returns 0.
int run_report(const ReportOptions& o);

}  // namespace demp::report
