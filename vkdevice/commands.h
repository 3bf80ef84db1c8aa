// vkdevice/commands.h — command recording and timeline semaphores.
//
// Owns: a command pool + command buffer per recorder (record once, submit many times),
// the compute dispatch with push descriptors and push constants, buffer copies, the
// barriers between them, and timeline semaphores with host waits that time out.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "vkdevice/memory.h"
#include "vkdevice/vk.h"

namespace chorus::vk {

class Device;
class Pipeline;
class TimestampPool;

class CommandBuffer {
 public:
  explicit CommandBuffer(Device& device);
  ~CommandBuffer();
  CommandBuffer(const CommandBuffer&) = delete;
  CommandBuffer& operator=(const CommandBuffer&) = delete;

  // Starts recording (discarding what was recorded before).
  void begin();
  void end();

  // Binds `bindings` to the pipeline's bindings 0..n-1 and dispatches groups (x, y, z).
  void dispatch(const Pipeline& pipeline, std::span<const BufferWindow> bindings, const void* push, uint32_t push_size,
                uint32_t gx, uint32_t gy = 1, uint32_t gz = 1);
  void dispatch(const Pipeline& pipeline, std::initializer_list<BufferWindow> bindings, const void* push,
                uint32_t push_size, uint32_t gx, uint32_t gy = 1, uint32_t gz = 1) {
    dispatch(pipeline, std::span<const BufferWindow>(bindings.begin(), bindings.size()), push, push_size, gx, gy, gz);
  }
  // Makes every earlier compute/transfer write visible to every later compute/transfer
  // access. Callers say in one line why each barrier is needed.
  void barrier();
  // Makes earlier device writes visible to host reads after the submission completes.
  void barrier_to_host();
  void copy(const Buffer& src, uint64_t src_offset, const Buffer& dst, uint64_t dst_offset, uint64_t size);
  void fill(const Buffer& dst, uint64_t offset, uint64_t size, uint32_t value);

  VkCommandBuffer handle() const { return cb_; }
  uint32_t dispatches() const { return dispatches_; }
  uint32_t barriers() const { return barriers_; }  // barrier() calls since begin()
  Device& device() const { return *device_; }
  // The device may still run this command buffer (it stopped answering): the destructor
  // leaves its pool alone (a deliberate leak, reported on stderr) instead of destroying it in
  // use, which is undefined behaviour.
  void abandon() const { abandoned_ = true; }

  // With profiling on (Device::profile), adds the time of each dispatch of the run of this
  // command buffer that last finished to the device's profile (vkdevice/profile.h). Call once
  // after each run, after a host wait that covered it (a run already added is not added again).
  void collect_profile();

 private:
  // The dispatches recorded since begin(), for the profile: each one's timestamps are
  // queries 2 i (the work before it done) and 2 i + 1 (it done) of profile_pool_.
  struct Timed {
    const Pipeline* pipeline;
    uint32_t gx, gy, gz;
  };
  void profile_begin();

  Device* device_;
  mutable bool abandoned_ = false;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkCommandBuffer cb_ = VK_NULL_HANDLE;
  uint32_t dispatches_ = 0;
  uint32_t barriers_ = 0;
  std::unique_ptr<TimestampPool> profile_pool_;  // (profiling) 2 per dispatch of the recording
  std::vector<Timed> timed_;                     // (profiling) the recording's timed dispatches
  uint32_t untimed_ = 0;                         // (profiling) dispatches past the pool's room
  uint64_t collected_tick_ = 0;                  // the first timestamp of the run last collected
};

// A timeline semaphore. Values only grow; each use names the value it stands for.
class Timeline {
 public:
  Timeline(Device& device, std::string name, uint64_t initial = 0);
  ~Timeline();
  Timeline(const Timeline&) = delete;
  Timeline& operator=(const Timeline&) = delete;

  VkSemaphore handle() const { return sem_; }
  const std::string& name() const { return name_; }
  uint64_t value() const;
  void signal(uint64_t value);  // from the host
  // Waits on the host until the semaphore reaches value, for as long as the device makes
  // progress (vkdevice/watchdog.h): throws TimeoutError naming the device, the timeline, `what`
  // and CHORUS_TIMEOUT_MS after the device's timeout without progress. Counts one host wait.
  void wait(uint64_t value, const std::string& what);
  // The same rule; returns false (instead of throwing) when the device stopped making progress.
  bool wait_progressing(uint64_t value);
  // As wait, with an explicit timeout; returns false on timeout instead of throwing.
  bool wait_for(uint64_t value, uint64_t timeout_ns);

 private:
  Device* device_;
  std::string name_;
  VkSemaphore sem_ = VK_NULL_HANDLE;
};

}  // namespace chorus::vk
