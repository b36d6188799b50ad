#pragma once
// The matrix products of the inference engine: out[t, o] = Σ_i x[t, i] · W[o, i] (+ bias[o]),
// with activations x in fp32 and weights W [out, in] stored BF16, F16 or F32 (used in place from
// the memory map, converted in registers). Register-tiled over 4 weight rows × several tokens so
// each weight load feeds every token of a batch; SIMD via Highway with runtime dispatch.
#include <cstddef>

#include "io/dtype.h"

namespace vlmforge::kernels {

struct WeightMatrix {
  DType dtype;
  const std::byte* data;  // [rows, cols] row-major
  size_t rows;
  size_t cols;
};

// Computes output rows [row_begin, row_end) for all `tokens` inputs. x is [tokens, w.cols] with
// row stride x_stride; out is [tokens, out_stride] and receives columns [row_begin, row_end).
void matmul_rows(const float* x, size_t tokens, size_t x_stride, const WeightMatrix& w, const float* bias,
                 float* out, size_t out_stride, size_t row_begin, size_t row_end);

}  // namespace vlmforge::kernels
