#include "demp/data/image_folder.h"

#include <dirent.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/common/seeds.h"
#include "demp/data/image_decode.h"
#include "demp/data/image_transform.h"

namespace demp::data {
namespace {

constexpr const char* kLayoutHint =
    "expected DIR/train/<class>/*.jpg|png and DIR/val/<class>/* (torchvision's ImageFolder layout)";

bool is_image_name(const std::string& name) {
  const auto dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  std::string ext = name.substr(dot + 1);
  for (auto& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return ext == "jpg" || ext == "jpeg" || ext == "png";
}

// Sorted entries of a directory (hidden ones skipped): sub-directories and regular files.
void list_dir(const std::string& dir, std::vector<std::string>* dirs, std::vector<std::string>* files) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) throw Error("cannot read the directory " + dir, "check its permissions");
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.empty() || name[0] == '.') continue;
    const std::string p = dir + "/" + name;
    struct stat st;
    if (::stat(p.c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      if (dirs) dirs->push_back(name);
    } else if (S_ISREG(st.st_mode)) {
      if (files) files->push_back(name);
    }
  }
  ::closedir(d);
  if (dirs) std::sort(dirs->begin(), dirs->end());
  if (files) std::sort(files->begin(), files->end());
}

// The file list of one split, compact: one string buffer of class-relative names (ImageNet's
// 1.28 M paths cost ~50 MB as std::strings; here ~35 MB, and nothing per image beyond that).
struct FileList {
  std::string root;                  // DIR/train or DIR/val
  std::vector<std::string> classes;  // the data set's classes (train/'s)
  std::vector<int32_t> label;
  std::vector<uint64_t> offset;  // names_[offset[i], offset[i+1])
  std::string names;
  int64_t ignored = 0;  // files without an image extension

  int64_t size() const { return static_cast<int64_t>(label.size()); }
  std::string path(int64_t i) const {
    return root + "/" + classes[label[i]] + "/" + names.substr(offset[i], offset[i + 1] - offset[i]);
  }
  void add(int32_t lab, const std::string& rel) {
    if (offset.empty()) offset.push_back(0);
    label.push_back(lab);
    names += rel;
    offset.push_back(names.size());
  }
  FileList subset(const std::vector<int64_t>& idx) const {
    FileList f;
    f.root = root;
    f.classes = classes;
    for (int64_t i : idx) f.add(label[i], names.substr(offset[i], offset[i + 1] - offset[i]));
    return f;
  }
};

void walk_images(const std::string& dir, const std::string& rel, int32_t lab, FileList& out) {
  std::vector<std::string> dirs, files;
  list_dir(dir, &dirs, &files);
  // As os.walk with sorted names would list them: this folder's files, then sub-folders.
  for (const auto& f : files) {
    if (is_image_name(f)) {
      out.add(lab, rel + f);
    } else {
      ++out.ignored;
    }
  }
  for (const auto& d : dirs) walk_images(dir + "/" + d, rel + d + "/", lab, out);
}

FileList scan_split(const std::string& root, const std::vector<std::string>& classes,
                    const std::string& what) {
  FileList f;
  f.root = root;
  f.classes = classes;
  for (size_t c = 0; c < classes.size(); ++c) {
    const std::string cdir = root + "/" + classes[c];
    if (!is_directory(cdir)) continue;  // val/ may lack a class: it has no images of it
    const int64_t before = f.size();
    walk_images(cdir, "", static_cast<int32_t>(c), f);
    if (f.size() == before) {
      throw Error("class folder " + cdir + " holds no images (" + what + ")",
                  "add .jpg/.jpeg/.png files to it, or remove the folder");
    }
  }
  return f;
}

// ---- the decode pool -----------------------------------------------------------------------

class Pool {
 public:
  explicit Pool(int64_t n) {
    for (int64_t i = 0; i < std::max<int64_t>(1, n); ++i) workers_.emplace_back([this] { loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> l(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  void post(std::function<void()> f) {
    {
      std::lock_guard<std::mutex> l(m_);
      tasks_.push_back(std::move(f));
    }
    cv_.notify_one();
  }
  int64_t threads() const { return static_cast<int64_t>(workers_.size()); }

 private:
  void loop() {
    for (;;) {
      std::function<void()> f;
      {
        std::unique_lock<std::mutex> l(m_);
        cv_.wait(l, [this] { return stop_ || !tasks_.empty(); });
        if (tasks_.empty()) return;  // stop_ and drained
        f = std::move(tasks_.front());
        tasks_.pop_front();
      }
      f();
    }
  }
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

using BatchPair = std::pair<torch::Tensor, torch::Tensor>;

// What every split of one data set shares: options, normalisation, the pool, the skip count.
struct Loader {
  ImageOptions opt;
  int channels = 3;
  std::vector<float> mean{0, 0, 0}, std{1, 1, 1};
  std::atomic<int64_t> skipped{0};
  std::mutex skipped_m;
  std::set<std::string> skipped_files;
  std::unique_ptr<Pool> pool;  // last member: its threads stop first
};

struct BatchJob {
  std::promise<BatchPair> promise;
  torch::Tensor images, labels;
  std::atomic<int64_t> left{0};
  std::mutex m;
  std::exception_ptr error;
};

class FolderStream final : public ImageStream {
 public:
  FolderStream(std::shared_ptr<Loader> loader, FileList files)
      : loader_(std::move(loader)), files_(std::move(files)) {}
  // Batches still decoding (prefetched, never asked for) refer to this stream: wait for them.
  ~FolderStream() override {
    std::unique_lock<std::mutex> l(pending_m_);
    pending_cv_.wait(l, [this] { return pending_ == 0; });
  }
  int64_t size() const override { return files_.size(); }
  int64_t prefetch() const override { return loader_->opt.prefetch; }
  int64_t skipped() const override { return loader_->skipped.load(); }
  const FileList& files() const { return files_; }

  std::shared_future<BatchPair> submit(std::vector<int64_t> idx, bool train, uint64_t seed,
                                       int64_t step) const override {
    auto job = std::make_shared<BatchJob>();
    const int64_t n = static_cast<int64_t>(idx.size());
    const int64_t s = loader_->opt.image_size;
    auto opts = torch::TensorOptions().pinned_memory(loader_->opt.pin_memory);
    job->images = torch::empty({n, loader_->channels, s, s}, opts.dtype(torch::kFloat32));
    job->labels = torch::empty({n}, opts.dtype(torch::kInt64));
    std::shared_future<BatchPair> fut = job->promise.get_future().share();
    if (n == 0) {
      job->promise.set_value({job->images, job->labels});
      return fut;
    }
    job->left = n;
    {
      std::lock_guard<std::mutex> l(pending_m_);
      pending_ += n;
    }
    // One task per image: which thread decodes it does not matter, its draws come from
    // (seed, step, position) alone.
    const uint64_t batch_seed = stream_seed(seed, kAugment, static_cast<uint64_t>(step));
    for (int64_t k = 0; k < n; ++k) {
      const int64_t i = idx[static_cast<size_t>(k)];
      loader_->pool->post([this, job, k, i, train, batch_seed] {
        try {
          const uint64_t sample_seed = stream_seed(batch_seed, kAugment, static_cast<uint64_t>(k));
          job->labels.data_ptr<int64_t>()[k] = one(i, train, sample_seed, job->images[k].data_ptr<float>());
        } catch (...) {
          std::lock_guard<std::mutex> l(job->m);
          if (!job->error) job->error = std::current_exception();
        }
        if (job->left.fetch_sub(1) == 1) {
          if (job->error) {
            job->promise.set_exception(job->error);
          } else {
            job->promise.set_value({job->images, job->labels});
          }
        }
        // Last: once the count is 0 the stream may be gone (notified under the lock, so that
        // the destructor cannot return before notify_all does).
        std::lock_guard<std::mutex> l(pending_m_);
        if (--pending_ == 0) pending_cv_.notify_all();
      });
    }
    return fut;
  }

  /// Decodes and transforms image i into out (C×S×S); returns its label. Under --bad-images skip
  /// a bad file is replaced by the next good one in the list (deterministic) and counted.
  int64_t one(int64_t i, bool train, uint64_t seed, float* out) const {
    const int64_t n = files_.size();
    for (int64_t tries = 0; tries < n; ++tries) {
      const int64_t j = (i + tries) % n;
      const std::string path = files_.path(j);
      try {
        transform(path, train, seed, out);
        return files_.label[j];
      } catch (const Error& e) {
        if (loader_->opt.bad_images != "skip") throw;
        std::lock_guard<std::mutex> l(loader_->skipped_m);
        if (loader_->skipped_files.insert(path).second) {
          loader_->skipped.fetch_add(1);
          std::fprintf(stderr, "demp: bad-image skipped | %s\n", e.what());
        }
      }
    }
    throw Error("no image of " + files_.root + " could be decoded", "check the data folder");
  }

  void transform(const std::string& path, bool train, uint64_t seed, float* out) const {
    const ImageOptions& o = loader_->opt;
    std::string bytes;
    if (!is_regular_file(path)) {
      throw Error(path + ": missing (the folder changed after it was listed)",
                  "do not change the data folder while training");
    }
    bytes = read_file(path);
    const ImageInfo info = read_image_info(bytes, path);
    const int S = static_cast<int>(o.image_size);
    Axis ay, ax;
    bool flip = false;
    SplitMix rng(seed);
    if (train && o.train_crop) {
      const CropBox box = random_resized_crop(info.height, info.width, o.scale_min, o.scale_max, o.ratio_min,
                                              o.ratio_max, rng);
      crop_axes(box, S, S, &ay, &ax);
    } else {  // evaluation; also training without the random crop (--augment flip or none)
      const int resize = static_cast<int>(std::floor(static_cast<double>(S) / o.eval_crop + 1e-9));
      resize_center_axes(info.height, info.width, resize, S, &ay, &ax);
    }
    if (train && o.train_flip) flip = rng.uniform() < 0.5;
    // DCT-domain scaling may shrink the decode as long as the sampled region keeps at least the
    // output's resolution.
    const double min_scale = std::max(1.0 / ay.scale, 1.0 / ax.scale);
    const Image img = decode_image(bytes, path, loader_->channels, min_scale);
    if (img.width != info.width || img.height != info.height) {
      rescale_axes(info.height, info.width, img.height, img.width, &ay, &ax);
    }
    resample(img, ay, ax, S, S, flip, loader_->mean.data(), loader_->std.data(), out);
  }

 private:
  std::shared_ptr<Loader> loader_;
  FileList files_;
  mutable std::mutex pending_m_;
  mutable std::condition_variable pending_cv_;
  mutable int64_t pending_ = 0;
};

// Every k-th of the list, for --train-limit / --test-limit on a class-sorted list.
FileList spread(const FileList& f, int64_t limit) {
  if (limit <= 0 || limit >= f.size()) return f;
  std::vector<int64_t> idx;
  for (int64_t k = 0; k < limit; ++k) idx.push_back(k * f.size() / limit);
  return f.subset(idx);
}

}  // namespace

DataBundle load_image_folder(const std::string& kind, const std::string& dir, const LoadOptions& opt) {
  const ImageOptions& io = opt.image;
  if (io.image_size < 1 || io.image_size > 4096) {
    throw Error(fmt::format("--image-size {} is out of range", io.image_size), "e.g. 224 (1 to 4096)");
  }
  if (!(io.scale_min > 0) || !(io.scale_max <= 1) || io.scale_min > io.scale_max) {
    throw Error(fmt::format("--crop-scale {},{} is not a range within (0, 1]", io.scale_min, io.scale_max),
                "e.g. --crop-scale 0.08,1");
  }
  if (!(io.eval_crop > 0) || io.eval_crop > 1) {
    throw Error(fmt::format("--eval-crop {} is not in (0, 1]", io.eval_crop), "e.g. 0.875 (224 of 256)");
  }
  if (io.bad_images != "error" && io.bad_images != "skip") {
    throw Error("unknown --bad-images '" + io.bad_images + "'", "use error or skip");
  }
  if (!file_exists(dir)) {
    throw Error("data directory " + dir + " (from '" + kind + ":" + dir + "') does not exist", kLayoutHint);
  }
  if (!is_directory(dir)) throw Error("data path " + dir + " is not a directory", kLayoutHint);
  const std::string train_dir = dir + "/train", val_dir = dir + "/val";
  if (!is_directory(train_dir)) throw Error(dir + " has no train/ folder", kLayoutHint);
  std::vector<std::string> classes, loose;
  list_dir(train_dir, &classes, &loose);
  if (classes.empty()) {
    throw Error(train_dir + " holds no class folders" +
                    (loose.empty() ? "" : fmt::format(" ({} loose files)", loose.size())),
                kLayoutHint);
  }
  FileList train = scan_split(train_dir, classes, "train/");
  if (train.size() == 0) throw Error("no images in " + train_dir, kLayoutHint);

  DataBundle b;
  b.name = kind;
  b.classes = static_cast<int64_t>(classes.size());
  FileList test;
  const bool has_val = is_directory(val_dir);
  if (has_val) {
    std::vector<std::string> val_classes, val_loose;
    list_dir(val_dir, &val_classes, &val_loose);
    if (val_classes.empty() && !val_loose.empty()) {
      throw Error(val_dir + " holds images but no class folders",
                  kind == "imagenet" ? "move the validation images into synset folders (e.g. with the usual "
                                       "valprep.sh script from the ground-truth labels)"
                                     : "put each validation image in val/<class>/");
    }
    for (const auto& c : val_classes) {
      if (!std::binary_search(classes.begin(), classes.end(), c)) {
        throw Error("class folder " + val_dir + "/" + c + " has no counterpart in " + train_dir,
                    "val/ and train/ must use the same class folder names");
      }
    }
    test = scan_split(val_dir, classes, "val/");
    if (test.size() == 0) throw Error("no images in " + val_dir, kLayoutHint);
  }

  // Held-out images: without val/, --val-size of train/ becomes the test split; with val/ it is
  // the validation split, as for the in-memory data sets.
  FileList val;
  if (opt.val_size < 0 || (opt.val_size > 0 && opt.val_size >= train.size())) {
    throw Error(fmt::format("validation size {} does not fit the {} training images in {}", opt.val_size,
                            train.size(), train_dir),
                "choose a validation size between 0 and the training set size minus 1");
  }
  if (!has_val && opt.val_size == 0) {
    throw Error(dir + " has no val/ folder",
                "add val/<class>/ folders, or give --val-size N to hold "
                "out N training images as the test split");
  }
  if (opt.val_size > 0) {
    const int64_t n = train.size();
    const auto perm = torch::randperm(n, make_generator(opt.seed, kMisc, 0));
    const int64_t* p = perm.data_ptr<int64_t>();
    std::vector<int64_t> keep(p, p + n - opt.val_size), held(p + n - opt.val_size, p + n);
    std::sort(keep.begin(), keep.end());
    std::sort(held.begin(), held.end());
    (has_val ? val : test) = train.subset(held);
    train = train.subset(keep);
  }
  train = spread(train, opt.train_limit);
  test = spread(test, opt.test_limit);

  // Class counts, for the log.
  std::vector<int64_t> count(classes.size(), 0), tcount(classes.size(), 0);
  for (int32_t l : train.label) ++count[l];
  for (int32_t l : test.label) ++tcount[l];
  std::string list;
  for (size_t c = 0; c < classes.size(); ++c) {
    if (c == 20 && classes.size() > 24) {
      list += fmt::format(" ... ({} more)", classes.size() - 20);
      break;
    }
    list += fmt::format("{}{} {}/{}", c ? ", " : "", classes[c], count[c], tcount[c]);
  }
  b.notes.push_back(
      fmt::format("data {} | {} | {} classes | {} train, {} val, {} test ({}) | "
                  "classes (train/test images): {}",
                  kind, dir, classes.size(), train.size(), val.size(), test.size(),
                  has_val ? "test = val/" : "test = --val-size held out of train/", list));
  if (train.ignored + test.ignored > 0) {
    b.notes.push_back(fmt::format("data {} | ignored {} files without a .jpg/.jpeg/.png extension", kind,
                                  train.ignored + test.ignored));
  }
  if (kind == "imagenet" && classes.size() != 1000) {
    b.notes.push_back(
        fmt::format("warning | data imagenet | {} classes, ImageNet-1k has 1000 "
                    "(a subset? the model gets {} outputs)",
                    classes.size(), classes.size()));
  }

  auto loader = std::make_shared<Loader>();
  loader->opt = io;
  if (kind == "imagenet") {
    loader->channels = 3;
  } else {
    // Grey only if the first files are all grey: a colour data set is not reduced to grey.
    loader->channels = 1;
    for (int64_t i = 0; i < std::min<int64_t>(32, train.size()) && loader->channels == 1; ++i) {
      try {
        if (read_image_info(read_file(train.path(i)), train.path(i)).channels == 3) loader->channels = 3;
      } catch (const Error&) {
      }
    }
  }
  const int C = loader->channels;
  loader->mean.assign(C, 0.0f);
  loader->std.assign(C, 1.0f);
  loader->pool = std::make_unique<Pool>(io.threads);
  b.channels = C;
  b.height = b.width = io.image_size;

  auto train_stream = std::make_shared<FolderStream>(loader, train);
  if (kind == "imagenet") {
    b.mean = {0.485, 0.456, 0.406};
    b.std = {0.229, 0.224, 0.225};
  } else {
    // Measured: the population mean/std of up to 512 training images, evaluation transform.
    const int64_t m = std::min<int64_t>(512, train.size());
    std::vector<int64_t> idx;
    for (int64_t k = 0; k < m; ++k) idx.push_back(k * train.size() / m);
    // In chunks (memory stays that of one batch), sums in double.
    std::vector<double> sum(C, 0.0), sq(C, 0.0);
    double count = 0;
    for (int64_t k = 0; k < m; k += 64) {
      const std::vector<int64_t> chunk(idx.begin() + k, idx.begin() + std::min<int64_t>(m, k + 64));
      const auto x = train_stream->submit(chunk, false, 0, 0).get().first.to(torch::kFloat64);
      const auto s1 = x.sum(std::vector<int64_t>{0, 2, 3}),
                 s2 = x.square().sum(std::vector<int64_t>{0, 2, 3});
      for (int c = 0; c < C; ++c) {
        sum[c] += s1[c].item<double>();
        sq[c] += s2[c].item<double>();
      }
      count += static_cast<double>(x.numel() / C);
    }
    for (int c = 0; c < C; ++c) {
      const double mu = sum[c] / count;
      const double s = std::sqrt(std::max(0.0, sq[c] / count - mu * mu));
      b.mean.push_back(mu);
      b.std.push_back(s < 1e-8 ? 1.0 : s);
    }
  }
  for (int c = 0; c < C; ++c) {
    loader->mean[c] = static_cast<float>(b.mean[c]);
    loader->std[c] = static_cast<float>(b.std[c]);
  }
  b.notes.push_back(fmt::format(
      "data {} | {} channels | image size {} | train: {} | eval: resize {} "
      "+ centre crop | mean {::.4f} std {::.4f} ({}) | {} decode threads, "
      "{} batches prefetched | bad images: {}",
      kind, C, io.image_size,
      io.train_crop ? fmt::format("random-resized crop scale {},{} ratio "
                                  "{:.4f},{:.4f}{}",
                                  io.scale_min, io.scale_max, io.ratio_min, io.ratio_max,
                                  io.train_flip ? " + flip" : "")
                    : (io.train_flip ? "the evaluation transform + flip" : "the evaluation transform"),
      static_cast<int>(std::floor(io.image_size / io.eval_crop + 1e-9)), b.mean, b.std,
      kind == "imagenet" ? "ImageNet's" : "measured on the training images", loader->pool->threads(),
      io.prefetch, io.bad_images));
  b.train.stream = train_stream;
  if (val.size() > 0) b.val.stream = std::make_shared<FolderStream>(loader, val);
  b.test.stream = std::make_shared<FolderStream>(loader, test);
  return b;
}

int64_t export_image_folder(const std::string& spec, const std::string& out_dir, const std::string& format,
                            int quality) {
  if (format != "png" && format != "jpeg") {
    throw Error("unknown --format '" + format + "'", "use png or jpeg");
  }
  auto [train, test] = load_raw(spec);
  const int64_t classes = std::max(train.labels.max().item<int64_t>(), test.labels.max().item<int64_t>()) + 1;
  const int digits = classes > 10 ? (classes > 100 ? 3 : 2) : 1;
  const std::string ext = format == "png" ? ".png" : ".jpg";
  int64_t written = 0;
  for (const auto& [split, ds] : {std::pair<std::string, const Dataset*>{"train", &train}, {"val", &test}}) {
    for (int64_t c = 0; c < classes; ++c)
      make_directories(fmt::format("{}/{}/{:0{}d}", out_dir, split, c, digits));
    const auto images = ds->images.contiguous();
    const int64_t n = ds->size(), C = images.size(1), H = images.size(2), W = images.size(3);
    const auto* lab = ds->labels.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      Image img;
      img.width = static_cast<int>(W);
      img.height = static_cast<int>(H);
      img.channels = static_cast<int>(C);
      img.pixels.resize(static_cast<size_t>(C * H * W));
      const uint8_t* src = images.data_ptr<uint8_t>() + i * C * H * W;
      for (int64_t y = 0; y < H; ++y) {
        for (int64_t x = 0; x < W; ++x) {
          for (int64_t c = 0; c < C; ++c) img.pixels[(y * W + x) * C + c] = src[(c * H + y) * W + x];
        }
      }
      const std::string bytes = format == "png" ? encode_png(img) : encode_jpeg(img, quality);
      write_file_atomic(fmt::format("{}/{}/{:0{}d}/{:05d}{}", out_dir, split, lab[i], digits, i, ext), bytes,
                        /*durable=*/false);
      ++written;
    }
  }
  ::sync();  // the files were written without an fsync each: made durable once here
  return written;
}

}  // namespace demp::data
