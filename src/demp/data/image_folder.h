#pragma once
// Image folders (torchvision's ImageFolder layout) streamed from disk: DIR/train/<class>/...,
// DIR/val/<class>/... (or a --val-size carve-out of train/ when there is no val/). Classes are the
// sorted sub-folder names of train/; files are found recursively, sorted, by extension (.jpg,
// .jpeg, .png in any case) and decoded by their bytes. A pool of decode threads turns index lists
// into normalised batches (image_decode.h, image_transform.h); nothing holds the images in memory.
#include <string>

#include "demp/data/dataset.h"

namespace demp::data {

/// kind: "imagefolder" or "imagenet". imagenet: 3 channels, ImageNet's mean/std, 1000 classes
/// expected (another count is noted, not refused). imagefolder: the channel count from the first
/// training files (1 if all of the first 32 are greyscale, else 3), mean/std measured on up to
/// 512 training images (evenly spread) with the evaluation transform. Split roles: train/ ->
/// training (minus --val-size for validation), val/ -> test. Without val/, --val-size images of
/// train/ (seeded) become the test split. Throws demp::Error with a hint on a missing folder, an
/// empty class folder, a val/ class missing from train/, or no images at all.
DataBundle load_image_folder(const std::string& kind, const std::string& dir, const LoadOptions& opt);

/// Writes an in-memory data set (`spec`, e.g. fashion-mnist) as an image folder: DIR/train/<c>/
/// and DIR/val/<c>/ (val = the test split), class folders named 0..9 (zero-padded to sort as
/// numbers), files NNNNN.png or .jpg, each written atomically. Returns the number of files.
int64_t export_image_folder(const std::string& spec, const std::string& out_dir, const std::string& format,
                            int quality = 95);

}  // namespace demp::data
