#pragma once
// Where a dataset's media path points and what is there: URLs are only classified (never
// fetched), local files are resolved against the base directory and their headers read.
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/finding.h"
#include "vision/image_info.h"

namespace vlmforge::data {

bool is_remote(std::string_view path);  // http(s)://, s3://, gs://, ftp://, oss://

// `path` as written in the row, resolved: absolute paths as is, others under `base_dir`.
std::filesystem::path resolve_media_path(std::string_view path, const std::filesystem::path& base_dir);

struct MediaWarning {
  FindingCode code;  // kImageWrongExtension, kImageExifRotated
  std::string detail;
};

struct MediaCheck {
  std::optional<FindingCode> problem;  // kImageMissing, kImageUnreadable, kNotAnImage, kImageCorrupt
  std::string detail;                  // of the problem
  std::vector<MediaWarning> warnings;
  vision::ImageInfo image;             // dimensions when the header was read
};

// Reads the header of an image file and checks its structure is complete (vision::inspect_image:
// files cut short are kImageCorrupt), and with `deep` decodes it fully (safe to call from several
// threads).
MediaCheck check_image_file(const std::filesystem::path& path, bool deep);
// Existence and readability only (videos, audios): kMediaMissing, kImageUnreadable.
MediaCheck check_media_file(const std::filesystem::path& path);

}  // namespace vlmforge::data
