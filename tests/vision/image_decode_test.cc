#include "vision/image_decode.h"

#include <gtest/gtest.h>

#include <fstream>

#include "support/test_support.h"
#include "vision/encoded_images.h"
#include "vision/image_bytes.h"

namespace vlmforge::test {
namespace {

using vision::ImageFormat;

std::filesystem::path write(const TempDir& dir, const std::string& name, const std::string& bytes) {
  std::ofstream(dir / name, std::ios::binary) << bytes;
  return dir / name;
}

TEST(VisionImageDecode, ValidImagesDecode) {
  TempDir dir;
  EXPECT_TRUE(vision::decode_image(write(dir, "a.png", encoded_png(40, 30)), ImageFormat::kPng).ok);
  EXPECT_TRUE(vision::decode_image(write(dir, "a.jpg", encoded_jpeg(40, 30)), ImageFormat::kJpeg).ok);
  EXPECT_TRUE(vision::decode_image(write(dir, "a.webp", encoded_webp(40, 30)), ImageFormat::kWebp).ok);
  const auto info = vision::read_image_info(dir / "a.webp");
  EXPECT_EQ(info.width, 40u);
  EXPECT_EQ(info.height, 30u);
}

TEST(VisionImageDecode, CutShortDataFailsWhileTheHeaderReads) {
  TempDir dir;
  for (const auto& [name, bytes, format] :
       {std::tuple{"cut.png", encoded_png(64, 64), ImageFormat::kPng}, std::tuple{"cut.jpg", encoded_jpeg(64, 64), ImageFormat::kJpeg},
        std::tuple{"cut.webp", encoded_webp(64, 64), ImageFormat::kWebp}}) {
    const auto path = write(dir, name, bytes.substr(0, bytes.size() / 2));
    EXPECT_TRUE(vision::read_image_info(path).ok()) << name;
    const auto decoded = vision::decode_image(path, format);
    EXPECT_FALSE(decoded.ok) << name;
    EXPECT_FALSE(decoded.error.empty()) << name;
  }
}

TEST(VisionImageDecode, GifAndBmp) {
  TempDir dir;
  // A header-only GIF has no image block; a header-only BMP has no pixel array.
  EXPECT_FALSE(vision::decode_image(write(dir, "a.gif", gif_bytes(4, 4)), ImageFormat::kGif).ok);
  EXPECT_FALSE(vision::decode_image(write(dir, "a.bmp", bmp_bytes(100, 100)), ImageFormat::kBmp).ok);
  // 2x2 24-bit: rows padded to 8 bytes, 16 bytes of pixels after the 54-byte headers.
  EXPECT_TRUE(vision::decode_image(write(dir, "b.bmp", bmp_bytes(2, 2).substr(0, 54) + std::string(16, '\x7f')), ImageFormat::kBmp).ok);
}

}  // namespace
}  // namespace vlmforge::test
