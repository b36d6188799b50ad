#version 450
#include "common.glsl"
// Elementwise ops over [rows, cols] views:
//   0 add:        a += scale · b
//   1 silu_mul:   a = silu(a) · b
//   2 gelu:       a = GELU(a) with erf
//   3 scale_bias: a = a · factor[c] (when given) + bias[c] (when given)
layout(local_size_x = 256) in;
layout(push_constant) uniform Push {
  uint64_t a, b, factor, bias;
  uint a_stride, b_stride, cols, rows, op;
  float scale;
} p;

// erf to fp32 accuracy (Numerical Recipes' erfc Chebyshev fit, relative error < 1.2e-7).
float erf_approx(float x) {
  const float z = abs(x), t = 1.0 / (1.0 + 0.5 * z);
  const float r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
                  t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
                  t * (-0.82215223 + t * 0.17087277)))))))));
  return x >= 0 ? 1.0 - r : r - 1.0;
}

void main() {
  const uint r = group_row(), c = gl_GlobalInvocationID.x;
  if (r >= p.rows || c >= p.cols) return;
  Floats a = Floats(p.a);
  const uint i = r * p.a_stride + c;
  const float v = a.v[i];
  if (p.op == 0) {
    a.v[i] = v + p.scale * Floats(p.b).v[r * p.b_stride + c];
  } else if (p.op == 1) {
    a.v[i] = v / (1.0 + exp(-v)) * Floats(p.b).v[r * p.b_stride + c];
  } else if (p.op == 2) {
    a.v[i] = 0.5 * v * (1.0 + erf_approx(v * 0.70710678118654752));
  } else {
    float y = v;
    if (p.factor != 0) y *= Floats(p.factor).v[c];
    if (p.bias != 0) y += Floats(p.bias).v[c];
    a.v[i] = y;
  }
}
