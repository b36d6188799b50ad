#version 450
#include "common.glsl"
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
// out[t, o] = Σ_i x[t, i] · W[o, i] (+ bias[o]) for `group_rows` output rows and a block of up to
// 8 tokens per workgroup (the host picks group_rows so that a large matrix does not launch more
// workgroups than a device gains from: each launch has a cost, large on CPU implementations). Each subgroup takes whole rows: its lanes stride over i (consecutive lanes read
// consecutive weights) and sum with subgroupAdd, so no workgroup barrier is needed and each
// weight row is read once per block of tokens.
layout(local_size_x = 64) in;
layout(push_constant) uniform Push {
  uint64_t x, w, bias, out_rows;
  uint x_stride, out_stride, tokens, out_features, in_features, w_dtype, group_rows;
} p;

const uint kTokens = 8;

void main() {
  const uint token_blocks = (p.tokens + kTokens - 1) / kTokens, g = flat_group();
  const uint row_blocks = (p.out_features + p.group_rows - 1) / p.group_rows;
  if (g >= row_blocks * token_blocks) return;
  const uint t0 = (g % token_blocks) * kTokens, n = min(kTokens, p.tokens - t0);
  Floats x = Floats(p.x);
  for (uint r = gl_SubgroupID; r < p.group_rows; r += gl_NumSubgroups) {
    const uint o = (g / token_blocks) * p.group_rows + r;
    if (o >= p.out_features) break;
    float acc[kTokens] = float[kTokens](0, 0, 0, 0, 0, 0, 0, 0);
    const uint row = o * p.in_features;
    for (uint i = gl_SubgroupInvocationID; i < p.in_features; i += gl_SubgroupSize) {
      const float w = load_value(p.w, p.w_dtype, row + i);
      for (uint j = 0; j < n; ++j) acc[j] += x.v[(t0 + j) * p.x_stride + i] * w;
    }
    for (uint j = 0; j < n; ++j) {
      const float y = subgroupAdd(acc[j]);
      if (subgroupElect()) Floats(p.out_rows).v[(t0 + j) * p.out_stride + o] = y + (p.bias != 0 ? Floats(p.bias).v[o] : 0.0);
    }
  }
}
