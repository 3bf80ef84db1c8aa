#include "engine/ops/matvec.h"

#include <algorithm>
#include <cctype>
#include <vector>

namespace chorus::ops {

namespace {

constexpr uint64_t kMaxBindAlignment = 256;     // Vulkan's upper bound on minStorageBufferOffsetAlignment
constexpr uint32_t kMaxGroupsX = 65535;         // the guaranteed maxComputeWorkGroupCount[0]
// Defaults, from `chorus bench kernels` (docs/performance.md): GPUs share a few rows per
// workgroup; CPU devices (lavapipe) give each invocation whole rows.
constexpr uint32_t kGpuWorkgroup = 32;  // at least (and at most twice) this many invocations on GPUs
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
std::string texel_rope_op(GgmlType type) { return "mul_mv_texel_rope_" + lower_name(type); }

// The push constants of mul_mv_texel_rope_<fmt>: MatVecPush, then MatVecRopePush.
struct MatVecRopeBlock {
  MatVecPush mv;
  MatVecRopePush rope;
};
static_assert(sizeof(MatVecRopeBlock) == 72, "the rope kernels' push block must match shaders/matvec.glsl");

// Whether the texel kernel can take fusion.raw_x and fusion.next_norm (mul_mv_fuses' rules).
bool prescaled_fits(uint32_t K, uint32_t N, const MatVecFusion& f) {
  if (f.raw_x) {
    if (!f.norm || f.raw_x_offset % 16 != 0 || f.raw_x_offset + uint64_t(K) * 4 > f.raw_x->size() ||
        f.raw_x->max_texel_elements() < K / 4)
      return false;
  }
  if (f.next_norm) {
    if (f.out != MatVecFusion::Out::add || f.rope || !f.next_out || f.next_norm_offset % 16 != 0 ||
        f.next_norm_offset + (uint64_t(N) + 3) / 4 * 16 > f.next_norm->size() ||
        f.next_norm->max_texel_elements() < (N + 3) / 4 ||
        f.next_out_offset % 4 != 0 || f.next_out_offset + uint64_t(N) * 4 > f.next_out->size())
      return false;
  }
  return true;
}

// Whether a RoPE epilogue applies to these texel-kernel arguments (mul_mv_fuses' RoPE rules).
bool rope_fits(const Kernels& k, GgmlType type, uint32_t N, uint32_t rows, const MatVecFusion& f) {
  const MatVecRope& r = *f.rope;
  if (r.cache == nullptr || r.positions == nullptr || f.out != MatVecFusion::Out::store || rows % 2 != 0) return false;
  if (shaders::select(texel_rope_op(type), k.caps()) == nullptr) return false;
  const KvCache& c = *r.cache;
  const uint32_t n_dims = r.n_dims ? r.n_dims : c.head_dim;
  if (!kv_cache_fits_one_binding(c) || n_dims % 2 != 0 || n_dims > c.head_dim) return false;
  const uint64_t kv_rows = uint64_t(c.n_kv_heads) * c.head_dim;
  if (r.n_q % c.head_dim != 0 || uint64_t(N) != r.n_q + 2 * kv_rows) return false;
  return r.positions_offset % 4 == 0 && r.positions_offset + 4 <= r.positions->size();
}

bool has_texel_kernel(GgmlType t) { return t != GgmlType::F32 && is_weight_type(t); }

// The multiple of K the texel kernels take: whole superblocks of the K-quants, whole 32-element
// blocks of the others (F16 and BF16 taken as such: a row ending in a partial 32 elements goes
// to the storage kernel).
uint32_t texel_k_multiple(GgmlType t) { return type_traits(t).block_elems == 256 ? 256 : 32; }

// Whether mul_mv takes the texel-buffer kernel (mul_mv_texel.comp) for these arguments.
bool use_texel(const Kernels& k, GgmlType type, uint32_t K, const vk::Buffer& w, const vk::Buffer& x, uint64_t x_offset,
               const MatVecOptions& options) {
  const bool cpu = (k.caps() & shaders::kCpu) != 0;
  if (options.texel == 0 || (options.texel < 0 && !cpu)) return false;
  if (options.row_per_invocation == 0 || (options.row_per_invocation < 0 && !cpu)) return false;
  // K: whole superblocks, or for the formats of 32-element blocks whole blocks (the last
  // superblock of a row may be partial).
  if (!has_texel_kernel(type) || K % texel_k_multiple(type) != 0 || x_offset % 16 != 0) return false;
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

// The texel kernel's workgroup shape: invocations and rows per invocation.
std::pair<uint32_t, uint32_t> texel_shape(const Kernels& k, const MatVecOptions& options) {
  const uint32_t wg = options.workgroup ? options.workgroup : std::max(k.device().info().subgroup_size, 1u);
  return {wg, options.rows ? options.rows : kCpuRows};
}

// Rows of W per texel dispatch: each W view within maxTexelBufferElements (or
// options.max_window bytes) and 65535 workgroups of rows_per_group rows. 0 if one row does not fit.
uint64_t texel_chunk(const Kernels& k, const vk::Buffer& w, uint64_t rb, bool w16, uint32_t rows_per_group,
                     const MatVecOptions& options) {
  const uint32_t tb = w16 ? 16 : 4;  // bytes per W texel
  const uint64_t texel_limit = w.max_texel_elements() * tb;
  const uint64_t limit = options.max_window ? std::min(options.max_window, texel_limit) : texel_limit;
  // Room for the view's aligned-down start (at most one alignment unit, or the offset's
  // rounding to a texel) and the word read past an odd superblock.
  const uint64_t slack =
      std::max<uint64_t>(k.device().info().min_texel_buffer_offset_alignment, kMaxBindAlignment) + 2 * tb;
  const uint64_t usable = limit > slack ? limit - slack : 0;
  uint64_t chunk = std::min<uint64_t>(usable / rb, uint64_t(kMaxGroupsX) * rows_per_group);
  if (chunk > rows_per_group) chunk = chunk / rows_per_group * rows_per_group;
  return chunk;
}

// Whether the W view may be of 16-byte texels: rows 16-aligned (no realignment), or any rows
// when the buffer holds the last row's final texel whole (its end padded to 16 bytes).
bool texel_w16(const vk::Buffer& w, uint64_t w_offset, uint64_t rows, uint64_t rb) {
  const bool aligned16 = w_offset % 16 == 0 && rb % 16 == 0;
  return aligned16 || (w_offset + rows * rb + 15) / 16 * 16 <= (w.size() + 3) / 4 * 4 / 16 * 16;
}

// mul_mv through mul_mv_texel.comp (use_texel() said yes; shapes and offsets are checked).
// W is bound as R32G32B32A32_UINT views when every row starts 16-aligned, else as R32_UINT
// views; x (and a fused norm weight) as one R32G32B32A32_SFLOAT view. Row chunks keep each W
// view within maxTexelBufferElements (or options.max_window bytes) and 65535 workgroups; with
// fusion work the caller checked that one chunk holds all of W.
void mul_mv_texel(Kernels& k, vk::CommandBuffer& cb, GgmlType type, const vk::Buffer& w, uint64_t w_offset, uint32_t K,
                  uint32_t N, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer& y, uint64_t y_offset,
                  uint64_t rb, const MatVecFusion& fusion, const MatVecOptions& options) {
  const std::string op = fusion.rope ? texel_rope_op(type) : texel_op(type);
  const auto [wg, rows] = texel_shape(k, options);
  const bool glu = fusion.gated();
  if (wg < 1 || wg > 256 || rows < 1 || rows > kMaxRows || (glu && rows % 2 != 0))
    throw vk::Error(op + ": workgroup " + std::to_string(wg) + " x rows " + std::to_string(rows) + " outside 1..256 x 1.." +
                    std::to_string(kMaxRows) + (glu ? " (an even number of rows for a gated epilogue)" : ""));
  const uint32_t rows_per_group = wg * (glu ? rows / 2 : rows);
  const uint64_t w_rows = glu ? 2 * uint64_t(N) : N;  // rows of W the dispatch reads
  // Specialisation constant 9 (K_FIXED): K itself, or 0 for K from the push constants.
  const uint32_t fixed_k = options.fixed_k == 1 || (options.fixed_k < 0 && K <= kMaxFixedK) ? K : 0;
  // W_ALIGNED16: every superblock 16-aligned (not Q2_K's 84 bytes or Q3_K's 110).
  const uint64_t sb_bytes = uint64_t(device_block_bytes(type)) * (256 / type_traits(type).block_elems);
  const bool aligned16 = w_offset % 16 == 0 && rb % 16 == 0 && sb_bytes % 16 == 0;
  const bool w16 = texel_w16(w, w_offset, w_rows, rb);
  const uint32_t tb = w16 ? 16 : 4;  // bytes per W texel
  const VkFormat wfmt = w16 ? VK_FORMAT_R32G32B32A32_UINT : VK_FORMAT_R32_UINT;

  const vk::BufferWindow xw = x.texel_window(x_offset, uint64_t(K) * 4, VK_FORMAT_R32G32B32A32_SFLOAT, 16);
  const uint32_t x_base = skip_elems(xw, 4);
  // Binding 3: the norm weight; x itself (raw_x); the next norm's weight (next_norm); else x again.
  const auto floats_view = [](const vk::Buffer& b, uint64_t offset, uint64_t n) {
    return b.texel_window(offset, (n + 3) / 4 * 16, VK_FORMAT_R32G32B32A32_SFLOAT, 16);
  };
  const vk::BufferWindow gw = fusion.raw_x       ? floats_view(*fusion.raw_x, fusion.raw_x_offset, K)
                              : fusion.norm      ? floats_view(*fusion.norm, fusion.norm_offset, K)
                              : fusion.next_norm ? floats_view(*fusion.next_norm, fusion.next_norm_offset, N)
                                                 : xw;

  const uint64_t chunk = texel_chunk(k, w, rb, w16, rows_per_group, options);
  if (chunk == 0)
    throw vk::Error(op + ": one row of " + shape_text(type, K, N) + " (" + std::to_string(rb) +
                    " bytes) does not fit a texel buffer view");
  if (fusion.any() && chunk < w_rows)
    throw vk::Error(op + ": " + shape_text(type, K, N) + " does not fit one texel buffer view, so it cannot be fused");

  for (uint64_t row0 = 0; row0 < N; row0 += chunk) {
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(chunk, N - row0));
    const uint64_t off = w_offset + row0 * rb;
    const uint64_t view_rows = glu ? w_rows : n;
    if (off + view_rows * rb > w.size())
      throw vk::Error(op + ": weights " + shape_text(type, K, N) + " at byte " + std::to_string(w_offset) +
                      " run past the end of buffer '" + w.tag() + "'");
    const uint64_t start = off / tb * tb;  // the view starts at a whole texel
    const uint64_t end = std::min(w16 ? (off + view_rows * rb + 15) / 16 * 16 : round_up4(off + view_rows * rb), w.size());
    const vk::BufferWindow ww = w.texel_window(start, end - start, wfmt, tb);
    const vk::BufferWindow yw = y.window(y_offset + row0 * 4, uint64_t(n) * 4);
    const vk::BufferWindow xgw = fusion.next_norm ? fusion.next_out->window(fusion.next_out_offset, uint64_t(n) * 4) : yw;
    const MatVecPush push{K,          n, static_cast<uint32_t>(rb), static_cast<uint32_t>(ww.skip + (off - start)),
                          x_base,     skip_elems(yw, 4), skip_elems(gw, 4), fusion.eps, skip_elems(xgw, 4)};
    // Specialisation constant 4 is the storage kernel's (X_ALIGNED16); 5 to 8 the fusion's.
    const std::vector<uint32_t> spec{wg,   rows, w16 ? 1u : 0u, w16 && aligned16 ? 1u : 0u, 0u, fusion.norm ? 1u : 0u,
                                     static_cast<uint32_t>(fusion.out), fusion.raw_x ? 1u : 0u,
                                     fusion.next_norm ? 1u : 0u, fixed_k};
    if (fusion.rope) {  // one dispatch (mul_mv_fuses): the caches and the position bound whole
      const MatVecRope& r = *fusion.rope;
      const KvCache& c = *r.cache;
      const vk::BufferWindow pw = r.positions->window(r.positions_offset, 4);
      const vk::BufferWindow kc = c.k->window(c.k_offset, c.bytes()), vc = c.v->window(c.v_offset, c.bytes());
      const MatVecRopeBlock block{push, MatVecRopePush{r.n_q, c.head_dim, r.n_dims ? r.n_dims : c.head_dim, c.n_ctx,
                                                       skip_elems(pw, 4), skip_elems(kc, 4), skip_elems(vc, 4),
                                                       r.freq_base, r.freq_scale}};
      k.dispatch(cb, op, {ww, xw, yw, gw, pw, kc, vc}, block, spec, groups(n, rows_per_group));
      continue;
    }
    k.dispatch(cb, op, {ww, xw, yw, gw, xgw}, push, spec, groups(n, rows_per_group));
  }
}

// Shape and offset checks common to every mul_mv; returns W's device row bytes.
uint64_t check_mul_mv(GgmlType type, uint64_t w_offset, uint32_t K, uint32_t N, uint64_t x_offset, uint64_t y_offset) {
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
  return *rb;
}

// The storage kernel's shape: invocations, rows (per invocation or per workgroup), whether each
// invocation computes whole rows, and the rows a workgroup covers (output rows for a gated
// epilogue).
struct StorageShape {
  uint32_t wg, rows;
  bool per_inv;
  uint32_t rows_per_group;
};
StorageShape storage_shape(const Kernels& k, const MatVecOptions& options, bool glu) {
  const vk::DeviceInfo& info = k.device().info();
  const bool per_inv = options.row_per_invocation < 0 ? (k.caps() & shaders::kCpu) != 0 : options.row_per_invocation > 0;
  // GPUs: one subgroup per workgroup where it is 32 to 64 wide (a warp on NVIDIA, a wavefront on
  // AMD), so each row's reduction is one subgroupAdd; narrower or unknown subgroups get 32
  // (docs/performance.md, "Choices per device").
  const uint32_t gpu_wg = std::clamp(info.subgroup_size, kGpuWorkgroup, 2 * kGpuWorkgroup);
  const uint32_t wg = options.workgroup ? options.workgroup : (per_inv ? std::max(info.subgroup_size, 1u) : gpu_wg);
  // Row-per-invocation mode: several rows per invocation, so that x (which every lane loads
  // itself on a CPU device) is loaded and prepared once for all of them.
  const uint32_t rows = options.rows ? options.rows : (per_inv ? kCpuRows : kGpuRows);
  const uint32_t out_rows = glu ? rows / 2 : rows;
  return StorageShape{wg, rows, per_inv, per_inv ? wg * out_rows : out_rows};
}

// Rows of W per storage dispatch: each W window (rows * row_bytes, plus the aligned-down skip,
// plus rounding to whole words) fits the binding limit, and each dispatch stays within 65535
// workgroups. 0 if one row does not fit.
uint64_t storage_chunk(const vk::Buffer& w, uint64_t rb, uint32_t rows_per_group, const MatVecOptions& options) {
  const uint64_t limit = options.max_window ? std::min(options.max_window, w.max_range()) : w.max_range();
  const uint64_t usable = limit > kMaxBindAlignment + 4 ? limit - kMaxBindAlignment - 4 : 0;
  uint64_t chunk = std::min<uint64_t>(usable / rb, uint64_t(kMaxGroupsX) * rows_per_group);
  if (chunk > rows_per_group) chunk = chunk / rows_per_group * rows_per_group;
  return chunk;
}

// mul_mv through mul_mv.comp (storage buffers): every format, GPUs and CPU devices alike.
void mul_mv_storage(Kernels& k, vk::CommandBuffer& cb, GgmlType type, const vk::Buffer& w, uint64_t w_offset,
                    uint32_t K, uint32_t N, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer& y,
                    uint64_t y_offset, uint64_t rb, const MatVecFusion& fusion, const MatVecOptions& options) {
  const std::string op = mul_mv_op(type);
  const bool glu = fusion.gated();
  const StorageShape sh = storage_shape(k, options, glu);
  const uint32_t max_rows = sh.per_inv ? kMaxRows : kMaxSharedRows;
  if (sh.wg < 1 || sh.wg > 256 || sh.rows < 1 || sh.rows > max_rows || (glu && sh.rows % 2 != 0))
    throw vk::Error(op + ": workgroup " + std::to_string(sh.wg) + " x rows " + std::to_string(sh.rows) +
                    " outside 1..256 x 1.." + std::to_string(max_rows) +
                    (glu ? " (an even number of rows for a gated epilogue)" : ""));
  const uint64_t w_rows = glu ? 2 * uint64_t(N) : N;  // rows of W the dispatch reads

  const vk::BufferWindow xw = x.window(x_offset, uint64_t(K) * 4);
  const uint32_t x_base = skip_elems(xw, 4);
  const vk::BufferWindow gw = fusion.norm ? fusion.norm->window(fusion.norm_offset, uint64_t(K) * 4) : xw;

  const uint64_t chunk = storage_chunk(w, rb, sh.rows_per_group, options);
  if (chunk == 0)
    throw vk::Error(op + ": one row of " + shape_text(type, K, N) + " (" + std::to_string(rb) +
                    " bytes) does not fit a binding");
  if (fusion.any() && chunk < w_rows)
    throw vk::Error(op + ": " + shape_text(type, K, N) + " does not fit one binding, so it cannot be fused");

  for (uint64_t row0 = 0; row0 < N; row0 += chunk) {
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(chunk, N - row0));
    const uint64_t off = w_offset + row0 * rb;
    const uint64_t view_rows = glu ? w_rows : n;
    if (off + view_rows * rb > w.size())
      throw vk::Error(op + ": weights " + shape_text(type, K, N) + " at byte " + std::to_string(w_offset) +
                      " run past the end of buffer '" + w.tag() + "'");
    const uint64_t size = std::min(round_up4(view_rows * rb), w.size() - off);
    const vk::BufferWindow ww = w.window(off, size);
    const vk::BufferWindow yw = y.window(y_offset + row0 * 4, uint64_t(n) * 4);
    const MatVecPush push{K, n, static_cast<uint32_t>(rb), static_cast<uint32_t>(ww.skip), x_base, skip_elems(yw, 4),
                          skip_elems(gw, 4), fusion.eps};
    // The superblock path reads W as uvec4 when every row starts 16-aligned (Q6_K too: its
    // device blocks are padded to 224 bytes), x as vec4 when it starts 16-aligned.
    const bool w16 = loads_w16(ww.skip, rb);
    const bool x16 = x_base % 4 == 0;
    const std::vector<uint32_t> spec{sh.wg, sh.rows, sh.per_inv ? 1u : 0u, sh.per_inv && w16 ? 1u : 0u,
                                     sh.per_inv && x16 ? 1u : 0u, fusion.norm ? 1u : 0u,
                                     static_cast<uint32_t>(fusion.out)};
    k.dispatch(cb, op, {ww, xw, yw, gw}, push, spec, groups(n, sh.rows_per_group));
  }
}

}  // namespace

void mul_mv(Kernels& k, vk::CommandBuffer& cb, GgmlType type, const vk::Buffer& w, uint64_t w_offset, uint32_t K,
            uint32_t N, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer& y, uint64_t y_offset,
            const MatVecOptions& options) {
  const uint64_t rb = check_mul_mv(type, w_offset, K, N, x_offset, y_offset);
  if (use_texel(k, type, K, w, x, x_offset, options))
    mul_mv_texel(k, cb, type, w, w_offset, K, N, x, x_offset, y, y_offset, rb, MatVecFusion{}, options);
  else
    mul_mv_storage(k, cb, type, w, w_offset, K, N, x, x_offset, y, y_offset, rb, MatVecFusion{}, options);
}

}  // namespace chorus::ops

namespace chorus::ops {

bool mul_mv_fuses(const Kernels& k, GgmlType type, uint32_t K, uint32_t N, const vk::Buffer& w, uint64_t w_offset,
                  const vk::Buffer& x, uint64_t x_offset, const MatVecFusion& fusion, const MatVecOptions& options) {
  if (!fusion.any()) return true;
  const std::optional<uint64_t> rb = device_row_bytes(type, K);
  if (!rb || K == 0 || N == 0 || !is_weight_type(type)) return false;
  const bool glu = fusion.gated();
  const uint64_t w_rows = glu ? 2 * uint64_t(N) : N;
  if (w_offset + w_rows * *rb > w.size()) return false;
  if (fusion.norm && (fusion.norm_offset % 16 != 0 || fusion.norm_offset + uint64_t(K) * 4 > fusion.norm->size()))
    return false;
  if (use_texel(k, type, K, w, x, x_offset, options)) {
    const auto [wg, rows] = texel_shape(k, options);
    if (glu && rows % 2 != 0) return false;
    if (fusion.rope && !rope_fits(k, type, N, rows, fusion)) return false;
    if (!prescaled_fits(K, N, fusion)) return false;
    if (fusion.norm && fusion.norm->max_texel_elements() < K / 4) return false;
    const uint32_t rows_per_group = wg * (glu ? rows / 2 : rows);
    return texel_chunk(k, w, *rb, texel_w16(w, w_offset, w_rows, *rb), rows_per_group, options) >= w_rows;
  }
  // The storage kernels have no RoPE epilogue (rope_store follows them) and no x * g forms.
  if (fusion.rope || fusion.raw_x || fusion.next_norm) return false;
  const StorageShape sh = storage_shape(k, options, glu);
  if (glu && sh.rows % 2 != 0) return false;
  return storage_chunk(w, *rb, sh.rows_per_group, options) >= w_rows;
}

void mul_mv(Kernels& k, vk::CommandBuffer& cb, GgmlType type, const vk::Buffer& w, uint64_t w_offset, uint32_t K,
            uint32_t N, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer& y, uint64_t y_offset,
            const MatVecFusion& fusion, const MatVecOptions& options) {
  if (!fusion.any()) return mul_mv(k, cb, type, w, w_offset, K, N, x, x_offset, y, y_offset, options);
  const uint64_t rb = check_mul_mv(type, w_offset, K, N, x_offset, y_offset);
  if (!mul_mv_fuses(k, type, K, N, w, w_offset, x, x_offset, fusion, options))
    throw vk::Error(mul_mv_op(type) + ": " + shape_text(type, K, N) +
                    " cannot take a fused norm or epilogue here (W must fit one binding, the norm weight start at a multiple "
                    "of 16 bytes, a gated epilogue have an even number of rows per invocation; a RoPE epilogue needs the "
                    "texel kernel, Q, K and V rows matching the cache, and the cache in one binding)");
  if (use_texel(k, type, K, w, x, x_offset, options))
    mul_mv_texel(k, cb, type, w, w_offset, K, N, x, x_offset, y, y_offset, rb, fusion, options);
  else
    mul_mv_storage(k, cb, type, w, w_offset, K, N, x, x_offset, y, y_offset, rb, fusion, options);
}

}  // namespace chorus::ops
