#include <fmt/format.h>

#include "demp/common/error.h"
#include "demp/methods/demp.h"
#include "demp/methods/method.h"
#include "demp/train/config.h"

namespace demp::methods {
namespace {

/// Plain training: no extra loss, no removal. The reference every method is compared with.
class Dense : public Method {
 public:
  std::string name() const override { return "dense"; }
};

}  // namespace

std::unique_ptr<Method> make_method(const train::TrainConfig& cfg) {
  if (cfg.method == "dense") return std::make_unique<Dense>();
  if (cfg.method == "demp") return std::make_unique<Demp>(cfg);
  throw Error("unknown method '" + cfg.method + "'", "use one of: dense, demp");
}

}  // namespace demp::methods
