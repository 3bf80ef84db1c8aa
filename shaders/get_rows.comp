// get_rows: y[i][:] = dequant(W[ids[i]][:]) for every weight format (FMT_<TYPE>, quant.glsl).
// W is bound as a window holding rows [row_begin, row_begin + n_rows); a dispatch writes
// only the outputs whose id falls in its window (the host runs one dispatch per window when
// W exceeds maxStorageBufferRange), so ids outside every window leave their rows untouched.
// One workgroup per id (2-D grid).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x_id = 0) in;  // before ops.glsl: its shared arrays are sized by it
#include "ops.glsl"

layout(push_constant) uniform Push { GetRowsPush p; };
layout(std430, set = 0, binding = 0) readonly buffer W { uint wdata[]; };
layout(std430, set = 0, binding = 1) readonly buffer I { uint ids[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Y { float y[]; };

#define QBUF wdata
#include "quant.glsl"

void main() {
  const uint i = ch_group_index();
  if (i >= p.n_ids) return;
  const uint id = ids[p.ids_off + i];
  if (id < p.row_begin || id - p.row_begin >= p.n_rows) return;
  const uint rb = p.w_off + (id - p.row_begin) * p.row_bytes;
  const uint yb = p.y_off + i * p.y_stride;
#if FMT_PLAIN
  for (uint e = gl_LocalInvocationID.x; e < p.n; e += gl_WorkGroupSize.x) y[yb + e] = dq_elem(rb, e);
#else
  // four elements per step: QK is a multiple of 4 and n a multiple of QK
  for (uint e = 4u * gl_LocalInvocationID.x; e < p.n; e += 4u * gl_WorkGroupSize.x) {
    const vec4 v = dq_vec4(rb + (e / QK) * BLOCK_BYTES, e % QK);
    y[yb + e] = v.x;
    y[yb + e + 1u] = v.y;
    y[yb + e + 2u] = v.z;
    y[yb + e + 3u] = v.w;
  }
#endif
}
