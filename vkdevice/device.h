// vkdevice/device.h — one logical device: VkDevice, its queue, memory, pipelines, commands.
//
// Owns: opening a physical device as a logical device (the same physical device may be
// opened many times; each opening has its own VkDevice, queue, memory and semaphores), the
// capability mask, the per-device memory budget, the sub-allocator, uploads/downloads
// (direct map on unified memory, staging copies otherwise or when forced), the on-disk
// pipeline cache, and per-device counters (submits, host waits).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vkdevice/activity.h"
#include "vkdevice/instance.h"
#include "vkdevice/memory.h"
#include "vkdevice/profile.h"
#include "vkdevice/vk.h"

namespace chorus::vk {

class CommandBuffer;
class Timeline;

struct DeviceOptions {
  uint32_t physical_index = 0;
  // Which opening of the physical device this is (0 for the first): labels tell logical
  // devices of one GPU apart ("device 0", "device 0/1", ...).
  uint32_t opening = 0;
  // Capabilities to hide from shader selection (shaders::Capability bits), on top of the
  // CHORUS_DISABLE_CAPS environment variable ("fp16,subgroup,cpu" or "all").
  uint32_t disabled_caps = 0;
  // Pretend the device has this many bytes of memory (0: use the driver's budget).
  uint64_t memory_budget = 0;
  // Use the discrete-GPU path (device-local buffers filled by staging copies) even on a
  // device with unified memory.
  bool force_staging = false;
  // Persist the pipeline cache under $XDG_CACHE_HOME/chorus (or ~/.cache/chorus).
  bool pipeline_cache = true;
  // Host waits give up after this long (a device that stops answering is an error, not a
  // hang). 0: CHORUS_TIMEOUT_MS (1 .. kMaxTimeoutMs) if set, else kDefaultTimeoutMs. A value
  // given here wins over the variable (a test that wants a 50 ms timeout gets one), but a
  // malformed variable is refused either way.
  uint64_t timeout_ns = 0;
  // Write GPU timestamps around the work executors submit (vkdevice/timestamps.h), where the
  // queue has them. false (or CHORUS_NO_TIMESTAMPS=1): pretend it has none.
  bool timestamps = true;
  // Time every dispatch by GPU timestamps, summed per kernel (vkdevice/profile.h; `--profile`).
  // CHORUS_PROFILE=1 turns it on too. Nothing is timed where the queue has no timestamps.
  bool profile = false;
};

inline constexpr uint64_t kDefaultTimeoutMs = 60'000;

// The longest CHORUS_TIMEOUT_MS accepted: one week, in milliseconds.
inline constexpr uint64_t kMaxTimeoutMs = 7ull * 24 * 3600 * 1000;

// Parses "fp16,subgroup,cpu" / "all" / "none" into shaders::Capability bits; throws Error
// naming the bad word.
uint32_t parse_capability_list(const std::string& list, const std::string& source);

struct DeviceCounters {
  std::atomic<uint64_t> submits{0};      // vkQueueSubmit calls
  std::atomic<uint64_t> host_waits{0};   // host waits on a timeline value
  std::atomic<uint64_t> pipelines{0};    // compute pipelines created
  std::atomic<uint64_t> pipeline_ns{0};  // time spent creating them (wall clock, the creating thread)
  std::atomic<uint64_t> dispatches{0};   // dispatches in the command buffers submitted
  std::atomic<uint64_t> barriers{0};     // CommandBuffer::barrier()s in the command buffers submitted
};

class Device {
 public:
  Device(const Instance& instance, const DeviceOptions& options);
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  // "device 1 (llvmpipe (LLVM 15.0.6, 256 bits))": how errors name this device.
  const std::string& label() const { return label_; }
  const DeviceInfo& info() const { return info_; }
  const DeviceOptions& options() const { return options_; }
  // Capabilities shaders may use: the hardware's minus the mask.
  uint32_t capabilities() const { return caps_; }
  bool uses_staging() const { return staging_path_; }
  uint64_t timeout_ns() const { return options_.timeout_ns; }

  VkDevice handle() const { return device_; }
  VkPhysicalDevice physical() const { return physical_; }
  VkQueue queue() const { return queue_; }
  uint32_t queue_family() const { return queue_family_; }
  // Valid bits of the queue's timestamps (0: the queue writes none; vkdevice/timestamps.h).
  uint32_t timestamp_bits() const { return timestamp_bits_; }
  VkPipelineCache pipeline_cache() const { return pipeline_cache_; }
  // Bytes of pipeline cache read from disk when the device opened (0: none, or the cache is off).
  uint64_t pipeline_cache_loaded_bytes() const { return pipeline_cache_loaded_; }
  // Whether on-disk caches are in use (DeviceOptions::pipeline_cache and no
  // CHORUS_NO_PIPELINE_CACHE in the environment).
  bool disk_caches() const;
  // A file beside the pipeline cache for this device's driver and `context` (any text; hashed
  // into the name): engine/ops/kernels.h keeps there the list of pipelines a run built.
  std::string pipeline_list_path(std::string_view context) const;

  Allocator& allocator() { return *allocator_; }
  DeviceCounters& counters() { return counters_; }
  // The time per kernel (DeviceOptions::profile); null when profiling is off or the queue
  // writes no timestamps.
  DispatchProfile* profile() { return profile_.get(); }

  // A buffer usable by kernels. Kind::Device is device-local (mapped only on unified memory
  // without force_staging); Kind::Host is host-visible, coherent and mapped.
  // Sizes are checked before anything is created (check_buffer_size). On a CPU device a
  // mapped buffer is written once at creation so that its pages are resident (see the .cpp);
  // `Fill::by_caller` skips that for a buffer the caller writes whole at once (weights: the
  // upload commits the same pages, and writing them twice was a third of the load's time).
  enum class Fill { commit, by_caller };
  Buffer create_buffer(uint64_t size, BufferKind kind, const std::string& name, Fill fill = Fill::commit);
  // Throws Error naming this device, the buffer's purpose, its size and the limit when one
  // buffer of `size` bytes cannot exist here: above maxBufferSize (a VkBuffer), above
  // maxMemoryAllocationSize (its one allocation) or above the memory budget. Tools call it to
  // refuse a size before building the host data for it.
  void check_buffer_size(uint64_t size, const std::string& name) const;

  // Copies host bytes into a buffer (waits until done). Uses the mapping when the buffer is
  // mapped, else a staging copy in chunks.
  void upload(Buffer& dst, uint64_t offset, std::span<const std::byte> bytes);
  void download(const Buffer& src, uint64_t offset, std::span<std::byte> bytes);
  template <typename T>
  void upload(Buffer& dst, std::span<const T> data, uint64_t offset = 0) {
    upload(dst, offset, std::as_bytes(data));
  }
  template <typename T>
  std::vector<T> download(const Buffer& src, size_t count, uint64_t offset = 0) {
    std::vector<T> out(count);
    download(src, offset, std::as_writable_bytes(std::span<T>(out)));
    return out;
  }

  // Submits one command buffer: waits for each (timeline, value) before it runs, signals
  // each (timeline, value) when it completes. Counts one submit.
  struct TimelinePoint {
    Timeline* timeline;
    uint64_t value;
  };
  void submit(const CommandBuffer& cb, std::span<const TimelinePoint> waits, std::span<const TimelinePoint> signals);
  // One batch of a multi-batch submit: `cb` runs once every wait is reached; each signal
  // happens when it (and everything submitted before it) completes.
  struct Batch {
    const CommandBuffer* cb;
    std::span<const TimelinePoint> waits;
    std::span<const TimelinePoint> signals;
  };
  // Submits the batches in order in ONE vkQueueSubmit (counts one submit). A batch may wait
  // on a value that the host or a later batch signals (a timeline wait before its signal).
  void submit(std::span<const Batch> batches);
  // Submits and waits on the host (the simple path used by tests and uploads).
  void run(const CommandBuffer& cb);

  // The steps executors ran on this device (vkdevice/activity.h): recorded by the executor
  // after each step, summed over the last kActivitySteps for the per-device view.
  void record_activity(const ActivityStep& step);
  ActivitySummary activity() const;

  // On a CPU device: hands back to the system the heap memory this process has freed but the
  // C library still holds (glibc's malloc_trim). lavapipe compiles a kernel at its first
  // dispatch, and LLVM frees what it used for that (about 190 MB for SmolLM2's kernels) into
  // the heap, where it would stay resident. Executors call it after the first run of a freshly
  // recorded step (a decode replay never calls it). On other devices: nothing.
  void release_freed_heap() const;

  // Writes the pipeline cache to disk now (also done by the destructor).
  void save_pipeline_cache();

 private:
  std::string pipeline_cache_path() const;

  DeviceInfo info_;
  DeviceOptions options_;
  std::string label_;
  uint32_t caps_ = 0;
  bool staging_path_ = false;
  VkPhysicalDevice physical_ = VK_NULL_HANDLE;
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t queue_family_ = 0;
  uint32_t timestamp_bits_ = 0;
  VkPipelineCache pipeline_cache_ = VK_NULL_HANDLE;
  uint64_t pipeline_cache_loaded_ = 0;
  std::unique_ptr<Allocator> allocator_;
  DeviceCounters counters_;
  std::unique_ptr<DispatchProfile> profile_;
  mutable std::mutex activity_mutex_;  // guards activity_ (a server's threads may read it)
  ActivityWindow activity_;
  std::mutex queue_mutex_;
  std::unique_ptr<Timeline> transfer_timeline_;  // host waits for run()/upload()/download()
  uint64_t transfer_value_ = 0;
};

}  // namespace chorus::vk
