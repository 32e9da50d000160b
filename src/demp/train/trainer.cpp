#include "demp/train/trainer.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <optional>
#include <thread>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/dist/comm.h"
#include "demp/train/interrupt.h"
#include "demp/train/run_dir.h"
#include "demp/train/schedule.h"
#include "demp/train/step.h"
#include "demp/train/summary.h"

namespace demp::train {

using nlohmann::json;

torch::Device resolve_device(const std::string& spec) {
  if (spec == "cpu") return torch::kCPU;
  // Always with an index ("cuda" is cuda:0), so that devices compare equal to tensors' devices.
  if (spec == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::kCPU;
  if (spec.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available()) {
      throw Error("--device " + spec + " was asked for but no CUDA device is available",
                  "use --device cpu or --device auto");
    }
    try {
      torch::Device d(spec);
      if (!d.has_index()) d = torch::Device(torch::kCUDA, 0);
      if (d.index() >= static_cast<int>(torch::cuda::device_count())) {
        throw Error(fmt::format("--device {}: only {} CUDA device(s)", spec, torch::cuda::device_count()),
                    "devices are numbered from 0: use --device cuda:0, or auto");
      }
      return d;
    } catch (const c10::Error&) {
    }
  }
  throw Error("unknown --device '" + spec + "'", "use cpu, cuda, cuda:N or auto");
}

// ---- the run, in phases ---------------------------------------------------------------------

namespace {

data::Augment parse_augment(const std::string& a, const std::string& dataset) {
  if (a == "auto") return data::default_augment(dataset);
  if (a == "none") return {};
  if (a == "flip") return {0, true};
  if (a == "crop") return {4, false};
  if (a == "crop-flip") return {4, true};
  throw Error("unknown --augment '" + a + "'", "use auto, none, flip, crop or crop-flip");
}

// The network's name for run directories: the zoo model, or the architecture file's base name.
std::string network_name(const TrainConfig& cfg) {
  if (!cfg.init.empty()) return "init";
  if (cfg.arch.empty()) return cfg.model;
  std::string n = cfg.arch.substr(cfg.arch.find_last_of('/') + 1);
  if (n.size() > 5 && n.compare(n.size() - 5, 5, ".json") == 0) n.resize(n.size() - 5);
  return n.empty() ? "arch" : n;
}

std::string default_out(const TrainConfig& cfg) {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", &tm);
  return fmt::format("runs/{}-{}-{}", buf, network_name(cfg), cfg.method);
}

// The network a run starts from: the zoo model, the architecture file, or --init's checkpoint
// (whose weights are kept in `init`). A resumed --arch or --init run reads the copy of its
// architecture that it wrote into its directory (arch.json), so it does not need the original.
nn::Arch initial_arch(const TrainConfig& cfg, const data::DataBundle& data, std::optional<Checkpoint>& init) {
  const nn::ArchShape shape{data.channels, data.height, data.width, data.classes};
  if (cfg.arch.empty() && cfg.init.empty()) return nn::build_arch(model_options(cfg, shape));
  if (cfg.resume) {
    const std::string copy = RunFiles::in(cfg.out, RunFiles::arch);
    if (!file_exists(copy)) {
      throw Error(cfg.out + " lacks " + RunFiles::arch + ", the architecture the run started with",
                  std::string("restore the run's ") + RunFiles::arch + ", or start again with --overwrite");
    }
    return nn::load_arch_file(copy, shape);
  }
  if (!cfg.arch.empty()) return nn::load_arch_file(cfg.arch, shape);
  init = load_checkpoint(cfg.init);
  const nn::Arch& a = init->arch;
  if (a.in_channels != data.channels || a.in_height != data.height || a.in_width != data.width ||
      a.classes != data.classes) {
    throw Error(
        fmt::format(
            "--init {}: the network takes {}x{}x{} images and {} classes, the data {} has {}x{}x{} and {}",
            cfg.init, a.in_channels, a.in_height, a.in_width, a.classes, data.name, data.channels,
            data.height, data.width, data.classes),
        "import the weights with the data's shape (demp import --in-channels, --input-size, --classes)");
  }
  return a;
}

json groups_json(const nn::Arch& a) {
  json g = json::object();
  for (const auto& x : a.groups) {
    if (x.prunable) g[x.name] = x.width;
  }
  return g;
}

/// What checkpoints carry over a resume and the summary reports: the bests and the clock.
struct RunStats {
  double best_test = 0, best_val = 0, test_at_best_val = 0, last_test = 0, train_seconds = 0;
  /// Whether the test accuracy above was measured (an evaluation ran), not a 0.0 placeholder.
  bool evaluated = false;

  static RunStats from_meta(const json& meta, int64_t start) {
    RunStats s;
    s.best_test = meta.value("best_test_accuracy", 0.0);
    s.best_val = meta.value("best_val_accuracy", 0.0);
    s.test_at_best_val = meta.value("test_accuracy_at_best_val", 0.0);
    s.last_test = meta.value("test_accuracy", 0.0);
    s.train_seconds = meta.value("train_seconds", 0.0);
    s.evaluated = meta.value("evaluated", meta.contains("test_accuracy") && start > 0);
    return s;
  }
  void write(json& j) const {
    j["best_test_accuracy"] = best_test;
    j["best_val_accuracy"] = best_val;
    j["test_accuracy_at_best_val"] = test_at_best_val;
    j["test_accuracy"] = last_test;
    j["train_seconds"] = train_seconds;
    j["evaluated"] = evaluated;
  }
  /// A summary written before any evaluation says null, not 0.0, for what was never measured.
  void null_unmeasured(Summary& s) const {
    if (evaluated) return;
    s.test_accuracy = s.best_test_accuracy = s.best_val_accuracy = s.test_accuracy_at_best_val = std::nullopt;
  }
};

/// Options given to a resumed run that differ from the saved ones: those that only change how the
/// run is run are applied (and said); any other is refused with the list, as silently ignoring
/// them would continue a different run than the one asked for. Returns the saved configuration
/// with the changeable options of `now` applied.
TrainConfig merge_resume(const TrainConfig& now, TrainConfig saved, bool writer) {
  const auto& changeable = resume_changeable();
  std::vector<std::string> refused, applied;
  TrainConfig given = now;
  auto nf = fields(given), cf = fields(saved);
  for (size_t i = 0; i < nf.size(); ++i) {
    const std::string& name = nf[i].name;
    if (name == "resume" || name == "overwrite" || name == "out") continue;
    if (std::find(now.given.begin(), now.given.end(), name) == now.given.end()) continue;
    const std::string was = value_string(cf[i]), is = value_string(nf[i]);
    if (was == is) continue;
    const std::string d = fmt::format("--{} {} (the run has {})", name, is, was);
    const bool ok = std::find(changeable.begin(), changeable.end(), name) != changeable.end();
    (ok ? applied : refused).push_back(d);
  }
  if (!refused.empty()) {
    std::string list;
    for (const auto& d : refused) list += (list.empty() ? "" : ", ") + d;
    throw Error("--resume continues the run in " + now.out +
                    " as it was configured; these options "
                    "differ: " +
                    list,
                "leave them out to resume, or start a new run (another --out, or --overwrite)");
  }
  saved.resume = true;
  saved.overwrite = false;
  saved.out = now.out;
  saved.given = now.given;
  for (const std::string& name : changeable) {
    // The run's own --tensorboard goes on unless another directory is given.
    if (name == "tensorboard" && std::find(now.given.begin(), now.given.end(), name) == now.given.end())
      continue;
    auto cfs = fields(saved);
    auto nfs = fields(given);
    for (size_t i = 0; i < cfs.size(); ++i) {
      if (cfs[i].name != name) continue;
      std::visit(
          [&](auto* dst) {
            using T = std::remove_pointer_t<decltype(dst)>;
            *dst = *std::get<T*>(nfs[i].ptr);
          },
          cfs[i].ptr);
    }
  }
  if (writer) {
    for (const auto& d : applied) std::fprintf(stderr, "demp: resume applies %s\n", d.c_str());
  }
  return saved;
}

/// The run-directory policy, decided before any work: a resumed run continues with the
/// configuration it was started with (only how it is run may change) and always continues the
/// directory given (a copied or moved run continues where it now is, whatever config.json says);
/// a new run refuses a directory that holds another run unless --overwrite.
TrainConfig plan_run_directory(TrainConfig cfg, bool writer) {
  if (cfg.out.empty()) {
    if (cfg.resume) throw Error("--resume needs --out", "give the run directory to continue");
    cfg.out = default_out(cfg);
  }
  const bool has_ckpt = has_checkpoint(cfg.out);
  const bool has_cfg = has_config(cfg.out);
  if (cfg.resume) {
    if (!has_ckpt) {
      throw Error(has_cfg ? "nothing to resume in " + cfg.out +
                                ": the run there stopped before it wrote its first checkpoint"
                          : "nothing to resume in " + cfg.out + ": it holds no demp run",
                  has_cfg ? "start it again with --overwrite (or choose another --out)"
                          : "start the run without --resume");
    }
    if (!has_cfg) {
      throw Error(cfg.out + " has a " + RunFiles::checkpoint + " but no " + RunFiles::config,
                  std::string("restore the run's ") + RunFiles::config + ", or start again with --overwrite");
    }
    const std::string path = RunFiles::in(cfg.out, RunFiles::config);
    TrainConfig saved;
    try {
      apply_json(saved, json::parse(read_file(path)), path);
    } catch (const json::exception&) {
      throw Error(path + " is not valid JSON",
                  "restore the run's config.json, or start again with --overwrite");
    }
    return merge_resume(cfg, std::move(saved), writer);
  }
  if ((has_cfg || has_ckpt) && !cfg.overwrite) {
    if (!has_ckpt) {
      throw Error(cfg.out +
                      " holds a run that stopped before it wrote its first checkpoint "
                      "(nothing to resume)",
                  "use --overwrite to start it again, or another --out");
    }
    throw Error(cfg.out + " holds another run",
                "use --resume to continue it, --overwrite to replace it, or another --out");
  }
  // With --overwrite the old run is replaced only once everything has been validated (data,
  // model, schedule), under the run directory's lock: a bad option must not cost a finished run.
  return cfg;
}

/// One training run. run() goes through the phases in order; each member function is one of
/// them, or one part of a step of the loop.
class Trainer {
 public:
  Trainer(TrainConfig cfg, const MethodFactory& make_method, const TrainHooks& hooks)
      : cfg_(std::move(cfg)), make_method_(make_method), hooks_(hooks) {}
  json run();

 private:
  void set_up_process();
  void prepare();
  void check_memory() const;
  void take_run_directory();
  void restore_or_initialise();
  void restore(const Checkpoint& ck);
  void replicate();
  json loop();
  void train_step(StepRunner& runner, double lr);
  void check_loss(StepRunner& runner, Progress& progress, bool& interrupted);
  void after_step(StepRunner& runner, Progress& progress, double lr, bool interrupted);
  json row(StepRunner& runner, double lr);
  void evaluate_now(json& r);
  json meta(bool finished) const;
  void checkpoint(bool finished) const;
  [[noreturn]] void diverged(double loss, Progress& progress);
  json stopped(bool interrupted);
  json finish(StepRunner& runner, double lr);
  Summary summary(const StepRunner& runner, bool replicas_identical) const;
  /// The summary of a run that ends before its last step: the checkpoint's metadata.
  Summary early_summary(const std::string& status) const;
  void log_start(int64_t spe) const;
  void metrics(const json& row) const;
  void report_prunes();

  TrainConfig cfg_;
  MethodFactory make_method_;
  TrainHooks hooks_;
  size_t prunes_reported_ = 0;  ///< prune events already given to hooks_.on_prune
  // The process.
  torch::Device device_{torch::kCPU};
  std::unique_ptr<dist::Comm> comm_;
  bool writer_ = true;  ///< only rank 0 writes the run directory
  // What the run needs, checked before the run directory is taken.
  Precision precision_ = Precision::Fp32;
  bool graph_ = false;
  data::DataBundle data_;
  std::unique_ptr<Method> method_;
  nn::Arch fresh_;
  std::optional<Checkpoint> init_;  ///< --init: the weights the run starts from
  std::unique_ptr<Optimizer> opt_;
  std::unique_ptr<data::Batcher> batcher_;
  int64_t spe_ = 1, total_ = 0;
  Schedule lr_sched_;
  std::vector<std::string> warnings_;
  // The run.
  FileLock lock_;
  std::unique_ptr<RunDir> run_;
  std::unique_ptr<nn::Model> model_;
  std::unique_ptr<TrainContext> ctx_;
  json resumed_meta_ = json::object();
  int64_t start_ = 0;
  RunStats stats_;
  uint64_t grad_bytes_first_ = 0;
};

json Trainer::run() {
  validate(cfg_);
  if (!make_method_) throw Error("run_training: no method factory given");
  // The method reads its options when it is built: a bad one ends the run here, before the
  // rendezvous and the data. (It is built again below from the configuration a resume restores.)
  make_method_(cfg_);
  set_up_process();
  cfg_ = plan_run_directory(std::move(cfg_), writer_);
  if (comm_) {
    if (cfg_.batch_size % comm_->world_size() != 0) {
      throw Error(fmt::format("--batch-size {} does not split evenly over {} ranks", cfg_.batch_size,
                              comm_->world_size()),
                  "every rank takes an equal share of each batch: use a multiple of the world size");
    }
    comm_->barrier();  // every rank has looked at the run directory before rank 0 writes to it
  }
  prepare();
  take_run_directory();
  restore_or_initialise();
  replicate();
  return loop();
}

// Data-parallel: rendezvous first, so that a missing peer ends the run before any work. Local
// ranks share the machine's cores unless told otherwise.
void Trainer::set_up_process() {
  const dist::Env env = dist::env_from_environment();
  device_ = resolve_device(cfg_.device);
  if (env.distributed()) {
    if (device_.is_cuda()) {
      device_ = torch::Device(torch::kCUDA,
                              static_cast<c10::DeviceIndex>(env.local_rank % torch::cuda::device_count()));
    }
    comm_ = std::make_unique<dist::Comm>(env, device_, std::chrono::seconds(cfg_.dist_timeout));
  }
  writer_ = !comm_ || comm_->rank() == 0;
  int64_t local_ranks = 1;
  if (comm_) {
    const char* lws = std::getenv("LOCAL_WORLD_SIZE");
    local_ranks = lws ? std::max<int64_t>(1, std::atoll(lws)) : comm_->world_size();
  }
  const auto cores = static_cast<int64_t>(std::thread::hardware_concurrency());
  at::set_num_threads(
      static_cast<int>(cfg_.threads > 0 ? cfg_.threads : std::max<int64_t>(1, cores / local_ranks)));
}

// Everything the options can get wrong, checked before the run directory is taken: data, method,
// network, optimizer, schedule, memory.
void Trainer::prepare() {
  precision_ = parse_precision(cfg_.precision, device_);
  graph_ = parse_graph(cfg_.graph, device_);
  data::LoadOptions lo{
      cfg_.val_size, static_cast<uint64_t>(cfg_.seed), cfg_.train_limit, cfg_.test_limit, {}};
  image_options(cfg_, at::get_num_threads(), &lo.image);  // image folders: streamed from disk
  lo.image.pin_memory = device_.is_cuda();
  data_ = data::load(cfg_.data, lo);
  if (device_.is_cuda()) {
    // The whole data set lives on the GPU: a batch is an index_select and the augmentation runs
    // batch-wise there, so no step waits for a host-to-device copy of images.
    at::globalContext().setBenchmarkCuDNN(true);
    for (data::Dataset* d : {&data_.train, &data_.val, &data_.test}) {
      if (d->size() == 0 || d->stream) continue;
      d->images = d->images.to(device_);
      d->labels = d->labels.to(device_);
    }
  }
  auto aug = parse_augment(cfg_.augment, data_.name);
  if (data_.train.stream) aug = {};  // image folders: the loader's crop and flip (image_options)
  // The run's geometry (steps per epoch, total steps) is known before the method is built.
  batcher_ =
      std::make_unique<data::Batcher>(data_.train, cfg_.batch_size, static_cast<uint64_t>(cfg_.seed), aug);
  spe_ = batcher_->steps_per_epoch();
  total_ = cfg_.steps > 0 ? cfg_.steps : cfg_.epochs * spe_;
  lr_sched_ = parse_schedule(cfg_.lr_schedule, cfg_.lr, total_, spe_);
  method_ = make_method_(cfg_);
  fresh_ = initial_arch(cfg_, data_, init_);
  OptimOptions oo;
  oo.name = cfg_.optimizer;
  oo.weight_decay = cfg_.weight_decay;
  oo.momentum = cfg_.momentum;
  opt_ = make_optimizer(oo);
  check_memory();
  warnings_ = config_warnings(cfg_, total_);
  if (cfg_.sync_bn && !comm_) warnings_.push_back("--sync-bn has no effect without data-parallel ranks");
  if (writer_) {
    for (const auto& w : warnings_) std::fprintf(stderr, "demp: warning: %s\n", w.c_str());
  }
}

// What is about to be allocated, checked first: weights, gradients and two optimizer slots.
void Trainer::check_memory() const {
  if (!device_.is_cpu()) return;
  const double need = 16.0 * static_cast<double>(fresh_.params());
  const double have =
      static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGE_SIZE));
  if (have > 0 && need > have) {
    throw Error(fmt::format("the network has {} parameters: training needs about {:.1f} GiB, more than "
                            "this machine's {:.1f} GiB of memory",
                            fresh_.params(), need / (1 << 30), have / (1 << 30)),
                "use smaller widths (--width, --mlp-widths)");
  }
}

// The run directory is taken under its lock, which refuses a second writer (two runs on one --out
// would interleave their files); under it, --overwrite removes the old run.
void Trainer::take_run_directory() {
  if (writer_) {
    make_directories(cfg_.out);
    lock_ = FileLock(RunFiles::in(cfg_.out, RunFiles::lock), cfg_.out);
    if (!lock_.held()) {
      warnings_.push_back("cannot lock " + cfg_.out +
                          " (no flock on this file system): a second run "
                          "on it would not be refused");
      std::fprintf(stderr, "demp: warning: %s\n", warnings_.back().c_str());
    }
    const bool taken = has_config(cfg_.out) || has_checkpoint(cfg_.out);
    if (!cfg_.resume && taken && !cfg_.overwrite) {
      throw Error(cfg_.out + " holds another run (started while this one was loading its data)",
                  "use another --out");
    }
    if (!cfg_.resume && cfg_.overwrite) {
      for (const char* f : RunFiles::written) remove_file(RunFiles::in(cfg_.out, f));
    }
  }
  run_ = std::make_unique<RunDir>(cfg_.out, writer_);
}

void Trainer::restore_or_initialise() {
  if (cfg_.resume) {
    restore(load_checkpoint(run_->file(RunFiles::checkpoint)));
  } else {
    model_ = init_ ? std::make_unique<nn::Model>(init_->arch, init_->layers)
                   : std::make_unique<nn::Model>(fresh_, static_cast<uint64_t>(cfg_.seed));
    run_->write_json(RunFiles::config, to_json(cfg_));
    if (writer_ && (!cfg_.arch.empty() || init_))
      write_file_atomic(run_->file(RunFiles::arch), nn::arch_file_text(fresh_));
    log_start(spe_);
  }
  stats_ = RunStats::from_meta(resumed_meta_, start_);
  if (!cfg_.tensorboard.empty()) {
    run_->open_tensorboard(cfg_.tensorboard, cfg_.resume ? start_ : -1, cfg_.overwrite && !cfg_.resume);
  }
}

void Trainer::restore(const Checkpoint& ck) {
  const std::string path = run_->file(RunFiles::checkpoint);
  model_ = std::make_unique<nn::Model>(ck.arch, ck.layers);
  resumed_meta_ = ck.meta;
  if (resumed_meta_.value("finished", false)) {
    throw Error("the run in " + cfg_.out + " has already finished",
                "use --overwrite to run it again, or another --out");
  }
  if (!ck.optimizer_state.empty()) {
    const auto ps = model_->parameters();
    bool fits = ck.optimizer_state.size() == ps.size() && ck.optimizer == cfg_.optimizer;
    for (size_t i = 0; fits && i < ps.size(); ++i) {
      for (const auto& t : ck.optimizer_state[i]) {
        fits = fits && t.defined() && t.scalar_type() == torch::kFloat && t.sizes() == ps[i].sizes();
      }
    }
    if (!fits) {
      throw Error(path + ": its optimizer state does not fit the network",
                  "the checkpoint is damaged or was edited; start again with --overwrite");
    }
    opt_->state() = ck.optimizer_state;
    for (auto& s : opt_->state()) {
      for (auto& t : s) t = t.to(device_);
    }
  }
  opt_->set_steps(ck.optimizer_steps);
  start_ = resumed_meta_.at("step").get<int64_t>();
  if (start_ < 0 || start_ > total_) {
    throw Error(fmt::format("{}: its step {} is not within the run's {} steps", path, start_, total_),
                "the checkpoint is damaged or was edited; start again with --overwrite");
  }
  method_->load_state(resumed_meta_.value("method", json::object()));
  run_->truncate_metrics_after(start_);
  run_->log(fmt::format("resume step {} | from {}", start_, path), true);
  for (const auto& n : data_.notes) run_->log(n);
  for (const auto& w : warnings_) run_->log("warning | " + w);
}

void Trainer::log_start(int64_t spe) const {
  const std::string network = !cfg_.arch.empty()
                                  ? fmt::format("{} (architecture file {})", fresh_.model, cfg_.arch)
                              : init_ ? fmt::format("{} (from checkpoint {})", fresh_.model, cfg_.init)
                                      : fmt::format("{} width {}", cfg_.model, cfg_.width);
  run_->log(
      fmt::format("start | model {} | data {} ({} train, {} val, {} test) | method {} "
                  "| steps {} ({} per epoch) | device {} | precision {} | graph {}",
                  network, data_.name, data_.train.size(), data_.val.size(), data_.test.size(), cfg_.method,
                  total_, spe, device_.str(), precision_name(precision_), graph_ ? "on" : "off"));
  for (const auto& n : data_.notes) run_->log(n, cfg_.progress != "none");
  for (const auto& w : warnings_) run_->log("warning | " + w);
  if (comm_) {
    run_->log(
        fmt::format("data-parallel | {} ranks ({}) | {} images per rank per step | timeout {} s | "
                    "BatchNorm statistics {}",
                    comm_->world_size(), comm_->backend_name(), cfg_.batch_size / comm_->world_size(),
                    cfg_.dist_timeout, cfg_.sync_bn ? "synchronised" : "per rank"));
  }
}

// The model on its device; with ranks, every replica starts as rank 0's (whatever each rank
// initialised or loaded), and BatchNorm statistics are summed over ranks with --sync-bn.
void Trainer::replicate() {
  model_->to(device_);
  if (comm_) {
    std::vector<torch::Tensor> ts = model_->parameters();
    for (auto& b : model_->buffers()) ts.push_back(b);
    for (auto& st : opt_->state()) {
      for (auto& t : st) ts.push_back(t);
    }
    torch::NoGradGuard ng;
    comm_->broadcast(ts, 0);
    if (cfg_.sync_bn) {
      model_->set_sync_batch_norm([this](const torch::Tensor& t) { return comm_->sum_over_ranks(t); });
    }
  }
  ctx_ = std::make_unique<TrainContext>(TrainContext{cfg_, data_, *model_, *opt_, run_.get(), device_});
  ctx_->comm = comm_.get();
  ctx_->step = start_;
  ctx_->total_steps = total_;
  ctx_->steps_per_epoch = spe_;
  ctx_->prune_events = resumed_meta_.value("prune_events", json::array());
  prunes_reported_ = ctx_->prune_events.size();
}

// Every metrics row goes to the run directory (metrics.jsonl, metrics.csv, TensorBoard) and to
// the caller's hook.
void Trainer::metrics(const json& row) const {
  run_->metrics(row);
  if (hooks_.on_metrics) hooks_.on_metrics(row);
}

void Trainer::report_prunes() {
  while (hooks_.on_prune && prunes_reported_ < ctx_->prune_events.size()) {
    hooks_.on_prune(ctx_->prune_events[prunes_reported_++]);
  }
}

// The loop. Training loss and accuracy since the last metrics row are summed on the device by
// the step runner, so that a step never waits for the host; row() reads and resets them.
json Trainer::loop() {
  TrainContext& ctx = *ctx_;
  method_->begin(ctx);
  StepOptions so;
  so.precision = precision_;
  so.graph = graph_;
  so.label_smoothing = cfg_.label_smoothing;
  if (comm_) {
    // Gradient averaging overlapped with backward: buckets start as backward completes them.
    so.before_backward = [this](const std::vector<torch::Tensor>& ps) { comm_->begin_gradients(ps); };
    so.sync_gradients = [this](const std::vector<torch::Tensor>&) {
      comm_->finish_gradients();
      if (grad_bytes_first_ == 0) grad_bytes_first_ = comm_->last_gradient_bytes();
    };
  }
  StepRunner runner(ctx, *method_, so);
  Progress progress(writer_ ? cfg_.progress : "none", total_, start_, cfg_.batch_size);
  const int64_t stop = cfg_.stop_after > 0 ? std::min(total_, cfg_.stop_after) : total_;
  double lr = lr_sched_.at(ctx.step);
  InterruptGuard interrupt_guard(writer_ && cfg_.progress != "none");
  bool interrupted = false;
  while (ctx.step < stop && !interrupted) {
    const auto t0 = std::chrono::steady_clock::now();
    method_->prune_point(ctx);
    lr = lr_sched_.at(ctx.step);
    train_step(runner, lr);
    check_loss(runner, progress, interrupted);
    ++ctx.step;
    stats_.train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (hooks_.on_step) hooks_.on_step({ctx.step, total_, lr, runner.last_loss().item<double>()});
    report_prunes();
    after_step(runner, progress, lr, interrupted);
  }
  progress.finish();
  if (ctx.step < total_) return stopped(interrupted);
  return finish(runner, lr);
}

void Trainer::train_step(StepRunner& runner, double lr) {
  auto [x, y] = batcher_->batch(ctx_->step);
  if (comm_) {  // this rank's share of the global batch
    const int64_t b = cfg_.batch_size / comm_->world_size();
    x = x.narrow(0, comm_->rank() * b, b);
    y = y.narrow(0, comm_->rank() * b, b);
  }
  runner.run(x.to(device_, true), y.to(device_, true), lr);
}

// A NaN is looked for on the host at every step on the CPU, and at logging points on a GPU
// (reading a device value waits for the GPU); the summed loss carries a NaN forward. An interrupt
// is acted on at the same step by every rank: with ranks, it travels with the NaN check (every
// step on the CPU, at logging points on a GPU). Throws (after writing the summary) on a NaN.
void Trainer::check_loss(StepRunner& runner, Progress& progress, bool& interrupted) {
  if (!comm_) interrupted = interrupt_requested();
  if (!device_.is_cpu() && (ctx_->step + 1) % cfg_.log_every != 0) return;
  double lv = runner.last_loss().item<double>();
  if (std::isfinite(lv) && !device_.is_cpu()) lv = runner.loss_sum().item<double>();
  if (comm_) {  // a NaN on any rank stops every rank at the same step
    auto bad = torch::tensor({std::isfinite(lv) ? 0.0f : 1.0f, interrupt_requested() ? 1.0f : 0.0f});
    ctx_->all_reduce_max(bad);
    if (bad[0].item<float>() > 0 && std::isfinite(lv)) lv = std::nan("");
    interrupted = bad[1].item<float>() > 0;
  }
  if (!std::isfinite(lv)) diverged(lv, progress);
}

void Trainer::diverged(double lv, Progress& progress) {
  progress.finish();
  const bool kept = file_exists(run_->file(RunFiles::checkpoint));
  run_->log(fmt::format("diverged step {} | loss {} | {}", ctx_->step, lv,
                        kept ? "last checkpoint kept" : "no checkpoint had been written"),
            cfg_.progress != "none");  // the error below says it in any case
  Summary s = early_summary("diverged");
  s.diverged_at_step = ctx_->step;
  s.checkpoint = kept;
  stats_.null_unmeasured(s);
  run_->write_json(RunFiles::summary, s.to_json());
  throw Error(fmt::format("loss became {} at step {}", lv, ctx_->step),
              kept ? "lower --lr (or the regularisation strength) and start again with --overwrite; "
                     "the last checkpoint in " +
                         cfg_.out +
                         " is intact, but --resume from it "
                         "replays the same steps"
                   : "lower --lr (or the regularisation strength) and start again with "
                     "--overwrite; the run diverged before its first checkpoint");
}

// Metrics rows at logging points, an evaluation and a checkpoint at epoch ends, extra
// checkpoints with --checkpoint-every. The last step's row comes after the final prune point.
void Trainer::after_step(StepRunner& runner, Progress& progress, double lr, bool interrupted) {
  const int64_t step = ctx_->step;
  const int64_t stop = cfg_.stop_after > 0 ? std::min(total_, cfg_.stop_after) : total_;
  const int64_t epoch = (step - 1) / spe_ + 1, epochs = (total_ + spe_ - 1) / spe_;
  const bool epoch_end = step % spe_ == 0 && step < total_;
  if (step < total_ && (step % cfg_.log_every == 0 || epoch_end || step == stop || interrupted)) {
    json r = row(runner, lr);
    if (epoch_end) {
      evaluate_now(r);
      stats_.evaluated = true;
    }
    metrics(r);
    const auto& a = model_->arch();
    progress.update(
        step,
        fmt::format("epoch {}/{} | loss {:.4f} | acc {:.2f}%{} | live {:.1f}% | params {:.1f}%", epoch,
                    epochs, r.value("train_loss", 0.0), 100 * r.value("train_accuracy", 0.0),
                    r.contains("test_accuracy")
                        ? fmt::format(" | test {:.2f}%", 100 * r["test_accuracy"].get<double>())
                        : "",
                    100.0 * static_cast<double>(a.units()) / static_cast<double>(fresh_.units()),
                    100.0 * static_cast<double>(a.params()) / static_cast<double>(fresh_.params())),
        epoch_end);
    if (epoch_end) checkpoint(false);
  } else {
    progress.update(step, fmt::format("epoch {}/{}", epoch, epochs));
  }
  if (cfg_.checkpoint_every > 0 && step % cfg_.checkpoint_every == 0 && step < stop && step % spe_ != 0 &&
      !interrupted) {
    checkpoint(false);
  }
}

json Trainer::row(StepRunner& runner, double lr) {
  const auto& a = model_->arch();
  json r{{"step", ctx_->step},
         {"epoch", static_cast<double>(ctx_->step) / static_cast<double>(spe_)},
         {"lr", lr},
         {"live_units", a.units()},
         {"live_units_per_group", groups_json(a)},
         {"params", a.params()},
         {"flops", a.flops()},
         {"elapsed_seconds", stats_.train_seconds}};
  if (runner.seen() > 0) {
    torch::Tensor ls = runner.loss_sum().clone(), cs = runner.correct_sum().clone();
    double n = static_cast<double>(runner.seen());
    if (comm_) {  // every rank's share of the steps since the last row
      comm_->all_reduce(ls, dist::ReduceOp::Sum);
      comm_->all_reduce(cs, dist::ReduceOp::Sum);
      n *= static_cast<double>(comm_->world_size());
    }
    r["train_loss"] = ls.item<double>() / n;
    r["train_accuracy"] = static_cast<double>(cs.item<int64_t>()) / n;
    runner.reset_sums();
  }
  if (comm_) {
    r["allreduce_bytes_per_step"] = comm_->last_gradient_bytes();
    const auto [early, buckets] = comm_->last_overlap();
    r["allreduce_buckets"] = buckets;
    r["allreduce_buckets_started_in_backward"] = early;
  }
  r.update(method_->metrics(*ctx_));
  return r;
}

// Rank 0 evaluates (its replica is the checkpoint's).
void Trainer::evaluate_now(json& r) {
  if (!writer_) return;
  const auto te = evaluate(*model_, data_.test, cfg_.eval_batch_size, device_);
  stats_.last_test = te.accuracy;
  stats_.best_test = std::max(stats_.best_test, te.accuracy);
  r["test_accuracy"] = te.accuracy;
  r["test_loss"] = te.loss;
  std::string line = fmt::format("eval step {} | epoch {:.2f} | test_acc {:.4f} | test_loss {:.4f}",
                                 ctx_->step, static_cast<double>(ctx_->step) / spe_, te.accuracy, te.loss);
  if (data_.val.size() > 0) {
    const auto va = evaluate(*model_, data_.val, cfg_.eval_batch_size, device_);
    r["val_accuracy"] = va.accuracy;
    r["val_loss"] = va.loss;
    if (va.accuracy > stats_.best_val) {
      stats_.best_val = va.accuracy;
      stats_.test_at_best_val = te.accuracy;
    }
    line += fmt::format(" | val_acc {:.4f}", va.accuracy);
  }
  line += fmt::format(" | live {} | params {}", model_->arch().units(), model_->arch().params());
  run_->log(line, cfg_.progress != "none");
}

json Trainer::meta(bool finished) const {
  json m{{"step", ctx_->step},
         {"finished", finished},
         {"config", to_json(cfg_)},
         {"method", method_->state()},
         {"prune_events", ctx_->prune_events},
         {"seed", cfg_.seed},
         {"data_order", "epoch permutation from (seed, epoch); batch = step % steps_per_epoch"}};
  stats_.write(m);
  return m;
}

void Trainer::checkpoint(bool finished) const {
  if (writer_) save_checkpoint(run_->file(RunFiles::checkpoint), *model_, opt_.get(), meta(finished));
}

// The loop ended before the last step: --stop-after, or an interrupt.
json Trainer::stopped(bool interrupted) {
  checkpoint(false);
  const std::string ckpt = run_->file(RunFiles::checkpoint);
  if (interrupted) {
    Summary s = early_summary("interrupted");
    s.interrupted_at_step = ctx_->step;
    stats_.null_unmeasured(s);
    run_->write_json(RunFiles::summary, s.to_json());
    run_->log(fmt::format("interrupted step {} | checkpoint {} | continue with: demp train --resume --out {}",
                          ctx_->step, ckpt, cfg_.out),
              writer_);
    return s.to_json();
  }
  run_->log(fmt::format("stopped step {} | checkpoint {} | continue with --resume", ctx_->step, ckpt), true);
  return early_summary("stopped").to_json();  // returned, not written: the run goes on with --resume
}

Summary Trainer::early_summary(const std::string& status) const {
  Summary s = Summary::from_json(meta(false));
  s.status = status;
  s.run_dir = cfg_.out;
  return s;
}

// After the last step: one more prune point, the check that data-parallel training kept one
// model (parameters bit for bit on every rank), the final evaluation, checkpoint and summary.
json Trainer::finish(StepRunner& runner, double lr) {
  method_->prune_point(*ctx_);
  report_prunes();
  json r = row(runner, lr);
  bool replicas_identical = true;
  if (comm_) {
    ctx_->sync_buffers();
    replicas_identical = comm_->all_equal(model_->parameters());
    if (!replicas_identical) {
      run_->log("warning | the ranks' parameters differ at the end of training (replicas drifted)", true);
    }
    if (!writer_) {
      json steps = json::array();
      for (const auto& e : ctx_->prune_events) steps.push_back(e["step"]);
      return json{{"status", "replica"},
                  {"rank", comm_->rank()},
                  {"units_final", model_->arch().units()},
                  {"params_final", model_->arch().params()},
                  {"prune_steps", steps},
                  {"replicas_identical", replicas_identical}};
    }
  }
  evaluate_now(r);
  metrics(r);
  checkpoint(true);
  const json s = summary(runner, replicas_identical).to_json();
  run_->write_json(RunFiles::summary, s);
  const auto& a = model_->arch();
  run_->log(
      fmt::format("done step {} | test_acc {:.4f} | best {:.4f} | units {}/{} | params {}/{} | "
                  "train_seconds {:.1f}",
                  total_, stats_.last_test, stats_.best_test, a.units(), fresh_.units(), a.params(),
                  fresh_.params(), stats_.train_seconds));
  return s;
}

Summary Trainer::summary(const StepRunner& runner, bool replicas_identical) const {
  const auto& a = model_->arch();
  Summary s;
  s.status = "finished";
  s.run_dir = cfg_.out;
  s.method = cfg_.method;
  s.model = cfg_.arch.empty() && cfg_.init.empty() ? cfg_.model : a.model;
  s.width = cfg_.arch.empty() && cfg_.init.empty() ? cfg_.width : 1.0;
  s.dataset = data_.name;
  s.seed = cfg_.seed;
  s.steps = total_;
  s.epochs = static_cast<double>(total_) / static_cast<double>(spe_);
  s.batch_size = cfg_.batch_size;
  s.optimizer = cfg_.optimizer;
  s.test_accuracy = stats_.last_test;
  s.best_test_accuracy = stats_.best_test;
  s.units_initial = fresh_.units();
  s.units_final = a.units();
  s.params_initial = fresh_.params();
  s.params_final = a.params();
  s.flops_initial = fresh_.flops();
  s.flops_final = a.flops();
  for (const auto& x : a.groups) {
    if (x.prunable) s.live_units_per_group[x.name] = x.width;  // as groups_json(a)
  }
  s.train_seconds = stats_.train_seconds;
  s.device = device_.str();
  s.precision = precision_name(precision_);
  s.graph = graph_;
  s.graph_captures = runner.captures();
  s.world_size = comm_ ? comm_->world_size() : 1;
  s.prune_events = ctx_->prune_events;
  s.method_state = method_->state();
  if (s.method_state.contains("collapsed_groups")) {
    s.warning = "some unit groups died entirely (the network collapsed there); see log.txt";
  }
  if (data_.train.stream) s.bad_images_skipped = data_.train.stream->skipped();
  if (data_.val.size() > 0) {
    s.best_val_accuracy = stats_.best_val;
    s.test_accuracy_at_best_val = stats_.test_at_best_val;
  }
  if (comm_) {
    s.dist_backend = comm_->backend_name();
    s.replicas_identical = replicas_identical;
    s.allreduce_bytes_per_step_initial = static_cast<int64_t>(grad_bytes_first_);
    s.allreduce_bytes_per_step_final = static_cast<int64_t>(comm_->last_gradient_bytes());
  }
  return s;
}

}  // namespace

json run_training(TrainConfig cfg, const MethodFactory& make_method, const TrainHooks& hooks) {
  Trainer t(std::move(cfg), make_method, hooks);
  return t.run();
}

}  // namespace demp::train
