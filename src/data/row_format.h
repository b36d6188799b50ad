#pragma once
// The row layouts ms-swift accepts, detected per row and brought to one form (swift's messages
// plus top-level media lists) so every later check is written once.
#include <simdjson.h>

#include <optional>
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

// One turn, owning what the checks and the chat template need, so it outlives the parse.
struct Message {
  std::string_view role;            // canonical name, static storage: "user", "assistant", ...
  std::optional<std::string> text;  // the content when it is a string
  std::string_view content_type;    // otherwise its JSON type name; "missing" when absent or null
  std::string content_json;         // non-string content, minified (content-part lists for the template)
};

struct NormalizedRow {
  RowFormat format = RowFormat::kUnknown;
  std::vector<Message> messages;
  std::vector<MediaRef> media;
  bool singular_image_key = false;  // "image" used instead of "images"
};

// Detects the format of `row` (an object) and converts it; problems found on the way (unknown
// roles, bad media entries) are appended to `problems`.
NormalizedRow normalize_row(simdjson::dom::object row, std::vector<RowProblem>& problems);

// nlohmann's name for the JSON type of `value` ("object", "array", "string", "number", "boolean",
// "null"), which findings have always used.
std::string_view json_type_name(simdjson::dom::element value);

}  // namespace vlmforge::data
