#pragma once
// The paper's dying-neuron study: a sweep of dense training without removal (method "scan")
// over learning rate, batch size, optimizer, regularisation and noise, the dead fraction of each
// run over training, and a check of the paper's expectations (more dead units with a higher
// learning rate, a smaller batch, AdamW rather than SGD, stronger regularisation). LibTorch-free.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "demp/report/sweep.h"

namespace demp::report {

/// (step, dead fraction) at each dead-unit scan: last_scan.dead_units / live_units of the first
/// metrics row (train::read_metrics) that carries that scan, at the scan's step. Rows without a scan give
/// nothing.
std::vector<std::pair<int64_t, double>> dead_fraction_curve(const std::vector<nlohmann::json>& rows);

/// One run of a study, as the expectation checker sees it.
struct StudyRun {
  std::string name;
  std::vector<std::string> point;  ///< one value per grid axis
  bool has_final = false;          ///< false: the run failed or its metrics hold no scan
  double final_dead_fraction = 0;
};

/// One comparison of two runs that differ in one factor only.
struct FactorComparison {
  std::string low, high;  ///< the factor's two values (for optimizer: the SGD one, adamw)
  double dead_low = 0, dead_high = 0;
  std::string fixed;  ///< the other grid values, "key=value ..."
  int verdict = 0;    ///< +1 agrees with the paper, -1 disagrees, 0 no difference
};

struct FactorCheck {
  std::string factor;       ///< the grid key: lr, batch-size, optimizer, lambda, noise, weight-decay
  std::string expectation;  ///< the paper's, in words
  std::vector<FactorComparison> comparisons;
  int agree = 0, disagree = 0, ties = 0;
  /// "agrees", "disagrees", "mixed", "no difference", or "not tested" (no pair of finished runs
  /// differing in this factor only)
  std::string verdict;
};

/// The factors the paper makes a claim about, in report order.
const std::vector<std::string>& study_factors();

/// Compares the final dead fractions of every pair of runs that differ in one factor only
/// (neighbouring values of a numeric factor; adamw against each SGD variant for the optimizer).
std::vector<FactorCheck> check_expectations(const std::vector<GridAxis>& axes,
                                            const std::vector<StudyRun>& runs);

/// The checks as text: one verdict line per factor with the numbers of every comparison.
std::string expectations_text(const std::vector<FactorCheck>& checks);

struct StudyOptions {
  SweepOptions sweep;  ///< out, name_format, base_args, verbose, dry_run, exe
  std::string lr, batch_size, optimizer, lambda,
      noise;                      ///< comma-separated lists; empty: not swept
  std::vector<std::string> grid;  ///< further KEY=V1,V2 axes
  std::string method = "scan";
  bool no_plot = false;
  std::string gnuplot = "gnuplot";
};

/// The train options a study adds to the user's: the method, and λ = 0 and σ = 0 unless swept
/// or given, so that "dense training" means no regulariser and no noise.
std::vector<std::string> study_base_args(const StudyOptions& o);
/// The grid specs of a study: the five factor lists (those given), then `grid`.
std::vector<std::string> study_grid(const StudyOptions& o);

/// Runs the study: the sweep, DIR/study.json, the table with the final dead fraction, the
/// expectation check (printed and in DIR/study.txt) and DIR/dead_fraction.{svg,png}. Returns the
/// exit code: 1 when a run failed, else 0.
int run_study(const StudyOptions& o);

}  // namespace demp::report
