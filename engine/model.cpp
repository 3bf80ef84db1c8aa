#include "engine/model.h"

#include <sys/mman.h>
#include <unistd.h>
#include "engine/weights.h"

#include <algorithm>
#include <array>
#include <optional>
#include <span>
#include <cstring>
#include <stdexcept>

#include "engine/ops/kernels.h"
#include "engine/quant.h"

namespace chorus {

// ---- weights -------------------------------------------------------------------------------

namespace {

using split::Range;

void check_weight_type(const gguf::File& f, const gguf::TensorInfo& t) {
  static const std::vector<GgmlType> types = weight_types();
  if (std::find(types.begin(), types.end(), t.type) == types.end())
    throw gguf::Error(f.path() + ": tensor '" + std::string(t.name) + "' has type " + t.traits->name +
                      ", which chorus has no kernels for (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K..Q6_K)");
}

// Where a matrix shard goes: a buffer shared with other shards, at a byte offset.
struct Place {
  std::shared_ptr<vk::Buffer> mem;
  uint64_t offset = 0;
};

// Copies shards of the file's tensors to one device.
class Uploader {
 public:
  Uploader(const gguf::File& f, vk::Device& d, const LoadProgress& p, uint64_t& done, uint64_t total)
      : file_(f), dev_(d), progress_(p), done_(done), total_(total) {}

  // Rows [rows.begin, rows.end) of a matrix (ne1 is the row index): contiguous in the file.
  // Into a buffer of its own, or at `into` (a buffer the caller sized).
  DeviceTensor rows(const std::string& name, Range r, const Place* into = nullptr) {
    return expert_rows(name, r, 1, into);
  }

  // Rows [r.begin, r.end) of each of `experts` matrices of ne1 rows stored one after another
  // (a 3-D expert stack; 1: a plain matrix): on the device expert after expert, r.size() rows each.
  DeviceTensor expert_rows(const std::string& name, Range r, uint64_t experts, const Place* into = nullptr) {
    const gguf::TensorInfo& t = file_.require_tensor(name);
    DeviceTensor d;
    if (r.size() == 0) return d;
    d.type = t.type;
    d.cols = static_cast<uint32_t>(t.ne[0]);
    d.rows = static_cast<uint32_t>(r.size());
    const uint64_t rb = t.row_bytes(), drb = *device_row_bytes(t.type, t.ne[0]);
    const uint64_t per_expert = experts == 1 ? 0 : t.ne[1];  // file rows between experts
    std::shared_ptr<vk::Buffer> mem =
        into ? into->mem
             : std::make_shared<vk::Buffer>(dev_.create_buffer(drb * r.size() * experts, vk::BufferKind::Device, kWeights));
    d.offset = into ? into->offset : 0;
    d.mem = mem;
    for (uint64_t e = 0; e < experts; ++e) {
      const uint64_t first = e * per_expert + r.begin, dst = d.offset + e * drb * r.size();
      if (drb == rb) {
        dev_.upload(*mem, dst, std::as_bytes(t.data.subspan(rb * first, rb * r.size())));
      } else {  // the device layout differs (Q6_K): converted in pieces of about 16 MiB
        const uint64_t step = std::max<uint64_t>(1, (16u << 20) / drb);
        for (uint64_t r0 = 0; r0 < r.size(); r0 += step) {
          const uint64_t n = std::min(step, r.size() - r0);
          const std::vector<uint8_t> piece =
              rows_to_device(t.type, t.data.subspan(rb * (first + r0), rb * n), t.ne[0], n);
          dev_.upload(*mem, dst + drb * r0, std::as_bytes(std::span<const uint8_t>(piece)));
        }
      }
      release(t.data.subspan(rb * first, rb * r.size()));
    }
    advance(drb * r.size() * experts);
    return d;
  }

  // Columns [k.begin, k.end) of every row (a K slice, whole quantisation blocks); of a 3-D
  // expert stack, every row of every expert (rows = ne1 * ne2, expert after expert).
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
    auto mem = std::make_shared<vk::Buffer>(dev_.create_buffer(shard.size(), vk::BufferKind::Device, kWeights));
    dev_.upload(*mem, std::span<const uint8_t>(shard));
    d.mem = std::move(mem);
    advance(shard.size());
    release(t.data);
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
    auto mem = std::make_shared<vk::Buffer>(dev_.create_buffer(r.size() * 4, vk::BufferKind::Device, kWeights));
    dev_.upload(*mem, std::span<const float>(all).subspan(r.begin, r.size()));
    d.mem = std::move(mem);
    advance(r.size() * 4);
    return d;
  }
  DeviceTensor vector(const std::string& name) {
    return vector(name, Range{0, file_.require_tensor(name).n_elements()});
  }

 private:
  // Drops the file's pages once they are on the device: a read-only file mapping refills them
  // from the file if read again, and the process's peak memory then holds one tensor of the
  // file at a time instead of the whole file next to the weights.
  static void release(std::span<const uint8_t> bytes) {
    const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(bytes.data()) + page - 1) / page * page;
    const uintptr_t end = (reinterpret_cast<uintptr_t>(bytes.data()) + bytes.size()) / page * page;
    if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  }

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

// The output rows (or vector elements) a device holds of a tensor cut by rows.
Range device_rows(const split::DeviceShard& sp, Cut cut) {
  switch (cut) {
    case Cut::q_rows: return sp.q_rows;
    case Cut::kv_rows: return sp.kv_rows;
    case Cut::ffn_rows: return sp.ffn;
    default: throw std::logic_error("device_rows: not a row cut");
  }
}

// Row-cut matrices a decode step multiplies by one vector: the loader puts a device's rows of
// each group one after another into one buffer when their formats agree, so that one product
// reads them all (engine/forward.cpp fuses what it finds adjacent; DeviceTensor::followed_by).
constexpr LayerTensor kQkvGroup[] = {LayerTensor::attn_q, LayerTensor::attn_k, LayerTensor::attn_v};
constexpr LayerTensor kGateUpGroup[] = {LayerTensor::ffn_gate, LayerTensor::ffn_up};
constexpr std::span<const LayerTensor> kAdjacentGroups[] = {kQkvGroup, kGateUpGroup};

// Where each grouped matrix of layer l goes on a device; empty for matrices loaded alone.
std::array<std::optional<Place>, kLayerTensors> adjacent_places(const gguf::File& f, const ModelConfig& c,
                                                                const split::DeviceShard& sp, uint32_t l,
                                                                vk::Device& dev) {
  std::array<std::optional<Place>, kLayerTensors> places;
  for (std::span<const LayerTensor> group : kAdjacentGroups) {
    struct Part {
      LayerTensor id;
      const gguf::TensorInfo* t;
      Range r;
    };
    std::vector<Part> parts;
    for (LayerTensor id : group)
      for (const TensorSpec& spec : c.layer_table) {
        if (spec.ne2 != Dim::one) continue;  // expert stacks are read per expert, not as one product
        if (spec.id == id && spec.segments.empty() && c.has(id))
          parts.push_back({id, &f.require_tensor(layer_tensor(l, spec.name)), device_rows(sp, spec.cut)});
        for (const Segment& g : spec.segments)
          if (g.id == id) parts.push_back({id, &f.require_tensor(layer_tensor(l, spec.name)), device_rows(sp, g.cut)});
      }
    if (parts.size() != group.size()) continue;
    uint64_t total = 0;
    bool same = true;
    for (const Part& p : parts) {
      same = same && p.r.size() > 0 && p.t->type == parts[0].t->type && p.t->ne[0] == parts[0].t->ne[0];
      total += p.r.size() * (*device_row_bytes(p.t->type, p.t->ne[0]));
    }
    if (!same) continue;
    auto mem = std::make_shared<vk::Buffer>(dev.create_buffer(total, vk::BufferKind::Device, kWeights));
    uint64_t offset = 0;
    for (const Part& p : parts) {
      places[static_cast<size_t>(p.id)] = Place{mem, offset};
      offset += p.r.size() * (*device_row_bytes(p.t->type, p.t->ne[0]));
    }
  }
  return places;
}

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
  m.n_expert = c.n_expert;
  m.n_expert_used = c.n_expert_used;
  m.qkv_bias = c.qkv_bias;
  m.qk_norm = c.qk_norm;
  m.post_norms = c.post_norms;
  m.tied_output = c.tied_output;
  m.token_embd = matrix_format(f, "token_embd.weight");
  if (!c.tied_output) m.output = matrix_format(f, "output.weight");
  using L = LayerTensor;
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    const auto fmt = [&](L t) { return matrix_format(f, layer_tensor(c, l, t)); };
    m.layers.push_back(split::LayerFormats{fmt(L::attn_q), fmt(L::attn_k), fmt(L::attn_v), fmt(L::attn_output),
                                           fmt(L::ffn_gate), fmt(L::ffn_up), fmt(L::ffn_down),
                                           c.n_expert ? fmt(L::ffn_gate_inp) : split::MatrixFormat{}});
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
      const auto places = adjacent_places(m->file_, c, sp, static_cast<uint32_t>(l), *devices[d]);
      const auto place = [&](LayerTensor id) { return places[static_cast<size_t>(id)] ? &*places[static_cast<size_t>(id)] : nullptr; };
      for (const TensorSpec& t : c.layer_table) {
        // A device with no share of a block (a tensor split's rounding) holds none of its
        // tensors, except those applied to the reduced sum, which every device adds.
        const bool attention = t.id < LayerTensor::ffn_norm;
        if (!c.has(t.id) || (t.cut != Cut::reduced && (attention ? sp.q_rows : sp.ffn).size() == 0)) continue;
        const std::string name = layer_tensor(static_cast<uint32_t>(l), t.name);
        if (!t.segments.empty()) {  // fused: each segment's rows of this device into its role's slot
          uint64_t base = 0;
          for (const Segment& g : t.segments) {
            const Range r = device_rows(sp, g.cut);
            s.layers[l][g.id] = up.rows(name, Range{base + r.begin, base + r.end}, place(g.id));
            base += dim(c, g.rows);
          }
          continue;
        }
        DeviceTensor& dst = s.layers[l][t.id];
        const bool vector = t.ne1 == Dim::one;
        switch (t.cut) {
          case Cut::whole:
          case Cut::reduced: dst = vector ? up.vector(name) : up.rows(name, Range{0, dim(c, t.ne1)}); break;
          case Cut::q_rows:
          case Cut::kv_rows:
          case Cut::ffn_rows: {
            const Range r = device_rows(sp, t.cut);
            dst = vector ? up.vector(name, r) : up.expert_rows(name, r, dim(c, t.ne2), place(t.id));
            break;
          }
          case Cut::q_cols: dst = up.cols(name, sp.q_rows); break;
          case Cut::ffn_cols: dst = up.cols(name, sp.ffn); break;
        }
      }
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

}  // namespace chorus
