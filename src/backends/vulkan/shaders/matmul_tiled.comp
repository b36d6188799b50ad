#version 450
#include "common.glsl"
// out[t, o] = Σ_i x[t, i] · W[o, i] (+ bias[o]) for many tokens (prefill): a workgroup computes a
// tile of 64 tokens × 64 output rows, staging 16-column slices of x and W in shared memory so each
// value read from device memory feeds 64 products; each thread accumulates 4 × 4 outputs.
layout(local_size_x = 16, local_size_y = 16) in;
layout(push_constant) uniform Push {
  uint64_t x, w, bias, out_rows;
  uint x_stride, out_stride, tokens, out_features, in_features, w_dtype;
} p;

const uint kTile = 64, kSlice = 16;
shared float xs[kTile][kSlice + 1];  // +1: no bank conflicts on the column reads
shared float ws[kTile][kSlice + 1];

void main() {
  const uint row_tiles = (p.out_features + kTile - 1) / kTile, g = flat_group();
  if (g >= row_tiles * ((p.tokens + kTile - 1) / kTile)) return;
  const uint o0 = (g % row_tiles) * kTile, t0 = (g / row_tiles) * kTile;
  const uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y, thread = ty * 16 + tx;
  float acc[4][4];
  for (uint i = 0; i < 4; ++i)
    for (uint j = 0; j < 4; ++j) acc[i][j] = 0;
  Floats x = Floats(p.x);
  for (uint k0 = 0; k0 < p.in_features; k0 += kSlice) {
    // 64 × 16 values of each operand, 4 per thread; zeros past the edges.
    for (uint e = thread; e < kTile * kSlice; e += 256) {
      const uint r = e / kSlice, c = e % kSlice, k = k0 + c;
      xs[r][c] = t0 + r < p.tokens && k < p.in_features ? x.v[(t0 + r) * p.x_stride + k] : 0.0;
      ws[r][c] = o0 + r < p.out_features && k < p.in_features
                     ? load_value(p.w, p.w_dtype, (o0 + r) * p.in_features + k) : 0.0;
    }
    barrier();
    for (uint c = 0; c < kSlice; ++c) {
      float a[4], b[4];
      for (uint i = 0; i < 4; ++i) a[i] = xs[ty * 4 + i][c];
      for (uint j = 0; j < 4; ++j) b[j] = ws[tx * 4 + j][c];
      for (uint i = 0; i < 4; ++i)
        for (uint j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    barrier();
  }
  Floats out_rows = Floats(p.out_rows);
  for (uint i = 0; i < 4; ++i) {
    const uint t = t0 + ty * 4 + i;
    if (t >= p.tokens) continue;
    for (uint j = 0; j < 4; ++j) {
      const uint o = o0 + tx * 4 + j;
      if (o < p.out_features) out_rows.v[t * p.out_stride + o] = acc[i][j] + (p.bias != 0 ? Floats(p.bias).v[o] : 0.0);
    }
  }
}
