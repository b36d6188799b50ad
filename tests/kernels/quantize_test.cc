#include "kernels/quantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "io/convert.h"
#include "support/test_support.h"
#include "util/half.h"

namespace vlmforge::kernels {
namespace {

// A quantized weight read back from its bytes, section by section, as the layout defines them.
struct Quantized {
  QuantLayout layout;
  size_t rows, cols;
  std::vector<std::byte> bytes;

  Quantized(const QuantScheme& scheme, const std::vector<float>& w, size_t rows_, size_t cols_)
      : layout(scheme.layout()), rows(rows_), cols(cols_), bytes(layout.bytes(rows, cols)) {
    quantize_rows(w.data(), rows, cols, scheme, bytes.data());
  }
  unsigned code(size_t r, size_t c) const {
    const auto byte = static_cast<unsigned>(bytes[r * layout.row_code_bytes(cols) + (layout.bits == 4 ? c / 2 : c)]);
    return layout.bits == 8 ? byte : (c % 2 ? byte >> 4 : byte & 15);
  }
  uint16_t scale_bits(size_t r, size_t g) const {
    uint16_t h;
    std::memcpy(&h, bytes.data() + layout.scales_offset(rows, cols) + 2 * (r * layout.groups(cols) + g), 2);
    return h;
  }
  double scale(size_t r, size_t g) const { return f16_to_f32(scale_bits(r, g)); }
  unsigned zero(size_t r, size_t g) const {
    return static_cast<unsigned>(bytes[layout.zeros_offset(rows, cols) + r * layout.groups(cols) + g]);
  }
  double value(size_t r, size_t c) const {
    const size_t g = c / layout.group_size;
    return (double(code(r, c)) - zero(r, g)) * scale(r, g);
  }
};

std::vector<float> padded(std::vector<float> head, size_t n) {
  head.resize(n, 0.0f);
  return head;
}

TEST(Quantize, Q8_0RoundsHalfAwayFromZeroLikeLlamaCpp) {
  // amax 127: d = 1, so codes are roundf(x) + 128 (torch's half-to-even would give 2, -2, 0, 0).
  const Quantized q(QuantScheme::q8_0(), padded({127, 2.5f, -2.5f, 0.5f, -0.5f, -127}, 32), 1, 32);
  const unsigned want[] = {255, 131, 125, 129, 127, 1, 128};
  for (size_t c = 0; c < 7; ++c) EXPECT_EQ(q.code(0, c), want[c]) << "column " << c;
  EXPECT_EQ(q.scale_bits(0, 0), 0x3C00);  // 1.0
  EXPECT_EQ(q.zero(0, 0), 128u);
}

TEST(Quantize, Q8_0ScaleIsAmaxOver127RoundedToFp16) {
  std::vector<float> x(32);
  for (size_t j = 0; j < 32; ++j) x[j] = float(j) - 16;  // amax 16: d = 16/127, 1/d = 7.9375
  const Quantized q(QuantScheme::q8_0(), x, 1, 32);
  // 16/127 = 2^-3 · 1.00787…: mantissa 8.06/1024 rounds to 8.
  EXPECT_EQ(q.scale_bits(0, 0), 0x3008);
  EXPECT_EQ(q.code(0, 0), 1u);      // −16 · 7.9375 = −127
  EXPECT_EQ(q.code(0, 17), 136u);   // 1 · 7.9375 → 8
  EXPECT_EQ(q.code(0, 18), 144u);   // 15.875 → 16
  EXPECT_EQ(q.code(0, 31), 247u);   // 119.06 → 119
  EXPECT_EQ(q.code(0, 16), 128u);
}

TEST(Quantize, Q4_0MapsTheLargestMagnitudeToCodeZeroAndTruncatesPlusHalf) {
  // −8 comes first of the two largest magnitudes, so d = −8 / −8 = 1 and q = min(15, (int)(x + 8.5)).
  const Quantized q(QuantScheme::q4_0(), padded({-8, 1, 8, 0.4999f, 0.5f, -3.5f, 7.4f, 7.6f}, 32), 1, 32);
  const unsigned want[] = {0, 9, 15, 8, 9, 5, 15, 15, 8};
  for (size_t c = 0; c < 9; ++c) EXPECT_EQ(q.code(0, c), want[c]) << "column " << c;
  EXPECT_EQ(q.scale_bits(0, 0), 0x3C00);
  EXPECT_EQ(q.zero(0, 0), 8u);
  EXPECT_EQ(static_cast<unsigned>(q.bytes[0]), 0x90u) << "column 0 in the low nibble, column 1 in the high";
  // A positive largest value gives a negative scale: 4 → d = −0.5, so 4 is code 0 and −1 code 10.
  const Quantized p(QuantScheme::q4_0(), padded({4, -1}, 32), 1, 32);
  EXPECT_EQ(p.code(0, 0), 0u);
  EXPECT_EQ(p.code(0, 1), 10u);
  EXPECT_EQ(p.scale(0, 0), -0.5);
  EXPECT_EQ(p.value(0, 0), 4.0);
  EXPECT_EQ(p.value(0, 1), -1.0);
}

TEST(Quantize, AllZeroGroupsReconstructToZero) {
  for (const QuantScheme& s : {QuantScheme::q8_0(), QuantScheme::q4_0(), QuantScheme::round_to_nearest(4, 32, false),
                               QuantScheme::round_to_nearest(8, 64, true)}) {
    const Quantized q(s, std::vector<float>(64, 0.0f), 1, 64);
    for (size_t c = 0; c < 64; ++c) EXPECT_EQ(q.value(0, c), 0.0) << "bits " << s.bits << " column " << c;
  }
}

TEST(Quantize, RoundToNearestIsGptqMinMaxWithHalfToEven) {
  // Range [−1.5, 6]: scale 7.5 / 15 = 0.5 (exact in fp16), zero round(3) = 3.
  const Quantized q(QuantScheme::round_to_nearest(4, 32, false), padded({-1.5f, 6, 0.25f, 0.75f, 100}, 31), 1, 31);
  EXPECT_EQ(q.scale_bits(0, 0), f32_to_f16(101.5f / 15)) << "100 widens the range";
  const Quantized r(QuantScheme::round_to_nearest(4, 32, false), padded({-1.5f, 6, 0.25f, 0.75f}, 32), 1, 32);
  EXPECT_EQ(r.scale(0, 0), 0.5);
  EXPECT_EQ(r.zero(0, 0), 3u);
  EXPECT_EQ(r.code(0, 0), 0u);
  EXPECT_EQ(r.code(0, 1), 15u);
  EXPECT_EQ(r.code(0, 2), 3u) << "0.25 / 0.5 = 0.5 rounds to even 0";
  EXPECT_EQ(r.code(0, 3), 5u) << "1.5 rounds to even 2";
  EXPECT_EQ(r.code(0, 4), 3u) << "0 is exactly the zero point";
  // The range always holds 0: all-positive values keep zero 0 and scale max / 15.
  const Quantized pos(QuantScheme::round_to_nearest(4, 32, false), padded({3, 1.5f}, 32), 1, 32);
  EXPECT_EQ(pos.zero(0, 0), 0u);
  EXPECT_EQ(pos.scale_bits(0, 0), f32_to_f16(0.2f));  // 3 / 15
  EXPECT_EQ(pos.code(0, 1), 8u);                       // 1.5 / 0.19995 = 7.502
  // Symmetric: ±max|x|, zero 2^(bits−1).
  const Quantized sym(QuantScheme::round_to_nearest(8, 32, true), padded({-2, 1}, 32), 1, 32);
  EXPECT_EQ(sym.zero(0, 0), 128u);
  EXPECT_EQ(sym.scale_bits(0, 0), f32_to_f16(4.0f / 255));
  EXPECT_EQ(sym.code(0, 1), 192u);  // 1 / 0.015686 = 63.75 → 64
}

// Every value is within half a step of its reconstruction (a full step where a code clips at
// the range's end), checked in float64 over random rows of several shapes, short last groups included.
TEST(Quantize, ReconstructionErrorIsWithinTheStepBound) {
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0, 0.05f);
  for (const QuantScheme& s : {QuantScheme::q8_0(), QuantScheme::q4_0(), QuantScheme::round_to_nearest(4, 128, false),
                               QuantScheme::round_to_nearest(4, 64, true), QuantScheme::round_to_nearest(8, 32, false),
                               QuantScheme::round_to_nearest(8, 96, true)})
    for (size_t cols : {32, 40, 160, 257}) {
      SCOPED_TRACE("bits " + std::to_string(s.bits) + " group " + std::to_string(s.group_size) + " cols " +
                   std::to_string(cols));
      const size_t rows = 7;
      std::vector<float> w(rows * cols);
      for (float& v : w) v = dist(rng);
      w[3] = 1.0f;  // an outlier
      const Quantized q(s, w, rows, cols);
      const double maxq = (1u << s.bits) - 1;
      for (size_t r = 0; r < rows; ++r)
        for (size_t c = 0; c < cols; ++c) {
          const size_t g = c / s.group_size;
          const double step = std::abs(q.scale(r, g)), x = w[r * cols + c];
          // fp16 rounding of the scale moves the grid by up to 2^−11 relatively at the far code.
          const double grid = maxq * step * 0x1p-11 + 1e-6 * std::abs(x);
          const bool clipped = q.code(r, c) == 0 || q.code(r, c) == maxq;
          const double bound = (clipped ? step : step / 2) + grid;
          ASSERT_LE(std::abs(q.value(r, c) - x), bound) << "row " << r << " col " << c << " code " << q.code(r, c);
        }
    }
}

TEST(Quantize, StoredDtypesQuantizeAsTheirFp32Values) {
  std::mt19937 rng(9);
  std::normal_distribution<float> dist;
  const size_t rows = 3, cols = 70;
  for (DType d : {DType::BF16, DType::F16, DType::F32}) {
    std::vector<std::byte> stored(rows * cols * dtype_info(d).bits / 8);
    std::vector<float> values(rows * cols);
    for (size_t i = 0; i < values.size(); ++i) {
      store_float(d, stored.data(), i, dist(rng));
      values[i] = load_float(d, stored.data(), i);
    }
    for (const QuantScheme& s : {QuantScheme::q4_0(), QuantScheme::round_to_nearest(8, 64, false)}) {
      const QuantLayout layout = s.layout();
      std::vector<std::byte> from_stored(layout.bytes(rows, cols), std::byte{0x77});
      quantize_rows(d, stored.data(), rows, cols, s, from_stored.data());
      EXPECT_EQ(from_stored, Quantized(s, values, rows, cols).bytes) << dtype_name(d);
    }
  }
}

TEST(Quantize, RefusesSchemesTheKernelsCannotRun) {
  EXPECT_NE(test::error_of([] { QuantScheme::round_to_nearest(3, 32, false).layout(); }).find("4 or 8"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { QuantScheme::round_to_nearest(4, 48, false).layout(); }).find("multiple of 32"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { QuantScheme{QuantMethod::Q4_0, 4, 64, true}.layout(); }).find("groups of 32"),
            std::string::npos);
}

}  // namespace
}  // namespace vlmforge::kernels
