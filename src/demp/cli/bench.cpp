#include "demp/cli/bench.h"

#include <fmt/format.h>
#include <torch/torch.h>
#include <CLI/CLI.hpp>

#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/common/process.h"
#include "demp/common/seeds.h"
#include "demp/export/export.h"
#include "demp/methods/method.h"
#include "demp/nn/model.h"
#include "demp/train/config.h"
#include "demp/train/optim.h"
#include "demp/train/step.h"
#include "demp/train/trainer.h"

#ifndef DEMP_SOURCE_DIR
#define DEMP_SOURCE_DIR "."
#endif

namespace demp::cli {

void add_bench_options(CLI::App* app, BenchOptions& o) {
  app->add_option("--model", o.model, "mlp, vgg16, resnet18, resnet50")->capture_default_str();
  app->add_option("--width", o.widths,
                  "width multiplier(s), comma-separated: the first is the reference for the "
                  "width speed-up table (e.g. 1.0,0.25)")
      ->capture_default_str();
  app->add_option("--mlp-widths", o.mlp_widths, "MLP hidden widths")->capture_default_str();
  app->add_option("--batch-size", o.batches, "batch size(s), comma-separated")->capture_default_str();
  app->add_option("--device", o.device, "cpu, cuda, cuda:N or auto (both sides)")->capture_default_str();
  app->add_option("--precision", o.precision, "auto (bf16 on CUDA), bf16 or fp32 (both sides)")
      ->capture_default_str();
  app->add_option("--graph", o.graph,
                  "demp's step as a CUDA graph: auto (on for CUDA), on, off (PyTorch stays eager)")
      ->capture_default_str();
  app->add_option("--in-channels", o.in_channels, "input channels")->capture_default_str();
  app->add_option("--input-size", o.input_size, "input height and width")->capture_default_str();
  app->add_option("--classes", o.classes, "classes")->capture_default_str();
  app->add_option("--optimizer", o.optimizer, "sgd, sgdw, adamw")->capture_default_str();
  app->add_option("--steps", o.steps, "timed steps per round")->capture_default_str();
  app->add_option("--warmup", o.warmup, "untimed steps before each round")->capture_default_str();
  app->add_option("--rounds", o.rounds, "alternating rounds (median reported)")->capture_default_str();
  app->add_option("--threads", o.threads, "CPU threads, both sides (0: all cores)")->capture_default_str();
  app->add_option("--python", o.python, "Python with torch for the reference (default: the project's .venv)");
  app->add_option("--reference-script", o.reference_script,
                  "the reference (default: bench/reference_step.py)");
  app->add_flag("--no-reference", o.no_reference, "time demp only");
  app->add_option("--json", o.json_out, "also write the results to this JSON file");
  app->add_flag("--inference", o.inference,
                "time inference instead: latency (batch 1) and throughput, pruned vs dense, in "
                "demp and ONNX Runtime")
      ->group("inference");
  app->add_option("--checkpoint", o.checkpoint,
                  "--inference: the pruned network (run directory, model.ckpt or torch export)")
      ->group("inference");
  app->add_option("--inference-batch", o.inference_batch, "--inference: throughput batch size")
      ->capture_default_str()
      ->group("inference");
  app->add_option("--latency-steps", o.latency_steps, "--inference: timed batch-1 forwards per round")
      ->capture_default_str()
      ->group("inference");
  app->add_option("--ort-script", o.ort_script,
                  "--inference: the ONNX Runtime side (default: bench/inference_ort.py)")
      ->group("inference");
}

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

template <typename T>
std::vector<T> parse_list(const std::string& text, const char* flag) {
  std::vector<T> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      const double v = std::stod(item, &used);
      if (used != item.size() || !(v > 0)) throw std::invalid_argument(item);
      out.push_back(static_cast<T>(v));
    } catch (const std::exception&) {
      throw Error(fmt::format("bad {} '{}'", flag, text), "give positive numbers separated by commas");
    }
  }
  if (out.empty()) throw Error(fmt::format("{} is empty", flag), "e.g. 1.0,0.25");
  return out;
}

// The Python side of a paired benchmark: --python (default: the project's .venv) and the script
// (default: bench/<default_script>); both must exist unless the reference is switched off.
std::pair<std::string, std::string> python_side(const BenchOptions& o, const std::string& script_option,
                                                const char* default_script, const char* what) {
  std::string python = o.python, script = script_option;
  if (python.empty()) python = std::string(DEMP_SOURCE_DIR) + "/.venv/bin/python";
  if (script.empty()) script = std::string(DEMP_SOURCE_DIR) + "/bench/" + default_script;
  if (!o.no_reference && (!file_exists(python) || !file_exists(script))) {
    throw Error(std::string(what) + " needs " + python + " and " + script,
                "run scripts/setup, pass --python and the script's option, or use --no-reference");
  }
  return {python, script};
}

void synchronize(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize(d.index());
}

// Seconds per eval-mode forward, over `n` forwards after `warmup` untimed ones.
double time_forward(const nn::Model& model, const torch::Tensor& x, int64_t warmup, int64_t n) {
  c10::InferenceMode guard;
  for (int64_t i = 0; i < warmup; ++i) model.forward(x, false);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < n; ++i) model.forward(x, false);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s / static_cast<double>(std::max<int64_t>(1, n));
}

// Runs a Python benchmark helper; its answer is the last line of its output that is a JSON object.
nlohmann::json run_helper(const std::vector<std::string>& argv) {
  std::string answer;
  const auto r = run_process(argv, [&](const std::string& line) {
    if (!line.empty() && line[0] == '{') answer = line;
  });
  if (r.exit_code != 0 || answer.empty()) {
    throw Error("the benchmark helper failed (" + r.last_line + "): " + shell_join(argv),
                "run it by hand to see why");
  }
  return nlohmann::json::parse(answer);
}

// What every (width, batch) point of a training-step benchmark shares.
struct StepBench {
  int threads = 1;
  torch::Device device = torch::kCPU;
  train::Precision precision = train::Precision::Fp32;
  bool graph = false;
  std::string prec;  ///< the precision's name
  bool reference = false;
  std::string python, script;
};

// The PyTorch reference's img/s on the network of `arch_file` (the file is removed if it fails).
double reference_step(const BenchOptions& o, const StepBench& s, const std::string& arch_file,
                      int64_t batch) {
  const std::vector<std::string> cmd{s.python,       s.script,
                                     "--arch",       arch_file,
                                     "--batch-size", std::to_string(batch),
                                     "--optimizer",  o.optimizer,
                                     "--steps",      std::to_string(o.steps),
                                     "--warmup",     std::to_string(o.warmup),
                                     "--threads",    std::to_string(s.threads),
                                     "--device",     s.device.str(),
                                     "--precision",  s.prec};
  nlohmann::json out;
  try {
    out = run_helper(cmd);
  } catch (...) {
    remove_file(arch_file);
    throw;
  }
  return out.at("images_per_second").get<double>();
}

// Rounds of (demp steps, PyTorch steps) on one network and batch: a line per round, and the
// medians as one row of the results.
nlohmann::json bench_point(const BenchOptions& o, const StepBench& s, double width, int64_t batch) {
  nn::ModelOptions mo;
  mo.model = o.model;
  mo.width = width;
  mo.mlp_widths = nn::parse_mlp_widths(o.mlp_widths);
  mo.in_channels = o.in_channels;
  mo.in_height = mo.in_width = o.input_size;
  mo.classes = o.classes;
  const nn::Arch arch = nn::build_arch(mo);
  train::TrainConfig c;  // what the step runner and the (dense) method read: the defaults
  c.method = "dense";
  data::DataBundle shape;
  shape.channels = o.in_channels;
  shape.height = shape.width = o.input_size;
  shape.classes = o.classes;
  nn::Model model(arch, 0);
  model.to(s.device);
  train::OptimOptions oo;
  oo.name = o.optimizer;
  auto opt = train::make_optimizer(oo);
  auto gen = make_generator(0, kMisc, 0);
  const auto x =
      torch::randn({batch, o.in_channels, o.input_size, o.input_size}, gen, torch::kFloat).to(s.device);
  const auto y = torch::randint(o.classes, {batch}, gen, torch::kLong).to(s.device);
  auto method = methods::make_method(c);
  train::TrainContext ctx{c, shape, model, *opt, nullptr, s.device};
  ctx.total_steps = 1 << 30;
  ctx.steps_per_epoch = 1 << 20;
  method->begin(ctx);
  train::StepOptions so;
  so.precision = s.precision;
  so.graph = s.graph;
  train::StepRunner runner(ctx, *method, so);
  auto time_demp = [&] {
    for (int64_t i = 0; i < o.warmup; ++i, ++ctx.step) runner.run(x, y, 1e-3);
    synchronize(s.device);
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < o.steps; ++i, ++ctx.step) runner.run(x, y, 1e-3);
    synchronize(s.device);
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return static_cast<double>(o.steps * batch) / sec;
  };
  const std::string arch_file = temp_directory() + fmt::format("/demp-bench-{}.json", ::getpid());
  write_file_atomic(arch_file, nlohmann::json(arch).dump());
  std::vector<double> ours, theirs;
  for (int64_t r = 0; r < o.rounds; ++r) {
    ours.push_back(time_demp());
    std::string line =
        fmt::format("width {} batch {} | round {} | demp {:.1f} img/s", width, batch, r + 1, ours.back());
    if (s.reference) {
      theirs.push_back(reference_step(o, s, arch_file, batch));
      line +=
          fmt::format(" | pytorch {:.1f} img/s | ratio {:.3f}", theirs.back(), ours.back() / theirs.back());
    }
    fmt::print("{}\n", line);
    std::fflush(stdout);
  }
  remove_file(arch_file);
  nlohmann::json res{{"model", o.model},
                     {"width", width},
                     {"batch", batch},
                     {"device", s.device.str()},
                     {"precision", s.prec},
                     {"graph", s.graph},
                     {"threads", s.threads},
                     {"optimizer", o.optimizer},
                     {"params", arch.params()},
                     {"flops", arch.flops()},
                     {"demp_images_per_second", median(ours)},
                     {"graph_captures", runner.captures()}};
  if (s.reference) {
    res["pytorch_images_per_second"] = median(theirs);
    res["ratio"] = median(ours) / median(theirs);
  }
  return res;
}

// The closing table: every point, with its speed relative to the first width at its batch.
void print_step_table(const nlohmann::json& results, double first_width) {
  fmt::print("{:>6} {:>6} {:>14} {:>16} {:>14} {:>22}\n", "width", "batch", "demp img/s", "pytorch img/s",
             "demp/pytorch", "vs first width (demp)");
  for (const auto& r : results) {
    double base = 0;
    for (const auto& q : results) {
      if (q["batch"] == r["batch"] && q["width"].get<double>() == first_width)
        base = q["demp_images_per_second"];
    }
    const double rel = r["demp_images_per_second"].get<double>() / base;
    fmt::print("{:>6} {:>6} {:>14.1f} {:>16} {:>14} {:>21.2f}x\n", r["width"].get<double>(),
               r["batch"].get<int64_t>(), r["demp_images_per_second"].get<double>(),
               r.contains("pytorch_images_per_second")
                   ? fmt::format("{:.1f}", r["pytorch_images_per_second"].get<double>())
                   : "-",
               r.contains("ratio") ? fmt::format("{:.3f}x", r["ratio"].get<double>()) : "-", rel);
  }
}

int bench_threads(const BenchOptions& o) {
  return o.threads > 0 ? static_cast<int>(o.threads)
                       : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// The ONNX Runtime side of --inference: the dense, pruned and pruned-padded-to-16 networks
// exported and timed by the helper; adds res["onnxruntime"] and res["onnxruntime_version"].
void ort_inference(const BenchOptions& o, const std::string& python, const std::string& script, int threads,
                   const export_::ModelSource& src, const nn::Model& dense, const nn::Model& pruned,
                   nlohmann::json& res) {
  const std::string base = temp_directory() + fmt::format("/demp-bench-{}", ::getpid());
  const export_::ExportInfo info{src.norm, nlohmann::json::object()};
  // The pruned network also padded to multiples of 16 channels (export --pad-channels 16):
  // ONNX Runtime's blocked convolutions need such widths.
  export_::write_onnx(base + "-dense.onnx", dense, info);
  export_::write_onnx(base + "-pruned.onnx", pruned, info);
  export_::write_onnx(base + "-pruned16.onnx", pruned, info, export_::kMaxOpset, 16);
  const std::vector<std::string> cmd{python,
                                     script,
                                     "--model",
                                     "dense=" + base + "-dense.onnx",
                                     "--model",
                                     "pruned=" + base + "-pruned.onnx",
                                     "--model",
                                     "pruned16=" + base + "-pruned16.onnx",
                                     "--batch-sizes",
                                     "1," + std::to_string(o.inference_batch),
                                     "--latency-steps",
                                     std::to_string(o.latency_steps),
                                     "--steps",
                                     std::to_string(o.steps),
                                     "--warmup",
                                     std::to_string(o.warmup),
                                     "--rounds",
                                     std::to_string(o.rounds),
                                     "--threads",
                                     std::to_string(threads)};
  auto cleanup = [&] {
    for (const char* n : {"dense", "pruned", "pruned16"}) remove_file(base + "-" + n + ".onnx");
  };
  nlohmann::json ort_res;
  try {
    ort_res = run_helper(cmd);
  } catch (...) {
    cleanup();
    throw;
  }
  cleanup();
  const std::string bk = std::to_string(o.inference_batch);
  for (const char* n : {"dense", "pruned", "pruned16"}) {
    const auto& m = ort_res.at("results").at(n);
    res["onnxruntime"][n] = {
        {"latency_ms", 1e3 * m.at("1").get<double>()},
        {"images_per_second", static_cast<double>(o.inference_batch) / m.at(bk).get<double>()}};
  }
  res["onnxruntime_version"] = ort_res.value("onnxruntime", "");
}

// The closing table of --inference, and each engine's speed-ups (added to `res`).
void print_inference_table(const BenchOptions& o, nlohmann::json& res) {
  fmt::print("{:<12} {:<8} {:>18} {:>24}\n", "engine", "network", "latency b=1 (ms)",
             fmt::format("throughput b={} (img/s)", o.inference_batch));
  for (const char* engine : {"demp", "onnxruntime"}) {
    if (!res.contains(engine)) continue;
    for (const char* n : {"dense", "pruned", "pruned16"}) {
      if (!res[engine].contains(n)) continue;
      fmt::print("{:<12} {:<8} {:>18.3f} {:>24.0f}\n", engine, n, res[engine][n]["latency_ms"].get<double>(),
                 res[engine][n]["images_per_second"].get<double>());
    }
    const double sl =
        res[engine]["dense"]["latency_ms"].get<double>() / res[engine]["pruned"]["latency_ms"].get<double>();
    const double st = res[engine]["pruned"]["images_per_second"].get<double>() /
                      res[engine]["dense"]["images_per_second"].get<double>();
    res[engine]["speedup_latency"] = sl;
    res[engine]["speedup_throughput"] = st;
    fmt::print("{:<12} pruned vs dense: latency {:.2f}x faster, throughput {:.2f}x\n", engine, sl, st);
    if (res[engine].contains("pruned16")) {
      const double pl = res[engine]["dense"]["latency_ms"].get<double>() /
                        res[engine]["pruned16"]["latency_ms"].get<double>();
      const double pt = res[engine]["pruned16"]["images_per_second"].get<double>() /
                        res[engine]["dense"]["images_per_second"].get<double>();
      res[engine]["speedup_latency_pruned16"] = pl;
      res[engine]["speedup_throughput_pruned16"] = pt;
      fmt::print("{:<12} pruned16 vs dense: latency {:.2f}x faster, throughput {:.2f}x\n", engine, pl, pt);
    }
  }
}

}  // namespace

int run_bench(const BenchOptions& o) {
  if (o.inference) return run_inference_bench(o);
  if (o.steps < 1 || o.rounds < 1 || o.warmup < 0) {
    throw Error("--steps and --rounds must be positive, --warmup not negative");
  }
  StepBench s;
  s.threads = bench_threads(o);
  at::set_num_threads(s.threads);
  s.device = train::resolve_device(o.device);
  s.precision = train::parse_precision(o.precision, s.device);
  s.graph = train::parse_graph(o.graph, s.device);
  if (s.device.is_cuda()) at::globalContext().setBenchmarkCuDNN(true);
  const auto widths = parse_list<double>(o.widths, "--width");
  const auto batches = parse_list<int64_t>(o.batches, "--batch-size");

  std::tie(s.python, s.script) =
      python_side(o, o.reference_script, "reference_step.py", "the PyTorch reference");
  s.reference = !o.no_reference;
  s.prec = train::precision_name(s.precision);
  fmt::print(
      "bench | {} | input {}x{}x{} | {} | {} | {} | demp step {} | threads {} | {} rounds x {} "
      "steps (after {} warm-up)\n",
      o.model, o.in_channels, o.input_size, o.input_size, o.optimizer, s.device.str(), s.prec,
      s.graph ? "CUDA graph" : "eager", s.threads, o.rounds, o.steps, o.warmup);
  if (s.reference) {
    fmt::print("reference | PyTorch eager (Python), same network from demp's architecture, {}{}\n",
               s.device.is_cuda() ? "channels-last, cudnn.benchmark, fused optimizer, " : "", s.prec);
  }

  nlohmann::json results = nlohmann::json::array();
  for (const double width : widths) {
    for (const int64_t batch : batches) results.push_back(bench_point(o, s, width, batch));
  }
  print_step_table(results, widths[0]);
  const nlohmann::json doc = results.size() == 1 ? results[0] : nlohmann::json{{"results", results}};
  if (!o.json_out.empty()) write_file_atomic(o.json_out, doc.dump(2) + "\n");
  return 0;
}

int run_inference_bench(const BenchOptions& o) {
  if (o.checkpoint.empty()) {
    throw Error("bench --inference needs the pruned network",
                "pass --checkpoint RUN (a run directory, its model.ckpt or a torch export)");
  }
  if (o.inference_batch < 1 || o.latency_steps < 1 || o.steps < 1 || o.rounds < 1) {
    throw Error("--inference-batch, --latency-steps, --steps and --rounds must be positive");
  }
  const int threads = bench_threads(o);
  at::set_num_threads(threads);
  const auto src = export_::load_source(o.checkpoint);
  if (src.kind == export_::SourceKind::Onnx) {
    throw Error("bench --inference needs the network's weights, not an ONNX file",
                "give the run directory, its model.ckpt or a torch export");
  }
  const nn::Model pruned(src.arch, src.layers);
  // The dense counterpart: same family and options at the initial widths. Its weights are a fresh
  // initialisation, which costs the same to run as trained ones.
  const nlohmann::json config = src.meta.value("config", nlohmann::json::object());
  const nn::Model dense(export_::dense_arch(src.arch, config), 0);
  const nn::Arch& a = pruned.arch();
  auto gen = make_generator(0, kMisc, 1);
  const auto x1 = torch::randn({1, a.in_channels, a.in_height, a.in_width}, gen, torch::kFloat);
  const auto xb =
      torch::randn({o.inference_batch, a.in_channels, a.in_height, a.in_width}, gen, torch::kFloat);

  const auto [python, script] =
      python_side(o, o.ort_script, "inference_ort.py", "the ONNX Runtime side (with onnxruntime)");
  fmt::print(
      "bench --inference | {} | {} of {} units, {} vs {} FLOPs/image | input {}x{}x{} | "
      "threads {} | {} rounds | latency: {} forwards at batch 1, throughput: {} at "
      "batch {}\n",
      src.path, a.units(), a.initial_units(), a.flops(), dense.arch().flops(), a.in_channels, a.in_height,
      a.in_width, threads, o.rounds, o.latency_steps, o.steps, o.inference_batch);

  // demp: rounds alternate dense and pruned so that drifts in machine load hit both alike.
  std::vector<double> lat[2], thr[2];  // [0] dense, [1] pruned
  const nn::Model* nets[2] = {&dense, &pruned};
  // One untimed pass over every (network, batch) first: oneDNN creates its primitives and the
  // allocator grows on first use, which would otherwise land in round 1.
  for (const nn::Model* n : nets) {
    time_forward(*n, x1, o.warmup, 1);
    time_forward(*n, xb, 1, 1);
  }
  for (int64_t r = 0; r < o.rounds; ++r) {
    for (int k = 0; k < 2; ++k) {
      lat[k].push_back(time_forward(*nets[k], x1, o.warmup, o.latency_steps));
      thr[k].push_back(static_cast<double>(o.inference_batch) /
                       time_forward(*nets[k], xb, o.warmup, o.steps));
    }
    fmt::print("round {} | demp dense {:.3f} ms, {:.0f} img/s | pruned {:.3f} ms, {:.0f} img/s\n", r + 1,
               1e3 * lat[0].back(), thr[0].back(), 1e3 * lat[1].back(), thr[1].back());
  }
  nlohmann::json res{{"checkpoint", src.path},
                     {"model", a.model},
                     {"threads", threads},
                     {"units", a.units()},
                     {"units_dense", a.initial_units()},
                     {"flops", a.flops()},
                     {"flops_dense", dense.arch().flops()},
                     {"params", a.params()},
                     {"params_dense", dense.arch().params()},
                     {"throughput_batch", o.inference_batch}};
  const char* names[2] = {"dense", "pruned"};
  for (int k = 0; k < 2; ++k) {
    res["demp"][names[k]] = {{"latency_ms", 1e3 * median(lat[k])}, {"images_per_second", median(thr[k])}};
  }
  if (!o.no_reference) ort_inference(o, python, script, threads, src, dense, pruned, res);
  print_inference_table(o, res);
  if (!o.json_out.empty()) write_file_atomic(o.json_out, res.dump(2) + "\n");
  return 0;
}

}  // namespace demp::cli
