#pragma once
// Image dimensions read from the file header only (JPEG SOF, PNG IHDR, WebP VP8/VP8L/VP8X, GIF
// logical screen, BMP DIB header), so a dataset of millions of images is checked without decoding.
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace vlmforge::vision {

enum class ImageFormat { kUnknown, kJpeg, kPng, kWebp, kGif, kBmp };

// Why a header could not give dimensions.
enum class ImageProblem {
  kNone,
  kNotImage,    // no known signature
  kTruncated,   // signature found, the header ends early
  kCorrupt,     // signature found, header values are invalid (zero size, bad chunk, no frame header)
  kUnreadable,  // the file could not be opened or read
};

struct ImageInfo {
  ImageFormat format = ImageFormat::kUnknown;
  ImageProblem problem = ImageProblem::kNone;
  uint32_t width = 0;
  uint32_t height = 0;
  std::string detail;  // what was wrong, for the finding message

  bool ok() const { return problem == ImageProblem::kNone; }
};

// Random access to the bytes of an image: a file or memory. Returns the count read (short at EOF).
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual size_t read_at(uint64_t offset, std::span<uint8_t> out) = 0;
};

ImageInfo read_image_info(ByteSource& source);
ImageInfo read_image_info(std::span<const uint8_t> bytes);
// Opens `path`; kUnreadable (the detail naming the path) when it cannot be opened or read or is not
// a regular file (a FIFO, a device, a directory).
ImageInfo read_image_info(const std::filesystem::path& path);

std::string_view image_format_name(ImageFormat format);
// The format a file extension names (".jpg" -> kJpeg), kUnknown for others. Case-insensitive.
ImageFormat format_from_extension(std::string_view extension);

}  // namespace vlmforge::vision
