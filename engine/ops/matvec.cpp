#include "engine/ops/matvec.h"

#include <algorithm>
#include <cctype>

namespace chorus::ops {

namespace {

constexpr uint64_t kMaxBindAlignment = 256;     // Vulkan's upper bound on minStorageBufferOffsetAlignment
constexpr uint32_t kMaxGroupsX = 65535;         // the guaranteed maxComputeWorkGroupCount[0]
// Defaults, from `chorus bench kernels` (docs/performance.md): GPUs share a few rows per
// workgroup; CPU devices (lavapipe) give each invocation whole rows.
constexpr uint32_t kGpuWorkgroup = 32;
constexpr uint32_t kGpuRows = 4;
constexpr uint32_t kMaxSharedRows = 8;   // MV_RED_ROWS in shaders/matvec.glsl
constexpr uint32_t kMaxRows = 8;         // MV_MAX_ROWS (more rows: slow pipeline builds, no gain)
constexpr uint32_t kCpuRows = 8;         // rows per invocation on CPU devices

bool is_weight_type(GgmlType t) {
  for (GgmlType w : weight_types())
    if (w == t) return true;
  return false;
}

std::string shape_text(GgmlType type, uint32_t K, uint32_t N) {
  return std::string(type_traits(type).name) + " [" + std::to_string(N) + " x " + std::to_string(K) + "]";
}

uint64_t round_up4(uint64_t v) { return (v + 3) / 4 * 4; }

// "q4_k" for Q4_K: the format part of the kernels' op names.
std::string lower_name(GgmlType type) {
  std::string name = type_traits(type).name;
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

std::string texel_op(GgmlType type) { return "mul_mv_texel_" + lower_name(type); }

bool has_texel_kernel(GgmlType t) {
  return t == GgmlType::Q4_0 || t == GgmlType::Q8_0 || t == GgmlType::Q4_1 || t == GgmlType::Q4_K ||
         t == GgmlType::Q6_K;
}

// Whether mul_mv takes the texel-buffer kernel (mul_mv_texel.comp) for these arguments.
bool use_texel(const Kernels& k, GgmlType type, uint32_t K, const vk::Buffer& w, const vk::Buffer& x, uint64_t x_offset,
               const MatVecOptions& options) {
  const bool cpu = (k.caps() & shaders::kCpu) != 0;
  if (options.texel == 0 || (options.texel < 0 && !cpu)) return false;
  if (options.row_per_invocation == 0 || (options.row_per_invocation < 0 && !cpu)) return false;
  // K: whole superblocks, or for the formats of 32-element blocks whole blocks (the last
  // superblock of a row may be partial).
  if (!has_texel_kernel(type) || K % type_traits(type).block_elems != 0 || x_offset % 16 != 0) return false;
  if (w.max_texel_elements() == 0 || x.max_texel_elements() < K / 4) return false;
  return shaders::select(texel_op(type), k.caps()) != nullptr;  // registered for CPU devices only
}

// Whether the storage kernel's superblock path reads W as 16-byte words: every row of the
// window starts 16-aligned.
bool loads_w16(uint64_t window_skip, uint64_t row_bytes) { return window_skip % 16 == 0 && row_bytes % 16 == 0; }

}  // namespace

std::string mul_mv_kernel_name(const Kernels& k, GgmlType type, uint32_t K, const vk::Buffer& w, uint64_t /*w_offset*/,
                               const vk::Buffer& x, uint64_t x_offset, const MatVecOptions& options) {
  if (use_texel(k, type, K, w, x, x_offset, options)) return std::string(k.variant(texel_op(type)).name);
  return std::string(k.variant(mul_mv_op(type)).name);
}

bool mul_mv_loads_w16(const Kernels& k, GgmlType type, uint32_t K, const vk::Buffer& w, uint64_t w_offset,
                      const vk::Buffer& x, uint64_t x_offset, const MatVecOptions& options) {
  if (use_texel(k, type, K, w, x, x_offset, options)) return false;
  const bool per_inv = options.row_per_invocation < 0 ? (k.caps() & shaders::kCpu) != 0 : options.row_per_invocation > 0;
  const std::optional<uint64_t> rb = device_row_bytes(type, K);
  return per_inv && rb && w_offset < w.size() && loads_w16(w.window(w_offset, std::min(*rb, w.size() - w_offset)).skip, *rb);
}

std::string mul_mv_op(GgmlType type) { return "mul_mv_" + lower_name(type); }


namespace {

// mul_mv through mul_mv_texel.comp (use_texel() said yes; shapes and offsets are checked).
// W is bound as R32G32B32A32_UINT views when every row starts 16-aligned, else as R32_UINT
// views; x as one R32G32B32A32_SFLOAT view. Row chunks keep each W view within
// maxTexelBufferElements (or options.max_window bytes) and 65535 workgroups.
void mul_mv_texel(Kernels& k, vk::CommandBuffer& cb, GgmlType type, const vk::Buffer& w, uint64_t w_offset, uint32_t K,
                  uint32_t N, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer& y, uint64_t y_offset,
                  uint64_t rb, const MatVecOptions& options) {
  const std::string op = texel_op(type);
  const vk::DeviceInfo& info = k.device().info();
  const uint32_t wg = options.workgroup ? options.workgroup : std::max(info.subgroup_size, 1u);
  const uint32_t rows = options.rows ? options.rows : kCpuRows;
  if (wg < 1 || wg > 256 || rows < 1 || rows > kMaxRows)
    throw vk::Error(op + ": workgroup " + std::to_string(wg) + " x rows " + std::to_string(rows) + " outside 1..256 x 1.." +
                    std::to_string(kMaxRows));
  const uint32_t rows_per_group = wg * rows;
  // 16-byte texels: rows 16-aligned (no realignment), or any rows when the buffer holds the
  // last row's final texel whole (its end padded to 16 bytes); else 4-byte texels.
  const bool aligned16 = w_offset % 16 == 0 && rb % 16 == 0;
  const bool w16 = aligned16 || (w_offset + uint64_t(N) * rb + 15) / 16 * 16 <= (w.size() + 3) / 4 * 4 / 16 * 16;
  const uint32_t tb = w16 ? 16 : 4;  // bytes per W texel
  const VkFormat wfmt = w16 ? VK_FORMAT_R32G32B32A32_UINT : VK_FORMAT_R32_UINT;

  const vk::BufferWindow xw = x.texel_window(x_offset, uint64_t(K) * 4, VK_FORMAT_R32G32B32A32_SFLOAT, 16);
  const uint32_t x_base = skip_elems(xw, 4);

  const uint64_t texel_limit = w.max_texel_elements() * tb;
  const uint64_t limit = options.max_window ? std::min(options.max_window, texel_limit) : texel_limit;
  // Room for the view's aligned-down start (at most one alignment unit, or the offset's
  // rounding to a texel) and the word read past an odd superblock.
  const uint64_t slack = std::max<uint64_t>(info.min_texel_buffer_offset_alignment, kMaxBindAlignment) + 2 * tb;
  const uint64_t usable = limit > slack ? limit - slack : 0;
  uint64_t chunk = std::min<uint64_t>(usable / rb, uint64_t(kMaxGroupsX) * rows_per_group);
  if (chunk == 0)
    throw vk::Error(op + ": one row of " + shape_text(type, K, N) + " (" + std::to_string(rb) +
                    " bytes) does not fit a texel buffer view of " + std::to_string(limit) + " bytes");
  if (chunk > rows_per_group) chunk = chunk / rows_per_group * rows_per_group;

  for (uint64_t row0 = 0; row0 < N; row0 += chunk) {
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(chunk, N - row0));
    const uint64_t off = w_offset + row0 * rb;
    if (off + uint64_t(n) * rb > w.size())
      throw vk::Error(op + ": weights " + shape_text(type, K, N) + " at byte " + std::to_string(w_offset) +
                      " run past the end of buffer '" + w.tag() + "'");
    const uint64_t start = off / tb * tb;  // the view starts at a whole texel
    const uint64_t end = std::min(w16 ? (off + uint64_t(n) * rb + 15) / 16 * 16 : round_up4(off + uint64_t(n) * rb), w.size());
    const vk::BufferWindow ww = w.texel_window(start, end - start, wfmt, tb);
    const vk::BufferWindow yw = y.window(y_offset + row0 * 4, uint64_t(n) * 4);
    const MatVecPush push{K, n, static_cast<uint32_t>(rb), static_cast<uint32_t>(ww.skip + (off - start)), x_base,
                          skip_elems(yw, 4)};
    k.dispatch(cb, op, {ww, xw, yw}, push, {wg, rows, w16 ? 1u : 0u, w16 && aligned16 ? 1u : 0u},
               groups(n, rows_per_group));
  }
}

}  // namespace

void mul_mv(Kernels& k, vk::CommandBuffer& cb, GgmlType type, const vk::Buffer& w, uint64_t w_offset, uint32_t K,
            uint32_t N, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer& y, uint64_t y_offset,
            const MatVecOptions& options) {
  const std::string op = mul_mv_op(type);
  if (!is_weight_type(type)) throw vk::Error(op + ": " + type_traits(type).name + " is not a weight format");
  if (K == 0 || N == 0) throw vk::Error(op + ": empty shape " + shape_text(type, K, N));
  const std::optional<uint64_t> rb = device_row_bytes(type, K);
  if (!rb) throw vk::Error(op + ": K of " + shape_text(type, K, N) + " is not a multiple of the block size");
  const bool word_aligned = type == GgmlType::F32 || type == GgmlType::Q4_K || type == GgmlType::Q5_K;
  if (w_offset % (word_aligned ? 4 : 2) != 0)
    throw vk::Error(op + ": weights " + shape_text(type, K, N) + " start at byte " + std::to_string(w_offset) +
                    ", which is not a multiple of " + (word_aligned ? "4" : "2"));
  if (x_offset % 4 != 0 || y_offset % 4 != 0) throw vk::Error(op + ": x and y offsets must be multiples of 4");

  if (use_texel(k, type, K, w, x, x_offset, options)) {
    mul_mv_texel(k, cb, type, w, w_offset, K, N, x, x_offset, y, y_offset, *rb, options);
    return;
  }

  const vk::DeviceInfo& info = k.device().info();
  const bool per_inv = options.row_per_invocation < 0 ? (k.caps() & shaders::kCpu) != 0 : options.row_per_invocation > 0;
  const uint32_t wg = options.workgroup ? options.workgroup : (per_inv ? std::max(info.subgroup_size, 1u) : kGpuWorkgroup);
  // Row-per-invocation mode: several rows per invocation, so that x (which every lane loads
  // itself on a CPU device) is loaded and prepared once for all of them.
  const uint32_t rows = options.rows ? options.rows : (per_inv ? kCpuRows : kGpuRows);
  const uint32_t max_rows = per_inv ? kMaxRows : kMaxSharedRows;
  if (wg < 1 || wg > 256 || rows < 1 || rows > max_rows)
    throw vk::Error(op + ": workgroup " + std::to_string(wg) + " x rows " + std::to_string(rows) +
                    " outside 1..256 x 1.." + std::to_string(max_rows));
  const uint32_t rows_per_group = per_inv ? wg * rows : rows;

  const vk::BufferWindow xw = x.window(x_offset, uint64_t(K) * 4);
  const uint32_t x_base = skip_elems(xw, 4);

  // Row chunks: each W window (rows * row_bytes, plus the aligned-down skip, plus rounding to
  // whole words) fits the binding limit, and each dispatch stays within 65535 workgroups.
  const uint64_t limit = options.max_window ? std::min(options.max_window, w.max_range()) : w.max_range();
  const uint64_t usable = limit > kMaxBindAlignment + 4 ? limit - kMaxBindAlignment - 4 : 0;
  uint64_t chunk = std::min<uint64_t>(usable / *rb, uint64_t(kMaxGroupsX) * rows_per_group);
  if (chunk == 0)
    throw vk::Error(op + ": one row of " + shape_text(type, K, N) + " (" + std::to_string(*rb) +
                    " bytes) does not fit a binding of " + std::to_string(limit) + " bytes");
  if (chunk > rows_per_group) chunk = chunk / rows_per_group * rows_per_group;

  for (uint64_t row0 = 0; row0 < N; row0 += chunk) {
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(chunk, N - row0));
    const uint64_t off = w_offset + row0 * *rb;
    if (off + uint64_t(n) * *rb > w.size())
      throw vk::Error(op + ": weights " + shape_text(type, K, N) + " at byte " + std::to_string(w_offset) +
                      " run past the end of buffer '" + w.tag() + "'");
    const uint64_t size = std::min(round_up4(uint64_t(n) * *rb), w.size() - off);
    const vk::BufferWindow ww = w.window(off, size);
    const vk::BufferWindow yw = y.window(y_offset + row0 * 4, uint64_t(n) * 4);
    const MatVecPush push{K, n, static_cast<uint32_t>(*rb), static_cast<uint32_t>(ww.skip), x_base, skip_elems(yw, 4)};
    // The superblock path reads W as uvec4 when every row starts 16-aligned (Q6_K too: its
    // device blocks are padded to 224 bytes), x as vec4 when it starts 16-aligned.
    const bool w16 = loads_w16(ww.skip, *rb);
    const bool x16 = x_base % 4 == 0;
    const std::vector<uint32_t> spec{wg, rows, per_inv ? 1u : 0u, per_inv && w16 ? 1u : 0u, per_inv && x16 ? 1u : 0u};
    k.dispatch(cb, op, {ww, xw, yw}, push, spec, groups(n, rows_per_group));
  }
}

}  // namespace chorus::ops
