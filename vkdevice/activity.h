// vkdevice/activity.h — what a device did during the last steps it took part in.
//
// Owns: the per-device record of recent steps (a forward pass's micro-batch, or one decode
// token) as the executor that ran them reports them — the step's wall time on the host, its
// tokens, and how long the device was busy inside it by its own GPU timestamps (vkdevice/
// timestamps.h) — and the sums over the last kActivitySteps steps that the per-device view
// (`--show-devices`, chat's /devices) prints. Pure arithmetic; no Vulkan.
//
// busy fraction = the device's busy time / the wall time, summed over the steps that have
// timestamps; the rest of the wall time the device waited (for the other devices, the reduces
// or the host). The wall time runs from the step's first submit to the return of the host
// wait that ends it, so it encloses every device's work: each fraction is in [0, 1] (a step's
// busy time is clamped to its wall time against timer rounding), and where the devices run
// one after another (a layer split, the serialised debug mode) the fractions of all devices
// add up to at most 1.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>

namespace chorus::vk {

inline constexpr size_t kActivitySteps = 32;

struct ActivityStep {
  uint64_t wall_ns = 0;             // first submit to the end of the host wait
  uint64_t tokens = 0;              // tokens the step evaluated
  std::optional<uint64_t> busy_ns;  // the device's segments, by its timestamps (none: no timestamps)
};

struct ActivitySummary {
  size_t steps = 0;            // steps in the window
  uint64_t tokens = 0;         // their tokens
  uint64_t wall_ns = 0;        // their wall time
  size_t timed_steps = 0;      // steps with timestamps
  uint64_t timed_tokens = 0;   // their tokens
  uint64_t timed_wall_ns = 0;  // their wall time
  uint64_t busy_ns = 0;        // the device's busy time in them

  bool timed() const { return timed_steps > 0; }
  // busy_ns / timed_wall_ns, in [0, 1] (0 without timed steps).
  double busy_fraction() const;
  // Milliseconds per token of the timed steps: busy, and waiting (the rest of the wall time).
  double busy_ms_per_token() const;
  double wait_ms_per_token() const;
};

// The last kActivitySteps steps of one device.
class ActivityWindow {
 public:
  void add(const ActivityStep& step);
  ActivitySummary summary() const;

 private:
  std::deque<ActivityStep> steps_;
};

}  // namespace chorus::vk
