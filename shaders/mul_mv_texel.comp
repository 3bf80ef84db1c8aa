#version 450
#extension GL_GOOGLE_include_directive : require
// mul_mv_texel_<fmt> — the decode matrix-vector product y[n] = sum_k W[n, k] * x[k] for CPU
// devices (lavapipe), reading W and x through uniform texel buffers instead of storage
// buffers. Every block format (Q4_0, Q8_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) in the
// device block layout (engine/quant.h: Q6_K blocks padded to 224 bytes), F16 and BF16; K a
// multiple of 256, or of 32 for the formats of 32-element blocks and F16 / BF16 (Q4_0, Q8_0,
// Q4_1, Q5_0, Q5_1, F16, BF16: a row may end in a partial superblock, taken a block at a time
// by blk_step). Same
// arithmetic as mul_mv.comp's superblock path (mul_mv_sb.glsl); each invocation computes ROWS
// whole rows (rows row0, row0 + WG, ...), rows past N are computed from row N-1 and not written.
//
// Why texel buffers: on llvmpipe a storage-buffer load whose address differs between lanes is
// a loop over the lanes with a branch per component, while a texel fetch is a gather (a
// 16-byte texel: one load per lane and a transpose, no branches); x, whose address is the same
// in every lane but not provably so, costs as much as W through a storage buffer.
//
// Bindings: 0 = W, a view of format R32G32B32A32_UINT (W_TEXEL16) or R32_UINT; 1 = x, a view
// of R32G32B32A32_SFLOAT starting 16-aligned; 2 = y, a storage buffer (the exception to
// common.glsl's all-storage-buffer convention; engine/ops/matvec.cpp binds the views); 4 = the
// x * g output of NEXT_NORM (MV_ROPE: 4 = the position, 5 and 6 = the K and V caches).
// Push constants (MatVecPush): w_base = bytes from the W view's start to row 0, x_base =
// elements (a multiple of 4) from the x view's start, y_base = elements.
//
// Fused forms (decode: one dispatch instead of three; matvec.glsl): NORM reads the norm weight
// through binding 3, a view of R32G32B32A32_SFLOAT (always bound: the host binds x again when
// NORM is off). The products are formed with x * g, and the sum of squares of x from the same
// fetches as they pass (sb_step); the norm's scale 1 / sqrt(mean(x^2) + eps) multiplies each
// row's sum at the end (the product is linear in x). A separate pass over x for the sum of
// squares, and the scale applied per element, had made SmolLM2's normed products (K = 576)
// slower than an rms_norm dispatch and an unfused product (docs/performance.md).
#include "common.glsl"

layout(set = 0, binding = 0) uniform usamplerBuffer wtex;
layout(set = 0, binding = 1) uniform samplerBuffer xtex;
layout(set = 0, binding = 2, std430) buffer Y { float ydata[]; };
layout(set = 0, binding = 3) uniform samplerBuffer gtex;
#define MV_KERNEL 1
#include "matvec.glsl"
// NORM_X (with NORM): binding 1 holds x * g already (an earlier product's NEXT_NORM output) and
// binding 3 x itself, of which the norm takes the sum of squares (x_sumsq): the products fetch
// one vector, not x and g. NEXT_NORM (with EPILOGUE 1, the residual add): each output y[n] is
// also written times the next norm's weight g[n] (binding 3) into binding 4, for that NORM_X
// product.
layout(constant_id = 7) const bool NORM_X = false;
layout(constant_id = 8) const bool NEXT_NORM = false;
// K_FIXED: K as a specialisation constant (0: K from the push constants, which then equal it
// when it is set). With K fixed the loops over superblocks, blocks and the sum of squares have
// constant trip counts and are unrolled when the pipeline is built: on llvmpipe a loop it
// cannot prove uniform runs every assignment in it under the lanes' execution mask, which made
// a K = 512 product ~25% slower in CPU time than the same work unrolled (docs/performance.md).
layout(constant_id = 9) const uint K_FIXED = 0u;
uint k_dim() { return K_FIXED != 0u ? K_FIXED : p.K; }
#ifdef MV_ROPE  // the Q/K/V product with rope_store's work in its epilogue (matvec.glsl)
#include "rope_angle.glsl"
layout(set = 0, binding = 4, std430) readonly buffer Pos { int posdata[]; };
layout(set = 0, binding = 5, std430) writeonly buffer KCache { uint k_cache[]; };
layout(set = 0, binding = 6, std430) writeonly buffer VCache { uint v_cache[]; };
#else
layout(set = 0, binding = 4, std430) writeonly buffer XG { float xgdata[]; };
#endif
#define SB_Q4K_MASKED_SCALES 1  // Q4_K: scales masked in place (x scaled to match)
#include "mul_mv_sb.glsl"

layout(constant_id = 2) const bool W_TEXEL16 = false;  // W view of R32G32B32A32_UINT texels, else R32_UINT
layout(constant_id = 3) const bool W_ALIGNED16 = false;  // (W_TEXEL16) every superblock starts 16-aligned
// Texel e of the norm weight (NORM), clamped to its view.
vec4 g_texel(uint e) { return texelFetch(gtex, min(int(p.g_base / 4u + e), textureSize(gtex) - 1)); }

// NORM_X: the sum of squares of x (binding 3), each invocation summing every WG-th texel, then
// the workgroup's sum (the same value in every invocation; called in uniform control flow).
float x_sumsq() {
  vec4 s = vec4(0.0);
  const uint WG = gl_WorkGroupSize.x, n = k_dim() / 4u;
  [[unroll]] for (uint i = 0u; i < (n + WG - 1u) / WG; ++i) {  // a constant trip count with K_FIXED
    const uint j = gl_LocalInvocationID.x + i * WG;
    if (j < n) {
      const vec4 v = g_texel(j);
      s += v * v;
    }
  }
  return mv_wg_sum((s.x + s.y) + (s.z + s.w));
}

// Texels of 16 bytes that hold a superblock at any even offset within its first texel, and
// the words the realignment below reads (4 more than the block's: the shift by up to 3 words
// and the half-word funnel; those past the texels read as 0 and land only in bytes past the
// block, which sb_dot never uses).
#define SB_TEXELS ((SB_BYTES + 29u) / 16u)
#define SB_AWORDS (SB_WORDS + 4)

// The SB_WORDS words of the superblock at byte b of the W view (b even). Every texel index is
// clamped to the view: the realignment's extra texel may lie past its end, and the clamp only
// repeats texels past the data (a min per fetch, next to the gathers).
// - W_ALIGNED16 (b a multiple of 16): SB_WORDS / 4 texels, no realignment;
// - W_TEXEL16: SB_TEXELS texels from b's texel, then shifted by b % 16 bytes with selects
//   (the shift may differ between lanes). The view's end covers the last block's bytes
//   (engine/ops/matvec.cpp);
// - else R32_UINT texels: one gather per word (slow on llvmpipe: the fallback for buffers
//   whose end is not padded to 16 bytes), realigned as in mul_mv.comp's sb_load.
void sb_load(uint b, out uint W[SB_WORDS]) {
  const int last = textureSize(wtex) - 1;
  if (W_ALIGNED16) {
    [[unroll]] for (uint i = 0u; i < uint(SB_WORDS) / 4u; ++i) {
      const uvec4 v = texelFetch(wtex, min(int((b >> 4) + i), last));
      W[4u * i] = v.x;
      W[4u * i + 1u] = v.y;
      W[4u * i + 2u] = v.z;
      W[4u * i + 3u] = v.w;
    }
    return;
  }
  if (W_TEXEL16) {
    uint A[SB_AWORDS];
    [[unroll]] for (uint i = 0u; i < uint(SB_AWORDS); ++i) A[i] = 0u;
    [[unroll]] for (uint i = 0u; i < SB_TEXELS; ++i) {
      const uvec4 v = texelFetch(wtex, min(int((b >> 4) + i), last));
      [[unroll]] for (uint c = 0u; c < 4u; ++c) {
        if (4u * i + c < uint(SB_AWORDS)) A[4u * i + c] = v[c];
      }
    }
    const bool s2 = (b & 8u) != 0u, s1 = (b & 4u) != 0u, h = (b & 2u) != 0u;
    uint B[SB_AWORDS];  // shifted by 2 words when s2, then by 1 word when s1
    [[unroll]] for (uint i = 0u; i < uint(SB_AWORDS - 2); ++i) B[i] = mix(A[i], A[i + 2u], s2);
    B[SB_AWORDS - 2] = mix(A[SB_AWORDS - 2], 0u, s2);
    B[SB_AWORDS - 1] = mix(A[SB_AWORDS - 1], 0u, s2);
    [[unroll]] for (uint i = 0u; i < uint(SB_AWORDS - 1); ++i) A[i] = mix(B[i], B[i + 1u], s1);
    [[unroll]] for (uint i = 0u; i < uint(SB_WORDS); ++i) W[i] = mix(A[i], (A[i] >> 16) | (A[i + 1u] << 16), h);
    return;
  }
  const uint w0 = b >> 2;
  uint A[SB_WORDS + 1];
  [[unroll]] for (uint i = 0u; i < uint(SB_WORDS); ++i) A[i] = texelFetch(wtex, min(int(w0 + i), last)).x;
  const bool odd = (b & 2u) != 0u;
  A[SB_WORDS] = 0u;
#if !defined(FMT_Q6_K)
  if (odd) A[SB_WORDS] = texelFetch(wtex, min(int(w0) + SB_WORDS, last)).x;
#endif
  [[unroll]] for (uint i = 0u; i < uint(SB_WORDS); ++i) W[i] = odd ? (A[i] >> 16) | (A[i + 1u] << 16) : A[i];
}

// One superblock of the ROWS rows: x prepared once, then each row's dot product.
// NORM: ss gathers the sum of squares of x, and x is multiplied by g only.
void sb_step(uint sb, uint x0, const uint rb[MV_MAX_ROWS], inout float acc[MV_MAX_ROWS], inout vec4 ss) {
  vec4 xs[64];
  float xsum[SB_GROUPS];
  const int xlast = textureSize(xtex) - 1;
  [[unroll]] for (uint j = 0u; j < 64u; ++j) {
    vec4 v = texelFetch(xtex, min(int(x0 + 64u * sb + j), xlast));
    if (NORM && !NORM_X) {
      ss += v * v;
      v *= g_texel(64u * sb + j);
    }
    xs[j] = v;
  }
  sb_x_finish(xs, xsum);
  [[unroll]] for (uint r = 0u; r < MV_MAX_ROWS; ++r) {
    if (r < ROWS) {
      uint W[SB_WORDS];
      sb_load(rb[r] + SB_BYTES * sb, W);
      acc[r] += sb_dot(W, xs, xsum);
    }
  }
}

#ifdef SB_TAIL
// The formats of 32-element blocks: K may end in a partial superblock, whose blocks are taken
// one at a time (a partial superblock computed whole had cost SmolLM2's K = 576 products, 2.25
// superblocks a row, as much as 3).
#if defined(FMT_Q8_0)
#define BLK_BYTES 34u
#define BLK_WORDS 9  // the block's bytes realigned to its start, and the half word past them
#elif defined(FMT_Q4_1)
#define BLK_BYTES 20u
#define BLK_WORDS 5
#elif defined(FMT_Q5_0)
#define BLK_BYTES 22u
#define BLK_WORDS 6
#elif defined(FMT_Q5_1)
#define BLK_BYTES 24u
#define BLK_WORDS 6
#elif defined(SB_PLAIN)
#define BLK_BYTES 64u
#define BLK_WORDS 16
#else
#define BLK_BYTES 18u
#define BLK_WORDS 5
#endif
#define BLK_TEXELS ((BLK_WORDS + 7) / 4)  // 16-byte texels holding BLK_WORDS words at any word offset

// One block's sum of w * x from its words realigned to its start (blk_load), x in xb (scaled by
// sb_scale) and xsum the sum of its x: the arithmetic of sb_dot_n (mul_mv_sb.glsl) for block 0.
float blk_dot(const uint V[BLK_WORDS], const vec4 xb[8], float xsum) {
#if defined(SB_PLAIN)
  vec4 s0 = vec4(0.0), s1 = vec4(0.0);
  [[unroll]] for (uint j = 0u; j < 8u; j += 2u) {
    s0 += plain4(V[2u * j], V[2u * j + 1u]) * xb[j];
    s1 += plain4(V[2u * j + 2u], V[2u * j + 3u]) * xb[j + 1u];
  }
  s0 += s1;
  return (s0.x + s0.y) + (s0.z + s0.w);
#elif defined(FMT_Q8_0)
  const float d = unpackHalf2x16(V[0]).x;
  vec4 s0 = vec4(0.0), s1 = vec4(0.0);
  [[unroll]] for (uint j = 0u; j < 8u; j += 2u) {
    const uint v0 = ((V[j] >> 16) | (V[j + 1u] << 16)) ^ 0x80808080u;
    const uint v1 = ((V[j + 1u] >> 16) | (V[j + 2u] << 16)) ^ 0x80808080u;
    s0 += vec4(ivec4(v0 & 0xFFu, v0 & 0xFF00u, v0 & 0xFF0000u, (v0 >> 8) & 0xFF0000u)) * xb[j];
    s1 += vec4(ivec4(v1 & 0xFFu, v1 & 0xFF00u, v1 & 0xFF0000u, (v1 >> 8) & 0xFF0000u)) * xb[j + 1u];
  }
  s0 += s1;
  return d * (((s0.x + s0.y) + (s0.z + s0.w)) - 128.0 * xsum);
#elif defined(FMT_Q5_0) || defined(FMT_Q5_1)
#if defined(FMT_Q5_0)  // {f16 d; u8 qh[4]; u8 qs[16]}: qh and the quants realigned by half a word
  const uint qh = (V[0] >> 16) | (V[1] << 16);
#else  // {f16 d, m; u8 qh[4]; u8 qs[16]}: whole words
  const uint qh = V[1];
#endif
  vec4 sl = vec4(0.0), sh = vec4(0.0);
  [[unroll]] for (uint j = 0u; j < 4u; ++j) {
#if defined(FMT_Q5_0)
    const uint v = (V[j + 1u] >> 16) | (V[j + 2u] << 16);
#else
    const uint v = V[j + 2u];
#endif
    sl += q5_vec(q5_bytes(v & 0x0F0F0F0Fu, qh >> (4u * j))) * xb[j];
    sh += q5_vec(q5_bytes((v >> 4) & 0x0F0F0F0Fu, qh >> (16u + 4u * j))) * xb[4u + j];
  }
  sl += sh;
  const float dot5 = (sl.x + sl.y) + (sl.z + sl.w);
#if defined(FMT_Q5_0)
  return unpackHalf2x16(V[0]).x * (dot5 - 16.0 * xsum);
#else
  const vec2 dm = unpackHalf2x16(V[0]);
  return dm.x * dot5 + dm.y * xsum;
#endif
#else
  vec4 sl = vec4(0.0), sh = vec4(0.0);
  [[unroll]] for (uint j = 0u; j < 4u; ++j) {
#if defined(FMT_Q4_1)
    const uint v = V[j + 1u];
#else
    const uint v = (V[j] >> 16) | (V[j + 1u] << 16);
#endif
    sl += nib_lo(v) * xb[j];
    sh += nib_hi(v) * xb[4u + j];
  }
  sl += sh;
  const float dot4 = (sl.x + sl.y) + (sl.z + sl.w);
#if defined(FMT_Q4_1)
  const vec2 dm = unpackHalf2x16(V[0]);
  return dm.x * dot4 + dm.y * xsum;
#else
  return unpackHalf2x16(V[0]).x * (dot4 - 8.0 * xsum);
#endif
#endif
}

// The BLK_WORDS words from byte b (even) of the W view: texels shifted by whole words with
// selects, then by a half word (b % 4 == 2); every index clamped to the view (words past the
// view read as its last texel and land only past the block).
void blk_load(uint b, out uint V[BLK_WORDS]) {
  const int last = textureSize(wtex) - 1;
  uint A[BLK_WORDS + 1];
  if (W_TEXEL16) {
    uint T[4 * BLK_TEXELS];
    [[unroll]] for (uint i = 0u; i < uint(BLK_TEXELS); ++i) {
      const uvec4 v = texelFetch(wtex, min(int((b >> 4) + i), last));
      T[4u * i] = v.x;
      T[4u * i + 1u] = v.y;
      T[4u * i + 2u] = v.z;
      T[4u * i + 3u] = v.w;
    }
    const uint s = (b >> 2) & 3u;
    [[unroll]] for (uint i = 0u; i < uint(BLK_WORDS + 1); ++i)
      A[i] = s == 0u ? T[i] : s == 1u ? T[i + 1u] : s == 2u ? T[i + 2u] : T[i + 3u];
  } else {
    [[unroll]] for (uint i = 0u; i < uint(BLK_WORDS + 1); ++i) A[i] = texelFetch(wtex, min(int((b >> 2) + i), last)).x;
  }
  const bool h = (b & 2u) != 0u;
  [[unroll]] for (uint i = 0u; i < uint(BLK_WORDS); ++i) V[i] = h ? (A[i] >> 16) | (A[i + 1u] << 16) : A[i];
}

// Block blk of the row (at byte bb past each row's start) for the ROWS rows, x prepared as
// sb_step prepares a superblock's first block.
void blk_step(uint blk, uint bb, uint x0, const uint rb[MV_MAX_ROWS], inout float acc[MV_MAX_ROWS], inout vec4 ss) {
  vec4 xb[8];
  const int xlast = textureSize(xtex) - 1;
  vec4 t = vec4(0.0);
  [[unroll]] for (uint j = 0u; j < 8u; ++j) {
    vec4 v = texelFetch(xtex, min(int(x0 + 8u * blk + j), xlast));
    if (NORM && !NORM_X) {
      ss += v * v;
      v *= g_texel(8u * blk + j);
    }
    t += v;
    xb[j] = v * sb_scale(j);
  }
  const float xsum = (t.x + t.y) + (t.z + t.w);
  [[unroll]] for (uint r = 0u; r < MV_MAX_ROWS; ++r) {
    if (r < ROWS) {
      uint V[BLK_WORDS];
      blk_load(rb[r] + bb, V);
      acc[r] += blk_dot(V, xb, xsum);
    }
  }
}
#endif

#ifdef MV_ROPE
// Row r of this invocation: pairs of adjacent rows (a rotated pair in one invocation), the
// invocation's pair r / 2 being pair lane + WG * (r / 2) of its workgroup's ROWS * WG rows.
uint rope_row(uint r) {
  const uint WG = gl_WorkGroupSize.x;
  return gl_WorkGroupID.x * WG * ROWS + (r >> 1) * 2u * WG + 2u * gl_LocalInvocationID.x + (r & 1u);
}

// The rows' sums acc (normed) through rope_store's work: Q pairs rotated into y, K pairs
// rotated and V pairs as they are into the caches at the token's position (rope_store.comp's
// expressions), K and V also into y unrotated. N and head_dim are even, so a pair below N is
// whole.
void rope_epilogue(const float acc[MV_MAX_ROWS]) {
  const int position = posdata[rp.pos_off];
  const bool store = position >= 0 && uint(position) < rp.n_ctx;
  const uint kv = (p.N - rp.n_q) / 2u;  // rows of K, and of V
  [[unroll]] for (uint r = 0u; r + 1u < MV_MAX_ROWS; r += 2u) {
    const uint n = rope_row(r);
    if (r + 1u < ROWS && n < p.N) {
      const float a = acc[r], b = acc[r + 1u];
      const bool is_v = n >= rp.n_q + kv;
      const uint m = n < rp.n_q ? n : is_v ? n - rp.n_q - kv : n - rp.n_q;  // row within Q, K or V
      const uint e = m % rp.head_dim;                                         // even
      float ra = a, rb = b;
      if (!is_v && e < rp.n_dims) {
        const vec2 cs = rope_angle(e / 2u, position, rp.n_dims, rp.freq_base, rp.freq_scale);
        ra = a * cs.x - b * cs.y;
        rb = a * cs.y + b * cs.x;
      }
      ydata[p.y_base + n] = n < rp.n_q ? ra : a;
      ydata[p.y_base + n + 1u] = n < rp.n_q ? rb : b;
      if (n >= rp.n_q && store) {
        const uint dst = ((m / rp.head_dim) * rp.n_ctx + uint(position)) * (rp.head_dim / 2u) + e / 2u;
        if (is_v)
          v_cache[rp.vc_off + dst] = packHalf2x16(vec2(a, b));
        else
          k_cache[rp.kc_off + dst] = packHalf2x16(vec2(ra, rb));
      }
    }
  }
}
#endif

void main() {
  const uint WG = gl_WorkGroupSize.x;
  const uint row0 = gl_WorkGroupID.x * WG * OUT_ROWS + gl_LocalInvocationID.x;
  uint rb[MV_MAX_ROWS];  // first byte of each row: output rows, then (GLU) their up rows N further
  float acc[MV_MAX_ROWS];
  [[unroll]] for (uint r = 0u; r < MV_MAX_ROWS; ++r) {
#ifdef MV_ROPE
    rb[r] = p.w_base + min(rope_row(r), p.N - 1u) * p.row_bytes;
#else
    rb[r] = p.w_base + mv_row(r, row0, WG) * p.row_bytes;
#endif
    acc[r] = 0.0;
  }
  const uint x0 = p.x_base / 4u;
  vec4 ss = vec4(0.0);
  const uint nsb = k_dim() / 256u;  // whole superblocks
  [[unroll]] for (uint sb = 0u; sb < nsb; ++sb) sb_step(sb, x0, rb, acc, ss);
#ifdef SB_TAIL
  [[unroll]] for (uint blk = 8u * nsb; blk < k_dim() / 32u; ++blk) blk_step(blk, SB_BYTES * nsb + BLK_BYTES * (blk - 8u * nsb), x0, rb, acc, ss);
#endif
  if (NORM) {  // the norm's scale, as rms_norm.comp forms it, on each row's sum
    if (NORM_X)
      x_inv = 1.0 / sqrt(x_sumsq() / float(k_dim()) + p.eps);
    else
      x_inv = 1.0 / sqrt((ss.x + ss.y + ss.z + ss.w) / float(k_dim()) + p.eps);
    [[unroll]] for (uint r = 0u; r < MV_MAX_ROWS; ++r) acc[r] *= x_inv;
  }
#ifdef MV_ROPE
  rope_epilogue(acc);
  return;
#endif
  [[unroll]] for (uint r = 0u; r < MV_MAX_ROWS; ++r) {
    if (r < OUT_ROWS && row0 + r * WG < p.N) {
      const uint n = row0 + r * WG;
      const float v = mv_epilogue(acc[r], GLU ? acc[min(r + OUT_ROWS, MV_MAX_ROWS - 1u)] : 0.0, n);
      ydata[p.y_base + n] = v;
#ifndef MV_ROPE
      if (NEXT_NORM) xgdata[p.xg_base + n] = v * g_texel(n / 4u)[n % 4u];
#endif
    }
  }
}
