// engine/forward.cpp — the forward pass, and the context it runs in (KV cache, scratch,
// micro-batches, decode replay).
//
// The forward pass reads like the paper (and like tests/reference_model.cpp): embedding; per
// layer x += reduce(attention(norm(x))), x += reduce(ffn(norm(x))); final norm; LM head. Every
// device records it on its own shard; the split lives in split::Executor, called at the cut
// points (reduce, receive, send), and in the shard's ranges: nothing here asks the split mode.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "engine/model.h"
#include "engine/ops/attention.h"
#include "engine/ops/matmul.h"
#include "engine/ops/matvec.h"
#include "engine/ops/moe.h"
#include "engine/ops/ops.h"
#include "engine/weights.h"
#include "split/executor.h"
#include "vkdevice/env.h"

namespace chorus {
namespace {

using L = LayerTensor;

// One micro-batch's view of a segment: `n` tokens of sequence `seq` starting at position p0,
// at rows [row, row + n) of the batch.
struct Piece {
  uint32_t seq, p0, n, row;
  uint32_t out_rows;  // logits rows wanted: n (all logits), 1 (the segment's last token) or 0
};

// A mixture of experts' buffers for T tokens of k slots each (moe_ffn; split/memory.cpp counts them).
struct MoeScratch {
  vk::Buffer logits;   // [T][n_expert] router output
  vk::Buffer ids;      // [T][k] u32 the chosen experts (slot t k + j), written on the device
  vk::Buffer weights;  // [T][k] their routing weights
  vk::Buffer groups;   // [n_expert] u32 counts, then [n_expert][T] u32 each expert's slots
  vk::Buffer gate;     // [T k][n_ff] this device's FFN rows of each slot's expert
  vk::Buffer up;       // [T k][n_ff]
  vk::Buffer down;     // [T k][n_embd] each slot's partial down projection
};

// What one device keeps for a context: its KV cache and scratch for n_ubatch tokens.
struct DeviceState {
  size_t index = 0;  // among the executor's devices
  Shard* shard = nullptr;
  vk::Device* dev = nullptr;
  ops::Kernels* k = nullptr;
  split::Executor* exec = nullptr;
  uint32_t n_q = 0, n_kv = 0, n_ff = 0, n_vocab = 0;  // local widths: its Q, KV, FFN and vocab rows
  uint32_t n_kv_heads = 0;
  uint64_t cache_bytes_per_seq = 0;
  std::vector<vk::Buffer> k_cache, v_cache;  // per layer (its layers): n_seq x [kv heads][n_ctx][head_dim] f16

  vk::Buffer ids;   // [T] u32 token ids, host-visible
  vk::Buffer pos;   // [T] i32 positions, host-visible
  vk::Buffer x;     // [T][n_embd] residual stream (every device keeps the whole of it)
  vk::Buffer h;     // [T][n_embd] normed input (one token: x * g for the norm xg_norm, see below)
  vk::Buffer qkv;   // Q [T][n_q], then K [T][n_kv], then V [T][n_kv] (for one token: one row [Q|K|V])
  vk::Buffer att;   // [T][n_q]
  vk::Buffer gu;    // gate [T][n_ff], then up [T][n_ff]; the activation overwrites gate
  vk::Buffer sel;   // [T][n_embd] rows whose logits are wanted
  MoeScratch moe;   // a mixture of experts' buffers (c.n_expert > 0)
  vk::Buffer embd_scale;  // [1] the embedding's scale (when it is not 1)
  // While recording one token: h holds x * g of this norm's weight, written by the product
  // that last updated x (MatVecFusion::next_norm), so the next product normed by it fetches
  // one vector (raw_x); null when h holds anything else.
  const DeviceTensor* xg_norm = nullptr;
  // A reduced sum of `pending_rows` rows not yet added into x: the next norm of x adds it in
  // the same dispatch (add_rms_norm); whatever else reads x first adds it alone (settle).
  split::Slice pending{};
  uint32_t pending_rows = 0;
  vk::Buffer logits;    // [rows][n_vocab local], grown on demand
  vk::Buffer readback;  // host-visible copy of logits
  uint32_t logits_rows = 0;
  vk::Buffer hidden;    // [T][n_embd] host-visible copy of the final-norm output (Context::embed)

  vk::CommandBuffer& cb() const { return exec->cb(index); }  // changes at reduce points

  // Byte offsets of K and V in qkv, and of up in gu, for a step of T tokens.
  uint64_t k_at(uint32_t T) const { return uint64_t(T) * n_q * 4; }
  uint64_t v_at(uint32_t T) const { return uint64_t(T) * (n_q + n_kv) * 4; }
  uint64_t up_at(uint32_t T) const { return uint64_t(T) * n_ff * 4; }
};

// Where a block (attention or FFN) puts its output, and what then remains to do.
struct BlockOutput {
  split::Slice out;      // the device's partial of the reduce point, or the residual x itself
  bool add;              // out is x: the block adds its output into it (the reduce is local)
  split::Slice scratch;  // (add, starts_as_x) room for the output when it cannot be added in the product
  const DeviceTensor* next_norm = nullptr;  // (add) the norm the next product applies to x
  bool starts_as_x = false;  // out is the partial of the device that carries the residual
                             // (Impl::carries_residual): x copied into it, the block's output added
};

// The forward pass recorded for one token of one sequence, replayable while this holds.
struct Recorded {
  bool valid = false;
  uint32_t seq = 0;
  uint32_t out_rows = 0;
};

// CHORUS_FAULT_STALL=DEVICE:POINT (see ContextOptions::stall), two strict decimal numbers.
std::optional<std::pair<uint32_t, uint32_t>> stall_from_environment() {
  const char* e = std::getenv("CHORUS_FAULT_STALL");
  if (!e) return std::nullopt;
  const std::string_view s(e);
  const size_t colon = s.find(':');
  const auto device = vk::parse_decimal(s.substr(0, colon), 0, UINT32_MAX);
  const auto point = colon == std::string_view::npos ? std::nullopt : vk::parse_decimal(s.substr(colon + 1), 0, UINT32_MAX);
  if (!device || !point)
    throw std::invalid_argument(std::string("CHORUS_FAULT_STALL is '") + e +
                                "'; expected DEVICE:POINT, two integers from 0 to 4294967295, e.g. 1:3 (the second "
                                "device stops before reduce point 3)");
  return std::pair<uint32_t, uint32_t>{static_cast<uint32_t>(*device), static_cast<uint32_t>(*point)};
}

}  // namespace

struct Context::Impl {
  Model& model;
  const ModelConfig& c;
  const split::Plan& plan;
  uint32_t n_ctx, n_seq, n_ubatch;
  std::vector<uint32_t> lengths;  // tokens held per sequence
  ContextCounters counters;
  std::vector<DeviceState> devs;  // one per device that holds anything
  // Declared after devs: destroyed first, it waits for the devices before their buffers go.
  std::unique_ptr<split::Executor> exec;
  Recorded recorded;
  // Context::embed: the sum over tokens of the final-norm hidden state, read back from the
  // first device that runs the head (every such device holds the same rows).
  std::vector<double>* hidden_sum = nullptr;  // [n_embd] while embed() runs

  Impl(Model& m, const ContextOptions& o)
      : model(m), c(m.config()), plan(m.plan()),
        n_ctx(o.n_ctx ? o.n_ctx : std::min<uint32_t>(m.config().n_ctx_train, 4096)), n_seq(o.n_seq),
        n_ubatch(o.n_ubatch), lengths(o.n_seq, 0) {
    if (n_seq == 0 || n_ubatch == 0 || n_ctx == 0)
      throw std::invalid_argument("context: n_ctx, n_seq and n_ubatch must be positive (got " + std::to_string(n_ctx) +
                                  ", " + std::to_string(n_seq) + ", " + std::to_string(n_ubatch) + ")");
    std::vector<vk::Device*> members;
    for (Shard& s : m.impl().shards)
      if (!s.spec.empty()) {
        devs.push_back(make_state(s, members.size()));
        members.push_back(s.dev);
      }
    split::ExecutorOptions eo;
    eo.max_tokens = n_ubatch;
    eo.width = c.n_embd;
    eo.max_points = 2 * c.n_layer;
    eo.serialise = o.serialise;
    eo.stall = o.stall ? o.stall : stall_from_environment();
    exec = split::Executor::create(plan, members, eo);
    for (DeviceState& d : devs) d.exec = exec.get();
  }

  DeviceState make_state(Shard& s, size_t index) {
    const uint32_t T = n_ubatch;
    DeviceState d;
    d.index = index;
    d.shard = &s;
    d.dev = s.dev;
    d.k = s.kernels.get();
    d.n_q = static_cast<uint32_t>(s.spec.q_rows.size());
    d.n_kv = static_cast<uint32_t>(s.spec.kv_rows.size());
    d.n_ff = static_cast<uint32_t>(s.spec.ffn.size());
    d.n_vocab = static_cast<uint32_t>(s.spec.vocab.size());
    d.n_kv_heads = static_cast<uint32_t>(s.spec.kv_heads.size());
    vk::Device& dev = *s.dev;
    d.cache_bytes_per_seq = uint64_t(d.n_kv_heads) * n_ctx * c.head_dim * 2;
    d.k_cache.resize(c.n_layer);
    d.v_cache.resize(c.n_layer);
    if (d.cache_bytes_per_seq > 0)
      for (uint64_t l = s.spec.layers.begin; l < s.spec.layers.end; ++l) {
        d.k_cache[l] = dev.create_buffer(d.cache_bytes_per_seq * n_seq, vk::BufferKind::Device, kKvCache);
        d.v_cache[l] = dev.create_buffer(d.cache_bytes_per_seq * n_seq, vk::BufferKind::Device, kKvCache);
      }
    const auto f32 = [&](uint64_t n, vk::BufferKind kind = vk::BufferKind::Device) {
      return dev.create_buffer(std::max<uint64_t>(n, 1) * 4, kind, kScratch);
    };
    d.ids = f32(T, vk::BufferKind::Host);
    d.pos = f32(T, vk::BufferKind::Host);
    d.x = f32(uint64_t(T) * c.n_embd);
    d.h = f32(uint64_t(T) * c.n_embd);
    d.qkv = f32(uint64_t(T) * (d.n_q + 2 * d.n_kv));
    d.att = f32(uint64_t(T) * d.n_q);
    d.gu = f32(uint64_t(T) * 2 * d.n_ff);
    d.sel = f32(uint64_t(T) * c.n_embd);
    if (c.n_expert) d.moe = make_moe_scratch(dev, T, d.n_ff);
    if (c.embd_scale != 1.0f) {
      d.embd_scale = f32(1);
      dev.upload(d.embd_scale, std::span<const float>(&c.embd_scale, 1));
    }
    grow_logits(d, 1);
    return d;
  }

  MoeScratch make_moe_scratch(vk::Device& dev, uint64_t T, uint64_t n_ff) const {
    const auto f32 = [&](uint64_t n) { return dev.create_buffer(std::max<uint64_t>(n, 1) * 4, vk::BufferKind::Device, kScratch); };
    const uint64_t slots = T * c.n_expert_used;
    return MoeScratch{f32(T * c.n_expert), f32(slots), f32(slots), f32(uint64_t(c.n_expert) * (T + 1)),
                      f32(slots * n_ff), f32(slots * n_ff), f32(slots * c.n_embd)};
  }

  void grow_logits(DeviceState& d, uint32_t rows) {
    if (rows <= d.logits_rows || d.n_vocab == 0) return;
    d.logits = d.dev->create_buffer(uint64_t(rows) * d.n_vocab * 4, vk::BufferKind::Device, kScratch);
    d.readback = d.dev->create_buffer(uint64_t(rows) * d.n_vocab * 4, vk::BufferKind::Host, kScratch);
    d.logits_rows = rows;
    recorded.valid = false;  // a recording names the old buffers
  }

  ops::KvCache cache(const DeviceState& d, uint32_t layer, uint32_t seq) const {
    return ops::KvCache{d.n_kv_heads, n_ctx, c.head_dim, &d.k_cache[layer], d.cache_bytes_per_seq * seq,
                        &d.v_cache[layer], d.cache_bytes_per_seq * seq};
  }

  // ---- the forward pass ----------------------------------------------------------------------

  // One step (a micro-batch, or a decode token) on every device, then run.
  uint32_t forward(const std::vector<Piece>& pieces, uint32_t T) {
    uint32_t n_out = 0;
    for (const Piece& p : pieces) n_out += p.out_rows;
    for (DeviceState& d : devs) grow_logits(d, n_out);
    // One token of one sequence: the recording does not depend on its position (which the
    // kernels read from d.pos), so it is recorded once and replayed.
    const bool replay = pieces.size() == 1 && T == 1;
    if (!(replay && recorded.valid && recorded.seq == pieces[0].seq && recorded.out_rows == pieces[0].out_rows)) {
      exec->begin(T);
      for (DeviceState& d : devs) record(d, pieces, T, n_out, replay);
      exec->end();
      recorded = Recorded{replay, pieces[0].seq, pieces[0].out_rows};
      ++counters.recordings;
    }
    exec->run();
    counters.host_waits = exec->host_waits();
    ++counters.forward_passes;
    counters.tokens += T;
    return n_out;
  }

  // The forward pass on device d's shard.
  void record(DeviceState& d, const std::vector<Piece>& pieces, uint32_t T, uint32_t n_out, bool replay) {
    const split::DeviceShard& sp = d.shard->spec;
    if (sp.embedding)
      embed(d, T);
    else
      exec->receive(d.index, d.x);
    d.xg_norm = nullptr;
    d.pending = {};
    for (uint32_t l = static_cast<uint32_t>(sp.layers.begin); l < sp.layers.end; ++l) {
      const uint32_t k = 2 * l;
      const Layer& W = d.shard->layers[l];
      // The norm the product after each block applies to x (the next block's, or the head's).
      const bool dense_ffn = d.n_ff && !c.n_expert;
      const DeviceTensor* after_ffn = l + 1 < sp.layers.end ? (d.n_q ? &d.shard->layers[l + 1][L::attn_norm] : nullptr)
                                      : d.n_vocab          ? &d.shard->output_norm
                                                           : nullptr;
      if (d.n_q) {
        BlockOutput o = block_output(d, k, T, false);
        o.next_norm = dense_ffn ? &W[L::ffn_norm] : (d.n_ff ? nullptr : after_ffn);
        attention(d, l, pieces, T, o, replay);
      }
      join(d, k, d.n_q > 0, W[L::post_attention_norm], T, false);
      if (d.n_ff && c.n_expert) {
        moe_ffn(d, l, T, block_output(d, k + 1, T, true));
      } else if (d.n_ff) {
        BlockOutput o = block_output(d, k + 1, T, false);
        o.next_norm = after_ffn;
        ffn(d, l, T, o);
      }
      join(d, k + 1, d.n_ff > 0, W[L::post_ffw_norm], T, c.n_expert > 0);
    }
    head(d, pieces, T, n_out);
    settle(d);
    exec->send(d.index, d.x);  // the hidden state on to the next device of a pipeline
  }

  void embed(DeviceState& d, uint32_t T) {
    ops::GetRowsShape gr;
    gr.type = d.shard->tok_embd.type;
    gr.n = c.n_embd;
    gr.n_rows = c.n_vocab;
    gr.n_ids = T;
    ops::get_rows(*d.k, d.cb(), d.shard->tok_embd.buf(), d.shard->tok_embd.offset, d.ids, 0, d.x, 0, gr);
    d.cb().barrier();  // x is read by the first norm (or the scale)
    if (c.embd_scale != 1.0f) {  // gemma: x *= sqrt(n_embd)
      ops::mul(*d.k, d.cb(), d.x, 0, d.embd_scale, 0, d.x, 0, T * c.n_embd, 1);
      d.cb().barrier();  // scaled x is read by the first norm
    }
  }

  // Whether device d's blocks add their output into the residual themselves: the reduce is
  // local (one device, a layer split) and no post-norm comes between.
  bool adds_in_place(const DeviceState& d) const { return exec->sums_locally(d.index) && !c.post_norms; }

  // Whether a reduce through the collective carries the residual (one token, no post-norm, a
  // dense block): the first device of the collective starts its partial as x and adds its
  // block's output into it, so the sum is the new x, which every device copies back (a copy
  // instead of an add dispatch after each reduce). Prefill keeps x += sum.
  bool carries_residual(const DeviceState& d, uint32_t T, bool moe) const {
    return T == 1 && !c.post_norms && !moe && !exec->sums_locally(d.index);
  }

  // Where block k's output goes: straight into the residual, else the reduce point's partial
  // (which starts as x on the device that carries the residual).
  BlockOutput block_output(DeviceState& d, uint32_t k, uint32_t T, bool moe) {
    const split::Slice partial = exec->partial(d.index, k);
    if (adds_in_place(d)) return BlockOutput{split::Slice{&d.x, 0}, true, partial};
    BlockOutput o{partial, false, {}};
    if (carries_residual(d, T, moe) && exec->holds_residual(d.index)) {
      settle(d);
      // x into the partial now: the block's own barriers (after Q/K/V and attention, after
      // the activation) order this copy before the output product adds into it.
      copy_x(d, split::Slice{&d.x, 0}, partial, T);
      o.starts_as_x = true;
      o.scratch = split::Slice{&d.h, 0};  // h is free once the block's input is read
    }
    return o;
  }

  // Records a copy of T hidden-state rows (x, a partial, a sum) from `from` to `to`.
  void copy_x(DeviceState& d, split::Slice from, split::Slice to, uint32_t T) const {
    d.cb().copy(*from.buffer, from.offset, *to.buffer, to.offset, uint64_t(T) * c.n_embd * 4);
  }

  // Ends block k: the reduce point, then x += the (post-normed) sum unless the block added it,
  // or x = the sum when the reduce carries the residual (a device that ran no part of the
  // block but carries the residual gives x as its partial).
  void join(DeviceState& d, uint32_t k, bool wrote, const DeviceTensor& post_norm_weight, uint32_t T, bool moe) {
    settle(d);  // a sum still pending (a device that ran no part of this block) before the next reduce
    const bool carry = carries_residual(d, T, moe);
    if (carry && !wrote && exec->holds_residual(d.index)) {
      copy_x(d, split::Slice{&d.x, 0}, exec->partial(d.index, k), T);
      wrote = true;
    }
    const split::Slice sum = exec->reduce(d.index, k, wrote);  // orders x's update before the next reader
    if (carry) {
      d.xg_norm = nullptr;  // x changes
      copy_x(d, sum, split::Slice{&d.x, 0}, T);
      d.cb().barrier();  // the new x before the next norm reads it
    } else if (c.post_norms) {
      add_post_normed(d, post_norm_weight, sum, T);
    } else if (!adds_in_place(d)) {
      add_to_residual(d, sum, T);
    }
  }

  // x += RMSNorm(the reduced sum of a block) with its post-norm weight (gemma3), one dispatch:
  // every device norms the same sum, so the residuals stay identical.
  void add_post_normed(DeviceState& d, const DeviceTensor& weight, split::Slice sum, uint32_t T) {
    settle(d);
    d.xg_norm = nullptr;  // x changes
    ops::rms_norm_add(*d.k, d.cb(), *sum.buffer, sum.offset, &weight.buf(), weight.offset, d.x, 0,
                      ops::RmsNormShape{c.n_embd, T, c.rms_eps});
    d.cb().barrier();  // the new x before the next norm reads it
  }

  // x += the reduced sum: left pending for the next norm of x to add (one dispatch for both,
  // and one pass over x fewer).
  void add_to_residual(DeviceState& d, split::Slice sum, uint32_t T) {
    settle(d);
    d.xg_norm = nullptr;  // x changes
    d.pending = sum;
    d.pending_rows = T;
  }

  // Adds a pending sum into x now (for a reader of x other than a norm).
  void settle(DeviceState& d) {
    if (!d.pending.buffer) return;
    const uint32_t n = d.pending_rows * c.n_embd;
    ops::add(*d.k, d.cb(), d.x, 0, *d.pending.buffer, d.pending.offset, d.x, 0, n, n);
    d.cb().barrier();  // residual updated before the next reader
    d.pending = {};
  }

  // out[T][N] = in[T][K] * W^T: the matrix-vector kernel for one token, else the tiled one.
  static void linear(DeviceState& d, const DeviceTensor& w, uint64_t w_offset, uint32_t rows, const vk::Buffer& in,
                     uint32_t T, split::Slice out) {
    if (T == 1)
      ops::mul_mv(*d.k, d.cb(), w.type, w.buf(), w.offset + w_offset, w.cols, rows, in, 0, *out.buffer, out.offset);
    else
      ops::mul_mm(*d.k, d.cb(), w.type, w.buf(), w.offset + w_offset, w.cols, rows, in, 0, T, *out.buffer, out.offset);
  }
  static void linear(DeviceState& d, const DeviceTensor& w, const vk::Buffer& in, uint32_t T, split::Slice out) {
    linear(d, w, 0, w.rows, in, T, out);
  }

  // RMSNorm of x with a weight, into h; a pending sum is added into x first, in the same dispatch.
  void norm(DeviceState& d, const DeviceTensor& weight, uint32_t T) {
    d.xg_norm = nullptr;  // h gets the normed x
    const ops::RmsNormShape shape{c.n_embd, T, c.rms_eps};
    if (d.pending.buffer) {
      ops::add_rms_norm(*d.k, d.cb(), d.x, 0, *d.pending.buffer, d.pending.offset, &weight.buf(), weight.offset, d.h, 0,
                        shape);
      d.pending = {};
    } else {
      ops::rms_norm(*d.k, d.cb(), d.x, 0, &weight.buf(), weight.offset, d.h, 0, shape);
    }
    d.cb().barrier();  // h (and x) feed the projections
  }

  // A product with the work around it: out (+)= W . norm(x) (with norm_weight; else of `in`),
  // the output per `how`: stored, added into out (then `scratch` holds the product if the
  // kernel cannot add), or gated (W's rows: gate rows, then as many up rows; out gets the
  // activation and, when not fused, the up rows at out + up_offset). One dispatch where the
  // kernel fuses it (one token, W bound whole: ops::mul_mv_fuses), else the separate ops.
  // Records no barrier after.
  using Out = ops::MatVecFusion::Out;
  // A fused norm of x with `weight` into f (its other work already set) for a product of
  // `rows` rows of w, and the vector the product reads: h when it holds x * g for this weight
  // (the last product wrote it) and the kernel can take that form (raw_x), else x.
  const vk::Buffer& fused_norm(DeviceState& d, const DeviceTensor& weight, ops::MatVecFusion& f, const DeviceTensor& w,
                               uint32_t rows) {
    settle(d);  // the fused kernel reads x itself
    f.norm = &weight.buf();
    f.norm_offset = weight.offset;
    f.eps = c.rms_eps;
    if (d.xg_norm != &weight) return d.x;
    f.raw_x = &d.x;
    if (ops::mul_mv_fuses(*d.k, w.type, w.cols, rows, w.buf(), w.offset, d.h, 0, f)) return d.h;
    f.raw_x = nullptr;  // the kernel cannot: x and g as usual
    return d.x;
  }

  // With next_norm (how == add, one token): where the kernel can, the product also writes the
  // new x times next_norm's weight into h, for the next product (xg_norm).
  void product(DeviceState& d, const DeviceTensor* norm_weight, const vk::Buffer& in, const DeviceTensor& w,
               uint32_t rows, uint32_t T, split::Slice out, Out how, split::Slice scratch = {}, uint64_t up_offset = 0,
               const DeviceTensor* next_norm = nullptr) {
    ops::Kernels& k = *d.k;
    ops::MatVecFusion f;
    f.out = how;
    // (The fused kernels take one token; a batch norms into h below.)
    const vk::Buffer* x = norm_weight && T == 1 ? &fused_norm(d, *norm_weight, f, w, rows) : &in;
    d.xg_norm = nullptr;  // h is free once this product has read it
    if (T == 1 && next_norm && how == Out::add) {
      ops::MatVecFusion g = f;
      g.next_norm = &next_norm->buf();
      g.next_norm_offset = next_norm->offset;
      g.next_out = &d.h;
      if (ops::mul_mv_fuses(k, w.type, w.cols, rows, w.buf(), w.offset, *x, 0, g)) {
        ops::mul_mv(k, d.cb(), w.type, w.buf(), w.offset, w.cols, rows, *x, 0, *out.buffer, out.offset, g);
        d.xg_norm = next_norm;
        return;
      }
    }
    if (T == 1 && ops::mul_mv_fuses(k, w.type, w.cols, rows, w.buf(), w.offset, *x, 0, f)) {
      ops::mul_mv(k, d.cb(), w.type, w.buf(), w.offset, w.cols, rows, *x, 0, *out.buffer, out.offset, f);
      return;
    }
    if (norm_weight) norm(d, *norm_weight, T);
    const vk::Buffer& src = norm_weight ? d.h : in;
    switch (how) {
      case Out::store: linear(d, w, 0, rows, src, T, out); return;
      case Out::add:
        if (T > 1) {  // the tiled product adds into out itself (the same bits as scratch, then add)
          ops::MatmulOptions mo;
          mo.accumulate = true;
          ops::mul_mm(*d.k, d.cb(), w.type, w.buf(), w.offset, w.cols, rows, src, 0, T, *out.buffer, out.offset, mo);
          return;
        }
        linear(d, w, 0, rows, src, T, scratch);
        d.cb().barrier();  // the product is complete before it is added
        ops::add(*d.k, d.cb(), *out.buffer, out.offset, *scratch.buffer, scratch.offset, *out.buffer, out.offset,
                 T * rows, T * rows);
        return;
      case Out::swiglu:
      case Out::geglu: {
        if (T > 1) {  // the tiled product's epilogue makes the activation where the kernel can
          ops::MatmulOptions mo;
          mo.glu = how == Out::geglu ? ops::MatmulOptions::Glu::geglu : ops::MatmulOptions::Glu::swiglu;
          mo.glu_up_offset = uint64_t(rows) * (*device_row_bytes(w.type, w.cols));
          if (ops::mul_mm_glu_fuses(*d.k, w.type, w.cols, rows, w.buf(), w.offset, src, mo)) {
            ops::mul_mm(*d.k, d.cb(), w.type, w.buf(), w.offset, w.cols, rows, src, 0, T, *out.buffer, out.offset, mo);
            return;
          }
        }
        const split::Slice up{out.buffer, out.offset + up_offset};
        linear(d, w, 0, rows, src, T, out);
        linear(d, w, uint64_t(rows) * (*device_row_bytes(w.type, w.cols)), rows, src, T, up);
        d.cb().barrier();  // gate and up complete before the activation
        (how == Out::geglu ? ops::geglu : ops::swiglu)(*d.k, d.cb(), *out.buffer, out.offset, *up.buffer, up.offset,
                                                       *out.buffer, out.offset, ops::GluShape{rows, T});
        return;
      }
    }
  }

  // The block's output projection into `o` (see BlockOutput).
  void output_product(DeviceState& d, const DeviceTensor& w, const vk::Buffer& in, uint32_t T, const BlockOutput& o) {
    if (o.starts_as_x) {  // the partial holds x (block_output)
      product(d, nullptr, in, w, c.n_embd, T, o.out, Out::add, o.scratch);
      return;
    }
    product(d, nullptr, in, w, c.n_embd, T, o.out, o.add ? Out::add : Out::store, o.scratch, 0,
            o.add ? o.next_norm : nullptr);
  }

  // One token's Q, K and V in runs of matrices the loader put one after another (Q and K, say,
  // when V has another format): a product per run, each with the norm fused. Empty when a
  // run's kernel cannot fuse the norm (then one norm and a product per matrix).
  struct QkvRun {
    const DeviceTensor* w;
    uint32_t rows;
    uint64_t at;  // bytes into qkv
  };
  std::vector<QkvRun> qkv_runs(DeviceState& d, const Layer& W, uint32_t T) const {
    if (T != 1) return {};
    const DeviceTensor* m[3] = {&W[L::attn_q], &W[L::attn_k], &W[L::attn_v]};
    const uint32_t rows[3] = {d.n_q, d.n_kv, d.n_kv};
    const uint64_t at[3] = {0, d.k_at(1), d.v_at(1)};
    std::vector<QkvRun> runs;
    for (size_t i = 0; i < 3; ++i) {
      if (i > 0 && m[i - 1]->followed_by(*m[i]))
        runs.back().rows += rows[i];
      else
        runs.push_back({m[i], rows[i], at[i]});
    }
    const DeviceTensor& g = W[L::attn_norm];
    ops::MatVecFusion f;
    f.norm = &g.buf();
    f.norm_offset = g.offset;
    f.eps = c.rms_eps;
    for (const QkvRun& r : runs)
      if (!ops::mul_mv_fuses(*d.k, r.w->type, r.w->cols, r.rows, r.w->buf(), r.w->offset, d.x, 0, f)) return {};
    return runs;
  }

  // Attention block: this device's part of attn_output(attention(norm(x))) [T][n_embd], into o.
  // With `replay`, positions come from d.pos, so the recording serves any position. For one
  // token whose Q, K and V rows the loader put one after another, one product makes all
  // three (with the norm, where the kernel fuses it); rope_store rotates Q and K and fills the
  // cache in one dispatch, or the product's epilogue does (texel kernels, normal RoPE, no bias
  // or QK-norm between).
  void attention(DeviceState& d, uint32_t l, const std::vector<Piece>& pieces, uint32_t T, const BlockOutput& o,
                 bool replay) {
    const Layer& W = d.shard->layers[l];
    ops::Kernels& k = *d.k;
    vk::CommandBuffer& cb = d.cb();
    const DeviceTensor &wq = W[L::attn_q], &wk = W[L::attn_k], &wv = W[L::attn_v];
    const uint64_t k_at = d.k_at(T), v_at = d.v_at(T);
    ops::RopeStoreShape rope;
    rope.n_q_heads = d.n_q / c.head_dim;
    rope.n_dims = c.rope_dims;
    rope.neox = c.rope_neox;
    rope.freq_base = c.rope_base_of(l);
    rope.freq_scale = c.rope_freq_scale_of(l);
    const bool qkv_whole = T == 1 && wq.followed_by(wk) && wk.followed_by(wv);
    if (qkv_whole && pieces.size() == 1 && !c.qkv_bias && !c.qk_norm && !rope.neox) {
      // One dispatch from x to the cache where the kernel can (texel kernels, normal RoPE):
      // the product's epilogue rotates Q and K and stores K and V (rope_store's work).
      const ops::KvCache kv = cache(d, l, pieces[0].seq);
      ops::MatVecRope r;
      r.cache = &kv;
      r.positions = &d.pos;
      r.positions_offset = uint64_t(pieces[0].row) * 4;
      r.n_q = d.n_q;
      r.n_dims = rope.n_dims;
      r.freq_base = rope.freq_base;
      r.freq_scale = rope.freq_scale;
      ops::MatVecFusion f;
      f.rope = &r;
      const uint32_t rows = d.n_q + 2 * d.n_kv;
      const vk::Buffer* x = &fused_norm(d, W[L::attn_norm], f, wq, rows);
      if (ops::mul_mv_fuses(k, wq.type, wq.cols, rows, wq.buf(), wq.offset, *x, 0, f)) {
        d.xg_norm = nullptr;
        ops::mul_mv(k, cb, wq.type, wq.buf(), wq.offset, wq.cols, rows, *x, 0, d.qkv, 0, f);
        cb.barrier();  // the cache holds every position attention reads; Q is rotated
        for (const Piece& p : pieces) attend(d, l, p, replay);
        cb.barrier();  // attention output feeds the output projection
        output_product(d, W[L::attn_output], d.att, T, o);
        return;
      }
    }
    if (qkv_whole) {
      product(d, &W[L::attn_norm], d.x, wq, d.n_q + 2 * d.n_kv, T, split::Slice{&d.qkv, 0}, Out::store);
    } else if (const std::vector<QkvRun> runs = qkv_runs(d, W, T); !runs.empty()) {
      for (const QkvRun& r : runs)
        product(d, &W[L::attn_norm], d.x, *r.w, r.rows, T, split::Slice{&d.qkv, r.at}, Out::store);
    } else {
      norm(d, W[L::attn_norm], T);
      linear(d, wq, d.h, T, split::Slice{&d.qkv, 0});
      linear(d, wk, d.h, T, split::Slice{&d.qkv, k_at});
      linear(d, wv, d.h, T, split::Slice{&d.qkv, v_at});
    }
    cb.barrier();  // Q, K, V complete before bias / QK-norm / RoPE
    // Biases before a QK-norm are added here; else rope_store adds them (rope_store_bias).
    const bool bias_in_rope = c.qkv_bias && !c.qk_norm;
    if (bias_in_rope) {
      const DeviceTensor &bq = W[L::attn_q_bias], &bk = W[L::attn_k_bias], &bv = W[L::attn_v_bias];
      rope.q_bias = &bq.buf();
      rope.k_bias = &bk.buf();
      rope.v_bias = &bv.buf();
      rope.q_bias_offset = bq.offset;
      rope.k_bias_offset = bk.offset;
      rope.v_bias_offset = bv.offset;
    } else if (c.qkv_bias) {
      const auto bias = [&](const DeviceTensor& b, uint64_t at, uint32_t n) {
        ops::add(k, cb, d.qkv, at, b.buf(), b.offset, d.qkv, at, T * n, n);
      };
      bias(W[L::attn_q_bias], 0, d.n_q);
      bias(W[L::attn_k_bias], k_at, d.n_kv);
      bias(W[L::attn_v_bias], v_at, d.n_kv);
      cb.barrier();  // biased Q, K, V before QK-norm, RoPE and the cache store
    }
    if (c.qk_norm) {  // every head of Q and K normed over head_dim, with its own weight
      // Q's rows then K's lie one after another in qkv: one dispatch for both.
      const DeviceTensor &qn = W[L::attn_q_norm], &kn = W[L::attn_k_norm];
      const uint32_t q_rows = T * (d.n_q / c.head_dim);
      ops::rms_norm2(k, cb, d.qkv, 0, qn.buf(), qn.offset, kn.buf(), kn.offset, q_rows, d.qkv, 0,
                     ops::RmsNormShape{c.head_dim, q_rows + T * d.n_kv_heads, c.rms_eps});
      cb.barrier();  // normed Q, K before RoPE
    }
    for (const Piece& p : pieces) {  // Q rotated, K rotated and V into the piece's cache rows
      rope.n_tokens = p.n;
      ops::rope_store(k, cb, cache(d, l, p.seq), d.qkv, uint64_t(p.row) * d.n_q * 4,
                      k_at + uint64_t(p.row) * d.n_kv * 4, v_at + uint64_t(p.row) * d.n_kv * 4, d.pos,
                      uint64_t(p.row) * 4, rope);
    }
    cb.barrier();  // the cache holds every position attention reads; Q is rotated
    for (const Piece& p : pieces) attend(d, l, p, replay);
    cb.barrier();  // attention output feeds the output projection
    output_product(d, W[L::attn_output], d.att, T, o);
  }

  // Attention of one piece over this device's heads. Q head j (local) uses local KV head
  // (j + q_skew) / group; when that is not the kernel's plain h / ratio mapping (a shared KV
  // head's group is cut), each local KV head gets its own dispatch over its Q heads.
  void attend(DeviceState& d, uint32_t l, const Piece& p, bool replay) {
    const split::DeviceShard& sp = d.shard->spec;
    const uint32_t g = c.n_head / c.n_head_kv, n_qh = d.n_q / c.head_dim;
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    const uint64_t q_off = uint64_t(p.row) * d.n_q * 4;
    const uint32_t skew = sp.q_skew(g);
    ops::AttentionShape shape{p.n, n_qh, p.p0, scale};
    shape.window = c.window(l);
    if (replay) shape.p0_buffer = &d.pos;  // the token's position, written by the host per token
    if (skew == 0 && n_qh == d.n_kv_heads * g) {
      ops::attention(*d.k, d.cb(), cache(d, l, p.seq), shape, d.qkv, q_off, d.att, q_off);
      return;
    }
    ops::AttentionOptions opt;
    opt.q_stride = opt.o_stride = d.n_q;
    for (uint32_t j = 0; j < d.n_kv_heads; ++j) {
      const uint64_t kv = sp.kv_heads.begin + j;
      const uint64_t h0 = std::max<uint64_t>(kv * g, sp.q_heads.begin), h1 = std::min<uint64_t>((kv + 1) * g, sp.q_heads.end);
      if (h1 <= h0) continue;
      ops::KvCache one = cache(d, l, p.seq);
      one.n_kv_heads = 1;
      one.k_offset += j * one.head_bytes();
      one.v_offset += j * one.head_bytes();
      const uint64_t off = q_off + (h0 - sp.q_heads.begin) * c.head_dim * 4;
      shape.n_q_heads = static_cast<uint32_t>(h1 - h0);
      ops::attention(*d.k, d.cb(), one, shape, d.qkv, off, d.att, off, opt);
    }
  }

  // Feed-forward block: this device's part of ffn_down(glu(gate, up)(norm(x))), the GLU
  // being SwiGLU or GeGLU (gemma), into o. For one token whose gate and up rows lie one
  // after another, one product makes the activation (with the norm, where the kernel fuses).
  void ffn(DeviceState& d, uint32_t l, uint32_t T, const BlockOutput& o) {
    const Layer& W = d.shard->layers[l];
    const DeviceTensor &gate = W[L::ffn_gate], &up = W[L::ffn_up];
    const Out act = c.glu == Glu::geglu ? Out::geglu : Out::swiglu;
    if (gate.followed_by(up)) {
      product(d, &W[L::ffn_norm], d.x, gate, d.n_ff, T, split::Slice{&d.gu, 0}, act, {}, d.up_at(T));
    } else {
      norm(d, W[L::ffn_norm], T);
      linear(d, gate, d.h, T, split::Slice{&d.gu, 0});
      linear(d, up, d.h, T, split::Slice{&d.gu, d.up_at(T)});
      d.cb().barrier();  // gate and up complete before the GLU
      (act == Out::geglu ? ops::geglu : ops::swiglu)(*d.k, d.cb(), d.gu, 0, d.gu, d.up_at(T), d.gu, 0,
                                                    ops::GluShape{d.n_ff, T});
    }
    d.cb().barrier();  // activation feeds the down projection
    output_product(d, W[L::ffn_down], d.gu, T, o);
  }

  // Mixture-of-experts block (qwen3moe): this device's partial of sum_j w_j ffn_down_j(glu(
  // ffn_gate_j(h), ffn_up_j(h))) over the k experts j the router chose for each token. The router
  // runs whole on every device (the same x, so the same choice), on the device: the expert
  // products read the chosen experts from d.moe.ids, so a decode token stays one submit. Each
  // device computes its FFN rows of every chosen expert and sums its k weighted partials into o
  // (through o.scratch when the block adds into the residual); the layer reduces once, after. A batch groups its slots by expert (one product per expert over
  // the tokens that chose it); a decode token runs one product per slot.
  void moe_ffn(DeviceState& d, uint32_t l, uint32_t T, const BlockOutput& o) {
    const Layer& W = d.shard->layers[l];
    const MoeScratch& m = d.moe;
    ops::Kernels& k = *d.k;
    const uint32_t used = c.n_expert_used, slots = T * used;
    norm(d, W[L::ffn_norm], T);
    linear(d, W[L::ffn_gate_inp], d.h, T, split::Slice{&m.logits, 0});
    d.cb().barrier();  // router logits complete before routing
    ops::moe_route(k, d.cb(), m.logits, 0, m.ids, 0, m.weights, 0,
                   ops::MoeRouteShape{c.n_expert, used, T, c.expert_norm_top_k});
    d.cb().barrier();  // expert ids and weights before the lists, the products and the sum read them
    ops::ExpertRouting r{&m.ids, 0, nullptr, 0, c.n_expert, slots, 0};
    if (T > 1) {
      ops::moe_group(k, d.cb(), m.ids, 0, m.groups, 0, c.n_expert, slots, T);
      d.cb().barrier();  // each expert's slot list before the grouped products read it
      r.groups = &m.groups;
      r.cap = T;
    }
    const DeviceTensor &gate = W[L::ffn_gate], &up = W[L::ffn_up], &down = W[L::ffn_down];
    const ops::ExpertRows per_token{c.n_embd, used, d.n_ff}, per_slot{d.n_ff, 1, c.n_embd};
    ops::mul_mm_id(k, d.cb(), gate.type, gate.buf(), c.n_embd, d.n_ff, d.h, 0, m.gate, 0, per_token, r);
    ops::mul_mm_id(k, d.cb(), up.type, up.buf(), c.n_embd, d.n_ff, d.h, 0, m.up, 0, per_token, r);
    d.cb().barrier();  // every slot's gate and up before the GLU
    const auto glu = c.glu == Glu::geglu ? ops::geglu : ops::swiglu;
    glu(k, d.cb(), m.gate, 0, m.up, 0, m.gate, 0, ops::GluShape{d.n_ff, slots});
    d.cb().barrier();  // activations before the down projections
    ops::mul_mm_id(k, d.cb(), down.type, down.buf(), d.n_ff, c.n_embd, m.gate, 0, m.down, 0, per_slot, r);
    d.cb().barrier();  // every slot's down projection before the weighted sum
    const split::Slice sum = o.add ? o.scratch : o.out;
    ops::moe_combine(k, d.cb(), m.down, 0, m.weights, 0, *sum.buffer, sum.offset, c.n_embd, T, used);
    if (o.add) {
      d.cb().barrier();  // the weighted sum is complete before it joins the residual
      ops::add(k, d.cb(), *o.out.buffer, o.out.offset, *sum.buffer, sum.offset, *o.out.buffer, o.out.offset,
               T * c.n_embd, T * c.n_embd);
    }
  }

  // Final norm and this device's vocabulary rows of the LM head for the wanted rows (for one
  // wanted row of one token, the norm fused into the product where the kernel can).
  void head(DeviceState& d, const std::vector<Piece>& pieces, uint32_t T, uint32_t n_out) {
    const bool capture = hidden_sum && &d == hidden_device();
    if (d.n_vocab == 0 || (n_out == 0 && !capture)) return;
    const Shard& s = *d.shard;
    vk::CommandBuffer& cb = d.cb();
    DeviceTensor head = s.head();  // this device's vocabulary rows
    head.offset += s.head_offset();
    head.rows = d.n_vocab;
    if (n_out == T && !capture) {
      product(d, &s.output_norm, d.x, head, d.n_vocab, T, split::Slice{&d.logits, 0}, Out::store);
    } else {
      norm(d, s.output_norm, T);
      if (capture) cb.copy(d.h, 0, d.hidden, 0, uint64_t(T) * c.n_embd * 4);  // norm's barrier orders the write
      if (n_out == 0) return;
      const vk::Buffer* in = &d.h;
      if (n_out != T) {  // gather the rows whose logits are wanted
        const uint64_t row = uint64_t(c.n_embd) * 4;
        uint32_t out = 0;
        for (const Piece& p : pieces) {
          if (p.out_rows) cb.copy(d.h, (p.row + p.n - p.out_rows) * row, d.sel, out * row, p.out_rows * row);
          out += p.out_rows;
        }
        cb.barrier();  // gathered rows feed the LM head
        in = &d.sel;
      }
      linear(d, head, *in, n_out, split::Slice{&d.logits, 0});
    }
    cb.barrier();  // logits complete before the copy to host-visible memory
    cb.copy(d.logits, 0, d.readback, 0, uint64_t(n_out) * d.n_vocab * 4);
  }

  DeviceState* hidden_device() {
    for (DeviceState& d : devs)
      if (d.n_vocab > 0) return &d;
    return nullptr;
  }

  // Adds the last forward pass's T hidden rows into *hidden_sum.
  void collect_hidden(uint32_t T) {
    const float* src = reinterpret_cast<const float*>(hidden_device()->hidden.mapped());
    for (uint32_t r = 0; r < T; ++r)
      for (uint32_t i = 0; i < c.n_embd; ++i) (*hidden_sum)[i] += src[size_t(r) * c.n_embd + i];
  }

  // Appends the logits rows of the last forward pass: each device's vocabulary slice, in order.
  void collect_logits(uint32_t n_out, std::vector<float>& out) {
    const size_t V = c.n_vocab, base = out.size();
    out.resize(base + size_t(n_out) * V);
    for (DeviceState& d : devs) {
      if (d.n_vocab == 0) continue;
      const float* src = reinterpret_cast<const float*>(d.readback.mapped());
      const size_t v0 = d.shard->spec.vocab.begin;
      for (uint32_t r = 0; r < n_out; ++r)
        std::memcpy(out.data() + base + r * V + v0, src + size_t(r) * d.n_vocab, size_t(d.n_vocab) * 4);
    }
  }
};

Context::Context(Model& model, const ContextOptions& options) : impl_(std::make_unique<Impl>(model, options)) {}
Context::~Context() = default;

std::vector<float> Context::decode(uint32_t seq, std::span<const int32_t> tokens, bool all_logits) {
  const Segment s{seq, tokens, all_logits};
  return decode(std::span(&s, 1));
}

std::vector<float> Context::decode(std::span<const Segment> segments) {
  Impl& m = *impl_;
  const uint32_t n_vocab = m.c.n_vocab;
  std::vector<bool> seen(m.n_seq, false);
  size_t n_rows = 0;
  for (const Segment& s : segments) {
    if (s.seq >= m.n_seq)
      throw std::invalid_argument("sequence " + std::to_string(s.seq) + " does not exist (the context has " +
                                  std::to_string(m.n_seq) + ")");
    if (seen[s.seq]) throw std::invalid_argument("sequence " + std::to_string(s.seq) + " appears twice in one decode call");
    seen[s.seq] = true;
    if (s.tokens.empty()) throw std::invalid_argument("a segment has no tokens");
    if (m.lengths[s.seq] + s.tokens.size() > m.n_ctx)
      throw std::invalid_argument("sequence " + std::to_string(s.seq) + " would hold " +
                                  std::to_string(m.lengths[s.seq] + s.tokens.size()) + " tokens, more than the context size " +
                                  std::to_string(m.n_ctx));
    for (int32_t t : s.tokens)
      if (t < 0 || static_cast<uint32_t>(t) >= n_vocab)
        throw std::invalid_argument("token id " + std::to_string(t) + " is outside the vocabulary of " + std::to_string(n_vocab));
    n_rows += s.all_logits ? s.tokens.size() : 1;
  }
  std::vector<float> out;
  out.reserve(n_rows * n_vocab);

  // Walk the segments in micro-batches of at most n_ubatch tokens; a segment may be cut
  // across micro-batches, and only its final piece yields its last-token logits.
  size_t seg = 0, offset = 0;
  while (seg < segments.size()) {
    std::vector<Piece> pieces;
    uint32_t T = 0;
    while (seg < segments.size() && T < m.n_ubatch) {
      const Segment& s = segments[seg];
      const uint32_t n = static_cast<uint32_t>(std::min<size_t>(s.tokens.size() - offset, m.n_ubatch - T));
      const bool ends_segment = offset + n == s.tokens.size();
      const Piece p{s.seq, m.lengths[s.seq], n, T, s.all_logits ? n : (ends_segment ? 1u : 0u)};
      for (DeviceState& d : m.devs) {
        auto* ids = reinterpret_cast<uint32_t*>(d.ids.mapped());
        auto* pos = reinterpret_cast<int32_t*>(d.pos.mapped());
        for (uint32_t i = 0; i < n; ++i) {
          ids[T + i] = static_cast<uint32_t>(s.tokens[offset + i]);
          pos[T + i] = static_cast<int32_t>(p.p0 + i);
        }
      }
      pieces.push_back(p);
      m.lengths[s.seq] += n;
      T += n;
      offset += n;
      if (ends_segment) {
        ++seg;
        offset = 0;
      }
    }
    m.collect_logits(m.forward(pieces, T), out);
    if (m.hidden_sum) m.collect_hidden(T);
  }
  return out;
}

std::vector<float> Context::embed(uint32_t seq, std::span<const int32_t> tokens) {
  Impl& m = *impl_;
  DeviceState* d = m.hidden_device();
  if (!d) throw std::logic_error("embed: no device runs the model's head");
  if (d->hidden.size() < uint64_t(m.n_ubatch) * m.c.n_embd * 4)
    d->hidden = d->dev->create_buffer(uint64_t(m.n_ubatch) * m.c.n_embd * 4, vk::BufferKind::Host, kScratch);
  std::vector<double> sum(m.c.n_embd, 0.0);
  m.hidden_sum = &sum;
  m.recorded.valid = false;  // recordings without the copy must not be replayed, nor this one later
  try {
    decode(seq, tokens);
  } catch (...) {
    m.hidden_sum = nullptr;
    m.recorded.valid = false;
    throw;
  }
  m.hidden_sum = nullptr;
  m.recorded.valid = false;
  std::vector<float> mean(m.c.n_embd);
  for (size_t i = 0; i < mean.size(); ++i) mean[i] = static_cast<float>(sum[i] / static_cast<double>(tokens.size()));
  return mean;
}

void Context::clear(uint32_t seq) { impl_->lengths.at(seq) = 0; }
void Context::truncate(uint32_t seq, uint32_t n) {
  uint32_t& len = impl_->lengths.at(seq);
  if (n > len)
    throw std::invalid_argument("sequence " + std::to_string(seq) + " holds " + std::to_string(len) +
                                " tokens; it cannot be truncated to " + std::to_string(n));
  len = n;
}
uint32_t Context::length(uint32_t seq) const { return impl_->lengths.at(seq); }
uint32_t Context::n_ctx() const { return impl_->n_ctx; }
uint32_t Context::n_seq() const { return impl_->n_seq; }
const ModelConfig& Context::config() const { return impl_->c; }
const ContextCounters& Context::counters() const { return impl_->counters; }

std::optional<split::CollectiveStats> Context::collective_stats() const { return impl_->exec->collective_stats(); }

std::vector<DeviceMemoryUse> Context::memory_use() const {
  std::vector<DeviceMemoryUse> out;
  for (const DeviceState& d : impl_->devs) {
    const vk::Allocator& a = d.dev->allocator();
    out.push_back(DeviceMemoryUse{d.dev->label(), a.in_use(kWeights), a.in_use(kKvCache), a.in_use(kScratch)});
  }
  return out;
}

}  // namespace chorus
