#pragma once
// In-memory image datasets: readers (IDX, CIFAR binary), normalisation, batch-wise augmentation,
// deterministic shuffling, validation split and the dead-unit "check set" sampler.
#include <torch/types.h>

#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "demp/common/seeds.h"

namespace demp::data {

/// A split that is decoded on demand (image folders): a batch of images is produced by decode
/// threads from the files, never the whole split at once (image_folder.h implements it).
class ImageStream {
 public:
  virtual ~ImageStream() = default;
  virtual int64_t size() const = 0;
  /// Starts decoding the images `idx` as one batch and returns at once. train: the training
  /// transform, its random draws from (seed, step, position in the batch) alone; otherwise the
  /// evaluation transform. get() gives (float32 N×C×H×W normalised, int64 labels N) or throws the
  /// first bad image's demp::Error (--bad-images error).
  virtual std::shared_future<std::pair<torch::Tensor, torch::Tensor>> submit(std::vector<int64_t> idx,
                                                                             bool train, uint64_t seed,
                                                                             int64_t step) const = 0;
  /// Batches a Batcher keeps in flight ahead of the one it returns (the bounded prefetch queue).
  virtual int64_t prefetch() const = 0;
  /// Bad images left out so far (--bad-images skip), over all splits of the data set.
  virtual int64_t skipped() const = 0;
};

/// A split: either in memory (images float32 N×C×H×W, normalised once loaded; labels int64 N)
/// or streamed from files (`stream` set, `images`/`labels` undefined).
struct Dataset {
  Dataset() = default;
  Dataset(torch::Tensor i, torch::Tensor l, std::shared_ptr<const ImageStream> s = nullptr)
      : images(std::move(i)), labels(std::move(l)), stream(std::move(s)) {}
  torch::Tensor images;
  torch::Tensor labels;
  std::shared_ptr<const ImageStream> stream;
  int64_t size() const { return stream ? stream->size() : labels.defined() ? labels.size(0) : 0; }
};

/// Images and labels [begin, end) of `ds` for evaluation (a streamed split decodes them with the
/// evaluation transform).
std::pair<torch::Tensor, torch::Tensor> eval_slice(const Dataset& ds, int64_t begin, int64_t end);

/// Everything a run needs from its data source.
struct DataBundle {
  std::string name;  ///< "fashion-mnist", "mnist", "cifar10", "cifar100"
  int64_t channels = 1, height = 28, width = 28, classes = 10;
  Dataset train;  ///< training images (validation split already removed)
  Dataset val;    ///< may be empty (size() == 0)
  Dataset test;
  std::vector<double> mean, std;   ///< per-channel normalisation applied to every split
  std::vector<std::string> notes;  ///< one-line log entries from loading (class list, counts)
};

/// Reads an IDX image file (magic 0x00000803) and an IDX label file (0x00000801), gzip or raw.
/// Returns images as uint8 N×1×H×W and labels as int64 N. Throws demp::Error naming the file on
/// a wrong magic number, a truncated file, mismatched counts or a label >= `classes`.
Dataset read_idx(const std::string& images_path, const std::string& labels_path, int64_t classes = 10);

/// Reads CIFAR binary batch files (CIFAR-10: 1 label byte + 3072 bytes per record; CIFAR-100:
/// coarse + fine label bytes + 3072, the fine label is used). Returns uint8 N×3×32×32 images.
/// Throws demp::Error naming the file when its size is not a whole number of records or a label
/// is out of range.
Dataset read_cifar(const std::vector<std::string>& files, int64_t classes);

/// Options of image-folder data sources (imagefolder:DIR, imagenet:DIR).
struct ImageOptions {
  int64_t image_size = 224;                  ///< training and evaluation crops are size × size
  double scale_min = 0.08, scale_max = 1.0;  ///< random-resized crop: area fraction range
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;
  double eval_crop = 0.875;  ///< evaluation: resize to size/eval_crop, centre crop
  bool train_crop = true, train_flip = true;
  std::string bad_images = "error";  ///< error | skip
  int64_t threads = 1;               ///< decode threads
  int64_t prefetch = 4;              ///< training batches decoded ahead
  bool pin_memory = false;           ///< page-locked batches (the device is CUDA)
};

struct LoadOptions {
  int64_t val_size = 0;     ///< images carved from the training set for validation
  uint64_t seed = 0;        ///< seeds the validation carve-out
  int64_t train_limit = 0;  ///< >0: keep only the first N training images (tests, quick runs)
  int64_t test_limit = 0;   ///< >0: keep only the first N test images
  ImageOptions image;       ///< image folders only
};

/// The training and test splits of an in-memory source as read from disk (uint8 images, not
/// normalised, no validation carve-out): for exporting them as image folders.
std::pair<Dataset, Dataset> load_raw(const std::string& spec);

/// Loads a data source by spec: "imagefolder:DIR", "imagenet:DIR" (streamed, image_folder.h),
/// "fashion-mnist" (the Debian package at
/// /usr/share/datasets/fashion-mnist, or $DEMP_FASHION_MNIST_DIR), "mnist:DIR",
/// "fashion-mnist:DIR", "cifar10:DIR", "cifar100:DIR". Images come back float32, normalised with
/// the training split's per-channel mean and std. Throws demp::Error with a hint on an unknown
/// spec or a missing directory/file.
DataBundle load(const std::string& spec, const LoadOptions& opt = {});

/// Batch-wise augmentation, applied to a whole batch tensor at once.
struct Augment {
  int64_t pad = 0;    ///< >0: zero-pad by `pad` then random-crop back (one offset per image)
  bool flip = false;  ///< random horizontal flip (per image)
  bool enabled() const { return pad > 0 || flip; }
};
/// The default augmentation of a dataset: CIFAR pad 4 + crop + flip; MNIST-like none.
Augment default_augment(const std::string& dataset_name);
torch::Tensor augment_batch(const torch::Tensor& images, const Augment& aug, torch::Generator& gen);

/// The permutation of training indices for `epoch` (int64, on CPU), from the seed alone.
torch::Tensor epoch_order(int64_t n, uint64_t seed, int64_t epoch);

/// Training batches: step -> (epoch, position), the last partial batch of an epoch dropped, so a
/// step number alone determines the batch (exact resume).
class Batcher {
 public:
  Batcher(const Dataset& train, int64_t batch_size, uint64_t seed, Augment aug);
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  /// Images (augmented) and labels for global step `step` (0-based). A streamed split keeps the
  /// next prefetch() steps' batches decoding in the background (asked for in order, they are
  /// ready; any other step restarts the queue, with the same result).
  std::pair<torch::Tensor, torch::Tensor> batch(int64_t step);

 private:
  std::vector<int64_t> indices(int64_t step);
  std::deque<std::pair<int64_t, std::shared_future<std::pair<torch::Tensor, torch::Tensor>>>> queue_;
  Dataset train_;  // by value: tensors are shared handles, and a temporary stays valid
  int64_t batch_size_, steps_per_epoch_;
  uint64_t seed_;
  Augment aug_;
  int64_t cached_epoch_ = -1;
  torch::Tensor order_;
};

/// `n` training images without augmentation (a streamed split: with the evaluation transform),
/// drawn afresh for check number `index`.
torch::Tensor check_set(const Dataset& train, int64_t n, uint64_t seed, int64_t index);

}  // namespace demp::data
