#include "demp/data/dataset.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <utility>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/data/image_folder.h"

namespace demp::data {
namespace {

constexpr uint32_t kIdxImagesMagic = 0x00000803;
constexpr uint32_t kIdxLabelsMagic = 0x00000801;
constexpr int64_t kCifarImageBytes = 3 * 32 * 32;
constexpr const char* kFashionMnistDefaultDir = "/usr/share/datasets/fashion-mnist";
constexpr const char* kFashionMnistInstallHint = "install it with: apt-get install dataset-fashion-mnist";
constexpr const char* kSpecHint =
    "use one of: fashion-mnist, fashion-mnist:DIR, mnist:DIR, cifar10:DIR, cifar100:DIR, "
    "imagefolder:DIR, imagenet:DIR";
constexpr const char* kCifarHint =
    "download the binary version from https://www.cs.toronto.edu/~kriz/cifar.html and extract it";

uint32_t read_be32(const std::string& buf, size_t offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(buf.data()) + offset;
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

std::string hex32(uint32_t v) {
  char s[16];
  std::snprintf(s, sizeof(s), "0x%08x", v);
  return s;
}

// Header fields are attacker/corruption controlled, so the payload size is computed without
// overflow: a header claiming absurd dimensions must read as "truncated", not wrap around.
bool payload_size(uint64_t a, uint64_t b, uint64_t c, uint64_t* out) {
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max() / 2;
  if (b != 0 && a > kMax / b) return false;
  const uint64_t ab = a * b;
  if (c != 0 && ab > kMax / c) return false;
  *out = ab * c;
  return true;
}

// Labels are stored as bytes; copy to int64 while validating so that a corrupt or wrong file is
// reported here, not as an index error deep inside the loss.
void check_label(int64_t label, int64_t classes, int64_t index, const std::string& path) {
  if (label >= classes) {
    throw Error(path + ": label " + std::to_string(label) + " at record " + std::to_string(index) +
                    " is out of range for " + std::to_string(classes) + " classes",
                "is this the right label file for this dataset?");
  }
}

// Accepts either the gzip or the raw name of an IDX file, preferring the gzip one (that is how
// the Debian package and the upstream downloads ship them).
std::string find_idx_file(const std::string& dir, const std::string& base, const std::string& hint) {
  const std::string gz = dir + "/" + base + ".gz";
  if (is_regular_file(gz)) return gz;
  const std::string raw = dir + "/" + base;
  if (is_regular_file(raw)) return raw;
  throw Error("missing " + raw + "(.gz)", hint);
}

std::string require_dir(const std::string& dir, const std::string& spec, const std::string& hint) {
  if (!file_exists(dir)) {
    throw Error("data directory " + dir + " (from '" + spec + "') does not exist", hint);
  }
  if (!is_directory(dir)) {
    throw Error("data path " + dir + " (from '" + spec + "') is not a directory", hint);
  }
  return dir;
}

// The CIFAR archives extract into a named sub-folder; accept both the folder itself and its
// parent so that users can point at wherever they ran `tar x`.
std::string cifar_dir(const std::string& dir, const std::string& sub) {
  const std::string nested = dir + "/" + sub;
  if (is_directory(nested)) return nested;
  return dir;
}

std::string cifar_file(const std::string& dir, const std::string& name) {
  const std::string path = dir + "/" + name;
  if (!is_regular_file(path)) {
    throw Error("missing CIFAR file " + path, kCifarHint);
  }
  return path;
}

Dataset to_float(const Dataset& d) { return Dataset{d.images.to(torch::kFloat32).div_(255.0), d.labels}; }

Dataset select(const Dataset& d, const torch::Tensor& idx) {
  return Dataset{d.images.index_select(0, idx), d.labels.index_select(0, idx)};
}

Dataset first_n(const Dataset& d, int64_t n) {
  if (n <= 0 || n >= d.size()) return d;
  // clone() so that the full split's memory is released instead of kept alive by a view.
  return Dataset{d.images.narrow(0, 0, n).clone(), d.labels.narrow(0, 0, n).clone()};
}

}  // namespace

// The bound on what a gzip'd IDX file may inflate to: the size its header promises (a larger
// stream is refused while inflating, before it takes the memory). `dims` header fields follow
// the 4-byte magic number.
std::function<uint64_t(const std::string&)> idx_limit(int dims, uint32_t magic, const std::string& path) {
  return [=](const std::string& head) -> uint64_t {
    const size_t header = 4 + 4 * static_cast<size_t>(dims);
    if (head.size() < header) return 0;
    if (read_be32(head, 0) != magic) {
      throw Error(path + ": bad magic number " + hex32(read_be32(head, 0)) + " (expected " + hex32(magic) +
                      (dims == 1 ? " for IDX labels)" : " for IDX images)"),
                  dims == 1 ? "is this an IDX label file such as train-labels-idx1-ubyte.gz?"
                            : "is this an IDX image file such as train-images-idx3-ubyte.gz?");
    }
    uint64_t n = 1;
    for (int d = 0; d < dims; ++d) {
      const uint64_t x = read_be32(head, 4 + 4 * static_cast<size_t>(d));
      if (x != 0 && n > (uint64_t{1} << 40) / x) return uint64_t{1} << 40;
      n *= x;
    }
    return header + n;
  };
}

Dataset read_idx(const std::string& images_path, const std::string& labels_path, int64_t classes) {
  const std::string img = read_maybe_gzip(images_path, 0, idx_limit(3, kIdxImagesMagic, images_path));
  if (img.size() < 16) {
    throw Error(images_path + " is truncated: " + std::to_string(img.size()) +
                    " bytes, shorter than an IDX image header",
                "download the file again");
  }
  const uint32_t img_magic = read_be32(img, 0);
  if (img_magic != kIdxImagesMagic) {
    throw Error(images_path + ": bad magic number " + hex32(img_magic) + " (expected " +
                    hex32(kIdxImagesMagic) + " for IDX images)",
                "is this an IDX image file such as train-images-idx3-ubyte.gz?");
  }
  const uint64_t n = read_be32(img, 4), h = read_be32(img, 8), w = read_be32(img, 12);
  if (h == 0 || w == 0 || n == 0) {
    throw Error(images_path + ": the header says " + std::to_string(n) + " images of " + std::to_string(h) +
                    "x" + std::to_string(w) + " pixels",
                "the file is corrupt or not an image set; download it again");
  }
  uint64_t pixels = 0;
  if (!payload_size(n, h, w, &pixels) || img.size() - 16 < pixels) {
    throw Error(images_path + " is truncated: header says " + std::to_string(n) + " images of " +
                    std::to_string(h) + "x" + std::to_string(w) + " but the file holds " +
                    std::to_string(img.size() - 16) + " pixel bytes",
                "download the file again");
  }
  if (img.size() - 16 > pixels) {
    throw Error(images_path + " has " + std::to_string(img.size() - 16 - pixels) +
                    " bytes beyond its header's " + std::to_string(n) + " images",
                "the file is corrupt; download it again");
  }

  const std::string lbl = read_maybe_gzip(labels_path, 0, idx_limit(1, kIdxLabelsMagic, labels_path));
  if (lbl.size() < 8) {
    throw Error(labels_path + " is truncated: " + std::to_string(lbl.size()) +
                    " bytes, shorter than an IDX label header",
                "download the file again");
  }
  const uint32_t lbl_magic = read_be32(lbl, 0);
  if (lbl_magic != kIdxLabelsMagic) {
    throw Error(labels_path + ": bad magic number " + hex32(lbl_magic) + " (expected " +
                    hex32(kIdxLabelsMagic) + " for IDX labels)",
                "is this an IDX label file such as train-labels-idx1-ubyte.gz?");
  }
  const uint64_t m = read_be32(lbl, 4);
  if (lbl.size() - 8 < m) {
    throw Error(labels_path + " is truncated: header says " + std::to_string(m) +
                    " labels but the file holds " + std::to_string(lbl.size() - 8),
                "download the file again");
  }
  if (lbl.size() - 8 > m) {
    throw Error(labels_path + " has " + std::to_string(lbl.size() - 8 - m) + " bytes beyond its header's " +
                    std::to_string(m) + " labels",
                "the file is corrupt; download it again");
  }
  if (m != n) {
    throw Error(images_path + " holds " + std::to_string(n) + " images but " + labels_path + " holds " +
                    std::to_string(m) + " labels",
                "the image and label files must come from the same split");
  }

  const auto N = static_cast<int64_t>(n);
  Dataset d;
  d.images = torch::empty({N, 1, static_cast<int64_t>(h), static_cast<int64_t>(w)}, torch::kUInt8);
  if (pixels > 0) std::memcpy(d.images.data_ptr<uint8_t>(), img.data() + 16, pixels);
  d.labels = torch::empty({N}, torch::kInt64);
  auto* out = d.labels.data_ptr<int64_t>();
  const auto* src = reinterpret_cast<const unsigned char*>(lbl.data()) + 8;
  for (int64_t i = 0; i < N; ++i) {
    out[i] = src[i];
    check_label(out[i], classes, i, labels_path);
  }
  return d;
}

Dataset read_cifar(const std::vector<std::string>& files, int64_t classes) {
  if (files.empty()) throw Error("no CIFAR batch files given", kCifarHint);
  // CIFAR-100 records carry a coarse and a fine label byte; the fine (100-class) one is last.
  const int64_t label_bytes = classes > 10 ? 2 : 1;
  const int64_t record = label_bytes + kCifarImageBytes;
  const std::string flavour = classes > 10 ? "CIFAR-100" : "CIFAR-10";

  std::vector<torch::Tensor> images, labels;
  for (const auto& path : files) {
    // The largest CIFAR batch file (CIFAR-100's train.bin) holds 50000 records of 3074 bytes.
    const std::string buf = read_maybe_gzip(path, uint64_t{50000} * 3074);
    const auto size = static_cast<int64_t>(buf.size());
    if (size == 0 || size % record != 0) {
      throw Error(path + " has " + std::to_string(size) + " bytes, not a whole number of " +
                      std::to_string(record) + "-byte " + flavour + " records",
                  "the file is truncated or from the other CIFAR dataset (CIFAR-10 records are "
                  "3073 bytes, CIFAR-100 records 3074)");
    }
    const int64_t n = size / record;
    auto img = torch::empty({n, 3, 32, 32}, torch::kUInt8);
    auto lbl = torch::empty({n}, torch::kInt64);
    auto* img_out = img.data_ptr<uint8_t>();
    auto* lbl_out = lbl.data_ptr<int64_t>();
    const auto* src = reinterpret_cast<const unsigned char*>(buf.data());
    for (int64_t i = 0; i < n; ++i) {
      const unsigned char* rec = src + i * record;
      lbl_out[i] = rec[label_bytes - 1];
      check_label(lbl_out[i], classes, i, path);
      std::memcpy(img_out + i * kCifarImageBytes, rec + label_bytes, kCifarImageBytes);
    }
    images.push_back(std::move(img));
    labels.push_back(std::move(lbl));
  }
  if (images.size() == 1) return Dataset{images[0], labels[0]};
  return Dataset{torch::cat(images), torch::cat(labels)};
}

namespace {

struct RawSplits {
  std::string kind, dir;
  int64_t classes = 10;
  Dataset train, test;
};

RawSplits read_raw(const std::string& spec) {
  std::string kind, dir;
  std::string missing_hint;
  if (spec == "fashion-mnist") {
    kind = spec;
    const char* env = std::getenv("DEMP_FASHION_MNIST_DIR");
    dir = env && *env ? env : kFashionMnistDefaultDir;
    missing_hint = env && *env ? std::string("check $DEMP_FASHION_MNIST_DIR, or unset it and ") +
                                     kFashionMnistInstallHint
                               : kFashionMnistInstallHint;
  } else {
    const auto colon = spec.find(':');
    if (colon != std::string::npos) {
      kind = spec.substr(0, colon);
      dir = spec.substr(colon + 1);
    }
    if (kind == "imagefolder" || kind == "imagenet") {
      throw Error("'" + spec + "' is an image folder, not an in-memory data set",
                  "export works from fashion-mnist, mnist, cifar10 or cifar100");
    }
    const bool known = kind == "mnist" || kind == "fashion-mnist" || kind == "cifar10" || kind == "cifar100";
    if (!known || dir.empty()) {
      throw Error("unknown data source '" + spec + "'", kSpecHint);
    }
    missing_hint = kind.rfind("cifar", 0) == 0
                       ? std::string(kCifarHint)
                       : "expected train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), "
                         "t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz) in " +
                             dir;
  }
  require_dir(dir, spec, missing_hint);

  RawSplits r;
  r.kind = kind;
  r.dir = dir;
  int64_t& classes = r.classes;
  Dataset& train = r.train;
  Dataset& test = r.test;
  if (kind == "mnist" || kind == "fashion-mnist") {
    classes = 10;
    train = read_idx(find_idx_file(dir, "train-images-idx3-ubyte", missing_hint),
                     find_idx_file(dir, "train-labels-idx1-ubyte", missing_hint), classes);
    test = read_idx(find_idx_file(dir, "t10k-images-idx3-ubyte", missing_hint),
                    find_idx_file(dir, "t10k-labels-idx1-ubyte", missing_hint), classes);
  } else if (kind == "cifar10") {
    classes = 10;
    const std::string d = cifar_dir(dir, "cifar-10-batches-bin");
    std::vector<std::string> files;
    for (int i = 1; i <= 5; ++i) {
      files.push_back(cifar_file(d, "data_batch_" + std::to_string(i) + ".bin"));
    }
    const std::string test_file = cifar_file(d, "test_batch.bin");
    train = read_cifar(files, classes);
    test = read_cifar({test_file}, classes);
  } else {
    classes = 100;
    const std::string d = cifar_dir(dir, "cifar-100-binary");
    const std::string train_file = cifar_file(d, "train.bin");
    const std::string test_file = cifar_file(d, "test.bin");
    train = read_cifar({train_file}, classes);
    test = read_cifar({test_file}, classes);
  }
  return r;
}

}  // namespace

std::pair<Dataset, Dataset> load_raw(const std::string& spec) {
  RawSplits r = read_raw(spec);
  return {r.train, r.test};
}

DataBundle load(const std::string& spec, const LoadOptions& opt) {
  {
    const auto colon = spec.find(':');
    const std::string kind = colon == std::string::npos ? spec : spec.substr(0, colon);
    if (kind == "imagefolder" || kind == "imagenet") {
      if (colon == std::string::npos || colon + 1 == spec.size()) {
        throw Error("'" + spec + "' names no directory",
                    "use " + kind + ":DIR, DIR holding train/<class>/ and val/<class>/ folders");
      }
      return load_image_folder(kind, spec.substr(colon + 1), opt);
    }
  }
  RawSplits raw = read_raw(spec);
  const std::string dir = raw.dir;
  Dataset train = std::move(raw.train), test = std::move(raw.test);
  DataBundle b;
  b.name = raw.kind;
  b.classes = raw.classes;
  if (train.images.size(2) != test.images.size(2) || train.images.size(3) != test.images.size(3)) {
    throw Error("training and test images in " + dir + " have different sizes",
                "the files must come from the same dataset");
  }

  // The validation carve-out is made on the full training set, before train_limit, so that the
  // validation images do not change when a quick run trims the training set.
  const int64_t n = train.size();
  if (opt.val_size < 0 || (opt.val_size > 0 && opt.val_size >= n)) {
    throw Error("validation size " + std::to_string(opt.val_size) + " does not fit the " + std::to_string(n) +
                    " training images in " + dir,
                "choose a validation size between 0 and the training set size minus 1");
  }
  if (opt.val_size > 0) {
    const auto perm = torch::randperm(n, make_generator(opt.seed, kMisc, 0));
    const auto keep = std::get<0>(perm.narrow(0, 0, n - opt.val_size).sort());
    b.val = select(train, perm.narrow(0, n - opt.val_size, opt.val_size));
    train = select(train, keep);
  }
  train = first_n(train, opt.train_limit);
  test = first_n(test, opt.test_limit);

  b.train = to_float(train);
  b.test = to_float(test);
  if (b.val.size() > 0) b.val = to_float(b.val);
  train = test = Dataset{};  // release the uint8 copies before the statistics pass

  b.channels = b.train.images.size(1);
  b.height = b.train.images.size(2);
  b.width = b.train.images.size(3);

  // Population statistics of the training split only: the test split must not leak into them.
  const auto [std_t, mean_t] =
      torch::std_mean(b.train.images, std::vector<int64_t>{0, 2, 3}, /*unbiased=*/false);
  const auto mean_d = mean_t.to(torch::kFloat64);
  auto std_d = std_t.to(torch::kFloat64);
  // A constant channel (possible in tiny test sets) would divide by zero; leave its scale alone.
  std_d = torch::where(std_d < 1e-8, torch::ones_like(std_d), std_d);
  b.mean.assign(mean_d.data_ptr<double>(), mean_d.data_ptr<double>() + b.channels);
  b.std.assign(std_d.data_ptr<double>(), std_d.data_ptr<double>() + b.channels);

  const auto m = mean_d.to(torch::kFloat32).view({1, -1, 1, 1});
  const auto s = std_d.to(torch::kFloat32).view({1, -1, 1, 1});
  for (Dataset* d : {&b.train, &b.val, &b.test}) {
    if (d->size() > 0) d->images.sub_(m).div_(s);
  }
  return b;
}

Augment default_augment(const std::string& dataset_name) {
  if (dataset_name == "cifar10" || dataset_name == "cifar100") return Augment{4, true};
  return Augment{};
}

torch::Tensor augment_batch(const torch::Tensor& images, const Augment& aug, torch::Generator& gen) {
  if (!aug.enabled()) return images;
  TORCH_CHECK(images.dim() == 4, "augment_batch expects N x C x H x W, got ", images.sizes());
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  const auto dev = images.device();
  const auto long_opts = torch::TensorOptions().dtype(torch::kInt64);
  torch::Tensor out = images;
  // Random draws are made on the CPU; on a GPU they travel from pinned memory without making the
  // host wait for the GPU (a pageable copy would synchronise the stream every step).
  auto to_dev = [&](const torch::Tensor& t) {
    return dev.is_cuda() ? t.pin_memory().to(dev, /*non_blocking=*/true) : t.to(dev);
  };

  if (aug.pad > 0) {
    const int64_t p = aug.pad;
    const auto padded = torch::constant_pad_nd(images, {p, p, p, p}, 0);
    // One crop offset per image, drawn on the CPU generator so that the result does not depend
    // on the device, then gathered in two passes (rows, then columns) without any copy loop.
    const auto offsets = to_dev(torch::randint(0, 2 * p + 1, {2, n}, gen, long_opts));
    const auto rows = offsets[0].view({n, 1}) + torch::arange(h, long_opts.device(dev));
    const auto cols = offsets[1].view({n, 1}) + torch::arange(w, long_opts.device(dev));
    const auto row_idx = rows.view({n, 1, h, 1}).expand({n, c, h, w + 2 * p});
    const auto col_idx = cols.view({n, 1, 1, w}).expand({n, c, h, w});
    out = padded.gather(2, row_idx).gather(3, col_idx);
  }
  if (aug.flip) {
    const auto mask = to_dev(torch::randint(0, 2, {n}, gen, long_opts)).eq(1).view({n, 1, 1, 1});
    out = torch::where(mask, out.flip(3), out);
  }
  return out;
}

torch::Tensor epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  return torch::randperm(n, make_generator(seed, kShuffle, static_cast<uint64_t>(epoch)),
                         torch::TensorOptions().dtype(torch::kInt64));
}

Batcher::Batcher(const Dataset& train, int64_t batch_size, uint64_t seed, Augment aug)
    : train_(train), batch_size_(batch_size), steps_per_epoch_(0), seed_(seed), aug_(aug) {
  if (batch_size <= 0) {
    throw Error("batch size must be positive, got " + std::to_string(batch_size),
                "set a batch size of at least 1");
  }
  if (batch_size > train.size()) {
    throw Error("batch size " + std::to_string(batch_size) + " is larger than the training set (" +
                    std::to_string(train.size()) + " images)",
                "lower the batch size, or raise the training limit / lower the validation size");
  }
  steps_per_epoch_ = train.size() / batch_size;
  if (train.stream && aug.enabled()) {
    throw Error("--augment pad/crop applies to in-memory data sets, not to image folders",
                "image folders: --augment auto or crop-flip (random-resized crop + flip), crop, "
                "flip or none");
  }
}

std::vector<int64_t> Batcher::indices(int64_t step) {
  const int64_t epoch = step / steps_per_epoch_;
  const int64_t pos = step % steps_per_epoch_;
  if (epoch != cached_epoch_) {
    order_ = epoch_order(train_.size(), seed_, epoch);
    cached_epoch_ = epoch;
  }
  const int64_t* o = order_.data_ptr<int64_t>() + pos * batch_size_;
  return std::vector<int64_t>(o, o + batch_size_);
}

std::pair<torch::Tensor, torch::Tensor> Batcher::batch(int64_t step) {
  TORCH_CHECK(step >= 0, "Batcher::batch: negative step ", step);
  if (train_.stream) {
    // The bounded prefetch queue: steps step, step+1, ... step+prefetch-1 in flight.
    while (!queue_.empty() && queue_.front().first != step) queue_.pop_front();
    const int64_t depth = std::max<int64_t>(1, train_.stream->prefetch());
    int64_t next = queue_.empty() ? step : queue_.back().first + 1;
    while (static_cast<int64_t>(queue_.size()) < depth) {
      queue_.emplace_back(next, train_.stream->submit(indices(next), true, seed_, next));
      ++next;
    }
    auto fut = queue_.front().second;
    queue_.pop_front();
    return fut.get();
  }
  const int64_t epoch = step / steps_per_epoch_;
  const int64_t pos = step % steps_per_epoch_;
  if (epoch != cached_epoch_) {
    // Kept on the images' device so that each batch is a device-side index_select.
    order_ = epoch_order(train_.size(), seed_, epoch).to(train_.images.device());
    cached_epoch_ = epoch;
  }
  const auto idx = order_.narrow(0, pos * batch_size_, batch_size_);
  auto images = train_.images.index_select(0, idx);
  auto labels = train_.labels.index_select(0, idx.to(train_.labels.device()));
  if (aug_.enabled()) {
    auto gen = make_generator(seed_, kAugment, static_cast<uint64_t>(step));
    images = augment_batch(images, aug_, gen);
  }
  return {images, labels};
}

torch::Tensor check_set(const Dataset& train, int64_t n, uint64_t seed, int64_t index) {
  const int64_t size = train.size();
  n = std::max<int64_t>(0, std::min(n, size));
  const auto perm = torch::randperm(size, make_generator(seed, kCheckSet, static_cast<uint64_t>(index)),
                                    torch::TensorOptions().dtype(torch::kInt64));
  if (train.stream) {
    const int64_t* p = perm.data_ptr<int64_t>();
    return train.stream->submit(std::vector<int64_t>(p, p + n), false, seed, 0).get().first;
  }
  return train.images.index_select(0, perm.narrow(0, 0, n).to(train.images.device()));
}

std::pair<torch::Tensor, torch::Tensor> eval_slice(const Dataset& ds, int64_t begin, int64_t end) {
  if (ds.stream) {
    std::vector<int64_t> idx(static_cast<size_t>(end - begin));
    for (int64_t i = begin; i < end; ++i) idx[static_cast<size_t>(i - begin)] = i;
    return ds.stream->submit(std::move(idx), false, 0, 0).get();
  }
  return {ds.images.slice(0, begin, end), ds.labels.slice(0, begin, end)};
}

}  // namespace demp::data
