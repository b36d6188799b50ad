#pragma once
// Image dimensions read from the file header only (JPEG SOF, PNG IHDR, WebP VP8/VP8L/VP8X, GIF
// logical screen, BMP DIB header), so a dataset of millions of images is checked without decoding;
// inspect_image adds the structure checks that find files cut short, and the EXIF orientation.
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
  int orientation = 1;  // the EXIF Orientation tag (1-8), found by inspect_image; 1 when absent

  bool ok() const { return problem == ImageProblem::kNone; }
};

// Random access to the bytes of an image: a file or memory. Returns the count read (short at EOF).
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual size_t read_at(uint64_t offset, std::span<uint8_t> out) = 0;
  virtual uint64_t size() = 0;
};

ImageInfo read_image_info(ByteSource& source);
ImageInfo read_image_info(std::span<const uint8_t> bytes);
// Opens `path`; kUnreadable (the detail naming the path) when it cannot be opened or read or is not
// a regular file (a FIFO, a device, a directory).
ImageInfo read_image_info(const std::filesystem::path& path);

// read_image_info plus what can be known without decoding pixels. kTruncated when the file ends
// before the end its structure declares: a PNG's chunks up to IEND, a JPEG's segments and scans up
// to EOI (bytes after EOI are allowed, as PIL allows them), the RIFF size of a WebP, a GIF's blocks
// up to the trailer, a BMP's uncompressed pixel array. Reads chunk and segment headers by seeking;
// only a JPEG that does not end in EOI and a GIF are read through. `orientation` comes from the
// first JPEG APP1 Exif block, a PNG eXIf chunk before IDAT or a WebP EXIF chunk, where PIL finds it.
ImageInfo inspect_image(ByteSource& source);
ImageInfo inspect_image(std::span<const uint8_t> bytes);
ImageInfo inspect_image(const std::filesystem::path& path);

// The EXIF orientation tag (1-8) of a TIFF-structured EXIF block ("II*\0" / "MM\0*" header, as in a
// JPEG APP1 after "Exif\0\0", a PNG eXIf chunk or a WebP EXIF chunk); 1 when absent or unreadable.
int exif_orientation(std::span<const uint8_t> tiff);
// What an orientation value asks a viewer to do: "rotate 90° clockwise" for 6.
std::string_view orientation_name(int orientation);

std::string_view image_format_name(ImageFormat format);
// The format a file extension names (".jpg" -> kJpeg), kUnknown for others. Case-insensitive.
ImageFormat format_from_extension(std::string_view extension);

}  // namespace vlmforge::vision
