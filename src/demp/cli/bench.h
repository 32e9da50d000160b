#pragma once
#include <cstdint>
#include <string>

namespace CLI {
class App;
}

namespace demp::cli {

struct BenchOptions {
  std::string model = "resnet18";
  std::string widths = "0.25";  ///< one or more, comma-separated
  std::string mlp_widths = "512,256";
  std::string batches = "128";  ///< one or more, comma-separated
  std::string device = "cpu";
  std::string precision = "auto";
  std::string graph = "auto";
  int64_t in_channels = 1, input_size = 28, classes = 10;
  std::string optimizer = "adamw";
  int64_t steps = 20, warmup = 5, rounds = 3, threads = 0;
  std::string python;  ///< the reference interpreter (default: .venv/bin/python beside the source)
  std::string reference_script;
  bool no_reference = false;
  std::string json_out;
  // --inference: eval-mode forward latency and throughput, pruned versus dense
  bool inference = false;
  std::string checkpoint;         ///< the pruned network: run directory, checkpoint or torch export
  int64_t inference_batch = 256;  ///< throughput batch size (latency is at batch 1)
  int64_t latency_steps = 200;    ///< timed batch-1 forwards per round
  std::string ort_script;         ///< ONNX Runtime side (default: bench/inference_ort.py)
};

void add_bench_options(CLI::App* app, BenchOptions& o);
/// For every (width, batch): rounds of (demp steps, PyTorch steps) on the same network, batch,
/// optimizer, precision, device and threads; prints img/s of each and the ratio, then a table
/// with the speed of every width relative to the first one at the same batch. With `inference`: see
/// run_inference_bench.
int run_bench(const BenchOptions& o);
/// Inference latency (batch 1) and throughput (batch `inference_batch`) of a pruned network and
/// its dense counterpart (initial widths), in demp (eval forward under InferenceMode) and in ONNX
/// Runtime (both exported to ONNX, timed by bench/inference_ort.py); medians over rounds.
int run_inference_bench(const BenchOptions& o);

}  // namespace demp::cli
