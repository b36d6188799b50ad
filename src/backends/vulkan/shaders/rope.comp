#version 450
#include "common.glsl"
// Rotary embedding ("rotate half") of one head of one row per workgroup: the first q_heads
// workgroups of a row rotate q's heads, the next k_heads k's.
layout(local_size_x = 64) in;
layout(push_constant) uniform Push {
  uint64_t q, k, cos_rows, sin_rows;
  uint q_stride, k_stride, cos_stride, sin_stride, q_heads, k_heads, head_dim, rows;
} p;

void main() {
  const uint g = flat_group(), heads = p.q_heads + p.k_heads;
  if (g >= p.rows * heads) return;
  const uint r = g / heads, h = g % heads, half_dim = p.head_dim / 2;
  const uint64_t head = h < p.q_heads ? p.q + 4 * (uint64_t(r) * p.q_stride + h * p.head_dim)
                                      : p.k + 4 * (uint64_t(r) * p.k_stride + (h - p.q_heads) * p.head_dim);
  Floats v = Floats(head);
  for (uint i = gl_LocalInvocationID.x; i < half_dim; i += 64) {
    const float c = Floats(p.cos_rows).v[r * p.cos_stride + i], s = Floats(p.sin_rows).v[r * p.sin_stride + i];
    const float x1 = v.v[i], x2 = v.v[i + half_dim];
    v.v[i] = x1 * c - x2 * s;
    v.v[i + half_dim] = x2 * c + x1 * s;
  }
}
