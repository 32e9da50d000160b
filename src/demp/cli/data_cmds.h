#pragma once
// `demp data ...`: data-set utilities. export-folder writes an in-memory data set (Fashion-MNIST,
// MNIST, CIFAR) as an image folder; bench-loader measures the image-folder loader (images/s,
// peak memory) for bench/image_loader.py.
#include <cstdint>
#include <string>

namespace CLI {
class App;
}

namespace demp::cli {

struct DataCommands {
  CLI::App* data_cmd = nullptr;
  CLI::App* export_cmd = nullptr;
  CLI::App* bench_cmd = nullptr;
  std::string data = "fashion-mnist", out, format = "png";
  int64_t quality = 95;
  // bench-loader
  std::string bench_data;
  int64_t image_size = 224, threads = 1, batch_size = 64, batches = 20, warmup = 2, prefetch = 4;
  bool eval = false;
};

void add_data_commands(CLI::App& app, DataCommands& state);
/// Runs the selected one; -1 when `data` was not selected.
int run_data_commands(const DataCommands& state);

}  // namespace demp::cli
