#include "cli/vision_flags.h"

#include <cstdio>
#include <string>

namespace vlmforge::cli {

vision::PixelBudget pixel_budget_flags(std::optional<uint64_t> min_pixels, std::optional<uint64_t> max_pixels) {
  const vision::PixelBudget budget = vision::pixel_budget_from_env(min_pixels, max_pixels);
  if (const std::string warning = vision::budget_warning(budget); !warning.empty())
    std::fprintf(stderr, "warning: %s\n", warning.c_str());
  return budget;
}

}  // namespace vlmforge::cli
