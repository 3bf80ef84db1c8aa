// rope: rotary position embedding of x[token][head][head_dim] (strided), in or out of place.
// Pair i < n_dims/2 of token t is rotated by theta = pos[t] * freq_scale * base^(-2i/n_dims);
// the pair is (2i, 2i+1) in the normal (llama) style and (i, i + n_dims/2) in the NeoX
// style. Elements at and past n_dims are copied unchanged. One invocation per pair slot
// (head_dim/2 slots per head); each slot reads its two elements before writing them.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x_id = 0) in;  // before ops.glsl: its shared arrays are sized by it
#include "ops.glsl"
#include "rope_angle.glsl"

layout(push_constant) uniform Push { RopePush p; };
layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer P { int pos[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Y { float y[]; };

void main() {
  const uint half_dim = p.head_dim / 2;
  const uint slot = ch_group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (slot >= p.n_tokens * p.n_heads * half_dim) return;
  const uint i = slot % half_dim;
  const uint th = slot / half_dim;
  const uint h = th % p.n_heads;
  const uint t = th / p.n_heads;
  const uint xb = p.x_off + t * p.x_tok_stride + h * p.x_head_stride;
  const uint yb = p.y_off + t * p.y_tok_stride + h * p.y_head_stride;
  const uint half_rot = p.n_dims / 2;
  if (i >= half_rot) {  // past n_dims: elements 2i, 2i+1 pass through
    const float a = x[xb + 2 * i], b = x[xb + 2 * i + 1];
    y[yb + 2 * i] = a;
    y[yb + 2 * i + 1] = b;
    return;
  }
  const uint i0 = p.neox != 0 ? i : 2 * i;
  const uint i1 = p.neox != 0 ? i + half_rot : 2 * i + 1;
  const vec2 cs = rope_angle(i, pos[p.pos_off + t], p.n_dims, p.freq_base, p.freq_scale);
  const float c = cs.x, s = cs.y;
  const float a = x[xb + i0], b = x[xb + i1];
  y[yb + i0] = a * c - b * s;
  y[yb + i1] = a * s + b * c;
}
