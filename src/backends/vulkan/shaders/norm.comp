#version 450
#include "common.glsl"
// Per row: x += y (when y is given), then out = x / sqrt(mean(x²) + eps) · weight.
layout(local_size_x = 256) in;
layout(push_constant) uniform Push {
  uint64_t x, y, weight, out_rows;
  uint x_stride, y_stride, out_stride, cols, rows;
  float eps;
} p;

shared float partial[256];

void main() {
  const uint r = flat_group(), t = gl_LocalInvocationID.x;
  if (r >= p.rows) return;
  Floats x = Floats(p.x + 4 * uint64_t(r) * p.x_stride);
  float sum = 0;
  for (uint c = t; c < p.cols; c += 256) {
    float v = x.v[c];
    if (p.y != 0) {
      v += Floats(p.y).v[r * p.y_stride + c];
      x.v[c] = v;
    }
    sum += v * v;
  }
  partial[t] = sum;
  barrier();
  for (uint s = 128; s > 0; s >>= 1) {
    if (t < s) partial[t] += partial[t + s];
    barrier();
  }
  const float inv = inversesqrt(partial[0] / float(p.cols) + p.eps);
  Floats out_row = Floats(p.out_rows + 4 * uint64_t(r) * p.out_stride);
  for (uint c = t; c < p.cols; c += 256) out_row.v[c] = x.v[c] * inv * Floats(p.weight).v[c];
}
