#pragma once
// Host quantizers: rows of a float weight written into kernels/quant_format.h's layout.
//   q8_0 / q4_0: llama.cpp's reference quantizers (quantize_row_q8_0_ref / _q4_0_ref): symmetric
//     blocks of 32 with an fp16 scale, codes offset to unsigned (zero 128 / 8).
//   round-to-nearest: AutoGPTQ's min-max quantizer without GPTQ's error feedback (the "RTN"
//     baseline AWQ and GPTQ start from), per group of group_size columns, asymmetric (a zero per
//     group) or symmetric (zero 2^(bits−1)).
#include <cstddef>
#include <cstdint>

#include "io/dtype.h"
#include "kernels/quant_format.h"

namespace vlmforge::kernels {

enum class QuantMethod { Q8_0, Q4_0, RoundToNearest };

struct QuantScheme {
  QuantMethod method = QuantMethod::Q8_0;
  uint32_t bits = 8;
  size_t group_size = 32;
  bool symmetric = true;

  static QuantScheme q8_0() { return {QuantMethod::Q8_0, 8, 32, true}; }
  static QuantScheme q4_0() { return {QuantMethod::Q4_0, 4, 32, true}; }
  // bits 4 or 8, group_size a positive multiple of 32 (checked by layout()).
  static QuantScheme round_to_nearest(uint32_t bits, size_t group_size, bool symmetric) {
    return {QuantMethod::RoundToNearest, bits, group_size, symmetric};
  }
  // The device layout of weights quantized this way; throws Error for an unsupported scheme.
  QuantLayout layout() const;
};

// Quantizes W [rows, cols] (fp32, row-major) into dst, which holds scheme.layout().bytes(rows, cols)
// bytes; padding is zeroed.
void quantize_rows(const float* w, size_t rows, size_t cols, const QuantScheme& scheme, std::byte* dst);
// The same from stored BF16 / F16 / F32 values (converted one row at a time).
void quantize_rows(DType dtype, const std::byte* w, size_t rows, size_t cols, const QuantScheme& scheme,
                   std::byte* dst);

}  // namespace vlmforge::kernels
