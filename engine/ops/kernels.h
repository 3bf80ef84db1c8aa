// engine/ops/kernels.h — the per-device kernel set: which shader variant runs each op.
//
// Owns: choosing a variant per op from the device's capabilities (or a narrower mask, so
// tests run every fallback), building its pipeline once per (variant, specialisation) and
// keeping it. The op families (matvec.h, matmul.h, ops.h) record dispatches through it.
// Uses vkdevice's types only; no Vulkan headers of its own.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "engine/ops/pipeline_list.h"
#include "shaders/registry.h"
#include "vkdevice/commands.h"
#include "vkdevice/device.h"
#include "vkdevice/pipeline.h"

namespace chorus::ops {

class Kernels {
 public:
  // caps_mask narrows the device's capabilities further (tests pass one variant's
  // requirements to force that variant).
  explicit Kernels(vk::Device& device, uint32_t caps_mask = shaders::kAllCapabilities);
  ~Kernels();  // stops prepare's threads (each finishes the pipeline it is building)
  Kernels(const Kernels&) = delete;
  Kernels& operator=(const Kernels&) = delete;

  vk::Device& device() const { return *device_; }
  uint32_t caps() const { return caps_; }

  // The variant of `op` these kernels use. Throws vk::Error naming the op and capabilities
  // if no variant fits.
  const shaders::Variant& variant(std::string_view op) const;

  // The pipeline for op's variant with the given specialisation constants (built on first
  // use, then reused: decode creates no pipelines). Waits if prepare's threads have it queued.
  const vk::Pipeline& pipeline(std::string_view op, uint32_t n_bindings, uint32_t push_bytes,
                               const std::vector<uint32_t>& spec);
  // Same, with the bindings whose bit is set in texel_bindings bound as uniform texel buffers.
  const vk::Pipeline& pipeline(std::string_view op, uint32_t n_bindings, uint32_t push_bytes,
                               const std::vector<uint32_t>& spec, uint32_t texel_bindings);

  // Every pipeline built so far, in the order built.
  std::vector<PipelineKey> built() const;

  // Starts building those of `keys` not built yet on `threads` background threads, in the
  // order given: a list in the order a run built them puts what the first token needs first.
  // Creating pipelines is most of a CPU device's start-up (LLVM compiles each kernel), and
  // recording asks for them one after another; this way the cores compile at once, during the
  // load, and pipeline() waits for a queued one instead of building it twice. Keys whose op has
  // no variant here are skipped; a pipeline that fails to build is left to pipeline(), which
  // reports the failure if a recording asks for it. Returns how many it queued. Call it once.
  size_t prepare(std::span<const PipelineKey> keys, unsigned threads);
  // How many pipelines prepare's threads have built so far.
  size_t prepared() const;
  // Waits for prepare's threads; returns how many pipelines they built, and sets `ms` to the
  // time from prepare's call to the last of them.
  size_t wait_prepared(double* ms = nullptr);

  // Records one dispatch; push is the op's push-constant struct. Windows made by
  // Buffer::texel_window bind as uniform texel buffers, the others as storage buffers.
  template <typename Push>
  void dispatch(vk::CommandBuffer& cb, std::string_view op, std::initializer_list<vk::BufferWindow> bindings,
                const Push& push, const std::vector<uint32_t>& spec, uint32_t gx, uint32_t gy = 1, uint32_t gz = 1) {
    uint32_t texel = 0, i = 0;
    for (const vk::BufferWindow& b : bindings) texel |= (b.texel_view != VK_NULL_HANDLE ? 1u : 0u) << i++;
    const vk::Pipeline& p = pipeline(op, static_cast<uint32_t>(bindings.size()), sizeof(Push), spec, texel);
    cb.dispatch(p, bindings, &push, sizeof(Push), gx, gy, gz);
  }

 private:
  vk::Device* device_;
  uint32_t caps_;
  using MapKey = std::pair<std::string, std::vector<uint32_t>>;
  static MapKey map_key(const shaders::Variant& v, uint32_t n_bindings, uint32_t push_bytes, uint32_t texel_bindings,
                        const std::vector<uint32_t>& spec);
  struct Job {
    PipelineKey key;
    MapKey map_key;
    vk::PipelineDesc desc;
  };
  void prepare_worker();

  mutable std::mutex mutex_;  // guards pipelines_, built_, pending_, prepared_, prepare_end_
  std::condition_variable prepared_one_;
  std::map<MapKey, std::unique_ptr<vk::Pipeline>> pipelines_;
  std::vector<PipelineKey> built_;
  std::set<MapKey> pending_;  // queued for prepare's threads, not built yet
  std::vector<Job> jobs_;     // written before the threads start, then only read
  std::atomic<size_t> next_job_{0};
  std::atomic<bool> stop_{false};
  std::vector<std::thread> workers_;
  size_t prepared_ = 0;
  std::chrono::steady_clock::time_point prepare_start_, prepare_end_;
};

// Element offset of a window's start, for push constants: skip / element size. Throws if
// the skip is not a whole number of elements.
uint32_t skip_elems(const vk::BufferWindow& w, uint32_t elem_bytes);

// Workgroup counts: ceil(n / per_group).
inline uint32_t groups(uint64_t n, uint64_t per_group) { return static_cast<uint32_t>((n + per_group - 1) / per_group); }

}  // namespace chorus::ops
