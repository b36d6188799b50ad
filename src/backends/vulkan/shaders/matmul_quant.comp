#version 450
#include "common.glsl"
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
// matmul.comp for group-quantized weights in kernels/quant_format.h's layout: W[o, c] =
// (q − z)·s of c's group, codes 4 or 8 bits (4-bit: column 2j in the low nibble of byte j, so in a
// little-endian 32-bit word column c sits at bit 4·(c mod 8)), fp16 scales, uint8 zeros, and an
// optional input permutation (GPTQ desc_act). Lanes take whole 32-bit words of codes, which share
// one group (groups are multiples of 32 columns).
layout(local_size_x = 64) in;
layout(push_constant) uniform Push {
  uint64_t x, w, bias, out_rows;
  uint scales_offset, zeros_offset, perm_offset, has_perm;
  uint x_stride, out_stride, tokens, out_features, in_features, bits, group_size, row_code_bytes, groups, group_rows;
} p;

const uint kTokens = 8;

uint zero_at(uint index) {
  return (Uints(p.w + p.zeros_offset).v[index / 4] >> (8 * (index % 4))) & 0xffu;
}

void main() {
  const uint token_blocks = (p.tokens + kTokens - 1) / kTokens, g = flat_group();
  const uint row_blocks = (p.out_features + p.group_rows - 1) / p.group_rows;
  if (g >= row_blocks * token_blocks) return;
  const uint t0 = (g % token_blocks) * kTokens, n = min(kTokens, p.tokens - t0);
  const uint per_word = 32 / p.bits, mask = (1u << p.bits) - 1, words = (p.in_features + per_word - 1) / per_word;
  Floats x = Floats(p.x);
  Uints perm = Uints(p.w + p.perm_offset);
  for (uint r = gl_SubgroupID; r < p.group_rows; r += gl_NumSubgroups) {
    const uint o = (g / token_blocks) * p.group_rows + r;
    if (o >= p.out_features) break;
    float acc[kTokens] = float[kTokens](0, 0, 0, 0, 0, 0, 0, 0);
    Uints codes = Uints(p.w + uint64_t(o) * p.row_code_bytes);
    for (uint word_index = gl_SubgroupInvocationID; word_index < words; word_index += gl_SubgroupSize) {
      const uint word = codes.v[word_index], first = word_index * per_word;
      const uint group = o * p.groups + first / p.group_size;
      const float scale = float(Halves(p.w + p.scales_offset).v[group]), zero = float(zero_at(group));
      for (uint k = 0; k < per_word && first + k < p.in_features; ++k) {
        const float w = (float((word >> (k * p.bits)) & mask) - zero) * scale;
        const uint c = p.has_perm != 0 ? perm.v[first + k] : first + k;
        for (uint j = 0; j < n; ++j) acc[j] += x.v[(t0 + j) * p.x_stride + c] * w;
      }
    }
    for (uint j = 0; j < n; ++j) {
      const float y = subgroupAdd(acc[j]);
      if (subgroupElect()) Floats(p.out_rows).v[(t0 + j) * p.out_stride + o] = y + (p.bias != 0 ? Floats(p.bias).v[o] : 0.0);
    }
  }
}
