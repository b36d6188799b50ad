#include "vision/image_decode.h"

// libjpeg's headers need <cstdio> first.
#include <cstdio>
#include <csetjmp>
#include <fstream>
#include <memory>
#include <vector>

#include <gif_lib.h>
#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>

namespace vlmforge::vision {

namespace fs = std::filesystem;

namespace {

DecodeResult failure(std::string error) { return {false, std::move(error)}; }

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

// libjpeg reports errors through a callback that must not return: longjmp back to decode_jpeg.
// Only trivially destructible locals live between setjmp and the jump.
struct JpegError {
  jpeg_error_mgr manager;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_error_exit(j_common_ptr cinfo) {
  auto* error = reinterpret_cast<JpegError*>(cinfo->err);
  cinfo->err->format_message(cinfo, error->message);
  std::longjmp(error->jump, 1);
}

// Corrupt-data warnings ("premature end of data segment") are what --deep is for: count them.
void jpeg_emit_message(j_common_ptr cinfo, int level) {
  if (level < 0) {
    auto* error = reinterpret_cast<JpegError*>(cinfo->err);
    if (error->manager.num_warnings++ == 0) cinfo->err->format_message(cinfo, error->message);
  }
}

DecodeResult decode_jpeg(std::FILE* file) {
  jpeg_decompress_struct cinfo{};
  JpegError error{};
  cinfo.err = jpeg_std_error(&error.manager);
  error.manager.error_exit = jpeg_error_exit;
  error.manager.emit_message = jpeg_emit_message;
  std::vector<JSAMPLE> row;
  if (setjmp(error.jump) != 0) {
    jpeg_destroy_decompress(&cinfo);
    return failure(error.message);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, file);
  jpeg_read_header(&cinfo, TRUE);
  jpeg_start_decompress(&cinfo);
  row.resize(static_cast<size_t>(cinfo.output_width) * cinfo.output_components);
  JSAMPROW rows[1] = {row.data()};
  while (cinfo.output_scanline < cinfo.output_height) jpeg_read_scanlines(&cinfo, rows, 1);
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  if (error.manager.num_warnings > 0) return failure(error.message);
  return {};
}

DecodeResult decode_png(const fs::path& path) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (png_image_begin_read_from_file(&image, path.c_str()) == 0) return failure(image.message);
  image.format = PNG_FORMAT_RGBA;
  std::vector<png_byte> pixels(PNG_IMAGE_SIZE(image));
  if (png_image_finish_read(&image, nullptr, pixels.data(), 0, nullptr) == 0) {
    std::string message = image.message;
    png_image_free(&image);
    return failure(message);
  }
  return {};
}

std::vector<uint8_t> read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

DecodeResult decode_webp(const fs::path& path) {
  const std::vector<uint8_t> bytes = read_all(path);
  int width = 0, height = 0;
  std::unique_ptr<uint8_t, void (*)(void*)> pixels(WebPDecodeRGBA(bytes.data(), bytes.size(), &width, &height), WebPFree);
  if (!pixels) return failure("libwebp could not decode the image data");
  return {};
}

DecodeResult decode_gif(const fs::path& path) {
  int error = 0;
  GifFileType* gif = DGifOpenFileName(path.c_str(), &error);
  if (gif == nullptr) return failure(GifErrorString(error));
  const bool ok = DGifSlurp(gif) == GIF_OK && gif->ImageCount > 0;
  const std::string message = ok ? "" : gif->Error != 0 ? GifErrorString(gif->Error) : "no image in the file";
  DGifCloseFile(gif, &error);
  return ok ? DecodeResult{} : failure(message);
}

// BMP has no compression worth a library here: the pixel array must fit in the file.
DecodeResult check_bmp(const fs::path& path, const ImageInfo& info) {
  std::ifstream in(path, std::ios::binary);
  unsigned char h[34] = {};
  in.read(reinterpret_cast<char*>(h), sizeof h);
  if (in.gcount() < 34) return failure("the BMP headers are cut short");
  const uint32_t offset = h[10] | h[11] << 8 | h[12] << 16 | uint32_t{h[13]} << 24;
  const uint32_t bits = h[28] | h[29] << 8;
  const uint32_t compression = h[30] | h[31] << 8 | h[32] << 16 | uint32_t{h[33]} << 24;
  if (compression != 0) return {};  // RLE / bitfields: sizes vary, header check only
  const uint64_t row_bytes = (uint64_t{info.width} * bits + 31) / 32 * 4;
  const uint64_t needed = offset + row_bytes * info.height;
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  if (ec) return failure(ec.message());
  if (size < needed)
    return failure("the pixel data is cut short (" + std::to_string(size) + " of " + std::to_string(needed) + " bytes)");
  return {};
}

}  // namespace

DecodeResult decode_image(const fs::path& path, ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg: {
      std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
      if (!file) return failure("cannot open the file");
      return decode_jpeg(file.get());
    }
    case ImageFormat::kPng: return decode_png(path);
    case ImageFormat::kWebp: return decode_webp(path);
    case ImageFormat::kGif: return decode_gif(path);
    case ImageFormat::kBmp: return check_bmp(path, read_image_info(path));
    case ImageFormat::kUnknown: break;
  }
  return {};
}

}  // namespace vlmforge::vision
