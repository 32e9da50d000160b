#include "demp/cli/data_cmds.h"

#include <fmt/format.h>
#include <torch/torch.h>
#include <CLI/CLI.hpp>

#include <chrono>
#include <fstream>
#include <iostream>

#include "demp/common/error.h"
#include "demp/data/dataset.h"
#include "demp/data/image_folder.h"

namespace demp::cli {
namespace {

// The process's peak resident set (VmHWM), in MiB.
double peak_rss_mib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return 0;
}

}  // namespace

void add_data_commands(CLI::App& app, DataCommands& s) {
  s.data_cmd = app.add_subcommand("data", "data-set utilities (export-folder, bench-loader)");
  s.data_cmd->require_subcommand(1);
  s.export_cmd = s.data_cmd->add_subcommand(
      "export-folder",
      "write an in-memory data set as an image folder: OUT/train/<class>/ and "
      "OUT/val/<class>/ (val = its test split), one file per image, each written atomically");
  s.export_cmd
      ->add_option("--data", s.data, "fashion-mnist, fashion-mnist:DIR, mnist:DIR, cifar10:DIR, cifar100:DIR")
      ->capture_default_str();
  s.export_cmd->add_option("--out", s.out, "folder to write")->required();
  s.export_cmd->add_option("--format", s.format, "png (lossless) or jpeg")->capture_default_str();
  s.export_cmd->add_option("--quality", s.quality, "JPEG quality")->capture_default_str();

  s.bench_cmd = s.data_cmd->add_subcommand(
      "bench-loader", "decode + transform throughput of the image-folder loader (one JSON line)");
  s.bench_cmd->add_option("--data", s.bench_data, "imagefolder:DIR or imagenet:DIR")->required();
  s.bench_cmd->add_option("--image-size", s.image_size, "crop size")->capture_default_str();
  s.bench_cmd->add_option("--decode-threads", s.threads, "decode threads")->capture_default_str();
  s.bench_cmd->add_option("--batch-size", s.batch_size, "batch size")->capture_default_str();
  s.bench_cmd->add_option("--batches", s.batches, "timed batches")->capture_default_str();
  s.bench_cmd->add_option("--warmup", s.warmup, "untimed batches first")->capture_default_str();
  s.bench_cmd->add_option("--prefetch", s.prefetch, "batches decoded ahead")->capture_default_str();
  s.bench_cmd->add_flag("--eval", s.eval, "the evaluation transform instead of the training one");
}

int run_data_commands(const DataCommands& s) {
  if (!s.data_cmd || !*s.data_cmd) return -1;
  if (*s.export_cmd) {
    if (s.quality < 1 || s.quality > 100) throw Error("--quality must be 1 to 100", "e.g. 95");
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t n = data::export_image_folder(s.data, s.out, s.format, static_cast<int>(s.quality));
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << fmt::format("export-folder | {} | {} | {} files ({}) | {:.1f} s\n", s.data, s.out, n,
                             s.format, sec);
    return 0;
  }
  // bench-loader
  at::set_num_threads(1);
  data::LoadOptions lo;
  lo.image.image_size = s.image_size;
  lo.image.threads = s.threads;
  lo.image.prefetch = s.prefetch;
  const auto tl = std::chrono::steady_clock::now();
  const data::DataBundle b = data::load(s.bench_data, lo);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - tl).count();
  const double rss_loaded = peak_rss_mib();
  double sec = 0;
  int64_t images = 0;
  if (s.eval) {
    const int64_t n = b.test.size();
    int64_t pos = 0;
    std::chrono::steady_clock::time_point t0;
    for (int64_t k = 0; k < s.warmup + s.batches; ++k) {
      if (k == s.warmup) t0 = std::chrono::steady_clock::now();
      const int64_t e = std::min(n, pos + s.batch_size);
      data::eval_slice(b.test, pos, e);
      if (k >= s.warmup) images += e - pos;
      pos = e >= n ? 0 : e;
    }
    sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } else {
    data::Batcher batcher(b.train, s.batch_size, 0, {});
    std::chrono::steady_clock::time_point t0;
    for (int64_t k = 0; k < s.warmup + s.batches; ++k) {
      if (k == s.warmup) t0 = std::chrono::steady_clock::now();
      const auto xy = batcher.batch(k);
      if (k >= s.warmup) images += xy.first.size(0);
    }
    sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  std::cout << fmt::format(
      "{{\"data\": \"{}\", \"transform\": \"{}\", \"train_images\": {}, \"decode_threads\": {}, "
      "\"images\": {}, \"seconds\": {:.3f}, \"images_per_s\": {:.1f}, "
      "\"images_per_s_per_thread\": {:.1f}, \"load_seconds\": {:.2f}, \"peak_rss_after_load_mib\": "
      "{:.1f}, \"peak_rss_mib\": {:.1f}}}\n",
      s.bench_data, s.eval ? "eval" : "train", b.train.size(), s.threads, images, sec, images / sec,
      images / sec / static_cast<double>(s.threads), load_s, rss_loaded, peak_rss_mib());
  return 0;
}

}  // namespace demp::cli
