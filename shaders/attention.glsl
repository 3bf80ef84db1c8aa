// shaders/attention.glsl — push constants and helpers of the attention family: kv_store,
// attention (engine/ops/attention.h), argmax and top_k (engine/ops/select.h).
//
// Each struct is mirrored field for field by a C++ struct in engine/ops/attention.h or
// engine/ops/select.h with a static_assert on its size; all fields are 4-byte scalars, so
// std430 and C++ agree. Offsets named *_off are in elements of the binding's declared type
// (floats for f32 tensors, uint words for the f16 KV cache and (index, value) pairs) and
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

// attention: out[i][hq] = softmax_j(scale * q[i][hq] . K[g][j]) V[g][j] over j <= p0 + i,
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
};

// argmax / top_k: one pass reduces groups of `chunk` inputs to their best `k` entries,
// written as (index, value bits) word pairs at out_off + 2 * (group * k + rank).
struct SelectPush {
  uint n;           // inputs
  uint in_off;      // floats (pairs == 0) or words (pairs == 1)
  uint out_off;     // words
  uint pairs;       // 0: inputs are floats x[i] with index index_base + i; 1: (index, value) pairs
  uint index_base;
  uint k;
  uint chunk;       // inputs per workgroup
};

// Ordering of selection: a larger value wins, equal values go to the lower index, NaN loses to
// everything (and -0 == +0). ch_select_key maps a value to a uint whose order is that of the
// values: 0 for NaN, >= 0x007FFFFF otherwise. A sentinel (key 0, index 0xFFFFFFFF) loses to
// every real entry.
const uint CH_NO_INDEX = 0xFFFFFFFFu;
const uint CH_NAN_BITS = 0x7FC00000u;

uint ch_select_key(uint bits) {
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return 0u;  // NaN
  if ((bits & 0x7FFFFFFFu) == 0u) bits = 0u;          // -0 ties with +0
  return (bits & 0x80000000u) != 0u ? ~bits : (bits | 0x80000000u);
}

bool ch_select_better(uint ka, uint ia, uint kb, uint ib) { return ka > kb || (ka == kb && ia < ib); }

#ifdef CH_SELECT_REDUCE
// Workgroup reduction of one (key, index, value bits) entry per invocation to the best one,
// returned to every invocation. Call from uniform control flow, after
// `layout(local_size_x_id = 0) in;`, alternating `par` between 0 and 1 on successive calls
// (the shared arrays are double-buffered so consecutive calls need no barrier between them).
// Fallback: the entries go to shared memory, CH_SEL_SPAN-wide slices are scanned by a few
// invocations, and every invocation scans their results. Subgroup: subgroupMax/Min find each
// subgroup's best, every invocation scans the subgroups' results.
#if CHORUS_SUBGROUP
shared uint sel_k2[2u * gl_WorkGroupSize.x];
shared uint sel_i2[2u * gl_WorkGroupSize.x];
shared uint sel_v2[2u * gl_WorkGroupSize.x];

void ch_select_reduce(inout uint key, inout uint idx, inout uint val, uint par) {
  const uint kmax = subgroupMax(key);
  const uint imin = subgroupMin(key == kmax ? idx : CH_NO_INDEX);
  const uint vb = subgroupMax(key == kmax && idx == imin ? val : 0u);
  const uint base = par * gl_WorkGroupSize.x;
  if (subgroupElect()) {
    sel_k2[base + gl_SubgroupID] = kmax;
    sel_i2[base + gl_SubgroupID] = imin;
    sel_v2[base + gl_SubgroupID] = vb;
  }
  barrier();  // every subgroup's best visible
  key = 0u;
  idx = CH_NO_INDEX;
  val = CH_NAN_BITS;
  for (uint s = 0u; s < gl_NumSubgroups; ++s) {
    if (ch_select_better(sel_k2[base + s], sel_i2[base + s], key, idx)) {
      key = sel_k2[base + s];
      idx = sel_i2[base + s];
      val = sel_v2[base + s];
    }
  }
}
#else
const uint CH_SEL_SPAN = 16u;
const uint CH_SEL_SCANNERS = (gl_WorkGroupSize.x + CH_SEL_SPAN - 1u) / CH_SEL_SPAN;
shared uint sel_k1[2u * gl_WorkGroupSize.x];
shared uint sel_i1[2u * gl_WorkGroupSize.x];
shared uint sel_v1[2u * gl_WorkGroupSize.x];
shared uint sel_k2[2u * CH_SEL_SCANNERS];
shared uint sel_i2[2u * CH_SEL_SCANNERS];
shared uint sel_v2[2u * CH_SEL_SCANNERS];

void ch_select_reduce(inout uint key, inout uint idx, inout uint val, uint par) {
  const uint t = gl_LocalInvocationID.x;
  const uint wg = gl_WorkGroupSize.x;
  const uint b1 = par * wg;
  const uint b2 = par * CH_SEL_SCANNERS;
  sel_k1[b1 + t] = key;
  sel_i1[b1 + t] = idx;
  sel_v1[b1 + t] = val;
  barrier();  // every invocation's entry visible to the scanners
  if (t < CH_SEL_SCANNERS) {
    uint k = 0u, i = CH_NO_INDEX, v = CH_NAN_BITS;
    for (uint s = t * CH_SEL_SPAN; s < min(wg, (t + 1u) * CH_SEL_SPAN); ++s) {
      if (ch_select_better(sel_k1[b1 + s], sel_i1[b1 + s], k, i)) {
        k = sel_k1[b1 + s];
        i = sel_i1[b1 + s];
        v = sel_v1[b1 + s];
      }
    }
    sel_k2[b2 + t] = k;
    sel_i2[b2 + t] = i;
    sel_v2[b2 + t] = v;
  }
  barrier();  // the scanners' results visible to all
  key = 0u;
  idx = CH_NO_INDEX;
  val = CH_NAN_BITS;
  for (uint s = 0u; s < CH_SEL_SCANNERS; ++s) {
    if (ch_select_better(sel_k2[b2 + s], sel_i2[b2 + s], key, idx)) {
      key = sel_k2[b2 + s];
      idx = sel_i2[b2 + s];
      val = sel_v2[b2 + s];
    }
  }
}
#endif
#endif  // CH_SELECT_REDUCE
