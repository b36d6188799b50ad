#version 450
#include "common.glsl"
// Row r's keys and values (kv_dim floats each) converted to the cache dtype and written at the
// addresses slots[2r] (keys) and slots[2r + 1] (values): its sequence's cache at its position.
layout(local_size_x = 256) in;
layout(push_constant) uniform Push {
  uint64_t slots, keys, values;
  uint k_stride, v_stride, kv_dim, dtype, rows;
} p;

void main() {
  const uint r = group_row(), c = gl_GlobalInvocationID.x;
  if (r >= p.rows || c >= p.kv_dim) return;
  Addresses slots = Addresses(p.slots);
  store_value(slots.v[2 * r], p.dtype, c, Floats(p.keys).v[r * p.k_stride + c]);
  store_value(slots.v[2 * r + 1], p.dtype, c, Floats(p.values).v[r * p.v_stride + c]);
}
