#pragma once
// Demon Pruning (DEMP.md): scheduled regulariser, noise on live parameters, removal of dead
// units during training. The pieces are free functions so that other methods and tests use the
// same code.
#include <torch/types.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "demp/methods/method.h"
#include "demp/prune/surgery.h"
#include "demp/train/schedule.h"

namespace demp::nn { class Model; }

namespace demp::methods {

/// The regulariser term (without λ): "l1-gamma" Σ|γ| over every norm scale, "relu-sq"
/// ½Σmax(θ,0)², "l1" Σ|θ|, "l2" ½Σθ² over all parameters. Throws demp::Error if unknown.
torch::Tensor regularizer(const std::string& kind, const nn::Model& model);

enum class NoiseMask { Live, All, Off };
NoiseMask parse_noise_mask(const std::string& s);

/// θ ← θ + σ·ξ ⊙ 1[g ≠ 0] (Live) or θ + σ·ξ (All), ξ ~ N(0, 1) from `gen`, elementwise, in
/// parameter space (not scaled by a learning rate, not seen by the optimizer).
void add_noise(std::vector<torch::Tensor>& params, double sigma, NoiseMask mask, torch::Generator& gen);
/// The same with σ a 0-dim tensor and ξ drawn on the parameters' device from `gen` (a generator
/// of that device): no host work, so it can be captured in a CUDA graph.
void add_noise(std::vector<torch::Tensor>& params, const torch::Tensor& sigma, NoiseMask mask,
               torch::Generator& gen);

/// The shared dead-unit scan of a training run: fresh check-set images for scan `index`,
/// per-group dead masks at ε and quasi-dead counts at 1e-5, 1e-4, 1e-3, 1e-2.
prune::ScanResult scan_check_set(train::TrainContext& ctx, int64_t index);
/// Metrics fields of a scan: dead_units, dead_units_per_group, quasi_dead.
nlohmann::json scan_metrics(const nn::Model& model, const prune::ScanResult& scan);

class Demp : public Method {
 public:
  /// remove=false: the "scan" method of the dying-neuron study (regulariser and noise as
  /// configured, dead-unit scans at the prune points, but nothing is removed).
  Demp(const train::TrainConfig& cfg, bool remove = true);
  std::string name() const override { return remove_ ? "demp" : "scan"; }
  void begin(train::TrainContext& ctx) override;
  void prune_point(train::TrainContext& ctx) override;
  bool graph_safe() const override { return true; }
  void before_step(train::TrainContext& ctx) override;
  std::vector<at::Generator> step_generators() override;
  torch::Tensor extra_loss(train::TrainContext& ctx) override;
  void after_step(train::TrainContext& ctx) override;
  nlohmann::json metrics(train::TrainContext& ctx) override;
  nlohmann::json state() const override { return state_; }
  void load_state(const nlohmann::json& s) override { state_ = s; }

  int64_t span() const { return span_; }
  int64_t prune_every() const { return every_; }

 private:
  std::string regularizer_;
  NoiseMask mask_;
  bool remove_ = true;
  int64_t span_ = 0, every_ = 0;
  nlohmann::json state_ = nlohmann::json::object();  ///< last scan, collapsed groups
  train::Schedule lambda_sched_, sigma_sched_;
  double lambda_now_ = 0, sigma_now_ = 0;
  torch::Tensor lambda_t_, sigma_t_;  ///< the same, 0-dim on the model's device
  torch::Generator device_gen_;       ///< the noise's generator on a GPU, reseeded every step
};

}  // namespace demp::methods
