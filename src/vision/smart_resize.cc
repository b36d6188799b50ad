#include "vision/smart_resize.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "util/error.h"

namespace vlmforge::vision {

std::optional<ResizedImage> smart_resize(uint32_t height, uint32_t width, const PixelBudget& budget) {
  if (height == 0 || width == 0) return std::nullopt;
  const double h = height, w = width, factor = kResizeFactor;
  if (std::max(h, w) / std::min(h, w) > kMaxAspectRatio) return std::nullopt;
  // nearbyint under the default rounding mode is round-half-to-even, matching Python's round().
  double h_bar = std::nearbyint(h / factor) * factor;
  double w_bar = std::nearbyint(w / factor) * factor;
  if (h_bar * w_bar > static_cast<double>(budget.max_pixels)) {
    const double beta = std::sqrt(h * w / static_cast<double>(budget.max_pixels));
    h_bar = std::max(factor, std::floor(h / beta / factor) * factor);
    w_bar = std::max(factor, std::floor(w / beta / factor) * factor);
  } else if (h_bar * w_bar < static_cast<double>(budget.min_pixels)) {
    const double beta = std::sqrt(static_cast<double>(budget.min_pixels) / (h * w));
    h_bar = std::ceil(h * beta / factor) * factor;
    w_bar = std::ceil(w * beta / factor) * factor;
  }
  return ResizedImage{static_cast<uint32_t>(h_bar), static_cast<uint32_t>(w_bar)};
}

namespace {

std::optional<uint64_t> env_pixels(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  char* end = nullptr;
  const unsigned long long parsed = std::strtoull(value, &end, 10);
  if (*end != '\0' || parsed == 0) throw UsageError(std::string(name) + "='" + value + "' is not a positive integer");
  return parsed;
}

}  // namespace

PixelBudget pixel_budget_from_env(std::optional<uint64_t> min_flag, std::optional<uint64_t> max_flag) {
  PixelBudget budget;
  if (auto v = env_pixels("MIN_PIXELS")) budget.min_pixels = *v;
  if (auto v = env_pixels("MAX_PIXELS")) budget.max_pixels = *v;
  if (min_flag) budget.min_pixels = *min_flag;
  if (max_flag) budget.max_pixels = *max_flag;
  return budget;
}

std::string budget_warning(const PixelBudget& budget) {
  if (budget.min_pixels <= budget.max_pixels) return "";
  return "min_pixels (" + std::to_string(budget.min_pixels) + ") is larger than max_pixels (" +
         std::to_string(budget.max_pixels) + "); as in transformers, images that round above max_pixels shrink to it " +
         "(as few as 1 token) and smaller ones grow to min_pixels";
}

}  // namespace vlmforge::vision
