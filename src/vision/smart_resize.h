#pragma once
// Qwen2-VL / Qwen2.5-VL image sizing (transformers' smart_resize in image_processing_qwen2_vl.py):
// both sides become multiples of 28 (patch 14 x merge 2), the pixel count is brought into
// [min_pixels, max_pixels], and each 28x28 cell is one image token for the language model.
#include <cstdint>
#include <optional>
#include <string>

namespace vlmforge::vision {

inline constexpr uint32_t kResizeFactor = 28;
// qwen_vl_utils' MIN_PIXELS / MAX_PIXELS, what swift resizes with when the environment sets
// neither; also min_pixels / max_pixels of the published Qwen2.5-VL preprocessor_config.json.
inline constexpr uint64_t kDefaultMinPixels = 4 * 28 * 28;         // 3136
inline constexpr uint64_t kDefaultMaxPixels = 16384 * 28 * 28;     // 12845056
inline constexpr double kMaxAspectRatio = 200;

struct PixelBudget {
  uint64_t min_pixels = kDefaultMinPixels;
  uint64_t max_pixels = kDefaultMaxPixels;
};

struct ResizedImage {
  uint32_t height = 0;
  uint32_t width = 0;
  uint64_t tokens() const { return uint64_t{height / kResizeFactor} * (width / kResizeFactor); }
};

// std::nullopt when the aspect ratio exceeds 200 (transformers raises ValueError there) or a side
// is zero. Python's round() rounds halves to even; so does this.
std::optional<ResizedImage> smart_resize(uint32_t height, uint32_t width, const PixelBudget& budget = {});

// The budget swift uses: the MIN_PIXELS / MAX_PIXELS environment variables over the defaults;
// flags (when given, > 0) override both. Throws UsageError for a variable that is not a positive
// integer. min_pixels > max_pixels is accepted, as transformers' processor accepts it.
PixelBudget pixel_budget_from_env(std::optional<uint64_t> min_flag, std::optional<uint64_t> max_flag);

// Why a budget transformers accepts is likely a mistake, "" when it is not: with min_pixels above
// max_pixels most images shrink to max_pixels (a 640x480 image under min 3136, max 784 is one token).
std::string budget_warning(const PixelBudget& budget);

}  // namespace vlmforge::vision
