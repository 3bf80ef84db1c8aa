#version 450
#extension GL_GOOGLE_include_directive : require
// shaders/mul_mm_cpu.comp — matrix-matrix product Y = X * W^T for CPU drivers (lavapipe /
// llvmpipe), one weight format per compiled kernel (quant.glsl's FMT_<TYPE> define).
//
// llvmpipe runs a workgroup as a loop over SIMD batches of 8 invocations; a load whose address
// is not provably uniform (anything indexed by a loop counter) is a per-lane scalar loop, and
// barrier() suspends every invocation. So this kernel has no shared memory and no barrier, and is
// shaped to do as few lane-varying loads per multiply-add as possible:
//   - each invocation owns a register tile of TN rows of W (n = n0 + lid + t * wg) by TM rows of X;
//   - W: the invocation loads each quant block of its rows as whole 32-bit words into registers
//     (one pass over the block's bytes) and dequantises there; F32, F16, BF16, Q8_0, Q4_0,
//     Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K through a texel buffer of R32_UINT texels
//     (a gather: each lane has its own rows), which took SmolLM2's 1536 x 576 x 512 Q4_1 product
//     from 28 to 26 ms, Q4_K / Q6_K products (1536 x 1024 x 512) from 130 / 142 ms to 37 / 42 and
//     Gemma 3's Q5_0 gate and up products (2 x 2048 x 640 x 512) from 214 to 59 ms (a storage
//     buffer's per-lane loads, through quant.glsl, had been the way for the others);
//   - X: a uniform texel buffer (vec4 texels where aligned): every lane fetches the same texels,
//     a gather, where a storage load (per-lane loop) and subgroupBroadcast had cost SmolLM2's
//     1536 x 576 x 512 Q4_1 product 44 ms against 28 ms now (docs/performance.md).
// Rows past N or M are clamped to the last row (read, never written), so every invocation runs
// the same loop: the subgroup stays uniform.
//
// Layout, push constants and bindings: matmul.glsl. Specialisation constants: 0 workgroup size
// (a multiple of 8), 3 TM (rows of X per invocation), 4 TN (rows of W per invocation), 5 X_VEC4
// (X's view of vec4 or float texels), 6 Y_ADD (matmul.glsl), 7 GLU (below); BM and BN are
// unused. The host (engine/ops/matmul.cpp) dispatches (ceil(M / TM), ceil(N / (wg * TN)))
// workgroups (wg * TN / 2 with GLU).
#include "common.glsl"
#define MM_X_TEXEL 1  // X as vec4 texels (matmul.glsl)
#define MM_W_TEXEL 1  // W as R32_UINT texels, every format (engine/ops/matmul.cpp: cpu_w_texel)
#include "matmul.glsl"

// Word i of binding 0.
#ifdef MM_W_TEXEL
uint mmw(uint i) { return texelFetch(mm_wtex, int(i)).x; }
#else
uint mmw(uint i) { return mm_w[i]; }
#endif

// --- W steps in registers -------------------------------------------------------------------
// The K loop walks steps of MMC_BK elements. For each step and row an invocation loads the words
// the step needs into registers (struct MmcRegs, one per format) with mmc_load, then dequantises
// MMC_GROUPS groups of 8 elements with mmc_group: group g of step s covers elements
// mmc_group_elem(s, g) + 0..3 (lo) and + MMC_HI + 0..3 (hi) of the row. Fields at an even byte
// offset p of a region loaded from byte bb & ~3 (o2: bb % 4 == 2) are read with MMC_U32 / MMC_U16; p is a
// compile-time constant after unrolling, so the selects fold to one side per alignment.
#define MMC_FUNNEL(a, i) ((a[i] >> 16) | (a[(i) + 1u] << 16))
#define MMC_U32(a, o2, p)                                                              \
  ((((p) & 2u) == 0u) ? ((o2) ? MMC_FUNNEL(a, (p) >> 2) : a[(p) >> 2])                 \
                      : ((o2) ? a[((p) >> 2) + 1u] : MMC_FUNNEL(a, (p) >> 2)))
#define MMC_U16(a, o2, p)                                                              \
  ((((p) & 2u) == 0u) ? ((o2) ? a[(p) >> 2] >> 16 : a[(p) >> 2] & 0xFFFFu)            \
                      : ((o2) ? a[((p) >> 2) + 1u] & 0xFFFFu : a[(p) >> 2] >> 16))

// Word i of a region of `bytes` bytes at byte bb. When bb is word-aligned a last word lying wholly
// past the region (and maybe past the binding) is not read: the one before it is (never used).
uint mmc_word(uint bb, uint i, uint bytes) {
  const uint w = (bb >> 2) + i;
  if (4u * i < bytes) return mmw(w);
  return mmw((bb & 2u) != 0u ? w : w - 1u);
}
float mmc_i8(uint b) { return float(int(b << 24) >> 24); }
#if defined(FMT_F32)
float mmc_elem(uint rb, uint k) { return uintBitsToFloat(mmw((rb >> 2) + k)); }  // element k of the row at byte rb
#elif defined(FMT_F16) || defined(FMT_BF16)
float mmc_elem(uint rb, uint k) {
  const uint b = rb + 2u * k;
  const uint h = (mmw(b >> 2) >> ((b & 2u) * 8u)) & 0xFFFFu;
#if defined(FMT_F16)
  return unpackHalf2x16(h).x;
#else
  return uintBitsToFloat(h << 16);
#endif
}
#endif

#if defined(FMT_F32)
#define MMC_BK 8u
#define MMC_GROUPS 1u
#define MMC_HI 4u
struct MmcRegs { uint w[8]; };
MmcRegs mmc_load(uint rb, uint s) {
  MmcRegs r;
  [[unroll]] for (uint i = 0; i < 8u; ++i) r.w[i] = mmw((rb >> 2) + 8u * s + i);
  return r;
}
uint mmc_group_elem(uint s, uint g) { return MMC_BK * s; }
void mmc_group(MmcRegs r, uint g, out vec4 lo, out vec4 hi) {
  lo = uintBitsToFloat(uvec4(r.w[0], r.w[1], r.w[2], r.w[3]));
  hi = uintBitsToFloat(uvec4(r.w[4], r.w[5], r.w[6], r.w[7]));
}
#elif defined(FMT_F16) || defined(FMT_BF16)
#define MMC_BK 8u
#define MMC_GROUPS 1u
#define MMC_HI 4u
struct MmcRegs { uint w[5]; bool o2; };
MmcRegs mmc_load(uint rb, uint s) {
  MmcRegs r;
  const uint bb = rb + 16u * s;
  r.o2 = (bb & 2u) != 0u;
  [[unroll]] for (uint i = 0; i < 5u; ++i) r.w[i] = mmc_word(bb, i, 16u);
  return r;
}
uint mmc_group_elem(uint s, uint g) { return MMC_BK * s; }
vec2 mmc_pair(uint u) {
#if defined(FMT_F16)
  return unpackHalf2x16(u);
#else
  return uintBitsToFloat(uvec2(u << 16, u & 0xFFFF0000u));
#endif
}
void mmc_group(MmcRegs r, uint g, out vec4 lo, out vec4 hi) {
  lo = vec4(mmc_pair(MMC_U32(r.w, r.o2, 0u)), mmc_pair(MMC_U32(r.w, r.o2, 4u)));
  hi = vec4(mmc_pair(MMC_U32(r.w, r.o2, 8u)), mmc_pair(MMC_U32(r.w, r.o2, 12u)));
}
#elif defined(FMT_Q8_0) || defined(FMT_Q4_0) || defined(FMT_Q4_1) || defined(FMT_Q5_0) || defined(FMT_Q5_1)
// One 32-element block per step.
#define MMC_BK 32u
#define MMC_GROUPS 4u
#define MMC_NW ((BLOCK_BYTES + 2 + 3) / 4)
struct MmcRegs { uint w[MMC_NW]; bool o2; };
MmcRegs mmc_load(uint rb, uint s) {
  MmcRegs r;
  const uint bb = rb + uint(BLOCK_BYTES) * s;
  r.o2 = (bb & 2u) != 0u;
  [[unroll]] for (uint i = 0; i < MMC_NW; ++i) r.w[i] = mmc_word(bb, i, uint(BLOCK_BYTES));
  return r;
}
#if defined(FMT_Q8_0)
#define MMC_HI 4u
uint mmc_group_elem(uint s, uint g) { return MMC_BK * s + 8u * g; }
void mmc_group(MmcRegs r, uint g, out vec4 lo, out vec4 hi) {
  const float d = unpackHalf2x16(MMC_U16(r.w, r.o2, 0u)).x;
  lo = d * q_bytes_i(MMC_U32(r.w, r.o2, 2u + 8u * g));
  hi = d * q_bytes_i(MMC_U32(r.w, r.o2, 6u + 8u * g));
}
#else
#define MMC_HI 16u
uint mmc_group_elem(uint s, uint g) { return MMC_BK * s + 4u * g; }
void mmc_group(MmcRegs r, uint g, out vec4 lo, out vec4 hi) {
  const float d = unpackHalf2x16(MMC_U16(r.w, r.o2, 0u)).x;
#if defined(FMT_Q4_0)
  const float m = -8.0 * d;
#elif defined(FMT_Q5_0)
  const float m = -16.0 * d;
#else
  const float m = unpackHalf2x16(MMC_U16(r.w, r.o2, 2u)).x;
#endif
  const uint v = MMC_U32(r.w, r.o2, Q_QS + 4u * g);  // quant bytes 4g..4g+3 (quant.glsl's layout)
#if defined(FMT_Q5_0) || defined(FMT_Q5_1)
  // the elements' fifth bits: qh bits 4g.. (low nibbles) and 16 + 4g.. (high nibbles)
  const uint qh = MMC_U32(r.w, r.o2, uint(Q_QH));
  lo = q_bytes_u(q5_bytes(v & 0x0F0F0F0Fu, qh >> (4u * g))) * d + m;
  hi = q_bytes_u(q5_bytes((v >> 4) & 0x0F0F0F0Fu, qh >> (16u + 4u * g))) * d + m;
#else
  lo = q_bytes_u(v & 0x0F0F0F0Fu) * d + m;
  hi = q_bytes_u((v >> 4) & 0x0F0F0F0Fu) * d + m;
#endif
}
#endif
#elif defined(FMT_Q4_K) || defined(FMT_Q5_K)
// Steps of 64 elements (c = s % 4 of super-block s / 4; always word-aligned): the 16-byte header
// and the 32 quant bytes of sub-blocks 2c (low nibbles) and 2c + 1 (high nibbles); Q5_K also
// the 32 bytes of high bits, whose bits 2c and 2c + 1 are those two sub-blocks' (byte l: element
// l of each).
#define MMC_BK 64u
#define MMC_GROUPS 8u
#define MMC_HI 32u
#if defined(FMT_Q5_K)
#define MMC_SB_BYTES 176u
#define MMC_QS_WORD 12u  // after the header and the 8 words of high bits
struct MmcRegs { uint q[8]; uint h[8]; vec2 sm0, sm1; uint c2; };
#else
#define MMC_SB_BYTES 144u
#define MMC_QS_WORD 4u
struct MmcRegs { uint q[8]; vec2 sm0, sm1; };
#endif
uint mmc_hbyte(uint h[4], uint p) {  // header byte p (p < 16, not a constant)
  const uint w = p < 8u ? (p < 4u ? h[0] : h[1]) : (p < 12u ? h[2] : h[3]);
  return (w >> (8u * (p & 3u))) & 0xFFu;
}
vec2 mmc_scale_min(uint h[4], uint j) {  // (d * sc, dmin * m) of sub-block j
  uint sc, m;
  if (j < 4u) {
    sc = mmc_hbyte(h, 4u + j) & 63u;
    m = mmc_hbyte(h, 8u + j) & 63u;
  } else {
    const uint a = mmc_hbyte(h, 8u + j);
    sc = (a & 15u) | ((mmc_hbyte(h, j) >> 6) << 4);
    m = (a >> 4) | ((mmc_hbyte(h, 4u + j) >> 6) << 4);
  }
  return unpackHalf2x16(h[0]) * vec2(sc, m);
}
MmcRegs mmc_load(uint rb, uint s) {
  MmcRegs r;
  const uint bw = (rb + MMC_SB_BYTES * (s >> 2)) >> 2, c = s & 3u;
  uint h[4];
  [[unroll]] for (uint i = 0; i < 4u; ++i) h[i] = mmw(bw + i);
  [[unroll]] for (uint i = 0; i < 8u; ++i) r.q[i] = mmw(bw + MMC_QS_WORD + 8u * c + i);
#if defined(FMT_Q5_K)
  [[unroll]] for (uint i = 0; i < 8u; ++i) r.h[i] = mmw(bw + 4u + i);
  r.c2 = 2u * c;
#endif
  r.sm0 = mmc_scale_min(h, 2u * c);
  r.sm1 = mmc_scale_min(h, 2u * c + 1u);
  return r;
}
uint mmc_group_elem(uint s, uint g) { return MMC_BK * s + 4u * g; }
void mmc_group(MmcRegs r, uint g, out vec4 lo, out vec4 hi) {
  const uint v = r.q[g];
#if defined(FMT_Q5_K)
  const uint h = r.h[g] >> r.c2;  // the low nibbles' fifth bits at bit 0 of each byte, the high ones' at bit 1
  lo = r.sm0.x * q_bytes_u((v & 0x0F0F0F0Fu) | ((h & 0x01010101u) << 4)) - r.sm0.y;
  hi = r.sm1.x * q_bytes_u(((v >> 4) & 0x0F0F0F0Fu) | ((h & 0x02020202u) << 3)) - r.sm1.y;
#else
  lo = r.sm0.x * q_bytes_u(v & 0x0F0F0F0Fu) - r.sm0.y;
  hi = r.sm1.x * q_bytes_u((v >> 4) & 0x0F0F0F0Fu) - r.sm1.y;
#endif
}
#elif defined(FMT_Q6_K)
// Steps of 64 elements: part p = s % 2 of half h = (s / 2) % 2 of super-block s / 4. Group i < 8
// covers elements 128h + 32p + 4i .. (low nibbles of ql word at byte 64h + 32p + 4i) and
// 128h + 64 + 32p + 4i .. (high nibbles); the high bits are bits 2p.. and 2p + 4.. of qh word
// 32h + 4i; the scales are bytes 8h + 2p + i / 4 and 8h + 4 + 2p + i / 4.
#define MMC_BK 64u
#define MMC_GROUPS 8u
#define MMC_HI 64u
struct MmcRegs { uint ql[9]; uint qh[9]; uint sc[3]; float d; uint p; bool o2; };
MmcRegs mmc_load(uint rb, uint s) {
  MmcRegs r;
  const uint bb = rb + uint(BLOCK_BYTES) * (s >> 2), h = (s >> 1) & 1u;
  r.p = s & 1u;
  r.o2 = (bb & 2u) != 0u;
  [[unroll]] for (uint i = 0; i < 9u; ++i) r.ql[i] = mmw(((bb + 64u * h + 32u * r.p) >> 2) + i);
  [[unroll]] for (uint i = 0; i < 9u; ++i) r.qh[i] = mmw(((bb + 128u + 32u * h) >> 2) + i);
  [[unroll]] for (uint i = 0; i < 3u; ++i) r.sc[i] = mmw(((bb + 192u + 8u * h) >> 2) + i);
  const uint dw = mmw((bb + 208u) >> 2);
  r.d = unpackHalf2x16(r.o2 ? dw >> 16 : dw).x;
  return r;
}
uint mmc_group_elem(uint s, uint g) { return 256u * (s >> 2) + 128u * ((s >> 1) & 1u) + 32u * (s & 1u) + 4u * g; }
void mmc_group(MmcRegs r, uint i, out vec4 lo, out vec4 hi) {
  const uint v = MMC_U32(r.ql, r.o2, 4u * i);
  const uint w = MMC_U32(r.qh, r.o2, 4u * i) >> (2u * r.p);
  const uint ql = (v & 0x0F0F0F0Fu) | ((w & 0x03030303u) << 4);
  const uint qh = ((v >> 4) & 0x0F0F0F0Fu) | (((w >> 4) & 0x03030303u) << 4);
  // scale bytes 0..3 and 4..7 of this half; this part's are 2p + i / 4 of each
  const uint sh = 8u * (2u * r.p + (i >> 2));
  const float d0 = r.d * mmc_i8((MMC_U32(r.sc, r.o2, 0u) >> sh) & 0xFFu);
  const float d1 = r.d * mmc_i8((MMC_U32(r.sc, r.o2, 4u) >> sh) & 0xFFu);
  lo = d0 * (q_bytes_u(ql) - 32.0);
  hi = d1 * (q_bytes_u(qh) - 32.0);
}
#elif defined(FMT_Q2_K) || defined(FMT_Q3_K)
// Steps of 64 elements: shifts 2p (lo) and 2p + 1 (hi), p = s % 2, of half h = (s / 2) % 2 of
// super-block s / 4 (mul_mv_sb.glsl: element 128h + 32 shift + l sits at bits 2 shift of qs[32h + l],
// Q3_K's third bit at bit 4h + shift of hmask[l]). Group g < 8: lo elements 128h + 64p + 4g..
// and hi 32 further, both from quant word g of the half; their scale groups 8h + 4p + g / 4 and
// 2 further. Every field starts at a multiple of 4 within the block, so all share the block's
// alignment o2 (Q3_K's 110-byte blocks alternate; a Q2_K row may start at 2 mod 4); no word
// wholly past the block is loaded.
#define MMC_BK 64u
#define MMC_GROUPS 8u
#define MMC_HI 32u
#if defined(FMT_Q2_K)
#define MMC_QS 16u  // {u8 scales[16]; u8 qs[64]; f16 d, dmin}
#else
#define MMC_QS 32u  // {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}
#endif
struct MmcRegs {
  uint q[9];
#if defined(FMT_Q3_K)
  uint hm[9];
#endif
  vec4 d;  // the scales of groups lo g < 4, lo g >= 4, hi g < 4, hi g >= 4
#if defined(FMT_Q2_K)
  vec4 m;  // and their mins
#endif
  uint sh;  // bit of the lo quants in each byte (the hi ones' 2 above); Q3_K: + 4h.. of hmask
  bool o2;
};
// The 8 words from byte b (b % 4 == 2: 9 words, realigned by MMC_U32; else word 8 repeats word 7).
void mmc_words9(uint b, out uint a[9]) {
  const uint w = b >> 2;
  [[unroll]] for (uint i = 0; i < 8u; ++i) a[i] = mmw(w + i);
  a[8] = mmw((b & 2u) != 0u ? w + 8u : w + 7u);
}
uint mmc_u32_at(uint b) {  // the 4 bytes at byte b (even)
  const uint w = b >> 2;
  const bool o2 = (b & 2u) != 0u;
  const uint a0 = mmw(w), a1 = mmw(o2 ? w + 1u : w);
  return o2 ? (a0 >> 16) | (a1 << 16) : a0;
}
MmcRegs mmc_load(uint rb, uint s) {
  MmcRegs r;
  const uint bb = rb + uint(BLOCK_BYTES) * (s >> 2), h = (s >> 1) & 1u, p = s & 1u;
  r.o2 = (bb & 2u) != 0u;
  r.sh = 4u * p;
  mmc_words9(bb + MMC_QS + 32u * h, r.q);
#if defined(FMT_Q2_K)
  const uint sc = mmc_u32_at(bb + 8u * h + 4u * p);  // scale bytes of groups 8h + 4p + 0..3
  const vec2 dm = unpackHalf2x16(mmc_u32_at(bb + 80u));
  const vec4 c = q_bytes_u(sc & 0x0F0F0F0Fu), mn = q_bytes_u((sc >> 4) & 0x0F0F0F0Fu);
  r.d = dm.x * c;
  r.m = dm.y * mn;
#else
  mmc_words9(bb, r.hm);
  // group j = 8h + 4p + k: low 4 bits nibble h of scales[4p + k], top 2 bits 2 (2h + p) of scales[8 + k]
  const uint lo4 = (mmc_u32_at(bb + 96u + 4u * p) >> (4u * h)) & 0x0F0F0F0Fu;
  const uint hi2 = (mmc_u32_at(bb + 104u) >> (2u * (2u * h + p))) & 0x03030303u;
  const uint dw = mmw((bb + 108u) >> 2);
  const float d = unpackHalf2x16(r.o2 ? dw >> 16 : dw).x;
  r.d = d * (q_bytes_u(lo4 | (hi2 << 4)) - 32.0);
  r.sh |= (4u * h + 2u * p) << 8;  // hmask bit of the lo quants, in the second byte of sh
#endif
  return r;
}
uint mmc_group_elem(uint s, uint g) { return 256u * (s >> 2) + 128u * ((s >> 1) & 1u) + 64u * (s & 1u) + 4u * g; }
void mmc_group(MmcRegs r, uint g, out vec4 lo, out vec4 hi) {
  const uint v = MMC_U32(r.q, r.o2, 4u * g), sh = r.sh & 0xFFu;
  uint ql = (v >> sh) & 0x03030303u, qh = (v >> (sh + 2u)) & 0x03030303u;
  const uint k = g >> 2;
#if defined(FMT_Q2_K)
  lo = r.d[k] * q_bytes_u(ql) - r.m[k];
  hi = r.d[2u + k] * q_bytes_u(qh) - r.m[2u + k];
#else
  const uint hm = MMC_U32(r.hm, r.o2, 4u * g) >> (r.sh >> 8);
  ql |= (hm & 0x01010101u) << 2;
  qh |= ((hm >> 1) & 0x01010101u) << 2;
  lo = r.d[k] * (q_bytes_u(ql) - 4.0);
  hi = r.d[2u + k] * (q_bytes_u(qh) - 4.0);
#endif
}
#else
#error "mul_mm_cpu.comp: no register path for this format"
#endif

// --- X --------------------------------------------------------------------------------------
// X's view: R32G32B32A32_SFLOAT texels (X_VEC4: x_base and x_stride multiples of 4), else
// R32_SFLOAT. Elements i..i+3 (i a multiple of 4 when X_VEC4), and element i.
layout(constant_id = 5) const bool X_VEC4 = true;
// GLU: 0, Y = X W^T; 1 (SwiGLU) or 2 (GeGLU), Y[m][n] = act(X W[n]) * (X W_up[n]), W_up[n] the
// row pc.w_up bytes after W[n]: half of an invocation's TN rows are gate rows, half their up
// rows, and the gated unit is the epilogue (glu.glsl, as glu.comp computes it from stored
// products). A workgroup then covers wg * TN / 2 columns of Y.
layout(constant_id = 7) const uint GLU = 0u;
#include "glu.glsl"
vec4 mmc_x4(uint i) {
  if (X_VEC4) return texelFetch(mm_xtex, int(i >> 2));
  return vec4(texelFetch(mm_xtex, int(i)).x, texelFetch(mm_xtex, int(i + 1u)).x, texelFetch(mm_xtex, int(i + 2u)).x,
              texelFetch(mm_xtex, int(i + 3u)).x);
}
float mmc_x1(uint i) { return X_VEC4 ? texelFetch(mm_xtex, int(i >> 2))[i & 3u] : texelFetch(mm_xtex, int(i)).x; }
// Elements e..e+3 and e+MMC_HI..e+MMC_HI+3 of X row xr (element index of the row start): the
// same addresses in every lane.
void mmc_x(uint xr, uint e, out vec4 lo, out vec4 hi) {
  lo = mmc_x4(xr + e);
  hi = mmc_x4(xr + e + MMC_HI);
}

float mmc_dot8(vec4 a, vec4 b, vec4 c, vec4 d, float acc) {
  acc = fma(a.x, b.x, acc);
  acc = fma(a.y, b.y, acc);
  acc = fma(a.z, b.z, acc);
  acc = fma(a.w, b.w, acc);
  acc = fma(c.x, d.x, acc);
  acc = fma(c.y, d.y, acc);
  acc = fma(c.z, d.z, acc);
  return fma(c.w, d.w, acc);
}

void main() {
  const uint wg = gl_WorkGroupSize.x;
  const uint lid = gl_LocalInvocationID.x;
  // Workgroups walk M first (group.x), so consecutive ones reuse the same rows of W from cache.
  const uint TY = GLU != 0u ? TN / 2u : TN;  // columns of Y per invocation
  const uint m0 = gl_WorkGroupID.x * TM;
  const uint n0 = gl_WorkGroupID.y * wg * TY + lid;

  uint rb[TN];   // byte of row n0 + t * wg (clamped) in binding 0; with GLU, rows t >= TY are the up rows of rows t - TY
  uint xr[TM];   // element of row m0 + j (clamped) in binding 1
  [[unroll]] for (uint t = 0; t < TN; ++t) {
    const uint tt = t < TY ? t : t - TY;
    rb[t] = pc.w_base + min(n0 + tt * wg, pc.N - 1u) * pc.w_row_bytes + (t < TY ? 0u : pc.w_up);
  }
  [[unroll]] for (uint j = 0; j < TM; ++j) xr[j] = pc.x_base + min(m0 + j, pc.M - 1u) * pc.x_stride;

  float acc[TN][TM];
  [[unroll]] for (uint t = 0; t < TN; ++t)
    [[unroll]] for (uint j = 0; j < TM; ++j) acc[t][j] = 0.0;

  const uint steps = pc.K / MMC_BK;
  for (uint s = 0; s < steps; ++s) {
    MmcRegs r[TN];
    [[unroll]] for (uint t = 0; t < TN; ++t) r[t] = mmc_load(rb[t], s);
    [[unroll]] for (uint g = 0; g < MMC_GROUPS; ++g) {
      const uint e = mmc_group_elem(s, g);
      vec4 xlo[TM], xhi[TM];
      [[unroll]] for (uint j = 0; j < TM; ++j) mmc_x(xr[j], e, xlo[j], xhi[j]);
      [[unroll]] for (uint t = 0; t < TN; ++t) {
        vec4 lo, hi;
        mmc_group(r[t], g, lo, hi);
        [[unroll]] for (uint j = 0; j < TM; ++j) acc[t][j] = mmc_dot8(lo, xlo[j], hi, xhi[j], acc[t][j]);
      }
    }
  }

#if FMT_PLAIN
  // The last K % 8 elements, one at a time.
  for (uint k = steps * MMC_BK; k < pc.K; ++k) {
    [[unroll]] for (uint t = 0; t < TN; ++t) {
      const float w = mmc_elem(rb[t], k);
      [[unroll]] for (uint j = 0; j < TM; ++j) acc[t][j] = fma(w, mmc_x1(xr[j] + k), acc[t][j]);
    }
  }
#endif

  [[unroll]] for (uint t = 0; t < TY; ++t) {
    const uint n = n0 + t * wg;
    if (n >= pc.N) continue;
    [[unroll]] for (uint j = 0; j < TM; ++j) {
      const uint m = m0 + j;
      float v = acc[t][j];
      // (min(): with GLU off, TY = TN and the index would pass the array in code that folds away.)
      if (GLU == 1u) v = glu_silu(v) * acc[min(t + TY, TN - 1u)][j];
      if (GLU == 2u) v = glu_gelu_tanh(v) * acc[min(t + TY, TN - 1u)][j];
      if (m < pc.M) mm_store(pc.y_base + m * pc.y_stride + n, v);
    }
  }
}
