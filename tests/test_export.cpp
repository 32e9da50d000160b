// The pruned network outside demp:
//  1. the ONNX export of a pruned MLP, VGG-16 and ResNet-18 (non-identity skip maps) gives
//     demp's eval-mode logits in ONNX Runtime (max abs diff <= 1e-4) on real Fashion-MNIST images,
//     at any batch size;
//  2. Python (torch + python/demp_load.py) rebuilds a torch export and reproduces demp's test
//     accuracy exactly and its logits within 1e-5 on the whole Fashion-MNIST test set;
//  3. every kind of file round-trips through load_source; malformed or foreign files give a
//     demp::Error naming the problem, never a crash.
// The Python side runs ${DEMP_SOURCE_DIR}/.venv/bin/python (with torch, numpy and onnxruntime):
// scripts/setup always installs it, so its absence is a failure, not a skip.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/data/dataset.h"
#include "demp/export/export.h"
#include "demp/nn/model.h"
#include "demp/prune/surgery.h"
#include "demp/train/config.h"
#include "demp/train/trainer.h"
#include "test_util.h"

using namespace demp;
using nlohmann::json;

namespace {

using demp::test::source_dir;

std::string fashion_mnist_dir() {
  const char* d = std::getenv("DEMP_FASHION_MNIST_DIR");
  return d && *d ? d : "/usr/share/datasets/fashion-mnist";
}

// Runs a Python helper of tests/ with the project's interpreter; returns (exit code, output).
std::pair<int, std::string> run_python(const std::string& script, const std::string& args) {
  const std::string src = source_dir();
  if (src.empty()) return {-1, "DEMP_SOURCE_DIR is not set"};
  const std::string python = src + "/.venv/bin/python";
  if (!file_exists(python)) return {-1, python + " is missing (scripts/setup installs it)"};
  const std::string cmd = "'" + python + "' '" + src + "/tests/" + script + "' " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (p && std::fgets(buf, sizeof buf, p)) out += buf;
  const int rc = p ? ::pclose(p) : -1;
  return {rc, cmd + "\n" + out};
}

// A float32 tensor as a NumPy .npy file (format 1.0), for the Python checkers.
void write_npy(const std::string& path, const torch::Tensor& t) {
  const auto c = t.detach().to(torch::kCPU, torch::kFloat).contiguous();
  std::string shape;
  for (int64_t d : c.sizes()) shape += std::to_string(d) + ", ";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + shape + "), }";
  const size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
  bytes += static_cast<char>(header.size() & 0xff);
  bytes += static_cast<char>(header.size() >> 8);
  bytes += header;
  bytes.append(reinterpret_cast<const char*>(c.data_ptr<float>()), c.numel() * sizeof(float));
  write_file_atomic(path, bytes);
}

// Fashion-MNIST with statistics from the first 2000 training images (enough for a test, fast).
const data::DataBundle& fashion_mnist() {
  static const data::DataBundle b = data::load("fashion-mnist", {0, 0, 2000, 0});
  return b;
}

// Keeps a random ~60% (at least one unit) of every prunable group.
prune::KeepSets random_keep(const nn::Arch& a, uint64_t seed) {
  std::mt19937_64 rng(seed);
  prune::KeepSets keep(a.groups.size());
  for (int g : a.prunable_groups()) {
    std::vector<int64_t> all(a.groups[g].width);
    for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
    std::shuffle(all.begin(), all.end(), rng);
    all.resize(std::max<size_t>(1, all.size() * 6 / 10));
    std::sort(all.begin(), all.end());
    keep[g] = all;
  }
  return keep;
}

// A zoo model with non-trivial BatchNorm (random γ, β; running statistics moved towards those of
// `images`), pruned with random keep sets.
nn::Model pruned_model(const nn::ModelOptions& o, const torch::Tensor& images, uint64_t seed) {
  nn::Model m(nn::build_arch(o), seed);
  torch::NoGradGuard no_grad;
  auto gen = demp::make_generator(seed, demp::kMisc, 7);
  for (size_t l = 0; l < m.arch().layers.size(); ++l) {
    if (!m.arch().layers[l].bn) continue;
    auto& t = m.layers()[l];
    t.gamma.copy_(torch::rand(t.gamma.sizes(), gen) + 0.5);
    t.beta.copy_(torch::randn(t.beta.sizes(), gen) * 0.2);
  }
  for (int i = 0; i < 6; ++i) m.forward(images, /*train=*/true);
  // A freshly initialised classifier gives logits of ~0.3; scale them to a trained network's
  // ~10 so that the 1e-4 tolerance is tight relative to them.
  m.layers().back().weight.mul_(30.0);
  prune::remove_units(m, nullptr, random_keep(m.arch(), seed));
  return m;
}

torch::Tensor eval_logits(const nn::Model& m, const torch::Tensor& x) {
  c10::InferenceMode guard;
  return m.forward(x, false).clone();
}

// Exports `m` (hidden widths padded to `multiple`), runs it in ONNX Runtime on `x` and compares
// with demp; reads the export back.
void expect_onnx_matches(const nn::Model& m, const torch::Tensor& x, const export_::Normalization& norm,
                         int64_t multiple = 1) {
  test::TempDir dir;
  const std::string onnx = dir.path + "/m.onnx";
  export_::write_onnx(onnx, m, {norm, json{{"test", m.arch().model}}}, export_::kMaxOpset, multiple);
  write_npy(dir.path + "/x.npy", x);
  write_npy(dir.path + "/y.npy", eval_logits(m, x));
  const auto [rc, out] =
      run_python("check_onnx.py", "--model '" + onnx + "' --input '" + dir.path + "/x.npy' --expected '" +
                                      dir.path + "/y.npy' --tol 1e-4");
  EXPECT_EQ(rc, 0) << out;
  std::cout << m.arch().model << " (channel multiple " << multiple << "): " << out.substr(out.find('\n') + 1);

  // demp reads its own ONNX export back: architecture and normalisation from the metadata.
  const auto src = export_::load_source(onnx);
  EXPECT_EQ(src.kind, export_::SourceKind::Onnx);
  EXPECT_EQ(json(src.arch), json(m.arch()));
  EXPECT_EQ(src.norm.mean, norm.mean);
  EXPECT_EQ(src.norm.std, norm.std);
  EXPECT_TRUE(src.layers.empty());
}

// Width-0.25 zoo models on real Fashion-MNIST images.
void expect_fashion_mnist_onnx_matches(const std::string& name) {
  const auto& data = fashion_mnist();
  nn::ModelOptions o;
  o.model = name;
  o.width = 0.25;
  const nn::Model m = pruned_model(o, data.train.images.slice(0, 0, 128), 11);
  if (name == "resnet18") {
    int non_identity = 0;
    for (const auto& s : m.arch().skips) non_identity += s.identity() ? 0 : 1;
    ASSERT_GT(non_identity, 0) << "random pruning should leave non-identity skip maps";
  }
  expect_onnx_matches(m, data.test.images.slice(0, 0, 100), {data.mean, data.std});
  // Padded to blocked-kernel widths: padding units and padded skip gathers change nothing.
  if (name == "resnet18") {
    expect_onnx_matches(m, data.test.images.slice(0, 0, 100), {data.mean, data.std}, 16);
  }
}

void expect_error(const std::string& path, const std::string& what) {
  try {
    export_::load_source(path);
    ADD_FAILURE() << path << " was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(ExportOnnx, MlpMatchesDemp) { expect_fashion_mnist_onnx_matches("mlp"); }
TEST(ExportOnnx, Vgg16MatchesDemp) { expect_fashion_mnist_onnx_matches("vgg16"); }
TEST(ExportOnnx, Resnet18MatchesDemp) { expect_fashion_mnist_onnx_matches("resnet18"); }

// Shapes Fashion-MNIST does not reach, on synthetic 3-channel images: VGG-16 on 48×48 ends its
// pooling with a ceil-mode 3 → 2 (explicit end padding in ONNX) and flattens 2×2 maps of pruned
// channels (in_block 4, channel-major); an MLP flattens 3 channels; ResNet-50 has the padded
// max-pool and bottlenecks with pruned projection shortcuts. All padded to 16-channel multiples
// (flattened blocks of padded channels included).
TEST(ExportOnnx, OtherShapesMatchDemp) {
  auto gen = demp::make_generator(0, demp::kMisc, 9);
  for (const auto& [name, size] :
       std::vector<std::pair<std::string, int64_t>>{{"vgg16", 48}, {"mlp", 12}, {"resnet50", 40}}) {
    nn::ModelOptions o;
    o.model = name;
    o.width = name == "resnet50" ? 0.0625 : 0.125;
    o.in_channels = 3;
    o.in_height = o.in_width = size;
    o.mlp_widths = {48, 32};
    const auto images = torch::randn({96, 3, size, size}, gen);
    const nn::Model m = pruned_model(o, images.slice(0, 0, 64), 5);
    if (name == "vgg16") {
      ASSERT_EQ(m.arch().layers[13].in_block, 4) << "fc1 should read 2x2 maps";
    }
    expect_onnx_matches(m, images.slice(0, 64, 96), {{0.5, 0.4, 0.3}, {0.2, 0.25, 0.3}}, 16);
  }
}

TEST(ExportOnnx, RejectsUnsupportedOptions) {
  nn::ModelOptions o;
  o.model = "mlp";
  o.mlp_widths = {8};
  nn::Model m(nn::build_arch(o), 0);
  EXPECT_THROW(export_::build_onnx(m, {}, 11), Error);
  EXPECT_NO_THROW(export_::build_onnx(m, {}, 13));
  EXPECT_THROW(export_::build_onnx(m, {}, 17, 0), Error);
}

TEST(ExportTorch, PythonReproducesAccuracyAndLogits) {
  test::TempDir dir;
  const std::string run = dir.path + "/run";
  train::TrainConfig cfg;
  cfg.model = "mlp";
  cfg.width = 0.25;
  cfg.steps = 30;
  cfg.batch_size = 128;
  cfg.out = run;
  cfg.progress = "none";
  cfg.train_limit = 5000;  // the statistics then come from these 5000 images only
  test::run_training(cfg);

  // Prune the trained network at random, as a pruning method would leave it.
  {
    auto ck = train::load_checkpoint(run + "/model.ckpt");
    nn::Model m(ck.arch, ck.layers);
    prune::remove_units(m, nullptr, random_keep(m.arch(), 3));
    train::save_checkpoint(run + "/model.ckpt", m, nullptr, ck.meta);
  }
  const auto src = export_::load_source(run);  // a run directory
  ASSERT_EQ(src.kind, export_::SourceKind::Checkpoint);
  const std::string pt = dir.path + "/m.pt";
  export_::write_torch_export(pt, nn::Model(src.arch, src.layers), export_::export_info(src));

  // The export reads back bit-exactly, with the training normalisation.
  const auto back = export_::load_source(pt);
  ASSERT_EQ(back.kind, export_::SourceKind::TorchExport);
  EXPECT_EQ(json(back.arch), json(src.arch));
  for (size_t i = 0; i < src.layers.size(); ++i) {
    const auto& a = src.layers[i];
    const auto& b = back.layers[i];
    EXPECT_TRUE(torch::equal(a.weight, b.weight)) << i;
    if (a.gamma.defined()) {
      EXPECT_TRUE(torch::equal(a.running_var, b.running_var)) << i;
    }
  }
  const auto data = data::load("fashion-mnist", {0, 0, cfg.train_limit, 0});
  EXPECT_EQ(back.norm.mean, data.mean);
  EXPECT_EQ(back.norm.std, data.std);
  EXPECT_EQ(back.meta.at("config").at("train-limit"), 5000);

  // demp's evaluation of the export, against Python's.
  const nn::Model m(back.arch, back.layers);
  const auto r = train::evaluate(m, data.test, 1000, torch::kCPU);
  ASSERT_EQ(r.n, 10000);
  std::vector<torch::Tensor> logits;
  for (int64_t s = 0; s < r.n; s += 1000) {
    logits.push_back(eval_logits(m, data.test.images.slice(0, s, s + 1000)));
  }
  write_npy(dir.path + "/y.npy", torch::cat(logits));
  const auto [rc, out] =
      run_python("check_torch_export.py",
                 fmt::format("--export '{}' --data-dir '{}' --expected '{}' --accuracy {:.17g} --tol 1e-5",
                             pt, fashion_mnist_dir(), dir.path + "/y.npy", r.accuracy));
  EXPECT_EQ(rc, 0) << out;
  std::cout << out.substr(out.find('\n') + 1);
}

TEST(ExportSources, MalformedAndForeignFilesAreClearErrors) {
  test::TempDir dir;
  const std::string d = dir.path;
  expect_error(d + "/absent.pt", "no checkpoint or export");
  expect_error(d, "not a demp run directory");
  write_file_atomic(d + "/empty.pt", "");
  expect_error(d + "/empty.pt", "not a demp checkpoint, torch export or ONNX model");
  write_file_atomic(d + "/text.onnx", "hello, not a model\n");
  expect_error(d + "/text.onnx", "not a demp checkpoint, torch export or ONNX model");
  write_file_atomic(d + "/zip.pt", std::string("PK\x03\x04garbage", 11));
  expect_error(d + "/zip.pt", "truncated or corrupt");

  // A real export and checkpoint, cut in half.
  nn::ModelOptions o;
  o.model = "mlp";
  o.mlp_widths = {16};
  nn::Model m(nn::build_arch(o), 0);
  export_::write_torch_export(d + "/ok.pt", m, {});
  const std::string pt = read_file(d + "/ok.pt");
  write_file_atomic(d + "/cut.pt", pt.substr(0, pt.size() / 2));
  expect_error(d + "/cut.pt", "truncated or corrupt");
  train::save_checkpoint(d + "/ok.ckpt", m, nullptr, json::object());
  const std::string ck = read_file(d + "/ok.ckpt");
  write_file_atomic(d + "/cut.ckpt", ck.substr(0, ck.size() / 2));
  expect_error(d + "/cut.ckpt", "truncated or corrupt");
  EXPECT_EQ(export_::load_source(d + "/ok.ckpt").kind, export_::SourceKind::Checkpoint);

  // Foreign LibTorch files: a pickled dict that is not demp's, a tensor saved by torch::save.
  c10::impl::GenericDict foreign(c10::StringType::get(), c10::AnyType::get());
  foreign.insert("weights", torch::ones({3}));
  const auto bytes = torch::pickle_save(foreign);
  write_file_atomic(d + "/foreign.pt", std::string(bytes.begin(), bytes.end()));
  expect_error(d + "/foreign.pt", "not a demp export");
  torch::save(torch::ones({3}), d + "/tensor.pt");
  expect_error(d + "/tensor.pt", "not a demp checkpoint");

  // A demp export whose architecture was edited to point outside itself.
  {
    const std::string ok = read_file(d + "/ok.pt");
    auto root = torch::pickle_load(std::vector<char>(ok.begin(), ok.end())).toGenericDict();
    json arch = json::parse(root.at("arch").toStringRef());
    arch["layers"][0]["out_group"] = 99;
    root.insert_or_assign("arch", arch.dump());
    const auto edited = torch::pickle_save(root);
    write_file_atomic(d + "/edited.pt", std::string(edited.begin(), edited.end()));
    expect_error(d + "/edited.pt", "inconsistent architecture");
  }

  // A demp export whose tensors do not fit its architecture.
  {
    auto src = export_::load_source(d + "/ok.pt");
    src.layers[0].weight = torch::zeros({3, 3});
    EXPECT_THROW(nn::Model(src.arch, src.layers), Error);
  }

  // An ONNX model demp did not write.
  export_::OnnxModel foreign_onnx;
  foreign_onnx.inputs = {{"x", {1, 3}, {"", ""}, ""}};
  foreign_onnx.outputs = {{"y", {1, 3}, {"", ""}, ""}};
  foreign_onnx.nodes = {{"Identity", "id", {"x"}, {"y"}, {}}};
  write_file_atomic(d + "/foreign.onnx", export_::serialize_onnx(foreign_onnx));
  expect_error(d + "/foreign.onnx", "demp did not write");
}

TEST(ExportSources, DenseArchIsTheZooModelAtInitialWidths) {
  for (const std::string name : {"mlp", "vgg16", "resnet18"}) {
    nn::ModelOptions o;
    o.model = name;
    o.width = 0.25;
    o.mlp_widths = {40, 24};
    const nn::Arch fresh = nn::build_arch(o);
    nn::Model m(fresh, 0);
    prune::remove_units(m, nullptr, random_keep(m.arch(), 5));
    ASSERT_LT(m.arch().units(), fresh.units());
    // Without a recorded config (the MLP widths come from the groups) and with one.
    EXPECT_EQ(json(export_::dense_arch(m.arch())), json(fresh)) << name;
    EXPECT_EQ(json(export_::dense_arch(m.arch(), json{{"mlp-widths", "40,24"}})), json(fresh)) << name;
  }
}
