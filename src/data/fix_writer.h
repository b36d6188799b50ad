#pragma once
// --fix: the unambiguous corrections of a row. The corrected copy is written through an
// AtomicOutput (io/atomic_output.h), so a failed run never leaves a half-written dataset.
#include <nlohmann/json.hpp>

#include "data/row_checks.h"
#include "data/row_format.h"

namespace vlmforge::data {

// The unambiguous fixes, applied to `row` in place: "image" -> "images" (as a list) and image
// paths written in the text of a messages/sharegpt row with no images moved into "images" (the
// path replaced by <image>). Returns true when the row changed.
bool fix_row(nlohmann::ordered_json& row, const NormalizedRow& normalized, const RowFacts& facts);

}  // namespace vlmforge::data
