// Decoding to RGB8 as PIL's Image.open → convert("RGB") gives it (→ exif_transpose when asked): every
// format, grayscale / palette / alpha / 16-bit conversions, EXIF orientation, and the refusals.
#include <gif_lib.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "util/error.h"
#include "vision/encoded_images.h"
#include "vision/image_bytes.h"
#include "vision/image_decode.h"

namespace vlmforge::test {
namespace {

using vision::RgbImage;

std::span<const uint8_t> as_bytes(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

std::vector<uint8_t> rgb(const RgbImage& image) { return image.pixels; }

// png_image writer for the simplified formats (gray, gray+alpha, RGBA, colormapped, 16-bit linear).
std::string write_png(uint32_t width, uint32_t height, uint32_t format, const void* pixels, const void* colormap = nullptr,
                      int colormap_entries = 0) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = width;
  image.height = height;
  image.format = format;
  image.colormap_entries = static_cast<png_uint_32>(colormap_entries);
  png_alloc_size_t size = 0;
  EXPECT_NE(png_image_write_to_memory(&image, nullptr, &size, 0, pixels, 0, colormap), 0) << image.message;
  std::string out(size, '\0');
  EXPECT_NE(png_image_write_to_memory(&image, out.data(), &size, 0, pixels, 0, colormap), 0) << image.message;
  out.resize(size);
  return out;
}

TEST(VisionImageLoad, RgbPngAndLosslessWebpRoundTripExactly) {
  const auto expected = gradient_rgb(7, 5);
  for (const std::string& file : {encoded_png(7, 5), encoded_webp(7, 5)}) {
    const RgbImage image = vision::decode_rgb(as_bytes(file), "x");
    EXPECT_EQ(image.width, 7u);
    EXPECT_EQ(image.height, 5u);
    EXPECT_EQ(rgb(image), expected);
  }
}

TEST(VisionImageLoad, PngGrayAlphaPaletteAnd16BitConvertAsPil) {
  const uint8_t gray[4] = {0, 60, 200, 255};
  RgbImage g = vision::decode_rgb(as_bytes(write_png(2, 2, PNG_FORMAT_GRAY, gray)), "gray.png");
  EXPECT_EQ(rgb(g), (std::vector<uint8_t>{0, 0, 0, 60, 60, 60, 200, 200, 200, 255, 255, 255}));
  // RGBA: alpha dropped, colour kept (no compositing onto a background).
  const uint8_t rgba[8] = {10, 20, 30, 0, 40, 50, 60, 128};
  RgbImage a = vision::decode_rgb(as_bytes(write_png(2, 1, PNG_FORMAT_RGBA, rgba)), "rgba.png");
  EXPECT_EQ(rgb(a), (std::vector<uint8_t>{10, 20, 30, 40, 50, 60}));
  const uint8_t ga[4] = {77, 0, 99, 255};
  RgbImage la = vision::decode_rgb(as_bytes(write_png(2, 1, PNG_FORMAT_GA, ga)), "la.png");
  EXPECT_EQ(rgb(la), (std::vector<uint8_t>{77, 77, 77, 99, 99, 99}));
  // Palette: indices looked up.
  const uint8_t palette[9] = {255, 0, 0, 0, 255, 0, 1, 2, 3};
  const uint8_t indices[3] = {2, 0, 1};
  RgbImage p = vision::decode_rgb(as_bytes(write_png(3, 1, PNG_FORMAT_RGB_COLORMAP, indices, palette, 3)), "p.png");
  EXPECT_EQ(rgb(p), (std::vector<uint8_t>{1, 2, 3, 255, 0, 0, 0, 255, 0}));
  // 16-bit grayscale is PIL mode I;16: convert("RGB") clips at 255.
  const uint16_t gray16[3] = {7, 255, 4000};
  RgbImage w = vision::decode_rgb(as_bytes(write_png(3, 1, PNG_FORMAT_LINEAR_Y, gray16)), "g16.png");
  EXPECT_EQ(rgb(w), (std::vector<uint8_t>{7, 7, 7, 255, 255, 255, 255, 255, 255}));
}

TEST(VisionImageLoad, OrientationsMatchPilTranspose) {
  // 3x2 image, pixel value = 10·y + x (all channels).
  RgbImage in;
  in.width = 3, in.height = 2;
  for (uint32_t y = 0; y < 2; ++y)
    for (uint32_t x = 0; x < 3; ++x)
      for (int c = 0; c < 3; ++c) in.pixels.push_back(static_cast<uint8_t>(10 * y + x));
  auto grid = [](const RgbImage& im) {
    std::vector<int> v;
    for (size_t i = 0; i < im.pixels.size(); i += 3) v.push_back(im.pixels[i]);
    return std::tuple{im.width, im.height, v};
  };
  // Expected layouts of PIL's transposes, row by row.
  EXPECT_EQ(grid(vision::apply_orientation(in, 1)), std::tuple(3u, 2u, std::vector<int>{0, 1, 2, 10, 11, 12}));
  EXPECT_EQ(grid(vision::apply_orientation(in, 2)), std::tuple(3u, 2u, std::vector<int>{2, 1, 0, 12, 11, 10}));
  EXPECT_EQ(grid(vision::apply_orientation(in, 3)), std::tuple(3u, 2u, std::vector<int>{12, 11, 10, 2, 1, 0}));
  EXPECT_EQ(grid(vision::apply_orientation(in, 4)), std::tuple(3u, 2u, std::vector<int>{10, 11, 12, 0, 1, 2}));
  EXPECT_EQ(grid(vision::apply_orientation(in, 5)), std::tuple(2u, 3u, std::vector<int>{0, 10, 1, 11, 2, 12}));
  // 6: rotated 90° clockwise — the bottom-left pixel lands top-left.
  EXPECT_EQ(grid(vision::apply_orientation(in, 6)), std::tuple(2u, 3u, std::vector<int>{10, 0, 11, 1, 12, 2}));
  EXPECT_EQ(grid(vision::apply_orientation(in, 7)), std::tuple(2u, 3u, std::vector<int>{12, 2, 11, 1, 10, 0}));
  // 8: rotated 90° counter-clockwise — the top-right pixel lands top-left.
  EXPECT_EQ(grid(vision::apply_orientation(in, 8)), std::tuple(2u, 3u, std::vector<int>{2, 12, 1, 11, 0, 10}));
}

TEST(VisionImageLoad, JpegExifOrientationIsAppliedOnlyWhenAsked) {
  const RgbImage plain = vision::decode_rgb(as_bytes(encoded_jpeg(24, 16)), "a.jpg");
  ASSERT_EQ(plain.width, 24u);
  for (int orientation = 1; orientation <= 8; ++orientation)
    for (bool big_endian : {false, true}) {
      const std::string file = jpeg_with_orientation(24, 16, orientation, big_endian);
      // As swift's load_image and qwen_vl_utils: the stored pixels.
      EXPECT_EQ(vision::decode_rgb(as_bytes(file), "b.jpg").pixels, plain.pixels) << orientation;
      const RgbImage turned = vision::decode_rgb(as_bytes(file), "b.jpg", {.exif_transpose = true});
      const RgbImage expected = vision::apply_orientation(plain, orientation);
      EXPECT_EQ(turned.width, expected.width) << orientation;
      EXPECT_EQ(turned.pixels, expected.pixels) << orientation;
    }
}

// A 4-component JPEG as libjpeg writes CMYK (no Adobe transform).
std::string cmyk_jpeg(int width, int height, std::vector<uint8_t>& raw_out) {
  jpeg_compress_struct cinfo{};
  jpeg_error_mgr error{};
  cinfo.err = jpeg_std_error(&error);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = width, cinfo.image_height = height, cinfo.input_components = 4, cinfo.in_color_space = JCS_CMYK;
  jpeg_set_defaults(&cinfo);
  jpeg_start_compress(&cinfo, TRUE);
  std::vector<uint8_t> pixels(size_t(width) * height * 4);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 53 % 256);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = pixels.data() + size_t(cinfo.next_scanline) * width * 4;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::string out(reinterpret_cast<char*>(buffer), size);
  std::free(buffer);
  // The decoded CMYK values, straight from libjpeg.
  jpeg_decompress_struct d{};
  jpeg_error_mgr derror{};
  d.err = jpeg_std_error(&derror);
  jpeg_create_decompress(&d);
  jpeg_mem_src(&d, reinterpret_cast<const unsigned char*>(out.data()), out.size());
  jpeg_read_header(&d, TRUE);
  d.out_color_space = JCS_CMYK;
  jpeg_start_decompress(&d);
  raw_out.resize(size_t(width) * height * 4);
  while (d.output_scanline < d.output_height) {
    JSAMPROW row = raw_out.data() + size_t(d.output_scanline) * width * 4;
    jpeg_read_scanlines(&d, &row, 1);
  }
  jpeg_finish_decompress(&d);
  jpeg_destroy_decompress(&d);
  return out;
}

TEST(VisionImageLoad, CmykJpegConvertsAsPil) {
  std::vector<uint8_t> raw;
  const std::string file = cmyk_jpeg(9, 7, raw);
  const RgbImage image = vision::decode_rgb(as_bytes(file), "cmyk.jpg");
  ASSERT_EQ(image.pixels.size(), size_t{9} * 7 * 3);
  // PIL: components inverted (CMYK;I), then R = (255 - K) - C·(255 - K)/255 rounded, on the inverted values.
  for (size_t p = 0; p < size_t{9} * 7; ++p)
    for (int c = 0; c < 3; ++c) {
      const double cyan = 255 - raw[4 * p + c], nk = 255 - (255 - raw[4 * p + 3]);
      const double expected = std::clamp(nk - std::round(cyan * nk / 255.0), 0.0, 255.0);
      ASSERT_EQ(image.pixels[3 * p + c], expected) << p << "," << c;
    }
}

TEST(VisionImageLoad, WebpExifOrientationIsAppliedOnlyWhenAsked) {
  // An extended WebP: VP8X (EXIF flag) + the lossless bitstream + an EXIF chunk with orientation 8.
  const std::string simple = encoded_webp(6, 4);
  const std::string bitstream = simple.substr(12);  // the VP8L chunk
  const std::string tiff = std::string("II*\0", 4) + le32(8) + le16(1) + le16(0x0112) + le16(3) + le32(1) + le16(8) +
                           le16(0) + le32(0);
  const std::string vp8x = std::string("VP8X") + le32(10) + std::string("\x08\0\0\0", 4) + le16(5) + '\0' + le16(3) + '\0';
  const std::string exif = std::string("EXIF") + le32(static_cast<uint32_t>(tiff.size())) + tiff;
  const std::string body = "WEBP" + vp8x + bitstream + exif;
  const std::string file = "RIFF" + le32(static_cast<uint32_t>(body.size())) + body;
  const RgbImage plain = vision::decode_rgb(as_bytes(simple), "a.webp");
  EXPECT_EQ(vision::decode_rgb(as_bytes(file), "b.webp").pixels, plain.pixels);
  const RgbImage turned = vision::decode_rgb(as_bytes(file), "b.webp", {.exif_transpose = true});
  EXPECT_EQ(turned.width, 4u);
  EXPECT_EQ(turned.pixels, vision::apply_orientation(plain, 8).pixels);
}

int gif_write_memory(GifFileType* gif, const GifByteType* data, int count) {
  static_cast<std::string*>(gif->UserData)->append(reinterpret_cast<const char*>(data), static_cast<size_t>(count));
  return count;
}

// A 5x4 canvas with a 2x2 first frame at (1, 1), local palette, transparent index 3; then a second frame.
std::string two_frame_gif() {
  std::string out;
  int error = 0;
  GifFileType* gif = EGifOpen(&out, gif_write_memory, &error);
  GifColorType global[4] = {{9, 9, 9}, {8, 8, 8}, {7, 7, 7}, {6, 6, 6}};
  GifColorType local[4] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {50, 60, 70}};
  ColorMapObject* global_map = GifMakeMapObject(4, global);
  ColorMapObject* local_map = GifMakeMapObject(4, local);
  EGifSetGifVersion(gif, true);
  EGifPutScreenDesc(gif, 5, 4, 2, 0, global_map);
  const GifByteType gce[4] = {1, 0, 0, 3};  // transparent flag, delay 0, index 3
  EGifPutExtension(gif, GRAPHICS_EXT_FUNC_CODE, 4, gce);
  EGifPutImageDesc(gif, 1, 1, 2, 2, false, local_map);
  GifPixelType row0[2] = {0, 1}, row1[2] = {2, 0};
  EGifPutLine(gif, row0, 2);
  EGifPutLine(gif, row1, 2);
  // The second frame has a palette too: giflib 5.2.1 leaks the first frame's copy of its palette
  // when the next descriptor has none.
  EGifPutImageDesc(gif, 0, 0, 5, 4, false, global_map);
  GifPixelType full[5] = {1, 1, 1, 1, 1};
  for (int y = 0; y < 4; ++y) EGifPutLine(gif, full, 5);
  EGifCloseFile(gif, &error);
  GifFreeMapObject(global_map);
  GifFreeMapObject(local_map);
  return out;
}

TEST(VisionImageLoad, GifFirstFrameOnItsCanvas) {
  const RgbImage image = vision::decode_rgb(as_bytes(two_frame_gif()), "a.gif");
  ASSERT_EQ(image.width, 5u);
  ASSERT_EQ(image.height, 4u);
  auto px = [&](uint32_t x, uint32_t y) { return std::vector<uint8_t>(image.at(x, y), image.at(x, y) + 3); };
  // Outside the frame: the transparent index (3) in the frame's palette, as PIL fills frame 0.
  EXPECT_EQ(px(0, 0), (std::vector<uint8_t>{50, 60, 70}));
  EXPECT_EQ(px(1, 1), (std::vector<uint8_t>{255, 0, 0}));
  EXPECT_EQ(px(2, 1), (std::vector<uint8_t>{0, 255, 0}));
  EXPECT_EQ(px(1, 2), (std::vector<uint8_t>{0, 0, 255}));
  EXPECT_EQ(px(4, 3), (std::vector<uint8_t>{50, 60, 70}));
}

TEST(VisionImageLoad, BmpTrueColourAndPalette) {
  // 2x2 24-bit bottom-up: rows padded to 8 bytes, BGR order.
  std::string bmp24 = bmp_bytes(2, 2).substr(0, 54);
  bmp24 += std::string("\x01\x02\x03\x04\x05\x06\0\0", 8);  // bottom row
  bmp24 += std::string("\x07\x08\x09\x0a\x0b\x0c\0\0", 8);  // top row
  EXPECT_EQ(rgb(vision::decode_rgb(as_bytes(bmp24), "a.bmp")),
            (std::vector<uint8_t>{9, 8, 7, 12, 11, 10, 3, 2, 1, 6, 5, 4}));
  // 3x1 8-bit palette, top-down (negative height), two palette entries.
  std::string bmp8 = "BM" + le32(0) + le32(0) + le32(54 + 8) + le32(40) + le32(3) + le32(static_cast<uint32_t>(-1)) +
                     le16(1) + le16(8) + le32(0) + le32(0) + le32(0) + le32(0) + le32(2) + le32(0);
  bmp8 += std::string("\x10\x20\x30\0\x40\x50\x60\0", 8);  // BGRX entries
  bmp8 += std::string("\x01\x00\x01\0", 4);
  EXPECT_EQ(rgb(vision::decode_rgb(as_bytes(bmp8), "p.bmp")), (std::vector<uint8_t>{96, 80, 64, 48, 32, 16, 96, 80, 64}));
  // 2x1 32-bit BI_BITFIELDS with the standard masks after a 40-byte header: BGRX, the X byte ignored.
  std::string bmp32 = "BM" + le32(0) + le32(0) + le32(66) + le32(40) + le32(2) + le32(1) + le16(1) + le16(32) + le32(3) +
                      le32(8) + le32(0) + le32(0) + le32(0) + le32(0) + le32(0xFF0000) + le32(0xFF00) + le32(0xFF);
  bmp32 += std::string("\x01\x02\x03\xff\x04\x05\x06\x00", 8);
  EXPECT_EQ(rgb(vision::decode_rgb(as_bytes(bmp32), "b.bmp")), (std::vector<uint8_t>{3, 2, 1, 6, 5, 4}));
  // RLE is refused by name.
  std::string rle = bmp8;
  rle[30] = 1;
  EXPECT_THROW(vision::decode_rgb(as_bytes(rle), "rle.bmp"), Error);
}

std::string error_of(const std::string& bytes, const std::string& name) {
  try {
    vision::decode_rgb(as_bytes(bytes), name);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(VisionImageLoad, BadInputGivesClearErrors) {
  const std::string png = encoded_png(64, 64), jpeg = encoded_jpeg(64, 64), webp = encoded_webp(64, 64);
  for (const auto& [bytes, name] : {std::pair{png.substr(0, png.size() / 2), "cut.png"},
                                    std::pair{jpeg.substr(0, jpeg.size() / 2), "cut.jpg"},
                                    std::pair{webp.substr(0, webp.size() / 2), "cut.webp"},
                                    std::pair{gif_bytes(4, 4), "empty.gif"},
                                    std::pair{bmp_bytes(100, 100), "short.bmp"}}) {
    const std::string error = error_of(bytes, name);
    EXPECT_NE(error.find(name), std::string::npos) << error;
    EXPECT_NE(error.find("decode failed"), std::string::npos) << error;
  }
  EXPECT_NE(error_of("hello, world", "text.png").find("not a supported image"), std::string::npos);
  EXPECT_NE(error_of(std::string("\x89PNG\r\n\x1a\n", 8), "stub.png").find("stub.png"), std::string::npos);
  // A decompression bomb is refused from its header alone (these bytes hold no pixel data).
  const std::string bomb = error_of(png_bytes(20000, 20000), "bomb.png");
  EXPECT_NE(bomb.find("decompression-bomb limit of 178956970"), std::string::npos) << bomb;
  EXPECT_NE(error_of(jpeg_bytes(30000, 30000), "bomb.jpg").find("decompression-bomb"), std::string::npos);
  // Flipping bytes inside the data must never crash: an image or an Error.
  for (size_t at = 0; at < png.size(); at += 7) {
    std::string damaged = png;
    damaged[at] = static_cast<char>(damaged[at] ^ 0x5A);
    try {
      vision::decode_rgb(as_bytes(damaged), "d.png");
    } catch (const Error&) {
    }
  }
}

TEST(VisionImageLoad, ExifParserIgnoresBrokenBlocks) {
  EXPECT_EQ(vision::exif_orientation({}), 1);
  const std::string bad_offset = std::string("II*\0", 4) + le32(0xFFFFFFF0);
  EXPECT_EQ(vision::exif_orientation(as_bytes(bad_offset)), 1);
  const std::string many_entries = std::string("MM\0*", 4) + be32(8) + be16(0xFFFF);
  EXPECT_EQ(vision::exif_orientation(as_bytes(many_entries)), 1);
}

}  // namespace
}  // namespace vlmforge::test
