#pragma once
// A problem check-data found in a dataset: a stable code (scripts match on it), a severity, where
// (line, and column for JSON syntax errors), what is wrong, and how to fix it.
#include <cstdint>
#include <string>
#include <string_view>

namespace vlmforge::data {

enum class Severity { kError, kWarning };

enum class FindingCode {
  kInvalidJson,
  kLineTooLong,
  kNestingTooDeep,
  kNotObject,
  kMissingMessages,
  kEmptyMessages,
  kUnknownRole,
  kBadOrder,
  kNoResponse,
  kNonStringContent,
  kEmptyResponse,
  kImageCountMismatch,
  kVideoCountMismatch,
  kAudioCountMismatch,
  kBadMediaEntry,
  kSingularImageKey,
  kPathInContent,
  kDuplicateRow,
  kInconsistentEndMarker,
  kRemoteMedia,
  kImageMissing,
  kMediaMissing,
  kImageUnreadable,
  kNotAnImage,
  kImageCorrupt,
  kImageWrongExtension,
  kImageExifRotated,
  kImageAspectRatio,
  kTooLong,
};
inline constexpr int kFindingCodeCount = static_cast<int>(FindingCode::kTooLong) + 1;

struct FindingInfo {
  std::string_view name;  // stable, kebab-case: "path-in-content"
  Severity severity;
  std::string_view hint;  // how to fix it
};

const FindingInfo& finding_info(FindingCode code);
std::string_view severity_name(Severity severity);

struct Finding {
  FindingCode code;
  uint64_t line = 0;    // 1-based line of the row (its first line for a JSON-array element)
  uint64_t column = 0;  // 1-based; 0 when not meaningful
  std::string message;
  std::string file;     // the dataset file, as given
};

}  // namespace vlmforge::data
