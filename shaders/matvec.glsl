// shaders/matvec.glsl — push constants of the matrix-vector family (mul_mv_*, quantize_q8_1).
// Mirrored by chorus::ops::MatVecPush / QuantizeQ8Push in engine/ops/matvec.h (sizes are
// static_asserted there).

// mul_mv_<fmt>: y[y_base + n] = sum_k W[n, k] * x[k] for the rows n < N of this dispatch.
struct MatVecPush {
  uint K;          // elements per row (a multiple of the format's QK)
  uint N;          // rows in this dispatch
  uint row_bytes;  // bytes per row of W
  uint w_base;     // byte offset of row 0 in binding 0
  uint x_base;     // offset of x[0] in binding 1: elements (f32 x) or bytes (q8_1 blocks, int8)
  uint y_base;     // element offset of y[0] in binding 2
};

// quantize_q8_1: blocks of 32 x values -> {f16 d, f16 s, i8 qs[32]} (36 bytes each).
struct QuantizeQ8Push {
  uint K;        // elements (a multiple of 32)
  uint x_base;   // element offset of x[0] in binding 0
  uint q_base;   // byte offset (a multiple of 4) of block 0 in binding 1
};

#ifdef MV_KERNEL
// The common frame of the mul_mv kernels (mul_mv.comp, mul_mv_int8.comp). The kernel declares
// binding 2 as `float ydata[]` before including this; the push block `p` is declared here.
layout(push_constant) uniform PushBlock { MatVecPush p; };
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint ROWS = 2;  // rows per workgroup (or per invocation), 1..MV_MAX_ROWS
#define MV_MAX_ROWS 8
#define MV_MAX_WG 256
#define MV_RED_ROWS 8  // rows a workgroup shares at most (ROWS <= 8 unless ROW_PER_INVOCATION)

shared float mv_red[MV_RED_ROWS * MV_MAX_WG];  // partial sums [row][invocation or subgroup]

// Sums acc[r] over the workgroup and writes y[row0 + r] for the rows below p.N. One barrier.
void mv_reduce_store(float acc[MV_MAX_ROWS], uint row0) {
  const uint tid = gl_LocalInvocationID.x;
#if CHORUS_SUBGROUP
  [[unroll]] for (uint r = 0u; r < MV_MAX_ROWS; ++r) {
    if (r < ROWS && r < MV_RED_ROWS) {
      const float s = subgroupAdd(acc[r]);
      if (subgroupElect()) mv_red[r * MV_MAX_WG + gl_SubgroupID] = s;
    }
  }
  const uint parts = gl_NumSubgroups;
#else
  [[unroll]] for (uint r = 0u; r < MV_MAX_ROWS; ++r) {
    if (r < ROWS && r < MV_RED_ROWS) mv_red[r * MV_MAX_WG + tid] = acc[r];
  }
  const uint parts = gl_WorkGroupSize.x;
#endif
  barrier();  // every partial sum is in mv_red before the row totals are formed
  if (tid < ROWS && row0 + tid < p.N) {
    float s = 0.0;
    for (uint k = 0u; k < parts; ++k) s += mv_red[tid * MV_MAX_WG + k];
    ydata[p.y_base + row0 + tid] = s;
  }
}
#endif
