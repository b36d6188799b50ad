#include "vision/smart_resize.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <tuple>

#include "util/error.h"

namespace vlmforge::vision {
namespace {

// Expected values computed with transformers' smart_resize formula in Python 3 (round half even).
struct Case {
  uint32_t h, w;
  uint64_t min_pixels, max_pixels;
  uint32_t out_h, out_w;
};

TEST(VisionSmartResize, MatchesTransformers) {
  constexpr uint64_t k1280 = 28 * 28 * 1280;  // the budget Qwen's README uses as an example
  const Case cases[] = {
      {1080, 1920, kDefaultMinPixels, k1280, 728, 1316},
      {70, 70, kDefaultMinPixels, k1280, 56, 56},  // 2.5 rounds to 2 (half to even)
      {42, 42, kDefaultMinPixels, k1280, 56, 56},
      {10, 10, kDefaultMinPixels, k1280, 56, 56},
      {100000, 100000, kDefaultMinPixels, k1280, 980, 980},
      {28, 5600, kDefaultMinPixels, k1280, 28, 5600},
      {1, 200, kDefaultMinPixels, k1280, 28, 812},
      {480, 640, kDefaultMinPixels, k1280, 476, 644},
      {224, 224, kDefaultMinPixels, k1280, 224, 224},
      {999, 333, kDefaultMinPixels, k1280, 1008, 336},
      {3000, 4000, 3136, 12845056, 2996, 4004},
  };
  // Defaults: qwen_vl_utils' MIN_PIXELS / MAX_PIXELS (4·28·28, 16384·28·28), which swift uses when
  // the environment sets neither, and the published Qwen2.5-VL preprocessor_config.json values.
  EXPECT_EQ(PixelBudget{}.min_pixels, 3136u);
  EXPECT_EQ(PixelBudget{}.max_pixels, 12845056u);
  for (const auto& [h, w, out_h, out_w] : {std::tuple{1080u, 1920u, 1092u, 1932u}, std::tuple{5000u, 7000u, 3024u, 4228u}}) {
    const auto r = smart_resize(h, w);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->height, out_h);
    EXPECT_EQ(r->width, out_w);
  }
  for (const Case& c : cases) {
    const auto r = smart_resize(c.h, c.w, {c.min_pixels, c.max_pixels});
    ASSERT_TRUE(r.has_value()) << c.h << "x" << c.w;
    EXPECT_EQ(r->height, c.out_h) << c.h << "x" << c.w;
    EXPECT_EQ(r->width, c.out_w) << c.h << "x" << c.w;
  }
}

TEST(VisionSmartResize, TokensAreCellsOf28) {
  const auto r = smart_resize(1080, 1920, {kDefaultMinPixels, 28 * 28 * 1280});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->tokens(), 26u * 47u);
  EXPECT_EQ(smart_resize(1080, 1920)->tokens(), 39u * 69u);  // default budget: no downscale
}

TEST(VisionSmartResize, RefusesExtremeAspectRatioAndZero) {
  EXPECT_FALSE(smart_resize(1, 201));
  EXPECT_FALSE(smart_resize(0, 10));
  EXPECT_TRUE(smart_resize(1, 200));
}

TEST(VisionSmartResize, BudgetFromEnvAndFlags) {
  ::setenv("MAX_PIXELS", "50176", 1);
  ::unsetenv("MIN_PIXELS");
  auto budget = pixel_budget_from_env(std::nullopt, std::nullopt);
  EXPECT_EQ(budget.max_pixels, 50176u);
  EXPECT_EQ(budget.min_pixels, kDefaultMinPixels);
  budget = pixel_budget_from_env(std::nullopt, 100352);  // the flag wins over the environment
  EXPECT_EQ(budget.max_pixels, 100352u);
  ::setenv("MAX_PIXELS", "lots", 1);
  EXPECT_THROW(pixel_budget_from_env(std::nullopt, std::nullopt), UsageError);
  ::unsetenv("MAX_PIXELS");
}

TEST(VisionSmartResize, MinAboveMaxFollowsTransformersWithAWarning) {
  // transformers' processor accepts min_pixels > max_pixels: images rounding above max_pixels shrink
  // to it (at least one 28x28 cell), smaller ones grow towards min_pixels.
  const PixelBudget budget = pixel_budget_from_env(20000000, std::nullopt);  // min above the default max
  EXPECT_EQ(budget.min_pixels, 20000000u);
  EXPECT_NE(budget_warning(budget).find("larger than max_pixels"), std::string::npos);
  EXPECT_EQ(budget_warning(PixelBudget{}), "");
  const auto one = smart_resize(480, 640, {3136, 784});
  ASSERT_TRUE(one);
  EXPECT_EQ(one->height, 28u);
  EXPECT_EQ(one->width, 28u);
  EXPECT_EQ(one->tokens(), 1u);
  const auto grown = smart_resize(10, 10, {9000, 100});  // rounds to 0x0, below max: grows to min
  ASSERT_TRUE(grown);
  EXPECT_EQ(grown->height, 112u);
  EXPECT_EQ(grown->width, 112u);
}

}  // namespace
}  // namespace vlmforge::vision
