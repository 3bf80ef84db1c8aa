#version 450
#extension GL_GOOGLE_include_directive : require
// kv_store: converts n_tokens rows of K and V (f32 [token][head][head_dim]) to f16 and writes
// them into one layer's cache at positions p0 .. p0 + n_tokens - 1 (layout in attention.glsl).
// One invocation per cache word (two halves); workgroup row y = 0 stores K, y = 1 stores V.
// p0 comes from the push constants or (P0_FROM_BUFFER) from binding 4; tokens whose position
// would reach n_ctx are dropped.
#include "common.glsl"
#include "attention.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint P0_FROM_BUFFER = 0u;  // 1: p0 is the uint at p0_word[p.p0_off]

layout(std430, set = 0, binding = 0) readonly buffer KSrc { float k_src[]; };
layout(std430, set = 0, binding = 1) readonly buffer VSrc { float v_src[]; };
layout(std430, set = 0, binding = 2) writeonly buffer KCache { uint k_cache[]; };
layout(std430, set = 0, binding = 3) writeonly buffer VCache { uint v_cache[]; };
layout(std430, set = 0, binding = 4) readonly buffer P0Word { uint p0_word[]; };

layout(push_constant) uniform Push { KvStorePush p; };

void main() {
  const uint words = p.head_dim / 2u;
  const uint idx = gl_GlobalInvocationID.x;
  if (idx >= p.n_tokens * p.n_heads * words) return;
  const uint w = idx % words;
  const uint h = (idx / words) % p.n_heads;
  const uint i = idx / (words * p.n_heads);
  const uint p0 = min(P0_FROM_BUFFER != 0u ? p0_word[p.p0_off] : p.p0, p.n_ctx);  // min: p0 + i cannot wrap
  if (p0 + i >= p.n_ctx) return;
  const uint src = i * p.src_stride + (p.head0 + h) * p.head_dim + 2u * w;
  const uint dst = (h * p.n_ctx + p0 + i) * words + w;
  if (gl_WorkGroupID.y == 0u) {
    const uint s = p.k_src_off + src;
    k_cache[p.k_off + dst] = packHalf2x16(vec2(k_src[s], k_src[s + 1u]));
  } else {
    const uint s = p.v_src_off + src;
    v_cache[p.v_off + dst] = packHalf2x16(vec2(v_src[s], v_src[s + 1u]));
  }
}
