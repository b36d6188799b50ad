#include "vision/image_info.h"

#include <gtest/gtest.h>

#include <fstream>

#include "support/test_support.h"
#include "vision/encoded_images.h"
#include "vision/image_bytes.h"

namespace vlmforge::test {
namespace {

using vision::ImageFormat;
using vision::ImageProblem;

vision::ImageInfo info_of(const std::string& bytes) {
  return vision::read_image_info(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

void expect_size(const std::string& bytes, ImageFormat format, uint32_t width, uint32_t height) {
  const auto info = info_of(bytes);
  ASSERT_TRUE(info.ok()) << info.detail;
  EXPECT_EQ(info.format, format);
  EXPECT_EQ(info.width, width);
  EXPECT_EQ(info.height, height);
}

TEST(VisionImageInfo, ReadsEachFormatsHeader) {
  expect_size(png_bytes(640, 480), ImageFormat::kPng, 640, 480);
  expect_size(jpeg_bytes(1920, 1080), ImageFormat::kJpeg, 1920, 1080);
  expect_size(gif_bytes(33, 17), ImageFormat::kGif, 33, 17);
  expect_size(bmp_bytes(300, 200), ImageFormat::kBmp, 300, 200);
  expect_size(bmp_bytes(300, -200), ImageFormat::kBmp, 300, 200);  // top-down rows
  expect_size(webp_vp8x_bytes(4000, 3000), ImageFormat::kWebp, 4000, 3000);
  expect_size(webp_vp8l_bytes(1000, 16384), ImageFormat::kWebp, 1000, 16384);
  expect_size(webp_vp8_bytes(800, 600), ImageFormat::kWebp, 800, 600);
}

TEST(VisionImageInfo, HugeDimensionsAreReadNotAllocated) {
  expect_size(png_bytes(100000, 100000), ImageFormat::kPng, 100000, 100000);
  expect_size(jpeg_bytes(65535, 65535), ImageFormat::kJpeg, 65535, 65535);
}

TEST(VisionImageInfo, JpegSkipsFillBytesAndRestartMarkers) {
  std::string bytes = jpeg_bytes(10, 20);
  bytes.insert(2, "\xFF\xFF\xFF\xD0", 4);  // fill bytes, then a standalone RST0
  expect_size(bytes, ImageFormat::kJpeg, 10, 20);
}

TEST(VisionImageInfo, EveryTruncationIsReportedNeverMisread) {
  for (const std::string& full : {png_bytes(64, 32), jpeg_bytes(64, 32), gif_bytes(64, 32), bmp_bytes(64, 32),
                                  webp_vp8x_bytes(64, 32), webp_vp8l_bytes(64, 32), webp_vp8_bytes(64, 32)}) {
    const auto whole = info_of(full);
    ASSERT_TRUE(whole.ok()) << whole.detail;
    for (size_t n = 0; n + 1 < full.size(); ++n) {
      const auto info = info_of(full.substr(0, n));
      if (info.ok()) {  // some formats end their size fields early: then the size must be right
        EXPECT_EQ(info.width, 64u);
        EXPECT_EQ(info.height, 32u);
      } else {
        EXPECT_TRUE(info.problem == ImageProblem::kTruncated || info.problem == ImageProblem::kNotImage)
            << "prefix " << n << ": " << info.detail;
      }
    }
  }
}

TEST(VisionImageInfo, CorruptHeaders) {
  EXPECT_EQ(info_of(png_bytes(0, 10)).problem, ImageProblem::kCorrupt);
  std::string no_ihdr = png_bytes(10, 10);
  no_ihdr.replace(12, 4, "IDAT");
  EXPECT_EQ(info_of(no_ihdr).problem, ImageProblem::kCorrupt);
  EXPECT_EQ(info_of(std::string("\xFF\xD8\xFF\xDA\x00\x02", 6)).problem, ImageProblem::kCorrupt);  // scan before SOF
  EXPECT_EQ(info_of(std::string("\xFF\xD8\x12\x34", 4)).problem, ImageProblem::kCorrupt);          // not a marker
  std::string bad_vp8 = webp_vp8_bytes(10, 10);
  bad_vp8[23] = 0;
  EXPECT_EQ(info_of(bad_vp8).problem, ImageProblem::kCorrupt);
  EXPECT_EQ(info_of("RIFF" + le32(4) + "WEBPXXXX" + std::string(8, '\0')).problem, ImageProblem::kCorrupt);
}

TEST(VisionImageInfo, NotImages) {
  EXPECT_EQ(info_of("").problem, ImageProblem::kNotImage);
  EXPECT_EQ(info_of("hello, world").problem, ImageProblem::kNotImage);
  EXPECT_EQ(info_of("{\"messages\": []}").problem, ImageProblem::kNotImage);
}

TEST(VisionImageInfo, FilesAndUnreadablePaths) {
  TempDir dir;
  std::ofstream(dir / "a.gif", std::ios::binary) << gif_bytes(7, 9);
  const auto info = vision::read_image_info(dir / "a.gif");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info.width, 7u);
  EXPECT_EQ(vision::read_image_info(dir / "missing.png").problem, ImageProblem::kUnreadable);
  EXPECT_EQ(vision::read_image_info(dir.path()).problem, ImageProblem::kUnreadable);  // a directory: EISDIR on read
}

vision::ImageInfo inspect(const std::string& bytes) {
  return vision::inspect_image(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

// A GIF with a global palette, one image block and a comment extension (the pixel data is not valid
// LZW: only the block structure matters here).
std::string gif_with_blocks() {
  const std::string screen = "GIF89a" + le16(2) + le16(2) + std::string("\x80\0\0", 3) + std::string(6, '\x7F');
  const std::string image = "\x2C" + le16(0) + le16(0) + le16(2) + le16(2) + std::string("\0\x02\x02\x44\x01\0", 6);
  const std::string comment = std::string("\x21\xFE\x03" "abc" "\0", 7);
  return screen + comment + image + "\x3B";
}

TEST(VisionImageInfo, InspectFindsEveryFileCutShortWithoutDecoding) {
  const std::string png = encoded_png(40, 30), jpeg = encoded_jpeg(40, 30), webp = encoded_webp(40, 30);
  const std::string bmp = bmp_bytes(4, 4) + std::string(4 * 12, '\0');  // 24-bit rows of 12 bytes
  for (const auto& [name, full] : {std::pair{"png", png}, std::pair{"jpeg", jpeg}, std::pair{"webp", webp},
                                   std::pair{"gif", gif_with_blocks()}, std::pair{"bmp", bmp}}) {
    const auto whole = inspect(full);
    ASSERT_TRUE(whole.ok()) << name << ": " << whole.detail;
    // The first third (issue 18's example), then every prefix whose header still reads.
    const auto third = inspect(full.substr(0, full.size() / 3));
    EXPECT_EQ(third.problem, ImageProblem::kTruncated) << name;
    EXPECT_NE(third.detail.find("cut short"), std::string::npos) << name << ": " << third.detail;
    for (size_t n = 1; n < full.size(); ++n) {
      const std::string prefix = full.substr(0, n);
      if (!info_of(prefix).ok()) continue;
      EXPECT_EQ(inspect(prefix).problem, ImageProblem::kTruncated) << name << " cut to " << n << " of " << full.size();
    }
  }
}

TEST(VisionImageInfo, InspectAllowsBytesAfterTheJpegEnd) {
  const std::string jpeg = encoded_jpeg(16, 16);
  EXPECT_TRUE(inspect(jpeg + "trailing").ok());
  EXPECT_TRUE(inspect(jpeg + std::string(200000, '\0')).ok());  // past the tail read: the scans are walked
  EXPECT_TRUE(inspect(jpeg_bytes(64, 32)).ok());
  EXPECT_TRUE(inspect(png_bytes(64, 32)).ok());
  EXPECT_TRUE(inspect(gif_bytes(64, 32)).ok());
}

TEST(VisionImageInfo, InspectReadsTheExifOrientation) {
  EXPECT_EQ(inspect(encoded_jpeg(24, 16)).orientation, 1);
  EXPECT_EQ(info_of(jpeg_with_orientation(24, 16, 6, false)).orientation, 1);  // header only: not read
  EXPECT_EQ(inspect(jpeg_with_orientation(24, 16, 6, false)).orientation, 6);
  EXPECT_EQ(inspect(jpeg_with_orientation(24, 16, 8, true)).orientation, 8);
  // A PNG eXIf chunk before IDAT counts; after IDAT PIL does not read it at open, nor does this.
  const std::string tiff = std::string("MM\0*", 4) + be32(8) + be16(1) + be16(0x0112) + be16(3) + be32(1) + be16(3) + be16(0) + be32(0);
  const std::string exif = be32(static_cast<uint32_t>(tiff.size())) + "eXIf" + tiff + be32(0);
  const std::string png = encoded_png(8, 8);
  EXPECT_EQ(inspect(png.substr(0, 33) + exif + png.substr(33)).orientation, 3);
  EXPECT_EQ(inspect(png.substr(0, png.size() - 12) + exif + png.substr(png.size() - 12)).orientation, 1);
  // An empty eXIf chunk: no orientation, and no copy into an empty buffer (memcpy to a null
  // pointer, which the fuzzer's UBSan build reported).
  const std::string empty_exif = be32(0) + "eXIf" + be32(0);
  const auto empty = inspect(png.substr(0, 33) + empty_exif + png.substr(33));
  EXPECT_TRUE(empty.ok()) << empty.detail;
  EXPECT_EQ(empty.orientation, 1);
  EXPECT_EQ(vision::orientation_name(6), "rotate 90° clockwise");
}

TEST(VisionImageInfo, InspectNeverCrashesOnDamagedStructure) {
  // Flipped bytes in lengths, markers and block sizes: a result (any) for each, never a crash or a hang.
  for (const std::string& full : {encoded_png(24, 16), encoded_jpeg(24, 16), encoded_webp(24, 16), gif_with_blocks(),
                                  jpeg_with_orientation(24, 16, 6, true)})
    for (size_t at = 0; at < full.size(); ++at) {
      std::string damaged = full;
      damaged[at] = static_cast<char>(damaged[at] ^ 0xA5);
      const auto info = inspect(damaged);
      EXPECT_TRUE(info.orientation >= 1 && info.orientation <= 8);
    }
}

TEST(VisionImageInfo, InspectFilesAndUnreadablePaths) {
  TempDir dir;
  const std::string png = encoded_png(40, 30);
  std::ofstream(dir / "cut.png", std::ios::binary) << png.substr(0, png.size() / 3);
  EXPECT_TRUE(vision::read_image_info(dir / "cut.png").ok());  // the header alone does not tell
  EXPECT_EQ(vision::inspect_image(dir / "cut.png").problem, ImageProblem::kTruncated);
  EXPECT_EQ(vision::inspect_image(dir / "missing.png").problem, ImageProblem::kUnreadable);
  EXPECT_EQ(vision::inspect_image(dir.path()).problem, ImageProblem::kUnreadable);
}

TEST(VisionImageInfo, ExtensionNames) {
  EXPECT_EQ(vision::format_from_extension(".JPG"), ImageFormat::kJpeg);
  EXPECT_EQ(vision::format_from_extension(".jpeg"), ImageFormat::kJpeg);
  EXPECT_EQ(vision::format_from_extension(".webp"), ImageFormat::kWebp);
  EXPECT_EQ(vision::format_from_extension(".txt"), ImageFormat::kUnknown);
}

}  // namespace
}  // namespace vlmforge::test
