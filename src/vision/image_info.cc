#include "vision/image_info.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "io/regular_file.h"
#include "util/error.h"

namespace vlmforge::vision {

namespace {

class MemorySource final : public ByteSource {
 public:
  explicit MemorySource(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  size_t read_at(uint64_t offset, std::span<uint8_t> out) override {
    if (offset >= bytes_.size()) return 0;
    const size_t n = std::min<size_t>(out.size(), bytes_.size() - offset);
    std::memcpy(out.data(), bytes_.data() + offset, n);
    return n;
  }

 private:
  std::span<const uint8_t> bytes_;
};

// Reads with pread, so one open file is safe to read from several threads.
class FileSource final : public ByteSource {
 public:
  explicit FileSource(const RegularFile& file) : file_(file) {}
  size_t read_at(uint64_t offset, std::span<uint8_t> out) override {
    size_t done = 0;
    while (done < out.size()) {
      const ssize_t n = ::pread(file_.fd(), out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw Error(file_.path().string() + ": read failed: " + errno_message(errno));
      if (n == 0) break;
      done += static_cast<size_t>(n);
    }
    return done;
  }

 private:
  const RegularFile& file_;
};

uint32_t be16(const uint8_t* p) { return (uint32_t{p[0]} << 8) | p[1]; }
uint32_t be32(const uint8_t* p) { return (be16(p) << 16) | be16(p + 2); }
uint32_t le16(const uint8_t* p) { return (uint32_t{p[1]} << 8) | p[0]; }
uint32_t le24(const uint8_t* p) { return le16(p) | (uint32_t{p[2]} << 16); }
uint32_t le32(const uint8_t* p) { return le16(p) | (le16(p + 2) << 16); }

ImageInfo problem(ImageFormat format, ImageProblem kind, std::string detail) {
  ImageInfo info;
  info.format = format;
  info.problem = kind;
  info.detail = std::move(detail);
  return info;
}

ImageInfo sized(ImageFormat format, uint32_t width, uint32_t height) {
  if (width == 0 || height == 0) return problem(format, ImageProblem::kCorrupt, "the header gives a zero dimension");
  ImageInfo info;
  info.format = format;
  info.width = width;
  info.height = height;
  return info;
}

// Walks the marker segments up to the first SOFn; the SOF can sit after large EXIF/ICC segments,
// so segments are skipped by their lengths rather than by reading a fixed prefix.
ImageInfo read_jpeg(ByteSource& source) {
  uint64_t pos = 2;
  std::array<uint8_t, 9> seg{};
  for (int segments = 0; segments < 100000; ++segments) {
    uint8_t marker[2];
    if (source.read_at(pos, marker) < 2) return problem(ImageFormat::kJpeg, ImageProblem::kTruncated, "the file ends before the frame header");
    if (marker[0] != 0xFF) return problem(ImageFormat::kJpeg, ImageProblem::kCorrupt, "expected a marker at byte " + std::to_string(pos));
    if (marker[1] == 0xFF) {  // fill byte
      ++pos;
      continue;
    }
    const uint8_t m = marker[1];
    if (m == 0xD9 || m == 0xDA)
      return problem(ImageFormat::kJpeg, ImageProblem::kCorrupt, "no frame header (SOF) before the image data");
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {  // standalone markers carry no length
      pos += 2;
      continue;
    }
    const size_t got = source.read_at(pos + 2, seg);
    if (got < 2) return problem(ImageFormat::kJpeg, ImageProblem::kTruncated, "the file ends inside a segment header");
    const uint32_t length = be16(seg.data());
    if (length < 2) return problem(ImageFormat::kJpeg, ImageProblem::kCorrupt, "a segment length below 2");
    const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof) {
      if (got < 7 || length < 7) return problem(ImageFormat::kJpeg, ImageProblem::kTruncated, "the frame header is cut short");
      return sized(ImageFormat::kJpeg, be16(seg.data() + 5), be16(seg.data() + 3));
    }
    pos += 2 + length;
  }
  return problem(ImageFormat::kJpeg, ImageProblem::kCorrupt, "too many segments before the frame header");
}

ImageInfo read_webp(const uint8_t* h, size_t n) {
  if (n < 16) return problem(ImageFormat::kWebp, ImageProblem::kTruncated, "the file ends before the first chunk");
  const std::string_view chunk(reinterpret_cast<const char*>(h + 12), 4);
  if (chunk == "VP8 ") {
    if (n < 30) return problem(ImageFormat::kWebp, ImageProblem::kTruncated, "the VP8 frame header is cut short");
    if (h[23] != 0x9D || h[24] != 0x01 || h[25] != 0x2A)
      return problem(ImageFormat::kWebp, ImageProblem::kCorrupt, "bad VP8 start code");
    return sized(ImageFormat::kWebp, le16(h + 26) & 0x3FFF, le16(h + 28) & 0x3FFF);
  }
  if (chunk == "VP8L") {
    if (n < 25) return problem(ImageFormat::kWebp, ImageProblem::kTruncated, "the VP8L header is cut short");
    if (h[20] != 0x2F) return problem(ImageFormat::kWebp, ImageProblem::kCorrupt, "bad VP8L signature");
    const uint32_t bits = le32(h + 21);
    return sized(ImageFormat::kWebp, 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF));
  }
  if (chunk == "VP8X") {
    if (n < 30) return problem(ImageFormat::kWebp, ImageProblem::kTruncated, "the VP8X header is cut short");
    return sized(ImageFormat::kWebp, 1 + le24(h + 24), 1 + le24(h + 27));
  }
  return problem(ImageFormat::kWebp, ImageProblem::kCorrupt, "unknown first chunk '" + std::string(chunk) + "'");
}

ImageInfo read_bmp(const uint8_t* h, size_t n) {
  if (n < 18) return problem(ImageFormat::kBmp, ImageProblem::kTruncated, "the DIB header is cut short");
  const uint32_t dib = le32(h + 14);
  if (dib == 12) {  // BITMAPCOREHEADER: 16-bit dimensions
    if (n < 22) return problem(ImageFormat::kBmp, ImageProblem::kTruncated, "the DIB header is cut short");
    return sized(ImageFormat::kBmp, le16(h + 18), le16(h + 20));
  }
  if (dib < 40) return problem(ImageFormat::kBmp, ImageProblem::kCorrupt, "unknown DIB header size " + std::to_string(dib));
  if (n < 26) return problem(ImageFormat::kBmp, ImageProblem::kTruncated, "the DIB header is cut short");
  const auto width = static_cast<int32_t>(le32(h + 18));
  const auto height = static_cast<int32_t>(le32(h + 22));  // negative: rows stored top-down
  if (width <= 0 || height == INT32_MIN) return problem(ImageFormat::kBmp, ImageProblem::kCorrupt, "invalid dimensions");
  return sized(ImageFormat::kBmp, static_cast<uint32_t>(width), static_cast<uint32_t>(height < 0 ? -height : height));
}

bool starts_with(const uint8_t* h, size_t n, std::string_view magic) {
  return n >= magic.size() && std::memcmp(h, magic.data(), magic.size()) == 0;
}

}  // namespace

ImageInfo read_image_info(ByteSource& source) {
  std::array<uint8_t, 32> head{};
  const size_t n = source.read_at(0, head);
  const uint8_t* h = head.data();
  if (n >= 2 && h[0] == 0xFF && h[1] == 0xD8) return read_jpeg(source);
  if (starts_with(h, n, "\x89PNG\r\n\x1a\n")) {
    if (n < 24) return problem(ImageFormat::kPng, ImageProblem::kTruncated, "the IHDR chunk is cut short");
    if (std::memcmp(h + 12, "IHDR", 4) != 0) return problem(ImageFormat::kPng, ImageProblem::kCorrupt, "the first chunk is not IHDR");
    return sized(ImageFormat::kPng, be32(h + 16), be32(h + 20));
  }
  if (starts_with(h, n, "GIF87a") || starts_with(h, n, "GIF89a")) {
    if (n < 10) return problem(ImageFormat::kGif, ImageProblem::kTruncated, "the screen descriptor is cut short");
    return sized(ImageFormat::kGif, le16(h + 6), le16(h + 8));
  }
  if (starts_with(h, n, "RIFF") && n >= 12 && std::memcmp(h + 8, "WEBP", 4) == 0) return read_webp(h, n);
  if (starts_with(h, n, "BM")) return read_bmp(h, n);
  if (n == 0) return problem(ImageFormat::kUnknown, ImageProblem::kNotImage, "the file is empty");
  return problem(ImageFormat::kUnknown, ImageProblem::kNotImage, "no JPEG, PNG, WebP, GIF or BMP signature");
}

ImageInfo read_image_info(std::span<const uint8_t> bytes) {
  MemorySource source(bytes);
  return read_image_info(source);
}

ImageInfo read_image_info(const std::filesystem::path& path) {
  try {
    const RegularFile file(path);
    FileSource source(file);
    return read_image_info(source);
  } catch (const Error& e) {  // cannot open, not a regular file, EIO: reported, not fatal
    return problem(ImageFormat::kUnknown, ImageProblem::kUnreadable, e.what());
  }
}

std::string_view image_format_name(ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg: return "jpeg";
    case ImageFormat::kPng: return "png";
    case ImageFormat::kWebp: return "webp";
    case ImageFormat::kGif: return "gif";
    case ImageFormat::kBmp: return "bmp";
    case ImageFormat::kUnknown: break;
  }
  return "unknown";
}

ImageFormat format_from_extension(std::string_view extension) {
  std::string ext;
  for (char c : extension) ext += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  if (ext == ".jpg" || ext == ".jpeg" || ext == ".jpe") return ImageFormat::kJpeg;
  if (ext == ".png") return ImageFormat::kPng;
  if (ext == ".webp") return ImageFormat::kWebp;
  if (ext == ".gif") return ImageFormat::kGif;
  if (ext == ".bmp") return ImageFormat::kBmp;
  return ImageFormat::kUnknown;
}

}  // namespace vlmforge::vision
