#pragma once
// The methods' side of the hook contract (train/hooks.h): the factory the CLI hands to
// train::run_training. A new method is one new file plus one line in make_method().
#include <memory>

#include "demp/train/hooks.h"

namespace demp::methods {

using train::Method;

/// Throws demp::Error for an unknown method name.
std::unique_ptr<Method> make_method(const train::TrainConfig& cfg);

}  // namespace demp::methods
