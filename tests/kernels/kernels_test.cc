#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "io/convert.h"
#include "kernels/convert.h"
#include "kernels/low_rank.h"
#include "support/test_support.h"
#include "util/simd_targets.h"

namespace vlmforge::kernels {
namespace {

TEST(Kernels, LowRankMatchesNaiveDoubleOnEverySimdTarget) {
  test::for_each_simd_target([](const std::string& target) {
    SCOPED_TRACE(target);
    EXPECT_EQ(current_simd_target(), target);
    std::mt19937 rng(3);
    std::normal_distribution<float> dist;
    // Odd sizes exercise every tile height (AVX2's 6 rows, AVX-512's 4) with each remainder, the
    // single-vector and scalar column tails, and more than one column panel (512).
    for (auto [rows, cols, rank] : {std::tuple{1, 1, 1}, {2, 7, 3}, {5, 33, 8}, {9, 100, 16}, {4, 257, 64},
                                    {7, 40, 5}, {11, 1030, 64}, {12, 17, 2}, {13, 520, 32}, {3, 64, 1}}) {
      std::vector<float> base(rows * cols), left(rows * rank), right(rank * cols);
      for (auto* v : {&base, &left, &right})
        for (auto& x : *v) x = dist(rng);
      std::vector<float> out = base;
      const float scale = 0.37f;
      add_low_rank(out.data(), rows, cols, left.data(), right.data(), rank, scale);
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) {
          double delta = 0;
          for (int k = 0; k < rank; ++k) delta += static_cast<double>(left[r * rank + k]) * right[k * cols + c];
          const double expected = base[r * cols + c] + scale * delta;
          ASSERT_NEAR(out[r * cols + c], expected, 1e-5 * (1 + std::abs(expected)) * std::sqrt(rank))
              << rows << "x" << cols << " r" << rank << " at " << r << "," << c;
        }
    }
  });
}

TEST(Kernels, SimdTargetsCanBeCapped) {
  const auto targets = usable_simd_targets();
  ASSERT_FALSE(targets.empty());
  EXPECT_EQ(current_simd_target(), targets.front().name);
  const std::string message = test::error_of([] { limit_simd_target("no-such-isa"); });
  EXPECT_NE(message.find("offer: " + targets.front().name), std::string::npos) << message;
  // A cap lasts for the process, so it is tried in a child.
  const std::string worst = targets.back().name;
  EXPECT_EXIT(
      {
        limit_simd_target(worst);
        std::exit(current_simd_target() == worst && usable_simd_targets().size() == 1 ? 0 : 1);
      },
      testing::ExitedWithCode(0), "");
}

TEST(Kernels, ConversionsMatchScalarReferenceOnEverySimdTarget) {
  test::for_each_simd_target([](const std::string& target) {
    SCOPED_TRACE(target);
    std::mt19937 rng(5);
    std::uniform_int_distribution<uint32_t> bits;
    std::vector<float> values(1031);
    for (auto& v : values) v = std::bit_cast<float>(bits(rng));  // includes NaN, Inf, subnormals
    values[0] = 1.0f + 0x1p-8f;  // a tie
    for (DType d : {DType::BF16, DType::F16, DType::F32}) {
      const size_t size = dtype_info(d).bits / 8;
      std::vector<std::byte> packed(values.size() * size), expected(values.size() * size);
      from_f32(d, values.data(), packed.data(), values.size());
      for (size_t i = 0; i < values.size(); ++i) store_float(d, expected.data(), i, values[i]);
      EXPECT_EQ(packed, expected) << dtype_name(d);
      size_t non_finite = 0;
      for (size_t i = 0; i < values.size(); ++i) non_finite += !std::isfinite(load_float(d, packed.data(), i));
      EXPECT_GT(non_finite, 0u) << dtype_name(d);
      EXPECT_EQ(count_non_finite(d, packed.data(), values.size()), non_finite) << dtype_name(d);
      std::vector<float> back(values.size());
      to_f32(d, packed.data(), back.data(), values.size());
      for (size_t i = 0; i < values.size(); ++i) {
        const float want = load_float(d, packed.data(), i);
        if (std::isnan(want)) EXPECT_TRUE(std::isnan(back[i]));
        else EXPECT_EQ(back[i], want) << i;
      }
    }
  });
}

}  // namespace
}  // namespace vlmforge::kernels
