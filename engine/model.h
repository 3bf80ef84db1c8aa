// engine/model.h — a loaded model and its inference contexts.
//
// Owns: reading a GGUF model (engine/gguf.h) into device buffers (model.cpp: every tensor of
// the architecture's table, engine/arch.h, uploaded once as the device's shard, with
// progress), and the inference context (forward.cpp): the forward pass in the order the paper
// gives it (embedding, per layer: RMSNorm, Q/K/V, RoPE, KV-cache store, attention, output
// projection, reduce, residual, RMSNorm, gate/up, SwiGLU, down, reduce, residual; final
// RMSNorm, LM head), the F16 KV cache of each sequence, prefill in micro-batches and
// one-token decode. Every matrix op runs on a shard of its weight; with one device the shard
// is the whole tensor. How the shards' work is joined is split::Executor's.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "engine/gguf.h"
#include "engine/model_config.h"
#include "split/collective.h"
#include "split/plan.h"
#include "vkdevice/device.h"

namespace chorus {

class Tokenizer;

// Bytes one device holds for a model and a context.
struct DeviceMemoryUse {
  std::string device;      // its label
  uint64_t weights = 0;
  uint64_t kv_cache = 0;
  uint64_t scratch = 0;
};

struct LoadProgress {
  // Called as weights upload: bytes done of total.
  std::function<void(uint64_t done, uint64_t total)> on_upload;
};

class Model {
 public:
  // Opens, validates and uploads to one device. Throws gguf::Error (file defects) or
  // vk::Error (device).
  static std::unique_ptr<Model> load(const std::string& path, vk::Device& device, const LoadProgress& progress = {});
  // The same across several logical devices, each holding the shard split::plan_split gives
  // it for `request` (request.ratios: one per device). Throws std::invalid_argument for a bad
  // request.
  static std::unique_ptr<Model> load(const std::string& path, const std::vector<vk::Device*>& devices,
                                     const split::SplitRequest& request, const LoadProgress& progress = {});
  ~Model();

  const ModelConfig& config() const { return config_; }
  const gguf::File& file() const { return file_; }
  const split::Plan& plan() const;
  size_t n_devices() const;
  vk::Device& device(size_t i = 0) const;
  // Pipelines the lists of earlier runs named, queued at load for background threads
  // (ops::Kernels::prepare), and how many of them those threads have built so far.
  size_t pipelines_queued() const;
  size_t pipelines_prepared() const;
  // Time the load spent putting the weights on the devices (not parsing the file or planning).
  double upload_ms() const;

  struct Impl;
  Impl& impl() const { return *impl_; }

 private:
  Model(gguf::File file, ModelConfig config);

  gguf::File file_;
  ModelConfig config_;
  std::unique_ptr<Impl> impl_;
};

// The split planner's view of a model: shapes and per-matrix block formats.
split::ModelShape model_shape(const ModelConfig& config, const gguf::File& file);

struct ContextOptions {
  uint32_t n_ctx = 0;       // positions per sequence (0: the model's trained length, at most 4096)
  uint32_t n_seq = 1;       // independent sequences (each its own KV cache)
  uint32_t n_ubatch = 512;  // tokens per forward pass in prefill
  // Tensor split: the collective runs one segment at a time with a host wait after each, so
  // nothing overlaps (docs/sync.md, "Serialise everything"). A debugging mode; results are
  // identical.
  bool serialise = false;
  // Fault injection, for testing what happens when a device stops answering: {device, point}
  // makes that device (position among the devices holding a shard) of a tensor split stop
  // before it delivers that reduce point of the collective; it answers again only when the
  // context is destroyed. The environment variable CHORUS_FAULT_STALL=DEVICE:POINT sets it too.
  std::optional<std::pair<uint32_t, uint32_t>> stall;
};

// Per-context counters (instrumentation for `chorus bench` and tests).
struct ContextCounters {
  uint64_t forward_passes = 0;  // forward passes (micro-batches) run
  uint64_t tokens = 0;          // tokens evaluated
  uint64_t host_waits = 0;      // waits of the calling thread for the devices
  uint64_t recordings = 0;      // times a forward pass was recorded (decode replays instead)
};

class Context {
 public:
  Context(Model& model, const ContextOptions& options = {});
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // A run of tokens appended to sequence `seq` after its current length.
  struct Segment {
    uint32_t seq = 0;
    std::span<const int32_t> tokens;
    bool all_logits = false;  // logits for every token (perplexity) or only the last
  };

  // Evaluates the segments (each sequence at most once per call), in micro-batches of at most
  // n_ubatch tokens; returns the logits, segment by segment: all_logits ? tokens.size() rows :
  // 1 row, each n_vocab floats. Throws std::invalid_argument for a bad token id, a sequence
  // index out of range or a sequence that would pass n_ctx.
  std::vector<float> decode(std::span<const Segment> segments);
  // One segment.
  std::vector<float> decode(uint32_t seq, std::span<const int32_t> tokens, bool all_logits = false);
  // Evaluates `tokens` into sequence `seq` as decode does and returns the mean over them of the
  // hidden state after the final RMSNorm ([n_embd], the input of the LM head): an embedding.
  std::vector<float> embed(uint32_t seq, std::span<const int32_t> tokens);

  void clear(uint32_t seq);                // forget a sequence's tokens
  // Keeps only a sequence's first n tokens (n at most its length): the next decode continues
  // from position n, overwriting what the cache held after it (prompt reuse).
  void truncate(uint32_t seq, uint32_t n);
  uint32_t length(uint32_t seq) const;     // tokens held for a sequence
  uint32_t n_ctx() const;
  uint32_t n_seq() const;
  const ModelConfig& config() const;
  const ContextCounters& counters() const;
  std::vector<DeviceMemoryUse> memory_use() const;
  // The collective's counters (tensor split over several devices), else nullopt.
  std::optional<split::CollectiveStats> collective_stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace chorus
