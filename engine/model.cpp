#include "engine/model.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "engine/weights.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <array>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <span>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "engine/ops/kernels.h"
#include "engine/quant.h"
#include "vkdevice/cache_file.h"

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

// Reads pieces of a file straight into mapped device memory on every core at once: one core's
// copy out of the page cache (and the first touch of the fresh memory) runs at a fraction of
// the memory's bandwidth. read() queues a piece (blocking while kMaxQueued bytes wait) and
// returns; finish() waits for every piece and rethrows the first failure.
class ReadPool {
 public:
  ReadPool(const std::string& path, int fd, unsigned threads) : path_(path), fd_(fd) {
    for (unsigned t = 0; t < std::max(1u, threads); ++t) workers_.emplace_back([this] { work(); });
  }
  ~ReadPool() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    changed_.notify_all();
    for (std::thread& t : workers_) t.join();  // a worker finishes its piece first: the memory outlives it
  }
  ReadPool(const ReadPool&) = delete;
  ReadPool& operator=(const ReadPool&) = delete;

  // `keep` holds the memory alive until the piece is read. With `row` set, the bytes are rows
  // of `row` bytes that go `drow` (>= row) bytes apart at dst, the gap zeroed (rows padded on
  // the device, engine/quant.h): each piece holds whole rows.
  void read(std::shared_ptr<vk::Buffer> keep, std::byte* dst, uint64_t file_offset, uint64_t bytes, uint64_t row = 0,
            uint64_t drow = 0) {
    constexpr uint64_t kPiece = 4ull << 20;
    if (row == drow) row = drow = 1;  // one run of bytes: pieces of any size
    if (row == 0 || drow < row || bytes % row != 0) throw std::logic_error("ReadPool::read: rows that do not fit their stride");
    const uint64_t rows_per_piece = std::max<uint64_t>(1, kPiece / row);
    for (uint64_t r0 = 0; r0 * row < bytes; r0 += rows_per_piece) {
      const uint64_t n = std::min(rows_per_piece * row, bytes - r0 * row);
      std::unique_lock lock(mutex_);
      changed_.wait(lock, [&] { return queued_bytes_ < kMaxQueued || error_; });
      if (error_) break;  // finish() reports it
      queue_.push_back(Piece{keep, dst + r0 * drow, file_offset + r0 * row, n, row, drow});
      queued_bytes_ += n;
      changed_.notify_all();
    }
  }

  void finish() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return (queue_.empty() && busy_ == 0) || error_; });
    if (error_) std::rethrow_exception(error_);
  }

 private:
  static constexpr uint64_t kMaxQueued = 64ull << 20;
  struct Piece {
    std::shared_ptr<vk::Buffer> keep;
    std::byte* dst;
    uint64_t at, n;
    uint64_t row, drow;  // rows of `row` bytes placed `drow` apart (equal: one run of bytes)
  };

  void work() {
    for (;;) {
      Piece p;
      {
        std::unique_lock lock(mutex_);
        changed_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping
        p = std::move(queue_.front());
        queue_.pop_front();
        ++busy_;
      }
      std::exception_ptr failed;
      try {
        read_piece(p);
      } catch (...) {
        failed = std::current_exception();
      }
      std::lock_guard lock(mutex_);
      --busy_;
      queued_bytes_ -= p.n;
      if (failed && !error_) {  // drop what is queued; pieces other workers hold still count down
        error_ = failed;
        for (const Piece& q : queue_) queued_bytes_ -= q.n;
        queue_.clear();
      }
      changed_.notify_all();
    }
  }

  void read_piece(const Piece& p) const {
#ifdef MADV_POPULATE_WRITE
    // Fresh device memory (lavapipe: this process's memory, not yet resident): its pages are
    // mapped in one call rather than by one fault per 4 KiB page during the read, which made
    // the upload 1.6x slower (docs/performance.md). Linux 5.14+; elsewhere, or for memory the
    // call does not apply to, the read faults them in as before.
    const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(p.dst) + page - 1) / page * page;
    const uint64_t span = p.row == p.drow ? p.n : (p.n + p.row - 1) / p.row * p.drow;
    const uintptr_t end = (reinterpret_cast<uintptr_t>(p.dst) + span) / page * page;
    if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE);
#endif
    std::byte* out = p.dst;
    uint64_t at = p.at, left = p.n;
    while (left > 0) {
      const ssize_t n = ::pread(fd_, out, left, static_cast<off_t>(at));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        throw gguf::Error(path_ + ": reading tensor data at byte " + std::to_string(at) + ": " +
                          (n < 0 ? std::strerror(errno) : "the file ended early (was it truncated while loading?)"));
      out += n;
      at += static_cast<uint64_t>(n);
      left -= static_cast<uint64_t>(n);
    }
    if (p.row == p.drow) return;
    // The rows were read one after another; spread them to their stride, the last first (row
    // i's source [i row, (i+1) row) lies below its place i drow, and above no earlier row's).
    for (uint64_t i = p.n / p.row; i-- > 0;) {
      std::memmove(p.dst + i * p.drow, p.dst + i * p.row, p.row);
      std::memset(p.dst + i * p.drow + p.row, 0, p.drow - p.row);
    }
  }

  const std::string path_;
  const int fd_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Piece> queue_;
  uint64_t queued_bytes_ = 0;
  unsigned busy_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
  std::vector<std::thread> workers_;
};

// Copies shards of the file's tensors to one device.
class Uploader {
 public:
  Uploader(const gguf::File& f, vk::Device& d, const LoadProgress& p, uint64_t& done, uint64_t total)
      : file_(f), dev_(d), progress_(p), done_(done), total_(total), fd_(reopen(f)) {
    if (fd_ >= 0) reads_.emplace(f.path(), fd_, std::max(1u, std::thread::hardware_concurrency()));
  }
  ~Uploader() {
    reads_.reset();  // joins its threads before the file closes
    if (fd_ >= 0) ::close(fd_);
  }
  // Waits for the reads still under way (and reports their failure): call before the weights
  // are used, and before the next device's upload.
  void finish() {
    if (reads_) reads_->finish();
  }
  Uploader(const Uploader&) = delete;
  Uploader& operator=(const Uploader&) = delete;

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
             : std::make_shared<vk::Buffer>(dev_.create_buffer(drb * r.size() * experts, vk::BufferKind::Device, kWeights, vk::Device::Fill::by_caller));
    d.offset = into ? into->offset : 0;
    d.mem = mem;
    for (uint64_t e = 0; e < experts; ++e) {
      const uint64_t first = e * per_expert + r.begin, dst = d.offset + e * drb * r.size();
      const std::span<const uint8_t> bytes = t.data.subspan(rb * first, rb * r.size());
      // Rows padded on the device but blocks as in the file: read straight into place too.
      const bool padded_only = drb != rb && device_block_bytes(t.type) == t.traits->block_bytes;
      if ((drb == rb || padded_only) && read_into(mem, dst, bytes, rb, drb)) continue;
      if (drb == rb) {
        dev_.upload(*mem, dst, std::as_bytes(bytes));
      } else {  // the device layout differs (Q6_K blocks, padded rows): converted in pieces of about 16 MiB
        const uint64_t step = std::max<uint64_t>(1, (16u << 20) / drb);
        for (uint64_t r0 = 0; r0 < r.size(); r0 += step) {
          const uint64_t n = std::min(step, r.size() - r0);
          const std::vector<uint8_t> piece =
              rows_to_device(t.type, t.data.subspan(rb * (first + r0), rb * n), t.ne[0], n);
          dev_.upload(*mem, dst + drb * r0, std::as_bytes(std::span<const uint8_t>(piece)));
        }
      }
      release(bytes);
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
    const uint64_t piece = *device_row_bytes(t.type, k.size());  // the slice's row on the device
    std::vector<uint8_t> shard(piece * d.rows);
    for (uint64_t r = 0; r < d.rows; ++r)
      blocks_to_device(t.type, t.data.data() + r * rb + skip, blocks, shard.data() + r * piece);
    auto mem = std::make_shared<vk::Buffer>(dev_.create_buffer(shard.size(), vk::BufferKind::Device, kWeights, vk::Device::Fill::by_caller));
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
    auto mem = std::make_shared<vk::Buffer>(dev_.create_buffer(r.size() * 4, vk::BufferKind::Device, kWeights, vk::Device::Fill::by_caller));
    dev_.upload(*mem, std::span<const float>(all).subspan(r.begin, r.size()));
    d.mem = std::move(mem);
    advance(r.size() * 4);
    return d;
  }
  DeviceTensor vector(const std::string& name) {
    return vector(name, Range{0, file_.require_tensor(name).n_elements()});
  }

 private:
  // The file opened again for read_into, if it is still a regular file of the size parsed
  // (else -1: the uploads copy from the mapping, which holds the bytes that were checked).
  static int reopen(const gguf::File& f) {
    const int fd = ::open(f.path().c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) return -1;
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != f.bytes().size()) {
      ::close(fd);
      return -1;
    }
    return fd;
  }

  // Where device memory is mapped (a CPU device, a GPU's host-visible heap), has the bytes
  // (which lie in the file's mapping) read from the file straight into it, by reads_'s threads:
  // one copy out of the page cache, where copying from the mapping also faults its pages in and
  // then drops them. False (the caller copies) when memory is not mapped or the file could not
  // be opened a second time.
  // Rows of `row` bytes in the file go `drow` bytes apart on the device.
  bool read_into(const std::shared_ptr<vk::Buffer>& mem, uint64_t offset, std::span<const uint8_t> bytes, uint64_t row,
                 uint64_t drow) {
    if (!reads_ || !mem->mapped() || bytes.empty()) return false;
    const uint64_t placed = bytes.size() / row * drow;
    if (offset + placed > mem->size())
      throw std::logic_error("weights of " + std::to_string(placed) + " bytes at offset " + std::to_string(offset) +
                             " overrun a buffer of " + std::to_string(mem->size()));
    reads_->read(mem, mem->mapped() + offset, static_cast<uint64_t>(bytes.data() - file_.bytes().data()), bytes.size(),
                 row, drow);
    return true;
  }

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
  int fd_;  // the file again, for read_into; -1 if it could not be opened
  std::optional<ReadPool> reads_;  // when fd_ is open
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
// each group's runs of matrices whose formats agree one after another into one buffer, so that
// one product reads a run (engine/forward.cpp fuses what it finds adjacent; DeviceTensor::followed_by).
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
    // Each run of consecutive parts of one format and width shares a buffer (Q and K of a
    // layer whose V has another format: one product for the two).
    const auto bytes = [](const Part& p) { return p.r.size() * (*device_row_bytes(p.t->type, p.t->ne[0])); };
    for (size_t b = 0; b < parts.size();) {
      size_t e = b + 1;
      while (e < parts.size() && parts[e].r.size() > 0 && parts[b].r.size() > 0 && parts[e].t->type == parts[b].t->type &&
             parts[e].t->ne[0] == parts[b].t->ne[0])
        ++e;
      if (e - b >= 2) {
        uint64_t total = 0;
        for (size_t i = b; i < e; ++i) total += bytes(parts[i]);
        auto mem =
            std::make_shared<vk::Buffer>(dev.create_buffer(total, vk::BufferKind::Device, kWeights, vk::Device::Fill::by_caller));
        uint64_t offset = 0;
        for (size_t i = b; i < e; ++i) {
          places[static_cast<size_t>(parts[i].id)] = Place{mem, offset};
          offset += bytes(parts[i]);
        }
      }
      b = e;
    }
  }
  return places;
}

// Pipeline lists kept in the cache folder: the most recently used, none unused for 60 days.
constexpr size_t kKeptPipelineLists = 64;
constexpr std::chrono::seconds kPipelineListMaxAge = std::chrono::hours(24 * 60);

// Starts building, on every core at once and while the weights upload, the pipelines the last
// run of this model with this device's shard built one after another (its list, kept beside
// the pipeline cache). On a CPU device building a pipeline is LLVM compiling a kernel: most of
// the time to the first token.
void prepare_pipelines(Shard& s, const gguf::File& f, size_t d, size_t n_devices, Model::Impl& w) {
  const split::DeviceShard& sp = s.spec;
  std::string context = std::filesystem::path(f.path()).filename().string() + " " + std::to_string(f.bytes().size());
  for (const uint64_t v : {uint64_t(d), uint64_t(n_devices), uint64_t(s.kernels->caps()), sp.layers.begin, sp.layers.end,
                           sp.q_rows.begin, sp.q_rows.end, sp.ffn.begin, sp.ffn.end, sp.vocab.begin, sp.vocab.end,
                           uint64_t(sp.embedding), uint64_t(sp.output_norm), shaders::fingerprint()})
    context += " " + std::to_string(v);
  s.pipeline_list = s.dev->pipeline_list_path(context);
  std::string warning;
  s.listed = ops::read_pipeline_list(s.pipeline_list, warning);
  if (!warning.empty()) std::fprintf(stderr, "chorus: warning: %s\n", warning.c_str());
  if (!s.listed.empty()) vk::touch_cache_file(s.pipeline_list);  // used: pruning keeps it
  if (!s.listed.empty()) w.queued += s.kernels->prepare(s.listed, std::max(1u, std::thread::hardware_concurrency()));
}

split::MatrixFormat matrix_format(const gguf::File& f, const std::string& name) {
  const gguf::TensorInfo& t = f.require_tensor(name);
  return split::MatrixFormat{t.traits->block_elems, device_block_bytes(t.type), 1, device_row_align(t.type)};
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

Model::~Model() {
  // The pipelines this run built, for the next run's prepare: the listed ones first, then the
  // new ones. A list is an optimisation: failing to write it is a warning. A new list makes
  // the folder prune its lists (one per model, placement and build otherwise gather forever).
  std::string wrote;  // the folder of a list written
  for (const Shard& s : impl_->shards) {
    if (s.pipeline_list.empty() || !s.kernels) continue;
    std::vector<ops::PipelineKey> keys = s.listed;
    for (const ops::PipelineKey& k : s.kernels->built())
      if (keys.size() < ops::kMaxListedPipelines && std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
    if (keys.size() == s.listed.size()) continue;
    const std::string text = ops::format_pipeline_list(keys);
    std::string warning;
    if (!vk::write_cache_file(s.pipeline_list, std::span<const char>(text.data(), text.size()),
                              std::to_string(::getpid()) + "-" + std::to_string(reinterpret_cast<uintptr_t>(&s)), warning))
      std::fprintf(stderr, "chorus: warning: %s\n", warning.c_str());
    else
      wrote = std::filesystem::path(s.pipeline_list).parent_path().string();
  }
  if (!wrote.empty()) vk::prune_cache_files(wrote, "pipelines-", ".list", kKeptPipelineLists, kPipelineListMaxAge);
}

size_t Model::pipelines_queued() const { return impl_->queued; }
double Model::upload_ms() const { return impl_->upload_ms; }
size_t Model::pipelines_prepared() const {
  size_t n = 0;
  for (const Shard& s : impl_->shards) n += s.kernels ? s.kernels->prepared() : 0;
  return n;
}

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
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t d = 0; d < devices.size(); ++d) {
    Shard s;
    s.dev = devices[d];
    s.kernels = std::make_unique<ops::Kernels>(*devices[d]);
    s.spec = w.plan.devices[d];
    if (devices[d]->disk_caches()) prepare_pipelines(s, m->file_, d, devices.size(), w);
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
    up.finish();
    w.shards.push_back(std::move(s));
  }
  w.upload_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  m->file_.drop_tensor_pages();  // the weights live on the devices now
  return m;
}

}  // namespace chorus
