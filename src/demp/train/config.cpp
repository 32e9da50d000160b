#include "demp/train/config.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "demp/common/error.h"
#include "demp/data/dataset.h"
#include "demp/nn/arch.h"
#include "demp/train/schedule.h"

namespace demp::train {

std::vector<Field> fields(TrainConfig& c) {
  return {
      {"model", "network: mlp, vgg16, resnet18, resnet50", &c.model, "model"},
      {"width", "width multiplier on every hidden layer", &c.width, "model"},
      {"mlp-widths", "MLP hidden widths before the multiplier, comma-separated", &c.mlp_widths, "model"},
      {"stem",
       "ResNet stem: auto (resnet18: cifar, resnet50: imagenet), cifar (3x3, no max-pool) "
       "or imagenet (torchvision's 7x7 stride 2 + max-pool)",
       &c.stem, "model"},
      {"arch", "architecture file (JSON, docs/architecture.md) instead of --model", &c.arch, "model"},
      {"init",
       "start from this checkpoint's network and weights (e.g. from demp import) instead of "
       "a fresh --model or --arch",
       &c.init, "model"},
      {"data",
       "data set: fashion-mnist, fashion-mnist:DIR, mnist:DIR, cifar10:DIR, cifar100:DIR, "
       "imagefolder:DIR or imagenet:DIR (DIR/train/<class>/*.jpg|png and DIR/val/<class>/; "
       "streamed from disk)",
       &c.data, "data"},
      {"augment",
       "augmentation: auto (crop+flip on CIFAR and image folders, none otherwise), none, "
       "flip, crop, crop-flip (image folders: crop is the random-resized crop; without "
       "it training uses the evaluation transform)",
       &c.augment, "data"},
      {"val-size", "training images held out for validation (0: none)", &c.val_size, "data"},
      {"train-limit", "use only the first N training images (0: all)", &c.train_limit, "data"},
      {"test-limit", "use only the first N test images (0: all)", &c.test_limit, "data"},
      {"image-size", "image folders: training and evaluation crops are N x N pixels", &c.image_size,
       "images"},
      {"crop-scale",
       "image folders: the random-resized crop's area fraction range MIN,MAX (aspect "
       "ratio 3/4 to 4/3, torchvision's algorithm)",
       &c.crop_scale, "images"},
      {"eval-crop",
       "image folders: evaluation resizes the shorter side to image-size/eval-crop "
       "(224/0.875 = 256), then centre-crops image-size",
       &c.eval_crop, "images"},
      {"bad-images",
       "image folders: a corrupt, truncated, empty or non-JPEG/PNG file is an error "
       "naming it (error), or left out and counted in the summary (skip: the next "
       "good image of the list takes its place)",
       &c.bad_images, "images"},
      {"decode-threads",
       "image folders: decode threads (0: the cores --threads leaves free, at "
       "least 1)",
       &c.decode_threads, "images"},
      {"prefetch", "image folders: training batches decoded ahead (the bounded prefetch queue)", &c.prefetch,
       "images"},
      {"epochs", "training length in epochs (ignored when --steps > 0)", &c.epochs, "training"},
      {"steps", "training length in optimizer steps (0: use --epochs)", &c.steps, "training"},
      {"batch-size", "training batch size", &c.batch_size, "training"},
      {"optimizer", "sgd (PyTorch-style, decay in the gradient), sgdw (decoupled decay), adamw", &c.optimizer,
       "training"},
      {"lr", "peak learning rate", &c.lr, "training"},
      {"lr-schedule",
       "constant | onecycle | cosine | linear-warmup:W | step:E1,E2:F | warmup-step:W:E1,E2:F "
       "(W, E in epochs; F the factor)",
       &c.lr_schedule, "training"},
      {"weight-decay", "weight decay (decoupled for sgdw and adamw)", &c.weight_decay, "training"},
      {"momentum", "momentum of sgd and sgdw", &c.momentum, "training"},
      {"label-smoothing", "label smoothing of the cross-entropy", &c.label_smoothing, "training"},
      {"method",
       "training/pruning method: dense, demp or a baseline (`demp train --help` lists them with a "
       "line each)",
       &c.method, "method"},
      {"lambda",
       "DemP: peak λ* of the regulariser's strength λ(t) (with a size target: the "
       "controller's starting value)",
       &c.lambda, "demp"},
      {"l1-step",
       "DemP: how the L1 on norm scales acts: prox (ours: a proximal soft-threshold step on γ after "
       "the optimizer, in Adam's metric lr·λ/(√v̂+ε) for adamw, lr·λ for sgd/sgdw; λΣ|γ| leaves the "
       "loss) or loss (the paper's: λΣ|γ| in the loss)",
       &c.l1_step, "demp"},
      {"constant-units",
       "DemP: units whose γ is exactly 0 output the constant β: shrink (ours: β>0 shrinks to 0 at the "
       "proximal rate, so the unit dies and is removed) or keep (the paper's: left as they are)",
       &c.constant_units, "demp"},
      {"target-params",
       "fraction of the parameters to keep (0: off). DemP: λ(t) is then driven by feedback on the "
       "network's size instead of following --lambda-schedule, and DemP still decides where units "
       "die; baselines: their cut reaches this size instead of --density",
       &c.target_params, "demp"},
      {"target-flops", "fraction of the FLOPs per image to keep, as --target-params (0: off)",
       &c.target_flops, "demp"},
      {"target-units", "fraction of the units to keep, as --target-params (0: off)", &c.target_units, "demp"},
      {"target-by",
       "DemP: fraction of the run by which a size target is to be reached (the planned size falls "
       "along a cosine from 1 to the target until then, and is held after); gradual: the default "
       "of --prune-at",
       &c.target_by, "demp"},
      {"lambda-span", "DemP: steps S over which λ(t) and σ(t) run their shape (0: 87% of the run)",
       &c.lambda_span, "demp"},
      {"lambda-schedule",
       "DemP: shape of λ(t) and σ(t): onecycle, constant, cosine, linear-warmup:W (W in epochs)",
       &c.lambda_schedule, "demp"},
      {"regularizer",
       "DemP: l1-gamma (λΣ|γ| over norm scales), relu-sq (λ½Σmax(θ,0)²), l1 (λΣ|θ|), l2 (λ½Σθ²)",
       &c.regularizer, "demp"},
      {"noise", "DemP: peak σ of the noise added after each step (0: none)", &c.noise, "demp"},
      {"noise-mask", "DemP: where noise goes: live (gradient ≠ 0), all, off", &c.noise_mask, "demp"},
      {"noise-rng",
       "DemP on the CPU: the noise's generator: torch (LibTorch's randn, one mt19937 per block) or "
       "fast (ours: a ziggurat on splitmix64, the same N(0, σ²), several times cheaper, other "
       "numbers)",
       &c.noise_rng, "demp"},
      {"prune-every", "steps K between dead-unit removals (0: 5% of the run)", &c.prune_every, "demp"},
      {"prune-after",
       "first step at which dead-unit scans remove units (not before BatchNorm's running "
       "statistics describe the network: at step 0 they are (0, 1) and the eval-mode test flags "
       "units that are live on half of every batch; step 0 is never scanned)",
       &c.prune_after, "demp"},
      {"check-size", "training images in each dead-unit scan", &c.check_size, "demp"},
      {"check-batch", "batch size of the dead-unit scan", &c.check_batch, "demp"},
      {"dead-eps", "a unit is dead when its summed output is <= this in every scan batch", &c.dead_eps,
       "demp"},
      {"width-multiple",
       "keep each layer's width a multiple of this — DemP: the most active dead units fill up (the "
       "output is unchanged); baselines: their best-scored units beyond the cut fill up (counted "
       "in a size target). 8 makes pruned networks fast on CPUs; 1: exact counts",
       &c.width_multiple, "demp"},
      {"density",
       "baselines: fraction of the units kept at the end (global for slimming, snap, "
       "crop, earlycrop; per layer for l1norm, random)",
       &c.density, "baselines"},
      {"prune-at",
       "baselines: the step by which the method has reached --density, the same for every "
       "baseline: its one cut (slimming, default 50% of the run; snap, crop, random, default 0 = "
       "at initialisation), the last of its gradual cuts (l1norm, default 50%; gradual, default "
       "--target-by of the run), or the latest step of its trigger (earlycrop, default 50%); -1: "
       "the method's default",
       &c.prune_at, "baselines"},
      {"score-batches", "baselines: training batches summed into SNAP/CroP scores", &c.score_batches,
       "baselines"},
      {"crop-steps", "baselines: sub-steps of the iterative CroP-it/EarlyCroP pruning", &c.crop_steps,
       "baselines"},
      {"gradual-score",
       "gradual: the global ranking: gamma (BatchNorm |γ|) or magnitude (each unit's filter L1 "
       "norm over its layer's mean); it prunes every --prune-every steps (default 2% of the run) "
       "from --prune-after to --prune-at along Zhu & Gupta's cubic schedule",
       &c.gradual_score, "baselines"},
      {"seed", "seed of initialisation, data order, augmentation and noise", &c.seed, "run"},
      {"device", "cpu, cuda, cuda:N or auto", &c.device, "run"},
      {"precision", "auto (bf16 on CUDA, fp32 on CPU), bf16 (autocast) or fp32", &c.precision, "run"},
      {"graph",
       "auto (on for CUDA), on, off: capture the training step as a CUDA graph, "
       "re-captured after every prune event",
       &c.graph, "run"},
      {"threads", "CPU threads for LibTorch (0: all cores)", &c.threads, "run"},
      {"out", "run directory (default: runs/<date>-<model>-<method>)", &c.out, "run"},
      {"resume", "continue the run in --out from its checkpoint", &c.resume, "run"},
      {"overwrite", "replace a finished or different run in --out", &c.overwrite, "run"},
      {"stop-after", "stop (with a checkpoint) after this global step; --resume continues", &c.stop_after,
       "run"},
      {"checkpoint-every",
       "also write the checkpoint every N steps (0: only at epoch ends, --stop-after, an "
       "interruption and the end)",
       &c.checkpoint_every, "run"},
      {"log-every", "steps between metrics lines", &c.log_every, "run"},
      {"eval-batch-size", "batch size of evaluation and scans", &c.eval_batch_size, "run"},
      {"progress", "auto (bar on a terminal, lines otherwise), bar, plain, none", &c.progress, "run"},
      {"tensorboard", "also write the metrics as TensorBoard events files into this directory (\"\": none)",
       &c.tensorboard, "run"},
      {"nproc",
       "start N local ranks of a data-parallel run (0: one process, or the ranks "
       "torchrun's RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT describe)",
       &c.nproc, "data-parallel"},
      {"dist-timeout",
       "seconds a rank waits for its peers (rendezvous, every collective) before "
       "the run ends with an error",
       &c.dist_timeout, "data-parallel"},
      {"sync-bn",
       "data-parallel: BatchNorm statistics over the whole global batch (all ranks) "
       "instead of each rank's slice",
       &c.sync_bn, "data-parallel"},
  };
}

void apply_json(TrainConfig& c, const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + " must hold a JSON object", "see recipes/ for examples");
  auto fs = fields(c);
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "config") {
      throw Error("key 'config' in " + source + ": a config file cannot name another one",
                  "merge the two files, or give the other one with --config");
    }
    auto f = std::find_if(fs.begin(), fs.end(), [&](const Field& x) { return x.name == it.key(); });
    if (f == fs.end()) {
      throw Error(fmt::format("unknown key '{}' in {}", it.key(), source),
                  "keys are the long flag names of 'demp train --help'");
    }
    const auto& v = it.value();
    try {
      std::visit(
          [&](auto* p) {
            using T = std::remove_pointer_t<decltype(p)>;
            if constexpr (std::is_same_v<T, int64_t>) {
              if (!v.is_number_integer()) throw std::invalid_argument("an integer");
              if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
                throw std::invalid_argument("an integer below 2^63");
              }
            } else if constexpr (std::is_same_v<T, double>) {
              if (!v.is_number()) throw std::invalid_argument("a number");
            } else if constexpr (std::is_same_v<T, bool>) {
              if (!v.is_boolean()) throw std::invalid_argument("true or false");
            } else {
              if (!v.is_string()) throw std::invalid_argument("a string");
            }
            *p = v.get<T>();
          },
          f->ptr);
    } catch (const std::invalid_argument& e) {
      throw Error(fmt::format("key '{}' in {} must be {}, got {}", it.key(), source, e.what(), v.dump()),
                  "see 'demp train --help' for the option's type");
    }
  }
}

nlohmann::json to_json(const TrainConfig& c) {
  TrainConfig copy = c;
  nlohmann::json j = nlohmann::json::object();
  for (const auto& f : fields(copy)) {
    std::visit([&](auto* p) { j[f.name] = *p; }, f.ptr);
  }
  return j;
}

std::string value_string(const Field& f) {
  return std::visit(
      [](auto* p) -> std::string {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return *p;
        } else if constexpr (std::is_same_v<T, bool>) {
          return *p ? "true" : "false";
        } else {
          return fmt::format("{}", *p);
        }
      },
      f.ptr);
}

void validate(const TrainConfig& c) {
  auto positive = [](int64_t v, const char* name) {
    if (v <= 0) throw Error(fmt::format("--{} must be positive, got {}", name, v), "give a number >= 1");
  };
  positive(c.batch_size, "batch-size");
  positive(c.log_every, "log-every");
  positive(c.eval_batch_size, "eval-batch-size");
  positive(c.dist_timeout, "dist-timeout");
  if (c.nproc < 0) throw Error("--nproc must be >= 0", "give the number of local ranks, e.g. --nproc 2");
  if (c.steps < 0) throw Error("--steps must be >= 0", "0: the length comes from --epochs");
  if (c.steps == 0 && c.epochs <= 0) {
    throw Error("the run has no length", "give --epochs N or --steps N");
  }
  if (!(c.lr > 0) || !std::isfinite(c.lr)) {
    throw Error(fmt::format("--lr must be positive and finite, got {}", c.lr), "e.g. --lr 0.002");
  }
  if (c.weight_decay < 0) throw Error("--weight-decay must be >= 0", "e.g. --weight-decay 5e-4");
  if (!(c.label_smoothing >= 0) || c.label_smoothing >= 1) {
    throw Error("--label-smoothing must be in [0, 1)", "e.g. --label-smoothing 0.1 (0: none)");
  }
  if (c.decode_threads < 0 || c.prefetch < 1) {
    throw Error("--decode-threads must be >= 0 and --prefetch >= 1",
                "e.g. --decode-threads 0 (auto) --prefetch 4");
  }
  if (c.bad_images != "error" && c.bad_images != "skip") {
    throw Error("unknown --bad-images '" + c.bad_images + "'", "use error or skip");
  }
  if (c.val_size < 0 || c.train_limit < 0 || c.test_limit < 0 || c.threads < 0 || c.stop_after < 0) {
    throw Error("--val-size, --train-limit, --test-limit, --threads and --stop-after must be >= 0",
                "0 means: none / all / off");
  }
  for (const auto& [name, value, allowed] : {std::tuple<const char*, std::string, std::vector<std::string>>{
                                                 "precision", c.precision, {"auto", "bf16", "fp32"}},
                                             {"graph", c.graph, {"auto", "on", "off"}}}) {
    if (std::find(allowed.begin(), allowed.end(), value) == allowed.end()) {
      throw Error(std::string("unknown --") + name + " '" + value + "'",
                  "use " + allowed[0] + ", " + allowed[1] + " or " + allowed[2]);
    }
  }
  // Schedules are read in full once the run's length is known; their spelling is checked now, so
  // that a typo ends the run before a rendezvous or a data set load.
  parse_schedule(c.lr_schedule, c.lr, 1000, 10);
  const std::vector<std::string> progress = {"auto", "bar", "plain", "none"};
  if (std::find(progress.begin(), progress.end(), c.progress) == progress.end()) {
    throw Error("unknown --progress '" + c.progress + "'", "use auto, bar, plain or none");
  }
  if (!(c.lambda >= 0) || !(c.noise >= 0) || !(c.dead_eps >= 0) || !std::isfinite(c.lambda) ||
      !std::isfinite(c.noise) || !std::isfinite(c.dead_eps)) {
    throw Error(fmt::format("--lambda, --noise and --dead-eps must be finite and >= 0, got {}, {}, {}",
                            c.lambda, c.noise, c.dead_eps),
                "e.g. --lambda 0.01 --noise 5e-5 --dead-eps 0");
  }
  if (c.lambda_span < 0 || c.prune_every < 0 || c.prune_after < 0) {
    throw Error("--lambda-span, --prune-every and --prune-after must be >= 0", "0 means: the default");
  }
  if (c.l1_step != "prox" && c.l1_step != "loss") {
    throw Error("unknown --l1-step '" + c.l1_step + "'",
                "use prox (a proximal step on γ, ours) or loss (λΣ|γ| in the loss, the paper's)");
  }
  if (c.constant_units != "shrink" && c.constant_units != "keep") {
    throw Error("unknown --constant-units '" + c.constant_units + "'",
                "use shrink (ours) or keep (the paper's)");
  }
  int targets = 0;
  for (const auto& [name, v] : {std::pair<const char*, double>{"target-params", c.target_params},
                                {"target-flops", c.target_flops},
                                {"target-units", c.target_units}}) {
    if (!(v >= 0) || v >= 1) {
      throw Error(fmt::format("--{} must be in (0, 1), or 0 for off; got {}", name, v),
                  "the fraction kept, e.g. 0.1 for 10%");
    }
    if (v > 0) ++targets;
  }
  if (targets > 1) {
    throw Error("more than one of --target-params, --target-flops, --target-units",
                "give one target: the controller follows one measure");
  }
  if (!(c.target_by > 0) || c.target_by > 1) {
    throw Error(fmt::format("--target-by must be in (0, 1], got {}", c.target_by),
                "the fraction of the run by which the target is reached, e.g. 0.3");
  }
  positive(c.check_size, "check-size");
  positive(c.score_batches, "score-batches");
  positive(c.width_multiple, "width-multiple");
  positive(c.crop_steps, "crop-steps");
  if (!(c.density > 0) || c.density > 1) {
    throw Error(fmt::format("--density must be in (0, 1], got {}", c.density),
                "the fraction of units kept, e.g. --density 0.25");
  }
  if (c.prune_at < -1)
    throw Error("--prune-at must be >= 0, or -1 for the default", "a step number, e.g. --prune-at 500");
  if (c.noise_rng != "torch" && c.noise_rng != "fast") {
    throw Error("unknown --noise-rng '" + c.noise_rng + "'", "use torch or fast");
  }
  if (c.gradual_score != "gamma" && c.gradual_score != "magnitude") {
    throw Error("unknown --gradual-score '" + c.gradual_score + "'", "use gamma or magnitude");
  }
  positive(c.check_batch, "check-batch");
  if (c.resume && c.overwrite) {
    throw Error("--resume and --overwrite contradict each other", "choose one");
  }
  // Values that used to be accepted and failed (or did nothing) only after work had been done.
  if (!(c.momentum >= 0) || !(c.momentum < 1)) {
    throw Error(fmt::format("--momentum must be in [0, 1), got {}", c.momentum),
                "e.g. --momentum 0.9 (0: none)");
  }
  if (!std::isfinite(c.weight_decay)) {
    throw Error(fmt::format("--weight-decay must be finite, got {}", c.weight_decay),
                "e.g. --weight-decay 5e-4");
  }
  if (!std::isfinite(c.width)) {
    throw Error(fmt::format("--width must be finite, got {}", c.width), "e.g. --width 0.25");
  }
  if (c.seed < 0) {
    throw Error(fmt::format("--seed must be >= 0, got {}", c.seed), "seeds are 0 .. 2^63-1");
  }
  if (c.checkpoint_every < 0) {
    throw Error("--checkpoint-every must be >= 0", "0: checkpoints at epoch ends only");
  }
  if (c.epochs < 0) throw Error("--epochs must be >= 0", "give --epochs N or --steps N");
  const int64_t cores = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()));
  if (c.threads > 4 * cores) {
    throw Error(fmt::format("--threads {} is more than 4x this machine's {} cores", c.threads, cores),
                fmt::format("use at most {} (0: all cores)", cores));
  }
  if (c.nproc > 1 && (c.device == "cpu" || c.device == "auto") && c.nproc > cores) {
    throw Error(fmt::format("--nproc {} is more ranks than this machine's {} cores", c.nproc, cores),
                fmt::format("on the CPU each rank needs a core: use --nproc {} or fewer", cores));
  }
  if (c.dist_timeout > 7 * 24 * 3600) {
    throw Error(fmt::format("--dist-timeout {} s is longer than a week", c.dist_timeout),
                "give seconds, e.g. --dist-timeout 300");
  }
  auto given = [&](const char* n) { return std::find(c.given.begin(), c.given.end(), n) != c.given.end(); };
  // The network comes from one place: --model (with its options), --arch, or --init.
  if (!c.arch.empty() || !c.init.empty()) {
    const char* source = !c.init.empty() ? "--init" : "--arch";
    if (!c.arch.empty() && !c.init.empty()) {
      throw Error("--arch and --init both give the network",
                  "use one: --init takes the architecture from its checkpoint");
    }
    // Given with another value than the default: a run's saved config.json (every option, most
    // at their defaults) stays usable as a --config for an --arch or --init run.
    TrainConfig defaults;
    const bool changed[] = {c.model != defaults.model, c.width != defaults.width,
                            c.mlp_widths != defaults.mlp_widths, c.stem != defaults.stem};
    const char* names[] = {"model", "width", "mlp-widths", "stem"};
    for (int k = 0; k < 4; ++k) {
      const char* n = names[k];
      if (given(n) && changed[k]) {
        throw Error(fmt::format("--{} and {} both give the network", n, source),
                    std::string(source) == "--arch"
                        ? "leave --" + std::string(n) + " out: the architecture file sets the network"
                        : "leave --" + std::string(n) + " out: the checkpoint sets the network");
      }
    }
  }
  if (c.stem != "auto" && c.stem != "cifar" && c.stem != "imagenet") {
    throw Error("unknown --stem '" + c.stem + "'", "use auto, cifar or imagenet");
  }
  const bool out_given = std::find(c.given.begin(), c.given.end(), "out") != c.given.end();
  if (out_given && c.out.empty()) {
    throw Error("--out is empty", "give a run directory, or leave --out out for runs/<date>-...");
  }
}

const std::vector<std::string>& resume_changeable() {
  static const std::vector<std::string> names = {
      "stop-after",   "progress",         "threads",     "device",         "nproc",
      "dist-timeout", "checkpoint-every", "tensorboard", "decode-threads", "prefetch"};
  return names;
}

std::vector<std::string> config_warnings(const TrainConfig& c, int64_t total) {
  std::vector<std::string> w;
  auto given = [&](const char* n) { return std::find(c.given.begin(), c.given.end(), n) != c.given.end(); };
  const bool demp = c.method == "demp", scan = c.method == "scan";
  const bool baseline = !demp && !scan && c.method != "dense";
  // Network Slimming's constant λ is --lambda too.
  if (given("lambda") && !demp && !scan && c.method != "slimming") {
    w.push_back(fmt::format("--lambda has no effect with --method {}", c.method));
  }
  for (const char* n : {"l1-step", "constant-units", "lambda-span", "lambda-schedule", "regularizer", "noise",
                        "noise-mask", "noise-rng"}) {
    if (given(n) && !demp && !scan)
      w.push_back(fmt::format("--{} has no effect with --method {}", n, c.method));
  }
  // Size targets and width multiples drive DemP and every baseline; --target-by DemP and gradual.
  for (const char* n : {"target-params", "target-flops", "target-units", "width-multiple"}) {
    if (given(n) && !demp && !baseline)
      w.push_back(fmt::format("--{} has no effect with --method {}", n, c.method));
  }
  if (given("target-by") && !demp && c.method != "gradual") {
    w.push_back(fmt::format("--target-by has no effect with --method {}", c.method));
  }
  if (given("gradual-score") && c.method != "gradual") {
    w.push_back(fmt::format("--gradual-score has no effect with --method {}", c.method));
  }
  for (const char* n : {"density", "prune-at", "score-batches", "crop-steps"}) {
    if (given(n) && !baseline) {
      w.push_back(fmt::format("--{} applies to the baselines only, not to --method {}", n, c.method));
    }
  }
  if (given("density") && baseline && (c.target_params > 0 || c.target_flops > 0 || c.target_units > 0)) {
    w.push_back("--density is ignored: the size target (--target-*) sets the size of the cut");
  }
  if (total > 0) {
    if (given("prune-at") && baseline && c.prune_at >= total) {
      w.push_back(fmt::format("--prune-at {} is beyond the run's {} steps: the method never prunes",
                              c.prune_at, total));
    }
    if (given("prune-after") && (demp || scan) && c.prune_after >= total) {
      w.push_back(
          fmt::format("--prune-after {} is beyond the run's {} steps: only the final scan "
                      "runs",
                      c.prune_after, total));
    }
    if (c.stop_after > 0 && c.stop_after >= total) {
      w.push_back(
          fmt::format("--stop-after {} is not before the run's end ({} steps): the run "
                      "finishes",
                      c.stop_after, total));
    }
    if (c.checkpoint_every > 0 && c.checkpoint_every >= total) {
      w.push_back(
          fmt::format("--checkpoint-every {} is not within the run's {} steps", c.checkpoint_every, total));
    }
  }
  return w;
}

void image_options(const TrainConfig& c, int64_t training_threads, data::ImageOptions* out) {
  data::ImageOptions& o = *out;
  o.image_size = c.image_size;
  const auto comma = c.crop_scale.find(',');
  try {
    if (comma == std::string::npos) throw std::invalid_argument("");
    size_t used = 0;
    o.scale_min = std::stod(c.crop_scale.substr(0, comma), &used);
    o.scale_max = std::stod(c.crop_scale.substr(comma + 1));
  } catch (const std::exception&) {
    throw Error("bad --crop-scale '" + c.crop_scale + "'", "give MIN,MAX, e.g. 0.08,1");
  }
  o.eval_crop = c.eval_crop;
  o.bad_images = c.bad_images;
  const int64_t cores = std::max<int64_t>(1, std::thread::hardware_concurrency());
  o.threads = c.decode_threads > 0 ? c.decode_threads : std::max<int64_t>(1, cores - training_threads);
  o.prefetch = c.prefetch;
  o.train_crop = c.augment == "auto" || c.augment == "crop" || c.augment == "crop-flip";
  o.train_flip = c.augment == "auto" || c.augment == "flip" || c.augment == "crop-flip";
}

nn::ModelOptions model_options(const TrainConfig& c, const nn::ArchShape& shape) {
  nn::ModelOptions o;
  o.model = c.model;
  o.stem = c.stem;
  o.width = c.width;
  o.in_channels = shape.channels;
  o.in_height = shape.height;
  o.in_width = shape.width;
  o.classes = shape.classes;
  o.mlp_widths = nn::parse_mlp_widths(c.mlp_widths);
  return o;
}

}  // namespace demp::train
