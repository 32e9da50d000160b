#pragma once
// One table over several runs' summary.json: accuracy, what is left of the network, and the
// training speed-up against a dense run of the same length. LibTorch-free.
#include <string>
#include <vector>

#include "demp/train/summary.h"

namespace demp::report {

struct CompareRow {
  std::string run;
  train::Summary summary;
};

/// Reads DIR/summary.json for each directory; throws demp::Error naming a missing/corrupt one.
std::vector<CompareRow> read_summaries(const std::vector<std::string>& dirs);

/// The table as text. `baseline` is the run whose train_seconds is the 1.00x reference (default:
/// the first dense run, else the first run).
std::string compare_table(const std::vector<CompareRow>& rows, const std::string& baseline = {});

}  // namespace demp::report
