#version 450
#include "common.glsl"
// out[t, o] = Σ_i x[t, i] · W[o, i] (+ bias[o]) for a block of up to 8 tokens and one output row
// per workgroup: threads stride over i (consecutive threads read consecutive weights), so each
// weight row is read once per block of tokens.
layout(local_size_x = 128) in;
layout(push_constant) uniform Push {
  uint64_t x, w, bias, out_rows;
  uint x_stride, out_stride, tokens, out_features, in_features, w_dtype;
} p;

const uint kTokens = 8;
shared float partial[kTokens][128];

void main() {
  const uint blocks = (p.tokens + kTokens - 1) / kTokens, g = flat_group();
  if (g >= p.out_features * blocks) return;
  const uint o = g / blocks, t0 = (g % blocks) * kTokens, n = min(kTokens, p.tokens - t0), t = gl_LocalInvocationID.x;
  float acc[kTokens];
  for (uint j = 0; j < kTokens; ++j) acc[j] = 0;
  const uint64_t row = uint64_t(o) * p.in_features;
  Floats x = Floats(p.x);
  for (uint i = t; i < p.in_features; i += 128) {
    const float w = load_value(p.w, p.w_dtype, row + i);
    for (uint j = 0; j < n; ++j) acc[j] += x.v[(t0 + j) * p.x_stride + i] * w;
  }
  for (uint j = 0; j < kTokens; ++j) partial[j][t] = acc[j];
  barrier();
  for (uint s = 64; s > 0; s >>= 1) {
    if (t < s)
      for (uint j = 0; j < n; ++j) partial[j][t] += partial[j][t + s];
    barrier();
  }
  if (t < n) {
    float y = partial[t][0];
    if (p.bias != 0) y += Floats(p.bias).v[o];
    Floats(p.out_rows).v[(t0 + t) * p.out_stride + o] = y;
  }
}
