#include "demp/train/schedule.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "demp/common/error.h"
#include "demp/common/text.h"

namespace demp::train {

double Schedule::at(int64_t t) const {
  const double pi = 3.14159265358979323846;
  switch (kind) {
    case Constant:
      return peak;
    case OneCycle: {
      const int64_t t1 = static_cast<int64_t>(std::floor(pct * static_cast<double>(span)));
      const double start = peak / div, fin = peak / (div * final_div);
      if (t <= t1) {
        if (t1 == 0) return peak;
        return start + (peak - start) * 0.5 * (1 - std::cos(pi * t / static_cast<double>(t1)));
      }
      if (t > span) return fin;
      return fin + (peak - fin) * 0.5 *
                       (1 + std::cos(pi * static_cast<double>(t - t1) / static_cast<double>(span - t1)));
    }
    case Cosine:
      if (t >= span) return 0.0;
      return peak * 0.5 * (1 + std::cos(pi * static_cast<double>(t) / static_cast<double>(span)));
    case LinearWarmup:
      if (warmup <= 0 || t >= warmup) return peak;
      return peak * static_cast<double>(t + 1) / static_cast<double>(warmup);
    case Step: {
      if (warmup > 0 && t < warmup) return peak * static_cast<double>(t + 1) / static_cast<double>(warmup);
      double v = peak;
      for (int64_t m : milestones) {
        if (t >= m) v *= factor;
      }
      return v;
    }
  }
  return peak;
}

namespace {

double number(const std::string& s, const std::string& spec) {
  try {
    size_t used = 0;
    const double v = std::stod(s, &used);
    if (used == s.size() && std::isfinite(v) && v >= 0) return v;
  } catch (const std::exception&) {
  }
  throw Error("bad number '" + s + "' in schedule '" + spec + "'",
              "accepted: constant, onecycle, cosine, linear-warmup:W, step:E1,E2:F, "
              "warmup-step:W:E1,E2:F (W, E in epochs)");
}

}  // namespace

Schedule parse_schedule(const std::string& spec, double peak, int64_t span, int64_t steps_per_epoch) {
  Schedule s;
  s.peak = peak;
  s.span = std::max<int64_t>(1, span);
  const auto parts = split(spec, ':');
  const std::string& name = parts.empty() ? spec : parts[0];
  auto epochs = [&](const std::string& x) {
    return static_cast<int64_t>(std::llround(number(x, spec) * static_cast<double>(steps_per_epoch)));
  };
  auto milestones = [&](const std::string& x) {
    std::vector<int64_t> m;
    std::vector<double> given;
    for (const auto& e : split(x, ',')) {
      given.push_back(number(e, spec));
      m.push_back(epochs(e));
    }
    // Out of order or repeated milestones are a typo (a repeat would apply the factor twice).
    for (size_t i = 1; i < given.size(); ++i) {
      if (!(given[i] > given[i - 1])) {
        throw Error("the milestones of schedule '" + spec + "' are not in increasing order",
                    "list each epoch once, in order, e.g. step:30,60,80:0.1");
      }
    }
    return m;
  };
  if (name == "constant" && parts.size() == 1) {
    s.kind = Schedule::Constant;
  } else if (name == "onecycle" && parts.size() == 1) {
    s.kind = Schedule::OneCycle;
  } else if (name == "cosine" && parts.size() == 1) {
    s.kind = Schedule::Cosine;
  } else if (name == "linear-warmup" && parts.size() == 2) {
    s.kind = Schedule::LinearWarmup;
    s.warmup = epochs(parts[1]);
  } else if (name == "step" && parts.size() == 3) {
    s.kind = Schedule::Step;
    s.milestones = milestones(parts[1]);
    s.factor = number(parts[2], spec);
  } else if (name == "warmup-step" && parts.size() == 4) {
    s.kind = Schedule::Step;
    s.warmup = epochs(parts[1]);
    s.milestones = milestones(parts[2]);
    s.factor = number(parts[3], spec);
  } else {
    throw Error("unknown schedule '" + spec + "'",
                "accepted: constant, onecycle, cosine, linear-warmup:W, step:E1,E2:F, "
                "warmup-step:W:E1,E2:F (W, E in epochs)");
  }
  return s;
}

}  // namespace demp::train
