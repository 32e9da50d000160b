#pragma once
// In-memory image datasets: readers (IDX, CIFAR binary), normalisation, batch-wise augmentation,
// deterministic shuffling, validation split and the dead-unit "check set" sampler.
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace demp::data {

/// A whole split in memory: images float32 N×C×H×W (normalised once loaded), labels int64 N.
struct Dataset {
  torch::Tensor images;
  torch::Tensor labels;
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

/// Everything a run needs from its data source.
struct DataBundle {
  std::string name;     ///< "fashion-mnist", "mnist", "cifar10", "cifar100"
  int64_t channels = 1, height = 28, width = 28, classes = 10;
  Dataset train;        ///< training images (validation split already removed)
  Dataset val;          ///< may be empty (size() == 0)
  Dataset test;
  std::vector<double> mean, std;  ///< per-channel normalisation applied to every split
};

/// Reads an IDX image file (magic 0x00000803) and an IDX label file (0x00000801), gzip or raw.
/// Returns images as uint8 N×1×H×W and labels as int64 N. Throws demp::Error naming the file on
/// a wrong magic number, a truncated file, mismatched counts or a label >= `classes`.
Dataset read_idx(const std::string& images_path, const std::string& labels_path,
                 int64_t classes = 10);

/// Reads CIFAR binary batch files (CIFAR-10: 1 label byte + 3072 bytes per record; CIFAR-100:
/// coarse + fine label bytes + 3072, the fine label is used). Returns uint8 N×3×32×32 images.
/// Throws demp::Error naming the file when its size is not a whole number of records or a label
/// is out of range.
Dataset read_cifar(const std::vector<std::string>& files, int64_t classes);

struct LoadOptions {
  int64_t val_size = 0;        ///< images carved from the training set for validation
  uint64_t seed = 0;           ///< seeds the validation carve-out
  int64_t train_limit = 0;     ///< >0: keep only the first N training images (tests, quick runs)
  int64_t test_limit = 0;      ///< >0: keep only the first N test images
};

/// Loads a data source by spec: "fashion-mnist" (the Debian package at
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

/// A deterministic seeded generator derived from (seed, stream, index): independent streams for
/// shuffling, augmentation, check sets, noise... so that any step can be replayed on resume.
torch::Generator make_generator(uint64_t seed, uint64_t stream, uint64_t index);
/// The seed make_generator uses (also for device generators, reseeded per step).
uint64_t stream_seed(uint64_t seed, uint64_t stream, uint64_t index);

/// Stream ids for make_generator.
enum Stream : uint64_t { kShuffle = 1, kAugment = 2, kCheckSet = 3, kNoise = 4, kInit = 5, kMisc = 6 };

/// The permutation of training indices for `epoch` (int64, on CPU), from the seed alone.
torch::Tensor epoch_order(int64_t n, uint64_t seed, int64_t epoch);

/// Training batches: step -> (epoch, position), the last partial batch of an epoch dropped, so a
/// step number alone determines the batch (exact resume).
class Batcher {
 public:
  Batcher(const Dataset& train, int64_t batch_size, uint64_t seed, Augment aug);
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  /// Images (augmented) and labels for global step `step` (0-based).
  std::pair<torch::Tensor, torch::Tensor> batch(int64_t step);

 private:
  Dataset train_;  // by value: tensors are shared handles, and a temporary stays valid
  int64_t batch_size_, steps_per_epoch_;
  uint64_t seed_;
  Augment aug_;
  int64_t cached_epoch_ = -1;
  torch::Tensor order_;
};

/// `n` training images without augmentation, drawn afresh for check number `index`.
torch::Tensor check_set(const Dataset& train, int64_t n, uint64_t seed, int64_t index);

}  // namespace demp::data
