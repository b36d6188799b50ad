#version 450
#include "common.glsl"
// Softmax attention of one query head of one row per workgroup over `length` keys and values
// (row r's span: spans[4r] keys, spans[4r + 1] values at its first position, spans[4r + 2] the
// length, spans[4r + 3] the byte offset from the spans of its block table or 0), one pass in tiles
// of 64 positions with a running max and sum (no score buffer: any length fits). A paged cache
// keeps position p in row table[p / block_size] * block_size + p % block_size of its buffers.
// Query head h reads KV head h / (heads / kv_heads). head_dim ≤ 256.
layout(local_size_x = 64) in;
layout(push_constant) uniform Push {
  uint64_t q, out_rows, spans;
  uint q_stride, out_stride, heads, kv_heads, head_dim, kv_stride, dtype, rows, block_size;
  float scale;
} p;

shared float query[256];
shared float tile[64];
shared float reduce[64];

float reduce_max(float v, uint t) {
  reduce[t] = v;
  barrier();
  for (uint s = 32; s > 0; s >>= 1) {
    if (t < s) reduce[t] = max(reduce[t], reduce[t + s]);
    barrier();
  }
  const float r = reduce[0];
  barrier();
  return r;
}

float reduce_sum(float v, uint t) {
  reduce[t] = v;
  barrier();
  for (uint s = 32; s > 0; s >>= 1) {
    if (t < s) reduce[t] += reduce[t + s];
    barrier();
  }
  const float r = reduce[0];
  barrier();
  return r;
}

uint row_of(Uints table, bool paged, uint position) {
  return paged ? table.v[position / p.block_size] * p.block_size + position % p.block_size : position;
}

void main() {
  const uint g = flat_group(), t = gl_LocalInvocationID.x;
  if (g >= p.rows * p.heads) return;
  const uint r = g / p.heads, h = g % p.heads, kvh = h / (p.heads / p.kv_heads), hd = p.head_dim;
  Addresses spans = Addresses(p.spans);
  const uint64_t keys = spans.v[4 * r], values = spans.v[4 * r + 1];
  const uint length = uint(spans.v[4 * r + 2]);
  const uint64_t table_offset = spans.v[4 * r + 3];
  Uints table = Uints(p.spans + table_offset);
  Floats q = Floats(p.q + 4 * (uint64_t(r) * p.q_stride + h * hd));
  for (uint d = t; d < hd; d += 64) query[d] = q.v[d];
  barrier();

  float running_max = -1.0 / 0.0, running_sum = 0;
  float acc[4] = float[4](0, 0, 0, 0);  // dims t, t + 64, t + 128, t + 192
  for (uint first = 0; first < length; first += 64) {
    const uint pos = first + t, count = min(64u, length - first);
    float s = -1.0 / 0.0;
    if (pos < length) {
      const uint at = row_of(table, table_offset != 0, pos) * p.kv_stride + kvh * hd;
      float dot = 0;
      for (uint d = 0; d < hd; ++d) dot += query[d] * load_value(keys, p.dtype, at + d);
      s = dot * p.scale;
    }
    const float tile_max = reduce_max(s, t), next_max = max(running_max, tile_max);
    const float e = pos < length ? exp(s - next_max) : 0.0;
    tile[t] = e;
    const float correction = exp(running_max - next_max);  // 0 on the first tile
    running_sum = running_sum * correction + reduce_sum(e, t);
    for (uint j = 0; j < 4; ++j) acc[j] *= correction;
    for (uint i = 0; i < count; ++i) {
      const uint at = row_of(table, table_offset != 0, first + i) * p.kv_stride + kvh * hd;
      const float weight = tile[i];
      for (uint j = 0; j < 4; ++j) {
        const uint d = t + 64 * j;
        if (d < hd) acc[j] += weight * load_value(values, p.dtype, at + d);
      }
    }
    running_max = next_max;
    barrier();  // tile is rewritten by the next iteration
  }
  Floats out_row = Floats(p.out_rows + 4 * (uint64_t(r) * p.out_stride + h * hd));
  for (uint j = 0; j < 4; ++j) {
    const uint d = t + 64 * j;
    if (d < hd) out_row.v[d] = acc[j] / running_sum;
  }
}
