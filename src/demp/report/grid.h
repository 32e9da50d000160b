#pragma once
// A sweep's grid: `--grid KEY=V1,V2,...` axes over `demp train` options, their points and the
// run directory names. LibTorch-free.
#include <string>
#include <vector>

namespace demp::report {

/// One --grid KEY=V1,V2,... : a train option (long flag name, no dashes) and its values.
struct GridAxis {
  std::string key;
  std::vector<std::string> values;
};

/// Parses "KEY=V1,V2,..." (values split on ';' instead when the list holds one, so that a value
/// may itself hold commas: "mlp-widths=64,32;128,64"). Leading dashes on KEY are dropped. Throws
/// demp::Error on an empty key, an empty value or a repeated value.
GridAxis parse_grid_axis(const std::string& spec);

/// Checks the keys against the train options (and that none is repeated or one the sweep sets
/// itself: out, resume, overwrite, progress); throws demp::Error with a hint.
void check_grid_keys(const std::vector<GridAxis>& axes);

/// Every point of the grid, the first axis varying slowest; each point holds one value per axis.
std::vector<std::vector<std::string>> expand_grid(const std::vector<GridAxis>& axes);

/// The directory name of a point: "KEY=VALUE" joined by '_' in axis order, or `format` with each
/// "{KEY}" replaced by that axis' value. Characters other than letters, digits and ._=+,- become
/// '_'. Throws demp::Error on an unknown "{KEY}" in the format.
std::string run_name(const std::vector<GridAxis>& axes, const std::vector<std::string>& point,
                     const std::string& format = {});

/// The names of every point; throws demp::Error when two points get the same name.
std::vector<std::string> run_names(const std::vector<GridAxis>& axes, const std::string& format);

/// Rejects train options the sweep sets itself or that a grid key also sets.
void check_base_args(const std::vector<std::string>& base_args, const std::vector<GridAxis>& axes);

}  // namespace demp::report
