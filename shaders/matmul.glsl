// shaders/matmul.glsl — the tiled matrix-matrix kernels (prefill): push constants, tile
// geometry, bindings, and the "four consecutive weights" reader on top of quant.glsl.
//
// Y[m][n] = sum_k W[n][k] * X[m][k]
//   W (binding 0, uint words): N rows in GGUF block layout, row n at byte w_base + n * w_row_bytes.
//   X (binding 1, float):      M rows of K floats, row m at element x_base + m * x_stride.
//   Y (binding 2, float):      M rows, element (m, n) at y_base + m * y_stride + n.
// mul_mm.comp (GPUs): a workgroup computes a BM x BN tile of Y (m0 = group.y * BM, n0 = group.x * BN).
// It walks K in steps of MM_BK = 32 elements (one block of the 32-element formats, one eighth of
// a K-quant super-block; quantised K is a multiple of 32, plain K is any and the last step is
// partial): dequantises its BN x 32 slice of W and copies its BM x 32 slice of X into shared
// memory, then each invocation accumulates TM x TN outputs.
// mul_mm_cpu.comp (CPU drivers) shares the push constants and bindings but not the tiling: see
// that file.
//
// Specialisation constants: 0 workgroup size (must be (BM / TM) * (BN / TN)), 1 BM, 2 BN, 3 TM,
// 4 TN. The host (engine/ops/matmul.cpp) picks them and checks shared memory.
// The C++ mirror of the push constants is chorus::ops::MatmulPush (engine/ops/matmul.h).

layout(push_constant) uniform MatmulPush {
  uint K;            // elements per row of W and X (a multiple of 32 for quantised formats)
  uint N;            // rows of W (= columns of Y) in this dispatch
  uint M;            // rows of X and Y in this dispatch
  uint w_base;       // bytes from binding 0's start to row 0 of W (even)
  uint w_row_bytes;  // bytes between consecutive rows of W
  uint x_base;       // elements from binding 1's start to X[0][0]
  uint x_stride;     // elements between consecutive rows of X
  uint y_base;       // elements from binding 2's start to Y[0][0]
  uint y_stride;     // elements between consecutive rows of Y
  uint w_up;         // (mul_mm_cpu with GLU) bytes from row n of W (the gate) to its up row
} pc;

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint BM = 64;
layout(constant_id = 2) const uint BN = 64;
layout(constant_id = 3) const uint TM = 4;
layout(constant_id = 4) const uint TN = 4;
// Y_ADD: Y += X W^T (each element read, the product added, written back: the bits of a store
// into a scratch tensor and an add), else Y = X W^T. (Constant 5 is mul_mm_cpu's X_VEC4.)
layout(constant_id = 6) const bool Y_ADD = false;

#define MM_BK 32u
// vec4s per tile row in shared memory: 8 of data plus one of padding (spreads rows over banks).
#define MM_LDS 9u

#ifdef MM_W_TEXEL
// (mul_mm_cpu.comp, formats whose words it loads itself) W through a uniform texel buffer of
// R32_UINT texels; quant.glsl's readers, never called then, see a private array.
layout(set = 0, binding = 0) uniform usamplerBuffer mm_wtex;
uint mm_w_unused[1];
#else
layout(std430, set = 0, binding = 0) readonly buffer MatmulW { uint mm_w[]; };
#endif
#ifdef MM_X_TEXEL
// (mul_mm_cpu.comp) X through a uniform texel buffer: vec4 texels when x_base and x_stride are
// multiples of 4 (X_VEC4), else float texels.
layout(set = 0, binding = 1) uniform samplerBuffer mm_xtex;
#else
layout(std430, set = 0, binding = 1) readonly buffer MatmulX { float mm_x[]; };
#endif
layout(std430, set = 0, binding = 2) buffer MatmulY { float mm_y[]; };

// Element i of Y gets v (Y_ADD: Y's element plus v).
void mm_store(uint i, float v) { mm_y[i] = Y_ADD ? mm_y[i] + v : v; }

#if CHORUS_FP16 && !defined(MM_W_TEXEL)
// The same words as fp16 values: quant.glsl reads fp16 fields through it.
layout(std430, set = 0, binding = 0) readonly buffer MatmulW16 { float16_t mm_w16[]; };
#define QBUF16 mm_w16
#endif

// Block layouts and dequantisation: one FMT_<TYPE> define per compiled kernel.
#ifdef MM_W_TEXEL
#define QBUF mm_w_unused
#else
#define QBUF mm_w
#endif
#include "quant.glsl"

// Four consecutive weights W[row][k .. k + 3] (k a multiple of 4) of the row starting at byte
// `row` of binding 0.
vec4 mm_w4(uint row, uint k) { return dq_vec4(row + (k / QK) * BLOCK_BYTES, k % QK); }
