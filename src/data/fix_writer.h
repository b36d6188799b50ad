#pragma once
// --fix: the corrected copy of a dataset, written to a temporary file next to the output and
// renamed over it only when complete, so a failed run never leaves a half-written dataset.
#include <cstdio>
#include <filesystem>
#include <string_view>

#include <nlohmann/json.hpp>

#include "data/row_checks.h"
#include "data/row_format.h"

namespace vlmforge::data {

class FixWriter {
 public:
  explicit FixWriter(std::filesystem::path output);
  ~FixWriter();  // removes the temporary file unless commit() succeeded
  FixWriter(const FixWriter&) = delete;
  FixWriter& operator=(const FixWriter&) = delete;

  void write_line(std::string_view json_text);
  void commit();

 private:
  std::filesystem::path output_, temp_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

// The unambiguous fixes, applied to `row` in place: "image" -> "images" (as a list) and image
// paths written in the text of a messages/sharegpt row with no images moved into "images" (the
// path replaced by <image>). Returns true when the row changed.
bool fix_row(nlohmann::ordered_json& row, const NormalizedRow& normalized, const RowFacts& facts);

}  // namespace vlmforge::data
