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
// Each invocation computes ROWS rows (WG apart, so neighbouring lanes read neighbouring rows) and
// loads each 8-element group of x once for all of them: on a CPU device (lavapipe) x's loads are
// per invocation, so this divides their cost by ROWS.
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
#define ROWS 4

vec4 x4(uint i) { return vec4(xdata[i], xdata[i + 1u], xdata[i + 2u], xdata[i + 3u]); }


// This workgroup's tile: its expert, its slots' count and where their list starts (grouped).
uint tile_list = 0u;

// Slot c of the tile and the start of its x row. Computed from workgroup-uniform values rather than
// kept in per-invocation arrays, so that x's loads stay uniform (scalar loads on lavapipe).
uint slot_of(uint c) { return GROUPED ? route[tile_list + c] : gl_WorkGroupID.y; }
uint x_of(uint c) { return p.x_off + (slot_of(c) / p.x_div) * p.x_stride; }

void main() {
  // Rows past N compute row N-1 and are not written: no lane leaves early, so the control flow
  // stays uniform.
  const uint WG = gl_WorkGroupSize.x;
  const uint row0 = gl_WorkGroupID.x * WG * ROWS + gl_LocalInvocationID.x;
  uint e, n_cols;
  if (GROUPED) {
    e = p.e_base + gl_WorkGroupID.z;
    const uint count = route[p.groups_off + e];
    const uint j0 = gl_WorkGroupID.y * COLS;
    if (j0 >= count) return;  // the whole workgroup
    n_cols = min(uint(COLS), count - j0);
    tile_list = p.groups_off + p.n_expert + e * p.cap + j0;
  } else {
    e = route[p.ids_off + gl_WorkGroupID.y];
    if (e < p.e_base || e >= p.e_base + p.n_experts) return;  // another window's expert
    n_cols = 1u;
  }
  uint rb[ROWS];
  float acc[ROWS][COLS];
  [[unroll]] for (uint r = 0u; r < ROWS; ++r) {
    rb[r] = p.w_base + (e - p.e_base) * p.expert_bytes + min(row0 + r * WG, p.N - 1u) * p.row_bytes;
    [[unroll]] for (uint c = 0u; c < COLS; ++c) acc[r][c] = 0.0;
  }
  uint xo[COLS];
  [[unroll]] for (uint c = 0u; c < COLS; ++c) xo[c] = x_of(min(c, n_cols - 1u));
#if FMT_PLAIN
  const uint n8 = p.K / 8u;
  for (uint i = 0u; i < n8; ++i) {
    [[unroll]] for (uint c = 0u; c < COLS; ++c) {
      if (c < n_cols) {
        const vec4 x0 = x4(xo[c] + 8u * i), x1 = x4(xo[c] + 8u * i + 4u);
        [[unroll]] for (uint r = 0u; r < ROWS; ++r)
          acc[r][c] += dot(dq_vec4(rb[r], 8u * i), x0) + dot(dq_vec4(rb[r], 8u * i + 4u), x1);
      }
    }
  }
  for (uint k = 8u * n8; k < p.K; ++k) {
    [[unroll]] for (uint c = 0u; c < COLS; ++c) {
      if (c < n_cols) {
        const float xs = xdata[xo[c] + k];
        [[unroll]] for (uint r = 0u; r < ROWS; ++r) acc[r][c] += dq_elem(rb[r], k) * xs;
      }
    }
  }
#else
  const uint ngroups = (p.K / QK) * DQ_GROUPS;
  for (uint i = 0u; i < ngroups; ++i) {
    const uint blk = i / DQ_GROUPS, g = i % DQ_GROUPS;
    const uint k = blk * QK + dq_group_elem(g);
    vec4 lo[ROWS], hi[ROWS];
    [[unroll]] for (uint r = 0u; r < ROWS; ++r) dq_group(rb[r] + blk * BLOCK_BYTES, g, lo[r], hi[r]);
    [[unroll]] for (uint c = 0u; c < COLS; ++c) {
      if (c < n_cols) {
        const vec4 x0 = x4(xo[c] + k), x1 = x4(xo[c] + k + DQ_GROUP_HI);
        [[unroll]] for (uint r = 0u; r < ROWS; ++r) acc[r][c] += dot(lo[r], x0) + dot(hi[r], x1);
      }
    }
  }
#endif
  [[unroll]] for (uint r = 0u; r < ROWS; ++r) {
    const uint row = row0 + r * WG;
    if (row < p.N) {
      [[unroll]] for (uint c = 0u; c < COLS; ++c) {
        if (c < n_cols) ydata[p.y_off + slot_of(c) * p.y_stride + row] = acc[r][c];
      }
    }
  }
}
