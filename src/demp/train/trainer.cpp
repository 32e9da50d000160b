#include "demp/train/trainer.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <ctime>
#include <sstream>
#include <thread>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/dist/comm.h"
#include "demp/methods/method.h"
#include "demp/report/run_dir.h"
#include "demp/train/schedule.h"
#include "demp/train/step.h"

namespace demp::train {

using nlohmann::json;

// ---- context --------------------------------------------------------------------------------

void TrainContext::log(const std::string& line, bool echo) const {
  if (run) {
    run->log(line, echo);
  } else if (echo) {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

int64_t TrainContext::rank() const { return comm ? comm->rank() : 0; }
int64_t TrainContext::world_size() const { return comm ? comm->world_size() : 1; }

void TrainContext::sync_buffers() {
  if (world_size() < 2) return;
  auto bufs = model.buffers();
  comm->broadcast(bufs, 0);
}

void TrainContext::all_reduce_max(torch::Tensor& t) {
  if (world_size() < 2) return;
  torch::Tensor d = t.to(device).contiguous();
  comm->all_reduce(d, dist::ReduceOp::Max);
  t.copy_(d);
}

namespace {

// Rank 0's keep sets, on every rank: sizes first, then the indices in one tensor.
prune::KeepSets broadcast_keep(dist::Comm& comm, const prune::KeepSets& keep, const torch::Device& dev) {
  const auto opts = torch::TensorOptions().dtype(torch::kLong);
  auto sizes = torch::empty({static_cast<int64_t>(keep.size())}, opts);
  int64_t total = 0;
  for (size_t g = 0; g < keep.size(); ++g) {
    sizes[static_cast<int64_t>(g)] = static_cast<int64_t>(keep[g].size());
    total += static_cast<int64_t>(keep[g].size());
  }
  std::vector<torch::Tensor> t{sizes.to(dev)};
  comm.broadcast(t, 0);
  sizes = t[0].cpu();
  total = sizes.sum().item<int64_t>();
  auto flat = torch::empty({std::max<int64_t>(1, total)}, opts);
  if (comm.rank() == 0) {
    int64_t k = 0;
    for (const auto& v : keep) {
      for (const int64_t u : v) flat[k++] = u;
    }
  }
  t = {flat.to(dev)};
  comm.broadcast(t, 0);
  flat = t[0].cpu();
  prune::KeepSets out(keep.size());
  const auto* p = flat.data_ptr<int64_t>();
  for (size_t g = 0; g < keep.size(); ++g) {
    const int64_t n = sizes[static_cast<int64_t>(g)].item<int64_t>();
    out[g].assign(p, p + n);
    p += n;
  }
  return out;
}

}  // namespace

std::vector<prune::GroupChange> TrainContext::remove_units(const prune::KeepSets& keep,
                                                           const std::string& why) {
  const int64_t units0 = model.arch().units(), params0 = model.arch().params();
  auto changes = world_size() > 1 ? prune::remove_units(model, &optimizer, broadcast_keep(*comm, keep, device))
                                  : prune::remove_units(model, &optimizer, keep);
  if (changes.empty()) return changes;
  const auto& a = model.arch();
  log(fmt::format("prune step {} | {} | units {} -> {} | params {} -> {} | flops {}", step, why,
                  units0, a.units(), params0, a.params(), a.flops()),
      /*echo=*/cfg.progress != "none");
  json groups = json::object();
  for (const auto& c : changes) {
    log(fmt::format("prune step {} | group {} | {} -> {}", step, c.group, c.before, c.after));
    groups[c.group] = {c.before, c.after};
  }
  prune_events.push_back({{"step", step}, {"reason", why}, {"units_before", units0},
                          {"units_after", a.units()}, {"params_after", a.params()},
                          {"flops_after", a.flops()}, {"groups", groups}});
  return changes;
}

// ---- helpers --------------------------------------------------------------------------------

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

nn::ModelOptions model_options(const TrainConfig& cfg, const data::DataBundle& data) {
  nn::ModelOptions o;
  o.model = cfg.model;
  o.width = cfg.width;
  o.in_channels = data.channels;
  o.in_height = data.height;
  o.in_width = data.width;
  o.classes = data.classes;
  o.mlp_widths.clear();
  std::stringstream ss(cfg.mlp_widths);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      const int64_t w = std::stoll(item);
      if (w <= 0) throw std::invalid_argument("");
      o.mlp_widths.push_back(w);
    } catch (const std::exception&) {
      throw Error("bad --mlp-widths '" + cfg.mlp_widths + "'", "give positive integers, e.g. 512,256");
    }
  }
  if (o.mlp_widths.empty()) throw Error("--mlp-widths is empty", "e.g. --mlp-widths 512,256");
  return o;
}

EvalResult evaluate(const nn::Model& model, const data::Dataset& ds, int64_t batch,
                    const torch::Device& device) {
  if (batch <= 0) throw Error(fmt::format("evaluation batch size must be positive, got {}", batch), "e.g. 1000");
  torch::NoGradGuard no_grad;
  EvalResult r;
  const int64_t n = ds.size();
  if (n == 0) return r;
  torch::Tensor correct = torch::zeros({}, torch::TensorOptions().dtype(torch::kLong).device(device));
  torch::Tensor loss = torch::zeros({}, torch::TensorOptions().dtype(torch::kDouble).device(device));
  for (int64_t s = 0; s < n; s += batch) {
    const int64_t e = std::min(n, s + batch);
    const auto [xs, ys] = data::eval_slice(ds, s, e);
    const auto x = xs.to(device, /*non_blocking=*/true);
    const auto y = ys.to(device, true);
    const auto logits = model.forward(x, false);
    correct += logits.argmax(1).eq(y).sum();
    loss += at::cross_entropy_loss(logits.to(torch::kFloat), y, {}, at::Reduction::Sum).to(torch::kDouble);
  }
  r.n = n;
  r.accuracy = static_cast<double>(correct.item<int64_t>()) / static_cast<double>(n);
  r.loss = loss.item<double>() / static_cast<double>(n);
  return r;
}

// ---- checkpoints ----------------------------------------------------------------------------

void save_checkpoint(const std::string& path, const nn::Model& model, const Optimizer* opt,
                     const json& meta) {
  torch::serialize::OutputArchive ar;
  ar.write("format", c10::IValue(std::string("demp-checkpoint-1")));
  ar.write("arch", c10::IValue(json(model.arch()).dump()));
  ar.write("meta", c10::IValue(meta.dump()));
  auto put = [&](const std::string& key, const torch::Tensor& t) {
    if (t.defined()) ar.write(key, t.detach().cpu(), /*is_buffer=*/true);
  };
  for (size_t i = 0; i < model.layers().size(); ++i) {
    const auto& l = model.layers()[i];
    put(fmt::format("l{}.weight", i), l.weight);
    put(fmt::format("l{}.bias", i), l.bias);
    put(fmt::format("l{}.gamma", i), l.gamma);
    put(fmt::format("l{}.beta", i), l.beta);
    put(fmt::format("l{}.running_mean", i), l.running_mean);
    put(fmt::format("l{}.running_var", i), l.running_var);
  }
  if (opt) {
    ar.write("optimizer", c10::IValue(opt->options().name));
    ar.write("optimizer_steps", c10::IValue(opt->steps()));
    auto& st = const_cast<Optimizer*>(opt)->state();
    ar.write("optimizer_slots", c10::IValue(static_cast<int64_t>(st.empty() ? 0 : st[0].size())));
    for (size_t i = 0; i < st.size(); ++i) {
      for (size_t k = 0; k < st[i].size(); ++k) put(fmt::format("opt.{}.{}", i, k), st[i][k]);
    }
  }
  // Through our own sink, not save_to(filename): LibTorch's zip writer reports a short write
  // (a full disk) by throwing from its destructor, which terminates the process. The sink never
  // fails; write_file_streamed checks it afterwards, removes the temp file and keeps the previous
  // checkpoint.
  write_file_streamed(path, "checkpoint", [&](ByteSink& sink) {
    ar.save_to([&](const void* data, size_t n) -> size_t { return sink.write(data, n); });
  });
}

Checkpoint load_checkpoint(const std::string& path) {
  if (!file_exists(path)) throw Error("no checkpoint at " + path, "give the model.ckpt of a run");
  Checkpoint c;
  try {
    torch::serialize::InputArchive ar;
    ar.load_from(path);
    c10::IValue v;
    if (!ar.try_read("format", v) || v.toStringRef() != "demp-checkpoint-1") {
      throw Error(path + " is not a demp checkpoint", "give the model.ckpt of a run");
    }
    ar.read("arch", v);
    try {
      c.arch = json::parse(v.toStringRef()).get<nn::Arch>();
      nn::check_arch(c.arch);
    } catch (const Error& e) {
      throw Error(path + " has an unusable architecture: " + e.what(),
                  e.hint().empty() ? "the file is damaged or was edited; use the model.ckpt a run wrote"
                                   : e.hint());
    }
    ar.read("meta", v);
    c.meta = json::parse(v.toStringRef());
    for (size_t i = 0; i < c.arch.layers.size(); ++i) {
      nn::LayerTensors t;
      auto get = [&](const char* f, torch::Tensor& out) {
        ar.try_read(fmt::format("l{}.{}", i, f), out, /*is_buffer=*/true);
      };
      get("weight", t.weight);
      get("bias", t.bias);
      get("gamma", t.gamma);
      get("beta", t.beta);
      get("running_mean", t.running_mean);
      get("running_var", t.running_var);
      for (const torch::Tensor* x : {&t.weight, &t.bias, &t.gamma, &t.beta, &t.running_mean, &t.running_var}) {
        if (x->defined() && x->scalar_type() != torch::kFloat) {
          throw Error(fmt::format("{}: layer {} holds {} tensors, not float32", path, c.arch.layers[i].name,
                                  c10::toString(x->scalar_type())),
                      "the file is damaged or was edited; demp writes float32 weights");
        }
      }
      c.layers.push_back(t);
    }
    if (ar.try_read("optimizer", v)) {
      c.optimizer = v.toStringRef();
      ar.read("optimizer_steps", v);
      c.optimizer_steps = v.toInt();
      ar.read("optimizer_slots", v);
      const int64_t slots = v.toInt();
      for (size_t i = 0; slots > 0; ++i) {
        std::vector<torch::Tensor> s(slots);
        if (!ar.try_read(fmt::format("opt.{}.0", i), s[0], true)) break;
        for (int64_t k = 1; k < slots; ++k) ar.read(fmt::format("opt.{}.{}", i, k), s[k], true);
        c.optimizer_state.push_back(s);
      }
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error("cannot read checkpoint " + path + " (truncated or corrupt)",
                "use an intact model.ckpt; a run writes it atomically at each epoch end");
  }
  return c;
}

// ---- the loop -------------------------------------------------------------------------------

namespace {

data::Augment parse_augment(const std::string& a, const std::string& dataset) {
  if (a == "auto") return data::default_augment(dataset);
  if (a == "none") return {};
  if (a == "flip") return {0, true};
  if (a == "crop") return {4, false};
  if (a == "crop-flip") return {4, true};
  throw Error("unknown --augment '" + a + "'", "use auto, none, flip, crop or crop-flip");
}

// SIGINT/SIGTERM during the loop: the step in flight finishes, then the run writes a checkpoint
// and a summary (status "interrupted") and says how to resume. A repeat within a second is the
// same interrupt delivered twice (a terminal's Ctrl-C reaches every rank, and the launcher
// forwards it); a repeat after that aborts at once.
volatile std::sig_atomic_t g_interrupt = 0;
std::atomic<long long> g_interrupt_ms{0};
bool g_interrupt_say = true;
bool g_interrupt_tty = false;
static_assert(std::atomic<long long>::is_always_lock_free, "used in a signal handler");

long long monotonic_ms() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

extern "C" void on_interrupt(int sig) {
  const int saved_errno = errno;
  const long long now = monotonic_ms();
  if (g_interrupt == 0) {
    g_interrupt = sig;
    g_interrupt_ms = now;
    if (g_interrupt_say) {
      // On a terminal, clear a progress bar's line first (the bar redraws below the message).
      static const char clear[] = "\r\x1b[K";
      static const char msg[] =
          "demp: interrupted: finishing this step, then writing a checkpoint and summary.json "
          "(interrupt again to abort at once)\n";
      if ((g_interrupt_tty && ::write(2, clear, sizeof(clear) - 1) < 0) || ::write(2, msg, sizeof(msg) - 1) < 0) {
      }
    }
  } else if (now - g_interrupt_ms.load() >= 1000) {
    ::signal(sig, SIG_DFL);
    ::raise(sig);
  }
  errno = saved_errno;
}

class InterruptGuard {
 public:
  explicit InterruptGuard(bool say) {
    g_interrupt = 0;
    g_interrupt_say = say;
    g_interrupt_tty = ::isatty(2) != 0;
    struct sigaction sa {};
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    ::sigaction(SIGINT, &sa, &old_int_);
    ::sigaction(SIGTERM, &sa, &old_term_);
  }
  ~InterruptGuard() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
  }
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

std::string default_out(const TrainConfig& cfg) {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", &tm);
  return fmt::format("runs/{}-{}-{}", buf, cfg.model, cfg.method);
}

json groups_json(const nn::Arch& a) {
  json g = json::object();
  for (const auto& x : a.groups) {
    if (x.prunable) g[x.name] = x.width;
  }
  return g;
}

}  // namespace

json run_training(TrainConfig cfg) {
  validate(cfg);
  // Data-parallel: rendezvous first, so that a missing peer ends the run before any work.
  const dist::Env env = dist::env_from_environment();
  torch::Device device = resolve_device(cfg.device);
  std::unique_ptr<dist::Comm> comm;
  if (env.distributed()) {
    if (device.is_cuda()) {
      device = torch::Device(torch::kCUDA,
                             static_cast<c10::DeviceIndex>(env.local_rank % torch::cuda::device_count()));
    }
    comm = std::make_unique<dist::Comm>(env, device, std::chrono::seconds(cfg.dist_timeout));
  }
  const bool writer = !comm || comm->rank() == 0;  // only rank 0 writes the run directory
  if (cfg.out.empty()) {
    if (cfg.resume) throw Error("--resume needs --out", "give the run directory to continue");
    cfg.out = default_out(cfg);
  }
  // A resumed run continues with the configuration it was started with; only how it is run
  // (where it stops, how it reports, threads, device) may change. It always continues the
  // directory given (a copied or moved run continues where it now is), whatever config.json says.
  const bool has_ckpt = file_exists(cfg.out + "/model.ckpt");
  const bool has_config = file_exists(cfg.out + "/config.json");
  if (cfg.resume) {
    const std::string saved = cfg.out + "/config.json";
    if (!has_ckpt) {
      throw Error(has_config ? "nothing to resume in " + cfg.out +
                                   ": the run there stopped before it wrote its first checkpoint"
                             : "nothing to resume in " + cfg.out + ": it holds no demp run",
                  has_config ? "start it again with --overwrite (or choose another --out)"
                             : "start the run without --resume");
    }
    if (!has_config) {
      throw Error(cfg.out + " has a model.ckpt but no config.json",
                  "restore the run's config.json, or start again with --overwrite");
    }
    TrainConfig c;
    try {
      apply_json(c, json::parse(read_file(saved)), saved);
    } catch (const json::exception&) {
      throw Error(saved + " is not valid JSON", "restore the run's config.json, or start again with --overwrite");
    }
    // Options given now that differ from the run's: the ones that only change how the run is run
    // are applied (and said); any other is refused with the list, as silently ignoring them
    // would continue a different run than the one asked for.
    const auto& changeable = resume_changeable();
    std::vector<std::string> refused, applied;
    TrainConfig now = cfg;
    auto nf = fields(now), cf = fields(c);
    for (size_t i = 0; i < nf.size(); ++i) {
      const std::string& name = nf[i].name;
      if (name == "resume" || name == "overwrite" || name == "out") continue;
      if (std::find(cfg.given.begin(), cfg.given.end(), name) == cfg.given.end()) continue;
      const std::string was = value_string(cf[i]), is = value_string(nf[i]);
      if (was == is) continue;
      const std::string d = fmt::format("--{} {} (the run has {})", name, is, was);
      if (std::find(changeable.begin(), changeable.end(), name) != changeable.end()) {
        applied.push_back(d);
      } else {
        refused.push_back(d);
      }
    }
    if (!refused.empty()) {
      std::string list;
      for (const auto& d : refused) list += (list.empty() ? "" : ", ") + d;
      throw Error("--resume continues the run in " + cfg.out + " as it was configured; these options "
                  "differ: " + list,
                  "leave them out to resume, or start a new run (another --out, or --overwrite)");
    }
    c.resume = true;
    c.overwrite = false;
    c.out = cfg.out;
    c.given = cfg.given;
    for (const std::string& name : changeable) {
      auto cfs = fields(c);
      auto nfs = fields(now);
      for (size_t i = 0; i < cfs.size(); ++i) {
        if (cfs[i].name == name) {
          std::visit([&](auto* dst) {
            using T = std::remove_pointer_t<decltype(dst)>;
            *dst = *std::get<T*>(nfs[i].ptr);
          }, cfs[i].ptr);
        }
      }
    }
    cfg = c;
    if (writer) {
      for (const auto& d : applied) std::fprintf(stderr, "demp: resume applies %s\n", d.c_str());
    }
  } else if (has_config || has_ckpt) {
    if (!cfg.overwrite) {
      if (!has_ckpt) {
        throw Error(cfg.out + " holds a run that stopped before it wrote its first checkpoint "
                              "(nothing to resume)",
                    "use --overwrite to start it again, or another --out");
      }
      throw Error(cfg.out + " holds another run",
                  "use --resume to continue it, --overwrite to replace it, or another --out");
    }
    // The old run is replaced only once everything below has been validated (data, model,
    // schedule), under the run directory's lock: a bad option must not cost a finished run.
  }
  if (comm) {
    if (cfg.batch_size % comm->world_size() != 0) {
      throw Error(fmt::format("--batch-size {} does not split evenly over {} ranks", cfg.batch_size,
                              comm->world_size()),
                  "every rank takes an equal share of each batch: use a multiple of the world size");
    }
    comm->barrier();  // every rank has looked at the run directory before rank 0 writes to it
  }
  // Local ranks share the machine's cores unless told otherwise.
  int64_t local_ranks = 1;
  if (comm) {
    const char* lws = std::getenv("LOCAL_WORLD_SIZE");
    local_ranks = lws ? std::max<int64_t>(1, std::atoll(lws)) : comm->world_size();
  }
  at::set_num_threads(cfg.threads > 0
                          ? static_cast<int>(cfg.threads)
                          : static_cast<int>(std::max<int64_t>(
                                1, static_cast<int64_t>(std::thread::hardware_concurrency()) / local_ranks)));

  const Precision precision = parse_precision(cfg.precision, device);
  const bool graph = parse_graph(cfg.graph, device);
  data::LoadOptions lo{cfg.val_size, static_cast<uint64_t>(cfg.seed), cfg.train_limit, cfg.test_limit, {}};
  image_options(cfg, at::get_num_threads(), &lo.image);  // image folders: streamed from disk
  lo.image.pin_memory = device.is_cuda();
  data::DataBundle data = data::load(cfg.data, lo);
  if (device.is_cuda()) {
    // The whole data set lives on the GPU: a batch is an index_select and the augmentation runs
    // batch-wise there, so no step waits for a host-to-device copy of images.
    at::globalContext().setBenchmarkCuDNN(true);
    for (data::Dataset* d : {&data.train, &data.val, &data.test}) {
      if (d->size() == 0 || d->stream) continue;
      d->images = d->images.to(device);
      d->labels = d->labels.to(device);
    }
  }
  auto aug = parse_augment(cfg.augment, data.name);
  if (data.train.stream) aug = {};  // image folders: the loader's crop and flip (image_options)
  auto method = methods::make_method(cfg);
  const nn::Arch fresh = nn::build_arch(model_options(cfg, data));
  OptimOptions oo;
  oo.name = cfg.optimizer;
  oo.weight_decay = cfg.weight_decay;
  oo.momentum = cfg.momentum;
  auto opt = make_optimizer(oo);

  data::Batcher batcher(data.train, cfg.batch_size, static_cast<uint64_t>(cfg.seed), aug);
  const int64_t spe = batcher.steps_per_epoch();
  const int64_t total = cfg.steps > 0 ? cfg.steps : cfg.epochs * spe;
  const Schedule lr_sched = parse_schedule(cfg.lr_schedule, cfg.lr, total, spe);

  // What is about to be allocated, checked first: weights, gradients and two optimizer slots.
  if (device.is_cpu()) {
    const double need = 16.0 * static_cast<double>(fresh.params());
    const double have = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGE_SIZE));
    if (have > 0 && need > have) {
      throw Error(fmt::format("the network has {} parameters: training needs about {:.1f} GiB, more than "
                              "this machine's {:.1f} GiB of memory",
                              fresh.params(), need / (1 << 30), have / (1 << 30)),
                  "use smaller widths (--width, --mlp-widths)");
    }
  }
  std::vector<std::string> warnings = config_warnings(cfg, total);
  if (cfg.sync_bn && !comm) warnings.push_back("--sync-bn has no effect without data-parallel ranks");
  if (writer) {
    for (const auto& w : warnings) {
      std::fprintf(stderr, "demp: warning: %s\n", w.c_str());
    }
  }

  // Everything the options can get wrong has been checked: now the run directory is taken. Its
  // lock refuses a second writer (two runs on one --out would interleave their files); under it,
  // --overwrite removes the old run.
  FileLock lock;
  if (writer) {
    make_directories(cfg.out);
    lock = FileLock(cfg.out + "/.lock", cfg.out);
    if (!lock.held()) {
      warnings.push_back("cannot lock " + cfg.out + " (no flock on this file system): a second run "
                         "on it would not be refused");
      std::fprintf(stderr, "demp: warning: %s\n", warnings.back().c_str());
    }
    const bool taken = file_exists(cfg.out + "/config.json") || file_exists(cfg.out + "/model.ckpt");
    if (!cfg.resume && taken && !cfg.overwrite) {
      throw Error(cfg.out + " holds another run (started while this one was loading its data)",
                  "use another --out");
    }
    if (!cfg.resume && cfg.overwrite) {
      for (const char* f : {"config.json", "metrics.jsonl", "log.txt", "summary.json", "model.ckpt",
                            "model.ckpt.tmp"}) {
        remove_file(cfg.out + "/" + f);
      }
    }
  }
  report::RunDir run(cfg.out, writer);
  std::unique_ptr<nn::Model> model;
  json meta = json::object();
  int64_t start = 0;
  if (cfg.resume) {
    Checkpoint ck = load_checkpoint(run.file("model.ckpt"));
    model = std::make_unique<nn::Model>(ck.arch, ck.layers);
    meta = ck.meta;
    if (meta.value("finished", false)) {
      throw Error("the run in " + cfg.out + " has already finished",
                  "use --overwrite to run it again, or another --out");
    }
    if (!ck.optimizer_state.empty()) {
      const auto ps = model->parameters();
      bool fits = ck.optimizer_state.size() == ps.size() && ck.optimizer == cfg.optimizer;
      for (size_t i = 0; fits && i < ps.size(); ++i) {
        for (const auto& t : ck.optimizer_state[i]) {
          fits = fits && t.defined() && t.scalar_type() == torch::kFloat && t.sizes() == ps[i].sizes();
        }
      }
      if (!fits) {
        throw Error(run.file("model.ckpt") + ": its optimizer state does not fit the network",
                    "the checkpoint is damaged or was edited; start again with --overwrite");
      }
      for (auto& s : ck.optimizer_state) {
        for (auto& t : s) t = t.to(device);
      }
      opt->state() = ck.optimizer_state;
    }
    opt->set_steps(ck.optimizer_steps);
    start = meta.at("step").get<int64_t>();
    if (start < 0 || start > total) {
      throw Error(fmt::format("{}: its step {} is not within the run's {} steps", run.file("model.ckpt"), start, total),
                  "the checkpoint is damaged or was edited; start again with --overwrite");
    }
    method->load_state(meta.value("method", json::object()));
    run.truncate_metrics_after(start);
    run.log(fmt::format("resume step {} | from {}", start, run.file("model.ckpt")), true);
    for (const auto& n : data.notes) run.log(n);
    for (const auto& w : warnings) run.log("warning | " + w);
  } else {
    model = std::make_unique<nn::Model>(fresh, static_cast<uint64_t>(cfg.seed));
    run.write_json("config.json", to_json(cfg));
    run.log(fmt::format("start | model {} width {} | data {} ({} train, {} val, {} test) | method {} "
                        "| steps {} ({} per epoch) | device {} | precision {} | graph {}",
                        cfg.model, cfg.width, data.name, data.train.size(), data.val.size(),
                        data.test.size(), cfg.method, total, spe, device.str(),
                        precision_name(precision), graph ? "on" : "off"));
    for (const auto& n : data.notes) run.log(n, cfg.progress != "none");
    for (const auto& w : warnings) run.log("warning | " + w);
    if (comm) {
      run.log(fmt::format("data-parallel | {} ranks ({}) | {} images per rank per step | timeout {} s | "
                          "BatchNorm statistics {}",
                          comm->world_size(), comm->backend_name(), cfg.batch_size / comm->world_size(),
                          cfg.dist_timeout, cfg.sync_bn ? "synchronised" : "per rank"));
    }
  }
  model->to(device);
  if (comm) {
    // The replicas start identical (rank 0's tensors), whatever each rank initialised or loaded.
    std::vector<torch::Tensor> ts = model->parameters();
    for (auto& b : model->buffers()) ts.push_back(b);
    for (auto& st : opt->state()) {
      for (auto& t : st) ts.push_back(t);
    }
    torch::NoGradGuard ng;
    comm->broadcast(ts, 0);
  }

  if (comm && cfg.sync_bn) {
    model->set_sync_batch_norm([&](const torch::Tensor& t) { return comm->sum_over_ranks(t); });
  }
  TrainContext ctx{cfg, data, *model, *opt, &run, device};
  ctx.comm = comm.get();
  ctx.step = start;
  ctx.total_steps = total;
  ctx.steps_per_epoch = spe;
  ctx.prune_events = meta.value("prune_events", json::array());
  double best_test = meta.value("best_test_accuracy", 0.0);
  double best_val = meta.value("best_val_accuracy", 0.0);
  double test_at_best_val = meta.value("test_accuracy_at_best_val", 0.0);
  double last_test = meta.value("test_accuracy", 0.0);
  double train_seconds = meta.value("train_seconds", 0.0);
  // Whether the test accuracy above was measured (an evaluation ran), not a 0.0 placeholder.
  bool evaluated = meta.value("evaluated", meta.contains("test_accuracy") && start > 0);
  const int64_t units0 = fresh.units(), params0 = fresh.params(), flops0 = fresh.flops();

  auto make_meta = [&](bool finished) {
    return json{{"step", ctx.step},
                {"finished", finished},
                {"config", to_json(cfg)},
                {"method", method->state()},
                {"prune_events", ctx.prune_events},
                {"best_test_accuracy", best_test},
                {"best_val_accuracy", best_val},
                {"test_accuracy_at_best_val", test_at_best_val},
                {"test_accuracy", last_test},
                {"train_seconds", train_seconds},
                {"evaluated", evaluated},
                {"seed", cfg.seed},
                {"data_order", "epoch permutation from (seed, epoch); batch = step % steps_per_epoch"}};
  };
  method->begin(ctx);
  // Training loss and accuracy since the last metrics row are summed on the device by the step
  // runner, so that a step never waits for the host; row() reads and resets them. Checkpoints
  // come right after a row.
  StepOptions so;
  so.precision = precision;
  so.graph = graph;
  so.label_smoothing = cfg.label_smoothing;
  uint64_t grad_bytes_first = 0;
  if (comm) {
    // Gradient averaging overlapped with backward: buckets start as backward completes them.
    so.before_backward = [&](const std::vector<torch::Tensor>& ps) { comm->begin_gradients(ps); };
    so.sync_gradients = [&](const std::vector<torch::Tensor>&) {
      comm->finish_gradients();
      if (grad_bytes_first == 0) grad_bytes_first = comm->last_gradient_bytes();
    };
  }
  StepRunner runner(ctx, *method, so);
  auto row = [&](double lr) {
    const auto& a = model->arch();
    json r{{"step", ctx.step},
           {"epoch", static_cast<double>(ctx.step) / static_cast<double>(spe)},
           {"lr", lr},
           {"live_units", a.units()},
           {"live_units_per_group", groups_json(a)},
           {"params", a.params()},
           {"flops", a.flops()},
           {"elapsed_seconds", train_seconds}};
    if (runner.seen() > 0) {
      torch::Tensor ls = runner.loss_sum().clone(), cs = runner.correct_sum().clone();
      double n = static_cast<double>(runner.seen());
      if (comm) {  // every rank's share of the steps since the last row
        comm->all_reduce(ls, dist::ReduceOp::Sum);
        comm->all_reduce(cs, dist::ReduceOp::Sum);
        n *= static_cast<double>(comm->world_size());
      }
      r["train_loss"] = ls.item<double>() / n;
      r["train_accuracy"] = static_cast<double>(cs.item<int64_t>()) / n;
      runner.reset_sums();
    }
    if (comm) {
      r["allreduce_bytes_per_step"] = comm->last_gradient_bytes();
      const auto [early, buckets] = comm->last_overlap();
      r["allreduce_buckets"] = buckets;
      r["allreduce_buckets_started_in_backward"] = early;
    }
    r.update(method->metrics(ctx));
    return r;
  };
  auto evaluate_now = [&](json& r) {
    if (!writer) return;  // rank 0 evaluates (its replica is the checkpoint's)
    const auto te = evaluate(*model, data.test, cfg.eval_batch_size, device);
    last_test = te.accuracy;
    best_test = std::max(best_test, te.accuracy);
    r["test_accuracy"] = te.accuracy;
    r["test_loss"] = te.loss;
    std::string line = fmt::format("eval step {} | epoch {:.2f} | test_acc {:.4f} | test_loss {:.4f}",
                                   ctx.step, static_cast<double>(ctx.step) / spe, te.accuracy, te.loss);
    if (data.val.size() > 0) {
      const auto va = evaluate(*model, data.val, cfg.eval_batch_size, device);
      r["val_accuracy"] = va.accuracy;
      r["val_loss"] = va.loss;
      if (va.accuracy > best_val) {
        best_val = va.accuracy;
        test_at_best_val = te.accuracy;
      }
      line += fmt::format(" | val_acc {:.4f}", va.accuracy);
    }
    line += fmt::format(" | live {} | params {}", model->arch().units(), model->arch().params());
    run.log(line, cfg.progress != "none");
  };

  report::Progress progress(writer ? cfg.progress : "none", total, start, cfg.batch_size);
  const int64_t stop = cfg.stop_after > 0 ? std::min(total, cfg.stop_after) : total;
  double lr = lr_sched.at(ctx.step);

  InterruptGuard interrupt_guard(writer && cfg.progress != "none");
  bool interrupted = false;
  while (ctx.step < stop && !interrupted) {
    const auto t0 = std::chrono::steady_clock::now();
    method->prune_point(ctx);
    auto [x, y] = batcher.batch(ctx.step);
    if (comm) {  // this rank's share of the global batch
      const int64_t b = cfg.batch_size / comm->world_size();
      x = x.narrow(0, comm->rank() * b, b);
      y = y.narrow(0, comm->rank() * b, b);
    }
    x = x.to(device, true);
    y = y.to(device, true);
    lr = lr_sched.at(ctx.step);
    runner.run(x, y, lr);
    // A NaN is looked for on the host at every step on the CPU, and at logging points on a GPU
    // (reading a device value waits for the GPU); the summed loss carries a NaN forward.
    // An interrupt is acted on at the same step by every rank: with ranks, it travels with the
    // NaN check (every step on the CPU, at logging points on a GPU).
    if (!comm) interrupted = g_interrupt != 0;
    if (device.is_cpu() || (ctx.step + 1) % cfg.log_every == 0) {
      double lv = runner.last_loss().item<double>();
      if (std::isfinite(lv) && !device.is_cpu()) lv = runner.loss_sum().item<double>();
      if (comm) {  // a NaN on any rank stops every rank at the same step
        auto bad = torch::tensor({std::isfinite(lv) ? 0.0f : 1.0f, g_interrupt != 0 ? 1.0f : 0.0f});
        ctx.all_reduce_max(bad);
        if (bad[0].item<float>() > 0 && std::isfinite(lv)) lv = std::nan("");
        interrupted = bad[1].item<float>() > 0;
      }
      if (!std::isfinite(lv)) {
        progress.finish();
        const bool kept = file_exists(run.file("model.ckpt"));
        run.log(fmt::format("diverged step {} | loss {} | {}", ctx.step, lv,
                            kept ? "last checkpoint kept" : "no checkpoint had been written"),
                cfg.progress != "none");  // the error below says it in any case
        json s = make_meta(false);
        s["status"] = "diverged";
        s["run_dir"] = cfg.out;
        s["diverged_at_step"] = ctx.step;
        s["checkpoint"] = kept;
        if (!evaluated) {  // never measured: not 0.0
          for (const char* k : {"test_accuracy", "best_test_accuracy", "best_val_accuracy",
                                "test_accuracy_at_best_val"}) {
            s[k] = nullptr;
          }
        }
        run.write_json("summary.json", s);
        throw Error(fmt::format("loss became {} at step {}", lv, ctx.step),
                    kept ? "lower --lr (or the regularisation strength) and start again with --overwrite; "
                           "the last checkpoint in " + cfg.out + " is intact, but --resume from it "
                           "replays the same steps"
                         : "lower --lr (or the regularisation strength) and start again with "
                           "--overwrite; the run diverged before its first checkpoint");
      }
    }
    ++ctx.step;
    train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    // The last step's row comes after the final prune point, below.
    const bool epoch_end = ctx.step % spe == 0 && ctx.step < total;
    if (ctx.step < total &&
        (ctx.step % cfg.log_every == 0 || epoch_end || ctx.step == stop || interrupted)) {
      json r = row(lr);
      if (epoch_end) {
        evaluate_now(r);
        evaluated = true;
      }
      run.metrics(r);
      progress.update(ctx.step,
                      fmt::format("epoch {}/{} | loss {:.4f} | acc {:.2f}%{} | live {:.1f}% | params {:.1f}%",
                                  (ctx.step - 1) / spe + 1, (total + spe - 1) / spe,
                                  r.value("train_loss", 0.0), 100 * r.value("train_accuracy", 0.0),
                                  r.contains("test_accuracy")
                                      ? fmt::format(" | test {:.2f}%", 100 * r["test_accuracy"].get<double>())
                                      : "",
                                  100.0 * static_cast<double>(model->arch().units()) / static_cast<double>(units0),
                                  100.0 * static_cast<double>(model->arch().params()) / static_cast<double>(params0)),
                      epoch_end);
      if (epoch_end && writer) save_checkpoint(run.file("model.ckpt"), *model, opt.get(), make_meta(false));
    } else {
      progress.update(ctx.step, fmt::format("epoch {}/{}", (ctx.step - 1) / spe + 1, (total + spe - 1) / spe));
    }
    if (writer && cfg.checkpoint_every > 0 && ctx.step % cfg.checkpoint_every == 0 && ctx.step < stop &&
        ctx.step % spe != 0 && !interrupted) {
      save_checkpoint(run.file("model.ckpt"), *model, opt.get(), make_meta(false));
    }
  }
  progress.finish();

  if (ctx.step < total) {
    if (writer) save_checkpoint(run.file("model.ckpt"), *model, opt.get(), make_meta(false));
    json s = make_meta(false);
    s["run_dir"] = cfg.out;
    if (interrupted) {
      s["status"] = "interrupted";
      s["interrupted_at_step"] = ctx.step;
      if (!evaluated) {
        for (const char* k : {"test_accuracy", "best_test_accuracy", "best_val_accuracy",
                              "test_accuracy_at_best_val"}) {
          s[k] = nullptr;
        }
      }
      run.write_json("summary.json", s);
      run.log(fmt::format("interrupted step {} | checkpoint {} | continue with: demp train --resume --out {}",
                          ctx.step, run.file("model.ckpt"), cfg.out),
              writer);
      return s;
    }
    run.log(fmt::format("stopped step {} | checkpoint {} | continue with --resume", ctx.step,
                        run.file("model.ckpt")),
            true);
    s["status"] = "stopped";
    return s;
  }

  // After the last step: one more prune point, then the final evaluation.
  method->prune_point(ctx);
  json r = row(lr);
  bool replicas_identical = true;
  if (comm) {
    // The check that data-parallel training kept one model: parameters bit for bit, every rank.
    ctx.sync_buffers();
    replicas_identical = comm->all_equal(model->parameters());
    if (!replicas_identical) {
      run.log("warning | the ranks' parameters differ at the end of training (replicas drifted)", true);
    }
    if (!writer) {
      json steps = json::array();
      for (const auto& e : ctx.prune_events) steps.push_back(e["step"]);
      return json{{"status", "replica"},           {"rank", comm->rank()},
                  {"units_final", model->arch().units()}, {"params_final", model->arch().params()},
                  {"prune_steps", steps},          {"replicas_identical", replicas_identical}};
    }
  }
  evaluate_now(r);
  run.metrics(r);
  save_checkpoint(run.file("model.ckpt"), *model, opt.get(), make_meta(true));
  const auto& a = model->arch();
  json summary{{"status", "finished"},
               {"run_dir", cfg.out},
               {"method", cfg.method},
               {"model", cfg.model},
               {"width", cfg.width},
               {"dataset", data.name},
               {"seed", cfg.seed},
               {"steps", total},
               {"epochs", static_cast<double>(total) / static_cast<double>(spe)},
               {"batch_size", cfg.batch_size},
               {"optimizer", cfg.optimizer},
               {"test_accuracy", last_test},
               {"best_test_accuracy", best_test},
               {"units_initial", units0},
               {"units_final", a.units()},
               {"params_initial", params0},
               {"params_final", a.params()},
               {"flops_initial", flops0},
               {"flops_final", a.flops()},
               {"live_units_per_group", groups_json(a)},
               {"train_seconds", train_seconds},
               {"device", device.str()},
               {"precision", precision_name(precision)},
               {"graph", graph},
               {"graph_captures", runner.captures()},
               {"world_size", comm ? comm->world_size() : 1},
               {"prune_events", ctx.prune_events},
               {"method_state", method->state()}};
  if (method->state().contains("collapsed_groups")) {
    summary["warning"] = "some unit groups died entirely (the network collapsed there); see log.txt";
  }
  if (data.train.stream) summary["bad_images_skipped"] = data.train.stream->skipped();
  if (data.val.size() > 0) {
    summary["best_val_accuracy"] = best_val;
    summary["test_accuracy_at_best_val"] = test_at_best_val;
  }
  if (comm) {
    summary["dist_backend"] = comm->backend_name();
    summary["replicas_identical"] = replicas_identical;
    summary["allreduce_bytes_per_step_initial"] = grad_bytes_first;
    summary["allreduce_bytes_per_step_final"] = comm->last_gradient_bytes();
  }
  run.write_json("summary.json", summary);
  run.log(fmt::format("done step {} | test_acc {:.4f} | best {:.4f} | units {}/{} | params {}/{} | "
                      "train_seconds {:.1f}",
                      total, last_test, best_test, a.units(), units0, a.params(), params0,
                      train_seconds));
  return summary;
}

}  // namespace demp::train
