#pragma once
// Small helpers shared by the test files.
#include <torch/torch.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/methods/method.h"
#include "demp/nn/model.h"
#include "demp/train/optim.h"
#include "demp/train/trainer.h"

namespace demp::test {

/// The source tree: $DEMP_SOURCE_DIR (ctest sets it), else the build's source directory.
inline std::string source_dir() {
  const char* d = std::getenv("DEMP_SOURCE_DIR");
#ifdef DEMP_SOURCE_DIR
  return d && *d ? d : DEMP_SOURCE_DIR;
#else
  return d && *d ? d : "";
#endif
}

/// The message of the demp::Error that `f` throws ("" if none).
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

/// A whole training run with the project's methods, as `demp train` runs it.
inline nlohmann::json run_training(train::TrainConfig c) {
  return train::run_training(std::move(c), methods::make_method);
}

inline nn::Arch tiny_arch(const std::string& model, int64_t channels = 3, int64_t size = 16) {
  nn::ModelOptions o;
  o.model = model;
  o.in_channels = channels;
  o.in_height = o.in_width = size;
  o.classes = 5;
  o.width = model == "resnet50" ? 0.0625 : 0.125;
  o.mlp_widths = {24, 16};
  return nn::build_arch(o);
}

/// A deep copy of a model (fresh leaf tensors, gradients copied).
inline nn::Model clone_model(const nn::Model& m) {
  std::vector<nn::LayerTensors> ts;
  for (const auto& t : m.layers()) {
    auto c = [](const torch::Tensor& x) { return x.defined() ? x.detach().clone() : x; };
    ts.push_back({c(t.weight), c(t.bias), c(t.gamma), c(t.beta), c(t.running_mean), c(t.running_var)});
  }
  nn::Model out(m.arch(), ts);
  auto src = m.parameters(), dst = out.parameters();
  for (size_t i = 0; i < src.size(); ++i) {
    if (src[i].grad().defined()) dst[i].mutable_grad() = src[i].grad().clone();
  }
  return out;
}

inline void copy_state(train::Optimizer& from, train::Optimizer& to) {
  to.state().clear();
  for (const auto& s : from.state()) {
    std::vector<torch::Tensor> c;
    for (const auto& t : s) c.push_back(t.clone());
    to.state().push_back(c);
  }
  to.set_steps(from.steps());
}

/// A fresh empty temp directory, removed by the destructor.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/demp-test-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { remove_tree(path); }
};

}  // namespace demp::test

#include <cstdio>

namespace demp::test {

/// Writes a small learnable MNIST-like data set (IDX, raw) into `dir`: class k is a bright bar
/// at row 2k of a 12x12 image, plus noise.
inline void write_synthetic_idx(const std::string& dir, int64_t n_train, int64_t n_test, uint64_t seed = 0) {
  auto write = [&](const std::string& prefix, int64_t n, uint64_t s) {
    torch::manual_seed(s);
    auto labels = torch::randint(5, {n}, torch::kLong);
    auto img = torch::rand({n, 12, 12}) * 60;
    for (int64_t i = 0; i < n; ++i) img[i][2 * labels[i].item<int64_t>()] += 150;
    auto bytes = img.clamp(0, 255).to(torch::kUInt8).contiguous();
    auto be = [](FILE* f, uint32_t v) {
      unsigned char b[4] = {static_cast<unsigned char>(v >> 24), static_cast<unsigned char>(v >> 16),
                            static_cast<unsigned char>(v >> 8), static_cast<unsigned char>(v)};
      std::fwrite(b, 1, 4, f);
    };
    FILE* f = std::fopen((dir + "/" + prefix + "-images-idx3-ubyte").c_str(), "wb");
    be(f, 0x803);
    be(f, static_cast<uint32_t>(n));
    be(f, 12);
    be(f, 12);
    std::fwrite(bytes.data_ptr<uint8_t>(), 1, static_cast<size_t>(n * 144), f);
    std::fclose(f);
    f = std::fopen((dir + "/" + prefix + "-labels-idx1-ubyte").c_str(), "wb");
    be(f, 0x801);
    be(f, static_cast<uint32_t>(n));
    auto lb = labels.to(torch::kUInt8).contiguous();
    std::fwrite(lb.data_ptr<uint8_t>(), 1, static_cast<size_t>(n), f);
    std::fclose(f);
  };
  write("train", n_train, seed);
  write("t10k", n_test, seed + 1);
}

}  // namespace demp::test
