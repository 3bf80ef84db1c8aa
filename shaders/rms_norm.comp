// rms_norm: y[r][i] = x[r][i] / sqrt(mean_i(x[r][i]^2) + eps) * (weight ? weight[i] : 1).
// One workgroup per row; the sum of squares is a workgroup reduction (subgroup variant:
// subgroupAdd). y may alias x (each invocation reads its elements before writing them).
// add_rms_norm (ADD_SUM): first x[r][i] += s[r][i], written back to x, then the same norm of
// the new x into y (which must not overlap x or s): the residual's update and the next block's
// norm in one pass, with the bits of add then rms_norm (each invocation re-reads only the
// elements it wrote).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x_id = 0) in;  // before ops.glsl: its shared arrays are sized by it
#define OPS_REDUCE
#include "ops.glsl"

#ifdef ADD_SUM
layout(push_constant) uniform Push { AddRmsNormPush p; };
layout(std430, set = 0, binding = 0) buffer X { float x[]; };
layout(std430, set = 0, binding = 3) readonly buffer S { float s[]; };
#else
layout(push_constant) uniform Push { RmsNormPush p; };
layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
#endif
layout(std430, set = 0, binding = 1) readonly buffer W { float w[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Y { float y[]; };

void main() {
  const uint row = ch_group_index();
  if (row >= p.rows) return;  // uniform per workgroup
  const uint lid = gl_LocalInvocationID.x;
  const uint xb = p.x_off + row * p.x_stride;
  const uint yb = p.y_off + row * p.y_stride;
  float ss = 0.0;
#ifdef ADD_SUM
  const uint sb = p.s_off + row * p.s_stride;
  for (uint i = lid; i < p.n; i += gl_WorkGroupSize.x) {
    const float v = x[xb + i] + s[sb + i];
    x[xb + i] = v;
    ss += v * v;
  }
#else
  for (uint i = lid; i < p.n; i += gl_WorkGroupSize.x) {
    const float v = x[xb + i];
    ss += v * v;
  }
#endif
  ss = ch_wg_sum(ss);
  const float inv = 1.0 / sqrt(ss / float(p.n) + p.eps);
  for (uint i = lid; i < p.n; i += gl_WorkGroupSize.x) {
    float v = x[xb + i] * inv;
    if (p.has_weight != 0) v *= w[p.w_off + i];
    y[yb + i] = v;
  }
}
