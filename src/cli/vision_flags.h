#pragma once
// The image pixel budget of infer, deploy, plan and check-data, decided in one place.
#include <cstdint>
#include <optional>

#include "vision/smart_resize.h"

namespace vlmforge::cli {

// --min_pixels / --max_pixels over the MIN_PIXELS / MAX_PIXELS environment (as swift) over the
// defaults; budget_warning's text on stderr when min_pixels > max_pixels.
vision::PixelBudget pixel_budget_flags(std::optional<uint64_t> min_pixels, std::optional<uint64_t> max_pixels);

}  // namespace vlmforge::cli
