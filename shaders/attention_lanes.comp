#version 450
#extension GL_GOOGLE_include_directive : require
// attention_lanes: the same attention as attention.comp (push constants and bindings in
// attention.glsl), for CPU devices and many rows (prefill): a workgroup is one subgroup, takes
// R rows (token, q head of the group) of kv head head0 + gl_WorkGroupID.y, and its lanes take
// different cache positions: lane t reads positions j0 + t, j0 + t + WG, ... once each and
// scores them against all R rows. Each lane keeps its own online softmax per row (running
// maximum m, sum l, output acc rescaled by exp(m_old - m_new)) over the positions it read; at
// the end the lanes' partial results are combined with subgroupMax/subgroupAdd
// (out = sum_t acc_t e^(m_t - M) / sum_t l_t e^(m_t - M), M the maximum over lanes). f32
// throughout; no shared memory, no barriers. The fallback variant (a CPU device without
// subgroup arithmetic) combines the lanes through shared memory after one barrier instead: the
// workgroup is then any size, and the lanes' partials are summed in the same way.
//
// Why: on llvmpipe a storage load whose address differs per lane (or that sits inside any loop)
// is a scalar load per lane. attention_row's lanes are rows that read the same K/V words, so a
// prefill paid a full gather per row and position; here every lane's load is a different
// position's word, each serves R rows, and the query rows are read once, before the loop.
// K and V are texel buffers (attention_kv.glsl): a texel fetch is a gather, not a loop.
// engine/ops/attention.cpp picks it on CPU devices for a prefill of at least 4096 (token,
// position) pairs.
#include "common.glsl"
#include "attention.glsl"

layout(local_size_x_id = 0) in;  // subgroup variant: the subgroup size (one subgroup); fallback: any
layout(constant_id = 1) const uint R = 2u;               // rows per workgroup
layout(constant_id = 2) const uint D = 64u;              // head_dim (even)
layout(constant_id = 3) const uint P0_FROM_BUFFER = 0u;  // 1: p0 is the uint at p0_word[p.p0_off]
layout(constant_id = 4) const bool VEC4 = false;         // K/V rows and offsets in whole 16-byte words

layout(std430, set = 0, binding = 0) readonly buffer QBuf { float q[]; };
layout(std430, set = 0, binding = 3) writeonly buffer OBuf { float o[]; };
layout(std430, set = 0, binding = 4) readonly buffer P0Word { uint p0_word[]; };

layout(push_constant) uniform Push { AttentionPush p; };

const uint WG = gl_WorkGroupSize.x;
const uint DW = D / 2u;  // cache words per position
#define NEG_INF uintBitsToFloat(0xFF800000u)
#if !CHORUS_SUBGROUP
shared float sh_m[R * WG], sh_l[R * WG];  // [row][lane]: each lane's running maximum and sum
shared vec2 sh_acc[R * DW * WG];           // [row word][lane]: each lane's output
#endif

#include "attention_kv.glsl"  // K, V (bindings 1, 2), k_words, v_words, window_start

void main() {
  const uint t = gl_LocalInvocationID.x;
  const uint g = gl_WorkGroupID.y;  // kv head, within this dispatch
  const uint row0 = gl_WorkGroupID.x * R;
  const uint nr = min(R, p.n_tokens * p.ratio - row0);  // >= 1: the dispatch has no empty tile
  const uint hq0 = (p.head0 + g) * p.ratio;            // q head of rows with (row % ratio) == 0
  const uint p0 = min(P0_FROM_BUFFER != 0u ? p0_word[p.p0_off] : p.p0, p.n_ctx);  // min: no wrap below

  // The tile's query rows (rows past nr repeat the last one and are never written), scaled.
  vec2 qv[R * DW];
  uint first[R], last[R];
  [[unroll]] for (uint r = 0u; r < R; ++r) {
    const uint row = row0 + min(r, nr - 1u);
    const uint qb = p.q_off + (row / p.ratio) * p.q_stride + (hq0 + row % p.ratio) * D;
    [[unroll]] for (uint w = 0u; w < DW; ++w) qv[r * DW + w] = vec2(q[qb + 2u * w], q[qb + 2u * w + 1u]) * p.scale;
    last[r] = min(p0 + row / p.ratio, p.n_ctx - 1u);
    first[r] = window_start(last[r]);
  }
  // Rows ascend in position: row 0's window starts first, the last row's position ends last.
  const uint tile_first = first[0], tile_last = last[R - 1u];

  const uint kb0 = p.k_off + g * p.n_ctx * DW, vb0 = p.v_off + g * p.n_ctx * DW;
  float m[R], l[R];
  vec2 acc[R * DW];
  [[unroll]] for (uint r = 0u; r < R; ++r) {
    m[r] = NEG_INF;
    l[r] = 0.0;
  }
  [[unroll]] for (uint e = 0u; e < R * DW; ++e) acc[e] = vec2(0.0);

  for (uint j0 = tile_first; j0 <= tile_last; j0 += WG) {
    const uint j = j0 + t;
    const uint jr = min(j, tile_last);  // lanes past the tile read its last position, masked below
    const uint kb = kb0 + jr * DW, vb = vb0 + jr * DW;
    float s[R];
    [[unroll]] for (uint r = 0u; r < R; ++r) s[r] = 0.0;
    [[unroll]] for (uint w = 0u; w < DW; w += 4u) {
      const uvec4 kk = k_words(kb, w);
      [[unroll]] for (uint c = 0u; c < 4u; ++c) {
        if (w + c < DW) {
          const vec2 kf = unpackHalf2x16(kk[c]);
          [[unroll]] for (uint r = 0u; r < R; ++r) s[r] += dot(qv[r * DW + w + c], kf);
        }
      }
    }
    float alpha[R], pr[R];
    [[unroll]] for (uint r = 0u; r < R; ++r) {
      const bool valid = j >= first[r] && j <= last[r];
      const float m_new = valid ? max(m[r], s[r]) : m[r];
      alpha[r] = m_new == m[r] ? 1.0 : exp(m[r] - m_new);  // m[r] = -inf, valid: 0
      pr[r] = valid ? exp(s[r] - m_new) : 0.0;
      l[r] = l[r] * alpha[r] + pr[r];
      m[r] = m_new;
    }
    [[unroll]] for (uint w = 0u; w < DW; w += 4u) {
      const uvec4 vv = v_words(vb, w);
      [[unroll]] for (uint c = 0u; c < 4u; ++c) {
        if (w + c < DW) {
          const vec2 vf = unpackHalf2x16(vv[c]);
          [[unroll]] for (uint r = 0u; r < R; ++r)
            acc[r * DW + w + c] = acc[r * DW + w + c] * alpha[r] + pr[r] * vf;
        }
      }
    }
  }

  // Combine the lanes: every row has at least one valid position (its own), so M is finite.
#if CHORUS_SUBGROUP
  [[unroll]] for (uint r = 0u; r < R; ++r) {
    const float mx = subgroupMax(m[r]);
    const float sc = m[r] == NEG_INF ? 0.0 : exp(m[r] - mx);
    const float inv = 1.0 / subgroupAdd(l[r] * sc);
    const uint row = row0 + r;
    const uint ob = p.o_off + (row / p.ratio) * p.o_stride + (hq0 + row % p.ratio) * D;
    [[unroll]] for (uint w = 0u; w < DW; ++w) {
      const vec2 v = subgroupAdd(acc[r * DW + w] * sc) * inv;
      if (r < nr && t == w % WG) {
        o[ob + 2u * w] = v.x;
        o[ob + 2u * w + 1u] = v.y;
      }
    }
  }
#else
  [[unroll]] for (uint r = 0u; r < R; ++r) {
    sh_m[r * WG + t] = m[r];
    sh_l[r * WG + t] = l[r];
  }
  [[unroll]] for (uint e = 0u; e < R * DW; ++e) sh_acc[e * WG + t] = acc[e];
  barrier();  // every lane's partials visible
  for (uint e = t; e < R * DW; e += WG) {  // output word pair e of row e / DW
    const uint r = e / DW;
    float mx = NEG_INF;
    for (uint u = 0u; u < WG; ++u) mx = max(mx, sh_m[r * WG + u]);
    float sum = 0.0;
    vec2 v = vec2(0.0);
    for (uint u = 0u; u < WG; ++u) {
      const float mu = sh_m[r * WG + u];
      const float sc = mu == NEG_INF ? 0.0 : exp(mu - mx);
      sum += sh_l[r * WG + u] * sc;
      v += sh_acc[e * WG + u] * sc;
    }
    if (r < nr) {
      const uint row = row0 + r;
      const uint ob = p.o_off + (row / p.ratio) * p.o_stride + (hq0 + row % p.ratio) * D + 2u * (e % DW);
      o[ob] = v.x / sum;
      o[ob + 1u] = v.y / sum;
    }
  }
#endif
}
