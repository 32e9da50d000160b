#include "demp/train/config.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <stdexcept>
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
  std::vector<Field> fs = {
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
  // The methods' own options, after --method: pointers into c.method_options (a std::map, whose
  // elements stay where they are), which gets each option's default the first time.
  std::vector<Field> declared;
  for (const auto& spec : declared_options()) {
    auto it = c.method_options.try_emplace(spec.name, spec.def).first;
    std::visit([&](auto& v) { declared.push_back({spec.name, spec.help, &v, spec.group}); }, it->second);
  }
  auto after = std::find_if(fs.begin(), fs.end(), [](const Field& f) { return f.name == "method"; });
  fs.insert(after + 1, declared.begin(), declared.end());
  return fs;
}

namespace {

struct Declared {
  std::vector<OptionSpec> specs;  ///< in display order
  std::vector<std::string> modules;
};

Declared& declared() {
  static Declared d;
  return d;
}

int group_rank(const std::string& group) {
  static const std::vector<std::string> order = {"pruning", "demp", "baselines"};
  const auto it = std::find(order.begin(), order.end(), group);
  return static_cast<int>(it - order.begin());
}

}  // namespace

int declare_options(const std::string& module, std::vector<OptionSpec> specs) {
  Declared& d = declared();
  for (const auto& spec : specs) {
    const bool twice =
        std::any_of(d.specs.begin(), d.specs.end(), [&](const OptionSpec& o) { return o.name == spec.name; });
    if (twice) throw std::logic_error("option --" + spec.name + " is declared twice");
  }
  const int n = static_cast<int>(specs.size());
  for (auto& spec : specs) {
    d.specs.push_back(std::move(spec));
    d.modules.push_back(module);
  }
  // Display order: by group, then module, then declaration (a stable sort of the indices).
  std::vector<size_t> idx(d.specs.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::stable_sort(idx.begin(), idx.end(), [&](size_t x, size_t y) {
    return std::make_tuple(group_rank(d.specs[x].group), d.specs[x].group, d.modules[x]) <
           std::make_tuple(group_rank(d.specs[y].group), d.specs[y].group, d.modules[y]);
  });
  Declared sorted;
  for (size_t i : idx) {
    sorted.specs.push_back(std::move(d.specs[i]));
    sorted.modules.push_back(d.modules[i]);
  }
  d = std::move(sorted);
  return n;
}

const std::vector<OptionSpec>& declared_options() { return declared().specs; }

namespace {

const OptionSpec& spec_of(const std::string& name) {
  for (const auto& spec : declared_options()) {
    if (spec.name == name) return spec;
  }
  throw std::logic_error("no method declares the option --" + name);
}

}  // namespace

const OptionValue& TrainConfig::option_value(const std::string& name) const {
  const auto it = method_options.find(name);
  return it != method_options.end() ? it->second : spec_of(name).def;
}

void TrainConfig::wrong_type(const std::string& name) {
  throw std::logic_error("the option --" + name +
                         " is read or set with another type than it is declared with");
}

void TrainConfig::set_option(const std::string& name, OptionValue v) {
  const OptionSpec& spec = spec_of(name);
  if (std::holds_alternative<double>(spec.def) && std::holds_alternative<int64_t>(v)) {
    v = static_cast<double>(std::get<int64_t>(v));
  }
  if (v.index() != spec.def.index()) wrong_type(name);
  method_options[name] = std::move(v);
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
  for (const auto& spec : declared_options()) {
    if (spec.check) spec.check(c);
  }
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
  auto in = [&](const std::vector<std::string>& list) {
    return std::find(list.begin(), list.end(), c.method) != list.end();
  };
  auto acts = [&](const OptionSpec& spec) {
    return !spec.methods.empty() ? in(spec.methods) : spec.not_methods.empty() || !in(spec.not_methods);
  };
  // First the options that do nothing with this method, then the values that do little.
  for (const auto& spec : declared_options()) {
    if (!given(spec.name.c_str()) || acts(spec)) continue;
    w.push_back(spec.applies_to.empty()
                    ? fmt::format("--{} has no effect with --method {}", spec.name, c.method)
                    : fmt::format("--{} applies to {} only, not to --method {}", spec.name, spec.applies_to,
                                  c.method));
  }
  for (const auto& spec : declared_options()) {
    if (given(spec.name.c_str()) && acts(spec) && spec.warn) spec.warn(c, total, &w);
  }
  if (total > 0) {
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
