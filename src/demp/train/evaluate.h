#pragma once
// Evaluation: eval-mode accuracy and loss of a model on a data split.
#include <torch/types.h>

#include <cstdint>

#include "demp/data/dataset.h"
#include "demp/nn/model.h"

namespace demp::train {

struct EvalResult {
  double accuracy = 0, loss = 0;
  int64_t n = 0;
};

/// Eval-mode accuracy and mean cross-entropy of `model` on `ds`, in batches.
EvalResult evaluate(const nn::Model& model, const data::Dataset& ds, int64_t batch,
                    const torch::Device& device);

}  // namespace demp::train
