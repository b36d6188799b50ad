#pragma once
// Matrix products with group-quantized weights in kernels/quant_format.h's layout:
//   out[t, o] = Σ_c x[t, perm ? perm[c] : c] · W[o, c] (+ bias[o]),  W[o, c] = (q − z) · s per group.
// Decode (few tokens) reads each weight byte once per call for all tokens: codes widen to fp32 in
// registers, become weights with one fused multiply-add, q·s + (−s·z), and feed up to 4 tokens
// per unpack. Prefill (many tokens) dequantizes a panel of weight rows to fp32 once and reuses it
// for every token (matmul.cc's blocked GEMM).
// SIMD via Highway with runtime dispatch.
//
// A call is two steps: prepare_quant_inputs() once (single thread) lays the activations out as
// the kernels read them, in caller-provided scratch; then quant_matmul_rows() over disjoint row
// ranges, from any number of threads, reads them.
#include <cstddef>

#include "kernels/quant_format.h"

namespace vlmforge::kernels {

struct QuantMatrix {
  const std::byte* data;  // the weight's first section; QuantLayout's offsets count from here
  size_t rows, cols;
  QuantLayout layout;
};

// Which kernel a product runs: Auto picks by token count (the measured crossover); the others
// exist to measure it.
enum class QuantPath { Auto, Decode, Gemm };

// The activations of one product as its kernels read them.
struct QuantInputs {
  const float* x = nullptr;  // Decode: [tokens, stride], permuted, zero padded to 32 columns and,
                             // for 4-bit codes, each 32 columns as their 16 even then 16 odd ones.
                             // Gemm: permuted (or the caller's x, unpermuted weights).
  size_t stride = 0;
  size_t tokens = 0;
  bool gemm = false;
};

// Floats of scratch prepare_quant_inputs() needs for `tokens` rows on `path`.
size_t quant_inputs_floats(const QuantMatrix& w, size_t tokens, QuantPath path = QuantPath::Auto);

// x is [tokens, w.cols] with row stride x_stride; scratch holds quant_inputs_floats() floats and
// must outlive the returned inputs' use.
QuantInputs prepare_quant_inputs(const float* x, size_t tokens, size_t x_stride, const QuantMatrix& w, float* scratch,
                                 QuantPath path = QuantPath::Auto);

// Computes output columns [row_begin, row_end) of out ([in.tokens, out_stride]).
void quant_matmul_rows(const QuantInputs& in, const QuantMatrix& w, const float* bias, float* out, size_t out_stride,
                       size_t row_begin, size_t row_end);

}  // namespace vlmforge::kernels
