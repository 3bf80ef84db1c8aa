// vkdevice/profile.h — where a device's time goes, kernel by kernel (`--profile`).
//
// Owns: the per-device sum of GPU time per kernel. With profiling on (DeviceOptions::profile,
// CHORUS_PROFILE=1) every compute dispatch a CommandBuffer records is bracketed by two GPU
// timestamps (vkdevice/commands.h), both written when every command before them has finished:
// the first when the work before the dispatch is done, the second when the dispatch is. Their
// difference is the dispatch's own time, without the waits between segments of a step (for a
// reduce, for the host). After a step's host wait the executor collects each command buffer's
// timestamps here (CommandBuffer::collect_profile), keyed by kernel (pipeline name and
// specialisation constants) and workgroup count. On lavapipe a dispatch runs alone from
// start to end, so the time includes handing its workgroups to the worker threads; on a GPU,
// dispatches that would overlap are timed as if run one after another.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace chorus::vk {

// One kernel's share of the profile.
struct KernelTime {
  std::string kernel;  // "mul_mv_texel_q4_1+cpu [64,8,...]": pipeline name, specialisation constants
  std::string groups;  // "48x1x1": workgroups per dispatch
  uint64_t calls = 0;  // dispatches timed
  uint64_t ns = 0;     // their GPU time
};

class DispatchProfile {
 public:
  // Adds one timed dispatch (any thread).
  void add(const std::string& kernel, const std::string& groups, uint64_t ns);
  // Counts a dispatch that was not timed (the command buffer's timestamps ran out, or were
  // not written); the report says how many.
  void add_untimed(uint64_t n);
  // Every kernel timed since the last clear, the most time first.
  std::vector<KernelTime> kernels() const;
  uint64_t untimed() const;
  void clear();

 private:
  mutable std::mutex mutex_;  // the executor's thread adds, a tool's thread reads
  std::map<std::pair<std::string, std::string>, KernelTime> by_kernel_;
  uint64_t untimed_ = 0;
};

}  // namespace chorus::vk
