// rms_norm: y[r][i] = x[r][i] / sqrt(mean_i(x[r][i]^2) + eps) * (weight ? weight[i] : 1).
// One workgroup per row; the sum of squares is a workgroup reduction (subgroup variant:
// subgroupAdd). y may alias x (each invocation reads its elements before writing them).
// add_rms_norm (ADD_SUM): first x[r][i] += s[r][i], written back to x, then the same norm of
// the new x into y (which must not overlap x or s): the residual's update and the next block's
// norm in one pass, with the bits of add then rms_norm (each invocation re-reads only the
// elements it wrote, so no barrier is needed between the two passes).
// rms_norm2 (TWO_WEIGHTS): rows before w2_row take weight W, the rest weight W2 (binding 3):
// a layer's QK-norm, Q heads then K heads, in one dispatch with the bits of two rms_norm.
// rms_norm_add (ADD_OUT): y[r][i] += the normed x[r][i] (times weight[i]): a post-norm's output
// added into the residual, with the bits of rms_norm into a buffer and then add (the sum is
// `precise`: no multiply-add contraction); x and y must not overlap.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x_id = 0) in;  // before ops.glsl: its shared arrays are sized by it
#define OPS_REDUCE
#include "ops.glsl"

// The sum of squares runs over groups of 4 elements: lane l takes groups l, l + WG, ...; each
// group adds ((e0^2 + e1^2) + e2^2) + e3^2 to the lane's sum (a row's last n % 4 elements go to
// lanes 0..2, one each), then the workgroup sums the lanes. VEC4 reads and writes each group
// as one vec4 (every offset, stride and n a multiple of 4; engine/ops/ops.cpp picks it): the
// same arithmetic in the same order, so the same bits, with a quarter of the loads. On lavapipe a
// storage load whose address differs per lane is a loop over the lanes, and VEC4 halves the
// kernel's time (docs/performance.md, tenth round).
#ifdef VEC4
#define ELEM vec4
#else
#define ELEM float
#endif

#ifdef ADD_SUM
layout(push_constant) uniform Push { AddRmsNormPush p; };
layout(std430, set = 0, binding = 0) buffer X { ELEM x[]; };
layout(std430, set = 0, binding = 3) readonly buffer S { ELEM s[]; };
#elif defined(TWO_WEIGHTS)
layout(push_constant) uniform Push { RmsNorm2Push p; };
layout(std430, set = 0, binding = 0) readonly buffer X { ELEM x[]; };
layout(std430, set = 0, binding = 3) readonly buffer W2 { ELEM w2[]; };
#else
layout(push_constant) uniform Push { RmsNormPush p; };
layout(std430, set = 0, binding = 0) readonly buffer X { ELEM x[]; };
#endif
layout(std430, set = 0, binding = 1) readonly buffer W { ELEM w[]; };
#ifdef ADD_OUT
layout(std430, set = 0, binding = 2) buffer Y { ELEM y[]; };
// The normed value v into y's element i: stored, or (ADD_OUT) added to it.
#define Y_PUT(i, v)                   \
  {                                   \
    precise ELEM sum_ = y[i] + (v);   \
    y[i] = sum_;                      \
  }
#else
layout(std430, set = 0, binding = 2) writeonly buffer Y { ELEM y[]; };
#define Y_PUT(i, v) y[i] = (v)
#endif

// The weight's element (VEC4: group) at index i of binding W, i_row its index in the row.
// TWO_WEIGHTS (rms_norm2): rows from w2_row on take W2's, from w2_off (same units) on instead.
#ifdef TWO_WEIGHTS
#ifdef VEC4
#define WEIGHT(i, i_row) (row >= p.w2_row ? w2[p.w2_off / 4u + (i_row)] : w[i])
#else
#define WEIGHT(i, i_row) (row >= p.w2_row ? w2[p.w2_off + (i_row)] : w[i])
#endif
#else
#define WEIGHT(i, i_row) w[i]
#endif

float sq4(vec4 v) { return ((v.x * v.x + v.y * v.y) + v.z * v.z) + v.w * v.w; }

#ifdef VEC4
// Group g of the row whose first element is e0 (a multiple of 4).
vec4 x4(uint e0, uint g) { return x[e0 / 4u + g]; }
#ifdef ADD_SUM
vec4 s4(uint e0, uint g) { return s[e0 / 4u + g]; }
void x4_store(uint e0, uint g, vec4 v) { x[e0 / 4u + g] = v; }
#endif
#else
vec4 x4(uint e0, uint g) {
  const uint e = e0 + 4u * g;
  return vec4(x[e], x[e + 1u], x[e + 2u], x[e + 3u]);
}
#ifdef ADD_SUM
vec4 s4(uint e0, uint g) {
  const uint e = e0 + 4u * g;
  return vec4(s[e], s[e + 1u], s[e + 2u], s[e + 3u]);
}
void x4_store(uint e0, uint g, vec4 v) {
  const uint e = e0 + 4u * g;
  x[e] = v.x;
  x[e + 1u] = v.y;
  x[e + 2u] = v.z;
  x[e + 3u] = v.w;
}
#endif
#endif

void main() {
  const uint row = ch_group_index();
  if (row >= p.rows) return;  // uniform per workgroup
  const uint lid = gl_LocalInvocationID.x;
  const uint WG = gl_WorkGroupSize.x;
  const uint xb = p.x_off + row * p.x_stride;
  const uint yb = p.y_off + row * p.y_stride;
  const uint groups = p.n / 4u;
  float ss = 0.0;
#ifdef ADD_SUM
  const uint sb = p.s_off + row * p.s_stride;
  for (uint g = lid; g < groups; g += WG) {
    const vec4 v = x4(xb, g) + s4(sb, g);
    x4_store(xb, g, v);
    ss += sq4(v);
  }
#else
  for (uint g = lid; g < groups; g += WG) ss += sq4(x4(xb, g));
#endif
#ifndef VEC4
  if (lid < p.n - 4u * groups) {  // the row's last n % 4 elements
    const uint e = 4u * groups + lid;
#ifdef ADD_SUM
    const float v = x[xb + e] + s[sb + e];
    x[xb + e] = v;
#else
    const float v = x[xb + e];
#endif
    ss += v * v;
  }
#endif
  ss = ch_wg_sum(ss);
  const float inv = 1.0 / sqrt(ss / float(p.n) + p.eps);
#ifdef VEC4
  for (uint g = lid; g < groups; g += WG) {
    vec4 v = x[xb / 4u + g] * inv;
    if (p.has_weight != 0) v *= WEIGHT(p.w_off / 4u + g, g);
    Y_PUT(yb / 4u + g, v);
  }
#else
  // The same lanes as above for the same elements: each re-reads only what it wrote.
  for (uint g = lid; g < groups; g += WG) {
    [[unroll]] for (uint c = 0u; c < 4u; ++c) {
      const uint e = 4u * g + c;
      float v = x[xb + e] * inv;
      if (p.has_weight != 0) v *= WEIGHT(p.w_off + e, e);
      Y_PUT(yb + e, v);
    }
  }
  if (lid < p.n - 4u * groups) {
    const uint e = 4u * groups + lid;
    float v = x[xb + e] * inv;
    if (p.has_weight != 0) v *= WEIGHT(p.w_off + e, e);
    Y_PUT(yb + e, v);
  }
#endif
}
