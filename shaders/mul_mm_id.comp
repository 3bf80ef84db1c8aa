#version 450
#extension GL_GOOGLE_include_directive : require
// mul_mm_id_<fmt> — expert-indexed products of a mixture of experts (moe.glsl, MulMatIdPush):
// Y[s][r] = sum_c W_e[r][c] * X[s / x_div][c], e being the expert of slot s, read here from
// the routing buffers the device wrote (moe_route, moe_group): the host never learns it.
// W is a stack of experts in GGUF block layout (quant.glsl, format by -DFMT_<TYPE>=1), expert
// e's N rows at byte w_base + (e - e_base) * expert_bytes.
// One invocation per row of W_e; it dequantises each 8-element group of its row once and uses
// it for every slot of its tile (up to COLS), so a batch's tokens that chose the same expert
// share the weight reads: one product per expert over its tokens.
//   slot mode (decode): workgroup (row block, slot); a tile of one slot, e = ids[slot];
//   grouped mode (prefill): workgroup (row block, tile of e's slot list, e - e_base).
// Each slot's sum runs over c in the same order in both modes, so decode and prefill agree.
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const bool GROUPED = false;

layout(set = 0, binding = 0, std430) readonly buffer Wb { uint wdata[]; };
layout(set = 0, binding = 1, std430) readonly buffer X { float xdata[]; };
layout(set = 0, binding = 2, std430) writeonly buffer Y { float ydata[]; };
layout(set = 0, binding = 3, std430) readonly buffer R { uint route[]; };  // ids (slot mode) or groups

#include "moe.glsl"
layout(push_constant) uniform Push { MulMatIdPush p; };

#define QBUF wdata
#include "quant.glsl"

#define COLS 8

vec4 x4(uint i) { return vec4(xdata[i], xdata[i + 1u], xdata[i + 2u], xdata[i + 3u]); }

void main() {
  const uint row = gl_WorkGroupID.x * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (row >= p.N) return;
  uint e, n_cols;
  uint slot[COLS];
  if (GROUPED) {
    e = p.e_base + gl_WorkGroupID.z;
    const uint count = route[p.groups_off + e];
    const uint j0 = gl_WorkGroupID.y * COLS;
    if (j0 >= count) return;
    n_cols = min(uint(COLS), count - j0);
    const uint list = p.groups_off + p.n_expert + e * p.cap + j0;
    [[unroll]] for (uint c = 0u; c < COLS; ++c) slot[c] = route[list + min(c, n_cols - 1u)];
  } else {
    const uint s = gl_WorkGroupID.y;
    e = route[p.ids_off + s];
    if (e < p.e_base || e >= p.e_base + p.n_experts) return;  // another window's expert
    n_cols = 1u;
    [[unroll]] for (uint c = 0u; c < COLS; ++c) slot[c] = s;
  }
  const uint rb = p.w_base + (e - p.e_base) * p.expert_bytes + row * p.row_bytes;
  uint xo[COLS];
  float acc[COLS];
  [[unroll]] for (uint c = 0u; c < COLS; ++c) {
    xo[c] = p.x_off + (slot[c] / p.x_div) * p.x_stride;
    acc[c] = 0.0;
  }
#if FMT_PLAIN
  const uint n8 = p.K / 8u;
  for (uint i = 0u; i < n8; ++i) {
    const vec4 lo = dq_vec4(rb, 8u * i), hi = dq_vec4(rb, 8u * i + 4u);
    [[unroll]] for (uint c = 0u; c < COLS; ++c) {
      if (c < n_cols) acc[c] += dot(lo, x4(xo[c] + 8u * i)) + dot(hi, x4(xo[c] + 8u * i + 4u));
    }
  }
  for (uint k = 8u * n8; k < p.K; ++k) {
    const float w = dq_elem(rb, k);
    [[unroll]] for (uint c = 0u; c < COLS; ++c) {
      if (c < n_cols) acc[c] += w * xdata[xo[c] + k];
    }
  }
#else
  const uint ngroups = (p.K / QK) * DQ_GROUPS;
  for (uint i = 0u; i < ngroups; ++i) {
    const uint blk = i / DQ_GROUPS, g = i % DQ_GROUPS;
    const uint k = blk * QK + dq_group_elem(g);
    vec4 lo, hi;
    dq_group(rb + blk * BLOCK_BYTES, g, lo, hi);
    [[unroll]] for (uint c = 0u; c < COLS; ++c) {
      if (c < n_cols) acc[c] += dot(lo, x4(xo[c] + k)) + dot(hi, x4(xo[c] + k + DQ_GROUP_HI));
    }
  }
#endif
  [[unroll]] for (uint c = 0u; c < COLS; ++c) {
    if (c < n_cols) ydata[p.y_off + slot[c] * p.y_stride + row] = acc[c];
  }
}
