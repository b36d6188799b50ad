// libFuzzer target for image decoding (headers read here, pixels through libjpeg-turbo, libpng,
// libwebp, giflib, and the BMP reader): any byte string must either decode into a consistent RGB
// image within the decompression-bomb limit, or be rejected with vlmforge::Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "util/error.h"
#include "vision/image_decode.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const vlmforge::vision::RgbImage image = vlmforge::vision::decode_rgb(std::span(data, size), "fuzz-input");
    const uint64_t pixels = uint64_t{image.width} * image.height;
    if (pixels == 0 || pixels > vlmforge::vision::kMaxImagePixels || image.pixels.size() != pixels * 3) std::abort();
  } catch (const vlmforge::Error&) {
  }
  return 0;
}
