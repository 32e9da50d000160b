#include <fmt/format.h>

#include "demp/common/error.h"
#include "demp/methods/baselines.h"
#include "demp/methods/demp.h"
#include "demp/methods/method.h"
#include "demp/train/config.h"

namespace demp::methods {
namespace {

/// Plain training: no extra loss, no removal. The reference every method is compared with.
class Dense : public Method {
 public:
  std::string name() const override { return "dense"; }
  bool graph_safe() const override { return true; }  // no step hooks
};

}  // namespace

std::unique_ptr<Method> make_method(const train::TrainConfig& cfg) {
  if (cfg.method == "dense") return std::make_unique<Dense>();
  if (cfg.method == "demp") return std::make_unique<Demp>(cfg, /*remove=*/true);
  if (cfg.method == "scan") return std::make_unique<Demp>(cfg, /*remove=*/false);
  if (cfg.method == "slimming") return make_slimming(cfg);
  if (cfg.method == "snap") return make_snap(cfg);
  if (cfg.method == "crop") return make_crop(cfg);
  if (cfg.method == "earlycrop") return make_earlycrop(cfg);
  if (cfg.method == "l1norm") return make_l1norm(cfg);
  if (cfg.method == "random") return make_random(cfg);
  if (cfg.method == "gradual") return make_gradual(cfg);
  throw Error("unknown method '" + cfg.method + "'",
              "use one of: dense, demp, scan, slimming, snap, crop, earlycrop, l1norm, random, gradual");
}

}  // namespace demp::methods
