#pragma once
#include <cstdint>
#include <string>

namespace CLI { class App; }

namespace demp::cli {

struct BenchOptions {
  std::string model = "resnet18";
  double width = 0.25;
  std::string mlp_widths = "512,256";
  int64_t batch = 128;
  int64_t in_channels = 1, input_size = 28, classes = 10;
  std::string optimizer = "adamw";
  int64_t steps = 20, warmup = 5, rounds = 3, threads = 0;
  std::string python;  ///< the reference interpreter (default: .venv/bin/python beside the source)
  std::string reference_script;
  bool no_reference = false;
  std::string json_out;
};

void add_bench_options(CLI::App* app, BenchOptions& o);
/// Runs rounds of (demp steps, PyTorch steps) on the same network, batch, optimizer and threads;
/// prints img/s of each and the ratio.
int run_bench(const BenchOptions& o);

}  // namespace demp::cli
