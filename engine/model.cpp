#include "engine/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "engine/ops/attention.h"
#include "engine/ops/kernels.h"
#include "engine/ops/matmul.h"
#include "engine/ops/matvec.h"
#include "engine/ops/ops.h"
#include "engine/quant.h"
#include "vkdevice/commands.h"

namespace chorus {

// ---- weights -------------------------------------------------------------------------------

namespace {

constexpr const char* kWeights = "weights";
constexpr const char* kKvCache = "kv cache";
constexpr const char* kScratch = "scratch";

// A weight on the device: `rows` rows of `cols` elements in GGUF layout (a matrix shard), or
// an F32 vector (norms, biases).
struct DeviceTensor {
  GgmlType type = GgmlType::F32;
  uint32_t cols = 0;  // ne[0]
  uint32_t rows = 0;  // ne[1]
  vk::Buffer buf;
};

struct Layer {
  DeviceTensor attn_norm;  // [n_embd] f32
  DeviceTensor wq;         // [n_embd, n_q]
  DeviceTensor wk;         // [n_embd, n_kv]
  DeviceTensor wv;         // [n_embd, n_kv]
  DeviceTensor bq;         // [n_q] f32 (qwen2)
  DeviceTensor bk;         // [n_kv] f32 (qwen2)
  DeviceTensor bv;         // [n_kv] f32 (qwen2)
  DeviceTensor wo;         // [n_q, n_embd]
  DeviceTensor ffn_norm;   // [n_embd] f32
  DeviceTensor w_gate;     // [n_embd, n_ff]
  DeviceTensor w_up;       // [n_embd, n_ff]
  DeviceTensor w_down;     // [n_ff, n_embd]
};

}  // namespace

struct Model::Impl {
  ops::Kernels kernels;
  DeviceTensor tok_embd;     // [n_embd, n_vocab]
  DeviceTensor output_norm;  // [n_embd] f32
  DeviceTensor output;       // [n_embd, n_vocab]; empty when tied to tok_embd
  std::vector<Layer> layers;

  explicit Impl(vk::Device& d) : kernels(d) {}
  const DeviceTensor& lm_head() const { return output.buf ? output : tok_embd; }
};

namespace {

class Uploader {
 public:
  Uploader(const gguf::File& f, vk::Device& d, const LoadProgress& p) : file_(f), dev_(d), progress_(p) {
    for (const auto& t : f.tensors()) total_ += t.size;
  }

  // A matrix, uploaded as stored.
  DeviceTensor matrix(const std::string& name) {
    const gguf::TensorInfo& t = file_.require_tensor(name);
    DeviceTensor d;
    d.type = t.type;
    d.cols = static_cast<uint32_t>(t.ne[0]);
    d.rows = static_cast<uint32_t>(t.n_rows());
    d.buf = dev_.create_buffer(t.size, vk::BufferKind::Device, kWeights);
    dev_.upload(d.buf, 0, std::as_bytes(t.data));
    advance(t.size);
    return d;
  }

  // A vector (norm weight, bias), converted to F32 on the host (it is small).
  DeviceTensor vector(const std::string& name) {
    const gguf::TensorInfo& t = file_.require_tensor(name);
    DeviceTensor d;
    d.cols = static_cast<uint32_t>(t.n_elements());
    d.rows = 1;
    std::vector<float> values(d.cols);
    if (t.type == GgmlType::F32) {
      std::memcpy(values.data(), t.data.data(), values.size() * 4);
    } else {
      if (d.cols % t.traits->block_elems != 0)
        throw gguf::Error(file_.path() + ": tensor '" + name + "' is not a whole number of blocks");
      dequantize_row(t.type, t.data.data(), values.data(), d.cols);
    }
    d.buf = dev_.create_buffer(values.size() * 4, vk::BufferKind::Device, kWeights);
    dev_.upload(d.buf, std::span<const float>(values));
    advance(t.size);
    return d;
  }

 private:
  void advance(uint64_t bytes) {
    done_ += bytes;
    if (progress_.on_upload) progress_.on_upload(done_, total_);
  }

  const gguf::File& file_;
  vk::Device& dev_;
  const LoadProgress& progress_;
  uint64_t total_ = 0, done_ = 0;
};

void check_weight_type(const gguf::File& f, const gguf::TensorInfo& t) {
  const auto types = weight_types();
  if (std::find(types.begin(), types.end(), t.type) == types.end())
    throw gguf::Error(f.path() + ": tensor '" + std::string(t.name) + "' has type " + t.traits->name +
                      ", which chorus has no kernels for (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K..Q6_K)");
}

}  // namespace

Model::Model(gguf::File file, ModelConfig config, vk::Device& device)
    : file_(std::move(file)), config_(std::move(config)), device_(&device), impl_(std::make_unique<Impl>(device)) {}

Model::~Model() = default;

std::unique_ptr<Model> Model::load(const std::string& path, vk::Device& device, const LoadProgress& progress) {
  gguf::File file = gguf::File::open(path);
  ModelConfig config = ModelConfig::from_gguf(file);
  for (const auto& t : file.tensors()) check_weight_type(file, t);
  std::unique_ptr<Model> m(new Model(std::move(file), std::move(config), device));
  const ModelConfig& c = m->config_;
  Impl& w = *m->impl_;
  Uploader up(m->file_, device, progress);
  w.tok_embd = up.matrix("token_embd.weight");
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    Layer L;
    L.attn_norm = up.vector(layer_tensor(l, "attn_norm.weight"));
    L.wq = up.matrix(layer_tensor(l, "attn_q.weight"));
    L.wk = up.matrix(layer_tensor(l, "attn_k.weight"));
    L.wv = up.matrix(layer_tensor(l, "attn_v.weight"));
    if (c.qkv_bias) {
      L.bq = up.vector(layer_tensor(l, "attn_q.bias"));
      L.bk = up.vector(layer_tensor(l, "attn_k.bias"));
      L.bv = up.vector(layer_tensor(l, "attn_v.bias"));
    }
    L.wo = up.matrix(layer_tensor(l, "attn_output.weight"));
    L.ffn_norm = up.vector(layer_tensor(l, "ffn_norm.weight"));
    L.w_gate = up.matrix(layer_tensor(l, "ffn_gate.weight"));
    L.w_up = up.matrix(layer_tensor(l, "ffn_up.weight"));
    L.w_down = up.matrix(layer_tensor(l, "ffn_down.weight"));
    w.layers.push_back(std::move(L));
  }
  w.output_norm = up.vector("output_norm.weight");
  if (!c.tied_output) w.output = up.matrix("output.weight");
  m->file_.drop_tensor_pages();  // the weights live on the device now
  return m;
}

// ---- context -------------------------------------------------------------------------------

namespace {

// One micro-batch's view of a segment: `n` tokens of sequence `seq` starting at position p0,
// at rows [row, row + n) of the batch.
struct Piece {
  uint32_t seq, p0, n, row;
  uint32_t out_rows;  // logits rows wanted: n (all logits), 1 (the segment's last token) or 0
};

}  // namespace

struct Context::Impl {
  Model& model;
  const ModelConfig& c;
  vk::Device& dev;
  ops::Kernels& k;
  uint32_t n_ctx, n_seq, n_ubatch;
  std::vector<uint32_t> lengths;  // tokens held per sequence
  ContextCounters counters;

  // KV cache: per layer one K and one V buffer holding n_seq caches of [n_head_kv][n_ctx][head_dim] f16.
  std::vector<vk::Buffer> k_cache, v_cache;
  uint64_t cache_bytes_per_seq;

  // Scratch, for up to n_ubatch tokens. Shapes per token:
  vk::Buffer ids;     // [T] u32 token ids, host-visible (written by the host each pass)
  vk::Buffer pos;     // [T] i32 positions, host-visible
  vk::Buffer x;       // [T][n_embd] residual stream
  vk::Buffer h;       // [T][n_embd] normed input / projection output
  vk::Buffer q;       // [T][n_q]
  vk::Buffer kk;      // [T][n_kv]
  vk::Buffer vv;      // [T][n_kv]
  vk::Buffer att;     // [T][n_q]
  vk::Buffer gate;    // [T][n_ff]
  vk::Buffer up;      // [T][n_ff]
  vk::Buffer sel;     // [T][n_embd] rows whose logits are wanted
  vk::Buffer mv_scratch;  // x quantised for int8 matvec kernels, 3 slots (q, k, v run back to back)
  uint64_t mv_slot = 0;
  vk::Buffer logits;      // [rows][n_vocab], grown on demand
  vk::Buffer readback;    // host-visible copy of logits
  uint32_t logits_rows = 0;

  vk::CommandBuffer cb;
  vk::Timeline done;
  uint64_t done_value = 0;

  Impl(Model& m, const ContextOptions& o)
      : model(m), c(m.config()), dev(m.device()), k(m.impl().kernels),
        n_ctx(o.n_ctx ? o.n_ctx : std::min<uint32_t>(m.config().n_ctx_train, 4096)), n_seq(o.n_seq),
        n_ubatch(o.n_ubatch), lengths(o.n_seq, 0), cb(m.device()), done(m.device(), "forward pass done") {
    if (n_seq == 0 || n_ubatch == 0 || n_ctx == 0) throw std::invalid_argument("context: n_ctx, n_seq and n_ubatch must be positive");
    const uint32_t T = n_ubatch;
    cache_bytes_per_seq = uint64_t(c.n_head_kv) * n_ctx * c.head_dim * 2;
    for (uint32_t l = 0; l < c.n_layer; ++l) {
      k_cache.push_back(dev.create_buffer(cache_bytes_per_seq * n_seq, vk::BufferKind::Device, kKvCache));
      v_cache.push_back(dev.create_buffer(cache_bytes_per_seq * n_seq, vk::BufferKind::Device, kKvCache));
    }
    const auto f32 = [&](uint64_t n, vk::BufferKind kind = vk::BufferKind::Device) {
      return dev.create_buffer(n * 4, kind, kScratch);
    };
    ids = f32(T, vk::BufferKind::Host);
    pos = f32(T, vk::BufferKind::Host);
    x = f32(uint64_t(T) * c.n_embd);
    h = f32(uint64_t(T) * c.n_embd);
    q = f32(uint64_t(T) * c.n_q());
    kk = f32(uint64_t(T) * c.n_kv());
    vv = f32(uint64_t(T) * c.n_kv());
    att = f32(uint64_t(T) * c.n_q());
    gate = f32(uint64_t(T) * c.n_ff);
    up = f32(uint64_t(T) * c.n_ff);
    sel = f32(uint64_t(T) * c.n_embd);
    uint64_t slot = 4;
    for (const Layer& L : m.impl().layers)
      for (const DeviceTensor* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
        slot = std::max(slot, ops::mul_mv_scratch_bytes(k, t->type, t->cols));
    slot = std::max(slot, ops::mul_mv_scratch_bytes(k, m.impl().lm_head().type, c.n_embd));
    mv_slot = (slot + 255) / 256 * 256;
    mv_scratch = dev.create_buffer(mv_slot * 3, vk::BufferKind::Device, kScratch);
    grow_logits(1);
  }

  void grow_logits(uint32_t rows) {
    if (rows <= logits_rows) return;
    logits = dev.create_buffer(uint64_t(rows) * c.n_vocab * 4, vk::BufferKind::Device, kScratch);
    readback = dev.create_buffer(uint64_t(rows) * c.n_vocab * 4, vk::BufferKind::Host, kScratch);
    logits_rows = rows;
  }

  // out[T][N] = in[T][K] * W^T: the matrix-vector kernel for one token, else the tiled one.
  // `slot` picks a region of the int8 scratch so back-to-back matvecs do not share it.
  void linear(const DeviceTensor& w, const vk::Buffer& in, uint32_t T, const vk::Buffer& out, uint32_t slot = 0) {
    if (T == 1) {
      const ops::MatVecScratch s{&mv_scratch, mv_slot * slot};
      ops::mul_mv(k, cb, w.type, w.buf, 0, w.cols, w.rows, in, 0, out, 0, &s);
    } else {
      ops::mul_mm(k, cb, w.type, w.buf, 0, w.cols, w.rows, in, 0, T, out, 0);
    }
  }

  ops::KvCache cache(uint32_t layer, uint32_t seq) const {
    return ops::KvCache{c.n_head_kv, n_ctx, c.head_dim, &k_cache[layer], cache_bytes_per_seq * seq,
                        &v_cache[layer], cache_bytes_per_seq * seq};
  }

  // Records and runs one forward pass over the pieces (T tokens in all); returns the number
  // of logits rows written to `readback`.
  uint32_t forward(const std::vector<Piece>& pieces, uint32_t T) {
    const Model::Impl& w = model.impl();
    uint32_t n_out = 0;
    for (const Piece& p : pieces) n_out += p.out_rows;
    grow_logits(n_out);

    cb.begin();
    ops::GetRowsShape gr;
    gr.type = w.tok_embd.type;
    gr.n = c.n_embd;
    gr.n_rows = c.n_vocab;
    gr.n_ids = T;
    ops::get_rows(k, cb, w.tok_embd.buf, 0, ids, 0, x, 0, gr);
    cb.barrier();  // x is read by the first norm

    ops::RmsNormShape norm{c.n_embd, T, c.rms_eps};
    ops::RopeShape rq;
    rq.n_tokens = T;
    rq.n_heads = c.n_head;
    rq.head_dim = c.head_dim;
    rq.n_dims = c.rope_dims;
    rq.neox = c.rope_neox;
    rq.freq_base = c.rope_base;
    rq.freq_scale = c.rope_freq_scale;
    ops::RopeShape rk = rq;
    rk.n_heads = c.n_head_kv;
    const float att_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

    for (uint32_t l = 0; l < c.n_layer; ++l) {
      const Layer& L = w.layers[l];
      // Attention block.
      ops::rms_norm(k, cb, x, 0, &L.attn_norm.buf, 0, h, 0, norm);
      cb.barrier();  // h feeds Q, K, V
      linear(L.wq, h, T, q, 0);
      linear(L.wk, h, T, kk, 1);
      linear(L.wv, h, T, vv, 2);
      cb.barrier();  // Q, K, V complete before bias / RoPE
      if (c.qkv_bias) {
        ops::add(k, cb, q, 0, L.bq.buf, 0, q, 0, T * c.n_q(), c.n_q());
        ops::add(k, cb, kk, 0, L.bk.buf, 0, kk, 0, T * c.n_kv(), c.n_kv());
        ops::add(k, cb, vv, 0, L.bv.buf, 0, vv, 0, T * c.n_kv(), c.n_kv());
        cb.barrier();  // biased Q, K, V before RoPE and the cache store
      }
      ops::rope(k, cb, q, 0, pos, 0, q, 0, rq);
      ops::rope(k, cb, kk, 0, pos, 0, kk, 0, rk);
      cb.barrier();  // rotated K goes into the cache; rotated Q into attention
      for (const Piece& p : pieces)
        ops::kv_store(k, cb, cache(l, p.seq), kk, uint64_t(p.row) * c.n_kv() * 4, vv, uint64_t(p.row) * c.n_kv() * 4, p.n,
                      p.p0);
      cb.barrier();  // the cache holds every position attention reads
      for (const Piece& p : pieces) {
        ops::AttentionShape as{p.n, c.n_head, p.p0, att_scale};
        ops::attention(k, cb, cache(l, p.seq), as, q, uint64_t(p.row) * c.n_q() * 4, att, uint64_t(p.row) * c.n_q() * 4);
      }
      cb.barrier();  // attention output feeds the output projection
      linear(L.wo, att, T, h);
      cb.barrier();  // projection complete before the residual add
      ops::add(k, cb, x, 0, h, 0, x, 0, T * c.n_embd, T * c.n_embd);
      cb.barrier();  // residual updated before the FFN norm reads it
      // Feed-forward block.
      ops::rms_norm(k, cb, x, 0, &L.ffn_norm.buf, 0, h, 0, norm);
      cb.barrier();  // h feeds gate and up
      linear(L.w_gate, h, T, gate, 0);
      linear(L.w_up, h, T, up, 1);
      cb.barrier();  // gate and up complete before SwiGLU
      ops::swiglu(k, cb, gate, 0, up, 0, gate, 0, ops::GluShape{c.n_ff, T});
      cb.barrier();  // activation feeds the down projection
      linear(L.w_down, gate, T, h);
      cb.barrier();  // projection complete before the residual add
      ops::add(k, cb, x, 0, h, 0, x, 0, T * c.n_embd, T * c.n_embd);
      cb.barrier();  // residual updated before the next layer's norm
    }
    if (n_out > 0) {
      ops::rms_norm(k, cb, x, 0, &w.output_norm.buf, 0, h, 0, norm);
      cb.barrier();  // normed rows feed the LM head (or the gather)
      const vk::Buffer* head_in = &h;
      if (n_out != T) {
        uint32_t out = 0;
        for (const Piece& p : pieces) {
          if (p.out_rows == 0) continue;
          ops::CopyShape cs;
          cs.ne0 = c.n_embd * p.out_rows;
          ops::copy(k, cb, h, uint64_t(p.row + p.n - p.out_rows) * c.n_embd * 4, GgmlType::F32, sel,
                    uint64_t(out) * c.n_embd * 4, GgmlType::F32, cs);
          out += p.out_rows;
        }
        cb.barrier();  // gathered rows feed the LM head
        head_in = &sel;
      }
      linear(w.lm_head(), *head_in, n_out, logits);
      cb.barrier();  // logits complete before the copy to host-visible memory
      cb.copy(logits, 0, readback, 0, uint64_t(n_out) * c.n_vocab * 4);
      cb.barrier_to_host();  // the host reads readback after the timeline signal
    }
    cb.end();

    const vk::Device::TimelinePoint signal{&done, ++done_value};
    dev.submit(cb, {}, std::span(&signal, 1));
    done.wait(done_value, "a forward pass");
    ++counters.forward_passes;
    counters.tokens += T;
    return n_out;
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
  auto* ids = reinterpret_cast<uint32_t*>(m.ids.mapped());
  auto* pos = reinterpret_cast<int32_t*>(m.pos.mapped());
  while (seg < segments.size()) {
    std::vector<Piece> pieces;
    uint32_t T = 0;
    while (seg < segments.size() && T < m.n_ubatch) {
      const Segment& s = segments[seg];
      const uint32_t n = static_cast<uint32_t>(std::min<size_t>(s.tokens.size() - offset, m.n_ubatch - T));
      const bool ends_segment = offset + n == s.tokens.size();
      const Piece p{s.seq, m.lengths[s.seq], n, T, s.all_logits ? n : (ends_segment ? 1u : 0u)};
      for (uint32_t i = 0; i < n; ++i) {
        ids[T + i] = static_cast<uint32_t>(s.tokens[offset + i]);
        pos[T + i] = static_cast<int32_t>(p.p0 + i);
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
    const uint32_t n_out = m.forward(pieces, T);
    const float* rows = reinterpret_cast<const float*>(m.readback.mapped());
    out.insert(out.end(), rows, rows + size_t(n_out) * n_vocab);
  }
  return out;
}

void Context::clear(uint32_t seq) { impl_->lengths.at(seq) = 0; }
uint32_t Context::length(uint32_t seq) const { return impl_->lengths.at(seq); }
uint32_t Context::n_ctx() const { return impl_->n_ctx; }
uint32_t Context::n_seq() const { return impl_->n_seq; }
const ModelConfig& Context::config() const { return impl_->c; }
const ContextCounters& Context::counters() const { return impl_->counters; }

std::vector<DeviceMemoryUse> Context::memory_use() const {
  const vk::Allocator& a = impl_->dev.allocator();
  return {DeviceMemoryUse{impl_->dev.label(), a.in_use(kWeights), a.in_use(kKvCache), a.in_use(kScratch)}};
}

}  // namespace chorus
