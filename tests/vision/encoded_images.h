#pragma once
// Real, decodable images made with the codec libraries (for --deep), as file bytes.
#include <cstdio>
#include <string>
#include <vector>

#include <jpeglib.h>
#include <png.h>
#include <webp/encode.h>

#include "vision/image_bytes.h"

namespace vlmforge::test {

inline std::vector<unsigned char> gradient_rgb(int width, int height) {
  std::vector<unsigned char> pixels(static_cast<size_t>(width) * height * 3);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<unsigned char>(i * 37);
  return pixels;
}

inline std::string encoded_png(int width, int height) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = width;
  image.height = height;
  image.format = PNG_FORMAT_RGB;
  const auto pixels = gradient_rgb(width, height);
  png_alloc_size_t size = 0;
  png_image_write_to_memory(&image, nullptr, &size, 0, pixels.data(), 0, nullptr);
  std::string out(size, '\0');
  png_image_write_to_memory(&image, out.data(), &size, 0, pixels.data(), 0, nullptr);
  out.resize(size);
  return out;
}

inline std::string encoded_jpeg(int width, int height) {
  jpeg_compress_struct cinfo{};
  jpeg_error_mgr error{};
  cinfo.err = jpeg_std_error(&error);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = width;
  cinfo.image_height = height;
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_start_compress(&cinfo, TRUE);
  auto pixels = gradient_rgb(width, height);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = pixels.data() + static_cast<size_t>(cinfo.next_scanline) * width * 3;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::string out(reinterpret_cast<char*>(buffer), size);
  std::free(buffer);
  return out;
}

// A JPEG with an APP1 Exif block carrying `orientation` (little- or big-endian TIFF).
inline std::string jpeg_with_orientation(int width, int height, int orientation, bool big_endian) {
  const std::string plain = encoded_jpeg(width, height);
  std::string tiff = big_endian ? std::string("MM\0*", 4) + be32(8) + be16(1) + be16(0x0112) + be16(3) + be32(1) +
                                      be16(static_cast<uint32_t>(orientation)) + be16(0) + be32(0)
                                : std::string("II*\0", 4) + le32(8) + le16(1) + le16(0x0112) + le16(3) + le32(1) +
                                      le16(static_cast<uint32_t>(orientation)) + le16(0) + le32(0);
  const std::string payload = std::string("Exif\0\0", 6) + tiff;
  return plain.substr(0, 2) + "\xFF\xE1" + be16(static_cast<uint32_t>(payload.size() + 2)) + payload + plain.substr(2);
}

inline std::string encoded_webp(int width, int height) {
  const auto pixels = gradient_rgb(width, height);
  uint8_t* output = nullptr;
  const size_t size = WebPEncodeLosslessRGB(pixels.data(), width, height, width * 3, &output);
  std::string out(reinterpret_cast<char*>(output), size);
  WebPFree(output);
  return out;
}

}  // namespace vlmforge::test
