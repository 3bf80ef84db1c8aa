#version 450
#extension GL_GOOGLE_include_directive : require
// shaders/mul_mm.comp — tiled matrix-matrix product Y = X * W^T for one weight format
// (MM_TYPE_* or the quant.glsl format define, set by shaders/matmul.cmake). Layout, tiling and
// specialisation constants: matmul.glsl.
//
// Any K: steps past K (the tail of a plain-format row) stage zeros.
// Variants: the fallback keeps both shared tiles in f32; CHORUS_FP16 keeps them in f16 (half
// the shared memory and bandwidth) and still accumulates in f32.
#include "common.glsl"
#include "matmul.glsl"

#if CHORUS_FP16
#define MM_TILE f16vec4
#else
#define MM_TILE vec4
#endif

shared MM_TILE ws[BN * MM_LDS];  // ws[r * MM_LDS + q] = W[n0 + r][k0 + 4q .. +3]
shared MM_TILE xs[BM * MM_LDS];  // xs[r * MM_LDS + q] = X[m0 + r][k0 + 4q .. +3]

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint wg = gl_WorkGroupSize.x;
  const uint n0 = gl_WorkGroupID.x * BN;
  const uint m0 = gl_WorkGroupID.y * BM;
  // Invocation (tn, tm) owns outputs n0 + tn + i * (BN / TN), m0 + tm + j * (BM / TM):
  // neighbouring invocations own neighbouring columns, so Y writes are contiguous.
  // With TM == BM every invocation covers all rows of the tile: tm is then the constant 0, so
  // the X tile reads below have the same address in every invocation (a broadcast; CPU drivers
  // such as lavapipe turn it into one load instead of one per lane).
  const uint tn = TM == BM ? tid : tid % (BN / TN);
  const uint tm = TM == BM ? 0u : tid / (BN / TN);

  float acc[TM][TN];
  [[unroll]] for (uint j = 0; j < TM; ++j)
    [[unroll]] for (uint i = 0; i < TN; ++i) acc[j][i] = 0.0;

  for (uint k0 = 0; k0 < pc.K; k0 += MM_BK) {
    // Stage the tiles; rows past N or M read as zero (their outputs are never written).
    for (uint e = tid; e < BN * (MM_BK / 4u); e += wg) {
      const uint r = e / (MM_BK / 4u), q = e % (MM_BK / 4u);
      const uint n = n0 + r;
      const uint k = k0 + 4u * q;
      vec4 v = vec4(0.0);
      if (n < pc.N) {
        const uint row = pc.w_base + n * pc.w_row_bytes;
        if (k + 4u <= pc.K) {
          v = mm_w4(row, k);
        } else {
          // The tail of a plain-format row (K % 4 != 0): elements past K are zeros.
          [[unroll]] for (uint i = 0; i < 4u; ++i)
            if (k + i < pc.K) v[i] = dq_elem(row, k + i);
        }
      }
      ws[r * MM_LDS + q] = MM_TILE(v);
    }
    for (uint e = tid; e < BM * (MM_BK / 4u); e += wg) {
      const uint r = e / (MM_BK / 4u), q = e % (MM_BK / 4u);
      const uint m = m0 + r;
      const uint k = k0 + 4u * q;
      vec4 v = vec4(0.0);
      if (m < pc.M) {
        const uint i = pc.x_base + m * pc.x_stride + k;
        if (k + 4u <= pc.K) {
          v = vec4(mm_x[i], mm_x[i + 1u], mm_x[i + 2u], mm_x[i + 3u]);
        } else {
          [[unroll]] for (uint e = 0; e < 4u; ++e)
            if (k + e < pc.K) v[e] = mm_x[i + e];
        }
      }
      xs[r * MM_LDS + q] = MM_TILE(v);
    }
    // The tiles are complete before anyone reads them.
    barrier();

    [[unroll]] for (uint q = 0; q < MM_BK / 4u; ++q) {
      vec4 a[TM];
      vec4 b[TN];
      [[unroll]] for (uint j = 0; j < TM; ++j) a[j] = vec4(xs[(tm + j * (BM / TM)) * MM_LDS + q]);
      [[unroll]] for (uint i = 0; i < TN; ++i) b[i] = vec4(ws[(tn + i * (BN / TN)) * MM_LDS + q]);
      [[unroll]] for (uint j = 0; j < TM; ++j)
        [[unroll]] for (uint i = 0; i < TN; ++i) acc[j][i] += dot(a[j], b[i]);
    }
    // Everyone is done reading before the next step overwrites the tiles.
    barrier();
  }

  [[unroll]] for (uint j = 0; j < TM; ++j) {
    const uint m = m0 + tm + j * (BM / TM);
    if (m >= pc.M) continue;
    [[unroll]] for (uint i = 0; i < TN; ++i) {
      const uint n = n0 + tn + i * (BN / TN);
      if (n < pc.N) mm_store(pc.y_base + m * pc.y_stride + n, acc[j][i]);
    }
  }
}
