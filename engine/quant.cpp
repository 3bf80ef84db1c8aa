// quant.cpp — reference (de)quantisation of GGUF tensor formats; see quant.h.
//
// Exactness notes. Every dequantised value is computed with the same operations, in the same
// order, as ggml's dequantize_row_* (and gguf-py's quants.py). The products involved are exact
// in fp32 (an fp16 scale has 11 significant bits; sub-block scales and quants add at most 12
// more, for Q6_K: 7 + 5), so at most one rounding happens per value and a compiler that fuses
// a multiply-add cannot change the result.
// The reference quantisers for Q4_0/Q4_1/Q5_0/Q5_1 compute x * id + c, which is NOT exact, so
// a fused multiply-add could in principle move a value across a rounding boundary. This is
// rare enough that 2^20 random inputs built with -march=native -ffp-contract=fast still gave
// ggml's bytes, but -ffp-contract=off is the setting under which byte equality is guaranteed.

#include "engine/quant.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <limits>

namespace chorus {

namespace {

// --- type table ------------------------------------------------------------------------------

struct RawTraits {
    uint32_t id;
    TypeTraits traits;
};

// Every id ggml has assigned. Unsupported ones are listed only so errors can name them.
constexpr std::array<RawTraits, 32> kTypeTable = {{
    {0, {"F32", 1, 4, true}},
    {1, {"F16", 1, 2, true}},
    {2, {"Q4_0", 32, 18, true}},
    {3, {"Q4_1", 32, 20, true}},
    {6, {"Q5_0", 32, 22, true}},
    {7, {"Q5_1", 32, 24, true}},
    {8, {"Q8_0", 32, 34, true}},
    {9, {"Q8_1", 32, 36, true}},
    {10, {"Q2_K", 256, 84, true}},
    {11, {"Q3_K", 256, 110, true}},
    {12, {"Q4_K", 256, 144, true}},
    {13, {"Q5_K", 256, 176, true}},
    {14, {"Q6_K", 256, 210, true}},
    {15, {"Q8_K", 256, 292, true}},
    {16, {"IQ2_XXS", 256, 66, false}},
    {17, {"IQ2_XS", 256, 74, false}},
    {18, {"IQ3_XXS", 256, 98, false}},
    {19, {"IQ1_S", 256, 50, false}},
    {20, {"IQ4_NL", 32, 18, false}},
    {21, {"IQ3_S", 256, 110, false}},
    {22, {"IQ2_S", 256, 82, false}},
    {23, {"IQ4_XS", 256, 136, false}},
    {24, {"I8", 1, 1, false}},
    {25, {"I16", 1, 2, false}},
    {26, {"I32", 1, 4, false}},
    {27, {"I64", 1, 8, false}},
    {28, {"F64", 1, 8, false}},
    {29, {"IQ1_M", 256, 56, false}},
    {30, {"BF16", 1, 2, true}},
    {34, {"TQ1_0", 256, 54, false}},
    {35, {"TQ2_0", 256, 66, false}},
    {39, {"MXFP4", 32, 17, false}},
}};

// --- small helpers ---------------------------------------------------------------------------

uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

float bits_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

float h2f(uint16_t h) { return fp16_to_fp32(h); }
uint16_t f2h(float f) { return fp32_to_fp16(f); }

// Number of blocks in n elements of type t; asserts that n is a whole number of blocks.
int64_t block_count(GgmlType t, int64_t n) {
    const int64_t per = type_traits(t).block_elems;
    assert(n >= 0 && n % per == 0 && "row length must be a multiple of the block size");
    return n / per;
}

// ggml's reference rounding: round half away from zero (C roundf).
int round_away(float x) { return static_cast<int>(std::round(x)); }

// The value with the largest magnitude (first one on ties), keeping its sign, as ggml's
// Q4_0 / Q5_0 quantisers choose it.
float signed_absmax(const float* x, int n) {
    float amax = 0.0f;
    float max = 0.0f;
    for (int i = 0; i < n; ++i) {
        if (amax < std::fabs(x[i])) {
            amax = std::fabs(x[i]);
            max = x[i];
        }
    }
    return max;
}

// --- simple 32-element formats ---------------------------------------------------------------

void dequant_q4_0(const BlockQ4_0* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += kQK) {
        const float d = h2f(b[i].d);
        for (int j = 0; j < kQK / 2; ++j) {
            y[j] = static_cast<float>((b[i].qs[j] & 0x0F) - 8) * d;
            y[j + kQK / 2] = static_cast<float>((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

void dequant_q4_1(const BlockQ4_1* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += kQK) {
        const float d = h2f(b[i].d);
        const float m = h2f(b[i].m);
        for (int j = 0; j < kQK / 2; ++j) {
            y[j] = static_cast<float>(b[i].qs[j] & 0x0F) * d + m;
            y[j + kQK / 2] = static_cast<float>(b[i].qs[j] >> 4) * d + m;
        }
    }
}

uint32_t load_qh(const uint8_t qh[4]) {
    return uint32_t(qh[0]) | uint32_t(qh[1]) << 8 | uint32_t(qh[2]) << 16 | uint32_t(qh[3]) << 24;
}

void store_qh(uint8_t qh[4], uint32_t v) {
    for (int k = 0; k < 4; ++k) qh[k] = static_cast<uint8_t>(v >> (8 * k));
}

void dequant_q5_0(const BlockQ5_0* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += kQK) {
        const float d = h2f(b[i].d);
        const uint32_t qh = load_qh(b[i].qh);
        for (int j = 0; j < kQK / 2; ++j) {
            const int q0 = (b[i].qs[j] & 0x0F) | ((qh >> j) & 1) << 4;
            const int q1 = (b[i].qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4;
            y[j] = static_cast<float>(q0 - 16) * d;
            y[j + kQK / 2] = static_cast<float>(q1 - 16) * d;
        }
    }
}

void dequant_q5_1(const BlockQ5_1* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += kQK) {
        const float d = h2f(b[i].d);
        const float m = h2f(b[i].m);
        const uint32_t qh = load_qh(b[i].qh);
        for (int j = 0; j < kQK / 2; ++j) {
            const int q0 = (b[i].qs[j] & 0x0F) | ((qh >> j) & 1) << 4;
            const int q1 = (b[i].qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4;
            y[j] = static_cast<float>(q0) * d + m;
            y[j + kQK / 2] = static_cast<float>(q1) * d + m;
        }
    }
}

void dequant_q8_0(const BlockQ8_0* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += kQK) {
        const float d = h2f(b[i].d);
        for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(b[i].qs[j]) * d;
    }
}

// Quantisers below follow ggml's *_ref functions operation for operation, so their bytes match.

void quant_q4_0(const float* x, BlockQ4_0* b, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK) {
        const float d = signed_absmax(x, kQK) / -8.0f;  // the extreme value maps to q = 0
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = f2h(d);
        for (int j = 0; j < kQK / 2; ++j) {
            const int q0 = std::min(15, static_cast<int>(x[j] * id + 8.5f));
            const int q1 = std::min(15, static_cast<int>(x[j + kQK / 2] * id + 8.5f));
            b[i].qs[j] = static_cast<uint8_t>(q0 | q1 << 4);
        }
    }
}

void quant_q4_1(const float* x, BlockQ4_1* b, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK) {
        const float min = *std::min_element(x, x + kQK);
        const float max = *std::max_element(x, x + kQK);
        const float d = (max - min) / 15.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = f2h(d);
        b[i].m = f2h(min);
        for (int j = 0; j < kQK / 2; ++j) {
            const int q0 = std::min(15, static_cast<int>((x[j] - min) * id + 0.5f));
            const int q1 = std::min(15, static_cast<int>((x[j + kQK / 2] - min) * id + 0.5f));
            b[i].qs[j] = static_cast<uint8_t>(q0 | q1 << 4);
        }
    }
}

void quant_q5_0(const float* x, BlockQ5_0* b, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK) {
        const float d = signed_absmax(x, kQK) / -16.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = f2h(d);
        uint32_t qh = 0;
        for (int j = 0; j < kQK / 2; ++j) {
            const int q0 = std::min(31, static_cast<int>(x[j] * id + 16.5f));
            const int q1 = std::min(31, static_cast<int>(x[j + kQK / 2] * id + 16.5f));
            b[i].qs[j] = static_cast<uint8_t>((q0 & 0x0F) | (q1 & 0x0F) << 4);
            qh |= uint32_t(q0 >> 4) << j | uint32_t(q1 >> 4) << (j + 16);
        }
        store_qh(b[i].qh, qh);
    }
}

void quant_q5_1(const float* x, BlockQ5_1* b, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK) {
        const float min = *std::min_element(x, x + kQK);
        const float max = *std::max_element(x, x + kQK);
        const float d = (max - min) / 31.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = f2h(d);
        b[i].m = f2h(min);
        uint32_t qh = 0;
        for (int j = 0; j < kQK / 2; ++j) {
            const int q0 = std::min(31, static_cast<int>((x[j] - min) * id + 0.5f));
            const int q1 = std::min(31, static_cast<int>((x[j + kQK / 2] - min) * id + 0.5f));
            b[i].qs[j] = static_cast<uint8_t>((q0 & 0x0F) | (q1 & 0x0F) << 4);
            qh |= uint32_t(q0 >> 4) << j | uint32_t(q1 >> 4) << (j + 16);
        }
        store_qh(b[i].qh, qh);
    }
}

void quant_q8_0(const float* x, BlockQ8_0* b, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK) {
        float amax = 0.0f;
        for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = f2h(d);
        for (int j = 0; j < kQK; ++j) b[i].qs[j] = static_cast<int8_t>(round_away(x[j] * id));
    }
}

// --- K-quants: shared pieces -----------------------------------------------------------------

// Q2_K / Q3_K qs packing: element 128*h + 32*s + l <-> bits 2s..2s+1 of qs[32*h + l].
int get_2bit(const uint8_t* qs, int e) {
    return (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
}
void set_2bit(uint8_t* qs, int e, int v) {
    qs[32 * (e / 128) + e % 32] |= static_cast<uint8_t>((v & 3) << (2 * ((e % 128) / 32)));
}

// Q4_K / Q5_K qs packing: element 64*c + 32*h + l <-> nibble h of qs[32*c + l].
int get_nibble_k(const uint8_t* qs, int e) {
    return (qs[32 * (e / 64) + e % 32] >> (4 * ((e % 64) / 32))) & 0x0F;
}
void set_nibble_k(uint8_t* qs, int e, int v) {
    qs[32 * (e / 64) + e % 32] |= static_cast<uint8_t>((v & 0x0F) << (4 * ((e % 64) / 32)));
}

// Bit k of mask[l] for element e = 32*k + l (Q3_K hmask, Q5_K qh).
int get_bit_k(const uint8_t* mask, int e) { return (mask[e % 32] >> (e / 32)) & 1; }
void set_bit_k(uint8_t* mask, int e, int v) {
    mask[e % 32] |= static_cast<uint8_t>((v & 1) << (e / 32));
}

// Q3_K: the biased 6-bit scale i (0..15), see BlockQ3_K::scales.
int q3k_scale(const uint8_t s[12], int i) {
    const int low = (s[i % 8] >> (4 * (i / 8))) & 0x0F;
    const int high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
    return low | high << 4;
}
void q3k_set_scale(uint8_t s[12], int i, int v) {
    s[i % 8] |= static_cast<uint8_t>((v & 0x0F) << (4 * (i / 8)));
    s[8 + i % 4] |= static_cast<uint8_t>(((v >> 4) & 3) << (2 * (i / 4)));
}

void pack_scale_min_k4(uint8_t s[12], int j, int sc, int m) {
    if (j < 4) {
        s[j] |= static_cast<uint8_t>(sc & 63);
        s[j + 4] |= static_cast<uint8_t>(m & 63);
    } else {
        s[j + 4] |= static_cast<uint8_t>((sc & 0x0F) | (m & 0x0F) << 4);
        s[j - 4] |= static_cast<uint8_t>((sc >> 4) << 6);
        s[j] |= static_cast<uint8_t>((m >> 4) << 6);
    }
}

// Q6_K packing: element 128*h + r: low nibble in nibble r/64 of ql[64*h + r%64], high two bits
// in bits 2*(r/32) of qh[32*h + r%32].
int q6k_get(const BlockQ6_K& b, int e) {
    const int h = e / 128, r = e % 128;
    const int lo = (b.ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0F;
    const int hi = (b.qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
    return lo | hi << 4;
}
void q6k_set(BlockQ6_K& b, int e, int q) {
    const int h = e / 128, r = e % 128;
    b.ql[64 * h + r % 64] |= static_cast<uint8_t>((q & 0x0F) << (4 * (r / 64)));
    b.qh[32 * h + r % 32] |= static_cast<uint8_t>(((q >> 4) & 3) << (2 * (r / 32)));
}

// --- K-quant dequantisers --------------------------------------------------------------------

void dequant_q2_k(const BlockQ2_K* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += kQK_K) {
        const float d = h2f(b[i].d);
        const float dmin = h2f(b[i].dmin);
        for (int e = 0; e < kQK_K; ++e) {
            const uint8_t sc = b[i].scales[e / 16];
            const float dl = d * static_cast<float>(sc & 0x0F);
            const float ml = dmin * static_cast<float>(sc >> 4);
            y[e] = dl * static_cast<float>(get_2bit(b[i].qs, e)) - ml;
        }
    }
}

void dequant_q3_k(const BlockQ3_K* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += kQK_K) {
        const float d = h2f(b[i].d);
        for (int e = 0; e < kQK_K; ++e) {
            const float dl = d * static_cast<float>(q3k_scale(b[i].scales, e / 16) - 32);
            const int q = get_2bit(b[i].qs, e) - (get_bit_k(b[i].hmask, e) ? 0 : 4);
            y[e] = dl * static_cast<float>(q);
        }
    }
}

void dequant_q4_k(const BlockQ4_K* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += kQK_K) {
        const float d = h2f(b[i].d);
        const float dmin = h2f(b[i].dmin);
        for (int e = 0; e < kQK_K; ++e) {
            const ScaleMin sm = unpack_scale_min_k4(b[i].scales, e / 32);
            const float d1 = d * static_cast<float>(sm.sc);
            const float m1 = dmin * static_cast<float>(sm.m);
            y[e] = d1 * static_cast<float>(get_nibble_k(b[i].qs, e)) - m1;
        }
    }
}

void dequant_q5_k(const BlockQ5_K* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += kQK_K) {
        const float d = h2f(b[i].d);
        const float dmin = h2f(b[i].dmin);
        for (int e = 0; e < kQK_K; ++e) {
            const ScaleMin sm = unpack_scale_min_k4(b[i].scales, e / 32);
            const float d1 = d * static_cast<float>(sm.sc);
            const float m1 = dmin * static_cast<float>(sm.m);
            const int q = get_nibble_k(b[i].qs, e) | get_bit_k(b[i].qh, e) << 4;
            y[e] = d1 * static_cast<float>(q) - m1;
        }
    }
}

void dequant_q6_k(const BlockQ6_K* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += kQK_K) {
        const float d = h2f(b[i].d);
        for (int e = 0; e < kQK_K; ++e) {
            const float dl = d * static_cast<float>(b[i].scales[e / 16]);
            y[e] = dl * static_cast<float>(q6k_get(b[i], e) - 32);
        }
    }
}

// --- K-quant quantisers ----------------------------------------------------------------------
// Simple and deterministic, not ggml's iterative search: each sub-block gets the min/max (or
// abs-max) affine map; the sub-block scales are then quantised against a super-scale chosen so
// the largest one uses the full code range, and the quants are chosen against the scales as
// they will actually be decoded.

// Affine sub-block quantisation shared by Q2_K / Q4_K / Q5_K: x ~ d*sc*q - dmin*m with
// n_sub sub-blocks of len elements, q in [0, qmax], sc/m in [0, smax].
struct AffineK {
    uint16_t d, dmin;             // fp16 super-scales
    std::array<int, 16> sc{}, m{}; // quantised sub-block scales and mins
    std::array<int, 256> q{};      // quants
};

AffineK quantize_affine_k(const float* x, int n_sub, int len, int qmax, int smax) {
    AffineK out;
    std::array<float, 16> scale{}, min{};  // per sub-block: x ~ scale*q - min, min >= 0
    float max_scale = 0.0f, max_min = 0.0f;
    for (int s = 0; s < n_sub; ++s) {
        const float* xs = x + s * len;
        const float lo = std::min(0.0f, *std::min_element(xs, xs + len));
        const float hi = std::max(0.0f, *std::max_element(xs, xs + len));
        scale[s] = (hi - lo) / static_cast<float>(qmax);
        min[s] = -lo;
        max_scale = std::max(max_scale, scale[s]);
        max_min = std::max(max_min, min[s]);
    }
    out.d = f2h(max_scale / static_cast<float>(smax));
    out.dmin = f2h(max_min / static_cast<float>(smax));
    const float d = h2f(out.d), dmin = h2f(out.dmin);
    for (int s = 0; s < n_sub; ++s) {
        // Round the min up so the decoded range still reaches the sub-block's smallest value.
        out.sc[s] = d > 0.0f ? std::clamp(round_away(scale[s] / d), 0, smax) : 0;
        out.m[s] = dmin > 0.0f ? std::clamp(static_cast<int>(std::ceil(min[s] / dmin)), 0, smax)
                               : 0;
        const float ds = d * static_cast<float>(out.sc[s]);
        const float ms = dmin * static_cast<float>(out.m[s]);
        for (int l = 0; l < len; ++l) {
            const int e = s * len + l;
            const int q = ds > 0.0f ? round_away((x[e] + ms) / ds) : 0;
            out.q[e] = std::clamp(q, 0, qmax);
        }
    }
    return out;
}

void quant_q2_k(const float* x, BlockQ2_K* b, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
        const AffineK a = quantize_affine_k(x, 16, 16, 3, 15);
        std::memset(&b[i], 0, sizeof b[i]);
        b[i].d = a.d;
        b[i].dmin = a.dmin;
        for (int s = 0; s < 16; ++s) b[i].scales[s] = static_cast<uint8_t>(a.sc[s] | a.m[s] << 4);
        for (int e = 0; e < kQK_K; ++e) set_2bit(b[i].qs, e, a.q[e]);
    }
}

void quant_q4_k(const float* x, BlockQ4_K* b, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
        const AffineK a = quantize_affine_k(x, 8, 32, 15, 63);
        std::memset(&b[i], 0, sizeof b[i]);
        b[i].d = a.d;
        b[i].dmin = a.dmin;
        for (int s = 0; s < 8; ++s) pack_scale_min_k4(b[i].scales, s, a.sc[s], a.m[s]);
        for (int e = 0; e < kQK_K; ++e) set_nibble_k(b[i].qs, e, a.q[e]);
    }
}

void quant_q5_k(const float* x, BlockQ5_K* b, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
        const AffineK a = quantize_affine_k(x, 8, 32, 31, 63);
        std::memset(&b[i], 0, sizeof b[i]);
        b[i].d = a.d;
        b[i].dmin = a.dmin;
        for (int s = 0; s < 8; ++s) pack_scale_min_k4(b[i].scales, s, a.sc[s], a.m[s]);
        for (int e = 0; e < kQK_K; ++e) {
            set_nibble_k(b[i].qs, e, a.q[e] & 0x0F);
            set_bit_k(b[i].qh, e, a.q[e] >> 4);
        }
    }
}

// Symmetric sub-block quantisation shared by Q3_K / Q6_K: x ~ d*sc*q with 16 sub-blocks of 16,
// q in [qmin, -qmin-1], sc in [scmin, -scmin-1]. Like Q4_0, the extreme value of each
// sub-block maps to qmin (the side with one more code), and the extreme scale to scmin.
struct SymmetricK {
    uint16_t d;                   // fp16 super-scale
    std::array<int, 16> sc{};     // signed sub-block scales
    std::array<int, 256> q{};     // signed quants
};

SymmetricK quantize_symmetric_k(const float* x, int qmin, int scmin) {
    SymmetricK out;
    std::array<float, 16> scale{};
    for (int s = 0; s < 16; ++s) scale[s] = signed_absmax(x + 16 * s, 16) / static_cast<float>(qmin);
    out.d = f2h(signed_absmax(scale.data(), 16) / static_cast<float>(scmin));
    const float d = h2f(out.d);
    for (int s = 0; s < 16; ++s) {
        out.sc[s] = d != 0.0f ? std::clamp(round_away(scale[s] / d), scmin, -scmin - 1) : 0;
        const float ds = d * static_cast<float>(out.sc[s]);
        for (int l = 0; l < 16; ++l) {
            const int e = 16 * s + l;
            const int q = ds != 0.0f ? round_away(x[e] / ds) : 0;
            out.q[e] = std::clamp(q, qmin, -qmin - 1);
        }
    }
    return out;
}

void quant_q3_k(const float* x, BlockQ3_K* b, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
        const SymmetricK s = quantize_symmetric_k(x, -4, -32);
        std::memset(&b[i], 0, sizeof b[i]);
        b[i].d = s.d;
        for (int k = 0; k < 16; ++k) q3k_set_scale(b[i].scales, k, s.sc[k] + 32);
        for (int e = 0; e < kQK_K; ++e) {
            const int q = s.q[e];  // -4..3: hmask bit set <=> q >= 0 (no -4 offset)
            set_2bit(b[i].qs, e, q & 3);
            set_bit_k(b[i].hmask, e, q >= 0 ? 1 : 0);
        }
    }
}

void quant_q6_k(const float* x, BlockQ6_K* b, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
        const SymmetricK s = quantize_symmetric_k(x, -32, -128);
        std::memset(&b[i], 0, sizeof b[i]);
        b[i].d = s.d;
        for (int k = 0; k < 16; ++k) b[i].scales[k] = static_cast<int8_t>(s.sc[k]);
        for (int e = 0; e < kQK_K; ++e) q6k_set(b[i], e, s.q[e] + 32);
    }
}

} // namespace

// --- public API ------------------------------------------------------------------------------

const TypeTraits* type_traits(uint32_t raw_type) {
    for (const RawTraits& r : kTypeTable) {
        if (r.id == raw_type) return &r.traits;
    }
    return nullptr;
}

const TypeTraits& type_traits(GgmlType t) {
    const TypeTraits* tt = type_traits(static_cast<uint32_t>(t));
    assert(tt != nullptr && tt->supported && "every GgmlType enumerator is in the table");
    return *tt;
}

namespace {
// Bytes of n_elems elements of t in blocks of bb bytes; nullopt if not whole blocks or too many.
std::optional<uint64_t> blocks_bytes(GgmlType t, uint64_t n_elems, uint64_t bb) {
    const TypeTraits& tt = type_traits(t);
    if (n_elems % tt.block_elems != 0) return std::nullopt;
    const uint64_t blocks = n_elems / tt.block_elems;
    if (blocks > std::numeric_limits<uint64_t>::max() / bb) return std::nullopt;
    return blocks * bb;
}
} // namespace

std::optional<uint64_t> row_bytes(GgmlType t, uint64_t n_elems) {
    return blocks_bytes(t, n_elems, type_traits(t).block_bytes);
}

uint32_t device_block_bytes(GgmlType t) { return t == GgmlType::Q6_K ? 224 : type_traits(t).block_bytes; }

std::optional<uint64_t> device_row_bytes(GgmlType t, uint64_t n_elems) {
    const std::optional<uint64_t> b = blocks_bytes(t, n_elems, device_block_bytes(t));
    const uint64_t align = device_row_align(t);
    if (!b || *b > std::numeric_limits<uint64_t>::max() - (align - 1)) return std::nullopt;
    return (*b + align - 1) / align * align;
}

uint32_t device_row_align(GgmlType t) { return type_traits(t).block_elems == 1 ? 1 : 16; }

void blocks_to_device(GgmlType t, const void* src, uint64_t n_blocks, void* dst) {
    const uint64_t from = type_traits(t).block_bytes, to = device_block_bytes(t);
    const auto* s = static_cast<const uint8_t*>(src);
    auto* d = static_cast<uint8_t*>(dst);
    if (from == to) {
        std::memcpy(d, s, n_blocks * from);
        return;
    }
    for (uint64_t b = 0; b < n_blocks; ++b) {
        std::memcpy(d + b * to, s + b * from, from);
        std::memset(d + b * to + from, 0, to - from);
    }
}

std::vector<uint8_t> rows_to_device(GgmlType t, std::span<const uint8_t> src, uint64_t n_elems, uint64_t n_rows) {
    const TypeTraits& tt = type_traits(t);
    assert(n_elems % tt.block_elems == 0 && src.size() >= *row_bytes(t, n_elems) * n_rows);
    const uint64_t rb = *row_bytes(t, n_elems), drb = *device_row_bytes(t, n_elems);
    std::vector<uint8_t> out(drb * n_rows);
    for (uint64_t r = 0; r < n_rows; ++r)
        blocks_to_device(t, src.data() + r * rb, n_elems / tt.block_elems, out.data() + r * drb);
    return out;
}

float fp16_to_fp32(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1F;
    uint32_t mant = h & 0x3FF;
    if (exp == 0x1F) return bits_float(sign | 0x7F800000 | mant << 13);  // inf / nan (payload kept)
    if (exp != 0) return bits_float(sign | (exp + 112) << 23 | mant << 13);  // 112 = 127 - 15
    if (mant == 0) return bits_float(sign);                                 // +-0
    // Subnormal: value = mant * 2^-24, exact in fp32.
    const float mag = static_cast<float>(mant) * 0x1p-24f;
    return sign ? -mag : mag;
}

uint16_t fp32_to_fp16(float f) {
    const uint32_t u = float_bits(f);
    const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
    const uint32_t abs = u & 0x7FFFFFFF;
    if (abs > 0x7F800000) {  // NaN: keep the top payload bits, force quiet
        return static_cast<uint16_t>(sign | 0x7E00 | ((abs >> 13) & 0x3FF));
    }
    if (abs >= 0x477FF000) return static_cast<uint16_t>(sign | 0x7C00);  // >= 65520: inf
    if (abs < 0x38800000) {
        // Result is subnormal (or zero): value / 2^-24 rounded to nearest even integer.
        // For |f| < 2^-14 the product is exact, and rint uses the default rounding mode (RNE).
        const float scaled = bits_float(abs) * 0x1p24f;
        return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(scaled)));
    }
    // Normal: re-bias the exponent, then round the 13 dropped mantissa bits to nearest even.
    // A carry out of the mantissa correctly bumps the exponent (up to inf, excluded above).
    const uint32_t rebiased = abs - (112u << 23);
    const uint32_t lsb = (rebiased >> 13) & 1;
    return static_cast<uint16_t>(sign | ((rebiased + 0x0FFF + lsb) >> 13));
}

float bf16_to_fp32(uint16_t h) { return bits_float(uint32_t(h) << 16); }

uint16_t fp32_to_bf16(float f) {
    const uint32_t u = float_bits(f);
    if ((u & 0x7FFFFFFF) > 0x7F800000) return static_cast<uint16_t>((u >> 16) | 64);  // quiet NaN
    return static_cast<uint16_t>((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n) {
    const int64_t nb = block_count(t, n);
    switch (t) {
    case GgmlType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); return;
    case GgmlType::F16: {
        const auto* h = static_cast<const uint16_t*>(src);
        for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(h[i]);
        return;
    }
    case GgmlType::BF16: {
        const auto* h = static_cast<const uint16_t*>(src);
        for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(h[i]);
        return;
    }
    case GgmlType::Q4_0: dequant_q4_0(static_cast<const BlockQ4_0*>(src), dst, nb); return;
    case GgmlType::Q4_1: dequant_q4_1(static_cast<const BlockQ4_1*>(src), dst, nb); return;
    case GgmlType::Q5_0: dequant_q5_0(static_cast<const BlockQ5_0*>(src), dst, nb); return;
    case GgmlType::Q5_1: dequant_q5_1(static_cast<const BlockQ5_1*>(src), dst, nb); return;
    case GgmlType::Q8_0: dequant_q8_0(static_cast<const BlockQ8_0*>(src), dst, nb); return;
    case GgmlType::Q2_K: dequant_q2_k(static_cast<const BlockQ2_K*>(src), dst, nb); return;
    case GgmlType::Q3_K: dequant_q3_k(static_cast<const BlockQ3_K*>(src), dst, nb); return;
    case GgmlType::Q4_K: dequant_q4_k(static_cast<const BlockQ4_K*>(src), dst, nb); return;
    case GgmlType::Q5_K: dequant_q5_k(static_cast<const BlockQ5_K*>(src), dst, nb); return;
    case GgmlType::Q6_K: dequant_q6_k(static_cast<const BlockQ6_K*>(src), dst, nb); return;
    case GgmlType::Q8_1:  // activation formats of int8 dot products: nothing in chorus uses them
    case GgmlType::Q8_K: break;
    }
    throw std::invalid_argument(std::string("dequantize_row: ") + type_traits(t).name + " is not a weight format");
}

void quantize_row(GgmlType t, const float* src, void* dst, int64_t n) {
    const int64_t nb = block_count(t, n);
    switch (t) {
    case GgmlType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); return;
    case GgmlType::F16: {
        auto* h = static_cast<uint16_t*>(dst);
        for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_fp16(src[i]);
        return;
    }
    case GgmlType::BF16: {
        auto* h = static_cast<uint16_t*>(dst);
        for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_bf16(src[i]);
        return;
    }
    case GgmlType::Q4_0: quant_q4_0(src, static_cast<BlockQ4_0*>(dst), nb); return;
    case GgmlType::Q4_1: quant_q4_1(src, static_cast<BlockQ4_1*>(dst), nb); return;
    case GgmlType::Q5_0: quant_q5_0(src, static_cast<BlockQ5_0*>(dst), nb); return;
    case GgmlType::Q5_1: quant_q5_1(src, static_cast<BlockQ5_1*>(dst), nb); return;
    case GgmlType::Q8_0: quant_q8_0(src, static_cast<BlockQ8_0*>(dst), nb); return;
    case GgmlType::Q2_K: quant_q2_k(src, static_cast<BlockQ2_K*>(dst), nb); return;
    case GgmlType::Q3_K: quant_q3_k(src, static_cast<BlockQ3_K*>(dst), nb); return;
    case GgmlType::Q4_K: quant_q4_k(src, static_cast<BlockQ4_K*>(dst), nb); return;
    case GgmlType::Q5_K: quant_q5_k(src, static_cast<BlockQ5_K*>(dst), nb); return;
    case GgmlType::Q6_K: quant_q6_k(src, static_cast<BlockQ6_K*>(dst), nb); return;
    case GgmlType::Q8_1:
    case GgmlType::Q8_K: break;
    }
    throw std::invalid_argument(std::string("quantize_row: ") + type_traits(t).name + " is not a weight format");
}

std::vector<GgmlType> weight_types() {
    return {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0,
            GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q2_K, GgmlType::Q3_K,
            GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};
}

ScaleMin unpack_scale_min_k4(const uint8_t scales[12], int j) {
    if (j < 4) {
        return {static_cast<uint8_t>(scales[j] & 63), static_cast<uint8_t>(scales[j + 4] & 63)};
    }
    return {static_cast<uint8_t>((scales[j + 4] & 0x0F) | (scales[j - 4] >> 6) << 4),
            static_cast<uint8_t>((scales[j + 4] >> 4) | (scales[j] >> 6) << 4)};
}

} // namespace chorus
