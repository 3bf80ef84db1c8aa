#version 450
#extension GL_GOOGLE_include_directive : require
// rope_store: RoPE of Q (in place) and of K, and K and V converted to f16 into the cache at
// each token's position (push constants and layout: attention.glsl, RopeStorePush). The
// rotation is rope.comp's (the same expressions), the conversion kv_store.comp's; tokens whose
// position is outside [0, n_ctx) store nothing.
// Invocations: one per (token, slot, pair) with slots [0, n_q_heads) the Q heads (one
// invocation per rotated pair, read before written), then n_heads K heads and n_heads V heads
// (one invocation per cache word: elements 2w and 2w+1).
#include "common.glsl"
#include "attention.glsl"
#include "rope_angle.glsl"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { RopeStorePush p; };
layout(std430, set = 0, binding = 0) buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer P { int pos[]; };
layout(std430, set = 0, binding = 2) writeonly buffer KCache { uint k_cache[]; };
layout(std430, set = 0, binding = 3) writeonly buffer VCache { uint v_cache[]; };

// cos and sin of pair i's angle at position `position`.
vec2 angle(uint i, int position) { return rope_angle(i, position, p.n_dims, p.freq_base, p.freq_scale); }

// Element e of the rotated head starting at float b.
float rotated(uint b, uint e, int position) {
  const uint half_rot = p.n_dims / 2u;
  if (e >= p.n_dims) return x[b + e];
  if (p.neox != 0u) {
    const uint i = e < half_rot ? e : e - half_rot;
    const vec2 cs = angle(i, position);
    const float a = x[b + i], c = x[b + i + half_rot];
    return e < half_rot ? a * cs.x - c * cs.y : a * cs.y + c * cs.x;
  }
  const uint i = e / 2u;
  const vec2 cs = angle(i, position);
  const float a = x[b + 2u * i], c = x[b + 2u * i + 1u];
  return (e & 1u) == 0u ? a * cs.x - c * cs.y : a * cs.y + c * cs.x;
}

void main() {
  const uint words = p.head_dim / 2u;
  const uint slots = p.n_q_heads + 2u * p.n_heads;
  const uint idx = gl_GlobalInvocationID.x;
  if (idx >= p.n_tokens * slots * words) return;
  const uint w = idx % words;
  const uint slot = (idx / words) % slots;
  const uint t = idx / (words * slots);
  const int position = pos[p.pos_off + t];
  if (slot < p.n_q_heads) {  // Q pair w, in place
    const uint b = p.q_off + t * p.q_stride + slot * p.head_dim;
    const uint half_rot = p.n_dims / 2u;
    if (w >= half_rot) return;  // past n_dims: unchanged
    const uint i0 = p.neox != 0u ? w : 2u * w;
    const uint i1 = p.neox != 0u ? w + half_rot : 2u * w + 1u;
    const vec2 cs = angle(w, position);
    const float a = x[b + i0], c = x[b + i1];
    x[b + i0] = a * cs.x - c * cs.y;
    x[b + i1] = a * cs.y + c * cs.x;
    return;
  }
  if (position < 0 || uint(position) >= p.n_ctx) return;
  const uint h = (slot - p.n_q_heads) % p.n_heads;
  const uint dst = (h * p.n_ctx + uint(position)) * words + w;
  const uint src = t * p.kv_stride + (p.head0 + h) * p.head_dim;
  if (slot < p.n_q_heads + p.n_heads) {  // K word w, rotated
    const uint b = p.k_off + src;
    k_cache[p.kc_off + dst] = packHalf2x16(vec2(rotated(b, 2u * w, position), rotated(b, 2u * w + 1u, position)));
  } else {
    const uint b = p.v_off + src;
    v_cache[p.vc_off + dst] = packHalf2x16(vec2(x[b + 2u * w], x[b + 2u * w + 1u]));
  }
}
