// AWQ and GPTQ tensors packed by hand from known integer codes, repacked into the device layout
// and read back by a naive decoder of kernels/quant_format.h: W[r, c] = (q − z) · s everywhere.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "model/quant_repack.h"
#include "support/quant_packing.h"
#include "support/test_support.h"

namespace vlmforge::test {
namespace {

Reference make_reference(uint64_t rows, uint64_t cols, uint64_t group, int bits, bool shuffled_groups, unsigned seed) {
  std::mt19937 rng(seed);
  Reference ref{rows, cols, group, bits, {}, {}, {}, {}};
  const uint32_t max = (1u << bits) - 1;
  for (uint64_t i = 0; i < rows * cols; ++i) ref.q.push_back(rng() % (max + 1));
  for (uint64_t i = 0; i < ref.groups() * rows; ++i) {
    ref.zero.push_back(rng() % (max + 1));
    ref.scale.push_back(std::ldexp(static_cast<float>(1 + rng() % 64), -8 - static_cast<int>(rng() % 4)));
  }
  for (uint64_t c = 0; c < cols; ++c) ref.g_idx.push_back(static_cast<uint32_t>(c / group));
  if (shuffled_groups) std::shuffle(ref.g_idx.begin(), ref.g_idx.end(), rng);
  return ref;
}

// A naive reader of the device layout: W[r, input] for every stored column.
std::vector<float> decode_layout(const QuantizedShape& s, const std::vector<std::byte>& bytes) {
  const kernels::QuantLayout& L = s.layout;
  EXPECT_EQ(bytes.size(), L.bytes(s.rows, s.cols));
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  std::vector<float> w(s.rows * s.cols, std::nanf(""));
  for (uint64_t r = 0; r < s.rows; ++r)
    for (uint64_t j = 0; j < s.cols; ++j) {
      const uint8_t byte = data[L.codes_offset() + r * L.row_code_bytes(s.cols) + (L.bits == 4 ? j / 2 : j)];
      const uint32_t q = L.bits == 4 ? (j % 2 ? byte >> 4 : byte & 15) : byte;
      const uint64_t g = j / L.group_size;
      uint16_t scale_bits;
      std::memcpy(&scale_bits, data + L.scales_offset(s.rows, s.cols) + (r * L.groups(s.cols) + g) * 2, 2);
      const uint32_t z = data[L.zeros_offset(s.rows, s.cols) + r * L.groups(s.cols) + g];
      uint32_t input = static_cast<uint32_t>(j);
      if (L.has_perm) std::memcpy(&input, data + L.perm_offset(s.rows, s.cols) + j * 4, 4);
      w[r * s.cols + input] = (static_cast<float>(q) - static_cast<float>(z)) * f16_to_f32(scale_bits);
    }
  return w;
}

void expect_round_trip(const QuantizationConfig& config, const Reference& ref, const Packed& packed, bool has_perm) {
  const QuantizedTensors t = packed.tensors();
  const QuantizedShape s = quantized_shape(config, t);
  EXPECT_EQ(s.rows, ref.rows);
  EXPECT_EQ(s.cols, ref.cols);
  EXPECT_EQ(s.layout.bits, static_cast<uint32_t>(ref.bits));
  EXPECT_EQ(s.layout.has_perm, has_perm);
  const std::vector<float> w = decode_layout(s, repack_quantized(config, t, s));
  for (uint64_t r = 0; r < ref.rows; ++r)
    for (uint64_t c = 0; c < ref.cols; ++c) ASSERT_EQ(w[r * ref.cols + c], ref.weight(r, c)) << "W[" << r << ", " << c << "]";
}

QuantizationConfig config_of(const std::string& json) {
  return QuantizationConfig::from_json(nlohmann::json::parse(json), "config.json");
}

TEST(QuantRepack, AwqGemm) {
  const auto config = config_of(R"({"quant_method": "awq", "bits": 4, "group_size": 32, "version": "gemm", "zero_point": true})");
  const Reference ref = make_reference(24, 96, 32, 4, false, 1);
  expect_round_trip(config, ref, pack_awq(ref), false);
}

TEST(QuantRepack, GptqV1Int4AsymInColumnOrderNeedsNoPermutation) {
  const auto config = config_of(R"({"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": false, "sym": false})");
  Reference ref = make_reference(16, 64, 32, 4, false, 2);
  for (auto& z : ref.zero) z = std::max(z, 1u);  // v1 cannot store zero 0
  expect_round_trip(config, ref, pack_gptq(ref, true), false);
}

TEST(QuantRepack, GptqDescActSortsColumnsByGroup) {
  const auto config = config_of(R"({"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": true, "sym": false})");
  Reference ref = make_reference(16, 128, 32, 4, true, 3);
  for (auto& z : ref.zero) z = std::max(z, 1u);
  expect_round_trip(config, ref, pack_gptq(ref, true), true);
  // desc_act with a g_idx that happens to be the column order needs no permutation.
  Reference ordered = make_reference(16, 128, 32, 4, false, 4);
  for (auto& z : ordered.zero) z = std::max(z, 1u);
  expect_round_trip(config, ordered, pack_gptq(ordered, true), false);
}

TEST(QuantRepack, GptqV2Int8) {
  const auto config = config_of(
      R"({"quant_method": "gptq", "bits": 8, "group_size": 32, "sym": true, "checkpoint_format": "gptq_v2"})");
  const Reference ref = make_reference(8, 96, 32, 8, false, 5);  // zero 0 included: v2 stores it as it is
  expect_round_trip(config, ref, pack_gptq(ref, false), false);
  const Reference shuffled = make_reference(12, 64, 32, 8, true, 6);
  expect_round_trip(config, shuffled, pack_gptq(shuffled, false), true);
}

TEST(QuantRepack, GptqOneGroupPerRow) {
  const auto config = config_of(R"({"quant_method": "gptq", "bits": 8, "group_size": -1, "checkpoint_format": "gptq_v2"})");
  const Reference ref = make_reference(8, 80, 80, 8, false, 7);
  const Packed packed = pack_gptq(ref, false);
  EXPECT_EQ(quantized_shape(config, packed.tensors()).layout.groups(80), 1u);
  expect_round_trip(config, ref, packed, false);
}

TEST(QuantRepack, InconsistentTensorsAreNamed) {
  const auto config = config_of(R"({"quant_method": "gptq", "bits": 4, "group_size": 32})");
  Reference ref = make_reference(16, 64, 32, 4, false, 8);
  for (auto& z : ref.zero) z = std::max(z, 1u);
  {
    Packed p = pack_gptq(ref, true);
    p.scales_shape = {1, 32};
    p.scales.resize(32);
    EXPECT_NE(error_of([&] { quantized_shape(config, p.tensors()); }).find("tensor 'm.scales' has shape [1, 32], expected [2, 16]"),
              std::string::npos);
  }
  {
    Packed p = pack_gptq(ref, true);
    p.g_idx.assign(64, 0);  // one group of 64 inputs where the scales have two of 32
    EXPECT_NE(error_of([&] { quantized_shape(config, p.tensors()); }).find("tensor 'm.g_idx' does not give every group 32"),
              std::string::npos);
    p.g_idx[5] = 7;
    EXPECT_NE(error_of([&] { quantized_shape(config, p.tensors()); }).find("'m.g_idx' puts input 5 in group 7"),
              std::string::npos);
  }
  {
    Packed p = pack_gptq(ref, true);
    p.qzeros[0] |= 0xF;  // stored 15: zero 16 in v1
    const QuantizedTensors t = p.tensors();
    EXPECT_NE(error_of([&] { repack_quantized(config, t, quantized_shape(config, t)); }).find("'m.qzeros' stores zero point 16"),
              std::string::npos);
  }
  {
    Packed p = pack_gptq(ref, true);
    QuantizedTensors t = p.tensors();
    t.scales.dtype = DType::BF16;
    EXPECT_NE(error_of([&] { quantized_shape(config, t); }).find("tensor 'm.scales' is BF16, expected F16"), std::string::npos);
  }
}

TEST(QuantizationConfig, ParsesSupportedAndNamesTheRest) {
  const auto awq = config_of(R"({"quant_method": "awq", "bits": 4, "group_size": 128, "version": "GEMM",
                                 "zero_point": true, "modules_to_not_convert": ["visual"]})");
  EXPECT_EQ(awq.method, QuantMethod::kAwq);
  EXPECT_TRUE(awq.keeps_unquantized("visual.blocks.0.attn.qkv"));
  EXPECT_FALSE(awq.keeps_unquantized("model.layers.0.mlp.up_proj"));
  EXPECT_EQ(awq.describe(), "awq 4-bit, group 128");
  const auto v1 = config_of(R"({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": true, "sym": false})");
  EXPECT_TRUE(v1.zeros_minus_one);
  EXPECT_EQ(v1.describe(), "gptq 4-bit v1, group 128, desc_act, asym");
  const auto v2 = config_of(R"({"quant_method": "gptq", "bits": 8, "group_size": -1, "checkpoint_format": "gptq_v2"})");
  EXPECT_FALSE(v2.zeros_minus_one);
  EXPECT_EQ(v2.describe(), "gptq 8-bit v2, one group per row, sym");

  const std::pair<const char*, const char*> refused[] = {
      {R"({"quant_method": "gptq", "bits": 3, "group_size": 128})", "quantization_config.bits is 3"},
      {R"({"quant_method": "gptq", "bits": 2, "group_size": 128})", "quantization_config.bits is 2"},
      {R"({"quant_method": "awq", "bits": 8, "group_size": 128})", "quantization_config.bits is 8; supported: 4 (AWQ)"},
      {R"({"quant_method": "awq", "bits": 4, "version": "gemv"})", "quantization_config.version is 'gemv'"},
      {R"({"quant_method": "awq", "bits": 4, "version": "exllama"})", "quantization_config.version is 'exllama'"},
      {R"({"quant_method": "awq", "bits": 4, "version": "marlin"})", "quantization_config.version is 'marlin'"},
      {R"({"quant_method": "awq", "bits": 4, "zero_point": false})", "quantization_config.zero_point is false"},
      {R"({"quant_method": "gptq", "bits": 4, "checkpoint_format": "marlin"})", "quantization_config.checkpoint_format is 'marlin'"},
      {R"({"quant_method": "gptq", "bits": 4, "checkpoint_format": "ipex"})", "quantization_config.checkpoint_format is 'ipex'"},
      {R"({"quant_method": "gptq", "bits": 4, "is_marlin_format": true})", "quantization_config.is_marlin_format is true"},
      {R"({"quant_method": "gptq", "bits": 4, "group_size": 16})", "quantization_config.group_size is 16"},
      {R"({"quant_method": "fp8", "activation_scheme": "dynamic"})", "quantization_config.quant_method is 'fp8'"},
      {R"({"quant_method": "bitsandbytes", "load_in_4bit": true})", "quantization_config.quant_method is 'bitsandbytes'"},
      {R"({"quant_method": "compressed-tensors"})", "quantization_config.quant_method is 'compressed-tensors'"},
      {R"({"quant_method": "gptq", "bits": "4"})", "quantization_config.bits has the wrong type"},
  };
  for (const auto& [json, message] : refused)
    EXPECT_NE(error_of([&] { config_of(json); }).find(message), std::string::npos) << json << ": " << error_of([&] { config_of(json); });
}

}  // namespace
}  // namespace vlmforge::test
