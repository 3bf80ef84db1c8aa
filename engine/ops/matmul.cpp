#include "engine/ops/matmul.h"

#include <algorithm>
#include <cctype>
#include <optional>
#include <vector>

namespace chorus::ops {
namespace {

constexpr uint32_t kLds = 9;      // vec4 slots per shared tile row (MM_LDS in matmul.glsl)
constexpr uint64_t kSlack = 20;   // a window may grow by up to 15 bytes of alignment skip + 3 of rounding
constexpr uint32_t kCpuBatch = 8; // mul_mm_cpu's workgroup: one SIMD batch of llvmpipe's 8 lanes

// One tile configuration: a workgroup covers BM rows of X by BN rows of W; Grid workgroups are
// (BM / TM) * (BN / TN) invocations, Registers workgroups `wg` invocations of TM x TN each
// (BM = TM, BN = wg * TN).
struct Tile {
  uint32_t bm, bn, tm, tn;
  uint32_t wg_size = 0;  // Registers only
  uint32_t wg() const { return wg_size != 0 ? wg_size : (bm / tm) * (bn / tn); }
  uint32_t shared_bytes(bool fp16) const { return wg_size != 0 ? 0 : (bm + bn) * kLds * (fp16 ? 8u : 16u); }
};

// Grid: a 2-D grid of invocations, TM x TN outputs each; small M (a short prompt, a batch of a
// few tokens) gets a shorter tile so fewer rows are zeros.
Tile pick_grid_tile(uint32_t M, uint32_t max_shared, bool fp16) {
  const Tile grid = M <= 16 ? Tile{16, 64, 2, 4} : M <= 32 ? Tile{32, 64, 2, 4} : Tile{64, 64, 4, 4};
  const Tile candidates[] = {grid, Tile{16, 32, 2, 2}};
  for (const Tile& t : candidates)
    if (t.shared_bytes(fp16) <= max_shared) return t;
  throw vk::Error("mul_mm needs " + std::to_string(Tile{16, 32, 2, 2}.shared_bytes(fp16)) +
                  " bytes of shared memory; the device offers " + std::to_string(max_shared));
}

// Registers: TM rows of X by TN rows of W per invocation (X is loaded once per TN rows, W once per
// TM rows). Measured on lavapipe (2 cores, K = N = 4096, M = 128): TN = 8, TM = 4 suits the
// 32-element and plain formats; TN = 4, TM = 8 the K-quants. TM shrinks for short M so few
// clamped rows are computed. A workgroup is one SIMD batch of 8 invocations (kCpuBatch), so a
// tile holds 8 * TN rows of W: the rows past N in the last tile are computed and dropped, and
// with 64 invocations (512 rows) SmolLM2's N = 576 products computed 1024 rows. Measured
// (`chorus bench kernels --formats q4_1 --m 512`, K x N): 1536 x 576 84.8 -> 49.1 ms, 576 x 576
// 34.0 -> 18.3 ms, 576 x 960 35.4 -> 29.9 ms; where 512 divides N (576 x 1536, 576 x 3072, 4096 x
// 4096) 8, 16, 32 and 64 invocations measured level.
Tile pick_cpu_tile(uint32_t M, GgmlType type) {
  const bool k_quant = type_traits(type).block_elems == 256;
  const uint32_t tm_max = k_quant ? 8 : 4, tn = k_quant ? 4 : 8, wg = kCpuBatch;
  uint32_t tm = 1;
  while (tm < tm_max && tm * 2 <= M) tm *= 2;
  return Tile{tm, wg * tn, tm, tn, wg};
}

// Usable bytes of one binding of b: the limit minus what alignment and rounding may add.
uint64_t window_bytes(const vk::Buffer& b, uint64_t max_window) {
  uint64_t limit = std::min<uint64_t>(b.max_range(), 0xFFFFFF00ull);  // offsets in the kernel are 32-bit
  if (max_window != 0) limit = std::min(limit, max_window);
  return limit > kSlack ? limit - kSlack : 0;
}

std::string shape_text(GgmlType type, uint32_t K, uint32_t N, uint32_t M) {
  return std::string("mul_mm(") + type_traits(type).name + ", K=" + std::to_string(K) + ", N=" + std::to_string(N) +
         ", M=" + std::to_string(M) + ")";
}

}  // namespace

std::string mul_mm_op(GgmlType type) {
  std::string name = type_traits(type).name;
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return "mul_mm_" + name;
}

std::string mul_mm_cpu_op(GgmlType type) { return "mul_mm_cpu_" + mul_mm_op(type).substr(7); }

namespace {

// The op mul_mm records for `type` on k's device: mul_mm_cpu_<fmt> (Registers) where the
// registry offers it (CPU devices), else mul_mm_<fmt>.
std::string pick_op(const Kernels& k, GgmlType type, const MatmulOptions& options) {
  const shaders::Variant* cpu = shaders::select(mul_mm_cpu_op(type), k.caps());
  const bool registers = options.tiling == MatmulTiling::Auto ? cpu != nullptr : options.tiling == MatmulTiling::Registers;
  return registers ? mul_mm_cpu_op(type) : mul_mm_op(type);
}

}  // namespace

namespace {

// Usable bytes of one binding of W for the kernel: with `texel` (mul_mm_cpu reading W's words
// through a texel view), at most maxTexelBufferElements words, less the view's alignment.
uint64_t w_window_bytes(const vk::Buffer& w, uint64_t max_window, bool texel) {
  const uint64_t limit = window_bytes(w, max_window);
  if (!texel) return limit;
  return std::min<uint64_t>(limit, w.max_texel_elements() > 8 ? 4 * (w.max_texel_elements() - 8) : 0);
}

// Bytes of W a GLU product binds: its gate rows through the last up row.
std::optional<uint64_t> glu_span(GgmlType type, uint32_t K, uint32_t N, const MatmulOptions& options) {
  const std::optional<uint64_t> rb = device_row_bytes(type, K);
  if (!rb) return std::nullopt;
  return options.glu_up_offset + *rb * N;
}

}  // namespace

bool mul_mm_glu_fuses(const Kernels& k, GgmlType type, uint32_t K, uint32_t N, const vk::Buffer& w, uint64_t w_offset,
                      const vk::Buffer& x, const MatmulOptions& options) {
  if (options.glu == MatmulOptions::Glu::none || pick_op(k, type, options) != mul_mm_cpu_op(type)) return false;
  if (x.max_texel_elements() == 0 || w.max_texel_elements() == 0) return false;
  const std::optional<uint64_t> span = glu_span(type, K, N, options);
  const std::optional<uint64_t> rb = device_row_bytes(type, K);
  if (!span || !rb || options.glu_up_offset < *rb * N || options.glu_up_offset % 2 != 0)
    return false;
  return *span + 4 <= w_window_bytes(w, options.max_window, true) && w_offset + *span <= w.size();
}

std::string mul_mm_kernel_name(const Kernels& k, GgmlType type, const MatmulOptions& options) {
  return std::string(k.variant(pick_op(k, type, options)).name);
}

void mul_mm(Kernels& k, vk::CommandBuffer& cb, GgmlType type, const vk::Buffer& w, uint64_t w_offset, uint32_t K,
            uint32_t N, const vk::Buffer& x, uint64_t x_offset, uint32_t M, const vk::Buffer& y, uint64_t y_offset,
            const MatmulOptions& options) {
  const std::string what = shape_text(type, K, N, M);
  const std::optional<uint64_t> rb = device_row_bytes(type, K);
  const bool plain = type == GgmlType::F32 || type == GgmlType::F16 || type == GgmlType::BF16;
  if (K == 0 || (!plain && K % 32 != 0) || !rb)
    throw vk::Error(what + ": K must be positive, and a multiple of 32 and of the block size for quantised formats");
  const uint32_t x_stride = options.x_stride != 0 ? options.x_stride : K;
  const uint32_t y_stride = options.y_stride != 0 ? options.y_stride : N;
  if (x_stride < K || y_stride < N) throw vk::Error(what + ": row strides must be at least K (X) and N (Y)");
  // quant.glsl reads F32 elements and the Q4_K / Q5_K headers as aligned words.
  const bool w_word_aligned = type == GgmlType::F32 || type == GgmlType::Q4_K || type == GgmlType::Q5_K;
  if (w_offset % (w_word_aligned ? 4 : 2) != 0 || x_offset % 4 != 0 || y_offset % 4 != 0)
    throw vk::Error(what + ": W must start at an even byte (a multiple of 4 for F32, Q4_K, Q5_K), X and Y at a "
                    "multiple of 4 bytes");
  if (M == 0 || N == 0) return;
  const uint64_t w_row = *rb;
  if (w_offset + w_row * N > w.size() || x_offset + 4 * ((uint64_t(M) - 1) * x_stride + K) > x.size() ||
      y_offset + 4 * ((uint64_t(M) - 1) * y_stride + N) > y.size())
    throw vk::Error(what + ": a tensor overruns its buffer ('" + w.tag() + "', '" + x.tag() + "', '" + y.tag() + "')");

  const vk::DeviceInfo& info = k.device().info();
  std::string op = pick_op(k, type, options);
  // mul_mm_cpu reads X through a texel view (buffers made by Device::create_buffer allow them):
  // of vec4s when X starts at a multiple of 16 bytes in rows of whole vec4s, else of floats.
  if (op == mul_mm_cpu_op(type) && (x.max_texel_elements() == 0 || w.max_texel_elements() == 0)) {
    if (options.tiling == MatmulTiling::Registers)
      throw vk::Error(what + ": the register-tiled kernel reads X (and " + type_traits(type).name +
                      " W) through texel buffer views, which buffer '" + x.tag() + "' or '" + w.tag() + "' does not allow");
    op = mul_mm_op(type);
  }
  const bool x_vec4 = x_offset % 16 == 0 && x_stride % 4 == 0;
  const MatmulTiling tiling = op == mul_mm_cpu_op(type) ? MatmulTiling::Registers : MatmulTiling::Grid;
  const bool fp16 = (k.variant(op).requires_caps & shaders::kFp16) != 0;
  const Tile tile =
      tiling == MatmulTiling::Registers ? pick_cpu_tile(M, type) : pick_grid_tile(M, info.max_shared_memory, fp16);
  std::vector<uint32_t> spec = {tile.wg(), tile.bm, tile.bn, tile.tm, tile.tn};
  spec.push_back(tiling == MatmulTiling::Registers && x_vec4 ? 1u : 0u);  // mul_mm_cpu's X_VEC4 (unused by mul_mm)
  spec.push_back(options.accumulate ? 1u : 0u);                             // Y_ADD
  const bool glu = options.glu != MatmulOptions::Glu::none;
  if (glu) {
    if (!mul_mm_glu_fuses(k, type, K, N, w, w_offset, x, options))
      throw vk::Error(what + ": the gated-unit epilogue needs the register-tiled kernel, an up row at least N rows "
                      "after its gate row, and W's gate and up rows in one binding (see mul_mm_glu_fuses)");
    spec.push_back(static_cast<uint32_t>(options.glu));  // GLU
  }
  const uint32_t cols_per_group = glu ? tile.bn / 2 : tile.bn;  // columns of Y per workgroup

  // Rows of W per dispatch: as many as fit one binding, in whole tiles when chunked.
  const uint64_t w_limit = w_window_bytes(w, options.max_window, tiling == MatmulTiling::Registers);
  uint64_t n_chunk = glu ? N : w_limit / w_row;  // (a GLU product binds its W whole: checked above)
  if (n_chunk == 0)
    throw vk::Error(what + ": one row of W (" + std::to_string(w_row) + " bytes) does not fit a binding of " +
                    std::to_string(w_limit) + " bytes");
  if (n_chunk < N && n_chunk >= tile.bn) n_chunk -= n_chunk % tile.bn;
  n_chunk = std::min<uint64_t>(n_chunk, N);

  // Rows of X and Y per dispatch: both windows must fit.
  uint64_t x_elems = window_bytes(x, options.max_window) / 4;
  if (tiling == MatmulTiling::Registers)  // a texel view: at most maxTexelBufferElements vec4s, less the alignment
    x_elems = std::min<uint64_t>(x_elems, x.max_texel_elements() > 4 ? (x_vec4 ? 4 : 1) * (x.max_texel_elements() - 4) : 0);
  const uint64_t y_elems = window_bytes(y, options.max_window) / 4;
  const uint64_t x_fit = x_elems >= K ? (x_elems - K) / x_stride + 1 : 0;
  const uint64_t y_fit = y_elems >= n_chunk ? (y_elems - n_chunk) / y_stride + 1 : 0;
  uint64_t m_chunk = std::min(x_fit, y_fit);
  if (m_chunk == 0)
    throw vk::Error(what + ": one row of X or Y does not fit a binding of " +
                    std::to_string(std::min(x_elems, y_elems) * 4) + " bytes");
  if (m_chunk < M && m_chunk >= tile.bm) m_chunk -= m_chunk % tile.bm;
  m_chunk = std::min<uint64_t>(m_chunk, M);

  for (uint64_t n0 = 0; n0 < N; n0 += n_chunk) {
    const uint64_t nc = std::min<uint64_t>(n_chunk, N - n0);
    const uint64_t w_start = w_offset + n0 * w_row;
    // Round the end up to a whole word (reads are 32-bit) when the buffer has the bytes.
    const uint64_t w_bytes = glu ? *glu_span(type, K, N, options) : nc * w_row;
    const uint64_t w_end = std::min<uint64_t>((w_start + w_bytes + 3) / 4 * 4, w.size());
    const bool wt = tiling == MatmulTiling::Registers;  // mul_mm_cpu reads every format's W as R32_UINT texels
    const uint64_t w_view = wt ? w_start / 4 * 4 : w_start;  // a view starts at a whole word
    const vk::BufferWindow ww = wt ? w.texel_window(w_view, w_end - w_view, VK_FORMAT_R32_UINT, 4)
                                   : w.window(w_start, w_end - w_start);
    for (uint64_t m0 = 0; m0 < M; m0 += m_chunk) {
      const uint64_t mc = std::min<uint64_t>(m_chunk, M - m0);
      const uint64_t x_start = x_offset + 4 * m0 * x_stride, x_bytes = 4 * ((mc - 1) * x_stride + K);
      const vk::BufferWindow xw = tiling == MatmulTiling::Registers
                                      ? x.texel_window(x_start, x_bytes,
                                                       x_vec4 ? VK_FORMAT_R32G32B32A32_SFLOAT : VK_FORMAT_R32_SFLOAT,
                                                       x_vec4 ? 16 : 4)
                                      : x.window(x_start, x_bytes);
      const vk::BufferWindow yw = y.window(y_offset + 4 * (m0 * y_stride + n0), 4 * ((mc - 1) * y_stride + nc));
      MatmulPush push{};
      push.K = K;
      push.N = static_cast<uint32_t>(nc);
      push.M = static_cast<uint32_t>(mc);
      push.w_base = static_cast<uint32_t>(ww.skip + (w_start - w_view));
      push.w_row_bytes = static_cast<uint32_t>(w_row);
      push.x_base = skip_elems(xw, 4);
      push.x_stride = x_stride;
      push.y_base = skip_elems(yw, 4);
      push.y_stride = y_stride;
      push.w_up = static_cast<uint32_t>(options.glu_up_offset);
      if (tiling == MatmulTiling::Registers)  // M-tiles first: see shaders/mul_mm_cpu.comp
        k.dispatch(cb, op, {ww, xw, yw}, push, spec, groups(mc, tile.bm), groups(nc, cols_per_group));
      else
        k.dispatch(cb, op, {ww, xw, yw}, push, spec, groups(nc, tile.bn), groups(mc, tile.bm));
    }
  }
}

}  // namespace chorus::ops
