#pragma once
// The one layout every quantized weight is held in on a device, whatever file it came from
// (AWQ, GPTQ v1/v2 with or without desc_act, or quantize-on-load q8_0/q4_0). Loaders repack
// into it once; kernels read only it (as vLLM repacks into one kernel layout per backend).
//
// A weight [rows = out_features, cols = in_features] of `bits` (4 or 8) unsigned codes q, in
// groups of `group_size` consecutive stored columns (a multiple of 32; the last group of a row
// may be short), each group g of row r with an fp16 scale s and an integer zero z:
//     W[r, c] = (q[r, c] − z[r, c / group_size]) · s[r, c / group_size]
// Sections, each starting at a multiple of 64 bytes from the weight's offset:
//   codes   [rows, row_code_bytes]  4-bit: column 2j in the low nibble of byte j, 2j+1 in the high
//                                    nibble; 8-bit: one byte per column. Rows padded to 64 bytes.
//   scales  [rows, groups]          fp16 (IEEE half) bits
//   zeros   [rows, groups]          uint8 (0..15 for 4-bit, 0..255 for 8-bit)
//   perm    [cols]                  uint32, only when has_perm: stored column j multiplies input
//                                    x[perm[j]] (GPTQ desc_act: columns sorted by g_idx so that
//                                    each group is contiguous).
// q8_0 is bits 8, group 32, zero 128; q4_0 is bits 4, group 32, zero 8 (llama.cpp's symmetric
// blocks, codes offset to unsigned).
#include <cstddef>
#include <cstdint>

namespace vlmforge::kernels {

struct QuantLayout {
  uint32_t bits = 0;  // 0: not quantized
  size_t group_size = 0;
  bool has_perm = false;

  bool quantized() const { return bits != 0; }
  size_t groups(size_t cols) const { return (cols + group_size - 1) / group_size; }
  static size_t align64(size_t n) { return (n + 63) / 64 * 64; }
  size_t row_code_bytes(size_t cols) const { return align64(bits == 4 ? (cols + 1) / 2 : cols); }
  size_t codes_offset() const { return 0; }
  size_t scales_offset(size_t rows, size_t cols) const { return align64(rows * row_code_bytes(cols)); }
  size_t zeros_offset(size_t rows, size_t cols) const {
    return scales_offset(rows, cols) + align64(rows * groups(cols) * sizeof(uint16_t));
  }
  size_t perm_offset(size_t rows, size_t cols) const {
    return zeros_offset(rows, cols) + align64(rows * groups(cols));
  }
  size_t bytes(size_t rows, size_t cols) const {
    return perm_offset(rows, cols) + (has_perm ? align64(cols * sizeof(uint32_t)) : 0);
  }
};

}  // namespace vlmforge::kernels
