#include "util/half.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace vlmforge {
namespace {

// Independent reference: round a double to the nearest value with `mantissa_bits` explicit
// mantissa bits and the given exponent range, ties to even (IEEE semantics, subnormals included).
double round_to_format(double x, int mantissa_bits, int min_exponent, double max_finite) {
  if (std::isnan(x) || x == 0) return x;
  const double a = std::fabs(x);
  int e = std::ilogb(a);
  if (e < min_exponent) e = min_exponent;  // subnormal spacing
  const double spacing = std::ldexp(1.0, e - mantissa_bits);
  const double q = a / spacing;
  double r = std::floor(q);
  const double frac = q - r;
  if (frac > 0.5 || (frac == 0.5 && std::fmod(r, 2.0) == 1.0)) r += 1;
  double result = r * spacing;
  // Values at or past the midpoint between max_finite and the next power overflow to infinity.
  if (result > max_finite) result = INFINITY;
  return std::copysign(result, x);
}

TEST(Half, Bf16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(f))));
      continue;
    }
    EXPECT_EQ(f32_to_bf16(f), h) << h;
  }
}

TEST(Half, F16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    EXPECT_EQ(f32_to_f16(f), h) << h;
  }
}

TEST(Half, F32ToBf16RoundsToNearestEven) {
  std::mt19937 rng(42);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    const float f = std::bit_cast<float>(bits(rng));
    if (std::isnan(f) || std::isinf(f)) continue;
    const double expected = round_to_format(f, 7, -126, 3.3895313892515355e38);
    EXPECT_EQ(static_cast<double>(bf16_to_f32(f32_to_bf16(f))), expected) << f;
  }
  // Exact ties: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7; ties go to the even mantissa.
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 0x1p-8f)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 3 * 0x1p-8f)), 1.0f + 0x1p-6f);
}

TEST(Half, F32ToF16RoundsToNearestEvenWithSubnormalsAndOverflow) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> exponent(-30, 17);
  std::uniform_real_distribution<double> mantissa(1, 2);
  for (int i = 0; i < 200000; ++i) {
    const float f = static_cast<float>((i % 2 ? -1 : 1) * mantissa(rng) * std::exp2(exponent(rng)));
    const double expected = round_to_format(f, 10, -14, 65504.0);
    EXPECT_EQ(static_cast<double>(f16_to_f32(f32_to_f16(f))), expected) << f;
  }
  EXPECT_TRUE(std::isinf(f16_to_f32(f32_to_f16(65520.0f))));
  EXPECT_EQ(f16_to_f32(f32_to_f16(65519.0f)), 65504.0f);
}

TEST(Half, NanStaysNan) {
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(NAN))));
  // A NaN whose payload sits only in the low bits must not round to infinity.
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::bit_cast<float>(0x7f800001u)))));
}

}  // namespace
}  // namespace vlmforge
