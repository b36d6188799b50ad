#include "vision/image_info.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <vector>

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
    std::copy_n(bytes_.data() + offset, n, out.data());  // not memcpy: an empty `out` may have a null data()
    return n;
  }
  uint64_t size() override { return bytes_.size(); }

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
  uint64_t size() override { return file_.size(); }

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

// ---- structure checks (inspect_image) ----

ImageInfo with_problem(ImageInfo info, ImageProblem kind, std::string detail) {
  info.problem = kind;
  info.detail = std::move(detail);
  return info;
}

ImageInfo cut_short(ImageInfo info, const std::string& where, uint64_t size) {
  return with_problem(std::move(info), ImageProblem::kTruncated,
                      "the file is cut short: it ends " + where + " (" + std::to_string(size) + " bytes)");
}

// The orientation in an EXIF payload at `offset` (its first 64 KiB: the tag sits in IFD0, near the start).
int orientation_at(ByteSource& source, uint64_t offset, uint64_t length) {
  std::vector<uint8_t> exif(std::min<uint64_t>(length, 65536));
  exif.resize(source.read_at(offset, exif));
  if (exif.size() >= 6 && std::memcmp(exif.data(), "Exif\0\0", 6) == 0)  // JPEG's prefix, kept by some WebP writers
    return exif_orientation(std::span(exif).subspan(6));
  return exif_orientation(exif);
}

// Sequential reads in 64 KiB blocks, for the walks that touch every byte (JPEG scans, GIF blocks).
class ByteCursor {
 public:
  ByteCursor(ByteSource& source, uint64_t position) : source_(source), position_(position), buffer_(65536) {}
  uint64_t position() const { return position_; }
  // The next byte, or -1 at the end of the file.
  int next() {
    if (position_ < start_ || position_ >= start_ + filled_) {
      start_ = position_;
      filled_ = source_.read_at(start_, buffer_);
      if (filled_ == 0) return -1;
    }
    return buffer_[position_++ - start_];
  }
  void skip(uint64_t count) { position_ += count; }

 private:
  ByteSource& source_;
  uint64_t position_, start_ = 0;
  size_t filled_ = 0;
  std::vector<uint8_t> buffer_;
};

// Chunk headers from the signature to IEND, one read each: a chunk cut short shows as the next
// header lying past the end of the file.
ImageInfo inspect_png(ByteSource& source, ImageInfo info) {
  const uint64_t size = source.size();
  bool seen_idat = false;
  std::string previous;  // type and offset of the chunk before `pos`, for the message
  uint64_t previous_pos = 0;
  for (uint64_t pos = 8;;) {
    if (pos > size)
      return cut_short(std::move(info), "inside the " + previous + " chunk at byte " + std::to_string(previous_pos) +
                                            ", which declares " + std::to_string(pos - previous_pos - 12) + " data bytes",
                       size);
    std::array<uint8_t, 8> header{};
    const size_t got = source.read_at(pos, header);
    if (got == 0) return cut_short(std::move(info), "without an IEND chunk", size);
    if (got < 8) return cut_short(std::move(info), "inside a chunk header at byte " + std::to_string(pos), size);
    const uint32_t length = be32(header.data());
    std::string type(reinterpret_cast<const char*>(header.data() + 4), 4);
    if (length > 0x7FFFFFFFu)
      return with_problem(std::move(info), ImageProblem::kCorrupt, "the " + type + " chunk at byte " + std::to_string(pos) + " declares " + std::to_string(length) + " bytes (at most 2^31 - 1)");
    const uint64_t end = pos + 12 + length;  // length, type, data, CRC
    if (type == "IEND") return end <= size ? info : cut_short(std::move(info), "inside the IEND chunk", size);
    if (type == "IDAT") seen_idat = true;
    if (type == "eXIf" && !seen_idat) info.orientation = orientation_at(source, pos + 8, length);
    previous = std::move(type);
    previous_pos = pos;
    pos = end;
  }
}

// Segments up to the first scan (the APP1 Exif block among them), then EOI: the last two bytes in
// the common case, else the scans and the segments between them walked to the first EOI.
ImageInfo inspect_jpeg(ByteSource& source, ImageInfo info) {
  const uint64_t size = source.size();
  uint64_t pos = 2;
  bool seen_exif = false;
  for (;;) {
    std::array<uint8_t, 4> m{};
    const size_t got = source.read_at(pos, m);
    if (got < 2) return cut_short(std::move(info), "before the image data", size);
    if (m[0] != 0xFF) return with_problem(std::move(info), ImageProblem::kCorrupt, "expected a marker at byte " + std::to_string(pos));
    if (m[1] == 0xFF) {
      ++pos;
      continue;
    }
    if (m[1] == 0x01 || (m[1] >= 0xD0 && m[1] <= 0xD7)) {
      pos += 2;
      continue;
    }
    if (m[1] == 0xD9) return with_problem(std::move(info), ImageProblem::kCorrupt, "the image ends (EOI) before any image data");
    if (got < 4) return cut_short(std::move(info), "inside a segment header at byte " + std::to_string(pos), size);
    if (m[1] == 0xDA) break;
    const uint32_t length = be16(m.data() + 2);
    if (length < 2) return with_problem(std::move(info), ImageProblem::kCorrupt, "a segment length below 2 at byte " + std::to_string(pos));
    if (m[1] == 0xE1 && !seen_exif) {
      std::array<uint8_t, 6> tag{};
      if (source.read_at(pos + 4, tag) == 6 && std::memcmp(tag.data(), "Exif\0\0", 6) == 0) {
        seen_exif = true;  // libjpeg and PIL read the first Exif block
        info.orientation = orientation_at(source, pos + 4, length - 2);
      }
    }
    pos += 2 + length;
  }
  std::array<uint8_t, 2> tail{};
  if (size >= pos + 4 && source.read_at(size - 2, tail) == 2 && tail[0] == 0xFF && tail[1] == 0xD9) return info;
  ByteCursor cursor(source, pos);
  for (;;) {
    int byte = cursor.next();
    if (byte < 0) break;
    if (byte != 0xFF) continue;
    int marker = cursor.next();
    while (marker == 0xFF) marker = cursor.next();
    if (marker < 0) break;
    if (marker == 0x00 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;  // stuffed 0xFF, restart markers
    if (marker == 0xD9) return info;
    const int high = cursor.next(), low = cursor.next();  // a segment between scans (DHT, SOS, DQT, DRI, ...)
    if (low < 0) break;
    const int length = high << 8 | low;
    if (length < 2) return with_problem(std::move(info), ImageProblem::kCorrupt, "a segment length below 2 at byte " + std::to_string(cursor.position() - 4));
    cursor.skip(static_cast<uint64_t>(length) - 2);
  }
  return cut_short(std::move(info), "before the end-of-image marker (FF D9)", size);
}

// The RIFF size against the file's, and the EXIF chunk of an extended (VP8X) file.
ImageInfo inspect_webp(ByteSource& source, ImageInfo info) {
  const uint64_t size = source.size();
  std::array<uint8_t, 21> head{};
  source.read_at(0, head);
  const uint64_t end = 8 + uint64_t{le32(head.data() + 4)};
  if (size < end)
    return cut_short(std::move(info), "before the " + std::to_string(end) + " bytes its RIFF header declares", size);
  const bool has_exif = std::memcmp(head.data() + 12, "VP8X", 4) == 0 && (head[20] & 0x08) != 0;
  for (uint64_t pos = 12; has_exif && pos + 8 <= end;) {
    std::array<uint8_t, 8> chunk{};
    if (source.read_at(pos, chunk) < 8) break;
    const uint32_t length = le32(chunk.data() + 4);
    if (std::memcmp(chunk.data(), "EXIF", 4) == 0) {
      info.orientation = orientation_at(source, pos + 8, length);
      break;
    }
    pos += 8 + uint64_t{length} + (length & 1);
  }
  return info;
}

// Blocks from the screen descriptor to the trailer, skipping stray bytes between them as PIL does.
ImageInfo inspect_gif(ByteSource& source, ImageInfo info) {
  const uint64_t size = source.size();
  ByteCursor cursor(source, 10);
  auto skip_palette = [&](int flags) {
    if (flags & 0x80) cursor.skip(3u << ((flags & 7) + 1));
  };
  auto skip_sub_blocks = [&] {
    for (int n = cursor.next(); n > 0; n = cursor.next()) cursor.skip(static_cast<uint64_t>(n));
  };
  const int screen_flags = cursor.next();
  cursor.skip(2);  // background colour, aspect ratio
  skip_palette(screen_flags);
  for (;;) {
    const int block = cursor.next();
    if (block < 0) return cut_short(std::move(info), "before the GIF trailer", size);
    if (block == 0x3B) return info;
    if (block == 0x21) {  // extension: label, then data sub-blocks
      cursor.next();
      skip_sub_blocks();
    } else if (block == 0x2C) {  // image: descriptor, local palette, LZW code size, data sub-blocks
      cursor.skip(8);
      skip_palette(cursor.next());
      cursor.next();
      skip_sub_blocks();
    }
  }
}

// An uncompressed BMP's pixel array must be there in full (RLE / bit-field sizes vary: not checked).
ImageInfo inspect_bmp(ByteSource& source, ImageInfo info) {
  std::array<uint8_t, 34> h{};
  const size_t got = source.read_at(0, h);
  if (le32(h.data() + 14) < 40) return info;  // OS/2 core headers: not checked
  const uint64_t size = source.size();
  if (got < h.size()) return cut_short(std::move(info), "inside the DIB header", size);
  const uint32_t offset = le32(h.data() + 10), bits = le16(h.data() + 28), compression = le32(h.data() + 30);
  if (compression != 0) return info;
  const uint64_t needed = offset + (uint64_t{info.width} * bits + 31) / 32 * 4 * info.height;
  if (size < needed) return cut_short(std::move(info), "before the " + std::to_string(needed) + " bytes of its pixel array", size);
  return info;
}

template <typename Read>
ImageInfo with_file(const std::filesystem::path& path, const Read& read) {
  try {
    const RegularFile file(path);
    FileSource source(file);
    return read(source);
  } catch (const Error& e) {  // cannot open, not a regular file, EIO: reported, not fatal
    return problem(ImageFormat::kUnknown, ImageProblem::kUnreadable, e.what());
  }
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
  return with_file(path, [](ByteSource& source) { return read_image_info(source); });
}

ImageInfo inspect_image(ByteSource& source) {
  ImageInfo info = read_image_info(source);
  if (!info.ok()) return info;
  switch (info.format) {
    case ImageFormat::kPng: return inspect_png(source, std::move(info));
    case ImageFormat::kJpeg: return inspect_jpeg(source, std::move(info));
    case ImageFormat::kWebp: return inspect_webp(source, std::move(info));
    case ImageFormat::kGif: return inspect_gif(source, std::move(info));
    case ImageFormat::kBmp: return inspect_bmp(source, std::move(info));
    case ImageFormat::kUnknown: break;
  }
  return info;
}

ImageInfo inspect_image(std::span<const uint8_t> bytes) {
  MemorySource source(bytes);
  return inspect_image(source);
}

ImageInfo inspect_image(const std::filesystem::path& path) {
  return with_file(path, [](ByteSource& source) { return inspect_image(source); });
}

int exif_orientation(std::span<const uint8_t> tiff) {
  if (tiff.size() < 8) return 1;
  const bool little = tiff[0] == 'I' && tiff[1] == 'I';
  if (!little && !(tiff[0] == 'M' && tiff[1] == 'M')) return 1;
  auto u16 = [&](size_t at) -> uint32_t { return little ? tiff[at] | tiff[at + 1] << 8 : tiff[at] << 8 | tiff[at + 1]; };
  auto u32 = [&](size_t at) -> uint32_t { return little ? u16(at) | u16(at + 2) << 16 : u16(at) << 16 | u16(at + 2); };
  if (u16(2) != 42) return 1;
  const size_t ifd = u32(4);
  if (ifd > tiff.size() - 2) return 1;
  const size_t entries = u16(ifd);
  for (size_t i = 0; i < entries; ++i) {
    const size_t e = ifd + 2 + 12 * i;
    if (e + 12 > tiff.size()) break;
    if (u16(e) != 0x0112) continue;
    const uint32_t type = u16(e + 2);
    const uint32_t value = type == 3 ? u16(e + 8) : type == 4 ? u32(e + 8) : 1;
    return value >= 1 && value <= 8 ? static_cast<int>(value) : 1;
  }
  return 1;
}

std::string_view orientation_name(int orientation) {
  switch (orientation) {
    case 2: return "mirror";
    case 3: return "rotate 180°";
    case 4: return "flip";
    case 5: return "transpose";
    case 6: return "rotate 90° clockwise";
    case 7: return "transverse";
    case 8: return "rotate 90° counter-clockwise";
    default: return "upright";
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
