// split/watchdog.h — telling a slow device from a stuck one.
//
// Owns: the rule every host wait on a forward pass uses. The limit (CHORUS_TIMEOUT_MS, default
// 60 s) is on time *without progress*, not on the whole step: a device whose progress counter
// (a timeline signalled after each segment of its step) keeps moving is waited for however
// long the step takes on a loaded machine; one whose counter stands still for the limit is
// reported as stopped. A pure value type with the clock passed in, so tests need no timing.
#pragma once

#include <cstdint>

namespace chorus::split {

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

}  // namespace chorus::split
