// The production AWQ / GPTQ packer (model/quant_pack.h) against a float64 round-to-nearest
// reference: the codes, zeros and scales it chooses, the exact words it stores (the test-side
// packers of support/quant_packing.h, written from AutoAWQ's and AutoGPTQ's layouts), and what the
// loader (model/quant_repack.h) reads back from them.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "model/quant_pack.h"
#include "support/quant_packing.h"
#include "support/test_support.h"
#include "util/half.h"

namespace vlmforge::test {
namespace {

QuantizationConfig config_of(QuantMethod method, int bits, int group_size) {
  QuantizationConfig c;
  c.method = method;
  c.bits = bits;
  c.group_size = group_size;
  c.sym = method == QuantMethod::kGptq;
  c.zeros_minus_one = method == QuantMethod::kGptq;
  return c;
}

// Weights with the groups that test the edges: all zero, all positive, all negative, one
// outlier, and plain Gaussian ones.
std::vector<float> test_weights(uint64_t rows, uint64_t cols, uint64_t group, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> w(rows * cols);
  for (float& x : w) x = normal(rng);
  for (uint64_t c = 0; c < group; ++c) {
    w[0 * cols + c] = 0;
    w[1 * cols + c] = std::fabs(w[1 * cols + c]);
    w[2 * cols + c] = -std::fabs(w[2 * cols + c]);
  }
  w[3 * cols + 5] = 1.5f;
  return w;
}

// The float64 reference of quant_pack.h's rule: per group, the scale from the range (GPTQ sym:
// 2·max|w|, all zero → 2; AWQ: max(w, 0) − min(w, 0), at least 1e-5) over 2^bits − 1, rounded
// to fp16; the zero 2^(bits−1) (GPTQ) or round(−min / scale) (AWQ); codes round half to even.
Reference reference_rtn(const QuantizationConfig& config, const std::vector<float>& w, uint64_t rows, uint64_t cols) {
  const uint64_t group = config.group_size == -1 ? cols : static_cast<uint64_t>(config.group_size);
  Reference ref{rows, cols, group, config.bits, std::vector<uint32_t>(rows * cols), {}, {}, {}};
  ref.zero.resize(ref.groups() * rows);
  ref.scale.resize(ref.groups() * rows);
  for (uint64_t c = 0; c < cols; ++c) ref.g_idx.push_back(static_cast<uint32_t>(c / group));
  const double maxq = std::ldexp(1.0, config.bits) - 1;
  for (uint64_t r = 0; r < rows; ++r)
    for (uint64_t g = 0; g < ref.groups(); ++g) {
      double lo = 0, hi = 0;
      for (uint64_t i = 0; i < group; ++i) {
        lo = std::min(lo, double(w[r * cols + g * group + i]));
        hi = std::max(hi, double(w[r * cols + g * group + i]));
      }
      double range, zero;
      if (config.method == QuantMethod::kGptq) {
        const double amax = std::max(-lo, hi);
        range = amax == 0 ? 2 : 2 * amax;
      } else {
        range = std::max(hi - lo, 1e-5);
      }
      const double scale = f16_to_f32(f32_to_f16(static_cast<float>(range / maxq)));
      if (config.method == QuantMethod::kGptq) zero = (maxq + 1) / 2;
      else zero = std::clamp(std::nearbyint(-lo / scale), 0.0, maxq);
      ref.scale[g * rows + r] = static_cast<float>(scale);
      ref.zero[g * rows + r] = static_cast<uint32_t>(zero);
      for (uint64_t i = 0; i < group; ++i) {
        const double q = std::clamp(std::nearbyint(double(w[r * cols + g * group + i]) / scale) + zero, 0.0, maxq);
        ref.q[r * cols + g * group + i] = static_cast<uint32_t>(q);
      }
    }
  return ref;
}

template <typename T>
std::vector<std::byte> bytes_of(const std::vector<T>& v) {
  const auto b = std::as_bytes(std::span(v));
  return {b.begin(), b.end()};
}

std::vector<std::byte> bytes_of(std::span<const std::byte> b) { return {b.begin(), b.end()}; }

struct Case {
  QuantMethod method;
  int bits;
  int group_size;
};

constexpr Case kCases[] = {{QuantMethod::kGptq, 4, 32},  {QuantMethod::kGptq, 4, -1}, {QuantMethod::kGptq, 8, 64},
                           {QuantMethod::kGptq, 8, -1},  {QuantMethod::kAwq, 4, 32},  {QuantMethod::kAwq, 4, 128},
                           {QuantMethod::kAwq, 4, -1}};

std::string name_of(const Case& c) {
  return std::string(c.method == QuantMethod::kAwq ? "awq" : "gptq") + std::to_string(c.bits) + " g" +
         std::to_string(c.group_size);
}

TEST(QuantPack, StoredWordsAreTheReferencePackingOfTheFloat64Codes) {
  const uint64_t rows = 40, cols = 256;
  for (const Case& c : kCases) {
    SCOPED_TRACE(name_of(c));
    const QuantizationConfig config = config_of(c.method, c.bits, c.group_size);
    const std::vector<float> w = test_weights(rows, cols, c.group_size == -1 ? cols : c.group_size, 7);
    PackedLinear packed(config, "m", rows, cols);
    packed.quantize_rows(w.data(), 0, rows);
    const Reference ref = reference_rtn(config, w, rows, cols);
    const Packed want = c.method == QuantMethod::kAwq ? pack_awq(ref) : pack_gptq(ref, true);
    const std::vector<TensorSpec> specs = packed.specs();
    const std::vector<std::span<const std::byte>> data = packed.data();
    ASSERT_EQ(specs.size(), c.method == QuantMethod::kAwq ? 3u : 4u);
    EXPECT_EQ(specs[0].name, "m.qweight");
    EXPECT_EQ(specs[0].shape, want.qweight_shape);
    EXPECT_EQ(specs[1].shape, want.qzeros_shape);
    EXPECT_EQ(specs[2].shape, want.scales_shape);
    EXPECT_EQ(specs[2].dtype, DType::F16);
    EXPECT_TRUE(bytes_of(data[0]) == bytes_of(want.qweight)) << "qweight";
    EXPECT_TRUE(bytes_of(data[1]) == bytes_of(want.qzeros)) << "qzeros";
    EXPECT_TRUE(bytes_of(data[2]) == bytes_of(want.scales)) << "scales";
    if (c.method == QuantMethod::kGptq) {
      EXPECT_EQ(specs[3].name, "m.g_idx");
      EXPECT_TRUE(bytes_of(data[3]) == bytes_of(want.g_idx)) << "g_idx";
    }
    for (size_t s = 0; s < specs.size(); ++s) EXPECT_EQ(specs[s].nbytes(), data[s].size()) << specs[s].name;
  }
}

TEST(QuantPack, TheLoaderDequantizesToTheWeightsWithinHalfAStep) {
  const uint64_t rows = 24, cols = 128;
  for (const Case& c : kCases) {
    SCOPED_TRACE(name_of(c));
    const QuantizationConfig config = config_of(c.method, c.bits, c.group_size);
    const std::vector<float> w = test_weights(rows, cols, c.group_size == -1 ? cols : c.group_size, 11);
    PackedLinear packed(config, "m", rows, cols);
    packed.quantize_rows(w.data(), 0, rows);
    const Reference ref = reference_rtn(config, w, rows, cols);
    const QuantizedTensors tensors = packed.tensors();
    const QuantizedShape shape = quantized_shape(config, tensors);
    ASSERT_EQ(shape.rows, rows);
    ASSERT_EQ(shape.cols, cols);
    EXPECT_FALSE(shape.layout.has_perm);
    const std::vector<std::byte> layout = repack_quantized(config, tensors, shape);
    std::vector<float> row(cols);
    for (uint64_t r = 0; r < rows; ++r) {
      dequantize_row(shape, layout, r, row.data());
      for (uint64_t i = 0; i < cols; ++i) {
        // The loader's value is the reference's (q − zero) · scale, computed in float64.
        ASSERT_NEAR(row[i], double(ref.weight(r, i)), 1e-7 * std::fabs(ref.weight(r, i))) << r << ", " << i;
        const double scale = ref.scale[ref.g_idx[i] * rows + r];
        // RTN error: half a step, and a little more at the ends of the range, which the scale's
        // rounding to fp16 (relative 2^-11, over up to 2^bits steps) may move past the last code.
        const double bound = scale * (0.5 + std::ldexp(1.0, c.bits - 11));
        ASSERT_LE(std::fabs(double(row[i]) - w[r * cols + i]), bound) << r << ", " << i;
      }
    }
  }
}

TEST(QuantPack, RowBlocksQuantizedApartEqualOneCall) {
  const uint64_t rows = 48, cols = 64;
  for (const Case& c : kCases) {
    SCOPED_TRACE(name_of(c));
    const QuantizationConfig config = config_of(c.method, c.bits, c.group_size == 128 ? 32 : c.group_size);
    const std::vector<float> w = test_weights(rows, cols, 32, 3);
    PackedLinear whole(config, "m", rows, cols), parts(config, "m", rows, cols);
    whole.quantize_rows(w.data(), 0, rows);
    parts.quantize_rows(w.data() + 24 * cols, 24, 24);  // out of order, in multiples of kRowMultiple
    parts.quantize_rows(w.data(), 0, 8);
    parts.quantize_rows(w.data() + 8 * cols, 8, 16);
    for (size_t s = 0; s < whole.data().size(); ++s)
      EXPECT_TRUE(bytes_of(whole.data()[s]) == bytes_of(parts.data()[s])) << whole.specs()[s].name;
  }
}

TEST(QuantPack, ShapesTheFormatCannotHoldAndNonFiniteWeightsAreNamed) {
  const QuantizationConfig gptq4 = config_of(QuantMethod::kGptq, 4, 128), awq = config_of(QuantMethod::kAwq, 4, 32);
  EXPECT_EQ(unpackable_reason(gptq4, 64, 256), "");
  EXPECT_EQ(unpackable_reason(gptq4, 64, 176), "176 inputs are not a multiple of --group_size 128");
  EXPECT_EQ(unpackable_reason(config_of(QuantMethod::kGptq, 4, -1), 64, 180),
            "180 inputs are not a multiple of the 8 codes per int32");
  EXPECT_EQ(unpackable_reason(config_of(QuantMethod::kGptq, 8, -1), 6, 64),
            "6 outputs are not a multiple of the 4 zero points per int32");
  EXPECT_EQ(unpackable_reason(awq, 12, 64), "12 outputs are not a multiple of the 8 codes per int32");
  EXPECT_NE(error_of([&] { PackedLinear(gptq4, "model.layers.0.mlp.down_proj", 64, 176); })
                .find("cannot quantize 'model.layers.0.mlp.down_proj.weight' [64, 176]: 176 inputs"),
            std::string::npos);
  std::vector<float> w(8 * 64, 0.25f);
  w[3 * 64 + 40] = std::nanf("");
  PackedLinear packed(awq, "model.layers.1.mlp.up_proj", 8, 64);
  EXPECT_EQ(error_of([&] { packed.quantize_rows(w.data(), 0, 8); }),
            "'model.layers.1.mlp.up_proj.weight' holds NaN or Inf in output row 3 (inputs 32-63); it cannot be "
            "quantized");
}

}  // namespace
}  // namespace vlmforge::test
