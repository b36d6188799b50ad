#pragma once
// AWQ and GPTQ checkpoint tensors packed by hand from known integer codes, the way AutoAWQ's
// WQLinear_GEMM and AutoGPTQ / GPTQModel's QuantLinear pack them (for the model tests).
// Reference holds the codes; pack_awq / pack_gptq give the tensors a checkpoint stores.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "model/quant_repack.h"
#include "util/half.h"

namespace vlmforge::test {

// A quantized matrix [rows = out, cols = in] by its integer codes.
struct Reference {
  uint64_t rows, cols, group;
  int bits;
  std::vector<uint32_t> q;      // [rows, cols]
  std::vector<uint32_t> zero;   // [groups, rows]
  std::vector<float> scale;     // [groups, rows], exact in fp16
  std::vector<uint32_t> g_idx;  // [cols]: the group of each input
  uint64_t groups() const { return (cols + group - 1) / group; }
  float weight(uint64_t r, uint64_t c) const {
    const uint64_t g = g_idx[c];
    return (static_cast<float>(q[r * cols + c]) - static_cast<float>(zero[g * rows + r])) * scale[g * rows + r];
  }
};

// Checkpoint tensors packed from a Reference, owning their bytes.
struct Packed {
  std::vector<uint32_t> qweight, qzeros, g_idx;
  std::vector<uint16_t> scales;
  std::vector<uint64_t> qweight_shape, qzeros_shape, scales_shape;
  bool with_g_idx = false;

  QuantizedTensors tensors() const {
    QuantizedTensors t{{"m.qweight", DType::I32, qweight_shape, std::as_bytes(std::span(qweight))},
                       {"m.qzeros", DType::I32, qzeros_shape, std::as_bytes(std::span(qzeros))},
                       {"m.scales", DType::F16, scales_shape, std::as_bytes(std::span(scales))},
                       std::nullopt};
    if (with_g_idx) t.g_idx = StoredTensor{"m.g_idx", DType::I32, {g_idx.size()}, std::as_bytes(std::span(g_idx))};
    return t;
  }
};

inline void pack_scales(const Reference& ref, Packed& p) {
  for (float s : ref.scale) p.scales.push_back(f32_to_f16(s));
  p.scales_shape = {ref.groups(), ref.rows};
}

// AutoAWQ WQLinear_GEMM: [in, out/8] words, output column 8k + order[n] in nibble n.
inline Packed pack_awq(const Reference& ref) {
  constexpr uint32_t order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
  Packed p;
  for (uint64_t c = 0; c < ref.cols; ++c)
    for (uint64_t k = 0; k < ref.rows / 8; ++k) {
      uint32_t w = 0;
      for (uint32_t n = 0; n < 8; ++n) w |= ref.q[(8 * k + order[n]) * ref.cols + c] << (4 * n);
      p.qweight.push_back(w);
    }
  for (uint64_t g = 0; g < ref.groups(); ++g)
    for (uint64_t k = 0; k < ref.rows / 8; ++k) {
      uint32_t w = 0;
      for (uint32_t n = 0; n < 8; ++n) w |= ref.zero[g * ref.rows + 8 * k + order[n]] << (4 * n);
      p.qzeros.push_back(w);
    }
  p.qweight_shape = {ref.cols, ref.rows / 8};
  p.qzeros_shape = {ref.groups(), ref.rows / 8};
  pack_scales(ref, p);
  return p;
}

// AutoGPTQ / GPTQModel QuantLinear: inputs packed down the words of each output column; zeros
// packed along the outputs, stored minus one in v1.
inline Packed pack_gptq(const Reference& ref, bool v1) {
  const uint32_t per_word = 32 / static_cast<uint32_t>(ref.bits), mask = (1u << ref.bits) - 1;
  Packed p;
  for (uint64_t k = 0; k < ref.cols / per_word; ++k)
    for (uint64_t r = 0; r < ref.rows; ++r) {
      uint32_t w = 0;
      for (uint32_t n = 0; n < per_word; ++n) w |= ref.q[r * ref.cols + k * per_word + n] << (ref.bits * n);
      p.qweight.push_back(w);
    }
  for (uint64_t g = 0; g < ref.groups(); ++g)
    for (uint64_t k = 0; k < ref.rows / per_word; ++k) {
      uint32_t w = 0;
      for (uint32_t n = 0; n < per_word; ++n)
        w |= ((ref.zero[g * ref.rows + k * per_word + n] - (v1 ? 1 : 0)) & mask) << (ref.bits * n);
      p.qzeros.push_back(w);
    }
  p.qweight_shape = {ref.cols / per_word, ref.rows};
  p.qzeros_shape = {ref.groups(), ref.rows / per_word};
  pack_scales(ref, p);
  p.g_idx = ref.g_idx;
  p.with_g_idx = true;
  return p;
}

}  // namespace vlmforge::test
