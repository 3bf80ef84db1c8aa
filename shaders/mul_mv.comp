#version 450
#extension GL_GOOGLE_include_directive : require
// mul_mv_<fmt> — dequantising matrix-vector product (decode): y[n] = sum_k W[n, k] * x[k].
// W is row-major in GGUF block layout (quant.glsl, format chosen by -DFMT_<TYPE>=1); x and y
// are f32. Each workgroup computes ROWS consecutive rows: its invocations stride over the
// row's 8-element groups (or float4s for plain formats), load x once per group for all ROWS
// rows, and reduce with one barrier (subgroupAdd, or a shared-memory sum in the fallback).
// Rows past N are computed from row N-1 (no divergence) and not written.
#include "common.glsl"

layout(set = 0, binding = 0, std430) readonly buffer W { uint wdata[]; };
#if CHORUS_FP16
layout(set = 0, binding = 0, std430) readonly buffer W16 { float16_t wdata16[]; };
#define QBUF16 wdata16
#endif
layout(set = 0, binding = 0, std430) readonly buffer W4 { uvec4 wdata4[]; };
layout(set = 0, binding = 1, std430) readonly buffer X { float xdata[]; };
layout(set = 0, binding = 1, std430) readonly buffer X4 { vec4 xdata4[]; };
layout(set = 0, binding = 2, std430) buffer Y { float ydata[]; };
layout(set = 0, binding = 3, std430) readonly buffer G { float gdata[]; };  // NORM's weight (else x again)
#define MV_KERNEL 1
#include "matvec.glsl"

#define QBUF wdata
#include "quant.glsl"

// x[e], normed when NORM (x * x_inv * g, as rms_norm.comp).
float x1(uint e) {
  const float v = xdata[p.x_base + e];
  return NORM ? v * x_inv * gdata[p.g_base + e] : v;
}
vec4 x4(uint e) {
  const uint i = p.x_base + e;
  const vec4 v = vec4(xdata[i], xdata[i + 1u], xdata[i + 2u], xdata[i + 3u]);
  if (!NORM) return v;
  const uint g = p.g_base + e;
  return v * x_inv * vec4(gdata[g], gdata[g + 1u], gdata[g + 2u], gdata[g + 3u]);
}


// --- whole-block dot products (row-per-invocation mode) ---------------------------------------
// On lavapipe every non-uniform load costs a loop over the lanes, so these read each block's
// bytes exactly once, as 32-bit words, and take x through uniform loads.

// A forward stream of 32-bit words starting at an even byte offset: one load per word.
struct WordStream {
  uint w;     // index of the next aligned word to load
  uint prev;  // the last aligned word loaded
  bool odd;   // the stream starts at 2 mod 4
};
WordStream ws_begin(uint b) {
  WordStream s;
  s.w = b >> 2;
  s.odd = (b & 2u) != 0u;
  s.prev = 0u;
  if (s.odd) s.prev = wdata[s.w];
  return s;
}
uint ws_next(inout WordStream s) {
  if (!s.odd) return wdata[s.w++];
  s.w += 1u;
  const uint cur = wdata[s.w];
  const uint v = (s.prev >> 16) | (cur << 16);
  s.prev = cur;
  return v;
}

#if defined(FMT_Q4_0) || defined(FMT_Q8_0) || defined(FMT_Q4_K) || defined(FMT_Q6_K)
#define MV_BLOCK_DOT 1
#endif

#if defined(FMT_Q4_0)
float block_dot(uint bb, uint e0) {
  const float d = q_f16(bb);
  const uint w = (bb + 2u) >> 2;
  uint q[4];
  if (((bb + 2u) & 2u) == 0u) {
    [[unroll]] for (uint j = 0u; j < 4u; ++j) q[j] = wdata[w + j];
  } else {
    uint prev = wdata[w];
    [[unroll]] for (uint j = 0u; j < 4u; ++j) {
      const uint cur = wdata[w + j + 1u];
      q[j] = (prev >> 16) | (cur << 16);
      prev = cur;
    }
  }
  float s = 0.0;
  [[unroll]] for (uint j = 0u; j < 4u; ++j) {
    s += dot(q_bytes_u(q[j] & 0x0F0F0F0Fu) - 8.0, x4(e0 + 4u * j));
    s += dot(q_bytes_u((q[j] >> 4) & 0x0F0F0F0Fu) - 8.0, x4(e0 + 16u + 4u * j));
  }
  return d * s;
}
#elif defined(FMT_Q8_0)
float block_dot(uint bb, uint e0) {
  const float d = q_f16(bb);
  const uint w = (bb + 2u) >> 2;
  float s = 0.0;
  if (((bb + 2u) & 2u) == 0u) {
    [[unroll]] for (uint j = 0u; j < 8u; ++j) s += dot(q_bytes_i(wdata[w + j]), x4(e0 + 4u * j));
  } else {
    uint prev = wdata[w];
    [[unroll]] for (uint j = 0u; j < 8u; ++j) {
      const uint cur = wdata[w + j + 1u];
      s += dot(q_bytes_i((prev >> 16) | (cur << 16)), x4(e0 + 4u * j));
      prev = cur;
    }
  }
  return d * s;
}
#elif defined(FMT_Q4_K)
float block_dot(uint bb, uint e0) {
  const uint w = bb >> 2;  // Q4_K blocks are 4-byte aligned
  const vec2 dm = unpackHalf2x16(wdata[w]);
  const uint s0 = wdata[w + 1u], s1 = wdata[w + 2u], s2 = wdata[w + 3u];
  // six-bit scales and mins of sub-blocks 0..3 and 4..7, one byte each
  const uint sc_lo = s0 & 0x3F3F3F3Fu, m_lo = s1 & 0x3F3F3F3Fu;
  const uint sc_hi = (s2 & 0x0F0F0F0Fu) | (((s0 >> 6) & 0x03030303u) << 4);
  const uint m_hi = ((s2 >> 4) & 0x0F0F0F0Fu) | (((s1 >> 6) & 0x03030303u) << 4);
  const vec4 sc0 = q_bytes_u(sc_lo), sc1 = q_bytes_u(sc_hi), m0 = q_bytes_u(m_lo), m1 = q_bytes_u(m_hi);
  float acc = 0.0, accm = 0.0;
  [[unroll]] for (uint c = 0u; c < 4u; ++c) {
    float sl = 0.0, sh = 0.0;
    vec4 xl = vec4(0.0), xh = vec4(0.0);
    [[unroll]] for (uint i = 0u; i < 8u; ++i) {
      const uint v = wdata[w + 4u + 8u * c + i];
      const vec4 a = x4(e0 + 64u * c + 4u * i), b = x4(e0 + 64u * c + 32u + 4u * i);
      sl += dot(q_bytes_u(v & 0x0F0F0F0Fu), a);
      sh += dot(q_bytes_u((v >> 4) & 0x0F0F0F0Fu), b);
      xl += a;
      xh += b;
    }
    const uint j0 = 2u * c, j1 = 2u * c + 1u;
    const float scl = j0 < 4u ? sc0[j0] : sc1[j0 - 4u], sch = j1 < 4u ? sc0[j1] : sc1[j1 - 4u];
    const float ml = j0 < 4u ? m0[j0] : m1[j0 - 4u], mh = j1 < 4u ? m0[j1] : m1[j1 - 4u];
    acc += scl * sl + sch * sh;
    accm += ml * (xl.x + xl.y + xl.z + xl.w) + mh * (xh.x + xh.y + xh.z + xh.w);
  }
  return dm.x * acc - dm.y * accm;
}
#elif defined(FMT_Q6_K)
float block_dot(uint bb, uint e0) {
  const float d = q_f16(bb + 208u);
  WordStream ss = ws_begin(bb + 192u);
  uint scw[4];
  [[unroll]] for (uint k = 0u; k < 4u; ++k) scw[k] = ws_next(ss);
  WordStream ql = ws_begin(bb);
  WordStream qhs = ws_begin(bb + 128u);
  float acc = 0.0;
  [[unroll]] for (uint h = 0u; h < 2u; ++h) {
    uint qh[8];
    [[unroll]] for (uint k = 0u; k < 8u; ++k) qh[k] = ws_next(qhs);
    [[unroll]] for (uint quad = 0u; quad < 4u; ++quad) {  // 4 ql words = 16 elements per scale
      float sl = 0.0, sh = 0.0;
      [[unroll]] for (uint t = 0u; t < 4u; ++t) {
        const uint i = 4u * quad + t;
        const uint L = ws_next(ql), H = qh[i & 7u];
        const uint slo = 2u * (i >> 3);
        const uint qlo = (L & 0x0F0F0F0Fu) | (((H >> slo) & 0x03030303u) << 4);
        const uint qhi = ((L >> 4) & 0x0F0F0F0Fu) | (((H >> (slo + 4u)) & 0x03030303u) << 4);
        sl += dot(q_bytes_u(qlo) - 32.0, x4(e0 + 128u * h + 4u * i));
        sh += dot(q_bytes_u(qhi) - 32.0, x4(e0 + 128u * h + 64u + 4u * i));
      }
      const uint klo = 8u * h + quad, khi = 8u * h + 4u + quad;  // scale indices
      const float sclo = float(int(scw[klo >> 2] << (24u - 8u * (klo & 3u))) >> 24);
      const float schi = float(int(scw[khi >> 2] << (24u - 8u * (khi & 3u))) >> 24);
      acc += sclo * sl + schi * sh;
    }
  }
  return d * acc;
}
#endif

// --- superblock path (row-per-invocation mode, K a multiple of 256) ------------------------
// The fast path for CPU devices (lavapipe). Measured there (docs/performance.md):
// - a storage-buffer load whose address differs between lanes is a loop over the lanes with a
//   bounds check per component, so one uvec4 load costs about a third of four uint loads:
//   rows whose bytes start 16-aligned are read as uvec4 (W_ALIGNED16), else as words;
// - each invocation computes ROWS rows (up to MV_MAX_ROWS) so x, which every lane loads
//   itself, is loaded and prepared once per ROWS rows;
// - quants are not shifted into place: float(int(word & mask)) is q * 2^bit, and x is
//   pre-multiplied by 2^-bit once per 256 elements; offsets (q - 8 etc.) become one multiple
//   of the block's x sum; and the products go to several independent accumulators (an FMA
//   chain is latency-bound).
#if defined(FMT_Q4_0) || defined(FMT_Q8_0) || defined(FMT_Q4_K) || defined(FMT_Q6_K)
#define MV_SUPERBLOCK 1
layout(constant_id = 3) const bool W_ALIGNED16 = false;  // w_base and row_bytes multiples of 16
layout(constant_id = 4) const bool X_ALIGNED16 = false;  // x_base a multiple of 4 elements

#include "mul_mv_sb.glsl"

// The SB_WORDS words of the superblock at byte b (even; a multiple of 16 when W_ALIGNED16).
// A superblock at 2 mod 4 (rows at an offset of 2 mod 4) is realigned here, reading one word
// past its end only then (not for Q6_K: its last word's high half is padding, unused).
void sb_load(uint b, out uint W[SB_WORDS]) {
  if (W_ALIGNED16) {
    [[unroll]] for (uint i = 0u; i < uint(SB_WORDS) / 4u; ++i) {
      const uvec4 v = wdata4[(b >> 4) + i];
      W[4u * i] = v.x;
      W[4u * i + 1u] = v.y;
      W[4u * i + 2u] = v.z;
      W[4u * i + 3u] = v.w;
    }
    return;
  }
  const uint w0 = b >> 2;
  uint A[SB_WORDS + 1];
  [[unroll]] for (uint i = 0u; i < uint(SB_WORDS); ++i) A[i] = wdata[w0 + i];
  const bool odd = (b & 2u) != 0u;
  A[SB_WORDS] = 0u;
#if !defined(FMT_Q6_K)  // Q6_K: the word past the block would only fill W[55]'s high half (padding)
  if (odd) A[SB_WORDS] = wdata[w0 + uint(SB_WORDS)];
#endif
  [[unroll]] for (uint i = 0u; i < uint(SB_WORDS); ++i) W[i] = odd ? (A[i] >> 16) | (A[i + 1u] << 16) : A[i];
}

void sb_x(uint e0, out vec4 xs[64], out float xsum[SB_GROUPS]) {
  [[unroll]] for (uint j = 0u; j < 64u; ++j) {
    if (X_ALIGNED16 && !NORM) {
      xs[j] = xdata4[(p.x_base + e0) / 4u + j];
    } else {
      xs[j] = x4(e0 + 4u * j);
    }
  }
  sb_x_finish(xs, xsum);
}

#endif  // superblock formats

// Row-per-invocation mode (spec constant 2, for CPU devices such as lavapipe): every
// invocation computes ROWS whole rows on its own, all invocations walk k in step, so the x
// loads are uniform (one scalar load per subgroup on lavapipe) and no reduction is needed.
// Workgroup-per-rows mode (GPUs): the invocations of a workgroup share ROWS rows.
layout(constant_id = 2) const bool ROW_PER_INVOCATION = false;

void main() {
  const uint WG = gl_WorkGroupSize.x;
  const uint tid = gl_LocalInvocationID.x;
  const uint row0 = ROW_PER_INVOCATION ? gl_WorkGroupID.x * WG * OUT_ROWS + tid : gl_WorkGroupID.x * OUT_ROWS;
  const uint row_step = ROW_PER_INVOCATION ? WG : 1u;
  const uint k_first = ROW_PER_INVOCATION ? 0u : tid;
  const uint k_step = ROW_PER_INVOCATION ? 1u : WG;

  uint rb[MV_MAX_ROWS];  // first byte of each row
  float acc[MV_MAX_ROWS];
  [[unroll]] for (uint r = 0u; r < MV_MAX_ROWS; ++r) {
    rb[r] = p.w_base + mv_row(r, row0, row_step) * p.row_bytes;
    acc[r] = 0.0;
  }
  if (NORM) {  // the sum of squares of x (each invocation alone, or the workgroup together)
    float ss = 0.0;
    for (uint e = k_first; e < p.K; e += k_step) {
      const float v = xdata[p.x_base + e];
      ss += v * v;
    }
    if (!ROW_PER_INVOCATION) ss = mv_wg_sum(ss);
    x_inv = 1.0 / sqrt(ss / float(p.K) + p.eps);
  }

#if FMT_PLAIN
  const uint nvec = p.K / 4u;
  for (uint i = k_first; i < nvec; i += k_step) {
    const vec4 xv = x4(4u * i);
    [[unroll]] for (uint r = 0u; r < MV_MAX_ROWS; ++r) {
      if (r < ROWS) acc[r] += dot(dq_vec4(rb[r], 4u * i), xv);
    }
  }
  for (uint e = 4u * nvec + k_first; e < p.K; e += k_step) {
    const float xs = x1(e);
    [[unroll]] for (uint r = 0u; r < MV_MAX_ROWS; ++r) {
      if (r < ROWS) acc[r] += dq_elem(rb[r], e) * xs;
    }
  }
#else
#ifdef MV_SUPERBLOCK
  if (ROW_PER_INVOCATION && p.K % 256u == 0u) {
    const uint nsb = p.K / 256u;
    for (uint sb = 0u; sb < nsb; ++sb) {
      vec4 xs[64];
      float xsum[SB_GROUPS];
      sb_x(256u * sb, xs, xsum);
      [[unroll]] for (uint r = 0u; r < MV_MAX_ROWS; ++r) {
        if (r < ROWS) {
          uint W[SB_WORDS];
          sb_load(rb[r] + SB_BYTES * sb, W);
          acc[r] += sb_dot(W, xs, xsum);
        }
      }
    }
  } else
#endif
#ifdef MV_BLOCK_DOT
  if (ROW_PER_INVOCATION) {
    const uint nb = p.K / QK;
    for (uint blk = 0u; blk < nb; ++blk) {
      [[unroll]] for (uint r = 0u; r < MV_MAX_ROWS; ++r) {
        if (r < ROWS) acc[r] += block_dot(rb[r] + blk * BLOCK_BYTES, blk * QK);
      }
    }
  } else
#endif
  {
  const uint ngroups = (p.K / QK) * DQ_GROUPS;
  for (uint i = k_first; i < ngroups; i += k_step) {
    const uint blk = i / DQ_GROUPS, g = i % DQ_GROUPS;
    const uint e = blk * QK + dq_group_elem(g);
    const vec4 x0 = x4(e), x1 = x4(e + DQ_GROUP_HI);
    [[unroll]] for (uint r = 0u; r < MV_MAX_ROWS; ++r) {
      if (r < ROWS) {
        vec4 lo, hi;
        dq_group(rb[r] + blk * BLOCK_BYTES, g, lo, hi);
        acc[r] += dot(lo, x0) + dot(hi, x1);
      }
    }
  }
  }
#endif

  if (ROW_PER_INVOCATION) {
    [[unroll]] for (uint r = 0u; r < MV_MAX_ROWS; ++r) {
      if (r < OUT_ROWS && row0 + r * WG < p.N)
        ydata[p.y_base + row0 + r * WG] = mv_epilogue(acc[r], GLU ? acc[min(r + OUT_ROWS, MV_MAX_ROWS - 1u)] : 0.0, row0 + r * WG);
    }
  } else {
    mv_reduce_store(acc, row0);
  }
}
