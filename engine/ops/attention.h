// engine/ops/attention.h — the KV cache layout, storing K/V rows into it, and causal
// grouped-query attention over it.
//
// Owns: the KV-cache layout every model relies on, recording kv_store and attention
// dispatches (shaders/kv_store.comp, shaders/attention.comp), binding caches larger than
// maxStorageBufferRange in windows of whole KV heads, and the push-constant structs mirrored
// from shaders/attention.glsl.
//
// KV cache layout (one layer; K and V are two separate tensors of the same shape):
//   f16 [n_kv_heads][n_ctx][head_dim] — head-major, then position, then dimension, no padding.
//   Element (head h, position p, dim d) sits at byte 2 * ((h * n_ctx + p) * head_dim + d).
// A device that holds KV heads [h0, h1) of a layer holds them as their own cache with
// n_kv_heads = h1 - h0 (a contiguous slice of the full layout); its q heads are
// [h0 * ratio, h1 * ratio) and are passed to attention as that device's whole Q.
// head_dim must be even; cache offsets must be multiples of 4 bytes.
//
// Query position p0 on the device: kv_store and attention take p0 either as a host value
// (recorded into the push constants; prefill) or as a uint32 the kernels read from a buffer
// when they run (KvStoreOptions / AttentionShape p0_buffer). In that mode nothing recorded
// depends on p0 — dispatch sizes, bindings (every window covers whole KV heads of n_ctx
// positions), pipelines — so one command buffer replays for every decode step after the
// buffer is rewritten. ops::rope's positions buffer can serve: the p0 of a decode token is
// its position, at the same offset. The kernels clamp a device p0: positions at or past n_ctx
// are neither written nor read.
#pragma once

#include <cstdint>

#include "engine/ops/kernels.h"
#include "vkdevice/commands.h"
#include "vkdevice/memory.h"

namespace chorus::ops {

// Mirrors `KvStorePush` in shaders/attention.glsl.
struct KvStorePush {
  uint32_t n_tokens;
  uint32_t n_heads;     // kv heads bound in this dispatch
  uint32_t head0;       // first of them, as a head index of the source rows
  uint32_t head_dim;
  uint32_t n_ctx;
  uint32_t p0;
  uint32_t src_stride;  // floats between tokens in the K and V sources
  uint32_t k_src_off, v_src_off;  // floats
  uint32_t k_off, v_off;          // words to head `head0` in the cache bindings (two halves each)
  uint32_t p0_off;                // words to the p0 value in its binding (p0 from a buffer)
};
static_assert(sizeof(KvStorePush) == 48, "KvStorePush must match shaders/attention.glsl");

// Mirrors `RopeStorePush` in shaders/attention.glsl.
struct RopeStorePush {
  uint32_t q_off, k_off, v_off;
  uint32_t q_stride, kv_stride;
  uint32_t pos_off;
  uint32_t n_tokens, n_q_heads;
  uint32_t n_heads, head0;
  uint32_t head_dim, n_dims, neox;
  uint32_t n_ctx;
  uint32_t kc_off, vc_off;
  float freq_base, freq_scale;
  uint32_t bq_off = 0, bk_off = 0, bv_off = 0;
};
static_assert(sizeof(RopeStorePush) == 84, "RopeStorePush must match shaders/attention.glsl");

// Mirrors `AttentionPush` in shaders/attention.glsl.
struct AttentionPush {
  uint32_t n_tokens;
  uint32_t ratio;       // q heads per kv head
  uint32_t head0;       // first kv head bound in this dispatch
  uint32_t n_ctx;
  uint32_t p0;
  float scale;
  uint32_t q_stride;    // floats between tokens in q
  uint32_t o_stride;    // floats between tokens in out
  uint32_t q_off, o_off;  // floats
  uint32_t k_off, v_off;  // words to head `head0` in the cache bindings
  uint32_t p0_off;        // words to the p0 value in its binding (p0 from a buffer)
  uint32_t window;        // 0: causal over the whole cache; else query p reads positions > p - window
  uint32_t n_heads;     // kv heads bound in this dispatch
};
static_assert(sizeof(AttentionPush) == 60, "AttentionPush must match shaders/attention.glsl");

// One layer's cache on one device: shape, and where its K and V tensors live.
struct KvCache {
  uint32_t n_kv_heads = 0;
  uint32_t n_ctx = 0;     // positions
  uint32_t head_dim = 0;
  const vk::Buffer* k = nullptr;  // f16 [n_kv_heads][n_ctx][head_dim] at byte k_offset
  uint64_t k_offset = 0;
  const vk::Buffer* v = nullptr;  // same shape at byte v_offset
  uint64_t v_offset = 0;

  uint64_t head_bytes() const { return uint64_t(n_ctx) * head_dim * 2; }
  uint64_t bytes() const { return head_bytes() * n_kv_heads; }  // of K, and of V
};

struct KvStoreOptions {
  uint32_t src_stride = 0;  // floats between tokens in the K and V sources; 0: n_kv_heads * head_dim
  uint64_t max_window = 0;  // largest cache binding in bytes; 0: the device's maxStorageBufferRange
  // When set, the first position is the uint32 at byte p0_offset (a multiple of 4) of
  // *p0_buffer, read when the dispatch runs, and kv_store's p0 argument is ignored.
  const vk::Buffer* p0_buffer = nullptr;
  uint64_t p0_offset = 0;
};

// Records cache[h][p0 + i][d] = f16(src[i][h][d]) for i < n_tokens, for K and V, the sources
// being f32 [n_tokens][n_kv_heads][head_dim] at byte k_src_offset of k_src and v_src_offset
// of v_src (multiples of 4). Rounds to nearest (the driver's packHalf2x16). Needs
// p0 + n_tokens <= n_ctx (checked here for a host p0; with options.p0_buffer, n_tokens <=
// n_ctx is checked and rows whose position would reach n_ctx are dropped on the device).
// Records no barrier: the caller orders it against the producer of K/V (and of the p0 word)
// and against attention. Throws vk::Error for bad shapes or offsets.
void kv_store(Kernels& k, vk::CommandBuffer& cb, const KvCache& cache, const vk::Buffer& k_src,
              uint64_t k_src_offset, const vk::Buffer& v_src, uint64_t v_src_offset, uint32_t n_tokens, uint32_t p0,
              const KvStoreOptions& options = {});

// Whether every head of the cache's K and of its V fits one storage binding (else kernels
// that store into it take several dispatches); false for a cache check_cache would refuse.
bool kv_cache_fits_one_binding(const KvCache& cache);

// rope_store: the step between the Q/K/V products and attention in one dispatch.
struct RopeStoreShape {
  uint32_t n_tokens = 1;
  uint32_t n_q_heads = 0;   // Q heads of each token (their rows: n_q_heads * head_dim floats)
  uint32_t n_dims = 0;      // rotated dimensions, even, <= head_dim (0: head_dim)
  bool neox = false;        // as RopeShape
  float freq_base = 10000.0f;
  float freq_scale = 1.0f;
  // Biases added to Q, K and V first (qwen2), each F32 at a byte offset (a multiple of 4): Q's
  // n_q_heads * head_dim, K's and V's cache.n_kv_heads * head_dim; all three or none. The bits
  // are those of adding them (ops::add) before rope_store; Q in qkv gets Q + bias rotated, K
  // and V in qkv stay as they were.
  const vk::Buffer* q_bias = nullptr;
  const vk::Buffer* k_bias = nullptr;
  const vk::Buffer* v_bias = nullptr;
  uint64_t q_bias_offset = 0, k_bias_offset = 0, v_bias_offset = 0;
};
// Records, for t < n_tokens at position pos = positions[t] (int32 at byte positions_offset):
//   Q[t] rotated in place (ops::rope's rotation) — q at byte q_offset of qkv, [t][n_q_heads][head_dim];
//   cache K[h][pos] = f16(rope(K[t][h])), V[h][pos] = f16(V[t][h]) for the cache's heads — K and
//   V at bytes k_offset and v_offset of qkv, [t][cache.n_kv_heads][head_dim].
// Positions outside [0, n_ctx) store nothing. One dispatch (more only when the cache needs
// several bindings). Records no barrier. Throws vk::Error for bad shapes or offsets.
void rope_store(Kernels& k, vk::CommandBuffer& cb, const KvCache& cache, const vk::Buffer& qkv, uint64_t q_offset,
                uint64_t k_offset, uint64_t v_offset, const vk::Buffer& positions, uint64_t positions_offset,
                const RopeStoreShape& shape);

struct AttentionShape {
  uint32_t n_tokens = 1;   // queries; query i sits at position p0 + i
  uint32_t n_q_heads = 0;  // a multiple of the cache's n_kv_heads; q head h uses kv head h / ratio
  uint32_t p0 = 0;         // query 0's position; the cache holds positions 0 .. p0 + n_tokens - 1
  float scale = 0;         // score scale, usually 1 / sqrt(head_dim)
  // Sliding-window attention (Mistral, Gemma 3's local layers): when non-zero, the query at
  // position p attends to positions max(0, p - window + 1) .. p only, and the kernel reads no
  // K/V row before that.
  uint32_t window = 0;
  // When set, p0 is the uint32 at byte p0_offset (a multiple of 4) of *p0_buffer, read when
  // the dispatch runs, and the field p0 is ignored.
  const vk::Buffer* p0_buffer = nullptr;
  uint64_t p0_offset = 0;
};

struct AttentionOptions {
  uint32_t q_stride = 0;    // floats between tokens in q; 0: n_q_heads * head_dim
  uint32_t o_stride = 0;    // floats between tokens in out; 0: n_q_heads * head_dim
  uint32_t rows_per_group = 0;  // rows (token, q head) per workgroup, 1..16; 0: chosen from the shape
  uint64_t max_window = 0;  // largest cache binding in bytes; 0: the device's maxStorageBufferRange
  // The kernel: 1 attention_row (one invocation per row, no shared memory: CPU devices), 0
  // the tiled attention kernel, -1 chosen: attention_row on CPU devices for one token (decode).
  int per_row = -1;
  // 1 attention_lanes (a workgroup's lanes take cache positions, R rows each: CPU devices), 0
  // not, -1 chosen: on CPU devices for a prefill of at least 4096 (token, position) pairs,
  // n_tokens x (p0 + n_tokens) (a 64-token prompt from an empty cache).
  // per_row 1 wins over a chosen lanes; both 1 is an error.
  int lanes = -1;
};

// Records out[i][h] = sum_{j0(i) <= j <= p0+i} softmax_j(scale * q[i][h] . K[g][j]) V[g][j],
// g = h / ratio, j0(i) = 0 or, with shape.window, max(0, p0 + i - window + 1),
// for q and out f32 [n_tokens][n_q_heads][head_dim] at byte offsets q_offset / out_offset
// (multiples of 4). The cache must already hold positions 0 .. p0 + n_tokens - 1 (kv_store
// before, with a barrier). f32 accumulation, online softmax; one dispatch (per window of KV
// heads when a cache tensor exceeds the binding limit). head_dim: even, at most 256.
// With shape.p0_buffer, p0 + n_tokens <= n_ctx is the caller's promise (n_tokens <= n_ctx is
// checked; the kernel clamps each query's last position to n_ctx - 1). Records no barrier. Throws vk::Error for bad shapes or offsets.
void attention(Kernels& k, vk::CommandBuffer& cb, const KvCache& cache, const AttentionShape& shape,
               const vk::Buffer& q, uint64_t q_offset, const vk::Buffer& out, uint64_t out_offset,
               const AttentionOptions& options = {});

}  // namespace chorus::ops
