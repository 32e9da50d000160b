#include "demp/data/image_transform.h"

#include <algorithm>
#include <cmath>

namespace demp::data {

uint64_t SplitMix::next() {
  uint64_t z = (s_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double SplitMix::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

int64_t SplitMix::below(int64_t n) {
  return n <= 1 ? 0 : static_cast<int64_t>(uniform() * static_cast<double>(n));
}

namespace {
// Python's round(): half to even (the default floating-point rounding mode).
int round_even(double x) { return static_cast<int>(std::nearbyint(x)); }
}  // namespace

CropBox random_resized_crop(int height, int width, double scale_min, double scale_max, double ratio_min,
                            double ratio_max, SplitMix& rng, std::vector<double>* draws) {
  const double area = static_cast<double>(height) * width;
  // torchvision computes log(ratio) and draws both uniforms in float32 tensors.
  const float log_lo = std::log(static_cast<float>(ratio_min));
  const float log_hi = std::log(static_cast<float>(ratio_max));
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double u1 = rng.uniform(), u2 = rng.uniform();
    if (draws) draws->insert(draws->end(), {u1, u2});
    const float s = static_cast<float>(scale_min + (scale_max - scale_min) * u1);
    const float lr = static_cast<float>(log_lo + (static_cast<double>(log_hi) - log_lo) * u2);
    const double target = area * static_cast<double>(s);
    const double aspect = static_cast<double>(std::exp(lr));
    const int w = round_even(std::sqrt(target * aspect));
    const int h = round_even(std::sqrt(target / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      CropBox b;
      b.height = h;
      b.width = w;
      b.top = static_cast<int>(rng.below(height - h + 1));
      b.left = static_cast<int>(rng.below(width - w + 1));
      if (draws) draws->insert(draws->end(), {double(b.top), double(b.left)});
      return b;
    }
  }
  // Fallback: the whole image, cut to the allowed range of ratios, centred.
  const double in_ratio = static_cast<double>(width) / height;
  CropBox b;
  if (in_ratio < ratio_min) {
    b.width = width;
    b.height = round_even(b.width / ratio_min);
  } else if (in_ratio > ratio_max) {
    b.height = height;
    b.width = round_even(b.height * ratio_max);
  } else {
    b.width = width;
    b.height = height;
  }
  b.top = (height - b.height) / 2;
  b.left = (width - b.width) / 2;
  return b;
}

void crop_axes(const CropBox& box, int out_h, int out_w, Axis* ay, Axis* ax) {
  *ay = Axis{static_cast<double>(box.top), static_cast<double>(box.height) / out_h, box.top,
             box.top + box.height};
  *ax = Axis{static_cast<double>(box.left), static_cast<double>(box.width) / out_w, box.left,
             box.left + box.width};
}

void resize_center_axes(int height, int width, int resize, int out, Axis* ay, Axis* ax) {
  int rh, rw;
  if (height <= width) {
    rh = resize;
    rw = static_cast<int>(static_cast<int64_t>(resize) * width / height);
  } else {
    rw = resize;
    rh = static_cast<int>(static_cast<int64_t>(resize) * height / width);
  }
  // torchvision's center_crop: int(round((size - crop) / 2.0)), half to even.
  const int top = round_even((rh - out) / 2.0), left = round_even((rw - out) / 2.0);
  const double sy = static_cast<double>(height) / rh, sx = static_cast<double>(width) / rw;
  *ay = Axis{top * sy, sy, 0, height};
  *ax = Axis{left * sx, sx, 0, width};
}

void rescale_axes(int from_h, int from_w, int to_h, int to_w, Axis* ay, Axis* ax) {
  const double fy = static_cast<double>(to_h) / from_h, fx = static_cast<double>(to_w) / from_w;
  auto one = [](Axis* a, double f, int to) {
    a->origin *= f;
    a->scale *= f;
    a->lo = std::max(0, static_cast<int>(std::floor(a->lo * f)));
    a->hi = std::min(to, static_cast<int>(std::ceil(a->hi * f)));
  };
  one(ay, fy, to_h);
  one(ax, fx, to_w);
}

namespace {

// PIL's precompute_coeffs (torchvision's antialiased kernels follow it): for each output pixel a
// first source index and normalised triangle-filter weights.
struct Taps {
  std::vector<int> first, count;
  std::vector<float> weights;  // out × width
  int width = 0;
};

Taps make_taps(const Axis& a, int out) {
  Taps t;
  const double filterscale = std::max(a.scale, 1.0);
  const double support = 1.0 * filterscale;  // bilinear: support 1
  const int n = a.hi - a.lo;
  t.width = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out);
  t.count.resize(out);
  t.weights.assign(static_cast<size_t>(out) * t.width, 0.0f);
  const double ss = 1.0 / filterscale;
  std::vector<double> scratch;
  for (int o = 0; o < out; ++o) {
    // Relative to the clipped range, as torchvision (crop first, then resize) computes it.
    const double center = a.origin - a.lo + (o + 0.5) * a.scale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > n) xmax = n;
    int cnt = std::max(0, std::min(xmax - xmin, t.width));
    double total = 0;
    std::vector<double>& w = scratch;
    w.assign(t.width, 0.0);
    for (int x = 0; x < cnt; ++x) {
      const double d = std::abs((x + xmin - center + 0.5) * ss);
      w[x] = d < 1.0 ? 1.0 - d : 0.0;
      total += w[x];
    }
    for (int x = 0; x < cnt; ++x) {
      t.weights[static_cast<size_t>(o) * t.width + x] = static_cast<float>(total != 0 ? w[x] / total : 0);
    }
    t.first[o] = xmin + a.lo;
    t.count[o] = cnt;
  }
  return t;
}

}  // namespace

void resample(const Image& src, const Axis& ay, const Axis& ax, int out_h, int out_w, bool flip,
              const float* mean, const float* std, float* out) {
  const int C = src.channels;
  const Taps ty = make_taps(ay, out_h), tx = make_taps(ax, out_w);
  // Horizontal pass over the source rows the vertical taps need, then the vertical pass.
  int r0 = src.height, r1 = 0;
  for (int o = 0; o < out_h; ++o) {
    if (ty.count[o] == 0) continue;
    r0 = std::min(r0, ty.first[o]);
    r1 = std::max(r1, ty.first[o] + ty.count[o]);
  }
  if (r1 < r0) r1 = r0;
  std::vector<float> tmp(static_cast<size_t>(r1 - r0) * out_w * C);
  for (int y = r0; y < r1; ++y) {
    const uint8_t* row = src.pixels.data() + static_cast<size_t>(y) * src.width * C;
    float* dst = tmp.data() + static_cast<size_t>(y - r0) * out_w * C;
    for (int o = 0; o < out_w; ++o) {
      const float* w = &tx.weights[static_cast<size_t>(o) * tx.width];
      const uint8_t* s = row + static_cast<size_t>(tx.first[o]) * C;
      float acc[4] = {0, 0, 0, 0};
      for (int k = 0; k < tx.count[o]; ++k) {
        for (int c = 0; c < C; ++c) acc[c] += w[k] * s[k * C + c];
      }
      for (int c = 0; c < C; ++c) dst[o * C + c] = acc[c];
    }
  }
  const size_t plane = static_cast<size_t>(out_h) * out_w;
  float scale[4], shift[4];
  for (int c = 0; c < C; ++c) {
    scale[c] = 1.0f / (255.0f * std[c]);
    shift[c] = -mean[c] / std[c];
  }
  std::vector<float> acc(static_cast<size_t>(out_w) * C);
  for (int o = 0; o < out_h; ++o) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    const float* w = &ty.weights[static_cast<size_t>(o) * ty.width];
    for (int k = 0; k < ty.count[o]; ++k) {
      const float* s = tmp.data() + static_cast<size_t>(ty.first[o] + k - r0) * out_w * C;
      const float wk = w[k];
      for (int i = 0; i < out_w * C; ++i) acc[i] += wk * s[i];
    }
    for (int x = 0; x < out_w; ++x) {
      const int ox = flip ? out_w - 1 - x : x;
      for (int c = 0; c < C; ++c) {
        out[c * plane + static_cast<size_t>(o) * out_w + ox] = acc[x * C + c] * scale[c] + shift[c];
      }
    }
  }
}

}  // namespace demp::data
