// shaders/attention.glsl — push constants and helpers of the attention family: kv_store and
// attention (engine/ops/attention.h).
//
// Each struct is mirrored field for field by a C++ struct in engine/ops/attention.h with a
// static_assert on its size; all fields are 4-byte scalars, so
// std430 and C++ agree. Offsets named *_off are in elements of the binding's declared type
// (floats for f32 tensors, uint words for the f16 KV cache) and
// already include the binding's alignment skip. Include after common.glsl.
//
// Query position p0: kv_store and attention take it either from the push constants (p0) or,
// when their specialisation constant P0_FROM_BUFFER is 1, from the uint at word p0_off of
// binding 4, read on the device, so a command buffer recorded once replays for every decode
// step. Binding 4 is declared in both modes (the push-constant mode binds a read-only input
// there again and never reads it). A p0 from the buffer is clamped: positions at or past n_ctx
// are never written or read.
//
// KV cache (one layer, K and V alike): f16 [n_kv_heads][n_ctx][head_dim], read and written as
// uint words holding two halves (head_dim is even), so head h, position p, word w sits at
// word off + (h * n_ctx + p) * head_dim / 2 + w.

// kv_store: K and V rows of n_tokens tokens (f32 [token][head][head_dim], rows src_stride
// floats apart) into the cache at positions p0.. of kv heads [head0, head0 + n_heads).
// Bindings: 0 K source, 1 V source, 2 K cache, 3 V cache, 4 p0 word.
struct KvStorePush {
  uint n_tokens;
  uint n_heads;     // kv heads bound in this dispatch
  uint head0;       // first of them, as a head index of the source rows
  uint head_dim;
  uint n_ctx;
  uint p0;          // P0_FROM_BUFFER == 0: first position written
  uint src_stride;  // floats between tokens in the K and V sources
  uint k_src_off, v_src_off;  // floats
  uint k_off, v_off;          // words: where head `head0` starts in the cache bindings
  uint p0_off;      // P0_FROM_BUFFER == 1: words to the p0 value in binding 4
};

// attention: out[i][hq] = softmax_j(scale * q[i][hq] . K[g][j]) V[g][j] over j <= p0 + i
// (and, with a window, j > p0 + i - window),
// with g = hq / ratio. Workgroup (x, y): row tile x of the rows (token, q head of the group)
// of kv head head0 + y. head_dim is specialisation constant 2. Bindings: 0 q, 1 K cache,
// 2 V cache, 3 out, 4 p0 word.
struct AttentionPush {
  uint n_tokens;
  uint ratio;       // q heads per kv head
  uint head0;       // first kv head bound in this dispatch (selects the q heads)
  uint n_ctx;
  uint p0;          // P0_FROM_BUFFER == 0: position of query 0
  float scale;
  uint q_stride;    // floats between tokens in q
  uint o_stride;    // floats between tokens in out
  uint q_off, o_off;  // floats
  uint k_off, v_off;  // words: where head `head0` starts in the cache bindings
  uint p0_off;        // P0_FROM_BUFFER == 1: words to the p0 value in binding 4
  uint window;        // 0: every position <= the query's; else only the last `window` of them
  uint n_heads;       // kv heads bound in this dispatch (attention_row)
};

// rope_store: RoPE of Q in place, and of K into the cache, V into the cache, for n_tokens
// tokens at positions pos[pos_off + t] (the decode step's fused path between the Q/K/V products
// and attention). Binding 0 holds Q [t][n_q_heads][head_dim] at q_off and K, V
// [t][kv heads][head_dim] at k_off, v_off (floats; token strides q_stride, kv_stride); this
// dispatch stores kv heads [head0, head0 + n_heads) at words k_off / v_off of bindings 2 and 3.
// Bindings: 0 Q|K|V, 1 positions, 2 K cache, 3 V cache.
struct RopeStorePush {
  uint q_off, k_off, v_off;   // floats in binding 0
  uint q_stride, kv_stride;   // floats between tokens
  uint pos_off;               // ints in binding 1
  uint n_tokens, n_q_heads;   // Q heads rotated by this dispatch (0: none)
  uint n_heads, head0;        // kv heads stored by this dispatch, the first as a source head index
  uint head_dim, n_dims, neox;
  uint n_ctx;
  uint kc_off, vc_off;        // words: where head `head0` starts in the cache bindings
  float freq_base, freq_scale;
  uint bq_off, bk_off, bv_off;  // (rope_store_bias) floats: Q's, K's and V's bias in bindings 4-6
};
