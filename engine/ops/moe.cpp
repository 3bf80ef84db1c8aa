#include "engine/ops/moe.h"

#include <algorithm>
#include <cctype>
#include <vector>

namespace chorus::ops {
namespace {

// Push constants, mirrored field for field from shaders/moe.glsl.
struct MoeRoutePush {
  uint32_t logits_off, ids_off, weights_off;
  uint32_t n_expert, k, n_tokens;
  uint32_t norm;
};
static_assert(sizeof(MoeRoutePush) == 28);

struct MoeGroupPush {
  uint32_t ids_off, groups_off;
  uint32_t n_expert, n_slots, cap;
};
static_assert(sizeof(MoeGroupPush) == 20);

struct MoeCombinePush {
  uint32_t y_off, weights_off, out_off;
  uint32_t n, n_tokens, k;
};
static_assert(sizeof(MoeCombinePush) == 24);

struct MulMatIdPush {
  uint32_t K, N;
  uint32_t row_bytes, w_base, expert_bytes;
  uint32_t e_base, n_experts;
  uint32_t x_off, x_stride, x_div;
  uint32_t y_off, y_stride;
  uint32_t ids_off, groups_off;
  uint32_t n_expert, cap, n_slots;
};
static_assert(sizeof(MulMatIdPush) == 68);

constexpr uint32_t kWorkgroup = 64;
constexpr uint32_t kElemWorkgroup = 256;
constexpr uint32_t kCols = 8;                  // shaders/mul_mm_id.comp's COLS
constexpr uint32_t kRows = 4;                  // its ROWS
constexpr uint32_t kMaxGroups = 65535;         // the minimum maxComputeWorkGroupCount Vulkan guarantees
constexpr uint64_t kMaxBindAlignment = 256;    // Vulkan's upper bound on minStorageBufferOffsetAlignment

uint64_t round_up4(uint64_t v) { return (v + 3) / 4 * 4; }

}  // namespace

void moe_route(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& logits, uint64_t logits_offset,
               const vk::Buffer& ids, uint64_t ids_offset, const vk::Buffer& weights, uint64_t weights_offset,
               const MoeRouteShape& s) {
  if (s.n_tokens == 0) return;
  if (s.n_expert == 0 || s.k == 0 || s.k > s.n_expert || s.k > kMoeMaxK)
    throw vk::Error("moe_route: " + std::to_string(s.k) + " of " + std::to_string(s.n_expert) +
                    " experts per token; expected 1.." + std::to_string(kMoeMaxK) + " and at most the experts");
  const uint64_t slots = uint64_t(s.n_tokens) * s.k;
  const auto lw = logits.window(logits_offset, uint64_t(s.n_tokens) * s.n_expert * 4);
  const auto iw = ids.window(ids_offset, slots * 4), ww = weights.window(weights_offset, slots * 4);
  const MoeRoutePush p{skip_elems(lw, 4), skip_elems(iw, 4), skip_elems(ww, 4), s.n_expert, s.k, s.n_tokens,
                       s.norm ? 1u : 0u};
  k.dispatch(cb, "moe_route", {lw, iw, ww}, p, {kWorkgroup}, groups(s.n_tokens, kWorkgroup));
}

void moe_group(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& ids, uint64_t ids_offset,
               const vk::Buffer& groups_buf, uint64_t groups_offset, uint32_t n_expert, uint32_t n_slots, uint32_t cap) {
  if (n_slots == 0) return;
  const auto iw = ids.window(ids_offset, uint64_t(n_slots) * 4);
  const auto gw = groups_buf.window(groups_offset, moe_groups_bytes(n_expert, cap));
  const MoeGroupPush p{skip_elems(iw, 4), skip_elems(gw, 4), n_expert, n_slots, cap};
  k.dispatch(cb, "moe_group", {iw, gw}, p, {kWorkgroup}, groups(n_expert, kWorkgroup));
}

void mul_mm_id(Kernels& k, vk::CommandBuffer& cb, GgmlType type, const vk::Buffer& w, uint32_t K, uint32_t N,
               const vk::Buffer& x, uint64_t x_offset, const vk::Buffer& y, uint64_t y_offset, const ExpertRows& rows,
               const ExpertRouting& r, uint64_t max_window) {
  std::string op = "mul_mm_id_" + std::string(type_traits(type).name);
  std::transform(op.begin(), op.end(), op.begin(), [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  const std::vector<GgmlType> formats = weight_types();
  if (std::find(formats.begin(), formats.end(), type) == formats.end())
    throw vk::Error(op + ": " + type_traits(type).name + " is not a weight format");
  const std::optional<uint64_t> rb = device_row_bytes(type, K);
  if (K == 0 || N == 0 || !rb)
    throw vk::Error(op + ": shape [" + std::to_string(K) + ", " + std::to_string(N) +
                    "] is empty or K is not a whole number of blocks");
  if (r.n_slots == 0) return;
  if (!r.ids || rows.x_div == 0 || (r.groups && r.cap == 0))
    throw vk::Error(op + ": routing without expert ids, a zero x_div or an empty list capacity");
  const uint64_t expert_bytes = *rb * N;
  if (expert_bytes * r.n_expert > w.size())
    throw vk::Error(op + ": " + std::to_string(r.n_expert) + " experts of " + std::to_string(expert_bytes) +
                    " bytes run past the end of buffer '" + w.tag() + "'");
  // Windows of whole experts, each within one binding.
  const uint64_t limit = max_window ? std::min(max_window, w.max_range()) : w.max_range();
  const uint64_t usable = limit > kMaxBindAlignment + 4 ? limit - kMaxBindAlignment - 4 : 0;
  const uint64_t per_window = std::min<uint64_t>(usable / expert_bytes, kMaxGroups);
  if (per_window == 0)
    throw vk::Error(op + ": one expert of [" + std::to_string(K) + ", " + std::to_string(N) + "] (" +
                    std::to_string(expert_bytes) + " bytes) does not fit a binding of " + std::to_string(limit) + " bytes");
  if (!r.groups && r.n_slots > kMaxGroups)
    throw vk::Error(op + ": " + std::to_string(r.n_slots) + " slots in slot mode; group them (moe_group)");

  const uint32_t x_rows = (r.n_slots + rows.x_div - 1) / rows.x_div;
  const auto xw = x.window(x_offset, (uint64_t(x_rows - 1) * rows.x_stride + K) * 4);
  const auto yw = y.window(y_offset, (uint64_t(r.n_slots - 1) * rows.y_stride + N) * 4);
  const auto rw = r.groups ? r.groups->window(r.groups_offset, moe_groups_bytes(r.n_expert, r.cap))
                           : r.ids->window(r.ids_offset, uint64_t(r.n_slots) * 4);
  const uint32_t route_off = skip_elems(rw, 4);
  for (uint64_t e0 = 0; e0 < r.n_expert; e0 += per_window) {
    const uint32_t n_e = static_cast<uint32_t>(std::min<uint64_t>(per_window, r.n_expert - e0));
    const uint64_t off = e0 * expert_bytes;
    const auto ww = w.window(off, std::min(round_up4(n_e * expert_bytes), w.size() - off));
    const MulMatIdPush p{K, N, static_cast<uint32_t>(*rb), static_cast<uint32_t>(ww.skip),
                         static_cast<uint32_t>(expert_bytes), static_cast<uint32_t>(e0), n_e,
                         skip_elems(xw, 4), rows.x_stride, rows.x_div, skip_elems(yw, 4), rows.y_stride,
                         route_off, route_off, r.n_expert, r.cap, r.n_slots};
    if (r.groups)
      k.dispatch(cb, op, {ww, xw, yw, rw}, p, {kWorkgroup, 1u}, groups(N, kWorkgroup * kRows), groups(r.cap, kCols), n_e);
    else
      k.dispatch(cb, op, {ww, xw, yw, rw}, p, {kWorkgroup, 0u}, groups(N, kWorkgroup * kRows), r.n_slots);
  }
}

void moe_combine(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& y, uint64_t y_offset, const vk::Buffer& weights,
                 uint64_t weights_offset, const vk::Buffer& out, uint64_t out_offset, uint32_t n, uint32_t n_tokens,
                 uint32_t k_used) {
  if (n == 0 || n_tokens == 0) return;
  const uint64_t slots = uint64_t(n_tokens) * k_used;
  const auto yw = y.window(y_offset, slots * n * 4), ww = weights.window(weights_offset, slots * 4);
  const auto ow = out.window(out_offset, uint64_t(n_tokens) * n * 4);
  const MoeCombinePush p{skip_elems(yw, 4), skip_elems(ww, 4), skip_elems(ow, 4), n, n_tokens, k_used};
  const uint64_t wgs = groups(uint64_t(n) * n_tokens, kElemWorkgroup);
  const uint32_t gx = static_cast<uint32_t>(std::min<uint64_t>(wgs, kMaxGroups));
  k.dispatch(cb, "moe_combine", {yw, ww, ow}, p, {kElemWorkgroup}, gx, groups(wgs, gx));
}

}  // namespace chorus::ops
