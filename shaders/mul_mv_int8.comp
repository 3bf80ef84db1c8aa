#version 450
#extension GL_GOOGLE_include_directive : require
// mul_mv_<fmt>+int8 — y[n] = sum_k W[n, k] * x[k] with x given as q8_1 blocks (made by
// quantize_q8_1) and integer dot products of 4 packed int8 (GL_EXT_integer_dot_product).
// Formats: FMT_Q8_0, FMT_Q4_0. Work split and reduction as mul_mv.comp. The result differs
// from the f32 kernels by x's 8-bit quantisation (relative error ~1e-2 per row, see tests).
// glslang 12 (this machine's) predates GL_EXT_integer_dot_product, which common.glsl's int8
// block requires; so common.glsl is included with CHORUS_INT8 off and OpSDot (packed 4x8) is
// declared here through GL_EXT_spirv_intrinsics. The device enables shaderIntegerDotProduct.
#undef CHORUS_INT8
#define CHORUS_INT8 0
#include "common.glsl"
#undef CHORUS_INT8
#define CHORUS_INT8 1
#extension GL_EXT_spirv_intrinsics : require
// OpSDot = 4450; capabilities DotProductInput4x8BitPacked = 6018, DotProduct = 6019;
// the literal operand is PackedVectorFormat4x8Bit = 0.
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6018, 6019], id = 4450)
int sdot_packed4x8(int a, int b, spirv_literal int packed_format);

layout(set = 0, binding = 0, std430) readonly buffer W { uint wdata[]; };
#if CHORUS_FP16
layout(set = 0, binding = 0, std430) readonly buffer W16 { float16_t wdata16[]; };
#define QBUF16 wdata16
#endif
layout(set = 0, binding = 1, std430) readonly buffer X { uint xq[]; };  // q8_1 blocks, 9 words
layout(set = 0, binding = 2, std430) writeonly buffer Y { float ydata[]; };
#define MV_KERNEL 1
#include "matvec.glsl"

#define QBUF wdata
#include "quant.glsl"

#if !defined(FMT_Q8_0) && !defined(FMT_Q4_0)
#error "mul_mv_int8.comp supports FMT_Q8_0 and FMT_Q4_0"
#endif

int dot4(uint a, uint b) { return sdot_packed4x8(int(a), int(b), 0); }

void main() {
  const uint WG = gl_WorkGroupSize.x;
  const uint tid = gl_LocalInvocationID.x;
  const uint row0 = gl_WorkGroupID.x * ROWS;

  uint rb[MV_MAX_ROWS];
  float acc[MV_MAX_ROWS];
  [[unroll]] for (uint r = 0u; r < MV_MAX_ROWS; ++r) {
    rb[r] = p.w_base + min(row0 + r, p.N - 1u) * p.row_bytes;
    acc[r] = 0.0;
  }

  const uint ngroups = (p.K / QK) * DQ_GROUPS;
  for (uint i = tid; i < ngroups; i += WG) {
    const uint blk = i / DQ_GROUPS, g = i % DQ_GROUPS;
    const uint xw = p.x_base / 4u + 9u * blk;
    const float dx = unpackHalf2x16(xq[xw]).x;
#if defined(FMT_Q8_0)
    const uint x0 = xq[xw + 1u + 2u * g], x1 = xq[xw + 2u + 2u * g];  // elements 8g..8g+7
#else
    const uint x0 = xq[xw + 1u + g], x1 = xq[xw + 5u + g];  // elements 4g.. and 16+4g..
#endif
    [[unroll]] for (uint r = 0u; r < MV_MAX_ROWS; ++r) {
      if (r < ROWS) {
        const uint bb = rb[r] + blk * BLOCK_BYTES;
#if defined(FMT_Q8_0)
        const int s = dot4(q_u32(bb + 2u + 8u * g), x0) + dot4(q_u32(bb + 6u + 8u * g), x1);
#else
        const uint v = q_u32(bb + 2u + 4u * g);
        // nibble q (0..15) -> signed byte q - 8, per byte without borrows between bytes
        const uint lo = (((v & 0x0F0F0F0Fu) | 0x80808080u) - 0x08080808u) ^ 0x80808080u;
        const uint hi = ((((v >> 4) & 0x0F0F0F0Fu) | 0x80808080u) - 0x08080808u) ^ 0x80808080u;
        const int s = dot4(lo, x0) + dot4(hi, x1);
#endif
        acc[r] += q_f16(bb) * dx * float(s);
      }
    }
  }

  mv_reduce_store(acc, row0);
}
