#include "vision/image_decode.h"

// libjpeg's headers need <cstdio> first.
#include <cstdio>
#include <csetjmp>
#include <algorithm>
#include <array>
#include <cstring>
#include <memory>

#include <unistd.h>

#include <gif_lib.h>
#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>

#include "io/regular_file.h"
#include "util/error.h"

namespace vlmforge::vision {

namespace fs = std::filesystem;

namespace {

RgbImage blank(uint32_t width, uint32_t height) {
  RgbImage image;
  image.width = width;
  image.height = height;
  image.pixels.resize(size_t{width} * height * 3);
  return image;
}

// ---- JPEG (libjpeg-turbo) ----

// libjpeg reports errors through a callback that must not return: longjmp back to decode_jpeg.
// Only objects declared before the setjmp live across the jump.
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

// Corrupt-data warnings ("premature end of data segment"): PIL raises on a truncated image, so do we.
void jpeg_emit_message(j_common_ptr cinfo, int level) {
  if (level < 0) {
    auto* error = reinterpret_cast<JpegError*>(cinfo->err);
    if (error->manager.num_warnings++ == 0) cinfo->err->format_message(cinfo, error->message);
  }
}

RgbImage decode_jpeg(std::span<const uint8_t> bytes) {
  jpeg_decompress_struct cinfo{};
  JpegError error{};
  RgbImage image;
  std::vector<uint8_t> cmyk_row;
  bool cmyk = false;
  cinfo.err = jpeg_std_error(&error.manager);
  error.manager.error_exit = jpeg_error_exit;
  error.manager.emit_message = jpeg_emit_message;
  if (setjmp(error.jump) != 0) {
    jpeg_destroy_decompress(&cinfo);
    throw Error(error.message);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  // libjpeg's defaults (islow DCT, fancy upsampling) are what PIL decodes with; grayscale
  // becomes RGB by replication, as convert("RGB") does. Four-component (CMYK / YCCK) files are
  // decoded to CMYK and converted below.
  cmyk = cinfo.num_components == 4;
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  image = blank(cinfo.output_width, cinfo.output_height);
  cmyk_row.resize(cmyk ? size_t{cinfo.output_width} * 4 : 0);
  while (cinfo.output_scanline < cinfo.output_height) {
    uint8_t* rgb = image.pixels.data() + size_t{cinfo.output_scanline} * image.width * 3;
    JSAMPROW row = cmyk ? cmyk_row.data() : rgb;
    jpeg_read_scanlines(&cinfo, &row, 1);
    // PIL reads every CMYK JPEG as inverted ("CMYK;I", Adobe's convention), then cmyk2rgb:
    // channel = k' - k'·c'/255 (rounded) with c' = 255 - c and k' = 255 - (255 - k) = k.
    for (size_t x = 0; cmyk && x < image.width; ++x)
      for (int c = 0; c < 3; ++c) {
        const int k = cmyk_row[4 * x + 3], ink = 255 - cmyk_row[4 * x + c];
        const int t = ink * k + 128;
        rgb[3 * x + c] = static_cast<uint8_t>(std::clamp(k - (((t >> 8) + t) >> 8), 0, 255));
      }
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  if (error.manager.num_warnings > 0) throw Error(error.message);
  return image;
}

// ---- PNG (libpng) ----

struct PngState {
  std::span<const uint8_t> bytes;
  size_t position = 0;
  char message[256] = {};
};

void png_read_memory(png_structp png, png_bytep out, size_t count) {
  auto* state = static_cast<PngState*>(png_get_io_ptr(png));
  if (state->bytes.size() - state->position < count) png_error(png, "the PNG data is cut short");
  std::memcpy(out, state->bytes.data() + state->position, count);
  state->position += count;
}

void png_error_exit(png_structp png, png_const_charp message) {
  auto* state = static_cast<PngState*>(png_get_error_ptr(png));
  std::snprintf(state->message, sizeof state->message, "%s", message);
  std::longjmp(png_jmpbuf(png), 1);
}

void png_ignore_warning(png_structp, png_const_charp) {}

RgbImage decode_png(std::span<const uint8_t> bytes) {
  PngState state{bytes};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &state, png_error_exit, png_ignore_warning);
  if (png == nullptr) throw Error("libpng could not start");
  png_infop info = png_create_info_struct(png);
  RgbImage image;
  std::vector<uint8_t> wide;  // 16-bit grayscale samples
  std::vector<png_bytep> rows;
  if (setjmp(png_jmpbuf(png)) != 0) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw Error(state.message);
  }
  if (info == nullptr) png_error(png, "out of memory");
  png_set_read_fn(png, &state, png_read_memory);
  png_read_info(png, info);
  const uint32_t width = png_get_image_width(png, info), height = png_get_image_height(png, info);
  const int bit_depth = png_get_bit_depth(png, info), color_type = png_get_color_type(png, info);
  // PIL reads 16-bit samples by their high byte, except 16-bit grayscale (mode I;16), whose
  // convert("RGB") clips values above 255 to 255.
  const bool gray16 = bit_depth == 16 && (color_type & PNG_COLOR_MASK_COLOR) == 0;
  png_set_expand(png);  // palette → RGB, 1/2/4-bit gray → 8-bit, tRNS → alpha (stripped next)
  png_set_strip_alpha(png);
  if (!gray16) {
    png_set_strip_16(png);
    png_set_gray_to_rgb(png);
  }
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  image = blank(width, height);
  const size_t row_bytes = png_get_rowbytes(png, info);
  if (row_bytes != size_t{width} * (gray16 ? 2 : 3)) png_error(png, "unexpected row layout after conversion");
  std::vector<uint8_t>& target = gray16 ? wide : image.pixels;
  if (gray16) wide.resize(row_bytes * height);
  rows.resize(height);
  for (uint32_t y = 0; y < height; ++y) rows[y] = target.data() + y * row_bytes;
  png_read_image(png, rows.data());
  png_destroy_read_struct(&png, &info, nullptr);
  if (gray16)
    for (size_t i = 0; i < size_t{width} * height; ++i) {
      const uint8_t v = wide[2 * i] != 0 ? 255 : wide[2 * i + 1];
      std::memset(image.pixels.data() + 3 * i, v, 3);
    }
  return image;
}

// ---- WebP (libwebp) ----

RgbImage decode_webp(std::span<const uint8_t> bytes) {
  WebPBitstreamFeatures features;
  if (WebPGetFeatures(bytes.data(), bytes.size(), &features) != VP8_STATUS_OK)
    throw Error("libwebp could not read the bitstream header");
  if (features.has_animation) throw Error("animated WebP images are not supported");
  RgbImage image = blank(static_cast<uint32_t>(features.width), static_cast<uint32_t>(features.height));
  // The colour channels as decoded; alpha is dropped, as PIL's convert("RGB") drops it.
  if (WebPDecodeRGBInto(bytes.data(), bytes.size(), image.pixels.data(), image.pixels.size(),
                        static_cast<int>(image.width * 3)) == nullptr)
    throw Error("libwebp could not decode the image data");
  return image;
}

// ---- GIF (giflib), first frame ----

struct GifReader {
  std::span<const uint8_t> bytes;
  size_t position = 0;
};

int gif_read_memory(GifFileType* gif, GifByteType* out, int count) {
  auto* reader = static_cast<GifReader*>(gif->UserData);
  const size_t n = std::min(static_cast<size_t>(count), reader->bytes.size() - reader->position);
  std::memcpy(out, reader->bytes.data() + reader->position, n);
  reader->position += n;
  return static_cast<int>(n);
}

struct GifCloser {
  void operator()(GifFileType* gif) const {
    int error = 0;
    DGifCloseFile(gif, &error);
  }
};

[[noreturn]] void gif_fail(const GifFileType* gif, const char* fallback) {
  const char* message = gif->Error != 0 ? GifErrorString(gif->Error) : nullptr;
  throw Error(message ? message : fallback);
}

// As PIL: the first frame on a logical-screen canvas filled with the transparent index (or 0),
// colours from the frame's local palette or else the global one (no palette: gray levels).
RgbImage decode_gif(std::span<const uint8_t> bytes) {
  GifReader reader{bytes};
  int error = 0;
  std::unique_ptr<GifFileType, GifCloser> gif(DGifOpen(&reader, gif_read_memory, &error));
  if (!gif) throw Error(GifErrorString(error));
  int transparent = -1;
  for (;;) {
    GifRecordType type;
    if (DGifGetRecordType(gif.get(), &type) == GIF_ERROR) gif_fail(gif.get(), "cannot read a GIF record");
    if (type == TERMINATE_RECORD_TYPE) throw Error("no image in the file");
    if (type == EXTENSION_RECORD_TYPE) {
      int code = 0;
      GifByteType* block = nullptr;
      if (DGifGetExtension(gif.get(), &code, &block) == GIF_ERROR) gif_fail(gif.get(), "cannot read a GIF extension");
      if (code == GRAPHICS_EXT_FUNC_CODE && block != nullptr && block[0] >= 4 && (block[1] & 1) != 0) transparent = block[4];
      while (block != nullptr)
        if (DGifGetExtensionNext(gif.get(), &block) == GIF_ERROR) gif_fail(gif.get(), "cannot read a GIF extension");
      continue;
    }
    if (type != IMAGE_DESC_RECORD_TYPE) continue;
    if (DGifGetImageDesc(gif.get()) == GIF_ERROR) gif_fail(gif.get(), "cannot read the image descriptor");
    const GifImageDesc& desc = gif->Image;
    const uint32_t fw = static_cast<uint32_t>(desc.Width), fh = static_cast<uint32_t>(desc.Height);
    if (uint64_t{fw} * fh > kMaxImagePixels) throw Error("the first frame is larger than the decompression-bomb limit");
    std::vector<GifByteType> frame(size_t{fw} * fh);
    auto read_row = [&](uint32_t y) {
      if (DGifGetLine(gif.get(), frame.data() + size_t{y} * fw, static_cast<int>(fw)) == GIF_ERROR)
        gif_fail(gif.get(), "the image data is cut short");
    };
    if (desc.Interlace) {
      constexpr uint32_t kStart[] = {0, 4, 2, 1}, kStep[] = {8, 8, 4, 2};
      for (int pass = 0; pass < 4; ++pass)
        for (uint32_t y = kStart[pass]; y < fh; y += kStep[pass]) read_row(y);
    } else {
      for (uint32_t y = 0; y < fh; ++y) read_row(y);
    }
    const uint32_t width = static_cast<uint32_t>(gif->SWidth), height = static_cast<uint32_t>(gif->SHeight);
    std::vector<uint8_t> canvas(size_t{width} * height, static_cast<uint8_t>(transparent >= 0 ? transparent : 0));
    const uint32_t left = static_cast<uint32_t>(desc.Left), top = static_cast<uint32_t>(desc.Top);
    for (uint32_t y = 0; y < fh && top + y < height; ++y)
      for (uint32_t x = 0; x < fw && left + x < width; ++x)
        canvas[size_t{top + y} * width + left + x] = frame[size_t{y} * fw + x];
    const ColorMapObject* palette = desc.ColorMap != nullptr ? desc.ColorMap : gif->SColorMap;
    RgbImage image = blank(width, height);
    for (size_t i = 0; i < canvas.size(); ++i) {
      uint8_t* out = image.pixels.data() + 3 * i;
      if (palette == nullptr) {
        std::memset(out, canvas[i], 3);
      } else if (canvas[i] < palette->ColorCount) {
        const GifColorType& c = palette->Colors[canvas[i]];
        out[0] = c.Red, out[1] = c.Green, out[2] = c.Blue;
      }  // an index past the palette reads as black (PIL pads the palette with zeros)
    }
    return image;
  }
}

// ---- BMP (read here: uncompressed 1/4/8/24/32-bit) ----

uint32_t le16(const uint8_t* p) { return p[0] | p[1] << 8; }
uint32_t le32(const uint8_t* p) { return p[0] | p[1] << 8 | p[2] << 16 | uint32_t{p[3]} << 24; }

RgbImage decode_bmp(std::span<const uint8_t> bytes) {
  const uint8_t* h = bytes.data();
  if (bytes.size() < 26) throw Error("the BMP headers are cut short");
  const uint32_t offset = le32(h + 10), dib = le32(h + 14);
  int64_t width = 0, height = 0;
  uint32_t bits = 0, compression = 0, colors = 0;
  size_t palette_entry = 4;
  if (dib == 12) {  // OS/2 BITMAPCOREHEADER
    width = le16(h + 18), height = le16(h + 20), bits = le16(h + 24);
    palette_entry = 3;
  } else {
    if (dib < 40 || bytes.size() < 14 + size_t{40}) throw Error("the BMP headers are cut short");
    width = static_cast<int32_t>(le32(h + 18)), height = static_cast<int32_t>(le32(h + 22));
    bits = le16(h + 28), compression = le32(h + 30), colors = le32(h + 46);
  }
  const bool top_down = height < 0;
  if (top_down) height = -height;
  if (width <= 0 || height <= 0) throw Error("invalid BMP dimensions");
  // BI_BITFIELDS with the standard 8-bit masks (at offset 54, after a 40-byte header or inside a
  // larger one) is plain BGRX.
  const bool bitfields_bgrx = compression == 3 && bits == 32 && dib >= 40 && bytes.size() >= 66 &&
                              le32(h + 54) == 0xFF0000 && le32(h + 58) == 0xFF00 && le32(h + 62) == 0xFF;
  if (compression != 0 && !bitfields_bgrx)
    throw Error("BMP compression " + std::to_string(compression) + " (RLE or bit fields) is not supported");
  if (bits != 1 && bits != 4 && bits != 8 && bits != 24 && bits != 32)
    throw Error(std::to_string(bits) + "-bit BMP images are not supported (1, 4, 8, 24 and 32-bit are)");
  std::vector<std::array<uint8_t, 3>> palette;
  if (bits <= 8) {
    const size_t count = colors != 0 && colors <= (1u << bits) ? colors : (1u << bits);
    const size_t start = 14 + size_t{dib};
    for (size_t i = 0; i < count && start + (i + 1) * palette_entry <= bytes.size(); ++i) {
      const uint8_t* e = h + start + i * palette_entry;
      palette.push_back({e[2], e[1], e[0]});
    }
  }
  const size_t row_bytes = (static_cast<size_t>(width) * bits + 31) / 32 * 4;
  if (offset > bytes.size() || (bytes.size() - offset) / row_bytes < static_cast<size_t>(height))
    throw Error("the pixel data is cut short (" + std::to_string(bytes.size()) + " bytes, " +
                std::to_string(offset + row_bytes * static_cast<size_t>(height)) + " needed)");
  RgbImage image = blank(static_cast<uint32_t>(width), static_cast<uint32_t>(height));
  for (uint32_t y = 0; y < image.height; ++y) {
    const uint8_t* row = h + offset + row_bytes * (top_down ? y : image.height - 1 - y);
    uint8_t* out = image.pixels.data() + size_t{y} * image.width * 3;
    for (uint32_t x = 0; x < image.width; ++x, out += 3) {
      if (bits >= 24) {
        const uint8_t* p = row + size_t{x} * (bits / 8);
        out[0] = p[2], out[1] = p[1], out[2] = p[0];
        continue;
      }
      const size_t bit = size_t{x} * bits;
      const uint32_t index = (row[bit / 8] >> (8 - bits - bit % 8)) & ((1u << bits) - 1);
      if (index < palette.size()) std::memcpy(out, palette[index].data(), 3);
    }
  }
  return image;
}

RgbImage decode_pixels(ImageFormat format, std::span<const uint8_t> bytes) {
  switch (format) {
    case ImageFormat::kJpeg: return decode_jpeg(bytes);
    case ImageFormat::kPng: return decode_png(bytes);
    case ImageFormat::kWebp: return decode_webp(bytes);
    case ImageFormat::kGif: return decode_gif(bytes);
    case ImageFormat::kBmp: return decode_bmp(bytes);
    case ImageFormat::kUnknown: break;
  }
  throw Error("not a JPEG, PNG, WebP, GIF or BMP image");
}

DecodeResult failure(std::string error) { return {false, std::move(error)}; }

}  // namespace

RgbImage apply_orientation(const RgbImage& in, int orientation) {
  if (orientation < 2 || orientation > 8) return in;
  const uint32_t w = in.width, h = in.height;
  const bool swap = orientation >= 5;
  RgbImage out = blank(swap ? h : w, swap ? w : h);
  for (uint32_t y = 0; y < out.height; ++y)
    for (uint32_t x = 0; x < out.width; ++x) {
      uint32_t sx = x, sy = y;
      switch (orientation) {
        case 2: sx = w - 1 - x; break;                 // FLIP_LEFT_RIGHT
        case 3: sx = w - 1 - x, sy = h - 1 - y; break;  // ROTATE_180
        case 4: sy = h - 1 - y; break;                 // FLIP_TOP_BOTTOM
        case 5: sx = y, sy = x; break;                 // TRANSPOSE
        case 6: sx = y, sy = h - 1 - x; break;          // ROTATE_270 (90° clockwise)
        case 7: sx = w - 1 - y, sy = h - 1 - x; break;  // TRANSVERSE
        case 8: sx = w - 1 - y, sy = x; break;          // ROTATE_90 (counter-clockwise)
      }
      std::memcpy(out.pixels.data() + (size_t{y} * out.width + x) * 3, in.at(sx, sy), 3);
    }
  return out;
}

std::vector<uint8_t> read_file_bytes(const fs::path& path) { return read_regular_file(path, kMaxImageFileBytes); }

RgbImage decode_rgb(std::span<const uint8_t> bytes, const std::string& name, const DecodeOptions& options) {
  // Files cut short go on to the decoder, which fails on missing pixels as PIL does (a PNG without
  // IEND, a GIF without its trailer still decode, as in PIL).
  const ImageInfo info = options.exif_transpose ? inspect_image(bytes) : read_image_info(bytes);
  if (info.problem == ImageProblem::kNotImage)
    throw Error(name + ": not a supported image (JPEG, PNG, WebP, GIF or BMP expected)");
  if (!info.ok() && info.problem != ImageProblem::kTruncated) throw Error(name + ": " + info.detail);
  const uint64_t pixels = uint64_t{info.width} * info.height;
  if (pixels > kMaxImagePixels)
    throw Error(name + ": " + std::to_string(info.width) + "x" + std::to_string(info.height) + " = " +
                std::to_string(pixels) + " pixels exceeds the decompression-bomb limit of " +
                std::to_string(kMaxImagePixels) + " pixels (PIL's); not decoded");
  RgbImage image;
  try {
    image = decode_pixels(info.format, bytes);
  } catch (const Error& e) {
    throw Error(name + ": " + std::string(image_format_name(info.format)) + " decode failed: " + e.what());
  }
  return info.orientation == 1 ? image : apply_orientation(image, info.orientation);
}

RgbImage load_rgb(const fs::path& path, const DecodeOptions& options) {
  return decode_rgb(read_file_bytes(path), path.string(), options);
}

DecodeResult decode_image(const fs::path& path, ImageFormat format) {
  if (format == ImageFormat::kUnknown) return {};
  // RLE and bit-field BMPs are valid, just not decoded here: the structure check is all --deep does.
  if (format == ImageFormat::kBmp) {
    const ImageInfo info = inspect_image(path);
    return info.ok() ? DecodeResult{} : failure(info.detail);
  }
  try {
    decode_pixels(format, read_file_bytes(path));
  } catch (const Error& e) {
    return failure(e.what());
  }
  return {};
}

}  // namespace vlmforge::vision
