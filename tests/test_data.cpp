// Tests for demp::data: IDX/CIFAR readers on tiny synthetic files, loading, normalisation,
// validation split, augmentation, deterministic batching and check sets.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/data/dataset.h"

namespace demp::data {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

// The torch wheel's libtorch.so exports its own (GCC 8 era) std::filesystem::remove_all, which
// interposes libstdc++'s and jumps through a null weak symbol; so remove trees by hand.
void remove_tree(const fs::path& p) {
  std::error_code ec;
  if (fs::is_directory(fs::symlink_status(p, ec))) {
    for (const auto& entry : fs::directory_iterator(p, ec)) remove_tree(entry.path());
  }
  fs::remove(p, ec);
}

// A fresh directory per test, removed afterwards, so that tests can run in parallel.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() / ("demp_test_data_" + std::to_string(::getpid()) + "_" +
                                         std::to_string(counter++) + "_" + (info ? info->name() : "x"));
    remove_tree(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { remove_tree(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

void put_be32(Bytes& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}

void write_bytes(const std::string& path, const Bytes& data) {
  write_file_atomic(path, std::string(data.begin(), data.end()));
}

void write_gzip(const std::string& path, const Bytes& data) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(gzwrite(f, data.data(), static_cast<unsigned>(data.size())), static_cast<int>(data.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

Bytes idx_images(uint32_t n, uint32_t h, uint32_t w, const Bytes& pixels, uint32_t magic = 0x00000803) {
  Bytes out;
  put_be32(out, magic);
  put_be32(out, n);
  put_be32(out, h);
  put_be32(out, w);
  out.insert(out.end(), pixels.begin(), pixels.end());
  return out;
}

Bytes idx_labels(const Bytes& labels, uint32_t magic = 0x00000801) {
  Bytes out;
  put_be32(out, magic);
  put_be32(out, static_cast<uint32_t>(labels.size()));
  out.insert(out.end(), labels.begin(), labels.end());
  return out;
}

// Deterministic pseudo-random bytes so that tests do not depend on a global RNG.
Bytes pattern(size_t n, uint32_t salt) {
  Bytes out(n);
  uint32_t x = 2463534242u ^ (salt * 2654435761u);
  for (auto& b : out) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<uint8_t>(x);
  }
  return out;
}

// A CIFAR file: each record is label byte(s) followed by 3072 pixel bytes.
Bytes cifar_records(const Bytes& labels, const Bytes& pixels, bool cifar100) {
  Bytes out;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (cifar100) out.push_back(static_cast<uint8_t>(labels[i] / 5));  // coarse label
    out.push_back(labels[i]);
    out.insert(out.end(), pixels.begin() + i * 3072, pixels.begin() + (i + 1) * 3072);
  }
  return out;
}

torch::Tensor as_tensor(const Bytes& b, std::vector<int64_t> shape) {
  return torch::tensor(std::vector<int64_t>(b.begin(), b.end())).to(torch::kUInt8).view(shape);
}

// Runs `fn`, expects a demp::Error, and checks its message names `needle` (usually a path) and
// that it comes with a hint.
void expect_error(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected demp::Error mentioning " << needle;
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(needle), std::string::npos) << "message: " << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << "message should be one line: " << what;
    EXPECT_FALSE(e.hint().empty()) << "no hint for: " << what;
  }
}

// Writes an MNIST-style directory: train images encode their index in the first two pixels so
// that tests can identify them after loading.
void write_mnist_dir(const std::string& dir, uint32_t n_train, uint32_t n_test, bool gzip) {
  const uint32_t h = 4, w = 4;
  Bytes train_px = pattern(size_t{n_train} * h * w, 1), test_px = pattern(size_t{n_test} * h * w, 2);
  for (uint32_t i = 0; i < n_train; ++i) {
    train_px[i * h * w] = static_cast<uint8_t>(i % 256);
    train_px[i * h * w + 1] = static_cast<uint8_t>(i / 256);
  }
  Bytes train_lbl(n_train), test_lbl(n_test);
  for (uint32_t i = 0; i < n_train; ++i) train_lbl[i] = static_cast<uint8_t>(i % 10);
  for (uint32_t i = 0; i < n_test; ++i) test_lbl[i] = static_cast<uint8_t>((i * 3) % 10);
  auto put = [&](const std::string& base, const Bytes& data) {
    if (gzip) {
      write_gzip((fs::path(dir) / (base + ".gz")).string(), data);
    } else {
      write_bytes((fs::path(dir) / base).string(), data);
    }
  };
  put("train-images-idx3-ubyte", idx_images(n_train, h, w, train_px));
  put("train-labels-idx1-ubyte", idx_labels(train_lbl));
  put("t10k-images-idx3-ubyte", idx_images(n_test, h, w, test_px));
  put("t10k-labels-idx1-ubyte", idx_labels(test_lbl));
}

// Undoes the normalisation and recovers the index stored in the first two pixels.
std::vector<int64_t> recover_ids(const Dataset& d, const DataBundle& b) {
  const auto px = (d.images.select(1, 0).flatten(1).narrow(1, 0, 2) * b.std[0] + b.mean[0])
                      .mul(255.0)
                      .round()
                      .to(torch::kInt64);
  const auto ids = px.select(1, 0) + px.select(1, 1) * 256;
  return std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
}

void expect_normalised(const Dataset& d, int64_t channels) {
  for (int64_t c = 0; c < channels; ++c) {
    const auto x = d.images.select(1, c).to(torch::kFloat64);
    EXPECT_NEAR(x.mean().item<double>(), 0.0, 1e-4) << "channel " << c;
    EXPECT_NEAR(x.std(/*unbiased=*/false).item<double>(), 1.0, 1e-4) << "channel " << c;
  }
}

// A float dataset whose image i is filled with the value i: batches reveal their indices.
Dataset index_dataset(int64_t n) {
  Dataset d;
  d.images = torch::arange(n, torch::kFloat32).view({n, 1, 1, 1}).expand({n, 1, 3, 3}).contiguous();
  d.labels = torch::arange(n, torch::kInt64).remainder(10);
  return d;
}

std::vector<int64_t> ids_of(const torch::Tensor& images) {
  const auto ids = images.select(1, 0).select(1, 0).select(1, 0).to(torch::kInt64).contiguous();
  return std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
}

// ---------------------------------------------------------------------------------------------
// IDX reader

TEST(ReadIdx, RawRoundTrip) {
  TempDir tmp;
  const Bytes px = pattern(5 * 3 * 4, 7), lbl = {0, 9, 3, 3, 1};
  write_bytes(tmp.file("img"), idx_images(5, 3, 4, px));
  write_bytes(tmp.file("lbl"), idx_labels(lbl));
  const Dataset d = read_idx(tmp.file("img"), tmp.file("lbl"));
  EXPECT_EQ(d.images.scalar_type(), torch::kUInt8);
  EXPECT_EQ(d.labels.scalar_type(), torch::kInt64);
  EXPECT_EQ(d.images.sizes(), (std::vector<int64_t>{5, 1, 3, 4}));
  EXPECT_TRUE(torch::equal(d.images, as_tensor(px, {5, 1, 3, 4})));
  EXPECT_TRUE(torch::equal(d.labels, torch::tensor({0, 9, 3, 3, 1}, torch::kInt64)));
  EXPECT_EQ(d.size(), 5);
}

TEST(ReadIdx, GzipRoundTrip) {
  TempDir tmp;
  const Bytes px = pattern(7 * 2 * 2, 8), lbl = {1, 2, 3, 4, 5, 6, 7};
  write_gzip(tmp.file("img.gz"), idx_images(7, 2, 2, px));
  write_gzip(tmp.file("lbl.gz"), idx_labels(lbl));
  const Dataset d = read_idx(tmp.file("img.gz"), tmp.file("lbl.gz"));
  EXPECT_TRUE(torch::equal(d.images, as_tensor(px, {7, 1, 2, 2})));
  EXPECT_TRUE(torch::equal(d.labels, torch::tensor({1, 2, 3, 4, 5, 6, 7}, torch::kInt64)));
}

TEST(ReadIdx, WrongMagic) {
  TempDir tmp;
  write_bytes(tmp.file("img"), idx_images(2, 2, 2, pattern(8, 1)));
  write_bytes(tmp.file("lbl"), idx_labels({1, 2}));
  write_bytes(tmp.file("bad"), idx_images(2, 2, 2, pattern(8, 1), 0x00000804));
  expect_error([&] { read_idx(tmp.file("bad"), tmp.file("lbl")); }, tmp.file("bad"));
  // Swapped files: each has the other kind's magic number.
  expect_error([&] { read_idx(tmp.file("lbl"), tmp.file("img")); }, tmp.file("lbl"));
  expect_error([&] { read_idx(tmp.file("img"), tmp.file("img")); }, "bad magic");
}

TEST(ReadIdx, TruncatedImages) {
  TempDir tmp;
  Bytes img = idx_images(3, 4, 4, pattern(48, 1));
  img.resize(img.size() - 5);
  write_bytes(tmp.file("img"), img);
  write_bytes(tmp.file("lbl"), idx_labels({1, 2, 3}));
  expect_error([&] { read_idx(tmp.file("img"), tmp.file("lbl")); }, tmp.file("img"));
  // Shorter than the header itself.
  write_bytes(tmp.file("tiny"), {0, 0, 8});
  expect_error([&] { read_idx(tmp.file("tiny"), tmp.file("lbl")); }, tmp.file("tiny"));
  // A header claiming absurd dimensions must not overflow into a "valid" size.
  write_bytes(tmp.file("huge"), idx_images(0xffffffffu, 0xffffffffu, 0xffffffffu, {}));
  expect_error([&] { read_idx(tmp.file("huge"), tmp.file("lbl")); }, tmp.file("huge"));
}

TEST(ReadIdx, TruncatedLabels) {
  TempDir tmp;
  write_bytes(tmp.file("img"), idx_images(3, 2, 2, pattern(12, 1)));
  Bytes lbl = idx_labels({1, 2, 3});
  lbl.pop_back();
  write_bytes(tmp.file("lbl"), lbl);
  expect_error([&] { read_idx(tmp.file("img"), tmp.file("lbl")); }, tmp.file("lbl"));
}

TEST(ReadIdx, TruncatedGzip) {
  TempDir tmp;
  write_gzip(tmp.file("full.gz"), idx_images(50, 8, 8, pattern(50 * 64, 3)));
  std::string gz = read_file(tmp.file("full.gz"));
  write_file_atomic(tmp.file("cut.gz"), gz.substr(0, gz.size() / 2));
  write_bytes(tmp.file("lbl"), idx_labels(Bytes(50, 1)));
  expect_error([&] { read_idx(tmp.file("cut.gz"), tmp.file("lbl")); }, tmp.file("cut.gz"));
}

TEST(ReadIdx, LabelOutOfRange) {
  TempDir tmp;
  write_bytes(tmp.file("img"), idx_images(3, 2, 2, pattern(12, 1)));
  write_bytes(tmp.file("lbl"), idx_labels({1, 10, 3}));
  expect_error([&] { read_idx(tmp.file("img"), tmp.file("lbl"), 10); }, tmp.file("lbl"));
  EXPECT_NO_THROW(read_idx(tmp.file("img"), tmp.file("lbl"), 11));
}

TEST(ReadIdx, CountMismatch) {
  TempDir tmp;
  write_bytes(tmp.file("img"), idx_images(3, 2, 2, pattern(12, 1)));
  write_bytes(tmp.file("lbl"), idx_labels({1, 2}));
  expect_error([&] { read_idx(tmp.file("img"), tmp.file("lbl")); }, tmp.file("img"));
  expect_error([&] { read_idx(tmp.file("img"), tmp.file("lbl")); }, tmp.file("lbl"));
}

TEST(ReadIdx, MissingFile) {
  TempDir tmp;
  write_bytes(tmp.file("lbl"), idx_labels({1}));
  expect_error([&] { read_idx(tmp.file("nope"), tmp.file("lbl")); }, tmp.file("nope"));
}

// ---------------------------------------------------------------------------------------------
// CIFAR reader

TEST(ReadCifar, Cifar10RoundTripAcrossFiles) {
  TempDir tmp;
  const Bytes px = pattern(5 * 3072, 4);
  const Bytes first(px.begin(), px.begin() + 3 * 3072), second(px.begin() + 3 * 3072, px.end());
  write_bytes(tmp.file("a.bin"), cifar_records({3, 0, 9}, first, false));
  write_bytes(tmp.file("b.bin"), cifar_records({5, 5}, second, false));
  const Dataset d = read_cifar({tmp.file("a.bin"), tmp.file("b.bin")}, 10);
  EXPECT_EQ(d.images.scalar_type(), torch::kUInt8);
  EXPECT_EQ(d.images.sizes(), (std::vector<int64_t>{5, 3, 32, 32}));
  EXPECT_TRUE(torch::equal(d.images, as_tensor(px, {5, 3, 32, 32})));
  EXPECT_TRUE(torch::equal(d.labels, torch::tensor({3, 0, 9, 5, 5}, torch::kInt64)));
}

TEST(ReadCifar, Cifar100UsesFineLabel) {
  TempDir tmp;
  const Bytes px = pattern(3 * 3072, 5);
  write_bytes(tmp.file("train.bin"), cifar_records({99, 42, 7}, px, true));
  const Dataset d = read_cifar({tmp.file("train.bin")}, 100);
  EXPECT_TRUE(torch::equal(d.images, as_tensor(px, {3, 3, 32, 32})));
  EXPECT_TRUE(torch::equal(d.labels, torch::tensor({99, 42, 7}, torch::kInt64)));
}

TEST(ReadCifar, SizeNotWholeRecords) {
  TempDir tmp;
  Bytes rec = cifar_records({1, 2}, pattern(2 * 3072, 6), false);
  rec.pop_back();
  write_bytes(tmp.file("cut.bin"), rec);
  expect_error([&] { read_cifar({tmp.file("cut.bin")}, 10); }, tmp.file("cut.bin"));
  write_bytes(tmp.file("empty.bin"), {});
  expect_error([&] { read_cifar({tmp.file("empty.bin")}, 10); }, tmp.file("empty.bin"));
  // A CIFAR-10 file read as CIFAR-100 has the wrong record size.
  write_bytes(tmp.file("c10.bin"), cifar_records({1, 2}, pattern(2 * 3072, 6), false));
  expect_error([&] { read_cifar({tmp.file("c10.bin")}, 100); }, tmp.file("c10.bin"));
}

TEST(ReadCifar, LabelOutOfRange) {
  TempDir tmp;
  write_bytes(tmp.file("ok.bin"), cifar_records({1}, pattern(3072, 1), false));
  write_bytes(tmp.file("bad.bin"), cifar_records({1, 12}, pattern(2 * 3072, 6), false));
  expect_error([&] { read_cifar({tmp.file("ok.bin"), tmp.file("bad.bin")}, 10); }, tmp.file("bad.bin"));
}

// ---------------------------------------------------------------------------------------------
// load()

TEST(Load, MnistDirNormalisedAndSplit) {
  TempDir tmp;
  write_mnist_dir(tmp.str(), 300, 40, /*gzip=*/false);
  LoadOptions opt;
  opt.val_size = 50;
  opt.seed = 11;
  const DataBundle b = load("mnist:" + tmp.str(), opt);
  EXPECT_EQ(b.name, "mnist");
  EXPECT_EQ(b.channels, 1);
  EXPECT_EQ(b.height, 4);
  EXPECT_EQ(b.width, 4);
  EXPECT_EQ(b.classes, 10);
  EXPECT_EQ(b.train.size(), 250);
  EXPECT_EQ(b.val.size(), 50);
  EXPECT_EQ(b.test.size(), 40);
  for (const Dataset* d : {&b.train, &b.val, &b.test}) {
    EXPECT_EQ(d->images.scalar_type(), torch::kFloat32);
    EXPECT_EQ(d->images.sizes(), (std::vector<int64_t>{d->size(), 1, 4, 4}));
  }
  ASSERT_EQ(b.mean.size(), 1u);
  ASSERT_EQ(b.std.size(), 1u);
  expect_normalised(b.train, 1);

  // Train and val are disjoint, cover the whole training file, train keeps file order and each
  // image still carries its own label.
  const auto train_ids = recover_ids(b.train, b), val_ids = recover_ids(b.val, b);
  std::set<int64_t> all(train_ids.begin(), train_ids.end());
  all.insert(val_ids.begin(), val_ids.end());
  EXPECT_EQ(all.size(), 300u);
  EXPECT_EQ(*all.begin(), 0);
  EXPECT_EQ(*all.rbegin(), 299);
  EXPECT_TRUE(std::is_sorted(train_ids.begin(), train_ids.end()));
  for (size_t i = 0; i < train_ids.size(); ++i) {
    EXPECT_EQ(b.train.labels[i].item<int64_t>(), train_ids[i] % 10);
  }
  for (size_t i = 0; i < val_ids.size(); ++i) {
    EXPECT_EQ(b.val.labels[i].item<int64_t>(), val_ids[i] % 10);
  }

  // The same seed gives the same split; another seed another one.
  const DataBundle again = load("mnist:" + tmp.str(), opt);
  EXPECT_EQ(recover_ids(again.val, again), val_ids);
  opt.seed = 12;
  const DataBundle other = load("mnist:" + tmp.str(), opt);
  EXPECT_NE(recover_ids(other.val, other), val_ids);
}

TEST(Load, LimitsApplyBeforeStatistics) {
  TempDir tmp;
  write_mnist_dir(tmp.str(), 200, 60, /*gzip=*/true);
  LoadOptions opt;
  opt.train_limit = 64;
  opt.test_limit = 16;
  const DataBundle b = load("fashion-mnist:" + tmp.str(), opt);
  EXPECT_EQ(b.name, "fashion-mnist");
  EXPECT_EQ(b.train.size(), 64);
  EXPECT_EQ(b.val.size(), 0);
  EXPECT_EQ(b.test.size(), 16);
  expect_normalised(b.train, 1);
  const auto ids = recover_ids(b.train, b);
  for (int64_t i = 0; i < 64; ++i) EXPECT_EQ(ids[i], i);
}

TEST(Load, Cifar10AcceptsDirOrParent) {
  TempDir tmp;
  const fs::path inner = fs::path(tmp.str()) / "cifar-10-batches-bin";
  fs::create_directories(inner);
  for (int i = 1; i <= 5; ++i) {
    write_bytes((inner / ("data_batch_" + std::to_string(i) + ".bin")).string(),
                cifar_records({static_cast<uint8_t>(i), 0, 9}, pattern(3 * 3072, i), false));
  }
  write_bytes((inner / "test_batch.bin").string(), cifar_records({4, 2}, pattern(2 * 3072, 9), false));
  LoadOptions opt;
  opt.val_size = 5;
  for (const std::string& dir : {tmp.str(), inner.string()}) {
    const DataBundle b = load("cifar10:" + dir, opt);
    EXPECT_EQ(b.name, "cifar10");
    EXPECT_EQ(b.channels, 3);
    EXPECT_EQ(b.height, 32);
    EXPECT_EQ(b.width, 32);
    EXPECT_EQ(b.classes, 10);
    EXPECT_EQ(b.train.size(), 10);
    EXPECT_EQ(b.val.size(), 5);
    EXPECT_EQ(b.test.size(), 2);
    ASSERT_EQ(b.mean.size(), 3u);
    expect_normalised(b.train, 3);
  }
  fs::remove(inner / "data_batch_4.bin");
  expect_error([&] { load("cifar10:" + tmp.str()); }, (inner / "data_batch_4.bin").string());
}

TEST(Load, Cifar100) {
  TempDir tmp;
  const fs::path inner = fs::path(tmp.str()) / "cifar-100-binary";
  fs::create_directories(inner);
  write_bytes((inner / "train.bin").string(), cifar_records({99, 0, 50, 7}, pattern(4 * 3072, 1), true));
  write_bytes((inner / "test.bin").string(), cifar_records({3}, pattern(3072, 2), true));
  const DataBundle b = load("cifar100:" + tmp.str());
  EXPECT_EQ(b.name, "cifar100");
  EXPECT_EQ(b.classes, 100);
  EXPECT_TRUE(torch::equal(b.train.labels, torch::tensor({99, 0, 50, 7}, torch::kInt64)));
  EXPECT_EQ(b.test.size(), 1);
  expect_normalised(b.train, 3);
}

TEST(Load, MissingDirectoryOrFile) {
  TempDir tmp;
  const std::string missing = tmp.file("does-not-exist");
  expect_error([&] { load("mnist:" + missing); }, missing);
  expect_error([&] { load("cifar10:" + missing); }, missing);
  expect_error([&] { load("cifar100:" + tmp.str()); }, "train.bin");
  // A directory with everything except the test labels.
  write_mnist_dir(tmp.str(), 10, 10, false);
  fs::remove(tmp.file("t10k-labels-idx1-ubyte"));
  expect_error([&] { load("mnist:" + tmp.str()); }, tmp.file("t10k-labels-idx1-ubyte"));
}

TEST(Load, FashionMnistMissingHintsAtPackage) {
  TempDir tmp;
  const char* old = std::getenv("DEMP_FASHION_MNIST_DIR");
  const std::string saved = old ? old : "";
  const std::string missing = tmp.file("nowhere");
  ::setenv("DEMP_FASHION_MNIST_DIR", missing.c_str(), 1);
  try {
    load("fashion-mnist");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("apt-get install dataset-fashion-mnist"), std::string::npos) << e.hint();
  }
  if (old) {
    ::setenv("DEMP_FASHION_MNIST_DIR", saved.c_str(), 1);
  } else {
    ::unsetenv("DEMP_FASHION_MNIST_DIR");
  }
}

TEST(Load, UnknownSpec) {
  for (const std::string spec : {"imagenette:/data", "cifar10", "mnist", "mnist:", "", "cifar-10:/x"}) {
    try {
      load(spec);
      ADD_FAILURE() << "expected an error for '" << spec << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("'" + spec + "'"), std::string::npos) << e.what();
      EXPECT_NE(e.hint().find("cifar10:DIR"), std::string::npos) << e.hint();
    }
  }
}

TEST(Load, ValidationTooLarge) {
  TempDir tmp;
  write_mnist_dir(tmp.str(), 20, 5, false);
  LoadOptions opt;
  opt.val_size = 20;
  expect_error([&] { load("mnist:" + tmp.str(), opt); }, tmp.str());
}

TEST(Load, RealFashionMnist) {
  const char* env = std::getenv("DEMP_FASHION_MNIST_DIR");
  const std::string dir = env && *env ? env : "/usr/share/datasets/fashion-mnist";
  if (!fs::is_directory(dir)) GTEST_SKIP() << "Fashion-MNIST not installed at " << dir;
  LoadOptions opt;
  opt.train_limit = 1000;
  const DataBundle b = load("fashion-mnist", opt);
  EXPECT_EQ(b.name, "fashion-mnist");
  EXPECT_EQ(b.channels, 1);
  EXPECT_EQ(b.height, 28);
  EXPECT_EQ(b.width, 28);
  EXPECT_EQ(b.classes, 10);
  EXPECT_EQ(b.train.size(), 1000);
  EXPECT_EQ(b.train.images.sizes(), (std::vector<int64_t>{1000, 1, 28, 28}));
  EXPECT_EQ(b.test.size(), 10000);
  EXPECT_EQ(b.test.images.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  // Fashion-MNIST's well-known statistics are about 0.286 / 0.353.
  EXPECT_NEAR(b.mean[0], 0.286, 0.03);
  EXPECT_NEAR(b.std[0], 0.353, 0.03);
  expect_normalised(b.train, 1);
  EXPECT_EQ(b.train.labels.min().item<int64_t>(), 0);
  EXPECT_EQ(b.train.labels.max().item<int64_t>(), 9);
}

// ---------------------------------------------------------------------------------------------
// Augmentation

TEST(Augment, Defaults) {
  EXPECT_EQ(default_augment("cifar10").pad, 4);
  EXPECT_TRUE(default_augment("cifar10").flip);
  EXPECT_EQ(default_augment("cifar100").pad, 4);
  EXPECT_TRUE(default_augment("cifar100").flip);
  EXPECT_FALSE(default_augment("fashion-mnist").enabled());
  EXPECT_FALSE(default_augment("mnist").enabled());
}

TEST(Augment, DisabledIsIdentity) {
  auto gen = make_generator(1, kAugment, 0);
  const auto x = torch::rand({4, 3, 5, 5});
  EXPECT_TRUE(torch::equal(augment_batch(x, Augment{0, false}, gen), x));
}

TEST(Augment, PadCropIsAShiftedWindow) {
  auto gen = make_generator(2, kAugment, 0);
  const int64_t n = 32, p = 2;
  const auto x = torch::rand({n, 2, 6, 7});
  const auto y = augment_batch(x, Augment{p, false}, gen);
  ASSERT_EQ(y.sizes(), x.sizes());
  const auto padded = torch::constant_pad_nd(x, {p, p, p, p}, 0);
  std::set<std::pair<int64_t, int64_t>> offsets;
  for (int64_t i = 0; i < n; ++i) {
    bool found = false;
    for (int64_t dy = 0; dy <= 2 * p && !found; ++dy) {
      for (int64_t dx = 0; dx <= 2 * p && !found; ++dx) {
        if (torch::equal(y[i], padded[i].narrow(1, dy, 6).narrow(2, dx, 7))) {
          found = true;
          offsets.insert({dy, dx});
        }
      }
    }
    EXPECT_TRUE(found) << "image " << i << " is not a crop of its padded self";
  }
  EXPECT_GT(offsets.size(), 3u) << "offsets should vary per image";
}

TEST(Augment, FlipIsPerImage) {
  auto gen = make_generator(3, kAugment, 0);
  const int64_t n = 64;
  const auto x = torch::rand({n, 3, 4, 4});
  const auto y = augment_batch(x, Augment{0, true}, gen);
  ASSERT_EQ(y.sizes(), x.sizes());
  int flipped = 0, kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (torch::equal(y[i], x[i])) {
      ++kept;
    } else if (torch::equal(y[i], x[i].flip(2))) {
      ++flipped;
    } else {
      ADD_FAILURE() << "image " << i << " is neither kept nor flipped";
    }
  }
  EXPECT_GT(flipped, 0);
  EXPECT_GT(kept, 0);

  // Flipping twice with generators in the same state restores every image.
  auto g1 = make_generator(4, kAugment, 9), g2 = make_generator(4, kAugment, 9);
  const auto once = augment_batch(x, Augment{0, true}, g1);
  EXPECT_TRUE(torch::equal(augment_batch(once, Augment{0, true}, g2), x));
}

TEST(Augment, DeterministicPerGeneratorSeed) {
  const auto x = torch::rand({16, 3, 8, 8});
  auto g1 = make_generator(5, kAugment, 3), g2 = make_generator(5, kAugment, 3);
  auto g3 = make_generator(5, kAugment, 4);
  const Augment aug{4, true};
  const auto a = augment_batch(x, aug, g1);
  EXPECT_EQ(a.sizes(), x.sizes());
  EXPECT_TRUE(torch::equal(a, augment_batch(x, aug, g2)));
  EXPECT_FALSE(torch::equal(a, augment_batch(x, aug, g3)));
}

// ---------------------------------------------------------------------------------------------
// Generators, shuffling, batching, check sets

TEST(Generator, DeterministicAndIndependentStreams) {
  auto draw = [](uint64_t seed, uint64_t stream, uint64_t index) {
    return torch::randint(0, 1 << 30, {8}, make_generator(seed, stream, index));
  };
  EXPECT_TRUE(torch::equal(draw(1, kShuffle, 0), draw(1, kShuffle, 0)));
  EXPECT_FALSE(torch::equal(draw(1, kShuffle, 0), draw(2, kShuffle, 0)));
  EXPECT_FALSE(torch::equal(draw(1, kShuffle, 0), draw(1, kAugment, 0)));
  EXPECT_FALSE(torch::equal(draw(1, kShuffle, 0), draw(1, kShuffle, 1)));
  EXPECT_FALSE(torch::equal(draw(0, 1, 0), draw(0, 0, 1)));
}

TEST(EpochOrder, PermutationDeterministicPerEpoch) {
  const auto a = epoch_order(100, 7, 0);
  EXPECT_EQ(a.scalar_type(), torch::kInt64);
  EXPECT_TRUE(a.device().is_cpu());
  EXPECT_TRUE(torch::equal(std::get<0>(a.sort()), torch::arange(100, torch::kInt64)));
  EXPECT_TRUE(torch::equal(a, epoch_order(100, 7, 0)));
  EXPECT_FALSE(torch::equal(a, epoch_order(100, 7, 1)));
  EXPECT_FALSE(torch::equal(a, epoch_order(100, 8, 0)));
}

TEST(Batcher, StepsPerEpochDropsPartialBatch) {
  const Dataset d = index_dataset(103);
  EXPECT_EQ(Batcher(d, 10, 1, {}).steps_per_epoch(), 10);
  EXPECT_EQ(Batcher(d, 103, 1, {}).steps_per_epoch(), 1);
  expect_error([&] { Batcher(d, 104, 1, {}); }, "104");
  expect_error([&] { Batcher(d, 0, 1, {}); }, "0");
}

TEST(Batcher, EpochCoversDistinctImagesWithMatchingLabels) {
  const Dataset d = index_dataset(100);
  Batcher b(d, 10, 3, {});
  std::set<int64_t> seen;
  for (int64_t s = 0; s < b.steps_per_epoch(); ++s) {
    const auto [x, y] = b.batch(s);
    EXPECT_EQ(x.sizes(), (std::vector<int64_t>{10, 1, 3, 3}));
    const auto ids = ids_of(x);
    for (size_t i = 0; i < ids.size(); ++i) {
      EXPECT_EQ(y[i].item<int64_t>(), ids[i] % 10);
      seen.insert(ids[i]);
    }
  }
  EXPECT_EQ(seen.size(), 100u);
}

TEST(Batcher, DeterministicAndResumeSafe) {
  const Dataset d = index_dataset(50);
  Batcher a(d, 8, 42, {});
  const int64_t spe = a.steps_per_epoch();
  // Walk through epoch 0 and into epoch 1, then compare with a fresh Batcher jumping straight to
  // the same step, as a resumed run would.
  torch::Tensor walked;
  for (int64_t s = 0; s <= spe + 2; ++s) walked = a.batch(s).first;
  Batcher fresh(d, 8, 42, {});
  EXPECT_TRUE(torch::equal(fresh.batch(spe + 2).first, walked));
  EXPECT_TRUE(torch::equal(fresh.batch(0).first, a.batch(0).first));
  EXPECT_FALSE(torch::equal(fresh.batch(0).first, fresh.batch(1).first));
  EXPECT_FALSE(torch::equal(fresh.batch(0).first, fresh.batch(spe).first));
  Batcher other_seed(d, 8, 43, {});
  EXPECT_FALSE(torch::equal(other_seed.batch(0).first, a.batch(0).first));
}

TEST(Batcher, AugmentedBatchesAreReplayable) {
  Dataset d;
  d.images = torch::rand({40, 3, 8, 8});
  d.labels = torch::zeros({40}, torch::kInt64);
  const Augment aug{2, true};
  Batcher a(d, 8, 5, aug), b(d, 8, 5, aug), plain(d, 8, 5, {});
  const auto xa = a.batch(7).first;
  EXPECT_EQ(xa.sizes(), (std::vector<int64_t>{8, 3, 8, 8}));
  EXPECT_TRUE(torch::equal(xa, b.batch(7).first));
  EXPECT_FALSE(torch::equal(xa, plain.batch(7).first));
}

TEST(CheckSet, DeterministicPerIndexWithoutAugmentation) {
  const Dataset d = index_dataset(60);
  const auto a = check_set(d, 16, 9, 0);
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{16, 1, 3, 3}));
  EXPECT_TRUE(torch::equal(a, check_set(d, 16, 9, 0)));
  EXPECT_FALSE(torch::equal(a, check_set(d, 16, 9, 1)));
  EXPECT_FALSE(torch::equal(a, check_set(d, 16, 10, 0)));
  // Rows are untouched training images, drawn without replacement.
  const auto ids = ids_of(a);
  EXPECT_EQ(std::set<int64_t>(ids.begin(), ids.end()).size(), 16u);
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_TRUE(torch::equal(a[i], d.images[ids[i]]));
  // Asking for more than the dataset gives the whole dataset once.
  const auto all = ids_of(check_set(d, 1000, 9, 2));
  EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), 60u);
}

}  // namespace
}  // namespace demp::data
