#version 450
#extension GL_GOOGLE_include_directive : require
// rope_store: RoPE of Q (in place) and of K, and K and V converted to f16 into the cache at
// each token's position (push constants and layout: attention.glsl, RopeStorePush). The
// rotation is rope.comp's (the same expressions), the conversion kv_store.comp's; tokens whose
// position is outside [0, n_ctx) store nothing.
// Invocations: one per (token, word w of a head), w in [0, head_dim / 2): each takes its
// pair's angle once and applies it to every head of the token: Q pair w of each Q head rotated
// in place (read before written), then K word w (elements 2w and 2w+1) of each KV head rotated
// into the cache, and V word w stored. An invocation per head had computed the same angle for
// every Q and K head (twice per K word), the transcendental functions most of its time on a
// CPU device (docs/performance.md).
#include "common.glsl"
#include "attention.glsl"
#include "rope_angle.glsl"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { RopeStorePush p; };
layout(std430, set = 0, binding = 0) buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer P { int pos[]; };
layout(std430, set = 0, binding = 2) writeonly buffer KCache { uint k_cache[]; };
layout(std430, set = 0, binding = 3) writeonly buffer VCache { uint v_cache[]; };
#ifdef BIAS
// rope_store_bias: Q, K and V get their bias (qwen2) first: Q + bq rotated in place, K + bk
// rotated into the cache, V + bv stored; each sum is the float the separate add would have
// stored, so the bits are those of three adds then rope_store.
layout(std430, set = 0, binding = 4) readonly buffer BQ { float bq[]; };
layout(std430, set = 0, binding = 5) readonly buffer BK { float bk[]; };
layout(std430, set = 0, binding = 6) readonly buffer BV { float bv[]; };
#define Q_BIAS(i) bq[p.bq_off + (i)]
#define K_BIAS(i) bk[p.bk_off + (i)]
#define V_BIAS(i) bv[p.bv_off + (i)]
#endif

// cos and sin of pair i's angle at position `position`.
vec2 angle(uint i, int position) { return rope_angle(i, position, p.n_dims, p.freq_base, p.freq_scale); }

// The pair of element e (< n_dims) of a head: NEOX pairs e and e + n_dims / 2, normal RoPE 2i and 2i + 1.
uint pair_of(uint e) {
  const uint half_rot = p.n_dims / 2u;
  return p.neox != 0u ? (e < half_rot ? e : e - half_rot) : e / 2u;
}

// Element e of K head h (its bias added), the head starting at float b.
#ifdef BIAS
float k_elem(uint b, uint h, uint e) {
  precise float v = x[b + e] + K_BIAS(h * p.head_dim + e);
  return v;
}
#else
float k_elem(uint b, uint h, uint e) { return x[b + e]; }
#endif

// Element e of K head h rotated, the head starting at float b, cs the angle of e's pair (e < n_dims).
float rotated(uint b, uint h, uint e, vec2 cs) {
  if (e >= p.n_dims) return k_elem(b, h, e);
  const uint half_rot = p.n_dims / 2u;
  if (p.neox != 0u) {
    const uint i = e < half_rot ? e : e - half_rot;
    const float a = k_elem(b, h, i), c = k_elem(b, h, i + half_rot);
    return e < half_rot ? a * cs.x - c * cs.y : a * cs.y + c * cs.x;
  }
  const uint i = e / 2u;
  const float a = k_elem(b, h, 2u * i), c = k_elem(b, h, 2u * i + 1u);
  return (e & 1u) == 0u ? a * cs.x - c * cs.y : a * cs.y + c * cs.x;
}

void main() {
  const uint words = p.head_dim / 2u;
  const uint idx = gl_GlobalInvocationID.x;
  if (idx >= p.n_tokens * words) return;
  const uint w = idx % words;
  const uint t = idx / words;
  const int position = pos[p.pos_off + t];
  const uint half_rot = p.n_dims / 2u;
  const vec2 cs_w = angle(w, position);  // pair w's: Q's, and both of a normal K word's elements
  if (w < half_rot) {  // Q pair w of every Q head, in place (pairs past n_dims stay)
    const uint i0 = p.neox != 0u ? w : 2u * w;
    const uint i1 = p.neox != 0u ? w + half_rot : 2u * w + 1u;
    for (uint h = 0u; h < p.n_q_heads; ++h) {
      const uint b = p.q_off + t * p.q_stride + h * p.head_dim;
#ifdef BIAS
      precise float a = x[b + i0] + Q_BIAS(h * p.head_dim + i0);
      precise float c = x[b + i1] + Q_BIAS(h * p.head_dim + i1);
#else
      const float a = x[b + i0], c = x[b + i1];
#endif
      x[b + i0] = a * cs_w.x - c * cs_w.y;
      x[b + i1] = a * cs_w.y + c * cs_w.x;
    }
  }
#ifdef BIAS
  else {  // Q elements 2w and 2w + 1, past n_dims: not rotated, only biased
    for (uint h = 0u; h < p.n_q_heads; ++h) {
      const uint b = p.q_off + t * p.q_stride + h * p.head_dim;
      for (uint e = 2u * w; e < 2u * w + 2u; ++e) {
        precise float v = x[b + e] + Q_BIAS(h * p.head_dim + e);
        x[b + e] = v;
      }
    }
  }
#endif
  if (position < 0 || uint(position) >= p.n_ctx) return;
  // K word w's two elements: one pair (normal RoPE) or two (NEOX: 2w and 2w + 1 pair with
  // elements half a rotation away).
  const vec2 cs0 = p.neox != 0u && 2u * w < p.n_dims ? angle(pair_of(2u * w), position) : cs_w;
  const vec2 cs1 = p.neox != 0u && 2u * w + 1u < p.n_dims ? angle(pair_of(2u * w + 1u), position) : cs_w;
  for (uint h = 0u; h < p.n_heads; ++h) {
    const uint dst = (h * p.n_ctx + uint(position)) * words + w;
    const uint src = t * p.kv_stride + (p.head0 + h) * p.head_dim;
    const uint kb = p.k_off + src, vb = p.v_off + src;
    const uint hs = p.head0 + h;  // the source head: its bias
    k_cache[p.kc_off + dst] = packHalf2x16(vec2(rotated(kb, hs, 2u * w, cs0), rotated(kb, hs, 2u * w + 1u, cs1)));
#ifdef BIAS
    precise float v0 = x[vb + 2u * w] + V_BIAS(hs * p.head_dim + 2u * w);
    precise float v1 = x[vb + 2u * w + 1u] + V_BIAS(hs * p.head_dim + 2u * w + 1u);
    v_cache[p.vc_off + dst] = packHalf2x16(vec2(v0, v1));
#else
    v_cache[p.vc_off + dst] = packHalf2x16(vec2(x[vb + 2u * w], x[vb + 2u * w + 1u]));
#endif
  }
}
