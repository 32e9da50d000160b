#pragma once
// One schedule type for every quantity that changes with the step: learning rate, and (DemP)
// the regularisation strength λ(t) and the noise σ(t). LibTorch-free.
#include <cstdint>
#include <string>
#include <vector>

namespace demp::train {

struct Schedule {
  enum Kind { Constant, OneCycle, Cosine, LinearWarmup, Step } kind = Constant;
  double peak = 0.0;  ///< the peak (or constant) value
  int64_t span = 1;   ///< steps over which the shape runs (S); value after span is final
  // one-cycle (DEMP.md): warm up from peak/div to peak over pct*span, cosine anneal to peak/final_div
  double pct = 0.3, div = 25.0, final_div = 1e4;
  int64_t warmup = 0;               ///< linear warm-up steps (LinearWarmup, and optional for Step)
  std::vector<int64_t> milestones;  ///< Step: steps at which the value is multiplied by `factor`
  double factor = 0.1;

  double at(int64_t t) const;
};

/// Parses a schedule spec:
///   constant | onecycle | cosine | linear-warmup:W | step:E1,E2,...:F | warmup-step:W:E1,...:F
/// W and Ei are in epochs (fractions allowed) and converted with `steps_per_epoch`; the spec's
/// shape runs over `span` steps. Throws demp::Error with the accepted forms on a bad spec.
Schedule parse_schedule(const std::string& spec, double peak, int64_t span, int64_t steps_per_epoch);

}  // namespace demp::train
