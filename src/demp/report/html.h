#pragma once
// `demp report`: run and sweep directories in, plots (gnuplot) and one self-contained
// index.html out — the plots inline as SVG, the summary table with the columns of
// `demp compare`. LibTorch-free.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace demp::report {

struct ReportRun {
  std::string label;  ///< name in tables and legends
  std::string dir;
  nlohmann::json summary;  ///< null without summary.json
  nlohmann::json config;   ///< null without config.json
  bool finished() const;
};

/// The runs of each directory: a run directory (it holds summary.json, config.json or
/// metrics.jsonl) is one run; any other directory is a sweep whose subdirectories are runs (in
/// sweep.json's order, then natural order). `study_dirs` receives the directories that hold a
/// study.json. Throws demp::Error for a missing directory or when no run is found.
std::vector<ReportRun> collect_runs(const std::vector<std::string>& dirs,
                                    std::vector<std::string>* study_dirs = nullptr);

/// The rows of `demp compare`'s table for the finished runs, as cells: run, method, test acc,
/// Δ acc, units %, params %, FLOPs %, train s, speed-up. The first row is the header. `baseline`
/// (a label or directory) is the 1.00x run; default: the first dense run, else the first run.
/// `baseline_label` receives the one used. Throws demp::Error for an unknown baseline.
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
