// libFuzzer target for image decoding (headers read here, pixels through libjpeg-turbo, libpng,
// libwebp, giflib, and the BMP reader): any byte string must either decode into a consistent RGB
// image within the decompression-bomb limit, or be rejected with vlmforge::Error. The structure
// check (inspect_image: check-data's cut-short findings, the EXIF orientation) walks the same bytes
// and must agree with the header, without throwing.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "util/error.h"
#include "vision/image_decode.h"
#include "vision/image_info.h"

namespace {
using vlmforge::vision::ImageInfo;
using vlmforge::vision::ImageProblem;
using vlmforge::vision::RgbImage;

// inspect_image only adds findings to read_image_info's: same format and size, the header's problem
// kept, a message for every problem, and an orientation PIL knows. Bytes in memory are never unreadable.
void check_structure(std::span<const uint8_t> bytes, const ImageInfo& inspected) {
  const ImageInfo header = vlmforge::vision::read_image_info(bytes);
  if (inspected.format != header.format || inspected.width != header.width || inspected.height != header.height)
    std::abort();
  if (!header.ok() && inspected.problem != header.problem) std::abort();
  if (!inspected.ok() && inspected.detail.empty()) std::abort();
  if (inspected.problem == ImageProblem::kUnreadable) std::abort();
  if (inspected.orientation < 1 || inspected.orientation > 8) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span bytes(data, size);
  const ImageInfo inspected = vlmforge::vision::inspect_image(bytes);
  check_structure(bytes, inspected);
  try {
    const RgbImage image = vlmforge::vision::decode_rgb(bytes, "fuzz-input");
    const uint64_t pixels = uint64_t{image.width} * image.height;
    if (pixels == 0 || pixels > vlmforge::vision::kMaxImagePixels || image.pixels.size() != pixels * 3) std::abort();
    if (inspected.orientation != 1) {
      // exif_transpose turns the same pixels: orientations 5-8 swap width and height.
      const RgbImage upright = vlmforge::vision::decode_rgb(bytes, "fuzz-input", {.exif_transpose = true});
      const bool swapped = inspected.orientation >= 5;
      if (upright.width != (swapped ? image.height : image.width) ||
          upright.height != (swapped ? image.width : image.height) || upright.pixels.size() != image.pixels.size())
        std::abort();
    }
  } catch (const vlmforge::Error&) {
  }
  return 0;
}
