// shaders/mul_mv_sb.glsl — the superblock dot products shared by mul_mv.comp (storage-buffer
// loads) and mul_mv_texel.comp (texel-buffer loads): per 256 elements of one row, the format's
// bytes as SB_WORDS 32-bit words W[], and x prepared once per 256 elements for all rows
// (sb_x_finish). Q4_0, Q8_0, Q4_K and Q6_K; Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q5_K, F16 and BF16
// in mul_mv_texel.comp only (FMT_<TYPE>, set by shaders/matvec.cmake).
// What the arithmetic does and why is in mul_mv.comp's superblock comment.

// Bytes per 256 elements on the device, and 32-bit words loaded per superblock (Q6_K: GGUF's
// 210 bytes and 14 bytes of padding, engine/quant.h; the padding is loaded, never used).
#if defined(FMT_Q8_0)
#define SB_BYTES 272u
#define SB_WORDS 68
#elif defined(FMT_Q6_K)
#define SB_BYTES 224u
#define SB_WORDS 56
#elif defined(FMT_Q4_1)
#define SB_BYTES 160u
#define SB_WORDS 40
#elif defined(FMT_Q5_0) || defined(FMT_Q5_K)
#define SB_BYTES 176u
#define SB_WORDS 44
#elif defined(FMT_Q5_1)
#define SB_BYTES 192u
#define SB_WORDS 48
#elif defined(FMT_Q2_K)
#define SB_BYTES 84u
#define SB_WORDS 21
#elif defined(FMT_Q3_K)
#define SB_BYTES 110u
#define SB_WORDS 28  // the last word's high half lies past the block (loaded, never used)
#elif defined(FMT_F16) || defined(FMT_BF16)
#define SB_BYTES 512u  // 256 elements of 2 bytes, taken as 8 blocks of 32 like the Q*_0 formats
#define SB_WORDS 128
#define SB_PLAIN 1
#else
#define SB_BYTES 144u
#define SB_WORDS 36
#endif

// x of one superblock, each element multiplied by 2^-(bit of its quant in the word the kernel
// masks it from), and the sums of x (unscaled) over the format's scale groups.
#if defined(FMT_Q6_K) || defined(FMT_Q2_K) || defined(FMT_Q3_K)
#define SB_GROUPS 16  // 16-element groups
#else
#define SB_GROUPS 8   // 32-element groups
#endif
#if defined(FMT_Q4_K) && defined(SB_Q4K_MASKED_SCALES)
// (mul_mv_texel.comp) Q4_K's 6-bit scales and mins are masked in place too: sub-block g's
// sit at bit 8 (g % 4) of their word, so its x and x sum are also multiplied by 2^-8 (g % 4).
float sb_group_scale(uint g) {
  return (g & 3u) == 0u ? 1.0 : (g & 3u) == 1u ? 1.0 / 256.0 : (g & 3u) == 2u ? 1.0 / 65536.0 : 1.0 / 16777216.0;
}
#endif
vec4 sb_scale(uint j) {  // j: index of the vec4 in the superblock
#if defined(SB_PLAIN)
  return vec4(1.0);  // whole f16 / bf16 values, nothing masked
#elif defined(FMT_Q4_0) || defined(FMT_Q4_1) || defined(FMT_Q4_K)
  // low nibble of byte k at bit 8k; high nibble at 8k + 4, byte 3's masked after >> 4
#if defined(FMT_Q4_0) || defined(FMT_Q4_1)
  const bool hi = (j & 4u) != 0u;  // elements 16..31 of each block
#else
  const bool hi = (j & 8u) != 0u;  // elements 32..63 of each 64
#endif
  const vec4 s = hi ? vec4(1.0 / 16.0, 1.0 / 4096.0, 1.0 / 1048576.0, 1.0 / 16777216.0)
                    : vec4(1.0, 1.0 / 256.0, 1.0 / 65536.0, 1.0 / 16777216.0);
#if defined(FMT_Q4_K) && defined(SB_Q4K_MASKED_SCALES)
  return s * sb_group_scale(j >> 3);  // and the scale's bit in its word
#else
  return s;
#endif
#elif defined(FMT_Q8_0)
  return vec4(1.0, 1.0 / 256.0, 1.0 / 65536.0, 1.0 / 65536.0);  // byte 3 masked after >> 8
#else
  return vec4(1.0, 1.0 / 256.0, 1.0 / 65536.0, 1.0 / 16777216.0);
#endif
}
// The sums of x over the scale groups, then each x scaled by sb_scale (xs holds x on entry).
void sb_x_finish(inout vec4 xs[64], out float xsum[SB_GROUPS]) {
  [[unroll]] for (uint g = 0u; g < uint(SB_GROUPS); ++g) {
    const uint n = 64u / uint(SB_GROUPS);  // vec4s per group
    vec4 t = vec4(0.0);
    [[unroll]] for (uint j = 0u; j < n; ++j) t += xs[n * g + j];
    xsum[g] = (t.x + t.y) + (t.z + t.w);
#if defined(FMT_Q4_K) && defined(SB_Q4K_MASKED_SCALES)
    xsum[g] *= sb_group_scale(g);
#endif
  }
  [[unroll]] for (uint j = 0u; j < 64u; ++j) xs[j] *= sb_scale(j);
}

// Quants masked in place: the four bytes' low nibbles, high nibbles, whole bytes.
vec4 nib_lo(uint v) { return vec4(ivec4(v & 0x0Fu, v & 0x0F00u, v & 0x0F0000u, v & 0x0F000000u)); }
vec4 nib_hi(uint v) { return vec4(ivec4(v & 0xF0u, v & 0xF000u, v & 0xF00000u, (v >> 4) & 0x0F000000u)); }

#if defined(FMT_Q4_0) || defined(FMT_Q4_1)
// Sum of q * x over one 32-element block of nibbles (Q4_0, Q4_1): its 16 quant bytes as the
// words v (low nibbles: elements 0..15, high nibbles: 16..31), x in xs[x0 .. x0 + 7].
float nib_block_dot(const uint v[4], const vec4 xs[64], uint x0) {
  vec4 sl = vec4(0.0), sh = vec4(0.0);
  [[unroll]] for (uint j = 0u; j < 4u; ++j) {
    sl += nib_lo(v[j]) * xs[x0 + j];
    sh += nib_hi(v[j]) * xs[x0 + 4u + j];
  }
  sl += sh;
  return (sl.x + sl.y) + (sl.z + sl.w);
}
#endif

#if defined(FMT_Q5_0) || defined(FMT_Q5_1) || defined(FMT_Q5_K)
// 5-bit quants masked in place (q5_bytes, common.glsl), a whole byte each (at most 31 << 24: exact in an int and a float);
// x scaled by sb_scale's byte scales.
vec4 q5_vec(uint v) { return vec4(ivec4(v & 0xFFu, v & 0xFF00u, v & 0xFF0000u, v & 0xFF000000u)); }
#endif
#if defined(FMT_Q5_0) || defined(FMT_Q5_1)
// Sum of q * x over one 32-element block: qs its 16 quant bytes as words, qh its high bits
// (bit j: element j), x in xs[x0 .. x0 + 7] (elements 0..15 the low nibbles, 16..31 the high).
float q5_block_dot(const uint qs[4], uint qh, const vec4 xs[64], uint x0) {
  vec4 sl = vec4(0.0), sh = vec4(0.0);
  [[unroll]] for (uint j = 0u; j < 4u; ++j) {
    sl += q5_vec(q5_bytes(qs[j] & 0x0F0F0F0Fu, qh >> (4u * j))) * xs[x0 + j];
    sh += q5_vec(q5_bytes((qs[j] >> 4) & 0x0F0F0F0Fu, qh >> (16u + 4u * j))) * xs[x0 + 4u + j];
  }
  sl += sh;
  return (sl.x + sl.y) + (sl.z + sl.w);
}
#endif

#if defined(SB_PLAIN)
// Four elements from two words of f16 or bf16 pairs (element 2i in the low half of word i).
vec4 plain4(uint w0, uint w1) {
#if defined(FMT_F16)
  return vec4(unpackHalf2x16(w0), unpackHalf2x16(w1));
#else
  return vec4(uintBitsToFloat(w0 << 16), uintBitsToFloat(w0 & 0xFFFF0000u), uintBitsToFloat(w1 << 16),
              uintBitsToFloat(w1 & 0xFFFF0000u));
#endif
}
#endif

#if defined(FMT_Q4_0) || defined(FMT_Q8_0) || defined(FMT_Q4_1) || defined(FMT_Q5_0) || defined(FMT_Q5_1) || defined(SB_PLAIN)
// Formats of 32-element blocks (F16 and BF16 taken as such): K may end in a partial superblock of whole blocks. sb_dot_n
// sums the first nblk blocks (the others, which may hold any bytes, contribute exactly 0: they
// are dropped by a select, never multiplied); with nblk a constant 8 the selects fold away.
#define SB_TAIL 1
float sb_dot_n(const uint W[SB_WORDS], const vec4 xs[64], const float xsum[SB_GROUPS], uint nblk);
float sb_dot(const uint W[SB_WORDS], const vec4 xs[64], const float xsum[SB_GROUPS]) { return sb_dot_n(W, xs, xsum, 8u); }
#endif

#if defined(FMT_Q4_K) || defined(FMT_Q5_K)
// The 6-bit scales and mins of Q4_K's and Q5_K's 8 sub-blocks from the 12 bytes s0, s1, s2:
// scales[0..3] and [4..7] hold sc, m of j < 4 in their low 6 bits; scales[8..11] the low 4
// bits of sc, m of j >= 4, whose top 2 bits are the top 2 of scales[j - 4] and scales[j].
void k4_scales_mins(uint s0, uint s1, uint s2, out float sc[8], out float mn[8]) {
  const uint sc_lo = s0 & 0x3F3F3F3Fu, m_lo = s1 & 0x3F3F3F3Fu;
  const uint sc_hi = (s2 & 0x0F0F0F0Fu) | (((s0 >> 6) & 0x03030303u) << 4);
  const uint m_hi = ((s2 >> 4) & 0x0F0F0F0Fu) | (((s1 >> 6) & 0x03030303u) << 4);
  const vec4 sc0 = vec4(ivec4(sc_lo & 0xFFu, (sc_lo >> 8) & 0xFFu, (sc_lo >> 16) & 0xFFu, sc_lo >> 24));
  const vec4 sc1 = vec4(ivec4(sc_hi & 0xFFu, (sc_hi >> 8) & 0xFFu, (sc_hi >> 16) & 0xFFu, sc_hi >> 24));
  const vec4 m0 = vec4(ivec4(m_lo & 0xFFu, (m_lo >> 8) & 0xFFu, (m_lo >> 16) & 0xFFu, m_lo >> 24));
  const vec4 m1 = vec4(ivec4(m_hi & 0xFFu, (m_hi >> 8) & 0xFFu, (m_hi >> 16) & 0xFFu, m_hi >> 24));
  sc = float[8](sc0.x, sc0.y, sc0.z, sc0.w, sc1.x, sc1.y, sc1.z, sc1.w);
  mn = float[8](m0.x, m0.y, m0.z, m0.w, m1.x, m1.y, m1.z, m1.w);
}
#endif

#if defined(FMT_Q4_K)
// Q4_K's 64-element chunk c (quant words 4 + 8c .. 11 + 8c): the sums of q * x over its low
// nibbles (sub-block 2c) and its high nibbles (sub-block 2c + 1), in four accumulators.
vec2 q4k_chunk_dot(const uint W[SB_WORDS], const vec4 xs[64], uint c) {
    vec4 sl0 = vec4(0.0), sl1 = vec4(0.0), sh0 = vec4(0.0), sh1 = vec4(0.0);
    [[unroll]] for (uint i = 0u; i < 8u; i += 2u) {
      const uint v0 = W[4u + 8u * c + i], v1 = W[5u + 8u * c + i];
      sl0 += nib_lo(v0) * xs[16u * c + i];
      sl1 += nib_lo(v1) * xs[16u * c + i + 1u];
      sh0 += nib_hi(v0) * xs[16u * c + 8u + i];
      sh1 += nib_hi(v1) * xs[16u * c + 8u + i + 1u];
    }
    sl0 += sl1;
    sh0 += sh1;
  return vec2((sl0.x + sl0.y) + (sl0.z + sl0.w), (sh0.x + sh0.y) + (sh0.z + sh0.w));
}
#endif

#if defined(FMT_Q4_0)
// 8 blocks {f16 d; u8 qs[16]} of 18 bytes; block b at byte 18b.
float sb_dot_n(const uint W[SB_WORDS], const vec4 xs[64], const float xsum[SB_GROUPS], uint nblk) {
  float tot = 0.0;
  [[unroll]] for (uint b = 0u; b < 8u; ++b) {
    const uint w = (18u * b) / 4u;
    const bool even = (b & 1u) == 0u;  // block at 0 mod 4: d low half, quants at 2 mod 4
    const float d = unpackHalf2x16(even ? W[w] : W[w] >> 16).x;
    uint v[4];
    [[unroll]] for (uint j = 0u; j < 4u; ++j) v[j] = even ? (W[w + j] >> 16) | (W[w + j + 1u] << 16) : W[w + 1u + j];
    const float t = d * (nib_block_dot(v, xs, 8u * b) - 8.0 * xsum[b]);
    tot += b < nblk ? t : 0.0;
  }
  return tot;
}
#elif defined(SB_PLAIN)
// 8 blocks of 32 elements, 16 words each.
float sb_dot_n(const uint W[SB_WORDS], const vec4 xs[64], const float xsum[SB_GROUPS], uint nblk) {
  float tot = 0.0;
  [[unroll]] for (uint b = 0u; b < 8u; ++b) {
    vec4 s0 = vec4(0.0), s1 = vec4(0.0);
    [[unroll]] for (uint j = 0u; j < 8u; j += 2u) {
      s0 += plain4(W[16u * b + 2u * j], W[16u * b + 2u * j + 1u]) * xs[8u * b + j];
      s1 += plain4(W[16u * b + 2u * j + 2u], W[16u * b + 2u * j + 3u]) * xs[8u * b + j + 1u];
    }
    s0 += s1;
    const float t = (s0.x + s0.y) + (s0.z + s0.w);
    tot += b < nblk ? t : 0.0;
  }
  return tot;
}
#elif defined(FMT_Q4_1) || defined(FMT_Q5_1)
// 8 blocks of whole words, block b at word BW * b; x = d * q + m. Q4_1 {f16 d, m; u8 qs[16]}
// (5 words); Q5_1 {f16 d, m; u8 qh[4]; u8 qs[16]} (6 words).
#if defined(FMT_Q4_1)
#define BW 5u
#else
#define BW 6u
#endif
float sb_dot_n(const uint W[SB_WORDS], const vec4 xs[64], const float xsum[SB_GROUPS], uint nblk) {
  float tot = 0.0;
  [[unroll]] for (uint b = 0u; b < 8u; ++b) {
    const vec2 dm = unpackHalf2x16(W[BW * b]);
    const uint q0 = BW * b + BW - 4u;  // the quant words
    const uint v[4] = uint[4](W[q0], W[q0 + 1u], W[q0 + 2u], W[q0 + 3u]);
#if defined(FMT_Q4_1)
    const float t = dm.x * nib_block_dot(v, xs, 8u * b) + dm.y * xsum[b];
#else
    const float t = dm.x * q5_block_dot(v, W[BW * b + 1u], xs, 8u * b) + dm.y * xsum[b];
#endif
    tot += b < nblk ? t : 0.0;
  }
  return tot;
}
#undef BW
#elif defined(FMT_Q5_0)
// 8 blocks {f16 d; u8 qh[4]; u8 qs[16]} of 22 bytes; block b at byte 22b (even blocks at 0 mod
// 4, odd ones at 2 mod 4); x = d * (q - 16).
float sb_dot_n(const uint W[SB_WORDS], const vec4 xs[64], const float xsum[SB_GROUPS], uint nblk) {
  float tot = 0.0;
  [[unroll]] for (uint b = 0u; b < 8u; ++b) {
    const uint w = (22u * b) / 4u;
    const bool even = (b & 1u) == 0u;
    const float d = unpackHalf2x16(even ? W[w] : W[w] >> 16).x;
    const uint qh = even ? (W[w] >> 16) | (W[w + 1u] << 16) : W[w + 1u];
    uint v[4];
    [[unroll]] for (uint j = 0u; j < 4u; ++j) v[j] = even ? (W[w + 1u + j] >> 16) | (W[w + 2u + j] << 16) : W[w + 2u + j];
    const float t = d * (q5_block_dot(v, qh, xs, 8u * b) - 16.0 * xsum[b]);
    tot += b < nblk ? t : 0.0;
  }
  return tot;
}
#elif defined(FMT_Q8_0)
// 8 blocks {f16 d; i8 qs[32]} of 34 bytes; block b at byte 34b. Bytes are read as unsigned
// (q + 128, by flipping their sign bits).
float sb_dot_n(const uint W[SB_WORDS], const vec4 xs[64], const float xsum[SB_GROUPS], uint nblk) {
  float tot = 0.0;
  [[unroll]] for (uint b = 0u; b < 8u; ++b) {
    const uint w = (34u * b) / 4u;
    const bool even = (b & 1u) == 0u;
    const float d = unpackHalf2x16(even ? W[w] : W[w] >> 16).x;
    vec4 s0 = vec4(0.0), s1 = vec4(0.0);
    [[unroll]] for (uint j = 0u; j < 8u; j += 2u) {
      const uint v0 = (even ? (W[w + j] >> 16) | (W[w + j + 1u] << 16) : W[w + 1u + j]) ^ 0x80808080u;
      const uint v1 = (even ? (W[w + j + 1u] >> 16) | (W[w + j + 2u] << 16) : W[w + 2u + j]) ^ 0x80808080u;
      s0 += vec4(ivec4(v0 & 0xFFu, v0 & 0xFF00u, v0 & 0xFF0000u, (v0 >> 8) & 0xFF0000u)) * xs[8u * b + j];
      s1 += vec4(ivec4(v1 & 0xFFu, v1 & 0xFF00u, v1 & 0xFF0000u, (v1 >> 8) & 0xFF0000u)) * xs[8u * b + j + 1u];
    }
    s0 += s1;
    const float t = d * (((s0.x + s0.y) + (s0.z + s0.w)) - 128.0 * xsum[b]);
    tot += b < nblk ? t : 0.0;
  }
  return tot;
}
#elif defined(FMT_Q4_K) && defined(SB_Q4K_MASKED_SCALES)
// {f16 d, dmin; u8 scales[12]; u8 qs[128]}: x = d * sc[j] * q - dmin * m[j], j = e / 32.
// Sub-block j's scale and min masked in place (bit 8 (j % 4); x and x sums scaled to match):
// scales[0..3] and [4..7] hold sc, m of j < 4 in their low 6 bits; scales[8..11] hold the low
// 4 bits of sc, m of j >= 4, whose top 2 bits are the top 2 of scales[j - 4] and scales[j].
float sb_dot(const uint W[SB_WORDS], const vec4 xs[64], const float xsum[SB_GROUPS]) {
  const vec2 dm = unpackHalf2x16(W[0]);
  const uint s0 = W[1], s1 = W[2], s2 = W[3];
  const uint sc_hi = (s2 & 0x0F0F0F0Fu) | ((s0 >> 2) & 0x30303030u);
  const uint m_hi = ((s2 >> 4) & 0x0F0F0F0Fu) | ((s1 >> 2) & 0x30303030u);
  const vec4 m0 = vec4(ivec4(s1 & 0x3Fu, s1 & 0x3F00u, s1 & 0x3F0000u, s1 & 0x3F000000u));
  const vec4 m1 = vec4(ivec4(m_hi & 0xFFu, m_hi & 0xFF00u, m_hi & 0xFF0000u, m_hi & 0xFF000000u));
  const float accm = dot(m0, vec4(xsum[0], xsum[1], xsum[2], xsum[3])) + dot(m1, vec4(xsum[4], xsum[5], xsum[6], xsum[7]));
  float acc = 0.0;
  [[unroll]] for (uint c = 0u; c < 4u; ++c) {
    const vec2 q = q4k_chunk_dot(W, xs, c);
    const uint j = 2u * c, sw = j < 4u ? s0 : sc_hi;  // sub-blocks j, j + 1
    const uint mlo = 0x3Fu << (8u * (j & 3u)), mhi = 0x3Fu << (8u * ((j + 1u) & 3u));
    const float sclo = float(int(sw & mlo)), schi = float(int(sw & mhi));
    acc += sclo * q.x + schi * q.y;
  }
  return dm.x * acc - dm.y * accm;
}
#elif defined(FMT_Q4_K) || defined(FMT_Q5_K)
// Q4_K {f16 d, dmin; u8 scales[12]; u8 qs[128]}, Q5_K {f16 d, dmin; u8 scales[12]; u8 qh[32];
// u8 qs[128]} (words 0, 1..3, 4..11, 12..43): x = d * sc[j] * q - dmin * m[j], j = e / 32.
// Q5_K's element e = 64c + 32h + l (chunk c, half h, l < 32): q = nibble h of qs[32c + l] | bit
// 2c + h of qh[l] << 4; chunk c's quant word i (i < 8) holds l = 4i..4i+3, whose high bits are
// in qh word i.
#if defined(FMT_Q5_K)
vec2 q5k_chunk_dot(const uint W[SB_WORDS], const vec4 xs[64], uint c) {
  vec4 sl0 = vec4(0.0), sl1 = vec4(0.0), sh0 = vec4(0.0), sh1 = vec4(0.0);
  [[unroll]] for (uint i = 0u; i < 8u; i += 2u) {
    const uint L0 = W[12u + 8u * c + i], L1 = W[13u + 8u * c + i];
    const uint H0 = W[4u + i] >> (2u * c), H1 = W[5u + i] >> (2u * c);  // bits 2c at bit 0, 2c + 1 at bit 1
    sl0 += q5_vec((L0 & 0x0F0F0F0Fu) | ((H0 & 0x01010101u) << 4)) * xs[16u * c + i];
    sl1 += q5_vec((L1 & 0x0F0F0F0Fu) | ((H1 & 0x01010101u) << 4)) * xs[16u * c + i + 1u];
    sh0 += q5_vec(((L0 >> 4) & 0x0F0F0F0Fu) | ((H0 & 0x02020202u) << 3)) * xs[16u * c + 8u + i];
    sh1 += q5_vec(((L1 >> 4) & 0x0F0F0F0Fu) | ((H1 & 0x02020202u) << 3)) * xs[16u * c + 8u + i + 1u];
  }
  sl0 += sl1;
  sh0 += sh1;
  return vec2((sl0.x + sl0.y) + (sl0.z + sl0.w), (sh0.x + sh0.y) + (sh0.z + sh0.w));
}
#define K_CHUNK_DOT q5k_chunk_dot
#else
#define K_CHUNK_DOT q4k_chunk_dot
#endif
float sb_dot(const uint W[SB_WORDS], const vec4 xs[64], const float xsum[SB_GROUPS]) {
  const vec2 dm = unpackHalf2x16(W[0]);
  float sc[8], mn[8];
  k4_scales_mins(W[1], W[2], W[3], sc, mn);
  float acc = 0.0, accm = 0.0;
  [[unroll]] for (uint c = 0u; c < 4u; ++c) {
    const vec2 q = K_CHUNK_DOT(W, xs, c);
    acc += sc[2u * c] * q.x + sc[2u * c + 1u] * q.y;
    accm += mn[2u * c] * xsum[2u * c] + mn[2u * c + 1u] * xsum[2u * c + 1u];
  }
  return dm.x * acc - dm.y * accm;
}
#elif defined(FMT_Q2_K) || defined(FMT_Q3_K)
// Element e = 128h + 32s + l (half h, shift s < 4, l < 32) has its low 2 bits at bits 2s of
// qs[32h + l]: quant word t of half h (l = 4t..4t+3) serves x vec4 32h + 8s + t for every s.
// Scale group j = e / 16 = 8h + 2s + (t >= 4).
// Q2_K {u8 scales[16]; u8 qs[64]; f16 d, dmin} (words 0..3, 4..19, 20): x = d * (sc_j & 15) *
// q - dmin * (sc_j >> 4).
// Q3_K {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d} (words 0..7, 8..23, 24..26, 27): bit
// 4h + s of hmask[l] is q's third bit (clear: q - 4), so with it at bit 2 of each byte,
// x = d * (sc_j - 32) * (q - 4); sc_j's low 4 bits are nibble j / 8 of scales[j % 8], its top 2
// bits 2 (j / 4).. of scales[8 + j % 4].
#if defined(FMT_Q2_K)
#define K2_QS 4u
#else
#define K2_QS 8u
#endif
uint sb_byte(const uint W[SB_WORDS], uint w0, uint i) { return (W[w0 + (i >> 2)] >> (8u * (i & 3u))) & 0xFFu; }
#if defined(FMT_Q3_K)
float q3k_scale(const uint W[SB_WORDS], uint j) {  // sc_j - 32 (scales[] at word 24)
  const uint lo = (sb_byte(W, 24u, j & 7u) >> (4u * (j >> 3))) & 15u;
  const uint hi = (sb_byte(W, 24u, 8u + (j & 3u)) >> (2u * (j >> 2))) & 3u;
  return float(int(lo | (hi << 4)) - 32);
}
#endif
float sb_dot(const uint W[SB_WORDS], const vec4 xs[64], const float xsum[SB_GROUPS]) {
  float acc = 0.0;
#if defined(FMT_Q2_K)
  float accm = 0.0;
#endif
  [[unroll]] for (uint h = 0u; h < 2u; ++h) {
    [[unroll]] for (uint sh = 0u; sh < 4u; ++sh) {
      vec4 a0 = vec4(0.0), a1 = vec4(0.0);  // groups j and j + 1
      [[unroll]] for (uint t = 0u; t < 8u; ++t) {
        uint q = (W[K2_QS + 8u * h + t] >> (2u * sh)) & 0x03030303u;
#if defined(FMT_Q3_K)
        q |= ((W[t] >> (4u * h + sh)) & 0x01010101u) << 2;
#endif
        const vec4 v = vec4(ivec4(q & 0xFFu, q & 0xFF00u, q & 0xFF0000u, q & 0xFF000000u)) * xs[32u * h + 8u * sh + t];
        if (t < 4u)
          a0 += v;
        else
          a1 += v;
      }
      const uint j = 8u * h + 2u * sh;
      const float d0 = (a0.x + a0.y) + (a0.z + a0.w), d1 = (a1.x + a1.y) + (a1.z + a1.w);
#if defined(FMT_Q2_K)
      const uint c0 = sb_byte(W, 0u, j), c1 = sb_byte(W, 0u, j + 1u);
      acc += float(c0 & 15u) * d0 + float(c1 & 15u) * d1;
      accm += float(c0 >> 4) * xsum[j] + float(c1 >> 4) * xsum[j + 1u];
#else
      acc += q3k_scale(W, j) * (d0 - 4.0 * xsum[j]) + q3k_scale(W, j + 1u) * (d1 - 4.0 * xsum[j + 1u]);
#endif
    }
  }
#if defined(FMT_Q2_K)
  const vec2 dm = unpackHalf2x16(W[20]);
  return dm.x * acc - dm.y * accm;
#else
  return unpackHalf2x16(W[27]).x * acc;
#endif
}
#elif defined(FMT_Q6_K)
// {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}: element e = 128h + r: q = nibble (r / 64) of
// ql[64h + r % 64] | bits 2(r / 32).. of qh[32h + r % 32] << 4; x = d * scales[e / 16] * (q - 32).
float sb_dot(const uint W[SB_WORDS], const vec4 xs[64], const float xsum[SB_GROUPS]) {
  // word 48..51: scales; word 52 (bytes 208, 209): d; words 52 (high half) .. 55: padding
  const float d = unpackHalf2x16(W[52]).x;
  float acc = 0.0;
  [[unroll]] for (uint h = 0u; h < 2u; ++h) {
    [[unroll]] for (uint quad = 0u; quad < 4u; ++quad) {  // 16 elements per scale
      vec4 sl = vec4(0.0), sh = vec4(0.0);
      [[unroll]] for (uint t = 0u; t < 4u; ++t) {
        const uint i = 4u * quad + t;  // ql word within the half: elements 4i.. and 64 + 4i..
        const uint L = W[16u * h + i], H = W[32u + 8u * h + (i & 7u)];
        // qh bits 2 (i / 8) + {0, 1} and + {4, 5} moved to bits 4, 5 of each byte
        const uint slo = 2u * (i >> 3);
        const uint qlo = (L & 0x0F0F0F0Fu) | ((H << (4u - slo)) & 0x30303030u);
        const uint qhi = ((L >> 4) & 0x0F0F0F0Fu) | ((H >> slo) & 0x30303030u);
        sl += vec4(ivec4(qlo & 0xFFu, qlo & 0xFF00u, qlo & 0xFF0000u, qlo & 0xFF000000u)) * xs[32u * h + i];
        sh += vec4(ivec4(qhi & 0xFFu, qhi & 0xFF00u, qhi & 0xFF0000u, qhi & 0xFF000000u)) * xs[32u * h + 16u + i];
      }
      const uint klo = 8u * h + quad, khi = 8u * h + 4u + quad;  // scale indices = 16-groups
      const float sclo = float(int(W[48u + (klo >> 2)] << (24u - 8u * (klo & 3u))) >> 24);
      const float schi = float(int(W[48u + (khi >> 2)] << (24u - 8u * (khi & 3u))) >> 24);
      acc += sclo * (((sl.x + sl.y) + (sl.z + sl.w)) - 32.0 * xsum[klo]) +
             schi * (((sh.x + sh.y) + (sh.z + sh.w)) - 32.0 * xsum[khi]);
    }
  }
  return d * acc;
}
#endif
