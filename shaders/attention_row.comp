#version 450
#extension GL_GOOGLE_include_directive : require
// attention_row: the same attention as attention.comp (push constants and bindings in
// attention.glsl), for CPU devices: one invocation per row (token, q head), rows of every kv
// head bound numbered one after another, no shared memory and no barriers. Each invocation
// walks its row's positions once with an online softmax (running maximum m, sum l, output acc
// rescaled by exp(m_old - m_new)), f32 throughout.
//
// Why: on llvmpipe a workgroup barrier switches between the workgroup's 8-lane batches and a
// storage load whose address differs per lane is a loop over the lanes; attention.comp's
// decode step (three barriers per block of positions, a tile per kv head: 3 of 64 lanes busy
// for SmolLM2's 3 kv heads) cost 0.2 ms per layer on lavapipe for 64 positions. Here a decode
// step's rows fill the 8-lane batches, K and V rows are read as 16-byte words (VEC4) and the
// positions of a decode row are the same in every lane, so the loop does not diverge. K and V
// are uniform texel buffers (attention_kv.glsl).
// engine/ops/attention.cpp picks it on CPU devices for one token (AttentionOptions::per_row).
#include "common.glsl"
#include "attention.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 2) const uint D = 64u;              // head_dim (even)
layout(constant_id = 3) const uint P0_FROM_BUFFER = 0u;  // 1: p0 is the uint at p0_word[p.p0_off]
layout(constant_id = 4) const bool VEC4 = false;         // K/V rows and offsets in whole 16-byte words

layout(std430, set = 0, binding = 0) readonly buffer QBuf { float q[]; };
layout(std430, set = 0, binding = 3) writeonly buffer OBuf { float o[]; };
layout(std430, set = 0, binding = 4) readonly buffer P0Word { uint p0_word[]; };

layout(push_constant) uniform Push { AttentionPush p; };

const uint DW = D / 2u;  // cache words per position
#define NEG_INF uintBitsToFloat(0xFF800000u)

#include "attention_kv.glsl"  // K, V (bindings 1, 2), k_words, v_words, window_start

void main() {
  const uint per_head = p.n_tokens * p.ratio;  // rows of one kv head
  const uint i = gl_GlobalInvocationID.x;
  if (i >= p.n_heads * per_head) return;
  const uint g = i / per_head;              // kv head, within this dispatch
  const uint row = i % per_head;
  const uint tok = row / p.ratio;
  const uint hq = (p.head0 + g) * p.ratio + row % p.ratio;
  const uint p0 = min(P0_FROM_BUFFER != 0u ? p0_word[p.p0_off] : p.p0, p.n_ctx);  // min: no wrap below
  const uint last = min(p0 + tok, p.n_ctx - 1u);
  const uint first = window_start(last);

  vec2 qv[DW];
  const uint qb = p.q_off + tok * p.q_stride + hq * D;
  [[unroll]] for (uint w = 0u; w < DW; ++w) qv[w] = vec2(q[qb + 2u * w], q[qb + 2u * w + 1u]) * p.scale;

  const uint kb0 = p.k_off + g * p.n_ctx * DW, vb0 = p.v_off + g * p.n_ctx * DW;
  float m = NEG_INF, l = 0.0;
  vec2 acc[DW];
  [[unroll]] for (uint w = 0u; w < DW; ++w) acc[w] = vec2(0.0);
  for (uint j = first; j <= last; ++j) {
    const uint kb = kb0 + j * DW, vb = vb0 + j * DW;
    float s = 0.0;
    [[unroll]] for (uint w = 0u; w < DW; w += 4u) {
      const uvec4 kk = k_words(kb, w);
      [[unroll]] for (uint c = 0u; c < 4u; ++c)
        if (w + c < DW) s += dot(qv[w + c], unpackHalf2x16(kk[c]));
    }
    const float m_new = max(m, s);
    const float alpha = exp(m - m_new);  // 0 at the first position (m = -inf)
    const float pr = exp(s - m_new);
    l = l * alpha + pr;
    m = m_new;
    [[unroll]] for (uint w = 0u; w < DW; w += 4u) {
      const uvec4 vv = v_words(vb, w);
      [[unroll]] for (uint c = 0u; c < 4u; ++c)
        if (w + c < DW) acc[w + c] = acc[w + c] * alpha + pr * unpackHalf2x16(vv[c]);
    }
  }
  const uint ob = p.o_off + tok * p.o_stride + hq * D;
  [[unroll]] for (uint w = 0u; w < DW; ++w) {
    const vec2 v = acc[w] / l;
    o[ob + 2u * w] = v.x;
    o[ob + 2u * w + 1u] = v.y;
  }
}
