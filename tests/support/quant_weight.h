#pragma once
// A group-quantized test weight: random values quantized by kernels/quantize.h, optionally with a
// random input permutation (GPTQ desc_act), and decoded back from its bytes here, straight from
// kernels/quant_format.h's definition, for float64 references. Header-only: only the test binaries
// that link the kernels include it.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/quantize.h"
#include "util/half.h"

namespace vlmforge::test {

// W[r, c] = (q − z)·s of a weight in `layout` ([rows, cols], stored column order), decoded from
// its bytes by kernels/quant_format.h's definition; `folded`, when given, receives |s|·(q + z).
inline std::vector<double> dequantize(const kernels::QuantLayout& layout, size_t rows, size_t cols,
                                      const std::vector<std::byte>& bytes, std::vector<double>* folded = nullptr) {
  std::vector<double> values;
  const size_t groups = layout.groups(cols);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) {
      const auto byte = unsigned(bytes[r * layout.row_code_bytes(cols) + (layout.bits == 4 ? c / 2 : c)]);
      const unsigned q = layout.bits == 8 ? byte : (c % 2 ? byte >> 4 : byte & 15);
      const size_t g = r * groups + c / layout.group_size;
      uint16_t s;
      std::memcpy(&s, bytes.data() + layout.scales_offset(rows, cols) + 2 * g, 2);
      const unsigned z = unsigned(bytes[layout.zeros_offset(rows, cols) + g]);
      values.push_back((double(q) - z) * f16_to_f32(s));
      if (folded) folded->push_back(std::abs(double(f16_to_f32(s))) * (q + z));
    }
  return values;
}

struct QuantWeight {
  kernels::QuantLayout layout;
  size_t rows = 0, cols = 0;
  std::vector<std::byte> bytes;  // layout.bytes(rows, cols)
  std::vector<uint32_t> perm;    // empty: none
  std::vector<double> values;    // [rows, cols] (q − z)·s, in stored column order
  // [rows, cols] |s|·(q + z): bounds the magnitudes of q·s and s·z, which the kernels round
  // before they cancel to (q − z)·s (the decode kernel's q·s + (−s·z)), so a term's rounding
  // error scales with it·|x| rather than with |(q − z)·s·x|.
  std::vector<double> folded;

  QuantWeight(const kernels::QuantScheme& scheme, bool with_perm, size_t rows_, size_t cols_, std::mt19937& rng)
      : layout(scheme.layout()), rows(rows_), cols(cols_) {
    std::normal_distribution<float> dist(0, 1 / std::sqrt(float(cols)));
    std::vector<float> w(rows * cols);
    for (float& v : w) v = dist(rng);
    bytes.resize(layout.bytes(rows, cols));
    kernels::quantize_rows(w.data(), rows, cols, scheme, bytes.data());
    if (with_perm) {
      layout.has_perm = true;
      bytes.resize(layout.bytes(rows, cols));
      perm.resize(cols);
      std::iota(perm.begin(), perm.end(), 0u);
      std::shuffle(perm.begin(), perm.end(), rng);
      std::memcpy(bytes.data() + layout.perm_offset(rows, cols), perm.data(), cols * sizeof(uint32_t));
    }
    values = dequantize(layout, rows, cols, bytes, &folded);
  }
  // The input column stored column c multiplies.
  size_t input_of(size_t c) const { return perm.empty() ? c : perm[c]; }
};

}  // namespace vlmforge::test
