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

std::unique_ptr<Method> make_dense(const train::TrainConfig&) { return std::make_unique<Dense>(); }
std::unique_ptr<Method> make_demp(const train::TrainConfig& cfg) { return std::make_unique<Demp>(cfg, true); }
std::unique_ptr<Method> make_scan(const train::TrainConfig& cfg) { return std::make_unique<Demp>(cfg, false); }

}  // namespace

const std::vector<MethodInfo>& registry() {
  static const std::vector<MethodInfo> methods = {
      {"dense", "plain training, the reference", make_dense},
      {"demp", "Demon Pruning: L1 on norm scales, noise on live units, dead units removed", make_demp},
      {"scan", "dense training with DemP's dead-unit scans logged, nothing removed", make_scan},
      {"slimming", "Network Slimming: L1 on BN scales, one global |gamma| cut, fine-tuning", make_slimming},
      {"snap", "SNAP (structured SNIP): one-shot gradient-saliency cut at --prune-at", make_snap},
      {"crop", "CroP-it: iterative Hessian-gradient cut at initialisation", make_crop},
      {"earlycrop", "EarlyCroP: CroP-it's cut once the weights' drift settles", make_earlycrop},
      {"l1norm", "L1-norm filter pruning: gradual, per-layer ratio, smallest filters first", make_l1norm},
      {"random", "random structured pruning, per-layer ratio: the floor", make_random},
      {"gradual", "gradual pruning during training (cubic schedule, global BN-scale or magnitude ranking)",
       make_gradual},
  };
  return methods;
}

std::string method_names() {
  std::string out;
  for (const auto& m : registry()) out += (out.empty() ? "" : ", ") + m.name;
  return out;
}

std::string method_help() {
  std::string out;
  for (const auto& m : registry()) out += "\n  " + m.name + ": " + m.help;
  return out;
}

std::unique_ptr<Method> make_method(const train::TrainConfig& cfg) {
  for (const auto& m : registry()) {
    if (m.name == cfg.method) return m.make(cfg);
  }
  throw Error("unknown method '" + cfg.method + "'", "use one of: " + method_names());
}

}  // namespace demp::methods
