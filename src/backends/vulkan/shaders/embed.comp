#version 450
#include "common.glsl"
// out[r, c] = table[ids[r], c] as fp32.
layout(local_size_x = 256) in;
layout(push_constant) uniform Push {
  uint64_t table, ids, out_rows;
  uint dtype, cols, out_stride, rows;
} p;

void main() {
  const uint r = group_row(), c = gl_GlobalInvocationID.x;
  if (r >= p.rows || c >= p.cols) return;
  const uint id = Uints(p.ids).v[r];
  Floats(p.out_rows).v[r * p.out_stride + c] = load_value(p.table, p.dtype, id * p.cols + c);
}
