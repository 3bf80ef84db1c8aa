// softmax over each row of x (strided): v[j] = x[j] * scale + mask[t][j] (optional), with
// v[j] = -inf where causal and j > n_past + t (t = row % tokens); y = exp(v - max v) / sum.
// -inf entries give 0; a row whose entries are all -inf gives all zeros (not NaN). One
// workgroup per row: a max reduction, a sum reduction, then the write. y may alias x.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x_id = 0) in;  // before ops.glsl: its shared arrays are sized by it
#define OPS_REDUCE
#include "ops.glsl"

layout(push_constant) uniform Push { SoftmaxPush p; };
layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer M { float m[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Y { float y[]; };

#define NEG_INF uintBitsToFloat(0xFF800000u)

float value(uint xb, uint mb, uint t, uint j) {
  if (p.causal != 0 && j > p.n_past + t) return NEG_INF;
  float v = x[xb + j] * p.scale;
  if (p.has_mask != 0) v += m[mb + j];
  return v;
}

void main() {
  const uint row = ch_group_index();
  if (row >= p.rows) return;  // uniform per workgroup
  const uint lid = gl_LocalInvocationID.x;
  const uint t = row % p.tokens;
  const uint xb = p.x_off + row * p.x_stride;
  const uint yb = p.y_off + row * p.y_stride;
  const uint mb = p.m_off + t * p.m_stride;

  float mx = NEG_INF;
  for (uint j = lid; j < p.n; j += gl_WorkGroupSize.x) mx = max(mx, value(xb, mb, t, j));
  mx = ch_wg_max(mx);

  float sum = 0.0;
  if (mx != NEG_INF)
    for (uint j = lid; j < p.n; j += gl_WorkGroupSize.x) sum += exp(value(xb, mb, t, j) - mx);
  sum = ch_wg_sum(sum);

  const float inv = mx != NEG_INF ? 1.0 / sum : 0.0;
  for (uint j = lid; j < p.n; j += gl_WorkGroupSize.x)
    y[yb + j] = mx != NEG_INF ? exp(value(xb, mb, t, j) - mx) * inv : 0.0;
}
