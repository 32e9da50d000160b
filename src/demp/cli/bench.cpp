#include "demp/cli/bench.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <unistd.h>
#include <nlohmann/json.hpp>
#include <thread>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/export/export.h"
#include "demp/nn/model.h"
#include "demp/train/config.h"
#include "demp/train/optim.h"
#include "demp/train/trainer.h"

#ifndef DEMP_SOURCE_DIR
#define DEMP_SOURCE_DIR "."
#endif

namespace demp::cli {

void add_bench_options(CLI::App* app, BenchOptions& o) {
  app->add_option("--model", o.model, "mlp, vgg16, resnet18, resnet50")->capture_default_str();
  app->add_option("--width", o.width, "width multiplier")->capture_default_str();
  app->add_option("--mlp-widths", o.mlp_widths, "MLP hidden widths")->capture_default_str();
  app->add_option("--batch-size", o.batch, "batch size")->capture_default_str();
  app->add_option("--in-channels", o.in_channels, "input channels")->capture_default_str();
  app->add_option("--input-size", o.input_size, "input height and width")->capture_default_str();
  app->add_option("--classes", o.classes, "classes")->capture_default_str();
  app->add_option("--optimizer", o.optimizer, "sgd, sgdw, adamw")->capture_default_str();
  app->add_option("--steps", o.steps, "timed steps per round")->capture_default_str();
  app->add_option("--warmup", o.warmup, "untimed steps before each round")->capture_default_str();
  app->add_option("--rounds", o.rounds, "alternating rounds (median reported)")->capture_default_str();
  app->add_option("--threads", o.threads, "CPU threads, both sides (0: all cores)")->capture_default_str();
  app->add_option("--python", o.python, "Python with torch for the reference (default: the project's .venv)");
  app->add_option("--reference-script", o.reference_script, "the reference (default: bench/reference_step.py)");
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
  app->add_option("--latency-steps", o.latency_steps,
                  "--inference: timed batch-1 forwards per round")
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

// img/s of `steps` training steps (forward, cross-entropy, backward, optimizer) after `warmup`.
double time_demp(nn::Model& model, train::Optimizer& opt, const torch::Tensor& x,
                 const torch::Tensor& y, int64_t warmup, int64_t steps) {
  auto one = [&] {
    auto params = model.parameters();
    for (auto& p : params) {
      if (p.grad().defined()) p.mutable_grad().zero_();
    }
    auto loss = at::cross_entropy_loss(model.forward(x, true), y);
    loss.backward();
    opt.step(params, 1e-3);
  };
  for (int64_t i = 0; i < warmup; ++i) one();
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i) one();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<double>(steps * x.size(0)) / s;
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

std::string run_command(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (p && std::fgets(buf, sizeof buf, p)) out += buf;
  const int rc = p ? ::pclose(p) : -1;
  const auto pos = out.rfind("\n{");
  if (rc != 0 || (pos == std::string::npos && out.rfind("{", 0) != 0)) {
    throw Error("the benchmark helper failed: " + cmd, "run it by hand to see why");
  }
  return out.substr(pos == std::string::npos ? 0 : pos + 1);
}

}  // namespace

int run_bench(const BenchOptions& o) {
  if (o.inference) return run_inference_bench(o);
  const int threads = o.threads > 0 ? static_cast<int>(o.threads)
                                    : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  train::TrainConfig c;
  c.model = o.model;
  c.width = o.width;
  c.mlp_widths = o.mlp_widths;
  data::DataBundle shape;
  shape.channels = o.in_channels;
  shape.height = shape.width = o.input_size;
  shape.classes = o.classes;
  const nn::Arch arch = nn::build_arch(train::model_options(c, shape));
  nn::Model model(arch, 0);
  train::OptimOptions oo;
  oo.name = o.optimizer;
  auto opt = train::make_optimizer(oo);
  auto gen = data::make_generator(0, data::kMisc, 0);
  const auto x = torch::randn({o.batch, o.in_channels, o.input_size, o.input_size}, gen, torch::kFloat);
  const auto y = torch::randint(o.classes, {o.batch}, gen, torch::kLong);

  std::string python = o.python, script = o.reference_script;
  if (python.empty()) python = std::string(DEMP_SOURCE_DIR) + "/.venv/bin/python";
  if (script.empty()) script = std::string(DEMP_SOURCE_DIR) + "/bench/reference_step.py";
  const bool reference = !o.no_reference;
  if (reference && (!file_exists(python) || !file_exists(script))) {
    throw Error("the PyTorch reference needs " + python + " and " + script,
                "run scripts/setup, pass --python/--reference-script, or use --no-reference");
  }
  const std::string arch_file =
      temp_directory() + fmt::format("/demp-bench-{}.json", ::getpid());
  write_file_atomic(arch_file, nlohmann::json(arch).dump());

  fmt::print("bench | {} width {} | input {}x{}x{} | batch {} | {} | threads {} | {} rounds x {} steps\n",
             o.model, o.width, o.in_channels, o.input_size, o.input_size, o.batch, o.optimizer,
             threads, o.rounds, o.steps);
  std::vector<double> ours, theirs;
  for (int64_t r = 0; r < o.rounds; ++r) {
    ours.push_back(time_demp(model, *opt, x, y, o.warmup, o.steps));
    std::string line = fmt::format("round {} | demp {:.1f} img/s", r + 1, ours.back());
    if (reference) {
      const std::string cmd = fmt::format(
          "'{}' '{}' --arch '{}' --batch-size {} --optimizer {} --steps {} --warmup {} --threads {}",
          python, script, arch_file, o.batch, o.optimizer, o.steps, o.warmup, threads);
      FILE* p = ::popen(cmd.c_str(), "r");
      std::string out;
      char buf[4096];
      while (p && std::fgets(buf, sizeof buf, p)) out += buf;
      const int rc = p ? ::pclose(p) : -1;
      const auto pos = out.rfind("{");
      if (rc != 0 || pos == std::string::npos) {
        remove_file(arch_file);
        throw Error("the PyTorch reference failed: " + cmd, "run it by hand to see why");
      }
      theirs.push_back(nlohmann::json::parse(out.substr(pos))["images_per_second"].get<double>());
      line += fmt::format(" | pytorch {:.1f} img/s | ratio {:.3f}", theirs.back(), ours.back() / theirs.back());
    }
    fmt::print("{}\n", line);
  }
  remove_file(arch_file);
  nlohmann::json res{{"model", o.model}, {"width", o.width}, {"batch", o.batch},
                     {"threads", threads}, {"optimizer", o.optimizer},
                     {"demp_images_per_second", median(ours)}};
  std::string line = fmt::format("median | demp {:.1f} img/s", median(ours));
  if (reference) {
    res["pytorch_images_per_second"] = median(theirs);
    res["ratio"] = median(ours) / median(theirs);
    line += fmt::format(" | pytorch {:.1f} img/s | demp/pytorch {:.3f}x", median(theirs),
                        median(ours) / median(theirs));
  }
  fmt::print("{}\n", line);
  if (!o.json_out.empty()) write_file_atomic(o.json_out, res.dump(2) + "\n");
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
  const int threads =
      o.threads > 0 ? static_cast<int>(o.threads)
                    : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
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
  auto gen = data::make_generator(0, data::kMisc, 1);
  const auto x1 = torch::randn({1, a.in_channels, a.in_height, a.in_width}, gen, torch::kFloat);
  const auto xb = torch::randn({o.inference_batch, a.in_channels, a.in_height, a.in_width}, gen,
                               torch::kFloat);

  std::string python = o.python, script = o.ort_script;
  if (python.empty()) python = std::string(DEMP_SOURCE_DIR) + "/.venv/bin/python";
  if (script.empty()) script = std::string(DEMP_SOURCE_DIR) + "/bench/inference_ort.py";
  const bool ort = !o.no_reference;
  if (ort && (!file_exists(python) || !file_exists(script))) {
    throw Error("the ONNX Runtime side needs " + python + " (with onnxruntime) and " + script,
                "run scripts/setup, pass --python/--ort-script, or use --no-reference");
  }
  fmt::print("bench --inference | {} | {} of {} units, {} vs {} FLOPs/image | input {}x{}x{} | "
             "threads {} | {} rounds | latency: {} forwards at batch 1, throughput: {} at "
             "batch {}\n",
             src.path, a.units(), a.initial_units(), a.flops(), dense.arch().flops(), a.in_channels,
             a.in_height, a.in_width, threads, o.rounds, o.latency_steps, o.steps,
             o.inference_batch);

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
    fmt::print("round {} | demp dense {:.3f} ms, {:.0f} img/s | pruned {:.3f} ms, {:.0f} img/s\n",
               r + 1, 1e3 * lat[0].back(), thr[0].back(), 1e3 * lat[1].back(), thr[1].back());
  }
  nlohmann::json res{{"checkpoint", src.path}, {"model", a.model}, {"threads", threads},
                     {"units", a.units()}, {"units_dense", a.initial_units()},
                     {"flops", a.flops()}, {"flops_dense", dense.arch().flops()},
                     {"params", a.params()}, {"params_dense", dense.arch().params()},
                     {"throughput_batch", o.inference_batch}};
  const char* names[2] = {"dense", "pruned"};
  for (int k = 0; k < 2; ++k) {
    res["demp"][names[k]] = {{"latency_ms", 1e3 * median(lat[k])},
                             {"images_per_second", median(thr[k])}};
  }

  if (ort) {
    const std::string base = temp_directory() + fmt::format("/demp-bench-{}", ::getpid());
    const export_::ExportInfo info{src.norm, nlohmann::json::object()};
    // The pruned network also padded to multiples of 16 channels (export --pad-channels 16):
    // ONNX Runtime's blocked convolutions need such widths.
    export_::write_onnx(base + "-dense.onnx", dense, info);
    export_::write_onnx(base + "-pruned.onnx", pruned, info);
    export_::write_onnx(base + "-pruned16.onnx", pruned, info, export_::kMaxOpset, 16);
    const std::string cmd = fmt::format(
        "'{}' '{}' --model dense='{}-dense.onnx' --model pruned='{}-pruned.onnx' "
        "--model pruned16='{}-pruned16.onnx' --batch-sizes 1,{} "
        "--latency-steps {} --steps {} --warmup {} --rounds {} --threads {}",
        python, script, base, base, base, o.inference_batch, o.latency_steps, o.steps, o.warmup,
        o.rounds, threads);
    auto cleanup = [&] {
      for (const char* n : {"dense", "pruned", "pruned16"}) remove_file(base + "-" + n + ".onnx");
    };
    nlohmann::json ort_res;
    try {
      ort_res = nlohmann::json::parse(run_command(cmd));
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

  fmt::print("{:<12} {:<8} {:>18} {:>24}\n", "engine", "network", "latency b=1 (ms)",
             fmt::format("throughput b={} (img/s)", o.inference_batch));
  for (const char* engine : {"demp", "onnxruntime"}) {
    if (!res.contains(engine)) continue;
    for (const char* n : {"dense", "pruned", "pruned16"}) {
      if (!res[engine].contains(n)) continue;
      fmt::print("{:<12} {:<8} {:>18.3f} {:>24.0f}\n", engine, n,
                 res[engine][n]["latency_ms"].get<double>(),
                 res[engine][n]["images_per_second"].get<double>());
    }
    const double sl = res[engine]["dense"]["latency_ms"].get<double>() /
                      res[engine]["pruned"]["latency_ms"].get<double>();
    const double st = res[engine]["pruned"]["images_per_second"].get<double>() /
                      res[engine]["dense"]["images_per_second"].get<double>();
    res[engine]["speedup_latency"] = sl;
    res[engine]["speedup_throughput"] = st;
    fmt::print("{:<12} pruned vs dense: latency {:.2f}x faster, throughput {:.2f}x\n", engine, sl,
               st);
    if (res[engine].contains("pruned16")) {
      const double pl = res[engine]["dense"]["latency_ms"].get<double>() /
                        res[engine]["pruned16"]["latency_ms"].get<double>();
      const double pt = res[engine]["pruned16"]["images_per_second"].get<double>() /
                        res[engine]["dense"]["images_per_second"].get<double>();
      res[engine]["speedup_latency_pruned16"] = pl;
      res[engine]["speedup_throughput_pruned16"] = pt;
      fmt::print("{:<12} pruned16 vs dense: latency {:.2f}x faster, throughput {:.2f}x\n", engine,
                 pl, pt);
    }
  }
  if (!o.json_out.empty()) write_file_atomic(o.json_out, res.dump(2) + "\n");
  return 0;
}

}  // namespace demp::cli
