#pragma once
// The element-wise and reduction steps of a Qwen2 decoder layer, in fp32 (as transformers computes
// RMSNorm in fp32). SIMD via Highway with runtime dispatch.
#include <cstddef>

namespace vlmforge::kernels {

// out = x / sqrt(mean(x²) + eps) · weight
void rms_norm(const float* x, const float* weight, float eps, float* out, size_t n);

// Rotary embedding in the "rotate half" layout of transformers' Qwen2: for i < d/2,
// (x_i, x_{i+d/2}) ← (x_i·cos − x_{i+d/2}·sin, x_{i+d/2}·cos + x_i·sin). cos/sin hold d/2 values.
void apply_rope(float* head, size_t head_dim, const float* cos, const float* sin);

// gate ← silu(gate) · up
void silu_mul(float* gate, const float* up, size_t n);

// y += x
void add_in_place(float* y, const float* x, size_t n);

}  // namespace vlmforge::kernels
