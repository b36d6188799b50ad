#pragma once
// The element-wise and reduction steps of a Qwen2 decoder layer, in fp32 (as transformers computes
// RMSNorm and softmax in fp32).
#include <cstddef>
#include <span>

namespace vlmforge::kernels {

// out = x / sqrt(mean(x²) + eps) · weight
void rms_norm(const float* x, const float* weight, float eps, float* out, size_t n);

// Rotary embedding in the "rotate half" layout of transformers' Qwen2: for i < d/2,
// (x_i, x_{i+d/2}) ← (x_i·cos − x_{i+d/2}·sin, x_{i+d/2}·cos + x_i·sin). cos/sin hold d/2 values.
void apply_rope(float* head, size_t head_dim, const float* cos, const float* sin);

// gate ← silu(gate) · up
void silu_mul(float* gate, const float* up, size_t n);

// In place softmax of x[0, n).
void softmax(float* x, size_t n);

float dot(const float* a, const float* b, size_t n);
// y += a·x
void axpy(float a, const float* x, float* y, size_t n);

}  // namespace vlmforge::kernels
