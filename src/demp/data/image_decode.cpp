#include "demp/data/image_decode.h"

#include <png.h>
#include <turbojpeg.h>

#include <algorithm>
#include <csetjmp>
#include <cstring>
#include <memory>

#include "demp/common/error.h"

namespace demp::data {
namespace {

constexpr const char* kBadHint =
    "remove or replace the file, or pass --bad-images skip to leave such files out";

[[noreturn]] void bad(const std::string& path, const std::string& why) {
  throw Error(path + ": " + why, kBadHint);
}

struct TjHandle {
  tjhandle h;
  explicit TjHandle(tjhandle x) : h(x) {}
  ~TjHandle() {
    if (h) tjDestroy(h);
  }
};

// One decompressor per thread, reused for every image (creating one per image costs as much as
// decoding a small JPEG).
tjhandle thread_decompressor() {
  thread_local TjHandle tj(tjInitDecompress());
  if (!tj.h) throw Error("libjpeg-turbo could not start a decompressor", "out of memory?");
  return tj.h;
}

// ITU-R 601 luma in PIL's fixed point (convert("L")).
uint8_t luma(const uint8_t* rgb) {
  return static_cast<uint8_t>((rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 0x8000) >> 16);
}

// ---- JPEG ----------------------------------------------------------------------------------

struct JpegHeader {
  int width = 0, height = 0, subsamp = 0, colorspace = 0;
};

JpegHeader jpeg_header(tjhandle tj, const std::string& bytes, const std::string& path) {
  JpegHeader h;
  if (tjDecompressHeader3(tj, reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<unsigned long>(bytes.size()), &h.width, &h.height, &h.subsamp,
                          &h.colorspace) != 0) {
    bad(path, std::string("corrupt JPEG header (") + tjGetErrorStr2(tj) + ")");
  }
  if (h.width <= 0 || h.height <= 0) bad(path, "JPEG header gives an empty image");
  return h;
}

Image decode_jpeg(const std::string& bytes, const std::string& path, int channels, double min_scale) {
  struct {
    tjhandle h;
  } tj{thread_decompressor()};
  const JpegHeader hd = jpeg_header(tj.h, bytes, path);
  const bool cmyk = hd.colorspace == TJCS_CMYK || hd.colorspace == TJCS_YCCK;

  // DCT-domain scaling: only factors <= 1/2 (the target is much smaller than the source), the
  // smallest one that keeps the image at least min_scale of its size.
  tjscalingfactor sf{1, 1};
  if (min_scale <= 0.5) {
    int n = 0;
    const tjscalingfactor* all = tjGetScalingFactors(&n);
    for (int i = 0; i < n; ++i) {
      const double f = static_cast<double>(all[i].num) / all[i].denom;
      if (f <= 0.5 && f >= min_scale && f < static_cast<double>(sf.num) / sf.denom) sf = all[i];
    }
  }
  Image img;
  img.width = TJSCALED(hd.width, sf);
  img.height = TJSCALED(hd.height, sf);
  // A colour JPEG wanted in grey is decoded to RGB and reduced as PIL's convert("L") does (its
  // Y plane alone differs from that by up to ~6 levels: the chroma round trip is not exact).
  const bool to_grey = channels == 1 && hd.colorspace != TJCS_GRAY;
  const int pf = cmyk ? TJPF_CMYK : channels == 1 && !to_grey ? TJPF_GRAY : TJPF_RGB;
  const int px = tjPixelSize[pf];
  std::vector<uint8_t> buf(static_cast<size_t>(img.width) * img.height * px);
  if (tjDecompress2(tj.h, reinterpret_cast<const unsigned char*>(bytes.data()),
                    static_cast<unsigned long>(bytes.size()), buf.data(), img.width, 0, img.height, pf,
                    TJFLAG_STOPONWARNING) != 0) {
    // A truncated file is only a libjpeg warning ("premature end of data"): refused all the same,
    // as PIL refuses it, rather than trained on with its grey bottom.
    bad(path, std::string("corrupt or truncated JPEG (") + tjGetErrorStr2(tj.h) + ")");
  }
  img.channels = channels;
  const size_t npx = static_cast<size_t>(img.width) * img.height;
  if (!cmyk && !to_grey) {
    img.pixels = std::move(buf);
    return img;
  }
  if (!cmyk) {
    img.pixels.resize(npx);
    for (size_t i = 0; i < npx; ++i) img.pixels[i] = luma(&buf[3 * i]);
    return img;
  }
  // Adobe CMYK JPEGs store inverted values (255 = no ink); RGB = (inverted C) * (inverted K).
  img.pixels.resize(npx * channels);
  for (size_t i = 0; i < npx; ++i) {
    const uint8_t* s = &buf[4 * i];
    uint8_t rgb[3];
    for (int c = 0; c < 3; ++c) rgb[c] = static_cast<uint8_t>((s[c] * s[3] + 127) / 255);
    if (channels == 3) {
      std::memcpy(&img.pixels[3 * i], rgb, 3);
    } else {
      img.pixels[i] = luma(rgb);
    }
  }
  return img;
}

// ---- PNG -----------------------------------------------------------------------------------

struct PngReadState {
  const std::string* bytes;
  size_t pos = 8;
  char error[256] = {0};
};

void png_read_mem(png_structp png, png_bytep out, png_size_t n) {
  auto* st = static_cast<PngReadState*>(png_get_io_ptr(png));
  if (st->pos + n > st->bytes->size()) png_error(png, "file is truncated");
  std::memcpy(out, st->bytes->data() + st->pos, n);
  st->pos += n;
}

void png_on_error(png_structp png, png_const_charp msg) {
  auto* st = static_cast<PngReadState*>(png_get_error_ptr(png));
  std::snprintf(st->error, sizeof(st->error), "%s", msg);
  png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {}

// libpng reports errors by longjmp: everything that must be freed lives outside this function's
// frame (the caller's vector), and no C++ object with a destructor is created between setjmp and
// the last libpng call.
bool png_decode_raw(const std::string& bytes, PngReadState& st, int channels, Image& img,
                    std::vector<png_bytep>& rows, bool header_only) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &st, png_on_error, png_on_warning);
  if (!png) return false;
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_set_read_fn(png, &st, png_read_mem);
  png_set_sig_bytes(png, 8);
  png_set_user_limits(png, 1 << 16, 1 << 16);
  png_read_info(png, info);
  const png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  const int color = png_get_color_type(png, info);
  const int depth = png_get_bit_depth(png, info);
  img.width = static_cast<int>(w);
  img.height = static_cast<int>(h);
  img.channels = (color & PNG_COLOR_MASK_COLOR) ? 3 : 1;
  if (header_only) {
    png_destroy_read_struct(&png, &info, nullptr);
    return true;
  }
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16) png_set_strip_16(png);
  if (color & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
  const bool colour = (color & PNG_COLOR_MASK_COLOR) != 0;
  if (colour && channels == 1) png_set_rgb_to_gray_fixed(png, 1, 29900, 58700);
  if (!colour && channels == 3) png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_rowbytes(png, info) != static_cast<size_t>(w) * channels) {
    png_error(png, "unexpected row layout after conversion");
  }
  for (png_uint_32 y = 0; y < h; ++y) rows[y] = img.pixels.data() + static_cast<size_t>(y) * w * channels;
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

Image decode_png(const std::string& bytes, const std::string& path, int channels, bool header_only) {
  PngReadState st;
  st.bytes = &bytes;
  Image img;
  std::vector<png_bytep> rows;
  // First pass: the header (for the buffer sizes), then the pixels.
  if (!png_decode_raw(bytes, st, channels, img, rows, true)) {
    bad(path, std::string("corrupt PNG (") + (st.error[0] ? st.error : "out of memory") + ")");
  }
  if (img.width <= 0 || img.height <= 0) bad(path, "PNG header gives an empty image");
  if (header_only) return img;
  img.pixels.resize(static_cast<size_t>(img.width) * img.height * channels);
  rows.resize(img.height);
  st.pos = 8;
  st.error[0] = 0;
  if (!png_decode_raw(bytes, st, channels, img, rows, false)) {
    bad(path, std::string("corrupt or truncated PNG (") + (st.error[0] ? st.error : "out of memory") + ")");
  }
  img.channels = channels;
  return img;
}

struct PngWriteState {
  std::string out;
  char error[256] = {0};
};

void png_write_mem(png_structp png, png_bytep data, png_size_t n) {
  static_cast<PngWriteState*>(png_get_io_ptr(png))->out.append(reinterpret_cast<char*>(data), n);
}
void png_flush_mem(png_structp) {}
void png_on_write_error(png_structp png, png_const_charp msg) {
  auto* st = static_cast<PngWriteState*>(png_get_error_ptr(png));
  std::snprintf(st->error, sizeof(st->error), "%s", msg);
  png_longjmp(png, 1);
}

bool png_encode_raw(const Image& img, PngWriteState& st, std::vector<png_bytep>& rows) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &st, png_on_write_error, png_on_warning);
  if (!png) return false;
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  png_set_write_fn(png, &st, png_write_mem, png_flush_mem);
  png_set_IHDR(png, info, img.width, img.height, 8,
               img.channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_write_image(png, rows.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}

}  // namespace

ImageFormat sniff_format(const std::string& b) {
  if (b.size() >= 3 && static_cast<uint8_t>(b[0]) == 0xFF && static_cast<uint8_t>(b[1]) == 0xD8 &&
      static_cast<uint8_t>(b[2]) == 0xFF) {
    return ImageFormat::kJpeg;
  }
  if (b.size() >= 8 && png_sig_cmp(reinterpret_cast<png_const_bytep>(b.data()), 0, 8) == 0) {
    return ImageFormat::kPng;
  }
  return ImageFormat::kUnknown;
}

ImageInfo read_image_info(const std::string& bytes, const std::string& path) {
  if (bytes.empty()) bad(path, "empty file (0 bytes)");
  ImageInfo info;
  info.format = sniff_format(bytes);
  if (info.format == ImageFormat::kJpeg) {
    const JpegHeader h = jpeg_header(thread_decompressor(), bytes, path);
    info.width = h.width;
    info.height = h.height;
    info.channels = h.colorspace == TJCS_GRAY ? 1 : 3;
  } else if (info.format == ImageFormat::kPng) {
    const Image img = decode_png(bytes, path, 3, true);
    info.width = img.width;
    info.height = img.height;
    info.channels = img.channels;
  } else {
    bad(path, "not a JPEG or PNG file (unrecognised first bytes)");
  }
  return info;
}

Image decode_image(const std::string& bytes, const std::string& path, int channels, double min_scale) {
  if (channels != 1 && channels != 3) {
    throw Error("decode_image: channels must be 1 or 3, got " + std::to_string(channels));
  }
  if (bytes.empty()) bad(path, "empty file (0 bytes)");
  switch (sniff_format(bytes)) {
    case ImageFormat::kJpeg:
      return decode_jpeg(bytes, path, channels, min_scale);
    case ImageFormat::kPng:
      return decode_png(bytes, path, channels, false);
    default:
      bad(path, "not a JPEG or PNG file (unrecognised first bytes)");
  }
}

std::string encode_png(const Image& img) {
  if (img.channels != 1 && img.channels != 3) throw Error("encode_png: 1 or 3 channels");
  PngWriteState st;
  std::vector<png_bytep> rows(img.height);
  for (int y = 0; y < img.height; ++y) {
    rows[y] = const_cast<png_bytep>(img.pixels.data() + static_cast<size_t>(y) * img.width * img.channels);
  }
  if (!png_encode_raw(img, st, rows)) {
    throw Error(std::string("PNG encoding failed: ") + st.error, "out of memory?");
  }
  return std::move(st.out);
}

std::string encode_jpeg(const Image& img, int quality) {
  if (img.channels != 1 && img.channels != 3) throw Error("encode_jpeg: 1 or 3 channels");
  TjHandle tj(tjInitCompress());
  if (!tj.h) throw Error("libjpeg-turbo could not start a compressor", "out of memory?");
  unsigned char* out = nullptr;
  unsigned long size = 0;
  const int pf = img.channels == 1 ? TJPF_GRAY : TJPF_RGB;
  const int ss = img.channels == 1 ? TJSAMP_GRAY : TJSAMP_420;
  if (tjCompress2(tj.h, img.pixels.data(), img.width, 0, img.height, pf, &out, &size, ss, quality,
                  TJFLAG_ACCURATEDCT) != 0) {
    const std::string why = tjGetErrorStr2(tj.h);
    if (out) tjFree(out);
    throw Error("JPEG encoding failed: " + why, "out of memory?");
  }
  std::string s(reinterpret_cast<char*>(out), size);
  tjFree(out);
  return s;
}

}  // namespace demp::data
