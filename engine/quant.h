// quant.h — GGUF tensor element formats: the plain C++ reference.
//
// This module owns:
//   * the ggml type ids that GGUF files store per tensor (GgmlType) and their block geometry
//     (TypeTraits: elements per block, bytes per block), plus overflow-checked row sizes;
//   * the byte layout of every supported block (BlockQ4_0 ... BlockQ6_K), identical to
//     ggml's, checked by static_assert; the GLSL block includes must mirror these;
//   * scalar fp16 / bf16 <-> fp32 conversion;
//   * the CPU reference dequantiser (bit-exact to ggml / gguf-py) and a reference quantiser
//     (bit-exact to ggml's reference rounding for F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0;
//     a simple, valid-but-not-optimal scale search for the K-quants).
// Every GPU kernel is checked against dequantize_row (house style 11). Nothing here is fast.
//
// Layout facts common to all blocks: every multi-byte field is little-endian; "fp16" means an
// IEEE binary16 bit pattern stored as uint16_t. Within a 32-element block of Q4_0/Q4_1/Q5_x,
// byte j of qs holds element j in its low nibble and element j + 16 in its high nibble.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace chorus {

// Type ids exactly as stored in a GGUF tensor-info record (ggml's enum ggml_type).
enum class GgmlType : uint32_t {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    BF16 = 30,
};

struct TypeTraits {
    const char* name;      // ggml's name, e.g. "Q4_K"
    uint32_t block_elems;  // elements per block (1 for F32/F16/BF16)
    uint32_t block_bytes;  // bytes per block
    bool supported;        // false: a known ggml type chorus cannot dequantise (e.g. IQ2_XXS)
};

// Traits for a raw id read from a file: nullptr for ids ggml never assigned (or retired);
// known-but-unsupported types (IQ*, TQ*, MXFP4, integer types ...) return supported == false
// so that error messages can name them.
const TypeTraits* type_traits(uint32_t raw_type);
const TypeTraits& type_traits(GgmlType t);

// Bytes of a row of n_elems elements; nullopt if n_elems is not a whole number of blocks or
// the byte count does not fit in uint64_t.
std::optional<uint64_t> row_bytes(GgmlType t, uint64_t n_elems);

// How weights are laid out in device memory: GGUF's block layout, except that
// - each Q6_K block (210 bytes) is followed by 14 zero bytes, so that every block starts
//   16-byte aligned and the kernels read it as whole 16-byte words (docs/performance.md,
//   "Q6_K on the device");
// - each row of a block-quantised format ends in zero bytes up to a multiple of 16 bytes
//   (device_row_align), so that every row starts 16-byte aligned: SmolLM2's Q4_1 rows of 576
//   elements are 360 bytes in the file and 368 on the device ("Rows padded to 16 bytes").
// Every device-side size, offset and row stride of a weight comes from these; the file and
// the CPU references keep GGUF's layout.
uint32_t device_block_bytes(GgmlType t);
// The multiple of bytes a device row is padded to: 16 for block-quantised formats, 1 for
// F32, F16 and BF16 (whose kernels index elements).
uint32_t device_row_align(GgmlType t);
// Bytes of a row of n_elems elements on a device, padding included; nullopt as row_bytes.
std::optional<uint64_t> device_row_bytes(GgmlType t, uint64_t n_elems);
// Copies n_blocks whole blocks of type t from GGUF layout at src to device layout at dst
// (n_blocks * device_block_bytes(t) bytes; padding zeroed). Blocks of one row: a row's end
// padding is the caller's (rows_to_device does both).
void blocks_to_device(GgmlType t, const void* src, uint64_t n_blocks, void* dst);
// The device layout of n_rows rows of n_elems elements in GGUF layout (n_elems a whole number
// of blocks: asserted).
std::vector<uint8_t> rows_to_device(GgmlType t, std::span<const uint8_t> src, uint64_t n_elems, uint64_t n_rows);

// IEEE binary16 <-> binary32. fp32_to_fp16 rounds to nearest, ties to even, produces
// subnormals, overflows to inf; a NaN stays a (quiet) NaN of the same sign.
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);
// bfloat16 <-> binary32, rounding to nearest even like ggml (NaN is forced quiet, not rounded).
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);

// dst[0..n) = the values encoded by the blocks at src. n must be a multiple of block_elems
// (asserted). Supports every weight format; throws std::invalid_argument for Q8_1 and Q8_K
// (activation formats of int8 dot products, which chorus does not use).
void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n);
// Encodes src[0..n) into row_bytes(t, n) bytes at dst. n must be a multiple of block_elems.
// Inputs must be finite. Supports the same formats as dequantize_row.
void quantize_row(GgmlType t, const float* src, void* dst, int64_t n);

// The formats a GGUF weight tensor may use in chorus, in a fixed order:
// F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
std::vector<GgmlType> weight_types();

// ---------------------------------------------------------------------------------------------
// Block layouts (byte-identical to ggml-common.h). All members are byte arrays or uint16_t, so
// there is no padding; sizes are static_asserted below.

inline constexpr int kQK = 32;    // elements per block of the simple formats
inline constexpr int kQK_K = 256; // elements per K-quant super-block

// x = d * (q - 8), q = 4-bit unsigned.
struct BlockQ4_0 {
    uint16_t d;             // fp16 scale
    uint8_t qs[kQK / 2];    // qs[j]: low nibble = q[j], high nibble = q[j + 16]
};

// x = d * q + m, q = 4-bit unsigned.
struct BlockQ4_1 {
    uint16_t d;             // fp16 scale
    uint16_t m;             // fp16 offset (the block minimum)
    uint8_t qs[kQK / 2];    // as BlockQ4_0
};

// x = d * (q - 16), q = 5-bit unsigned.
struct BlockQ5_0 {
    uint16_t d;             // fp16 scale
    uint8_t qh[4];          // bit j of the little-endian uint32 = bit 4 of q[j]
    uint8_t qs[kQK / 2];    // low 4 bits of q, nibble order as BlockQ4_0
};

// x = d * q + m, q = 5-bit unsigned.
struct BlockQ5_1 {
    uint16_t d;             // fp16 scale
    uint16_t m;             // fp16 offset (the block minimum)
    uint8_t qh[4];          // as BlockQ5_0
    uint8_t qs[kQK / 2];    // as BlockQ5_0
};

// x = d * q, q = int8.
struct BlockQ8_0 {
    uint16_t d;             // fp16 scale
    int8_t qs[kQK];         // quants, element order
};

// 16 sub-blocks of 16: x = d * (sc & 15) * q - dmin * (sc >> 4), q = 2-bit unsigned.
struct BlockQ2_K {
    uint8_t scales[kQK_K / 16]; // per sub-block: low nibble scale, high nibble min
    uint8_t qs[kQK_K / 4];      // element 128*h + 32*s + l is bits 2s..2s+1 of qs[32*h + l]
    uint16_t d;                 // fp16 super-scale of the scales
    uint16_t dmin;              // fp16 super-scale of the mins
};

// 16 sub-blocks of 16: x = d * (sc - 32) * q, q = 3-bit signed in [-4, 3].
struct BlockQ3_K {
    uint8_t hmask[kQK_K / 8];   // element 32*k + l: bit k of hmask[l]; bit SET means q = low2,
                                // bit CLEAR means q = low2 - 4
    uint8_t qs[kQK_K / 4];      // low 2 bits of q, same packing as BlockQ2_K::qs
    uint8_t scales[12];         // 16 six-bit scales with bias 32: sc[i] low 4 bits are
                                // nibble (i / 8) of scales[i % 8], high 2 bits are bits
                                // 2*(i / 4)..+1 of scales[8 + i % 4]
    uint16_t d;                 // fp16 super-scale
};

// 8 sub-blocks of 32: x = d * sc[j] * q - dmin * m[j], q = 4-bit unsigned.
struct BlockQ4_K {
    uint16_t d;                 // fp16 super-scale of the scales
    uint16_t dmin;              // fp16 super-scale of the mins
    uint8_t scales[12];         // 8 six-bit scales + 8 six-bit mins, see unpack_scale_min_k4
    uint8_t qs[kQK_K / 2];      // element 64*c + 32*h + l: nibble h of qs[32*c + l]
};

// 8 sub-blocks of 32: x = d * sc[j] * q - dmin * m[j], q = 5-bit unsigned.
struct BlockQ5_K {
    uint16_t d;                 // fp16 super-scale of the scales
    uint16_t dmin;              // fp16 super-scale of the mins
    uint8_t scales[12];         // as BlockQ4_K
    uint8_t qh[kQK_K / 8];      // element 32*k + l: bit 4 of q is bit k of qh[l]
    uint8_t qs[kQK_K / 2];      // low 4 bits of q, as BlockQ4_K::qs
};

// 16 sub-blocks of 16: x = d * scales[i] * (q - 32), q = 6-bit unsigned.
struct BlockQ6_K {
    uint8_t ql[kQK_K / 2];      // element 128*h + r (r < 128): nibble r / 64 of
                                // ql[64*h + r % 64] = low 4 bits of q
    uint8_t qh[kQK_K / 4];      // bits 2*(r / 32)..+1 of qh[32*h + r % 32] = high 2 bits of q
    int8_t scales[kQK_K / 16];  // signed 8-bit sub-block scales
    uint16_t d;                 // fp16 super-scale
};

static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block must be 18 bytes");
static_assert(sizeof(BlockQ4_1) == 20, "Q4_1 block must be 20 bytes");
static_assert(sizeof(BlockQ5_0) == 22, "Q5_0 block must be 22 bytes");
static_assert(sizeof(BlockQ5_1) == 24, "Q5_1 block must be 24 bytes");
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block must be 34 bytes");
static_assert(sizeof(BlockQ2_K) == 84, "Q2_K block must be 84 bytes");
static_assert(sizeof(BlockQ3_K) == 110, "Q3_K block must be 110 bytes");
static_assert(sizeof(BlockQ4_K) == 144, "Q4_K block must be 144 bytes");
static_assert(sizeof(BlockQ5_K) == 176, "Q5_K block must be 176 bytes");
static_assert(sizeof(BlockQ6_K) == 210, "Q6_K block must be 210 bytes");

// The 6-bit (scale, min) pair of sub-block j (0..7) of a Q4_K / Q5_K block:
//   j < 4:  sc = scales[j] & 63,                              m = scales[j + 4] & 63
//   j >= 4: sc = (scales[j + 4] & 15) | (scales[j - 4] >> 6) << 4,
//           m  = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4
struct ScaleMin {
    uint8_t sc;
    uint8_t m;
};
ScaleMin unpack_scale_min_k4(const uint8_t scales[12], int j);

} // namespace chorus

