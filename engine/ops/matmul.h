// engine/ops/matmul.h — tiled matrix-matrix products (prefill and batches) for every weight
// format.
//
// Owns: recording mul_mm_<fmt> dispatches (shaders/mul_mm.comp, shared-memory tiles for GPUs) and
// mul_mm_cpu_<fmt> dispatches (shaders/mul_mm_cpu.comp, register tiles without barriers for CPU
// drivers such as lavapipe): choosing the kernel and tile sizes for the device and shape,
// binding tensors larger than maxStorageBufferRange in windows (row chunks of W, row chunks of X
// and Y), and the push-constant struct mirrored from shaders/matmul.glsl.
#pragma once

#include <cstdint>
#include <string>

#include "engine/ops/kernels.h"
#include "engine/quant.h"
#include "vkdevice/commands.h"
#include "vkdevice/memory.h"

namespace chorus::ops {

// Mirrors `MatmulPush` in shaders/matmul.glsl.
struct MatmulPush {
  uint32_t K;            // elements per row of W and X
  uint32_t N;            // rows of W in this dispatch
  uint32_t M;            // rows of X and Y in this dispatch
  uint32_t w_base;       // bytes from the W binding's start to row 0
  uint32_t w_row_bytes;  // bytes between rows of W
  uint32_t x_base;       // elements from the X binding's start to X[0][0]
  uint32_t x_stride;     // elements between rows of X
  uint32_t y_base;       // elements from the Y binding's start to Y[0][0]
  uint32_t y_stride;     // elements between rows of Y
  uint32_t w_up;         // (GLU) bytes from a gate row of W to its up row
};
static_assert(sizeof(MatmulPush) == 40, "MatmulPush must match shaders/matmul.glsl");

// Which kernel computes the product (all are correct everywhere; Auto picks by device type).
enum class MatmulTiling {
  Auto,       // Registers on CPU devices (lavapipe), Grid elsewhere
  Grid,       // mul_mm_<fmt>: tiles staged in shared memory, a TM x TN block of outputs per
              // invocation (GPUs)
  Registers,  // mul_mm_cpu_<fmt>: no shared memory or barriers; each invocation owns a few rows
              // of W by a few rows of X and reads W blocks straight into registers (CPU drivers)
};

struct MatmulOptions {
  uint32_t x_stride = 0;    // floats between rows of X; 0 means K
  uint32_t y_stride = 0;    // floats between rows of Y; 0 means N
  uint64_t max_window = 0;  // largest binding in bytes; 0 means the device's maxStorageBufferRange
                            // (tests pass a small value to exercise the windowed path)
  MatmulTiling tiling = MatmulTiling::Auto;
  bool accumulate = false;  // Y[m][n] += the product (Y read first): the bits of storing the
                            // product into a scratch tensor and adding that into Y
  // A gated unit as the epilogue (register-tiled kernel only; mul_mm_glu_fuses says whether a
  // call can): Y[m][n] = act(X[m] . W[n]) * (X[m] . U[n]), U[n] the row glu_up_offset bytes
  // after W[n] (an FFN's up rows after its gate rows: N rows of W in bytes), act SiLU (swiglu)
  // or GELU's tanh approximation (geglu); the bits of both products stored and then
  // ops::swiglu / ops::geglu.
  enum class Glu : uint32_t { none = 0, swiglu = 1, geglu = 2 } glu = Glu::none;
  uint64_t glu_up_offset = 0;
};

// The kernel names for a weight format: "mul_mm_q4_k" (Grid), "mul_mm_cpu_q4_k" (Registers).
std::string mul_mm_op(GgmlType type);
std::string mul_mm_cpu_op(GgmlType type);
// The kernel variant mul_mm runs for `type` with these options on k's device (e.g.
// "mul_mm_cpu_q4_0+cpu" on lavapipe), for reports.
std::string mul_mm_kernel_name(const Kernels& k, GgmlType type, const MatmulOptions& options = {});

// Whether mul_mm records options.glu in one product on k's device for these tensors: the
// register-tiled kernel runs here and W's gate and up rows fit one binding.
bool mul_mm_glu_fuses(const Kernels& k, GgmlType type, uint32_t K, uint32_t N, const vk::Buffer& w, uint64_t w_offset,
                      const vk::Buffer& x, const MatmulOptions& options);

// Records Y[m][n] = sum_k W[n][k] * X[m][k] (with options.accumulate: Y[m][n] += it; with
// options.glu: the gated unit above) for m < M, n < N.
//   W: N rows of K elements of `type` in the device block layout (engine/quant.h:
//      device_row_bytes), row-major without padding between rows, starting at byte w_offset of w (an even offset; a multiple of 4 for F32, Q4_K, Q5_K). K is any positive
//      number for F32, F16 and BF16 (rows of F16/BF16 may then start at 2 mod 4 bytes), and a
//      multiple of the block size (32 or 256) for quantised formats.
//   X: M rows of K floats starting at byte x_offset of x (a multiple of 4), rows x_stride apart.
//   Y: M rows of N floats starting at byte y_offset of y (a multiple of 4), rows y_stride apart.
// Any of the three may exceed maxStorageBufferRange: the product is then recorded as several
// dispatches over row chunks (of W, and of X/Y together), which write disjoint parts of Y.
// Reads of W go by 32-bit words, so w should extend to a multiple of 4 bytes past the last row
// (pad the allocation) or the final bytes of an unaligned tail may read as zero.
// Records no barrier: the caller orders this against producers of X and consumers of Y.
// Throws vk::Error for unsupported types, bad shapes or misaligned offsets.
void mul_mm(Kernels& k, vk::CommandBuffer& cb, GgmlType type, const vk::Buffer& w, uint64_t w_offset, uint32_t K,
            uint32_t N, const vk::Buffer& x, uint64_t x_offset, uint32_t M, const vk::Buffer& y, uint64_t y_offset,
            const MatmulOptions& options = {});

}  // namespace chorus::ops
