#include "data/media_check.h"

#include <unistd.h>

#include <array>

#include "io/regular_file.h"
#include "vision/image_decode.h"

namespace vlmforge::data {

namespace fs = std::filesystem;

bool is_remote(std::string_view path) {
  constexpr std::array<std::string_view, 7> kSchemes{"http://", "https://", "s3://", "gs://", "ftp://", "oss://", "hdfs://"};
  for (std::string_view scheme : kSchemes)
    if (path.size() > scheme.size() && path.substr(0, scheme.size()) == scheme) return true;
  return false;
}

fs::path resolve_media_path(std::string_view path, const fs::path& base_dir) {
  fs::path p{std::string(path)};
  return p.is_absolute() ? p : base_dir / p;
}

namespace {

// Missing, not a regular file, or unreachable (ELOOP, EACCES on a parent): found without opening
// it (a FIFO would block the open, a device such as /dev/zero never ends).
std::optional<MediaCheck> check_exists(const fs::path& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  MediaCheck check;
  if (status.type() == fs::file_type::not_found) {
    check.problem = FindingCode::kImageMissing;
    check.detail = "no such file: " + path.string();
    return check;
  }
  if (ec) {
    check.problem = FindingCode::kImageUnreadable;
    check.detail = path.string() + ": " + ec.message();
    return check;
  }
  if (status.type() != fs::file_type::regular) {
    check.problem = FindingCode::kNotAnImage;
    check.detail = path.string() + " is " + std::string(file_type_name(status.type())) + ", not a regular file";
    return check;
  }
  return std::nullopt;
}

}  // namespace

MediaCheck check_image_file(const fs::path& path, bool deep) {
  if (auto missing = check_exists(path)) return *missing;
  MediaCheck check;
  check.image = vision::inspect_image(path);
  switch (check.image.problem) {
    case vision::ImageProblem::kNone: break;
    case vision::ImageProblem::kUnreadable: check.problem = FindingCode::kImageUnreadable; break;
    case vision::ImageProblem::kNotImage: check.problem = FindingCode::kNotAnImage; break;
    case vision::ImageProblem::kTruncated:
    case vision::ImageProblem::kCorrupt: check.problem = FindingCode::kImageCorrupt; break;
  }
  if (check.problem) {
    // An unreadable file's detail (the open or read error) names the path already.
    check.detail = check.problem == FindingCode::kImageUnreadable ? check.image.detail : path.string() + ": " + check.image.detail;
    return check;
  }
  if (deep) {
    if (const vision::DecodeResult decoded = vision::decode_image(path, check.image.format); !decoded.ok) {
      check.problem = FindingCode::kImageCorrupt;
      check.detail = path.string() + ": full decode failed: " + decoded.error;
      return check;
    }
  }
  const vision::ImageFormat named = vision::format_from_extension(path.extension().string());
  if (named != vision::ImageFormat::kUnknown && named != check.image.format)
    check.warnings.push_back({FindingCode::kImageWrongExtension,
                              path.string() + " is a " + std::string(vision::image_format_name(check.image.format)) + " file"});
  if (check.image.orientation != 1)
    check.warnings.push_back({FindingCode::kImageExifRotated,
                              path.string() + " has EXIF orientation " + std::to_string(check.image.orientation) + " (" +
                                  std::string(vision::orientation_name(check.image.orientation)) +
                                  "): training sees the stored pixels, unrotated; infer and deploy do too unless --exif_transpose"});
  return check;
}

MediaCheck check_media_file(const fs::path& path) {
  if (auto missing = check_exists(path)) {
    if (missing->problem == FindingCode::kImageMissing) missing->problem = FindingCode::kMediaMissing;
    return *missing;
  }
  MediaCheck check;
  if (::access(path.c_str(), R_OK) != 0) {
    check.problem = FindingCode::kImageUnreadable;
    check.detail = path.string() + " is not readable";
  }
  return check;
}

}  // namespace vlmforge::data
