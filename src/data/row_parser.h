#pragma once
// Parses one dataset row with simdjson (one reused parser and padded buffer per thread) and runs
// every check that needs the row alone. A row simdjson refuses is parsed again by nlohmann's
// parser, which names the line and column of the error, so the fast path costs the findings nothing.
#include <simdjson.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "data/finding.h"
#include "data/row_checks.h"
#include "data/row_format.h"

namespace vlmforge::data {

struct ParsedRow {
  std::optional<Finding> syntax;  // invalid JSON or nesting too deep: nothing below is set
  std::string_view type_name;     // JSON type of the row ("object" for a usable row)
  NormalizedRow normalized;       // objects only, as are problems and facts
  std::vector<RowProblem> problems;
  RowFacts facts;
  uint64_t hash = 0;  // structural: rows that differ only in whitespace hash alike
};

class RowParser {
 public:
  static constexpr int kMaxDepth = 64;  // chat rows need ~5 levels; deeper is a finding
  RowParser();

  // `line` and `column`: where `text` starts in its file, for the position of a syntax error.
  ParsedRow parse(std::string_view text, uint64_t line, uint64_t column);

 private:
  simdjson::error_code load(std::string_view text, simdjson::dom::element& root);

  simdjson::dom::parser parser_;
  std::unique_ptr<char[]> buffer_;  // the row plus SIMDJSON_PADDING bytes, as simdjson reads
  size_t buffer_capacity_ = 0;
};

// The structural hash behind duplicate-row: type, length and content of every value, key order
// included; whitespace and escapes spelled differently do not change it. `depth` receives the
// nesting depth of containers (0 for a scalar).
uint64_t structural_hash(simdjson::dom::element value, int& depth);

}  // namespace vlmforge::data
