#pragma once
// Full image decodes with the format's reference library (libjpeg-turbo, libpng, libwebp, giflib;
// BMP read here), giving the RGB8 pixels PIL gives for Image.open(f) → convert("RGB"): grayscale
// replicated, palettes looked up, alpha dropped (not composited), 16-bit samples as PIL reads them.
// The EXIF orientation is applied only when asked (ImageOps.exif_transpose).
//
// check-data --deep uses decode_image() to find files whose header is fine but whose data is cut
// short or damaged (pixels discarded).
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "vision/image_info.h"

namespace vlmforge::vision {

// PIL raises DecompressionBombError above 2 × Image.MAX_IMAGE_PIXELS (2 × 89,478,485) pixels; images
// larger than that are refused from their header dimensions, before any pixel is decoded.
inline constexpr uint64_t kMaxImagePixels = 2 * 89'478'485ull;

struct RgbImage {
  uint32_t width = 0;
  uint32_t height = 0;
  std::vector<uint8_t> pixels;  // height rows of width RGB triples

  const uint8_t* at(uint32_t x, uint32_t y) const { return pixels.data() + (size_t{y} * width + x) * 3; }
};

struct DecodeOptions {
  // swift's load_image and qwen_vl_utils' fetch_image open images without ImageOps.exif_transpose,
  // so a model is fine-tuned on the stored pixels of an EXIF-rotated photo; true turns them upright.
  bool exif_transpose = false;
};

// Decodes an image file's bytes; `name` is used in error messages. Throws Error for unknown
// formats, corrupt or truncated data, unsupported variants (RLE or 16-bit BMP, animated WebP) and
// images over kMaxImagePixels.
RgbImage decode_rgb(std::span<const uint8_t> bytes, const std::string& name, const DecodeOptions& options = {});
RgbImage load_rgb(const std::filesystem::path& path, const DecodeOptions& options = {});

// The largest image file read: every uncompressed 24-bit image within kMaxImagePixels fits (537 MB).
inline constexpr uint64_t kMaxImageFileBytes = uint64_t{1} << 30;

// Reads a whole image file; Error naming the path when it cannot be read, is not a regular file
// (a FIFO would block, a device such as /dev/zero never ends) or is over kMaxImageFileBytes.
std::vector<uint8_t> read_file_bytes(const std::filesystem::path& path);

// PIL's ImageOps.exif_transpose for an orientation value: 2 mirror, 3 rotate 180, 4 flip,
// 5 transpose, 6 rotate 90° clockwise, 7 transverse, 8 rotate 90° counter-clockwise.
RgbImage apply_orientation(const RgbImage& image, int orientation);

struct DecodeResult {
  bool ok = true;
  std::string error;  // the library's message when !ok
};

// `format` comes from read_image_info (kUnknown: nothing to decode, ok). Safe to call from
// several threads at once (no shared state).
DecodeResult decode_image(const std::filesystem::path& path, ImageFormat format);

}  // namespace vlmforge::vision
