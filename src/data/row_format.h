#pragma once
// The row layouts ms-swift accepts, detected per row and brought to one form (swift's messages
// plus top-level media lists) so every later check is written once.
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "data/finding.h"

namespace vlmforge::data {

enum class RowFormat {
  kMessages,       // {"messages": [{"role", "content"}]}
  kSharegpt,       // {"conversations": [{"from", "value"}]}
  kQueryResponse,  // {"query", "response", "history": [[q, r]], "system"}
  kAlpaca,         // {"instruction", "input", "output", "system"}
  kUnknown,
};
inline constexpr int kRowFormatCount = 5;
std::string_view row_format_name(RowFormat format);

enum class MediaKind { kImage, kVideo, kAudio };

struct MediaRef {
  MediaKind kind;
  std::string path;     // as written (a path or URL); empty for inline data
  bool inline_data = false;  // base64 / data: URI / {"bytes": ...}: nothing to check on disk
};

// A problem found while normalizing, before its line is known.
struct RowProblem {
  FindingCode code;
  std::string message;
};

struct NormalizedRow {
  RowFormat format = RowFormat::kUnknown;
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();  // [{"role", "content"}]
  std::vector<MediaRef> media;
  bool singular_image_key = false;  // "image" used instead of "images"
};

// Detects the format of `row` (an object) and converts it; problems found on the way (unknown
// roles, bad media entries) are appended to `problems`.
NormalizedRow normalize_row(const nlohmann::ordered_json& row, std::vector<RowProblem>& problems);

}  // namespace vlmforge::data
