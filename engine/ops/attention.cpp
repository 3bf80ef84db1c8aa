#include "engine/ops/attention.h"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

namespace chorus::ops {
namespace {

constexpr uint32_t kStoreWg = 64;      // kv_store invocations per workgroup (one cache word each)
constexpr uint32_t kAttnWg = 64;       // attention: invocations = cache positions per block
constexpr uint32_t kRowWg = 8;         // attention_row: rows per workgroup (llvmpipe's 8 lanes of 256 bits)
constexpr uint32_t kMaxHeadDim = 256;  // keeps the kernel's registers and shared memory bounded
constexpr uint64_t kSlack = 20;        // a window may grow by up to 15 bytes of alignment skip + 3 of rounding
constexpr uint32_t kMaxGroups = 65535;

// Usable bytes of one binding of b: the limit minus what alignment and rounding may add.
uint64_t window_bytes(const vk::Buffer& b, uint64_t max_window) {
  uint64_t limit = std::min<uint64_t>(b.max_range(), 0xFFFFFF00ull);  // word offsets in the kernel are 32-bit
  if (max_window != 0) limit = std::min(limit, max_window);
  return limit > kSlack ? limit - kSlack : 0;
}

std::string cache_text(const KvCache& c) {
  return "KV cache [" + std::to_string(c.n_kv_heads) + " heads][" + std::to_string(c.n_ctx) + " positions][" +
         std::to_string(c.head_dim) + "]";
}

// KV heads per dispatch so that each head range of K and V fits one binding.
uint32_t heads_per_window(const KvCache& c, uint64_t max_window, const std::string& what) {
  const uint64_t limit = std::min(window_bytes(*c.k, max_window), window_bytes(*c.v, max_window));
  const uint64_t n = limit / c.head_bytes();
  if (n == 0)
    throw vk::Error(what + ": one KV head of " + vk::format_bytes(c.head_bytes()) +
                    " exceeds the binding limit of " + vk::format_bytes(limit) + "; use a shorter context");
  return static_cast<uint32_t>(std::min<uint64_t>(n, c.n_kv_heads));
}

void check_cache(const KvCache& c, const std::string& what) {
  if (c.k == nullptr || c.v == nullptr) throw vk::Error(what + ": the cache's K or V buffer is missing");
  if (c.n_kv_heads == 0 || c.n_ctx == 0 || c.head_dim == 0 || c.head_dim % 2 != 0 || c.head_dim > kMaxHeadDim)
    throw vk::Error(what + ": head_dim must be even and at most " + std::to_string(kMaxHeadDim) +
                    ", heads and context positive");
  if (c.k_offset % 4 != 0 || c.v_offset % 4 != 0)
    throw vk::Error(what + ": K and V must start at a multiple of 4 bytes");
  if (c.k_offset + c.bytes() > c.k->size() || c.v_offset + c.bytes() > c.v->size())
    throw vk::Error(what + ": the cache overruns its buffers ('" + c.k->tag() + "', '" + c.v->tag() + "')");
}

// Where a dispatch finds p0 on the device: the checked binding of the p0 word, or `unused`
// (bound again at binding 4 and never read) when p0 is a host value.
struct P0Binding {
  vk::BufferWindow window;
  uint32_t offset_words = 0;
  uint32_t from_buffer = 0;  // specialisation constant P0_FROM_BUFFER
};

P0Binding p0_binding(const vk::Buffer* buffer, uint64_t offset, const vk::BufferWindow& unused,
                     const std::string& what) {
  if (buffer == nullptr) return {unused, 0, 0};
  if (offset % 4 != 0 || offset + 4 > buffer->size())
    throw vk::Error(what + ": the p0 word at byte " + std::to_string(offset) + " of '" + buffer->tag() +
                    "' must be 4-aligned and inside the buffer");
  const vk::BufferWindow w = buffer->window(offset, 4);
  return {w, skip_elems(w, 4), 1};
}

std::string p0_text(uint32_t p0, const vk::Buffer* buffer) {
  return buffer != nullptr ? "p0 from '" + buffer->tag() + "'" : std::to_string(p0);
}

// Rows per attention_lanes workgroup: each lane holds rows x head_dim floats of output and as
// many of queries, unrolled; more rows read each K/V word for more of them but compile longer.
// lavapipe compiles a pipeline with LLVM when it first runs (Mesa's on-disk shader cache keeps
// the result for later runs). SmolLM2 (head_dim 64), after the products' epilogue fusions,
// pp512 on one device: 2 rows ~157 t/s, 3 rows ~159, 4 rows ~170, 6 ~172, 8 ~166 (three and
// two runs each, one binary with a switch), but only ~+3% with the binaries alternating (six
// rounds: medians 161.8 -> 166.6); the first token of a 170-token prompt with every cache off
// (the cost of a machine's very first run) came at 4.6-4.8 s with 2 rows and 7.1-7.5 s with 4
// (docs/performance.md, tenth round).
uint32_t lanes_rows(uint32_t head_dim) { return head_dim <= 64 ? 4u : 1u; }

// attention_lanes is chosen when a prefill's (token, position) pairs reach this. SmolLM2 on
// lavapipe, `bench -p 8,16,32,64,128 -n 0 -r 3` with the threshold 0 and with it out of reach,
// two rounds each: pp64 72.1, 77.6 against 67.4, 71.4 t/s; pp128 76.9, 80.2 against 65.4, 65.3;
// below 64 tokens the rounds disagree. Its first-run compile (~0.9 s with Mesa's shader cache
// empty, then cached on disk) is paid once per machine.
constexpr uint64_t kLanesMinPairs = 64 * 64;

// Rows per attention workgroup: the decode group (ratio rows) in one tile when it fits,
// otherwise 8 (prefill), as a power of two so few pipelines exist.
uint32_t pick_rows(uint32_t n_rows, uint32_t head_dim) {
  const uint32_t cap = head_dim > 128 ? 4u : 8u;  // keeps the score registers and acc[] moderate
  uint32_t r = 1;
  while (r < n_rows && r < cap) r *= 2;
  return r;
}

}  // namespace

void kv_store(Kernels& k, vk::CommandBuffer& cb, const KvCache& cache, const vk::Buffer& k_src,
              uint64_t k_src_offset, const vk::Buffer& v_src, uint64_t v_src_offset, uint32_t n_tokens, uint32_t p0,
              const KvStoreOptions& options) {
  const std::string what = "kv_store(" + cache_text(cache) + ", " + std::to_string(n_tokens) + " tokens at " +
                           p0_text(p0, options.p0_buffer) + ")";
  check_cache(cache, what);
  const uint32_t host_p0 = options.p0_buffer != nullptr ? 0 : p0;  // a device p0 is clamped by the kernel
  if (uint64_t(host_p0) + n_tokens > cache.n_ctx) throw vk::Error(what + ": positions run past the context");
  const uint32_t row = cache.n_kv_heads * cache.head_dim;
  const uint32_t stride = options.src_stride != 0 ? options.src_stride : row;
  if (stride < row) throw vk::Error(what + ": the source stride is shorter than a token's row");
  if (k_src_offset % 4 != 0 || v_src_offset % 4 != 0)
    throw vk::Error(what + ": K and V sources must start at a multiple of 4 bytes");
  if (n_tokens == 0) return;
  const uint64_t src_bytes = 4 * ((uint64_t(n_tokens) - 1) * stride + row);
  if (k_src_offset + src_bytes > k_src.size() || v_src_offset + src_bytes > v_src.size())
    throw vk::Error(what + ": a source overruns its buffer ('" + k_src.tag() + "', '" + v_src.tag() + "')");

  const vk::BufferWindow kw = k_src.window(k_src_offset, src_bytes);
  const vk::BufferWindow vw = v_src.window(v_src_offset, src_bytes);
  const P0Binding pw = p0_binding(options.p0_buffer, options.p0_offset, kw, what);
  const uint32_t per = heads_per_window(cache, options.max_window, what);
  for (uint32_t h0 = 0; h0 < cache.n_kv_heads; h0 += per) {
    const uint32_t nh = std::min(per, cache.n_kv_heads - h0);
    const uint64_t head_off = uint64_t(h0) * cache.head_bytes();
    const vk::BufferWindow kc = cache.k->window(cache.k_offset + head_off, nh * cache.head_bytes());
    const vk::BufferWindow vc = cache.v->window(cache.v_offset + head_off, nh * cache.head_bytes());
    KvStorePush push{n_tokens,          nh,     h0,
                     cache.head_dim,    cache.n_ctx, host_p0,
                     stride,            skip_elems(kw, 4), skip_elems(vw, 4),
                     skip_elems(kc, 4), skip_elems(vc, 4), pw.offset_words};
    const uint32_t gx = groups(uint64_t(n_tokens) * nh * (cache.head_dim / 2), kStoreWg);
    if (gx > kMaxGroups) throw vk::Error(what + ": too many tokens for one dispatch; store them in parts");
    k.dispatch(cb, "kv_store", {kw, vw, kc, vc, pw.window}, push, {kStoreWg, pw.from_buffer}, gx, 2);
  }
}

bool kv_cache_fits_one_binding(const KvCache& cache) {
  try {
    check_cache(cache, "cache");
    return heads_per_window(cache, 0, "cache") == cache.n_kv_heads;
  } catch (const vk::Error&) {
    return false;
  }
}

void rope_store(Kernels& k, vk::CommandBuffer& cb, const KvCache& cache, const vk::Buffer& qkv, uint64_t q_offset,
                uint64_t k_offset, uint64_t v_offset, const vk::Buffer& positions, uint64_t positions_offset,
                const RopeStoreShape& s) {
  const std::string what = "rope_store(" + cache_text(cache) + ", " + std::to_string(s.n_tokens) + " tokens x " +
                           std::to_string(s.n_q_heads) + " q heads)";
  check_cache(cache, what);
  const uint32_t D = cache.head_dim, n_dims = s.n_dims ? s.n_dims : D;
  if (n_dims % 2 != 0 || n_dims > D) throw vk::Error(what + ": n_dims must be even and at most head_dim");
  if (q_offset % 4 != 0 || k_offset % 4 != 0 || v_offset % 4 != 0 || positions_offset % 4 != 0)
    throw vk::Error(what + ": offsets must be multiples of 4 bytes");
  if (s.n_tokens == 0) return;
  const uint32_t q_stride = s.n_q_heads * D, kv_stride = cache.n_kv_heads * D;
  // One binding over Q, K and V of every token.
  const uint64_t lo = std::min({q_offset, k_offset, v_offset});
  const uint64_t hi = std::max({q_offset + uint64_t(s.n_tokens) * q_stride * 4, k_offset + uint64_t(s.n_tokens) * kv_stride * 4,
                                v_offset + uint64_t(s.n_tokens) * kv_stride * 4});
  if (hi > qkv.size()) throw vk::Error(what + ": Q, K or V overruns buffer '" + qkv.tag() + "'");
  const vk::BufferWindow xw = qkv.window(lo, hi - lo);
  const uint32_t base = skip_elems(xw, 4);
  const auto floats = [&](uint64_t offset) { return static_cast<uint32_t>(base + (offset - lo) / 4); };
  const vk::BufferWindow pw = positions.window(positions_offset, uint64_t(s.n_tokens) * 4);
  const bool bias = s.q_bias || s.k_bias || s.v_bias;
  if (bias && !(s.q_bias && s.k_bias && s.v_bias)) throw vk::Error(what + ": Q, K and V biases go together (all or none)");
  if (bias && (s.q_bias_offset % 4 != 0 || s.k_bias_offset % 4 != 0 || s.v_bias_offset % 4 != 0))
    throw vk::Error(what + ": bias offsets must be multiples of 4 bytes");
  std::optional<vk::BufferWindow> bqw, bkw, bvw;
  if (bias) {
    bqw = s.q_bias->window(s.q_bias_offset, std::max<uint64_t>(uint64_t(q_stride) * 4, 4));
    bkw = s.k_bias->window(s.k_bias_offset, uint64_t(kv_stride) * 4);
    bvw = s.v_bias->window(s.v_bias_offset, uint64_t(kv_stride) * 4);
  }
  const uint32_t per = heads_per_window(cache, 0, what);
  for (uint32_t h0 = 0; h0 < cache.n_kv_heads; h0 += per) {
    const uint32_t nh = std::min(per, cache.n_kv_heads - h0);
    const uint32_t nq = h0 == 0 ? s.n_q_heads : 0;  // the first dispatch rotates Q
    const uint64_t head_off = uint64_t(h0) * cache.head_bytes();
    const vk::BufferWindow kc = cache.k->window(cache.k_offset + head_off, nh * cache.head_bytes());
    const vk::BufferWindow vc = cache.v->window(cache.v_offset + head_off, nh * cache.head_bytes());
    RopeStorePush push{floats(q_offset), floats(k_offset), floats(v_offset), q_stride, kv_stride,
                       skip_elems(pw, 4), s.n_tokens, nq, nh, h0, D, n_dims, s.neox ? 1u : 0u, cache.n_ctx,
                       skip_elems(kc, 4), skip_elems(vc, 4), s.freq_base, s.freq_scale};
    const uint32_t gx = groups(uint64_t(s.n_tokens) * (D / 2), kStoreWg);  // an invocation per (token, word)
    if (gx > kMaxGroups) throw vk::Error(what + ": too many tokens for one dispatch");
    if (bias) {
      push.bq_off = skip_elems(*bqw, 4);
      push.bk_off = skip_elems(*bkw, 4);
      push.bv_off = skip_elems(*bvw, 4);
      k.dispatch(cb, "rope_store_bias", {xw, pw, kc, vc, *bqw, *bkw, *bvw}, push, {kStoreWg}, gx);
    } else {
      k.dispatch(cb, "rope_store", {xw, pw, kc, vc}, push, {kStoreWg}, gx);
    }
  }
}

void attention(Kernels& k, vk::CommandBuffer& cb, const KvCache& cache, const AttentionShape& shape,
               const vk::Buffer& q, uint64_t q_offset, const vk::Buffer& out, uint64_t out_offset,
               const AttentionOptions& options) {
  const std::string what = "attention(" + cache_text(cache) + ", " + std::to_string(shape.n_tokens) + " tokens x " +
                           std::to_string(shape.n_q_heads) + " q heads at " + p0_text(shape.p0, shape.p0_buffer) + ")";
  check_cache(cache, what);
  if (shape.n_q_heads == 0 || shape.n_q_heads % cache.n_kv_heads != 0)
    throw vk::Error(what + ": the q heads must be a positive multiple of the KV heads");
  const uint32_t host_p0 = shape.p0_buffer != nullptr ? 0 : shape.p0;  // a device p0 is clamped by the kernel
  if (uint64_t(host_p0) + shape.n_tokens > cache.n_ctx) throw vk::Error(what + ": positions run past the context");
  if (q_offset % 4 != 0 || out_offset % 4 != 0) throw vk::Error(what + ": q and out must start at a multiple of 4 bytes");
  const uint32_t D = cache.head_dim;
  const uint32_t row = shape.n_q_heads * D;
  const uint32_t q_stride = options.q_stride != 0 ? options.q_stride : row;
  const uint32_t o_stride = options.o_stride != 0 ? options.o_stride : row;
  if (q_stride < row || o_stride < row) throw vk::Error(what + ": q and out strides must hold a token's row");
  if (shape.n_tokens == 0) return;
  const uint64_t q_bytes = 4 * ((uint64_t(shape.n_tokens) - 1) * q_stride + row);
  const uint64_t o_bytes = 4 * ((uint64_t(shape.n_tokens) - 1) * o_stride + row);
  if (q_offset + q_bytes > q.size() || out_offset + o_bytes > out.size())
    throw vk::Error(what + ": q or out overruns its buffer ('" + q.tag() + "', '" + out.tag() + "')");

  const uint32_t ratio = shape.n_q_heads / cache.n_kv_heads;
  const uint32_t n_rows = shape.n_tokens * ratio;
  // attention_row reads K and V through texel buffer views (buffers made by Device::create_buffer allow them).
  const bool have_row_kernel = shaders::select("attention_row", k.caps()) != nullptr &&
                               cache.k->max_texel_elements() > 0 && cache.v->max_texel_elements() > 0;
  if (options.per_row == 1 && !have_row_kernel)
    throw vk::Error(what + ": attention_row is registered for CPU devices only, and reads the KV cache through texel "
                    "buffer views; this device or cache allows neither");
  const bool per_row = options.per_row == 1 || (options.per_row < 0 && have_row_kernel && shape.n_tokens == 1);
  // attention_lanes' workgroup: one subgroup (its subgroup variant), else kRowWg lanes.
  const auto* lanes_kernel = shaders::select("attention_lanes", k.caps());
  const bool lanes_subgroup = lanes_kernel != nullptr && (lanes_kernel->requires_caps & shaders::kSubgroup) != 0;
  const uint32_t lanes_wg = lanes_subgroup ? k.device().info().subgroup_size : kRowWg;
  const bool have_lanes = lanes_kernel != nullptr && lanes_wg >= 1 && lanes_wg <= 64 && cache.k->max_texel_elements() > 0 &&
                          cache.v->max_texel_elements() > 0;
  if (options.lanes == 1 && options.per_row == 1) throw vk::Error(what + ": attention_row and attention_lanes both asked for");
  if (options.lanes == 1 && !have_lanes)
    throw vk::Error(what + ": attention_lanes is registered for CPU devices (with subgroups of at most 64 lanes) only, "
                    "and reads the KV cache through texel buffer views; this device or cache allows neither");
  const uint64_t pairs = uint64_t(shape.n_tokens) * (uint64_t(host_p0) + shape.n_tokens);  // a device p0 counts as 0
  const bool lanes = !per_row && (options.lanes == 1 || (options.lanes < 0 && have_lanes && shape.n_tokens > 1 &&
                                                         pairs >= kLanesMinPairs));
  uint32_t rows = options.rows_per_group != 0 ? options.rows_per_group : pick_rows(n_rows, D);
  if (rows > 16) throw vk::Error(what + ": at most 16 rows per workgroup");
  const uint32_t gx = groups(n_rows, rows);
  if (gx > kMaxGroups) throw vk::Error(what + ": too many tokens for one dispatch; split the batch");

  const vk::BufferWindow qw = q.window(q_offset, q_bytes);
  const vk::BufferWindow ow = out.window(out_offset, o_bytes);
  const P0Binding pw = p0_binding(shape.p0_buffer, shape.p0_offset, qw, what);
  const uint32_t per = heads_per_window(cache, options.max_window, what);
  for (uint32_t h0 = 0; h0 < cache.n_kv_heads; h0 += per) {
    const uint32_t nh = std::min(per, cache.n_kv_heads - h0);
    const uint64_t head_off = uint64_t(h0) * cache.head_bytes();
    const vk::BufferWindow kc = cache.k->window(cache.k_offset + head_off, nh * cache.head_bytes());
    const vk::BufferWindow vc = cache.v->window(cache.v_offset + head_off, nh * cache.head_bytes());
    AttentionPush push{shape.n_tokens,    ratio,       h0,
                       cache.n_ctx,       host_p0,     shape.scale,
                       q_stride,          o_stride,    skip_elems(qw, 4),
                       skip_elems(ow, 4), skip_elems(kc, 4), skip_elems(vc, 4),
                       pw.offset_words,   shape.window, nh};
    if (per_row || lanes) {
      // The CPU kernels read K and V through texel views (attention_kv.glsl): 16-byte texels
      // when rows and offsets allow, else 4-byte ones; k_off, v_off in words from each view.
      const uint64_t ko = cache.k_offset + head_off, vo = cache.v_offset + head_off;
      const uint32_t vec4 = D % 8 == 0 && ko % 16 == 0 && vo % 16 == 0 ? 1u : 0u;
      const VkFormat fmt = vec4 ? VK_FORMAT_R32G32B32A32_UINT : VK_FORMAT_R32_UINT;
      const vk::BufferWindow kt = cache.k->texel_window(ko, nh * cache.head_bytes(), fmt, vec4 ? 16 : 4);
      const vk::BufferWindow vt = cache.v->texel_window(vo, nh * cache.head_bytes(), fmt, vec4 ? 16 : 4);
      push.k_off = skip_elems(kt, 4);
      push.v_off = skip_elems(vt, 4);
      if (per_row) {  // one invocation per row of every head bound
        const uint64_t n = uint64_t(nh) * n_rows;
        if (groups(n, kRowWg) > kMaxGroups) throw vk::Error(what + ": too many tokens for one dispatch; split the batch");
        k.dispatch(cb, "attention_row", {qw, kt, vt, ow, pw.window}, push, {kRowWg, 0, D, pw.from_buffer, vec4},
                   groups(n, kRowWg));
      } else {  // a subgroup of positions per tile of lanes_rows rows of one kv head
        const uint32_t lr = lanes_rows(D);
        if (groups(n_rows, lr) > kMaxGroups) throw vk::Error(what + ": too many tokens for one dispatch; split the batch");
        k.dispatch(cb, "attention_lanes", {qw, kt, vt, ow, pw.window}, push, {lanes_wg, lr, D, pw.from_buffer, vec4},
                   groups(n_rows, lr), nh);
      }
      continue;
    }
    k.dispatch(cb, "attention", {qw, kc, vc, ow, pw.window}, push, {kAttnWg, rows, D, pw.from_buffer}, gx, nh);
  }
}

}  // namespace chorus::ops
