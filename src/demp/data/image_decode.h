#pragma once
// JPEG (libjpeg-turbo's TurboJPEG API) and PNG (libpng) decoding into 8-bit HWC pixels with the
// data set's channel count (1: grey, 3: RGB). No LibTorch here: the decode threads of the image
// loader call this directly.
#include <cstdint>
#include <string>
#include <vector>

namespace demp::data {

/// 8-bit pixels, row-major, channels interleaved (HWC).
struct Image {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
};

enum class ImageFormat { kUnknown, kJpeg, kPng };

/// The format from the file's magic bytes (not its name).
ImageFormat sniff_format(const std::string& bytes);

struct ImageInfo {
  ImageFormat format = ImageFormat::kUnknown;
  int width = 0, height = 0;
  int channels = 0;  ///< the file's own colour channels: 1 (grey) or 3 (colour, CMYK included)
};

/// Reads the header only. Throws demp::Error naming `path` when the file is empty, not a JPEG or
/// PNG, or its header is corrupt.
ImageInfo read_image_info(const std::string& bytes, const std::string& path);

/// Decodes the whole image into `channels` (1 or 3) channels: greyscale is replicated to RGB,
/// colour is reduced to grey with the ITU-R 601 luma weights, CMYK/YCCK JPEGs are converted to RGB
/// (Adobe's inverted CMYK, as written by Photoshop and PIL), PNG palettes are expanded, 16-bit
/// samples keep their high byte and an alpha channel is dropped (as PIL's convert("RGB")).
/// `min_scale` < 1 lets a JPEG be decoded with libjpeg-turbo's DCT-domain scaling: the smallest of
/// its factors 1/8, 1/4, 3/8, 1/2 that is still >= min_scale (so the image is at least that
/// fraction of its size; used only when the target is at most half the source). Throws
/// demp::Error naming `path` on a corrupt or truncated file (libjpeg's warnings included).
Image decode_image(const std::string& bytes, const std::string& path, int channels, double min_scale = 1.0);

/// Encoders for `demp data export-folder` and tests: PNG (lossless, grey or RGB) and JPEG
/// (4:2:0 for colour, quality `quality`). Throw demp::Error on failure.
std::string encode_png(const Image& img);
std::string encode_jpeg(const Image& img, int quality = 95);

}  // namespace demp::data
