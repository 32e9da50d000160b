#pragma once
// The methods' side of the hook contract (train/hooks.h): the registry of methods and the factory
// the CLI hands to train::run_training. A new method is one new file plus one registry row
// (methods.cpp); `--method`'s help, its error hint and the tests' list of methods come from it.
#include <memory>
#include <string>
#include <vector>

#include "demp/train/hooks.h"

namespace demp::methods {

using train::Method;

/// One registered method: its `--method` name, one line of help, and its factory (which reads and
/// checks the method's options: it throws demp::Error on a bad one).
struct MethodInfo {
  std::string name;
  std::string help;
  std::unique_ptr<Method> (*make)(const train::TrainConfig& cfg);
};

/// Every method, in the order `--method` lists them.
const std::vector<MethodInfo>& registry();
/// "dense, demp, scan, ...": the names, for hints.
std::string method_names();
/// One "name: help" line per method, for `--method`'s help.
std::string method_help();

/// Builds cfg.method from the registry. Throws demp::Error for an unknown name (the hint lists
/// them) or a bad option of the method.
std::unique_ptr<Method> make_method(const train::TrainConfig& cfg);

}  // namespace demp::methods
