#version 450
#include "common.glsl"
// Gather (out[r] = in[index[r]]) or scatter (out[index[r]] = in[r]) of `cols` floats per row.
layout(local_size_x = 256) in;
layout(push_constant) uniform Push {
  uint64_t in_rows, out_rows, index;
  uint in_stride, out_stride, cols, rows, scatter;
} p;

void main() {
  const uint r = group_row(), c = gl_GlobalInvocationID.x;
  if (r >= p.rows || c >= p.cols) return;
  const uint i = Uints(p.index).v[r];
  const uint from = p.scatter != 0 ? r : i, to = p.scatter != 0 ? i : r;
  Floats(p.out_rows).v[to * p.out_stride + c] = Floats(p.in_rows).v[from * p.in_stride + c];
}
