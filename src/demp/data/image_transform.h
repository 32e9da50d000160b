#pragma once
// The image transforms of the image-folder loader, on decoded 8-bit pixels, without LibTorch:
// torchvision's RandomResizedCrop parameters (its algorithm, 10 attempts then a centre-crop
// fallback), the evaluation resize + centre crop, and the antialiased bilinear resampling that
// torchvision's resize(antialias=True) and PIL use (a triangle filter widened by the scale when
// shrinking), written straight into a normalised float CHW output.
#include <cstdint>
#include <vector>

#include "demp/data/image_decode.h"

namespace demp::data {

/// A small deterministic generator (splitmix64) for the per-image random draws.
class SplitMix {
 public:
  explicit SplitMix(uint64_t seed) : s_(seed) {}
  uint64_t next();
  /// Uniform in [0, 1) with 53 random bits.
  double uniform();
  /// Uniform integer in [0, n) (n >= 1).
  int64_t below(int64_t n);

 private:
  uint64_t s_;
};

/// A crop box in source pixels: rows [top, top+height), columns [left, left+width).
struct CropBox {
  int top = 0, left = 0, height = 0, width = 0;
  bool operator==(const CropBox& o) const {
    return top == o.top && left == o.left && height == o.height && width == o.width;
  }
};

/// torchvision.transforms.RandomResizedCrop.get_params: up to 10 attempts of an area fraction
/// uniform in [scale_min, scale_max] and a log-uniform aspect ratio in [ratio_min, ratio_max]
/// (drawn as float32, as torchvision draws them), w = round(sqrt(area·ratio)),
/// h = round(sqrt(area/ratio)) (round half to even, as Python); the first box that fits is placed
/// uniformly; otherwise the whole image cropped to the nearest allowed ratio, centred.
/// `draws`, when given, records the draws in order (u for the two uniforms, the integers for the
/// offsets), for the test that replays them through torchvision.
CropBox random_resized_crop(int height, int width, double scale_min, double scale_max, double ratio_min,
                            double ratio_max, SplitMix& rng, std::vector<double>* draws = nullptr);

/// One axis of a resampling: output pixel o is centred on source coordinate
/// origin + (o + 0.5)·scale; taps are clipped to source pixels [lo, hi).
struct Axis {
  double origin = 0, scale = 1;
  int lo = 0, hi = 0;
};

/// The axes of "crop `box`, then resize it to out_h × out_w" (torchvision's resized_crop).
void crop_axes(const CropBox& box, int out_h, int out_w, Axis* ay, Axis* ax);

/// The axes of "resize so that the shorter side is `resize` (the longer one int(resize·long/short),
/// as torchvision), then centre-crop out × out (offsets rounded half to even, as torchvision)".
void resize_center_axes(int height, int width, int resize, int out, Axis* ay, Axis* ax);

/// Resamples `src` (HWC uint8) along the two axes into `out` (CHW float, out_h × out_w per
/// channel): value/255, then (value - mean[c]) / std[c]. `flip` mirrors the output horizontally.
/// Antialiased bilinear (PIL's / torchvision's antialias=True filter), in float, separable.
void resample(const Image& src, const Axis& ay, const Axis& ax, int out_h, int out_w, bool flip,
              const float* mean, const float* std, float* out);

/// Rescales axes made for a `from_h × from_w` image to the same image decoded at
/// `to_h × to_w` (libjpeg-turbo's DCT scaling).
void rescale_axes(int from_h, int from_w, int to_h, int to_w, Axis* ay, Axis* ax);

}  // namespace demp::data
