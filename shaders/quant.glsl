// shaders/quant.glsl — GGUF block layouts for kernels that read weights in place.
//
// Usage (include after common.glsl):
//
//     #define QBUF wdata            // a `uint` array (std430 storage buffer) holding the blocks
//     #include "quant.glsl"         // compile with exactly one -DFMT_<TYPE>=1, e.g. -DFMT_Q4_K=1
//
// Formats: FMT_F32, FMT_F16, FMT_BF16, FMT_Q8_0, FMT_Q4_0, FMT_Q4_1, FMT_Q5_0, FMT_Q5_1,
// FMT_Q2_K, FMT_Q3_K, FMT_Q4_K, FMT_Q5_K, FMT_Q6_K. Byte layouts are ggml's (see
// engine/quant.h, the C++ reference every kernel is tested against).
//
// Provides (API kept stable; other kernel families rely on it):
//   QK            elements per block (1 for F32/F16/BF16, 32 for Q*_0/Q*_1, 256 for *_K);
//                 a plain integer literal, usable in #if
//   BLOCK_BYTES   bytes per block on the device (plain integer literal): GGUF's, except Q6_K's
//                 224 (its 210 bytes and 14 bytes of padding; engine/quant.h)
//   FMT_PLAIN     1 for F32/F16/BF16 (no blocks: element j sits at byte j * BLOCK_BYTES)
//   float dq_elem(uint block_byte, uint j)
//                 element j of the block starting at byte block_byte of QBUF. For plain
//                 formats j may be any element index counted from block_byte.
//   vec4 dq_vec4(uint block_byte, uint j)
//                 elements j, j+1, j+2, j+3 (j % 4 == 0, j + 3 < QK; for plain formats any
//                 j % 4 == 0, elements counted from block_byte).
//   Group access (the fast path of the matrix-vector kernels), quantised formats only:
//   DQ_GROUPS     groups per block; a group is 8 elements that share one or two 32-bit
//                 loads of quants: elements dq_group_elem(g) + 0..3 and + DQ_GROUP_HI + 0..3
//   uint dq_group_elem(uint g)
//   void dq_group(uint block_byte, uint g, out vec4 lo, out vec4 hi)
//
// Alignment: block_byte must be even (every GGUF block is an even number of bytes and every
// field sits at an even offset); a multiple of 4 for F32, Q4_K and Q5_K. Reads never touch bytes
// outside the block except that a 32-bit read at an offset of 2 mod 4 reads the whole aligned
// words around it: bind QBUF with its range rounded up to a multiple of 4 bytes.
//
// With CHORUS_FP16 and QBUF16 defined (a float16_t array aliasing the same binding), fp16
// fields are read through it instead of being unpacked from words.

#ifndef QBUF
#error "define QBUF (the uint array holding the blocks) before including quant.glsl"
#endif

// --- raw reads ------------------------------------------------------------------------------

uint q_u8(uint b) { return CH_U8(QBUF, b); }
uint q_u16(uint b) { return CH_U16(QBUF, b); }
#if CHORUS_FP16 && defined(QBUF16)
float q_f16(uint b) { return float(QBUF16[b >> 1]); }
#else
float q_f16(uint b) { return CH_F16(QBUF, b); }
#endif
// The 32-bit little-endian word at an even byte offset b.
uint q_u32(uint b) {
  const uint w = b >> 2;
  if ((b & 2u) == 0u) return QBUF[w];
  return (QBUF[w] >> 16) | (QBUF[w + 1u] << 16);
}
// The 32-bit word at a byte offset known to be a multiple of 4.
uint q_u32a(uint b) { return QBUF[b >> 2]; }

// Bytes of a word as four floats (unsigned / signed).
vec4 q_bytes_u(uint v) { return vec4(v & 0xFFu, (v >> 8) & 0xFFu, (v >> 16) & 0xFFu, v >> 24); }
vec4 q_bytes_i(uint v) { return vec4(ivec4(int(v << 24), int(v << 16), int(v << 8), int(v)) >> 24); }

// --- formats --------------------------------------------------------------------------------

#if defined(FMT_F32)
#define QK 1
#define BLOCK_BYTES 4
#define FMT_PLAIN 1
float dq_elem(uint bb, uint j) { return uintBitsToFloat(QBUF[(bb >> 2) + j]); }
vec4 dq_vec4(uint bb, uint j) {
  const uint w = (bb >> 2) + j;
  return uintBitsToFloat(uvec4(QBUF[w], QBUF[w + 1u], QBUF[w + 2u], QBUF[w + 3u]));
}

#elif defined(FMT_F16)
#define QK 1
#define BLOCK_BYTES 2
#define FMT_PLAIN 1
float dq_elem(uint bb, uint j) { return q_f16(bb + 2u * j); }
vec4 dq_vec4(uint bb, uint j) {
  const uint b = bb + 2u * j;
  return vec4(unpackHalf2x16(q_u32(b)), unpackHalf2x16(q_u32(b + 4u)));
}

#elif defined(FMT_BF16)
#define QK 1
#define BLOCK_BYTES 2
#define FMT_PLAIN 1
float dq_elem(uint bb, uint j) { return ch_bf16_to_f32(q_u16(bb + 2u * j)); }
vec4 dq_vec4(uint bb, uint j) {
  const uint b = bb + 2u * j;
  const uint u0 = q_u32(b), u1 = q_u32(b + 4u);
  return uintBitsToFloat(uvec4(u0 << 16, u0 & 0xFFFF0000u, u1 << 16, u1 & 0xFFFF0000u));
}

#elif defined(FMT_Q8_0)
// {f16 d; i8 qs[32]}: x = d * q
#define QK 32
#define BLOCK_BYTES 34
#define DQ_GROUPS 4
#define DQ_GROUP_HI 4
float dq_elem(uint bb, uint j) { return q_f16(bb) * float(CH_I8(QBUF, bb + 2u + j)); }
vec4 dq_vec4(uint bb, uint j) { return q_f16(bb) * q_bytes_i(q_u32(bb + 2u + j)); }
uint dq_group_elem(uint g) { return 8u * g; }
void dq_group(uint bb, uint g, out vec4 lo, out vec4 hi) {
  const float d = q_f16(bb);
  const uint b = bb + 2u + 8u * g;
  lo = d * q_bytes_i(q_u32(b));
  hi = d * q_bytes_i(q_u32(b + 4u));
}

#elif defined(FMT_Q4_0) || defined(FMT_Q4_1) || defined(FMT_Q5_0) || defined(FMT_Q5_1)
// Q4_0 {f16 d; qs[16]}               x = d * (q - 8)
// Q4_1 {f16 d, m; qs[16]}            x = d * q + m
// Q5_0 {f16 d; qh[4]; qs[16]}        x = d * (q - 16), bit 4 of q[j] = bit j of qh
// Q5_1 {f16 d, m; qh[4]; qs[16]}     x = d * q + m
// qs[j]: low nibble = element j, high nibble = element j + 16.
#define QK 32
#define DQ_GROUPS 4
#define DQ_GROUP_HI 16
#if defined(FMT_Q4_0)
#define BLOCK_BYTES 18
#define Q_QS 2u
#elif defined(FMT_Q4_1)
#define BLOCK_BYTES 20
#define Q_QS 4u
#define Q_HAS_MIN 1
#elif defined(FMT_Q5_0)
#define BLOCK_BYTES 22
#define Q_QH 2u
#define Q_QS 6u
#else
#define BLOCK_BYTES 24
#define Q_QH 4u
#define Q_QS 8u
#define Q_HAS_MIN 1
#endif
// Four quants (elements j..j+3, j % 4 == 0) as unsigned values in a vec4.
vec4 q_quants4(uint bb, uint j) {
  uint v = q_u32(bb + Q_QS + (j & 15u));
  v = (j < 16u ? v : v >> 4) & 0x0F0F0F0Fu;
#ifdef Q_QH
  const uint h = (q_u32(bb + Q_QH) >> j) & 0xFu;  // bit 4 of elements j..j+3
  v |= ((h & 1u) << 4) | ((h & 2u) << 11) | ((h & 4u) << 18) | ((h & 8u) << 25);
#endif
  return q_bytes_u(v);
}
float dq_elem(uint bb, uint j) {
  uint q = (q_u8(bb + Q_QS + (j & 15u)) >> (j < 16u ? 0u : 4u)) & 0xFu;
#ifdef Q_QH
  q |= ((q_u32(bb + Q_QH) >> j) & 1u) << 4;
#endif
#ifdef Q_HAS_MIN
  return float(q) * q_f16(bb) + q_f16(bb + 2u);
#elif defined(Q_QH)
  return float(int(q) - 16) * q_f16(bb);
#else
  return float(int(q) - 8) * q_f16(bb);
#endif
}
vec4 dq_vec4(uint bb, uint j) {
  const vec4 q = q_quants4(bb, j);
#ifdef Q_HAS_MIN
  return q * q_f16(bb) + q_f16(bb + 2u);
#elif defined(Q_QH)
  return (q - 16.0) * q_f16(bb);
#else
  return (q - 8.0) * q_f16(bb);
#endif
}
uint dq_group_elem(uint g) { return 4u * g; }
void dq_group(uint bb, uint g, out vec4 lo, out vec4 hi) {
  const uint v = q_u32(bb + Q_QS + 4u * g);
  uint l = v & 0x0F0F0F0Fu, u = (v >> 4) & 0x0F0F0F0Fu;
#ifdef Q_QH
  const uint qh = q_u32(bb + Q_QH);
  const uint hl = (qh >> (4u * g)) & 0xFu, hu = (qh >> (4u * g + 16u)) & 0xFu;
  l |= ((hl & 1u) << 4) | ((hl & 2u) << 11) | ((hl & 4u) << 18) | ((hl & 8u) << 25);
  u |= ((hu & 1u) << 4) | ((hu & 2u) << 11) | ((hu & 4u) << 18) | ((hu & 8u) << 25);
#endif
  const float d = q_f16(bb);
#ifdef Q_HAS_MIN
  const float m = q_f16(bb + 2u);
  lo = q_bytes_u(l) * d + m;
  hi = q_bytes_u(u) * d + m;
#else
#ifdef Q_QH
  const float off = 16.0;
#else
  const float off = 8.0;
#endif
  lo = (q_bytes_u(l) - off) * d;
  hi = (q_bytes_u(u) - off) * d;
#endif
}

#elif defined(FMT_Q2_K)
// {u8 scales[16]; u8 qs[64]; f16 d; f16 dmin}
// element e = 128h + 32s + l: q = bits 2s..2s+1 of qs[32h + l];
// x = d * (scales[e/16] & 15) * q - dmin * (scales[e/16] >> 4)
#define QK 256
#define BLOCK_BYTES 84
#define DQ_GROUPS 32
#define DQ_GROUP_HI 32
float q2k_sub(uint bb, uint i, uint q) {
  const uint sc = q_u8(bb + i);
  return q_f16(bb + 80u) * float(sc & 15u) * float(q) - q_f16(bb + 82u) * float(sc >> 4);
}
float dq_elem(uint bb, uint e) {
  const uint q = (q_u8(bb + 16u + 32u * (e >> 7) + (e & 31u)) >> (2u * ((e >> 5) & 3u))) & 3u;
  return q2k_sub(bb, e >> 4, q);
}
vec4 q2k_vec4(uint bb, uint e, uint v) {
  // v: the qs word holding elements e..e+3 (already loaded)
  const uint q = (v >> (2u * ((e >> 5) & 3u))) & 0x03030303u;
  const uint sc = q_u8(bb + (e >> 4));
  const vec2 dm = vec2(q_f16(bb + 80u), q_f16(bb + 82u));
  return dm.x * float(sc & 15u) * q_bytes_u(q) - dm.y * float(sc >> 4);
}
vec4 dq_vec4(uint bb, uint e) { return q2k_vec4(bb, e, q_u32(bb + 16u + 32u * (e >> 7) + (e & 31u))); }
// group g: h = g / 16, pair of shifts s0 = 2 * ((g / 8) % 2), l = 4 * (g % 8)
uint dq_group_elem(uint g) { return 128u * (g >> 4) + 64u * ((g >> 3) & 1u) + 4u * (g & 7u); }
void dq_group(uint bb, uint g, out vec4 lo, out vec4 hi) {
  const uint e = dq_group_elem(g);
  const uint v = q_u32(bb + 16u + 32u * (g >> 4) + 4u * (g & 7u));
  lo = q2k_vec4(bb, e, v);
  hi = q2k_vec4(bb, e + 32u, v);
}

#elif defined(FMT_Q3_K)
// {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}
// element e = 128h + 32s + l: low2 = bits 2s..2s+1 of qs[32h + l]; bit (e/32) of hmask[l] set
// means q = low2, clear means q = low2 - 4. Scale i = e/16 (6 bits, bias 32): low 4 bits =
// nibble (i/8) of scales[i%8], high 2 bits = bits 2*(i/4).. of scales[8 + i%4].
// x = d * (sc - 32) * q
#define QK 256
#define BLOCK_BYTES 110
#define DQ_GROUPS 32
#define DQ_GROUP_HI 32
float q3k_scale(uint bb, uint i) {
  const uint lo = (q_u8(bb + 96u + (i & 7u)) >> (4u * (i >> 3))) & 15u;
  const uint hi = (q_u8(bb + 104u + (i & 3u)) >> (2u * (i >> 2))) & 3u;
  return q_f16(bb + 108u) * float(int(lo | (hi << 4)) - 32);
}
float dq_elem(uint bb, uint e) {
  const uint l = e & 31u;
  const uint low2 = (q_u8(bb + 32u + 32u * (e >> 7) + l) >> (2u * ((e >> 5) & 3u))) & 3u;
  const uint hb = (q_u8(bb + l) >> (e >> 5)) & 1u;
  return q3k_scale(bb, e >> 4) * float(int(low2) - (hb != 0u ? 0 : 4));
}
vec4 q3k_vec4(uint bb, uint e, uint v, uint hm) {
  // v: qs word holding low bits of e..e+3; hm: hmask word of bytes l..l+3
  const uint q = (v >> (2u * ((e >> 5) & 3u))) & 0x03030303u;
  const uint h = (hm >> (e >> 5)) & 0x01010101u;  // 1 = keep, 0 = subtract 4
  return q3k_scale(bb, e >> 4) * (q_bytes_u(q) - 4.0 + 4.0 * q_bytes_u(h));
}
vec4 dq_vec4(uint bb, uint e) {
  const uint l = e & 31u;
  return q3k_vec4(bb, e, q_u32(bb + 32u + 32u * (e >> 7) + l), q_u32(bb + l));
}
uint dq_group_elem(uint g) { return 128u * (g >> 4) + 64u * ((g >> 3) & 1u) + 4u * (g & 7u); }
void dq_group(uint bb, uint g, out vec4 lo, out vec4 hi) {
  const uint e = dq_group_elem(g);
  const uint v = q_u32(bb + 32u + 32u * (g >> 4) + 4u * (g & 7u));
  const uint hm = q_u32(bb + 4u * (g & 7u));
  lo = q3k_vec4(bb, e, v, hm);
  hi = q3k_vec4(bb, e + 32u, v, hm);
}

#elif defined(FMT_Q4_K) || defined(FMT_Q5_K)
// Q4_K {f16 d, dmin; u8 scales[12]; u8 qs[128]}
// Q5_K {f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}
// element e = 64c + 32h + l: low 4 bits of q = nibble h of qs[32c + l]; (Q5_K) bit 4 of q =
// bit (e/32) of qh[l]. Sub-block j = e/32 has a 6-bit scale sc and min m (unpack below);
// x = d * sc * q - dmin * m
#define QK 256
#define DQ_GROUPS 32
#define DQ_GROUP_HI 32
#if defined(FMT_Q4_K)
#define BLOCK_BYTES 144
#define Q_QS 16u
#else
#define BLOCK_BYTES 176
#define Q_QH 16u
#define Q_QS 48u
#endif
// (d * sc, dmin * m) of sub-block j
vec2 qk_scale_min(uint bb, uint j) {
  uint sc, m;
  if (j < 4u) {
    sc = q_u8(bb + 4u + j) & 63u;
    m = q_u8(bb + 8u + j) & 63u;
  } else {
    const uint a = q_u8(bb + 8u + j);  // scales[j + 4]
    sc = (a & 15u) | ((q_u8(bb + j) >> 6) << 4);        // scales[j - 4] = byte 4 + j - 4
    m = (a >> 4) | ((q_u8(bb + 4u + j) >> 6) << 4);     // scales[j]
  }
#if CHORUS_FP16 && defined(QBUF16)
  return vec2(q_f16(bb), q_f16(bb + 2u)) * vec2(sc, m);
#else
  return unpackHalf2x16(q_u32a(bb)) * vec2(sc, m);
#endif
}
float dq_elem(uint bb, uint e) {
  uint q = (q_u8(bb + Q_QS + 32u * (e >> 6) + (e & 31u)) >> (4u * ((e >> 5) & 1u))) & 15u;
#ifdef Q_QH
  q |= ((q_u8(bb + Q_QH + (e & 31u)) >> (e >> 5)) & 1u) << 4;
#endif
  const vec2 sm = qk_scale_min(bb, e >> 5);
  return sm.x * float(q) - sm.y;
}
// v: the qs word holding e..e+3's low bits; qh: the qh word for bytes l..l+3 (Q5_K)
vec4 qk_vec4(uint bb, uint e, uint v, uint qh) {
  uint q = (v >> (4u * ((e >> 5) & 1u))) & 0x0F0F0F0Fu;
#ifdef Q_QH
  q |= ((qh >> (e >> 5)) & 0x01010101u) << 4;
#endif
  const vec2 sm = qk_scale_min(bb, e >> 5);
  return sm.x * q_bytes_u(q) - sm.y;
}
vec4 dq_vec4(uint bb, uint e) {
  const uint l = e & 31u;
#ifdef Q_QH
  const uint qh = q_u32(bb + Q_QH + l);
#else
  const uint qh = 0u;
#endif
  return qk_vec4(bb, e, q_u32(bb + Q_QS + 32u * (e >> 6) + l), qh);
}
uint dq_group_elem(uint g) { return 64u * (g >> 3) + 4u * (g & 7u); }
void dq_group(uint bb, uint g, out vec4 lo, out vec4 hi) {
  const uint e = dq_group_elem(g);
  const uint v = q_u32(bb + Q_QS + 4u * g);
#ifdef Q_QH
  const uint qh = q_u32(bb + Q_QH + 4u * (g & 7u));
#else
  const uint qh = 0u;
#endif
  lo = qk_vec4(bb, e, v, qh);
  hi = qk_vec4(bb, e + 32u, v, qh);
}

#elif defined(FMT_Q6_K)
// {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d} and, on the device, 14 zero bytes of padding
// (engine/quant.h, device_block_bytes: every block 16-byte aligned)
// element e = 128h + r: low 4 bits of q = nibble (r/64) of ql[64h + r%64]; high 2 bits =
// bits 2*(r/32).. of qh[32h + r%32]; x = d * scales[e/16] * (q - 32)
#define QK 256
#define BLOCK_BYTES 224
#define DQ_GROUPS 32
#define DQ_GROUP_HI 64
float dq_elem(uint bb, uint e) {
  const uint h = e >> 7, r = e & 127u;
  const uint lo = (q_u8(bb + 64u * h + (r & 63u)) >> (4u * (r >> 6))) & 15u;
  const uint hi = (q_u8(bb + 128u + 32u * h + (r & 31u)) >> (2u * (r >> 5))) & 3u;
  return q_f16(bb + 208u) * float(CH_I8(QBUF, bb + 192u + (e >> 4))) * float(int(lo | (hi << 4)) - 32);
}
// v: ql word with e..e+3 low bits; w: qh word with e..e+3 high bits
vec4 q6k_vec4(uint bb, uint e, uint v, uint w) {
  const uint r = e & 127u;
  const uint q = ((v >> (4u * (r >> 6))) & 0x0F0F0F0Fu) | (((w >> (2u * (r >> 5))) & 0x03030303u) << 4);
  return q_f16(bb + 208u) * float(CH_I8(QBUF, bb + 192u + (e >> 4))) * (q_bytes_u(q) - 32.0);
}
vec4 dq_vec4(uint bb, uint e) {
  const uint h = e >> 7, r = e & 127u;
  return q6k_vec4(bb, e, q_u32(bb + 64u * h + (r & 63u)), q_u32(bb + 128u + 32u * h + (r & 31u)));
}
// group g: h = g / 16, i = g % 16: ql word at 64h + 4i holds elements 128h + 4i (low
// nibbles) and 128h + 4i + 64 (high nibbles)
uint dq_group_elem(uint g) { return 128u * (g >> 4) + 4u * (g & 15u); }
void dq_group(uint bb, uint g, out vec4 lo, out vec4 hi) {
  const uint e = dq_group_elem(g);
  const uint v = q_u32(bb + 4u * g);
  const uint w = q_u32(bb + 128u + 32u * (g >> 4) + 4u * (g & 7u));
  lo = q6k_vec4(bb, e, v, w);
  hi = q6k_vec4(bb, e + 64u, v, w);
}

#else
#error "quant.glsl: define one FMT_<TYPE> (FMT_F32, FMT_Q4_K, ...)"
#endif

#ifndef FMT_PLAIN
#define FMT_PLAIN 0
#endif
