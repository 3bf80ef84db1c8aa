// vkdevice/watchdog.h — telling a slow device from a stuck one.
//
// Owns: the rule every host wait on a device uses (Timeline::wait, the engine's steps). The
// limit (CHORUS_TIMEOUT_MS, default 60 s) is on time *without progress*, not on the whole wait:
// a device whose progress counter keeps moving (a timeline signalled after each segment of a
// step; on a CPU device such as lavapipe, whose work runs in this process, also the process's
// CPU time) is waited for however long it takes on a loaded machine; one whose counter stands
// still for the limit is reported as stopped. A pure value type with the clock passed in, so
// its tests need no timing.
#pragma once

#include <cstdint>

namespace chorus::vk {

class ProgressWatch {
 public:
  ProgressWatch(uint64_t limit_ns, uint64_t now_ns, uint64_t progress) : limit_(limit_ns), since_(now_ns), seen_(progress) {}
  // Reports the progress counter observed at `now_ns`; true when it has not moved for the limit.
  bool stalled(uint64_t progress, uint64_t now_ns) {
    if (progress != seen_) {
      seen_ = progress;
      since_ = now_ns;
      return false;
    }
    return now_ns - since_ >= limit_;
  }
  uint64_t idle_ns(uint64_t now_ns) const { return now_ns - since_; }

 private:
  uint64_t limit_;
  uint64_t since_;
  uint64_t seen_;
};

}  // namespace chorus::vk
