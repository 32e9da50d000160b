#pragma once
// Demon Pruning (DEMP.md): scheduled regulariser, noise on live parameters, removal of dead
// units during training. The pieces are free functions so that other methods and tests use the
// same code.
#include <torch/types.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "demp/methods/method.h"
#include "demp/methods/selection.h"
#include "demp/prune/surgery.h"
#include "demp/train/schedule.h"

namespace demp::nn {
class Model;
struct Arch;
}  // namespace demp::nn
namespace demp::train {
class Optimizer;
}

namespace demp::methods {

/// The regulariser term (without λ): "l1-gamma" Σ|γ| over every norm scale, "relu-sq"
/// ½Σmax(θ,0)², "l1" Σ|θ|, "l2" ½Σθ² over all parameters. Throws demp::Error if unknown.
/// `scale_weights` (l1-gamma only; empty: all 1): Σ_l w_l Σ|γ_l| per norm layer, in
/// model.norm_scales() order (--l1-cost).
torch::Tensor regularizer(const std::string& kind, const nn::Model& model,
                          const std::vector<double>& scale_weights = {});

/// --l1-cost (ours, after MorphNet's resource-weighted L1, Gordon et al. 2018): how DemP's L1
/// weighs the units. None: every γ alike (the paper's).
enum class L1Cost { None, Flops, Params };
/// "none" | "flops" | "params"; throws demp::Error for another name.
L1Cost parse_l1_cost(const std::string& s);
const char* l1_cost_name(L1Cost c);
/// One weight per norm layer (model.norm_scales() order) for the L1 on its γ. Flops / Params: the
/// FLOPs per image / parameters that one unit of the layer's output group costs at the current
/// widths (what the measure loses when the group loses a unit), divided by the mean over all
/// prunable units, so that λ keeps its scale and costly units are pushed harder. None: empty.
std::vector<double> l1_cost_weights(const nn::Arch& a, L1Cost cost);

enum class NoiseMask { Live, All, Off };
NoiseMask parse_noise_mask(const std::string& s);

/// θ ← θ + σ·ξ ⊙ 1[g ≠ 0] (Live) or θ + σ·ξ (All), ξ ~ N(0, 1) from `gen`, elementwise, in
/// parameter space (not scaled by a learning rate, not seen by the optimizer).
void add_noise(std::vector<torch::Tensor>& params, double sigma, NoiseMask mask, torch::Generator& gen);
/// The CPU training step's noise: the same distribution, drawn in blocks of each parameter's
/// memory with a generator per (seed, step, parameter, block), on all intra-op threads: the
/// numbers depend on (seed, step) only. Parameters that are not dense float32 on the CPU fall
/// back to add_noise with the (seed, step) generator. fast: each block draws from a FastNormal
/// (ziggurat, common/normal.h) instead of LibTorch's randn (--noise-rng fast): the same
/// distribution, other numbers, several times cheaper.
void add_noise_blocked(std::vector<torch::Tensor>& params, double sigma, NoiseMask mask, uint64_t seed,
                       uint64_t step, bool fast = false);
/// The same with σ a 0-dim tensor and ξ drawn on the parameters' device from `gen` (a generator
/// of that device): no host work, so it can be captured in a CUDA graph.
void add_noise(std::vector<torch::Tensor>& params, const torch::Tensor& sigma, NoiseMask mask,
               torch::Generator& gen);

/// Metrics fields of a scan: dead_units, dead_units_per_group, quasi_dead.
nlohmann::json scan_metrics(const nn::Model& model, const prune::ScanResult& scan);

/// Units of every group that a proximal L1 step has switched off: all BatchNorm producers of the
/// unit have γ exactly 0 and every residual path into it comes from such a unit. With the
/// constant-unit shrink these die (β reaches 0) and the next scan removes them; the size
/// controller counts them as gone. Undefined for groups that cannot go this way.
std::vector<torch::Tensor> zero_scale_units(const nn::Model& model);

/// The proximal L1 step on norm scales (ours, DEMP.md "promising extensions"):
/// γ ← sign γ · max(|γ| − τ, 0) with τ = lr·λ/(√v̂ + ε) under AdamW (v̂ Adam's bias-corrected second
/// moment of γ's gradient, `v_correction` = 1 − β₂^t) and τ = lr·λ under SGD/SGDW. With
/// `shrink_beta`, units whose γ is then exactly 0 and whose β > 0 (they output the constant β)
/// have β ← max(β − τ_β, 0) at rate λ_β, so that they die. Only device work: graph-safe.
/// A scale that was 0 before the optimizer step (`was_zero`, per norm layer as
/// zero_scale_masks gives them; empty: none) is thresholded at λ_β instead of λ, so that units
/// once switched off stay off while they die, also when λ falls (a controller holding a target).
void proximal_l1_step(nn::Model& model, train::Optimizer& opt, const torch::Tensor& lr,
                      const torch::Tensor& lambda, const torch::Tensor& lambda_beta,
                      const torch::Tensor& v_correction, bool shrink_beta,
                      const std::vector<torch::Tensor>& was_zero = {}, bool cpu_loop = true,
                      const std::vector<double>& scale_weights = {});
/// cpu_loop=false forces the tensor-op form (the one a GPU graph captures) on the CPU too: the
/// tests compare the two. `scale_weights` (l1_cost_weights; empty: all 1) multiply λ per norm
/// layer (not λ_β).
/// Per norm layer (model.norm_scales() order): γ == 0.
std::vector<torch::Tensor> zero_scale_masks(const nn::Model& model);

/// --target-plan: the path of the size target (planned_fall).
enum class TargetPlan { Cosine, Cubic };

/// DemP's own options (declared in demp.cpp, group "demp"; defaults and checks there), and the
/// pruning options it shares with the baselines.
struct DempOptions {
  double lambda = 0;  ///< --lambda: peak λ* (with a target: the controller's starting value)
  std::string l1_step, constant_units;  ///< --l1-step prox|loss, --constant-units shrink|keep
  int64_t lambda_span = 0;              ///< --lambda-span (0: 87% of the run)
  std::string lambda_schedule, regularizer;
  L1Cost l1_cost = L1Cost::None;  ///< --l1-cost none|flops|params (ours)
  TargetPlan target_plan = TargetPlan::Cosine;  ///< --target-plan cosine|cubic
  double noise = 0;  ///< --noise: peak σ
  std::string noise_mask, noise_rng;
  int64_t check_size = 0, check_batch = 0;  ///< the dead-unit scan's images and batch
  double dead_eps = 0;
  PruneOptions prune;
};
/// Reads them from a run's configuration; throws demp::Error on a bad value.
DempOptions demp_options(const train::TrainConfig& cfg);
/// The size target's plan: the share of the way from 1 to the target still ahead at fraction x of
/// the approach (--target-by): cosine ½(1 + cos πx), cubic (1 − x)³ (cubic_fall); 1 at x ≤ 0, 0 at x ≥ 1.
double planned_fall(TargetPlan plan, double x);

/// The shared dead-unit scan of a training run: fresh check-set images for scan `index`
/// (--check-size of them, in batches of --check-batch), per-group dead masks at --dead-eps and
/// quasi-dead counts at 1e-5, 1e-4, 1e-3, 1e-2.
prune::ScanResult scan_check_set(train::TrainContext& ctx, int64_t index, const DempOptions& o);

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
  void after_backward(train::TrainContext& ctx) override;
  void after_step(train::TrainContext& ctx) override;
  nlohmann::json metrics(train::TrainContext& ctx) override;
  nlohmann::json state() const override;
  void load_state(const nlohmann::json& s) override;

  int64_t span() const { return span_; }
  int64_t prune_every() const { return every_; }
  /// The size measure the target follows, as a fraction of the initial network, counting the
  /// units switched off by the proximal step as gone.
  double projected_fraction(const nn::Model& model) const;

 private:
  void control(train::TrainContext& ctx);
  double measure(const nn::Arch& a) const;

  DempOptions o_;
  NoiseMask mask_;
  bool remove_ = true;
  bool prox_ = false;         ///< --l1-step prox with the l1-gamma regulariser
  bool shrink_beta_ = false;  ///< --constant-units shrink (with prox_)
  int64_t span_ = 0, every_ = 0;
  int64_t multiple_ = 1;                             ///< --width-multiple
  nlohmann::json state_ = nlohmann::json::object();  ///< last scan, collapsed groups
  train::Schedule lambda_sched_, sigma_sched_;
  double lambda_now_ = 0, sigma_now_ = 0, lambda_beta_now_ = 0;
  double lambda_max_ = 0;  ///< largest scheduled λ so far (the constant-unit shrink's rate)
  // size target (--target-*): which measure, the fraction, and the controller's state
  std::string target_kind_;
  double target_ = 0;
  double measure0_ = 1;
  int64_t control_every_ = 1;  ///< steps between the controller's updates (sets its gain)
  int64_t target_end_ = 1;
  double lambda_ctl_ = 0;  ///< the controller's λ (held while the size is at the target)
  bool holding_ = false;
  int64_t reached_step_ = -1;
  int64_t zeros_after_scan_ = 0;  ///< scales at 0 right after the last removal (target mode)
  double last_projected_ = 1, last_planned_ = 1;
  torch::Tensor lambda_t_, sigma_t_, lambda_beta_t_, vcorr_t_;  ///< 0-dim on the model's device
  torch::Generator device_gen_;          ///< the noise's generator on a GPU, reseeded every step
  std::vector<torch::Tensor> was_zero_;  ///< γ == 0 before this step's update (prox)
  std::vector<double> cost_w_;           ///< --l1-cost weights per norm layer (empty: none)
  int64_t cost_units_ = -1;              ///< the network's units when cost_w_ was computed
};

}  // namespace demp::methods
