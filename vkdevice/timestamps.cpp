#include "vkdevice/timestamps.h"

#include <cmath>

#include "vkdevice/commands.h"
#include "vkdevice/device.h"

namespace chorus::vk {

TimestampPool::TimestampPool(Device& device, uint32_t count) : device_(&device), count_(count) {
  const uint32_t bits = device.timestamp_bits();
  // A period of 0 (never valid, but reported by broken drivers) would make every duration 0.
  if (bits == 0 || count == 0 || !device.options().timestamps || !(device.info().timestamp_period > 0)) return;
  mask_ = bits >= 64 ? ~uint64_t(0) : (uint64_t(1) << bits) - 1;
  period_ns_ = device.info().timestamp_period;
  VkQueryPoolCreateInfo qi{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
  qi.queryType = VK_QUERY_TYPE_TIMESTAMP;
  qi.queryCount = count;
  check(vkCreateQueryPool(device.handle(), &qi, nullptr, &pool_),
        device.label() + ": creating a pool of " + std::to_string(count) + " timestamps");
  scratch_.resize(2 * size_t(count));
}

TimestampPool::~TimestampPool() {
  if (pool_) vkDestroyQueryPool(device_->handle(), pool_, nullptr);
}

void TimestampPool::record_reset(CommandBuffer& cb, uint32_t first, uint32_t n) const {
  if (pool_) vkCmdResetQueryPool(cb.handle(), pool_, first, n);
}

void TimestampPool::record_write(CommandBuffer& cb, uint32_t query, bool end) const {
  if (pool_)
    vkCmdWriteTimestamp(cb.handle(), end ? VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT : VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT,
                        pool_, query);
}

bool TimestampPool::read(uint32_t first, std::span<uint64_t> out) const {
  if (!pool_ || out.empty() || first + out.size() > count_) return false;
  const size_t n = out.size();
  // No VK_QUERY_RESULT_WAIT_BIT: the caller's own wait already covered the work; what is not
  // written yet reports itself unavailable instead of blocking.
  const VkResult r = vkGetQueryPoolResults(device_->handle(), pool_, first, static_cast<uint32_t>(n),
                                           2 * n * sizeof(uint64_t), scratch_.data(), 2 * sizeof(uint64_t),
                                           VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WITH_AVAILABILITY_BIT);
  if (r != VK_SUCCESS) return false;  // VK_NOT_READY: some are not written
  for (size_t i = 0; i < n; ++i) {
    if (scratch_[2 * i + 1] == 0) return false;
    out[i] = scratch_[2 * i];
  }
  return true;
}

uint64_t TimestampPool::elapsed_ns(uint64_t begin, uint64_t end) const {
  const uint64_t ticks = (end - begin) & mask_;
  return static_cast<uint64_t>(std::llround(static_cast<double>(ticks) * period_ns_));
}

}  // namespace chorus::vk
