#version 450
#extension GL_GOOGLE_include_directive : require
// argmax: one pass of a two-pass reduction. Workgroup g scans inputs [g * chunk, (g+1) * chunk)
// (floats, or (index, value) pairs from an earlier pass) with a strided loop and writes the
// best entry as the pair (index, value bits) at out_off + 2 g. Order: attention.glsl
// (larger value, then lower index; NaN never wins over a number).
#include "common.glsl"

layout(local_size_x_id = 0) in;
#define CH_SELECT_REDUCE 1
#include "attention.glsl"

layout(std430, set = 0, binding = 0) readonly buffer In { uint x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out { uint y[]; };

layout(push_constant) uniform Push { SelectPush p; };

void main() {
  const uint g = gl_WorkGroupID.x;
  const uint start = g * p.chunk;
  const uint end = min(p.n, start + p.chunk);
  uint key = 0u, idx = CH_NO_INDEX, val = CH_NAN_BITS;
  for (uint i = start + gl_LocalInvocationID.x; i < end; i += gl_WorkGroupSize.x) {
    uint ii, vv;
    if (p.pairs != 0u) {
      ii = x[p.in_off + 2u * i];
      vv = x[p.in_off + 2u * i + 1u];
    } else {
      ii = p.index_base + i;
      vv = x[p.in_off + i];
    }
    const uint kk = ch_select_key(vv);
    if (ch_select_better(kk, ii, key, idx)) {
      key = kk;
      idx = ii;
      val = vv;
    }
  }
  ch_select_reduce(key, idx, val, 0u);
  if (gl_LocalInvocationID.x == 0u) {
    y[p.out_off + 2u * g] = idx;
    y[p.out_off + 2u * g + 1u] = val;
  }
}
