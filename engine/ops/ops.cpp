#include "engine/ops/ops.h"

#include <algorithm>
#include <string>

namespace chorus::ops {
namespace {

// Push constants, mirrored field for field from shaders/ops.glsl.
struct RmsNormPush {
  uint32_t x_off, w_off, y_off;
  uint32_t n, rows;
  uint32_t x_stride, y_stride;
  uint32_t has_weight;
  float eps;
};
static_assert(sizeof(RmsNormPush) == 36);

struct AddRmsNormPush {
  RmsNormPush norm;
  uint32_t s_off, s_stride;
};
static_assert(sizeof(AddRmsNormPush) == 44);

struct RmsNorm2Push {
  RmsNormPush norm;
  uint32_t w2_off, w2_row;
};
static_assert(sizeof(RmsNorm2Push) == 44);

struct RopePush {
  uint32_t x_off, y_off, pos_off;
  uint32_t n_tokens, n_heads, head_dim, n_dims;
  uint32_t neox;
  uint32_t x_tok_stride, x_head_stride, y_tok_stride, y_head_stride;
  float freq_base, freq_scale;
};
static_assert(sizeof(RopePush) == 56);

struct BinaryPush {
  uint32_t x_off, y_off, z_off;
  uint32_t n, ny;
};
static_assert(sizeof(BinaryPush) == 20);

struct GluPush {
  uint32_t g_off, u_off, y_off;
  uint32_t n, rows;
  uint32_t g_stride, u_stride, y_stride;
};
static_assert(sizeof(GluPush) == 32);

struct CopyPush {
  uint32_t src_off, dst_off;
  uint32_t ne0, ne1, ne2;
  uint32_t s1, s2, d1, d2;
  uint32_t pairs;
};
static_assert(sizeof(CopyPush) == 40);

struct GetRowsPush {
  uint32_t w_off, ids_off, y_off;
  uint32_t n, n_ids;
  uint32_t row_bytes;
  uint32_t row_begin, n_rows;
  uint32_t y_stride;
};
static_assert(sizeof(GetRowsPush) == 36);

// Workgroup sizes (specialisation constant 0). Row kernels reduce over a row with one
// workgroup, whose size must be a power of two for the fallback's tree reduction.
constexpr uint32_t kRowWorkgroup = 128;
constexpr uint32_t kElemWorkgroup = 256;
constexpr uint32_t kMaxGroupsX = 65535;  // the minimum maxComputeWorkGroupCount[0] Vulkan guarantees

// A row kernel's workgroup on a CPU device is one subgroup (lavapipe: one SIMD batch of 8
// lanes): the row's sum is one subgroupAdd, where a workgroup of 128 costs llvmpipe a switch
// between its 16 batches at every barrier. A prefill's 512 x 576 rms_norm took 17-20 ms on
// one core with 128, 7-10 ms with 8 (the 576 x 576 x 512 Q4_1 product: ~24 ms; see
// docs/performance.md). GPUs keep kRowWorkgroup.
uint32_t row_workgroup(const Kernels& k) {
  const uint32_t sg = k.device().info().subgroup_size;
  const bool pow2 = sg != 0 && (sg & (sg - 1)) == 0;
  return (k.caps() & shaders::kCpu) && pow2 && sg <= kRowWorkgroup ? sg : kRowWorkgroup;
}

// Workgroup counts (gx, gy) covering `n` groups on a 2-D grid (shaders flatten it with
// ch_group_index() and drop the excess).
struct Grid {
  uint32_t x, y;
};
Grid grid(uint64_t n) {
  const uint64_t gx = std::min<uint64_t>(n, kMaxGroupsX);
  return {static_cast<uint32_t>(gx), gx == 0 ? 0u : groups(n, gx)};
}

// Bytes spanned by `rows` rows of `n` elements `stride` elements apart.
uint64_t strided_bytes(uint64_t rows, uint64_t n, uint64_t stride, uint64_t elem) {
  return ((rows - 1) * stride + n) * elem;
}

// Element offset of a window's start, checked to fit the shader's 32-bit indices.
uint32_t elem_offset(const vk::BufferWindow& w, uint32_t elem_bytes) { return skip_elems(w, elem_bytes); }

uint32_t or_default(uint32_t v, uint32_t d) { return v != 0 ? v : d; }

void binary(Kernels& k, vk::CommandBuffer& cb, const char* op, const vk::Buffer& x, uint64_t x_offset,
            const vk::Buffer& y, uint64_t y_offset, const vk::Buffer& z, uint64_t z_offset, uint32_t n, uint32_t ny) {
  if (n == 0) return;
  if (ny == 0 || ny > n)
    throw vk::Error(std::string(op) + ": the second operand has " + std::to_string(ny) + " elements, expected 1.." +
                    std::to_string(n));
  const auto xw = x.window(x_offset, uint64_t{n} * 4), yw = y.window(y_offset, uint64_t{ny} * 4),
             zw = z.window(z_offset, uint64_t{n} * 4);
  const BinaryPush p{elem_offset(xw, 4), elem_offset(yw, 4), elem_offset(zw, 4), n, ny};
  const Grid g = grid(groups(n, kElemWorkgroup));
  k.dispatch(cb, op, {xw, yw, zw}, p, {kElemWorkgroup}, g.x, g.y);
}

void glu(Kernels& k, vk::CommandBuffer& cb, const char* op, const vk::Buffer& gate, uint64_t gate_offset,
         const vk::Buffer& up, uint64_t up_offset, const vk::Buffer& out, uint64_t out_offset, const GluShape& s) {
  if (s.n == 0 || s.rows == 0) return;
  const uint32_t gs = or_default(s.gate_stride, s.n), us = or_default(s.up_stride, s.n),
                 os = or_default(s.out_stride, s.n);
  const auto gw = gate.window(gate_offset, strided_bytes(s.rows, s.n, gs, 4));
  const auto uw = up.window(up_offset, strided_bytes(s.rows, s.n, us, 4));
  const auto ow = out.window(out_offset, strided_bytes(s.rows, s.n, os, 4));
  const GluPush p{elem_offset(gw, 4), elem_offset(uw, 4), elem_offset(ow, 4), s.n, s.rows, gs, us, os};
  const Grid g = grid(groups(uint64_t{s.n} * s.rows, kElemWorkgroup));
  k.dispatch(cb, op, {gw, uw, ow}, p, {kElemWorkgroup}, g.x, g.y);
}

// rms_norm.comp's VEC4 form (same bits, a quarter of the loads) applies when every row and
// the weight start at a multiple of 4 elements of their bindings and rows are whole vec4s.
bool vec4_rows(uint32_t n, std::initializer_list<uint32_t> offsets_and_strides) {
  if (n % 4 != 0) return false;
  for (uint32_t v : offsets_and_strides)
    if (v % 4 != 0) return false;
  return true;
}

}  // namespace

namespace {

// rms_norm (y = the normed x) and rms_norm_add (y += it): one kernel, two ops.
void record_rms_norm(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer* weight,
                     uint64_t weight_offset, const vk::Buffer& y, uint64_t y_offset, const RmsNormShape& s, bool add) {
  if (s.n == 0 || s.rows == 0) return;
  const uint32_t xs = or_default(s.x_stride, s.n), ys = or_default(s.y_stride, s.n);
  const uint64_t x_bytes = strided_bytes(s.rows, s.n, xs, 4), y_bytes = strided_bytes(s.rows, s.n, ys, 4);
  if (add && &x == &y && x_offset < y_offset + y_bytes && y_offset < x_offset + x_bytes)
    throw vk::Error("rms_norm_add: x and y overlap; the kernel adds into y while other rows of x are read (use "
                    "rms_norm into another buffer, then add)");
  const auto xw = x.window(x_offset, x_bytes);
  const auto yw = y.window(y_offset, y_bytes);
  const auto ww = weight ? weight->window(weight_offset, uint64_t{s.n} * 4) : xw;  // unused binding without weight
  const RmsNormPush p{elem_offset(xw, 4), weight ? elem_offset(ww, 4) : 0u, elem_offset(yw, 4), s.n, s.rows, xs, ys,
                      weight ? 1u : 0u, s.eps};
  const Grid g = grid(s.rows);
  const bool v4 = vec4_rows(s.n, {p.x_off, p.w_off, p.y_off, xs, ys});
  const std::string op = std::string(add ? "rms_norm_add" : "rms_norm") + (v4 ? "_vec4" : "");
  k.dispatch(cb, op, {xw, ww, yw}, p, {row_workgroup(k)}, g.x, g.y);
}

}  // namespace

void rms_norm(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer* weight,
              uint64_t weight_offset, const vk::Buffer& y, uint64_t y_offset, const RmsNormShape& s) {
  record_rms_norm(k, cb, x, x_offset, weight, weight_offset, y, y_offset, s, false);
}

void rms_norm_add(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer* weight,
                  uint64_t weight_offset, const vk::Buffer& y, uint64_t y_offset, const RmsNormShape& s) {
  record_rms_norm(k, cb, x, x_offset, weight, weight_offset, y, y_offset, s, true);
}

void rms_norm2(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer& weight_a,
               uint64_t weight_a_offset, const vk::Buffer& weight_b, uint64_t weight_b_offset, uint32_t first_rows,
               const vk::Buffer& y, uint64_t y_offset, const RmsNormShape& s) {
  if (s.n == 0 || s.rows == 0) return;
  const uint32_t xs = or_default(s.x_stride, s.n), ys = or_default(s.y_stride, s.n);
  const auto xw = x.window(x_offset, strided_bytes(s.rows, s.n, xs, 4));
  const auto yw = y.window(y_offset, strided_bytes(s.rows, s.n, ys, 4));
  const auto aw = weight_a.window(weight_a_offset, uint64_t{s.n} * 4);
  const auto bw = weight_b.window(weight_b_offset, uint64_t{s.n} * 4);
  const RmsNorm2Push p{{elem_offset(xw, 4), elem_offset(aw, 4), elem_offset(yw, 4), s.n, s.rows, xs, ys, 1u, s.eps},
                       elem_offset(bw, 4),
                       first_rows};
  const Grid g = grid(s.rows);
  const bool v4 = vec4_rows(s.n, {p.norm.x_off, p.norm.w_off, p.norm.y_off, xs, ys, p.w2_off});
  k.dispatch(cb, v4 ? "rms_norm2_vec4" : "rms_norm2", {xw, aw, yw, bw}, p, {row_workgroup(k)}, g.x, g.y);
}

void add_rms_norm(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer& sum,
                  uint64_t sum_offset, const vk::Buffer* weight, uint64_t weight_offset, const vk::Buffer& y,
                  uint64_t y_offset, const RmsNormShape& s, uint32_t sum_stride) {
  if (s.n == 0 || s.rows == 0) return;
  const uint32_t xs = or_default(s.x_stride, s.n), ys = or_default(s.y_stride, s.n), ss = or_default(sum_stride, s.n);
  const uint64_t x_bytes = strided_bytes(s.rows, s.n, xs, 4), y_bytes = strided_bytes(s.rows, s.n, ys, 4);
  const auto overlaps = [](const vk::Buffer& a, uint64_t a_off, uint64_t a_bytes, const vk::Buffer& b, uint64_t b_off,
                           uint64_t b_bytes) { return &a == &b && a_off < b_off + b_bytes && b_off < a_off + a_bytes; };
  const uint64_t s_bytes = strided_bytes(s.rows, s.n, ss, 4);
  if (overlaps(x, x_offset, x_bytes, y, y_offset, y_bytes) || overlaps(sum, sum_offset, s_bytes, x, x_offset, x_bytes) ||
      overlaps(sum, sum_offset, s_bytes, y, y_offset, y_bytes))
    throw vk::Error("add_rms_norm: x, the sum and the output overlap; the kernel updates x in place and needs three "
                    "separate ranges (use add, then rms_norm)");
  const auto xw = x.window(x_offset, x_bytes);
  const auto sw = sum.window(sum_offset, s_bytes);
  const auto yw = y.window(y_offset, y_bytes);
  const auto ww = weight ? weight->window(weight_offset, uint64_t{s.n} * 4) : sw;  // unused binding without weight
  const AddRmsNormPush p{{elem_offset(xw, 4), weight ? elem_offset(ww, 4) : 0u, elem_offset(yw, 4), s.n, s.rows, xs, ys,
                          weight ? 1u : 0u, s.eps},
                         elem_offset(sw, 4),
                         ss};
  const Grid g = grid(s.rows);
  const bool v4 = vec4_rows(s.n, {p.norm.x_off, p.norm.w_off, p.norm.y_off, xs, ys, p.s_off, ss});
  k.dispatch(cb, v4 ? "add_rms_norm_vec4" : "add_rms_norm", {xw, ww, yw, sw}, p, {row_workgroup(k)}, g.x, g.y);
}

void rope(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer& positions,
          uint64_t positions_offset, const vk::Buffer& y, uint64_t y_offset, const RopeShape& s) {
  const uint32_t n_dims = or_default(s.n_dims, s.head_dim);
  if (s.head_dim % 2 != 0 || n_dims % 2 != 0 || n_dims > s.head_dim)
    throw vk::Error("rope: head_dim " + std::to_string(s.head_dim) + " and n_dims " + std::to_string(n_dims) +
                    " must be even with n_dims <= head_dim");
  if (s.n_tokens == 0 || s.n_heads == 0 || s.head_dim == 0) return;
  const uint32_t xt = or_default(s.x_token_stride, s.n_heads * s.head_dim), xh = or_default(s.x_head_stride, s.head_dim);
  const uint32_t yt = or_default(s.y_token_stride, s.n_heads * s.head_dim), yh = or_default(s.y_head_stride, s.head_dim);
  const auto extent = [&](uint32_t ts, uint32_t hs) {
    return (uint64_t{s.n_tokens - 1} * ts + uint64_t{s.n_heads - 1} * hs + s.head_dim) * 4;
  };
  const auto xw = x.window(x_offset, extent(xt, xh));
  const auto pw = positions.window(positions_offset, uint64_t{s.n_tokens} * 4);
  const auto yw = y.window(y_offset, extent(yt, yh));
  const RopePush p{elem_offset(xw, 4), elem_offset(yw, 4), elem_offset(pw, 4), s.n_tokens, s.n_heads, s.head_dim,
                   n_dims, s.neox ? 1u : 0u, xt, xh, yt, yh, s.freq_base, s.freq_scale};
  const Grid g = grid(groups(uint64_t{s.n_tokens} * s.n_heads * (s.head_dim / 2), kElemWorkgroup));
  k.dispatch(cb, "rope", {xw, pw, yw}, p, {kElemWorkgroup}, g.x, g.y);
}

void add(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer& y,
         uint64_t y_offset, const vk::Buffer& z, uint64_t z_offset, uint32_t n, uint32_t ny) {
  binary(k, cb, "add", x, x_offset, y, y_offset, z, z_offset, n, ny);
}

void mul(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& x, uint64_t x_offset, const vk::Buffer& y,
         uint64_t y_offset, const vk::Buffer& z, uint64_t z_offset, uint32_t n, uint32_t ny) {
  binary(k, cb, "mul", x, x_offset, y, y_offset, z, z_offset, n, ny);
}

void swiglu(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& gate, uint64_t gate_offset, const vk::Buffer& up,
            uint64_t up_offset, const vk::Buffer& out, uint64_t out_offset, const GluShape& s) {
  glu(k, cb, "swiglu", gate, gate_offset, up, up_offset, out, out_offset, s);
}

void geglu(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& gate, uint64_t gate_offset, const vk::Buffer& up,
           uint64_t up_offset, const vk::Buffer& out, uint64_t out_offset, const GluShape& s) {
  glu(k, cb, "geglu", gate, gate_offset, up, up_offset, out, out_offset, s);
}

const char* get_rows_op(GgmlType type) {
  switch (type) {
    case GgmlType::F32: return "get_rows_f32";
    case GgmlType::F16: return "get_rows_f16";
    case GgmlType::BF16: return "get_rows_bf16";
    case GgmlType::Q8_0: return "get_rows_q8_0";
    case GgmlType::Q4_0: return "get_rows_q4_0";
    case GgmlType::Q4_1: return "get_rows_q4_1";
    case GgmlType::Q5_0: return "get_rows_q5_0";
    case GgmlType::Q5_1: return "get_rows_q5_1";
    case GgmlType::Q2_K: return "get_rows_q2_k";
    case GgmlType::Q3_K: return "get_rows_q3_k";
    case GgmlType::Q4_K: return "get_rows_q4_k";
    case GgmlType::Q5_K: return "get_rows_q5_k";
    case GgmlType::Q6_K: return "get_rows_q6_k";
    default: break;
  }
  throw vk::Error(std::string("get_rows: no kernel for weight format ") + type_traits(type).name);
}

void get_rows(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& w, uint64_t w_offset, const vk::Buffer& ids,
              uint64_t ids_offset, const vk::Buffer& out, uint64_t out_offset, const GetRowsShape& s) {
  const char* op = get_rows_op(s.type);
  const auto rb = device_row_bytes(s.type, s.n);
  if (!rb)
    throw vk::Error(std::string("get_rows: a row of ") + std::to_string(s.n) + " elements is not a whole number of " +
                    type_traits(s.type).name + " blocks");
  if (w_offset % 4 != 0)
    throw vk::Error("get_rows: the weight starts at byte " + std::to_string(w_offset) + ", not a multiple of 4");
  if (s.n == 0 || s.n_rows == 0 || s.n_ids == 0) return;
  const uint32_t ys = or_default(s.out_stride, s.n);
  const auto iw = ids.window(ids_offset, uint64_t{s.n_ids} * 4);
  const auto yw = out.window(out_offset, strided_bytes(s.n_ids, s.n, ys, 4));
  // A window's aligned start may lie up to the binding alignment before the rows it holds.
  const uint64_t limit = s.max_window != 0 ? s.max_window : w.max_range();
  const uint64_t slack = 256;  // > any minStorageBufferOffsetAlignment
  if (limit <= slack || (limit - slack) / *rb == 0)
    throw vk::Error(std::string("get_rows: a ") + type_traits(s.type).name + " row of " + std::to_string(*rb) +
                    " bytes does not fit a binding window of " + vk::format_bytes(limit));
  const uint64_t rows_per_window = (limit - slack) / *rb;
  const Grid g = grid(s.n_ids);
  for (uint64_t r0 = 0; r0 < s.n_rows; r0 += rows_per_window) {
    const uint64_t nr = std::min<uint64_t>(rows_per_window, s.n_rows - r0);
    const auto ww = w.window(w_offset + r0 * *rb, nr * *rb);
    const GetRowsPush p{static_cast<uint32_t>(ww.skip), elem_offset(iw, 4), elem_offset(yw, 4), s.n, s.n_ids,
                        static_cast<uint32_t>(*rb), static_cast<uint32_t>(r0), static_cast<uint32_t>(nr), ys};
    k.dispatch(cb, op, {ww, iw, yw}, p, {kRowWorkgroup}, g.x, g.y);
  }
}

}  // namespace chorus::ops
