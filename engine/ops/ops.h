// engine/ops/ops.h — the non-matrix kernels of a llama-family forward pass.
//
// Owns: recording RMSNorm, RoPE, add / mul, SwiGLU / GeGLU
// (f32 <-> f16, strided, e.g. into the KV cache) and get_rows (embedding lookup for every
// weight format) into a command buffer through ops::Kernels. Each function records its
// dispatches and nothing else: callers place the barriers between dependent ops.
//
// Conventions: every buffer argument is (buffer, byte offset of the tensor's first element);
// tensors are F32 unless stated; shapes and strides are in elements; a stride of 0 means
// "packed" (the natural value given in each shape's comment). Outputs may alias inputs
// where stated. Windows are bound around exactly the bytes each op touches; a tensor whose
// window would exceed maxStorageBufferRange throws vk::Error (get_rows instead binds its
// weight in windows, see there). Kernel sources: shaders/ops.cmake; push constants:
// shaders/ops.glsl, mirrored in ops.cpp.
#pragma once

#include <cstdint>

#include "engine/ops/kernels.h"
#include "engine/quant.h"
#include "vkdevice/commands.h"
#include "vkdevice/memory.h"

namespace chorus::ops {

// ---- RMSNorm ---------------------------------------------------------------------------
struct RmsNormShape {
  uint32_t n = 0;         // elements per row
  uint32_t rows = 1;
  float eps = 1e-5f;
  uint32_t x_stride = 0;  // elements between rows of x (0: n)
  uint32_t y_stride = 0;  // elements between rows of y (0: n)
};
// y[r][i] = x[r][i] / sqrt(mean_i(x[r][i]^2) + eps) * weight[i]; x, y: [rows][n];
// weight: [n] or null (no scaling). y may be x (in place).
void rms_norm(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer* weight,
              uint64_t weight_offset, const vk::Buffer& y, uint64_t y_offset, const RmsNormShape& s);
// x[r][i] += sum[r][i] (x updated in place), then y = rms_norm(x) as above, in one dispatch and
// with the same bits as add followed by rms_norm. sum's rows are sum_stride elements apart
// (0: n). x, sum and y must not overlap (vk::Error otherwise).
void add_rms_norm(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer& sum,
                  uint64_t sum_offset, const vk::Buffer* weight, uint64_t weight_offset, const vk::Buffer& y,
                  uint64_t y_offset, const RmsNormShape& s, uint32_t sum_stride = 0);

// y[r][i] += rms_norm(x)[r][i] (the normed x, times weight[i], added into y), in one dispatch
// and with the bits of rms_norm into a buffer followed by add: a post-norm's output joining the
// residual (gemma3). x and y must not overlap (vk::Error otherwise).
void rms_norm_add(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer* weight,
                  uint64_t weight_offset, const vk::Buffer& y, uint64_t y_offset, const RmsNormShape& s);

// rms_norm with two weights: rows [0, first_rows) scaled by weight_a, rows [first_rows,
// s.rows) by weight_b (each [n]), in one dispatch and with the bits of two rms_norm calls: a
// layer's QK-norm (Q heads, then K heads, each its own weight). y may be x (in place).
void rms_norm2(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer& weight_a,
               uint64_t weight_a_offset, const vk::Buffer& weight_b, uint64_t weight_b_offset, uint32_t first_rows,
               const vk::Buffer& y, uint64_t y_offset, const RmsNormShape& s);

// ---- RoPE ------------------------------------------------------------------------------
struct RopeShape {
  uint32_t n_tokens = 1;
  uint32_t n_heads = 1;
  uint32_t head_dim = 0;        // even
  uint32_t n_dims = 0;          // rotated dimensions, even, <= head_dim (0: head_dim)
  bool neox = false;            // false: pairs (2i, 2i+1) (llama); true: pairs (i, i + n_dims/2)
  float freq_base = 10000.0f;
  float freq_scale = 1.0f;      // theta_i = pos * freq_scale * freq_base^(-2i / n_dims)
  uint32_t x_token_stride = 0;  // 0: n_heads * head_dim
  uint32_t x_head_stride = 0;   // 0: head_dim
  uint32_t y_token_stride = 0;  // 0: n_heads * head_dim
  uint32_t y_head_stride = 0;   // 0: head_dim
};
// Rotary embedding of x [n_tokens][n_heads][head_dim] into y (same layout; y may be x).
// positions: [n_tokens] int32 (or uint32 < 2^31), one per token. Dimensions [n_dims,
// head_dim) are copied unchanged.
void rope(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer& positions,
          uint64_t positions_offset, const vk::Buffer& y, uint64_t y_offset, const RopeShape& s);

// ---- element-wise ----------------------------------------------------------------------
// z[i] = x[i] + y[i % ny], i < n: ny == n element-wise, ny == row length broadcasts a row
// vector over rows (n must then be a multiple of ny), ny == 1 a scalar. z may be x or y.
void add(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer& y,
         uint64_t y_offset, const vk::Buffer& z, uint64_t z_offset, uint32_t n, uint32_t ny);
// z[i] = x[i] * y[i % ny], as add (the embedding's scale, gemma: ny == 1).
void mul(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer& y,
         uint64_t y_offset, const vk::Buffer& z, uint64_t z_offset, uint32_t n, uint32_t ny);
// ---- gated linear units ----------------------------------------------------------------
struct GluShape {
  uint32_t n = 0;            // elements per row
  uint32_t rows = 1;
  uint32_t gate_stride = 0;  // 0: n (a fused [rows][2n] gate|up tensor gives 2n for both)
  uint32_t up_stride = 0;    // 0: n
  uint32_t out_stride = 0;   // 0: n
};
// out[r][i] = silu(gate[r][i]) * up[r][i], silu(g) = g / (1 + exp(-g)). out may be gate or up.
void swiglu(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& gate, uint64_t gate_offset, const vk::Buffer& up,
            uint64_t up_offset, const vk::Buffer& out, uint64_t out_offset, const GluShape& s);
// out[r][i] = gelu(gate[r][i]) * up[r][i] with GELU's tanh approximation
// gelu(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))).
void geglu(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& gate, uint64_t gate_offset, const vk::Buffer& up,
           uint64_t up_offset, const vk::Buffer& out, uint64_t out_offset, const GluShape& s);

// ---- get_rows --------------------------------------------------------------------------
struct GetRowsShape {
  GgmlType type = GgmlType::F32;  // any of weight_types()
  uint32_t n = 0;                 // elements per row of W (a whole number of blocks)
  uint32_t n_rows = 0;            // rows of W
  uint32_t n_ids = 0;
  uint32_t out_stride = 0;        // floats between output rows (0: n)
  // Largest window of W bound at once (0: the device's maxStorageBufferRange). W is bound as
  // consecutive windows of whole rows, one dispatch each; tests lower this to cover that path.
  uint64_t max_window = 0;
};
// out[i][:] = dequantize(W[ids[i]][:]), i < n_ids. W: [n_rows] rows of device_row_bytes(type, n)
// in the device block layout (engine/quant.h; its offset a multiple of 4); ids: [n_ids] uint32;
// out: [n_ids][n] F32.
// An id >= n_rows leaves its output row unwritten.
void get_rows(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& w, uint64_t w_offset, const vk::Buffer& ids,
              uint64_t ids_offset, const vk::Buffer& out, uint64_t out_offset, const GetRowsShape& s);

// The kernel name of get_rows for a weight format ("get_rows_q4_k"); throws vk::Error for a
// format chorus cannot look up.
const char* get_rows_op(GgmlType type);

}  // namespace chorus::ops
