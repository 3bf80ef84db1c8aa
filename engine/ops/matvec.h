// engine/ops/matvec.h — dequantising matrix-vector products (decode) for every weight format.
//
// Owns: recording mul_mv_<fmt> dispatches (shaders/mul_mv.comp, and the texel-buffer kernels
// mul_mv_texel_<fmt> in mul_mv_texel.comp the registry offers CPU devices); binding weights larger than
// maxStorageBufferRange in windows (row chunks, one dispatch each); the workgroup shape; the
// push-constant structs mirrored from shaders/matvec.glsl.
#pragma once

#include <cstdint>
#include <string>

#include "engine/ops/attention.h"
#include "engine/ops/kernels.h"
#include "engine/quant.h"
#include "vkdevice/commands.h"
#include "vkdevice/memory.h"

namespace chorus::ops {

// Mirrors `MatVecPush` in shaders/matvec.glsl.
struct MatVecPush {
  uint32_t K;          // elements per row
  uint32_t N;          // rows in this dispatch
  uint32_t row_bytes;  // bytes per row of W
  uint32_t w_base;     // bytes from the W binding's start to row 0
  uint32_t x_base;     // elements from the x binding's start to x[0]
  uint32_t y_base;     // elements from the y binding's start to y[0]
  uint32_t g_base = 0; // elements from the norm weight's binding start (fused NORM)
  float eps = 0;       // RMSNorm epsilon (fused NORM)
  uint32_t xg_base = 0;  // elements from the x * g output's binding start (next_norm)
};
static_assert(sizeof(MatVecPush) == 36, "MatVecPush must match shaders/matvec.glsl");

// Mirrors `MatVecRopePush` in shaders/matvec.glsl (after MatVecPush, the rope kernels only).
struct MatVecRopePush {
  uint32_t n_q, head_dim, n_dims, n_ctx;
  uint32_t pos_off;         // elements
  uint32_t kc_off, vc_off;  // words
  float freq_base, freq_scale;
};
static_assert(sizeof(MatVecRopePush) == 36, "MatVecRopePush must match shaders/matvec.glsl");

// RoPE and the KV-cache store in the product's epilogue: rope_store's work (ops::rope_store)
// for one token, on the texel kernels (mul_mv_texel_rope_<fmt>). The product's N rows are Q
// (n_q rows, whole heads), then K and V (cache->n_kv_heads * cache->head_dim rows each); y
// gets Q rotated and K, V as the product made them; the cache gets K rotated and V, as f16, at
// the position (int32) at byte positions_offset of `positions`, read when the dispatch runs
// (outside [0, n_ctx): stores nothing). Normal RoPE only (a rotated pair is two adjacent rows;
// NEOX pairs lie half a head apart): for NEOX the caller records rope_store.
struct MatVecRope {
  const KvCache* cache = nullptr;
  const vk::Buffer* positions = nullptr;
  uint64_t positions_offset = 0;  // a multiple of 4
  uint32_t n_q = 0;
  uint32_t n_dims = 0;  // rotated rows of a head, even, <= head_dim (0: head_dim)
  float freq_base = 10000.0f;
  float freq_scale = 1.0f;
};

// Work a matrix-vector product can do in the same dispatch (decode fusion; shaders/matvec.glsl):
// RMSNorm of x before, and an epilogue after. Every matvec kernel fuses (storage kernels in
// both work splits, texel kernels) when W is bound whole; mul_mv_fuses() says whether a call
// can, and the caller records the separate ops otherwise (engine/forward.cpp).
struct MatVecFusion {
  const vk::Buffer* norm = nullptr;  // x is first RMS-normed with this F32 weight of K elements
  uint64_t norm_offset = 0;          // bytes, a multiple of 16
  float eps = 0;
  enum class Out : uint32_t {
    store = 0,   // y[n] = W_n . x
    add = 1,     // y[n] += W_n . x (a residual add)
    swiglu = 2,  // W holds 2N rows [gate | up]: y[n] = silu(gate_n . x) * (up_n . x)
    geglu = 3,   // the same with GELU (tanh approximation)
  } out = Out::store;
  const MatVecRope* rope = nullptr;  // with out == store: RoPE and the cache store (texel kernels)
  // Texel kernels only. With norm: the product's x is already x * g (an earlier product's
  // next_norm output, g this norm's weight, which is then not read) and raw_x holds x itself,
  // whose sum of squares the norm takes: one vector fetched instead of x and g.
  const vk::Buffer* raw_x = nullptr;
  uint64_t raw_x_offset = 0;  // bytes, a multiple of 16
  // Texel kernels only. With out == add: each y[n] after the add is also written times
  // next_norm's weight (N floats at next_norm_offset, a multiple of 16) into next_out (N
  // floats at next_out_offset): the x * g of the next normed product's raw_x form.
  const vk::Buffer* next_norm = nullptr;
  uint64_t next_norm_offset = 0;
  const vk::Buffer* next_out = nullptr;
  uint64_t next_out_offset = 0;
  bool any() const {
    return norm != nullptr || out != Out::store || rope != nullptr || raw_x != nullptr || next_norm != nullptr;
  }
  bool gated() const { return out == Out::swiglu || out == Out::geglu; }  // W holds 2N rows
};

struct MatVecOptions {
  uint64_t max_window = 0;   // largest W binding in bytes; 0 = the device's maxStorageBufferRange
                             // (tests pass a small value to exercise the windowed path)
  uint32_t workgroup = 0;    // invocations per workgroup (1..256); 0 = default for the device
  uint32_t rows = 0;         // rows per workgroup, or per invocation in row-per-invocation mode
                             // (1..8; 0 = default: 4 per workgroup, 8 per invocation)
  int row_per_invocation = -1;  // 1: each invocation computes whole rows (fast on CPU devices,
                                // where x loads become uniform); 0: a workgroup shares its rows
                                // (GPUs); -1: 1 on CPU devices (shaders::kCpu), else 0.
  int texel = -1;  // the texel-buffer kernels (mul_mv_texel_<fmt>: Q4_0, Q8_0, Q4_1, Q5_0, Q5_1,
                   // F16, BF16 with K a multiple of 32, the K-quants with K a multiple of 256; row-per-invocation
                   // mode, x at a 16-byte multiple, buffers
                   // from Device::create_buffer): 1 = use them where they apply, 0 = never,
                   // -1 = 1 on CPU devices (where they are faster), else 0
  int fixed_k = -1;  // (texel kernels) K as a specialisation constant, so the kernel's loops over K
                     // are unrolled when its pipeline is built (one pipeline per K): 1 = always,
                     // 0 = never (K from the push constants), -1 = for K up to kMaxFixedK
};

// The largest K the texel kernels are specialised for by default (MatVecOptions::fixed_k), a
// judgement: the unrolled code grows with K (every superblock compiled out) while the measured
// gain shrank with K (docs/performance.md, "Decode, sixth round").
inline constexpr uint32_t kMaxFixedK = 4096;

// The kernel name for a weight format: "mul_mv_q4_k".
std::string mul_mv_op(GgmlType type);

// The name of the kernel variant mul_mv records for these arguments (for benchmarks and
// logs): "mul_mv_texel_q4_0+cpu" or "mul_mv_q4_0+subgroup+fp16".
std::string mul_mv_kernel_name(const Kernels& k, GgmlType type, uint32_t K, const vk::Buffer& w, uint64_t w_offset,
                               const vk::Buffer& x, uint64_t x_offset, const MatVecOptions& options = {});
// Whether mul_mv's storage kernel reads W as 16-byte words for these arguments (rows per
// invocation, every row of the first binding 16-aligned: Q6_K's 224-byte device blocks too).
bool mul_mv_loads_w16(const Kernels& k, GgmlType type, uint32_t K, const vk::Buffer& w, uint64_t w_offset,
                      const vk::Buffer& x, uint64_t x_offset, const MatVecOptions& options = {});

// Records y[n] = sum_k W[n][k] * x[k] for n < N.
//   W: N rows of K elements of `type` in the device block layout (engine/quant.h:
//      device_row_bytes; GGUF's except Q6_K's padding), row-major without padding between rows,
//      starting at byte w_offset of w (even; a multiple of 4 for F32, Q4_K, Q5_K). K must be a
//      multiple of the format's block size (any K >= 1 for F32/F16/BF16).
//   x: K floats at byte x_offset of x; y: N floats at byte y_offset of y (multiples of 4).
// W may exceed maxStorageBufferRange: it is then bound in row chunks, one dispatch each
// (texel-buffer kernels: chunks within maxTexelBufferElements; buffer views are created on
// first use and cached in the buffers, see vk::Buffer::texel_window).
// Reads of W go by 32-bit words, so w should extend to a multiple of 4 bytes past the last
// row (pad the allocation), or the last bytes of an unaligned tail may read as zero.
// Records no barrier before or after: the caller orders this against producers of x and
// consumers of y. Throws vk::Error for unsupported types, bad shapes or misaligned offsets.
void mul_mv(Kernels& k, vk::CommandBuffer& cb, GgmlType type, const vk::Buffer& w, uint64_t w_offset, uint32_t K,
            uint32_t N, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer& y, uint64_t y_offset,
            const MatVecOptions& options = {});

// Whether mul_mv with `fusion` can record these arguments as one dispatch: W (2N rows for a
// gated epilogue) fits one binding (one texel view for the texel kernels), the norm weight
// starts at a 16-byte multiple, a gated epilogue has an even number of rows per invocation or
// workgroup; a RoPE epilogue (fusion.rope) runs on a texel kernel with an even number of rows
// per invocation, the rows and the cache agree (n_q whole heads, N - n_q = 2 x the cache's
// rows), the cache fits one binding and the position lies inside its buffer; raw_x (with a
// norm) and next_norm (with out == add) on a texel kernel, 16-aligned, inside their buffers.
// Without fusion work, always true.
bool mul_mv_fuses(const Kernels& k, GgmlType type, uint32_t K, uint32_t N, const vk::Buffer& w, uint64_t w_offset,
                  const vk::Buffer& x, uint64_t x_offset, const MatVecFusion& fusion, const MatVecOptions& options = {});

// mul_mv with fusion work (see MatVecFusion; N is the number of output rows). Throws vk::Error
// when !mul_mv_fuses(...) for the same arguments.
void mul_mv(Kernels& k, vk::CommandBuffer& cb, GgmlType type, const vk::Buffer& w, uint64_t w_offset, uint32_t K,
            uint32_t N, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer& y, uint64_t y_offset,
            const MatVecFusion& fusion, const MatVecOptions& options = {});

}  // namespace chorus::ops
