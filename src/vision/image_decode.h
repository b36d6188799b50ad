#pragma once
// --deep: a full decode of an image with the format's reference library (libjpeg-turbo, libpng,
// libwebp, giflib; BMP by its declared pixel-array size), to find files whose header is fine but
// whose data is cut short or damaged. Pixels are decoded and discarded.
#include <filesystem>
#include <string>

#include "vision/image_info.h"

namespace vlmforge::vision {

struct DecodeResult {
  bool ok = true;
  std::string error;  // the library's message when !ok
};

// `format` comes from read_image_info (kUnknown: nothing to decode, ok). Safe to call from
// several threads at once (no shared state).
DecodeResult decode_image(const std::filesystem::path& path, ImageFormat format);

}  // namespace vlmforge::vision
