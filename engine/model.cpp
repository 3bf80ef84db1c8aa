#include "engine/model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "engine/ops/attention.h"
#include "engine/ops/kernels.h"
#include "engine/ops/matmul.h"
#include "engine/ops/matvec.h"
#include "engine/ops/ops.h"
#include "engine/quant.h"
#include "split/collective.h"
#include "vkdevice/commands.h"

namespace chorus {

// ---- weights -------------------------------------------------------------------------------

namespace {

constexpr const char* kWeights = "weights";
constexpr const char* kKvCache = "kv cache";
constexpr const char* kScratch = "scratch";

using split::Range;

// A weight on one device: `rows` rows of `cols` elements in GGUF layout (a matrix shard), or
// an F32 vector (norms, biases). Empty (no buffer) when the device holds none of it.
struct DeviceTensor {
  GgmlType type = GgmlType::F32;
  uint32_t cols = 0;  // ne[0]
  uint32_t rows = 0;  // ne[1]
  vk::Buffer buf;
  explicit operator bool() const { return static_cast<bool>(buf); }
};

// One layer's shard on one device (see split::DeviceShard for which rows and columns).
struct Layer {
  DeviceTensor attn_norm;  // [n_embd] f32
  DeviceTensor wq;         // [n_embd, q_rows]
  DeviceTensor wk;         // [n_embd, kv_rows]
  DeviceTensor wv;         // [n_embd, kv_rows]
  DeviceTensor bq;         // [q_rows] f32 (qwen2)
  DeviceTensor bk;         // [kv_rows] f32 (qwen2)
  DeviceTensor bv;         // [kv_rows] f32 (qwen2)
  DeviceTensor wo;         // [q_rows, n_embd]: the K slice of attn_output
  DeviceTensor ffn_norm;   // [n_embd] f32
  DeviceTensor w_gate;     // [n_embd, ffn]
  DeviceTensor w_up;       // [n_embd, ffn]
  DeviceTensor w_down;     // [ffn, n_embd]: the K slice of ffn_down
};

// Everything one device holds.
struct Shard {
  vk::Device* dev = nullptr;
  std::unique_ptr<ops::Kernels> kernels;
  split::DeviceShard spec;
  DeviceTensor tok_embd;     // [n_embd, n_vocab], when spec.embedding
  DeviceTensor output_norm;  // [n_embd] f32, when spec.output_norm
  DeviceTensor lm_head;      // [n_embd, vocab rows]; empty when the rows are read from tok_embd
  std::vector<Layer> layers;  // n_layer entries, filled for spec.layers

  // The LM head rows of this device and where they start in their buffer.
  const DeviceTensor& head() const { return lm_head ? lm_head : tok_embd; }
  uint64_t head_offset() const {
    return lm_head ? 0 : spec.vocab.begin * (*device_row_bytes(tok_embd.type, tok_embd.cols));
  }
};

}  // namespace

struct Model::Impl {
  split::Plan plan;
  std::vector<Shard> shards;
};

namespace {

const std::vector<GgmlType>& kernel_types() {
  static const std::vector<GgmlType> types = weight_types();
  return types;
}

void check_weight_type(const gguf::File& f, const gguf::TensorInfo& t) {
  const auto& types = kernel_types();
  if (std::find(types.begin(), types.end(), t.type) == types.end())
    throw gguf::Error(f.path() + ": tensor '" + std::string(t.name) + "' has type " + t.traits->name +
                      ", which chorus has no kernels for (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K..Q6_K)");
}

// Copies shards of the file's tensors to one device.
class Uploader {
 public:
  Uploader(const gguf::File& f, vk::Device& d, const LoadProgress& p, uint64_t& done, uint64_t total)
      : file_(f), dev_(d), progress_(p), done_(done), total_(total) {}

  // Rows [rows.begin, rows.end) of a matrix (ne1 is the row index): contiguous in the file.
  DeviceTensor rows(const std::string& name, Range r) {
    const gguf::TensorInfo& t = file_.require_tensor(name);
    DeviceTensor d;
    if (r.size() == 0) return d;
    d.type = t.type;
    d.cols = static_cast<uint32_t>(t.ne[0]);
    d.rows = static_cast<uint32_t>(r.size());
    const uint64_t rb = t.row_bytes(), drb = *device_row_bytes(t.type, t.ne[0]);
    d.buf = dev_.create_buffer(drb * r.size(), vk::BufferKind::Device, kWeights);
    if (drb == rb) {
      dev_.upload(d.buf, 0, std::as_bytes(t.data.subspan(rb * r.begin, rb * r.size())));
    } else {  // the device layout differs (Q6_K): converted in pieces of about 16 MiB
      const uint64_t step = std::max<uint64_t>(1, (16u << 20) / drb);
      for (uint64_t r0 = 0; r0 < r.size(); r0 += step) {
        const uint64_t n = std::min(step, r.size() - r0);
        const std::vector<uint8_t> piece =
            rows_to_device(t.type, t.data.subspan(rb * (r.begin + r0), rb * n), t.ne[0], n);
        dev_.upload(d.buf, drb * r0, std::as_bytes(std::span<const uint8_t>(piece)));
      }
    }
    advance(drb * r.size());
    return d;
  }

  // Columns [k.begin, k.end) of every row (a K slice, whole quantisation blocks).
  DeviceTensor cols(const std::string& name, Range k) {
    const gguf::TensorInfo& t = file_.require_tensor(name);
    DeviceTensor d;
    if (k.size() == 0) return d;
    const uint32_t qk = t.traits->block_elems, bb = t.traits->block_bytes;
    if (k.begin % qk != 0 || (k.end % qk != 0 && k.end != t.ne[0]))
      throw std::invalid_argument(file_.path() + ": tensor '" + name + "' cannot be cut at columns [" +
                                  std::to_string(k.begin) + ", " + std::to_string(k.end) + "): its blocks hold " +
                                  std::to_string(qk) + " elements");
    if (k.begin == 0 && k.end == t.ne[0]) return rows(name, Range{0, t.n_rows()});
    d.type = t.type;
    d.cols = static_cast<uint32_t>(k.size());
    d.rows = static_cast<uint32_t>(t.n_rows());
    const uint64_t rb = t.row_bytes(), blocks = k.size() / qk, skip = k.begin / qk * bb;
    const uint64_t piece = blocks * device_block_bytes(t.type);
    std::vector<uint8_t> shard(piece * d.rows);
    for (uint64_t r = 0; r < d.rows; ++r)
      blocks_to_device(t.type, t.data.data() + r * rb + skip, blocks, shard.data() + r * piece);
    d.buf = dev_.create_buffer(shard.size(), vk::BufferKind::Device, kWeights);
    dev_.upload(d.buf, std::span<const uint8_t>(shard));
    advance(shard.size());
    return d;
  }

  // Elements [r.begin, r.end) of a vector (norm weight, bias), converted to F32 on the host.
  DeviceTensor vector(const std::string& name, Range r) {
    const gguf::TensorInfo& t = file_.require_tensor(name);
    DeviceTensor d;
    if (r.size() == 0) return d;
    const uint64_t n = t.n_elements();
    std::vector<float> all(n);
    if (t.type == GgmlType::F32) {
      std::memcpy(all.data(), t.data.data(), n * 4);
    } else {
      if (n % t.traits->block_elems != 0) file_.fail("tensor '" + name + "' is not a whole number of blocks");
      dequantize_row(t.type, t.data.data(), all.data(), static_cast<int64_t>(n));
    }
    d.cols = static_cast<uint32_t>(r.size());
    d.rows = 1;
    d.buf = dev_.create_buffer(r.size() * 4, vk::BufferKind::Device, kWeights);
    dev_.upload(d.buf, std::span<const float>(all).subspan(r.begin, r.size()));
    advance(r.size() * 4);
    return d;
  }
  DeviceTensor vector(const std::string& name) {
    return vector(name, Range{0, file_.require_tensor(name).n_elements()});
  }

 private:
  void advance(uint64_t bytes) {
    done_ += bytes;
    if (progress_.on_upload) progress_.on_upload(std::min(done_, total_), total_);
  }

  const gguf::File& file_;
  vk::Device& dev_;
  const LoadProgress& progress_;
  uint64_t& done_;
  uint64_t total_;
};

split::MatrixFormat matrix_format(const gguf::File& f, const std::string& name) {
  const gguf::TensorInfo& t = f.require_tensor(name);
  return split::MatrixFormat{t.traits->block_elems, device_block_bytes(t.type), 1};
}

}  // namespace

split::ModelShape model_shape(const ModelConfig& c, const gguf::File& f) {
  split::ModelShape m;
  m.n_layer = c.n_layer;
  m.n_embd = c.n_embd;
  m.n_head = c.n_head;
  m.n_head_kv = c.n_head_kv;
  m.head_dim = c.head_dim;
  m.n_ff = c.n_ff;
  m.n_vocab = c.n_vocab;
  m.qkv_bias = c.qkv_bias;
  m.tied_output = c.tied_output;
  m.token_embd = matrix_format(f, "token_embd.weight");
  if (!c.tied_output) m.output = matrix_format(f, "output.weight");
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    split::LayerFormats lf;
    lf.attn_q = matrix_format(f, layer_tensor(l, "attn_q.weight"));
    lf.attn_k = matrix_format(f, layer_tensor(l, "attn_k.weight"));
    lf.attn_v = matrix_format(f, layer_tensor(l, "attn_v.weight"));
    lf.attn_output = matrix_format(f, layer_tensor(l, "attn_output.weight"));
    lf.ffn_gate = matrix_format(f, layer_tensor(l, "ffn_gate.weight"));
    lf.ffn_up = matrix_format(f, layer_tensor(l, "ffn_up.weight"));
    lf.ffn_down = matrix_format(f, layer_tensor(l, "ffn_down.weight"));
    m.layers.push_back(lf);
  }
  return m;
}

Model::Model(gguf::File file, ModelConfig config)
    : file_(std::move(file)), config_(std::move(config)), impl_(std::make_unique<Impl>()) {}

Model::~Model() = default;

const split::Plan& Model::plan() const { return impl_->plan; }
size_t Model::n_devices() const { return impl_->shards.size(); }
vk::Device& Model::device(size_t i) const { return *impl_->shards.at(i).dev; }

std::unique_ptr<Model> Model::load(const std::string& path, vk::Device& device, const LoadProgress& progress) {
  return load(path, std::vector<vk::Device*>{&device}, split::SplitRequest{split::SplitMode::none, {1.0}, 0},
              progress);
}

std::unique_ptr<Model> Model::load(const std::string& path, const std::vector<vk::Device*>& devices,
                                   const split::SplitRequest& request, const LoadProgress& progress) {
  if (devices.empty()) throw std::invalid_argument("no devices to load the model on");
  if (request.ratios.size() != devices.size())
    throw std::invalid_argument(std::to_string(devices.size()) + " devices but " + std::to_string(request.ratios.size()) +
                                " split ratios");
  gguf::File file = gguf::File::open(path);
  ModelConfig config = ModelConfig::from_gguf(file);
  for (const auto& t : file.tensors()) check_weight_type(file, t);
  std::unique_ptr<Model> m(new Model(std::move(file), std::move(config)));
  const ModelConfig& c = m->config_;
  Impl& w = *m->impl_;
  w.plan = split::plan_split(model_shape(c, m->file_), request);

  uint64_t total = 0, done = 0;
  for (const split::DeviceBytes& b : split::weight_bytes(w.plan)) total += b.total();
  for (size_t d = 0; d < devices.size(); ++d) {
    Shard s;
    s.dev = devices[d];
    s.kernels = std::make_unique<ops::Kernels>(*devices[d]);
    s.spec = w.plan.devices[d];
    s.layers.resize(c.n_layer);
    Uploader up(m->file_, *devices[d], progress, done, total);
    const split::DeviceShard& sp = s.spec;
    if (sp.embedding) s.tok_embd = up.rows("token_embd.weight", Range{0, c.n_vocab});
    for (uint64_t l = sp.layers.begin; l < sp.layers.end; ++l) {
      const uint32_t li = static_cast<uint32_t>(l);
      Layer& L = s.layers[li];
      L.attn_norm = up.vector(layer_tensor(li, "attn_norm.weight"));
      L.wq = up.rows(layer_tensor(li, "attn_q.weight"), sp.q_rows);
      L.wk = up.rows(layer_tensor(li, "attn_k.weight"), sp.kv_rows);
      L.wv = up.rows(layer_tensor(li, "attn_v.weight"), sp.kv_rows);
      if (c.qkv_bias) {
        L.bq = up.vector(layer_tensor(li, "attn_q.bias"), sp.q_rows);
        L.bk = up.vector(layer_tensor(li, "attn_k.bias"), sp.kv_rows);
        L.bv = up.vector(layer_tensor(li, "attn_v.bias"), sp.kv_rows);
      }
      L.wo = up.cols(layer_tensor(li, "attn_output.weight"), sp.q_rows);
      L.ffn_norm = up.vector(layer_tensor(li, "ffn_norm.weight"));
      L.w_gate = up.rows(layer_tensor(li, "ffn_gate.weight"), sp.ffn);
      L.w_up = up.rows(layer_tensor(li, "ffn_up.weight"), sp.ffn);
      L.w_down = up.cols(layer_tensor(li, "ffn_down.weight"), sp.ffn);
    }
    if (sp.output_norm) s.output_norm = up.vector("output_norm.weight");
    // Tied LM heads read their rows from the whole token_embd when the device holds it.
    if (sp.vocab.size() && !(c.tied_output && sp.embedding))
      s.lm_head = up.rows(c.tied_output ? "token_embd.weight" : "output.weight", sp.vocab);
    w.shards.push_back(std::move(s));
  }
  m->file_.drop_tensor_pages();  // the weights live on the devices now
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

// What one device keeps for a context: its KV cache and scratch for n_ubatch tokens.
struct DeviceState {
  Shard* shard;
  vk::Device* dev;
  ops::Kernels* k;
  uint32_t n_q, n_kv, n_ff, n_vocab;  // local widths: its Q rows, KV rows, FFN rows, vocab rows
  uint32_t n_kv_heads;
  uint64_t cache_bytes_per_seq = 0;
  std::vector<vk::Buffer> k_cache, v_cache;  // per layer (its layers): n_seq x [kv heads][n_ctx][head_dim] f16

  vk::Buffer ids;      // [T] u32 token ids, host-visible
  vk::Buffer pos;      // [T] i32 positions, host-visible
  vk::Buffer x;        // [T][n_embd] residual stream (every device keeps the whole of it)
  vk::Buffer h;        // [T][n_embd] normed input, or the local projection output
  vk::Buffer q;        // [T][n_q]
  vk::Buffer kk;       // [T][n_kv]
  vk::Buffer vv;       // [T][n_kv]
  vk::Buffer att;      // [T][n_q]
  vk::Buffer gate;     // [T][n_ff]
  vk::Buffer up;       // [T][n_ff]
  vk::Buffer sel;      // [T][n_embd] rows whose logits are wanted
  vk::Buffer outbox;   // [T][n_embd] host-visible: this device's partial sum (or hidden state)
  vk::Buffer inbox;    // [T][n_embd] host-visible: the reduced sum (or incoming hidden state)
  vk::Buffer mv_scratch;  // x quantised for int8 matvec kernels, 3 slots
  uint64_t mv_slot = 0;
  vk::Buffer logits;      // [rows][n_vocab local], grown on demand
  vk::Buffer readback;    // host-visible copy of logits
  uint32_t logits_rows = 0;

  vk::CommandBuffer* cb = nullptr;            // the command buffer being recorded
  std::unique_ptr<vk::CommandBuffer> scratch_cb;  // for host-synchronous steps
  std::unique_ptr<vk::Timeline> done;
  uint64_t done_value = 0;
  // Recorded decode steps, replayed token after token: one command buffer alone, or the
  // segments between a tensor split's reduce points.
  std::vector<std::unique_ptr<vk::CommandBuffer>> segments;
};

// The forward pass recorded for one token of one sequence, replayable while this holds.
struct Recorded {
  bool valid = false;
  uint32_t seq = 0;
  uint32_t out_rows = 0;
};

}  // namespace

struct Context::Impl {
  Model& model;
  const ModelConfig& c;
  const split::Plan& plan;
  uint32_t n_ctx, n_seq, n_ubatch;
  std::vector<uint32_t> lengths;  // tokens held per sequence
  ContextCounters counters;
  std::vector<DeviceState> devs;  // one per device that holds anything
  std::vector<float> reduce_sum;  // host scratch for the host-synchronous reduce
  bool serialise;
  // Tensor split with several devices: the collective for micro-batches of up to
  // kCollectiveTokens tokens (decode); longer ones (prefill) reduce host-synchronously.
  static constexpr uint32_t kCollectiveTokens = 16;
  // ContextOptions::stall: the injected stall's device, its reduce point and the timeline
  // that device's segment waits for (signalled only by ~Impl). Declared before the collective
  // so it outlives the collective's drain.
  std::optional<std::pair<uint32_t, uint32_t>> stall;
  std::unique_ptr<vk::Timeline> stall_timeline;
  std::unique_ptr<split::Collective> collective;
  Recorded recorded;

  Impl(Model& m, const ContextOptions& o)
      : model(m), c(m.config()), plan(m.plan()),
        n_ctx(o.n_ctx ? o.n_ctx : std::min<uint32_t>(m.config().n_ctx_train, 4096)), n_seq(o.n_seq),
        n_ubatch(o.n_ubatch), lengths(o.n_seq, 0), serialise(o.serialise) {
    if (n_seq == 0 || n_ubatch == 0 || n_ctx == 0)
      throw std::invalid_argument("context: n_ctx, n_seq and n_ubatch must be positive");
    for (Shard& s : m.impl().shards)
      if (!s.spec.empty()) devs.push_back(make_state(s));
    reduce_sum.resize(size_t(n_ubatch) * c.n_embd);
    if (devs.size() > 1 && plan.mode == split::SplitMode::tensor && !serialise) {
      std::vector<vk::Device*> members;
      for (DeviceState& d : devs) members.push_back(d.dev);
      split::CollectiveOptions co;
      co.max_points = 2 * c.n_layer;
      co.max_floats = kCollectiveTokens * c.n_embd;
      collective = std::make_unique<split::Collective>(members, co);
    }
    stall = o.stall ? o.stall : stall_from_environment();
    if (stall) {
      if (devs.size() < 2 || plan.mode != split::SplitMode::tensor)
        throw std::invalid_argument("context: the injected stall (CHORUS_FAULT_STALL) needs a tensor split over several "
                                    "devices");
      if (stall->first >= devs.size() || stall->second >= 2 * c.n_layer)
        throw std::invalid_argument("context: the injected stall names device " + std::to_string(stall->first) +
                                    " and reduce point " + std::to_string(stall->second) + "; expected a device below " +
                                    std::to_string(devs.size()) + " and a point below " + std::to_string(2 * c.n_layer));
      stall_timeline = std::make_unique<vk::Timeline>(*devs[stall->first].dev, "injected stall");
    }
    for (DeviceState& d : devs) {
      const size_t n_segments = collective ? 2 * c.n_layer + 1 : 1;
      for (size_t i = 0; i < n_segments; ++i) d.segments.push_back(std::make_unique<vk::CommandBuffer>(*d.dev));
    }
  }

  // Nothing a device may still run is destroyed under it: after an error (a timeout on a slow
  // or stalled device) the work submitted last can still be pending. The collective drains its
  // own tokens; the other paths' last submit is d.done_value. An injected stall ends here (the
  // device answers again). A slow device gets its timeout, at least kTeardownNs, to finish;
  // one that does not keeps this context's buffers and command buffers (leaked: destroying
  // them in use is undefined behaviour).
  static constexpr uint64_t kTeardownNs = 120'000'000'000ull;
  ~Impl() {
    bool idle = true;
    try {
      if (stall_timeline) stall_timeline->signal(1);
      for (DeviceState& d : devs)
        idle = d.done->wait_for(d.done_value, std::max(d.dev->timeout_ns(), kTeardownNs)) && idle;
    } catch (...) {
      idle = false;
    }
    if (!idle) (void)new std::vector<DeviceState>(std::move(devs));
  }

  // CHORUS_FAULT_STALL=DEVICE:POINT (see ContextOptions::stall).
  static std::optional<std::pair<uint32_t, uint32_t>> stall_from_environment() {
    const char* e = std::getenv("CHORUS_FAULT_STALL");
    if (!e || !*e) return std::nullopt;
    unsigned device = 0, point = 0;
    char tail = 0;
    if (std::sscanf(e, "%u:%u%c", &device, &point, &tail) != 2)
      throw std::invalid_argument(std::string("CHORUS_FAULT_STALL is '") + e +
                                  "'; expected DEVICE:POINT, e.g. 1:3 (the second device stops before reduce point 3)");
    return std::pair<uint32_t, uint32_t>{device, point};
  }

  DeviceState make_state(Shard& s) {
    const uint32_t T = n_ubatch;
    DeviceState d;
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
    d.q = f32(uint64_t(T) * d.n_q);
    d.kk = f32(uint64_t(T) * d.n_kv);
    d.vv = f32(uint64_t(T) * d.n_kv);
    d.att = f32(uint64_t(T) * d.n_q);
    d.gate = f32(uint64_t(T) * d.n_ff);
    d.up = f32(uint64_t(T) * d.n_ff);
    d.sel = f32(uint64_t(T) * c.n_embd);
    if (devs_will_exchange()) {
      d.outbox = f32(uint64_t(T) * c.n_embd, vk::BufferKind::Host);
      d.inbox = f32(uint64_t(T) * c.n_embd, vk::BufferKind::Host);
    }
    uint64_t slot = 4;
    for (const Layer& L : s.layers)
      for (const DeviceTensor* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
        if (*t) slot = std::max(slot, ops::mul_mv_scratch_bytes(*d.k, t->type, t->cols));
    if (d.n_vocab) slot = std::max(slot, ops::mul_mv_scratch_bytes(*d.k, s.head().type, c.n_embd));
    d.mv_slot = (slot + 255) / 256 * 256;
    d.mv_scratch = dev.create_buffer(d.mv_slot * 3, vk::BufferKind::Device, kScratch);
    d.scratch_cb = std::make_unique<vk::CommandBuffer>(dev);
    d.cb = d.scratch_cb.get();
    d.done = std::make_unique<vk::Timeline>(dev, "forward pass done");
    grow_logits(d, 1);
    return d;
  }

  bool devs_will_exchange() const {
    size_t used = 0;
    for (const auto& s : plan.devices) used += s.empty() ? 0 : 1;
    return used > 1;
  }

  void grow_logits(DeviceState& d, uint32_t rows) {
    if (rows <= d.logits_rows || d.n_vocab == 0) return;
    d.logits = d.dev->create_buffer(uint64_t(rows) * d.n_vocab * 4, vk::BufferKind::Device, kScratch);
    d.readback = d.dev->create_buffer(uint64_t(rows) * d.n_vocab * 4, vk::BufferKind::Host, kScratch);
    d.logits_rows = rows;
  }

  // out[T][N] = in[T][K] * W^T: the matrix-vector kernel for one token, else the tiled one.
  // `slot` picks a region of the int8 scratch so back-to-back matvecs do not share it.
  static void linear(DeviceState& d, const DeviceTensor& w, uint64_t w_offset, uint32_t rows, const vk::Buffer& in,
                     uint32_t T, const vk::Buffer& out, uint64_t out_offset = 0, uint32_t slot = 0) {
    if (T == 1) {
      const ops::MatVecScratch s{&d.mv_scratch, d.mv_slot * slot};
      ops::mul_mv(*d.k, *d.cb, w.type, w.buf, w_offset, w.cols, rows, in, 0, out, out_offset, &s);
    } else {
      ops::mul_mm(*d.k, *d.cb, w.type, w.buf, w_offset, w.cols, rows, in, 0, T, out, out_offset);
    }
  }
  static void linear(DeviceState& d, const DeviceTensor& w, const vk::Buffer& in, uint32_t T, const vk::Buffer& out,
                     uint64_t out_offset = 0, uint32_t slot = 0) {
    linear(d, w, 0, w.rows, in, T, out, out_offset, slot);
  }

  ops::KvCache cache(const DeviceState& d, uint32_t layer, uint32_t seq) const {
    return ops::KvCache{d.n_kv_heads, n_ctx, c.head_dim, &d.k_cache[layer], d.cache_bytes_per_seq * seq,
                        &d.v_cache[layer], d.cache_bytes_per_seq * seq};
  }

  // ---- the steps of the forward pass, recorded into d.cb ----

  void embed(DeviceState& d, uint32_t T) {
    ops::GetRowsShape gr;
    gr.type = d.shard->tok_embd.type;
    gr.n = c.n_embd;
    gr.n_rows = c.n_vocab;
    gr.n_ids = T;
    ops::get_rows(*d.k, *d.cb, d.shard->tok_embd.buf, 0, d.ids, 0, d.x, 0, gr);
    d.cb->barrier();  // x is read by the first norm
  }

  // x += src (the reduced sum, or this device's own projection when it works alone).
  void add_residual(DeviceState& d, const vk::Buffer& src, uint32_t T, uint64_t src_offset = 0) {
    ops::add(*d.k, *d.cb, d.x, 0, src, src_offset, d.x, 0, T * c.n_embd, T * c.n_embd);
    d.cb->barrier();  // residual updated before the next norm reads it
  }

  // Attention block up to its output projection: writes this device's partial of
  // attn_output(attention(...)) [T][n_embd] into `out`.
  // With `replay`, positions come from d.pos at record time's place, so the recording serves
  // any position (one token of one sequence).
  void attention_block(DeviceState& d, uint32_t l, const std::vector<Piece>& pieces, uint32_t T, const vk::Buffer& out,
                       uint64_t out_offset = 0, bool replay = false) {
    const Layer& L = d.shard->layers[l];
    ops::Kernels& k = *d.k;
    vk::CommandBuffer& cb = *d.cb;
    ops::rms_norm(k, cb, d.x, 0, &L.attn_norm.buf, 0, d.h, 0, ops::RmsNormShape{c.n_embd, T, c.rms_eps});
    cb.barrier();  // h feeds Q, K, V
    linear(d, L.wq, d.h, T, d.q, 0, 0);
    linear(d, L.wk, d.h, T, d.kk, 0, 1);
    linear(d, L.wv, d.h, T, d.vv, 0, 2);
    cb.barrier();  // Q, K, V complete before bias / RoPE
    if (c.qkv_bias) {
      ops::add(k, cb, d.q, 0, L.bq.buf, 0, d.q, 0, T * d.n_q, d.n_q);
      ops::add(k, cb, d.kk, 0, L.bk.buf, 0, d.kk, 0, T * d.n_kv, d.n_kv);
      ops::add(k, cb, d.vv, 0, L.bv.buf, 0, d.vv, 0, T * d.n_kv, d.n_kv);
      cb.barrier();  // biased Q, K, V before RoPE and the cache store
    }
    ops::RopeShape rope;
    rope.n_tokens = T;
    rope.head_dim = c.head_dim;
    rope.n_dims = c.rope_dims;
    rope.neox = c.rope_neox;
    rope.freq_base = c.rope_base;
    rope.freq_scale = c.rope_freq_scale;
    rope.n_heads = d.n_q / c.head_dim;
    ops::rope(k, cb, d.q, 0, d.pos, 0, d.q, 0, rope);
    rope.n_heads = d.n_kv_heads;
    ops::rope(k, cb, d.kk, 0, d.pos, 0, d.kk, 0, rope);
    cb.barrier();  // rotated K goes into the cache; rotated Q into attention
    ops::KvStoreOptions ko;
    if (replay) ko.p0_buffer = &d.pos;
    for (const Piece& p : pieces)
      ops::kv_store(k, cb, cache(d, l, p.seq), d.kk, uint64_t(p.row) * d.n_kv * 4, d.vv, uint64_t(p.row) * d.n_kv * 4, p.n,
                    p.p0, ko);
    cb.barrier();  // the cache holds every position attention reads
    for (const Piece& p : pieces) attend(d, l, p, replay);
    cb.barrier();  // attention output feeds the output projection
    linear(d, L.wo, d.att, T, out, out_offset);
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
    if (replay) shape.p0_buffer = &d.pos;  // the token's position, written by the host per token
    if (skew == 0 && n_qh == d.n_kv_heads * g) {
      ops::attention(*d.k, *d.cb, cache(d, l, p.seq), shape, d.q, q_off, d.att, q_off);
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
      ops::attention(*d.k, *d.cb, one, shape, d.q, off, d.att, off, opt);
    }
  }

  // Feed-forward block: writes this device's partial of ffn_down(swiglu(...)) into `out`.
  void ffn_block(DeviceState& d, uint32_t l, uint32_t T, const vk::Buffer& out, uint64_t out_offset = 0) {
    const Layer& L = d.shard->layers[l];
    vk::CommandBuffer& cb = *d.cb;
    ops::rms_norm(*d.k, cb, d.x, 0, &L.ffn_norm.buf, 0, d.h, 0, ops::RmsNormShape{c.n_embd, T, c.rms_eps});
    cb.barrier();  // h feeds gate and up
    linear(d, L.w_gate, d.h, T, d.gate, 0, 0);
    linear(d, L.w_up, d.h, T, d.up, 0, 1);
    cb.barrier();  // gate and up complete before SwiGLU
    ops::swiglu(*d.k, cb, d.gate, 0, d.up, 0, d.gate, 0, ops::GluShape{d.n_ff, T});
    cb.barrier();  // activation feeds the down projection
    linear(d, L.w_down, d.gate, T, out, out_offset);
  }

  // Final norm and this device's vocabulary rows of the LM head for the wanted rows.
  void head(DeviceState& d, const std::vector<Piece>& pieces, uint32_t T, uint32_t n_out) {
    if (d.n_vocab == 0 || n_out == 0) return;
    const Shard& s = *d.shard;
    vk::CommandBuffer& cb = *d.cb;
    ops::rms_norm(*d.k, cb, d.x, 0, &s.output_norm.buf, 0, d.h, 0, ops::RmsNormShape{c.n_embd, T, c.rms_eps});
    cb.barrier();  // normed rows feed the LM head (or the gather)
    const vk::Buffer* in = &d.h;
    if (n_out != T) {
      uint32_t out = 0;
      for (const Piece& p : pieces) {
        if (p.out_rows == 0) continue;
        ops::CopyShape cs;
        cs.ne0 = c.n_embd * p.out_rows;
        ops::copy(*d.k, cb, d.h, uint64_t(p.row + p.n - p.out_rows) * c.n_embd * 4, GgmlType::F32, d.sel,
                  uint64_t(out) * c.n_embd * 4, GgmlType::F32, cs);
        out += p.out_rows;
      }
      cb.barrier();  // gathered rows feed the LM head
      in = &d.sel;
    }
    linear(d, s.head(), s.head_offset(), d.n_vocab, *in, n_out, d.logits);
    cb.barrier();  // logits complete before the copy to host-visible memory
    cb.copy(d.logits, 0, d.readback, 0, uint64_t(n_out) * d.n_vocab * 4);
  }

  // ---- running ----

  void begin(DeviceState& d) {
    d.cb = d.scratch_cb.get();
    d.cb->begin();
  }

  // Ends and submits d's command buffer, the step before reduce point `point` of a
  // host-synchronous tensor split (or -1).
  void finish(DeviceState& d, int point = -1) {
    d.cb->barrier_to_host();  // the host reads outbox / readback after the timeline signal
    d.cb->end();
    // done_value counts submits that happened: ~Impl waits for it.
    const vk::Device::TimelinePoint signal{d.done.get(), d.done_value + 1};
    const vk::Device::TimelinePoint stalled{stall_timeline.get(), 1};
    const bool stop = stall_timeline && point == int(stall->second) && &d == &devs[stall->first];
    d.dev->submit(*d.cb, stop ? std::span(&stalled, 1) : std::span<const vk::Device::TimelinePoint>(),
                  std::span(&signal, 1));
    ++d.done_value;
  }
  void wait(DeviceState& d, int point = -1) {
    d.done->wait(d.done_value, point < 0 ? std::string("a forward pass step")
                                         : "its partial for reduce point " + std::to_string(point));
    ++counters.host_waits;
  }

  // Whether the recorded decode step can serve this one (one token of the same sequence).
  bool can_replay(const std::vector<Piece>& pieces, bool replay) const {
    return replay && recorded.valid && recorded.seq == pieces[0].seq && recorded.out_rows == pieces[0].out_rows;
  }
  void note_recording(const std::vector<Piece>& pieces, bool replay) {
    recorded = Recorded{replay, pieces[0].seq, pieces[0].out_rows};
    ++counters.recordings;
  }

  // Sums the outboxes of the devices `take` selects, in device order, into every inbox.
  template <typename Take>
  void host_reduce(uint32_t T, Take take) {
    const size_t n = size_t(T) * c.n_embd;
    std::fill(reduce_sum.begin(), reduce_sum.begin() + n, 0.0f);
    for (DeviceState& d : devs) {
      if (!take(d)) continue;
      const float* part = reinterpret_cast<const float*>(d.outbox.mapped());
      for (size_t i = 0; i < n; ++i) reduce_sum[i] += part[i];
    }
    for (DeviceState& d : devs) std::memcpy(d.inbox.mapped(), reduce_sum.data(), n * 4);
  }

  uint32_t forward(const std::vector<Piece>& pieces, uint32_t T) {
    uint32_t n_out = 0;
    for (const Piece& p : pieces) n_out += p.out_rows;
    for (DeviceState& d : devs) grow_logits(d, n_out);
    // One token of one sequence: the recording does not depend on its position (which the
    // kernels read from d.pos), so it is recorded once and replayed.
    const bool replay = pieces.size() == 1 && T == 1;
    if (devs.size() == 1)
      forward_alone(devs[0], pieces, T, n_out, replay);
    else if (plan.mode == split::SplitMode::layer)
      forward_layers(pieces, T, n_out);
    else if (collective && T <= kCollectiveTokens)
      forward_collective(pieces, T, n_out, replay);
    else
      forward_tensor(pieces, T, n_out);
    ++counters.forward_passes;
    counters.tokens += T;
    return n_out;
  }

  // One device holds everything: one command buffer, residual adds on the device.
  void forward_alone(DeviceState& d, const std::vector<Piece>& pieces, uint32_t T, uint32_t n_out, bool replay) {
    vk::CommandBuffer& seg = *d.segments[0];
    if (!can_replay(pieces, replay)) {
      d.cb = &seg;
      seg.begin();
      embed(d, T);
      for (uint32_t l = 0; l < c.n_layer; ++l) {
        attention_block(d, l, pieces, T, d.h, 0, replay);
        seg.barrier();  // projection complete before the residual add
        add_residual(d, d.h, T);
        ffn_block(d, l, T, d.h);
        seg.barrier();  // projection complete before the residual add
        add_residual(d, d.h, T);
      }
      head(d, pieces, T, n_out);
      seg.barrier_to_host();  // the host reads readback after the timeline signal
      seg.end();
      note_recording(pieces, replay);
    }
    const vk::Device::TimelinePoint signal{d.done.get(), d.done_value + 1};
    d.dev->submit(seg, {}, std::span(&signal, 1));
    ++d.done_value;  // after the submit: ~Impl waits for it
    wait(d);
  }

  // Tensor split through the collective: each device's token is 2 * n_layer + 1 segments in
  // one submit; after segment k the proxy sums every device's partial of reduce point k
  // (attention output of layer k/2, or its FFN output) and every device adds the sum to its
  // residual at the start of segment k + 1. docs/sync.md has the ordering rules.
  void forward_collective(const std::vector<Piece>& pieces, uint32_t T, uint32_t n_out, bool replay) {
    split::Collective& coll = *collective;
    const uint32_t P = 2 * c.n_layer;
    const uint64_t partial_bytes = uint64_t(T) * c.n_embd * 4;
    if (!can_replay(pieces, replay)) {
      for (size_t di = 0; di < devs.size(); ++di) {
        DeviceState& d = devs[di];
        for (uint32_t k = 0; k <= P; ++k) {
          d.cb = d.segments[k].get();
          d.cb->begin();
          if (k == 0) {
            embed(d, T);
          } else {
            split::Collective::record_acquire(*d.cb);  // the proxy's sum is visible before the add reads it
            add_residual(d, coll.results(di), T, coll.result_offset(di, k - 1));
          }
          if (k == P) {
            head(d, pieces, T, n_out);
            d.cb->barrier_to_host();  // the host reads readback after the token's end
          } else {
            const vk::Buffer& out = coll.partials(di);
            const uint64_t off = coll.partial_offset(di, k);
            const uint32_t l = k / 2;
            if (k % 2 == 0 && d.n_q)
              attention_block(d, l, pieces, T, out, off, replay);
            else if (k % 2 == 1 && d.n_ff)
              ffn_block(d, l, T, out, off);
            else
              d.cb->fill(out, off, partial_bytes, 0);  // no share of this block: it adds zero
            split::Collective::record_publish(*d.cb);  // the partial is visible to the proxy
          }
          d.cb->end();
        }
        d.cb = d.scratch_cb.get();
      }
      note_recording(pieces, replay);
    }
    std::vector<std::vector<split::Collective::Segment>> segments(devs.size());
    for (size_t di = 0; di < devs.size(); ++di)
      for (const auto& seg : devs[di].segments) segments[di].push_back(split::Collective::Segment{seg.get()});
    const split::Collective::TimelinePoint stalled{stall_timeline.get(), 1};
    if (stall_timeline) segments[stall->first][stall->second].waits = std::span(&stalled, 1);
    const std::vector<uint32_t> floats(P, T * c.n_embd);
    coll.wait(coll.submit(segments, floats));
    ++counters.host_waits;
  }

  // Tensor split: every device runs every layer on its shard; after each attention and FFN
  // block the partial sums meet on the host and every device adds the total.
  void forward_tensor(const std::vector<Piece>& pieces, uint32_t T, uint32_t n_out) {
    for (uint32_t l = 0; l <= c.n_layer; ++l) {
      for (int block = 0; block < 2; ++block) {
        if (l == c.n_layer && block == 1) break;
        const int point = l < c.n_layer ? int(2 * l) + block : -1;
        for (DeviceState& d : devs) {
          begin(d);
          if (l == 0 && block == 0)
            embed(d, T);
          else
            add_residual(d, d.inbox, T);
          if (l == c.n_layer)
            head(d, pieces, T, n_out);
          else if (block == 0 && d.n_q)
            attention_block(d, l, pieces, T, d.outbox);
          else if (block == 1 && d.n_ff)
            ffn_block(d, l, T, d.outbox);
          finish(d, point);
        }
        for (DeviceState& d : devs) wait(d, point);
        if (l < c.n_layer) host_reduce(T, [&](const DeviceState& d) { return block == 0 ? d.n_q > 0 : d.n_ff > 0; });
      }
    }
  }

  // Layer split: each device runs its layers in turn; the hidden state moves through the host.
  void forward_layers(const std::vector<Piece>& pieces, uint32_t T, uint32_t n_out) {
    const size_t n = size_t(T) * c.n_embd;
    for (size_t i = 0; i < devs.size(); ++i) {
      DeviceState& d = devs[i];
      const split::DeviceShard& sp = d.shard->spec;
      begin(d);
      if (sp.embedding) {
        embed(d, T);
      } else {
        d.cb->copy(d.inbox, 0, d.x, 0, n * 4);
        d.cb->barrier();  // the incoming hidden state is in x before the first norm
      }
      for (uint64_t l = sp.layers.begin; l < sp.layers.end; ++l) {
        attention_block(d, static_cast<uint32_t>(l), pieces, T, d.h);
        d.cb->barrier();  // projection complete before the residual add
        add_residual(d, d.h, T);
        ffn_block(d, static_cast<uint32_t>(l), T, d.h);
        d.cb->barrier();  // projection complete before the residual add
        add_residual(d, d.h, T);
      }
      if (sp.vocab.size())
        head(d, pieces, T, n_out);
      else
        d.cb->copy(d.x, 0, d.outbox, 0, n * 4);
      finish(d);
      wait(d);
      if (i + 1 < devs.size()) std::memcpy(devs[i + 1].inbox.mapped(), d.outbox.mapped(), n * 4);
    }
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
  }
  return out;
}

void Context::clear(uint32_t seq) { impl_->lengths.at(seq) = 0; }
uint32_t Context::length(uint32_t seq) const { return impl_->lengths.at(seq); }
uint32_t Context::n_ctx() const { return impl_->n_ctx; }
uint32_t Context::n_seq() const { return impl_->n_seq; }
const ModelConfig& Context::config() const { return impl_->c; }
const ContextCounters& Context::counters() const { return impl_->counters; }

std::optional<split::CollectiveStats> Context::collective_stats() const {
  if (!impl_->collective) return std::nullopt;
  return impl_->collective->stats();
}

std::vector<DeviceMemoryUse> Context::memory_use() const {
  std::vector<DeviceMemoryUse> out;
  for (const DeviceState& d : impl_->devs) {
    const vk::Allocator& a = d.dev->allocator();
    out.push_back(DeviceMemoryUse{d.dev->label(), a.in_use(kWeights), a.in_use(kKvCache), a.in_use(kScratch)});
  }
  return out;
}

}  // namespace chorus
