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
  // The fused forms (mul_mv_texel.comp only; engine/ops/matvec.h MatVecFusion):
  uint g_base;     // element offset of the RMSNorm weight in binding 3 (NORM; NORM_X: of x itself;
                   // NEXT_NORM: of the next norm's weight)
  float eps;       // RMSNorm epsilon (NORM)
  uint xg_base;    // element offset of the x * g output in binding 4 (NEXT_NORM)
};

// quantize_q8_1: blocks of 32 x values -> {f16 d, f16 s, i8 qs[32]} (36 bytes each).
struct QuantizeQ8Push {
  uint K;        // elements (a multiple of 32)
  uint x_base;   // element offset of x[0] in binding 0
  uint q_base;   // byte offset (a multiple of 4) of block 0 in binding 1
};

// mul_mv_texel_rope_<fmt> (mul_mv_texel.comp with MV_ROPE): the decode Q/K/V product of one
// token whose epilogue does rope_store's work. The N rows are Q (n_q rows), K and V
// ((N - n_q) / 2 rows each), in heads of head_dim rows; each pair of rows (2i, 2i + 1) of a
// head is rotated when 2i < n_dims (normal RoPE: rotated pairs are adjacent rows), Q into y, K
// into the cache, V stored as it is; y keeps K and V unrotated. Follows MatVecPush.
struct MatVecRopePush {
  uint n_q;         // Q rows
  uint head_dim;    // rows per head (even)
  uint n_dims;      // rotated rows of a head (even, <= head_dim)
  uint n_ctx;       // cache positions; a position outside [0, n_ctx) stores nothing
  uint pos_off;     // element of the token's position (int) in binding 4
  uint kc_off;      // words from binding 5's start to head 0 of the K cache
  uint vc_off;      // the same in binding 6 for V
  float freq_base;
  float freq_scale;
};

#ifdef MV_KERNEL
// The common frame of the mul_mv kernels (mul_mv.comp, mul_mv_texel.comp). The kernel declares
// binding 2 as `float ydata[]` before including this; the push block `p` is declared here
// (and `rp`, MV_ROPE).
#include "glu.glsl"
#ifdef MV_ROPE
layout(push_constant) uniform PushBlock { MatVecPush p; MatVecRopePush rp; };
#else
layout(push_constant) uniform PushBlock { MatVecPush p; };
#endif
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint ROWS = 2;  // rows per workgroup (or per invocation), 1..MV_MAX_ROWS
#define MV_MAX_ROWS 8
#define MV_MAX_WG 256
#define MV_RED_ROWS 8  // rows a workgroup shares at most (ROWS <= 8 unless ROW_PER_INVOCATION)

shared float mv_red[MV_RED_ROWS * MV_MAX_WG];  // partial sums [row][invocation or subgroup]

// Fused forms (engine/ops/matvec.h MatVecFusion), specialisation constants 5 and 6:
// NORM: x is RMS-normed first, x * (1 / sqrt(mean(x^2) + eps)) * g (rms_norm.comp's expression),
//   g the F32 weight in binding 3 (`gdata` or `gtex`, declared by the kernel) from element g_base;
// EPILOGUE 1: y[n] += the product; 2 / 3: W holds 2N rows [gate | up] and
//   y[n] = act(gate_n . x) * (up_n . x) with act SwiGLU / GeGLU (glu.glsl, as glu.comp).
// The kernel computes OUT_ROWS output rows and, for a gated epilogue, their up rows N further.
layout(constant_id = 5) const bool NORM = false;
layout(constant_id = 6) const uint EPILOGUE = 0u;
const bool GLU = EPILOGUE >= 2u;
const uint OUT_ROWS = GLU ? ROWS / 2u : ROWS;
float x_inv = 1.0;  // NORM: 1 / sqrt(mean(x^2) + eps), set by main (mul_mv_texel: after the products)

// Row r of the ROWS rows an invocation or workgroup computes, from its first output row and
// the step between output rows: output rows first, then (GLU) their up rows.
uint mv_row(uint r, uint row0, uint step) {
  const uint o = r < OUT_ROWS ? r : r - OUT_ROWS;
  return min(row0 + o * step, p.N - 1u) + (r < OUT_ROWS ? 0u : p.N);
}

// The output of row n from its product(s).
float mv_epilogue(float acc, float up, uint n) {
  if (EPILOGUE == 1u) return ydata[p.y_base + n] + acc;
  if (EPILOGUE == 2u) return glu_silu(acc) * up;
  if (EPILOGUE == 3u) return glu_gelu_tanh(acc) * up;
  return acc;
}

// The workgroup's sum of v (every invocation calls it; two barriers).
float mv_wg_sum(float v) {
  const uint tid = gl_LocalInvocationID.x;
#if CHORUS_SUBGROUP
  v = subgroupAdd(v);
  if (subgroupElect()) mv_red[gl_SubgroupID] = v;
  const uint parts = gl_NumSubgroups;
#else
  mv_red[tid] = v;
  const uint parts = gl_WorkGroupSize.x;
#endif
  barrier();  // every part is in mv_red
  float s = 0.0;
  for (uint k = 0u; k < parts; ++k) s += mv_red[k];
  barrier();  // mv_red is free for the rows' reduction
  return s;
}

// Sums acc[r] over the workgroup and writes the output rows row0 + r below p.N (through the
// epilogue). One barrier.
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
  if (tid < OUT_ROWS && row0 + tid < p.N) {
    float s = 0.0, u = 0.0;
    for (uint k = 0u; k < parts; ++k) s += mv_red[tid * MV_MAX_WG + k];
    if (GLU)
      for (uint k = 0u; k < parts; ++k) u += mv_red[(tid + OUT_ROWS) * MV_MAX_WG + k];
    ydata[p.y_base + row0 + tid] = mv_epilogue(s, u, row0 + tid);
  }
}
#endif
