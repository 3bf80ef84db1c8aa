#version 450
#extension GL_GOOGLE_include_directive : require
// attention: causal, grouped-query attention of n_tokens queries over one layer's f16 KV cache
// (layout in attention.glsl), flash style: one pass over the cache in blocks of WG positions
// with an online softmax, f32 accumulation, no score matrix in memory.
//
// Workgroup (x, y) takes R rows of kv head head0 + y, a row being (token i, q head of the
// group); rows are numbered i * ratio + (q head % ratio), so a decode step with ratio q heads
// per kv head is one tile and every K/V row read serves all of them. Per block of WG positions:
//   scores: invocation t takes position j0 + t and computes its R scores (K read once);
//   softmax: the block maximum per row (fallback: the row's owner invocation scans the scores
//            in shared memory; subgroup: subgroupMax per subgroup, then the subgroups' maxima),
//            then p = exp(s - m), and the row sums (owner scan / subgroupAdd);
//   output: invocation t owns word pairs (row, dims 2w, 2w+1) of the R x head_dim output and
//           adds sum_j p_j V[j] to its rescaled accumulator.
// Shared arrays written in a block are double-buffered by block parity, so each block needs
// three barriers (fallback) or two (subgroup).
//
// With a sliding window (p.window > 0) a row at position p attends to positions > p - window
// only: each tile starts at its first row's window and masks the positions before each row's.
//
// p0 comes from the push constants or, with P0_FROM_BUFFER, from binding 4 (a recorded
// dispatch then serves every decode step: its size depends on the rows, never on p0). Last
// positions are clamped to n_ctx - 1, so no p0 makes the kernel read past a head's cache.
#include "common.glsl"
#include "attention.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint R = 8u;   // rows per workgroup
layout(constant_id = 2) const uint D = 64u;  // head_dim (even)
layout(constant_id = 3) const uint P0_FROM_BUFFER = 0u;  // 1: p0 is the uint at p0_word[p.p0_off]

layout(std430, set = 0, binding = 0) readonly buffer QBuf { float q[]; };
layout(std430, set = 0, binding = 1) readonly buffer KBuf { uint kc[]; };
layout(std430, set = 0, binding = 2) readonly buffer VBuf { uint vc[]; };
layout(std430, set = 0, binding = 3) writeonly buffer OBuf { float o[]; };
layout(std430, set = 0, binding = 4) readonly buffer P0Word { uint p0_word[]; };

layout(push_constant) uniform Push { AttentionPush p; };

const uint WG = gl_WorkGroupSize.x;
const uint DW = D / 2u;                        // cache words per position
const uint NACC = (R * DW + WG - 1u) / WG;     // output word pairs per invocation
#define NEG_INF uintBitsToFloat(0xFF800000u)

shared vec2 qs[R * DW];          // scaled queries of the tile's rows (zero past the last row)
shared float ps[2u * R * WG];    // [parity][row][position]: scores, then probabilities
shared float row_alpha[2u * R];  // [parity][row]: rescale of the running output
shared float row_l[R];           // final row sums
#if CHORUS_SUBGROUP
shared float red_max[2u * R * WG];  // [parity][row][subgroup]
shared float red_sum[2u * R * WG];
#else
shared float row_m[2u * R];      // [parity][row]: running maximum after this block
#endif

// The first position a query at position `last` attends to.
uint window_start(uint last) { return p.window != 0u && last >= p.window ? last + 1u - p.window : 0u; }

void main() {
  const uint t = gl_LocalInvocationID.x;
  const uint g = gl_WorkGroupID.y;
  const uint row0 = gl_WorkGroupID.x * R;
  const uint nr = min(R, p.n_tokens * p.ratio - row0);
  const uint hq0 = (p.head0 + g) * p.ratio;  // q head of rows with (row % ratio) == 0
  const uint kbase = p.k_off + g * p.n_ctx * DW;
  const uint vbase = p.v_off + g * p.n_ctx * DW;
  const uint p0 = min(P0_FROM_BUFFER != 0u ? p0_word[p.p0_off] : p.p0, p.n_ctx);  // min: no wrap below

  for (uint e = t; e < R * DW; e += WG) {
    const uint r = e / DW;
    vec2 v = vec2(0.0);
    if (r < nr) {
      const uint row = row0 + r;
      const uint b = p.q_off + (row / p.ratio) * p.q_stride + (hq0 + row % p.ratio) * D + 2u * (e % DW);
      v = vec2(q[b], q[b + 1u]) * p.scale;
    }
    qs[e] = v;
  }
  // Last position each row attends to (rows past nr never match a position).
  uint last[R];
  [[unroll]] for (uint r = 0u; r < R; ++r) last[r] = min(p0 + (row0 + min(r, nr - 1u)) / p.ratio, p.n_ctx - 1u);
  const uint tile_len = last[R - 1u] + 1u;  // positions any row of the tile reads
  // First position each row attends to: 0, or with a sliding window the window's start. Rows
  // ascend in position, so row 0's is the tile's first, and no K/V row before it is read.
  uint first[R];
  [[unroll]] for (uint r = 0u; r < R; ++r) first[r] = window_start(last[r]);
  const uint tile_first = first[0];

  float m_own = NEG_INF;  // running max / sum of row t, kept by its owner invocation t < nr
  float l_own = 0.0;
#if CHORUS_SUBGROUP
  float m_run[R];         // running maxima of every row, kept by every invocation
  [[unroll]] for (uint r = 0u; r < R; ++r) m_run[r] = NEG_INF;
#endif
  vec2 acc[NACC];
  [[unroll]] for (uint k = 0u; k < NACC; ++k) acc[k] = vec2(0.0);
  barrier();  // qs complete

  uint par = 0u;
  for (uint j0 = tile_first; j0 < tile_len; j0 += WG, par ^= 1u) {
    const uint pb = par * R * WG;
    // Scores of position j for every row.
    const uint j = j0 + t;
    float s[R];
    [[unroll]] for (uint r = 0u; r < R; ++r) s[r] = 0.0;
    if (j < tile_len) {
      const uint kb = kbase + j * DW;
      for (uint w = 0u; w < DW; ++w) {
        const vec2 kk = unpackHalf2x16(kc[kb + w]);
        [[unroll]] for (uint r = 0u; r < R; ++r) s[r] += dot(qs[r * DW + w], kk);
      }
    }
    [[unroll]] for (uint r = 0u; r < R; ++r)
      if (j > last[r] || j < first[r] || r >= nr) s[r] = NEG_INF;

#if CHORUS_SUBGROUP
    [[unroll]] for (uint r = 0u; r < R; ++r) {
      const float mx = subgroupMax(s[r]);
      if (subgroupElect()) red_max[pb + r * WG + gl_SubgroupID] = mx;
    }
    barrier();  // subgroup maxima visible
    [[unroll]] for (uint r = 0u; r < R; ++r) {
      float mb = NEG_INF;
      for (uint sg = 0u; sg < gl_NumSubgroups; ++sg) mb = max(mb, red_max[pb + r * WG + sg]);
      const float m_new = max(m_run[r], mb);
      const float alpha = m_run[r] == m_new ? 1.0 : exp(m_run[r] - m_new);
      m_run[r] = m_new;
      const float pr = s[r] == NEG_INF ? 0.0 : exp(s[r] - m_new);
      ps[pb + r * WG + t] = pr;
      const float sm = subgroupAdd(pr);
      if (subgroupElect()) red_sum[pb + r * WG + gl_SubgroupID] = sm;
      if (t == r) row_alpha[par * R + r] = alpha;
    }
    barrier();  // probabilities, subgroup sums and alphas visible
    if (t < nr) {
      float sum = 0.0;
      for (uint sg = 0u; sg < gl_NumSubgroups; ++sg) sum += red_sum[pb + t * WG + sg];
      l_own = l_own * row_alpha[par * R + t] + sum;
    }
#else
    [[unroll]] for (uint r = 0u; r < R; ++r) ps[pb + r * WG + t] = s[r];
    barrier();  // scores visible to the row owners
    if (t < nr) {
      float mb = NEG_INF;
      for (uint jj = 0u; jj < WG; ++jj) mb = max(mb, ps[pb + t * WG + jj]);
      const float m_new = max(m_own, mb);
      row_alpha[par * R + t] = m_own == m_new ? 1.0 : exp(m_own - m_new);
      row_m[par * R + t] = m_new;
      m_own = m_new;
    }
    barrier();  // row maxima visible; the owners are done reading the scores
    [[unroll]] for (uint r = 0u; r < R; ++r)
      ps[pb + r * WG + t] = s[r] == NEG_INF ? 0.0 : exp(s[r] - row_m[par * R + r]);
    barrier();  // probabilities visible
    if (t < nr) {
      float sum = 0.0;
      for (uint jj = 0u; jj < WG; ++jj) sum += ps[pb + t * WG + jj];
      l_own = l_own * row_alpha[par * R + t] + sum;
    }
#endif
    // Output accumulation: only positions each row attends to are read.
    [[unroll]] for (uint k = 0u; k < NACC; ++k) {
      const uint e = t + k * WG;
      if (e < nr * DW) {
        const uint r = e / DW;
        const uint w = e % DW;
        const uint row_last = min(p0 + (row0 + r) / p.ratio, p.n_ctx - 1u);  // last[r], r < nr
        const uint cnt = row_last < j0 ? 0u : min(WG, row_last + 1u - j0);
        const uint row_first = window_start(row_last);                      // first[r]
        const uint lo = row_first > j0 ? row_first - j0 : 0u;
        vec2 sum = vec2(0.0);
        for (uint jj = lo; jj < cnt; ++jj)
          sum += ps[pb + r * WG + jj] * unpackHalf2x16(vc[vbase + (j0 + jj) * DW + w]);
        acc[k] = acc[k] * row_alpha[par * R + r] + sum;
      }
    }
  }
  if (t < nr) row_l[t] = l_own;
  barrier();  // row sums visible
  [[unroll]] for (uint k = 0u; k < NACC; ++k) {
    const uint e = t + k * WG;
    if (e < nr * DW) {
      const uint r = e / DW;
      const uint row = row0 + r;
      const uint b = p.o_off + (row / p.ratio) * p.o_stride + (hq0 + row % p.ratio) * D + 2u * (e % DW);
      const vec2 v = acc[k] / row_l[r];
      o[b] = v.x;
      o[b + 1u] = v.y;
    }
  }
}
