// vkdevice/timestamps.h — GPU timestamps: how long a device spent running its command buffers.
//
// Owns: a VkQueryPool of timestamps (one move-only owner per pool), the commands that reset it
// and write a timestamp into it, and reading the written values back without a host wait
// (the caller reads after the wait it makes anyway, once the work that wrote them has finished).
// A queue whose family has no valid timestamp bits (timestampValidBits 0), or a device opened
// with timestamps off (DeviceOptions::timestamps, CHORUS_NO_TIMESTAMPS=1), gives a pool that
// records nothing and reads nothing: callers say "n/a" instead of a number.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "vkdevice/vk.h"

namespace chorus::vk {

class CommandBuffer;
class Device;

class TimestampPool {
 public:
  // `count` timestamps on `device` (none are created when the device has no timestamps).
  TimestampPool(Device& device, uint32_t count);
  ~TimestampPool();
  TimestampPool(const TimestampPool&) = delete;
  TimestampPool& operator=(const TimestampPool&) = delete;

  // Whether this pool writes timestamps (the device's queue has them and they are not off).
  bool supported() const { return pool_ != VK_NULL_HANDLE; }
  uint32_t size() const { return count_; }

  // Records: timestamps [first, first + n) become unavailable, ready to be written again.
  // Query commands on one queue run in submission order, so a reset recorded before the
  // writes of the same step needs no barrier.
  void record_reset(CommandBuffer& cb, uint32_t first, uint32_t n) const;
  // Records: timestamp `query` is written when the commands before it start (`end` false:
  // top of pipe) or have all finished (`end` true: bottom of pipe).
  void record_write(CommandBuffer& cb, uint32_t query, bool end) const;
  // The ticks of timestamps [first, first + out.size()) into `out`, without waiting: false if
  // any of them has not been written (or the pool records nothing).
  bool read(uint32_t first, std::span<uint64_t> out) const;
  // Nanoseconds between two ticks of this device (the valid bits' wrap-around handled).
  uint64_t elapsed_ns(uint64_t begin, uint64_t end) const;

 private:
  Device* device_;
  uint32_t count_;
  uint64_t mask_ = 0;      // the valid bits
  double period_ns_ = 0;   // nanoseconds per tick
  VkQueryPool pool_ = VK_NULL_HANDLE;
  mutable std::vector<uint64_t> scratch_;  // [value, availability] pairs as the driver writes them
};

}  // namespace chorus::vk
