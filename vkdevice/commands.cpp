#include "vkdevice/commands.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <vector>

#include "vkdevice/device.h"
#include "vkdevice/pipeline.h"
#include "vkdevice/timestamps.h"
#include "vkdevice/watchdog.h"

namespace chorus::vk {

CommandBuffer::CommandBuffer(Device& device) : device_(&device) {
  VkCommandPoolCreateInfo pi{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pi.queueFamilyIndex = device.queue_family();
  check(vkCreateCommandPool(device.handle(), &pi, nullptr, &pool_), device.label() + ": creating a command pool");
  VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  ai.commandPool = pool_;
  ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  ai.commandBufferCount = 1;
  const VkResult r = vkAllocateCommandBuffers(device.handle(), &ai, &cb_);
  if (r != VK_SUCCESS) {
    vkDestroyCommandPool(device.handle(), pool_, nullptr);
    check(r, device.label() + ": allocating a command buffer");
  }
}

namespace {
// Dispatches a command buffer times at first (profiling); a recording that has more is timed
// up to that, and the next recording gets a pool with room for all of them.
constexpr uint32_t kProfileFirstRoom = 256;
}  // namespace

CommandBuffer::~CommandBuffer() {
  if (abandoned_) {
    std::fprintf(stderr, "chorus: %s did not finish a command buffer; it is left allocated, not destroyed in use\n",
                 device_->label().c_str());
    return;
  }
  if (pool_) vkDestroyCommandPool(device_->handle(), pool_, nullptr);  // frees cb_
}

void CommandBuffer::begin() {
  check(vkResetCommandBuffer(cb_, 0), device_->label() + ": resetting a command buffer");
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  check(vkBeginCommandBuffer(cb_, &bi), device_->label() + ": beginning a command buffer");
  dispatches_ = 0;
  barriers_ = 0;
  if (device_->profile()) profile_begin();
}

void CommandBuffer::profile_begin() {
  const uint32_t wanted = std::max<uint32_t>(kProfileFirstRoom, static_cast<uint32_t>(timed_.size()) + untimed_);
  if (!profile_pool_ || profile_pool_->size() < 2 * wanted) profile_pool_ = std::make_unique<TimestampPool>(*device_, 2 * wanted);
  timed_.clear();
  untimed_ = 0;
  collected_tick_ = 0;
  profile_pool_->record_reset(*this, 0, profile_pool_->size());  // every query writable again, once per recording
}

void CommandBuffer::collect_profile() {
  DispatchProfile* profile = device_->profile();
  if (!profile || !profile_pool_ || (timed_.empty() && untimed_ == 0)) return;
  std::vector<uint64_t> ticks(2 * timed_.size());
  if (!timed_.empty() && !profile_pool_->read(0, ticks)) {
    profile->add_untimed(timed_.size() + untimed_);  // not written: the run did not finish
    return;
  }
  // Each run writes new timestamps, later than the last: the same first one means this run
  // was collected already.
  if (!timed_.empty() && ticks[0] == collected_tick_) return;
  if (!timed_.empty()) collected_tick_ = ticks[0];
  for (size_t i = 0; i < timed_.size(); ++i) {
    const Timed& t = timed_[i];
    profile->add(t.pipeline->label(), std::to_string(t.gx) + "x" + std::to_string(t.gy) + "x" + std::to_string(t.gz),
                 profile_pool_->elapsed_ns(ticks[2 * i], ticks[2 * i + 1]));
  }
  if (untimed_) profile->add_untimed(untimed_);
}

void CommandBuffer::end() { check(vkEndCommandBuffer(cb_), device_->label() + ": ending a command buffer"); }

void CommandBuffer::dispatch(const Pipeline& pipeline, std::span<const BufferWindow> bindings, const void* push,
                             uint32_t push_size, uint32_t gx, uint32_t gy, uint32_t gz) {
  if (bindings.size() != pipeline.n_bindings())
    throw Error(device_->label() + ": pipeline '" + pipeline.name() + "' takes " + std::to_string(pipeline.n_bindings()) +
                " buffers, " + std::to_string(bindings.size()) + " were given");
  if (push_size != pipeline.push_bytes())
    throw Error(device_->label() + ": pipeline '" + pipeline.name() + "' takes " + std::to_string(pipeline.push_bytes()) +
                " bytes of push constants, " + std::to_string(push_size) + " were given");
  if (gx == 0 || gy == 0 || gz == 0) return;  // nothing to do
  const bool timed = profile_pool_ && device_->profile() && 2 * (timed_.size() + 1) <= profile_pool_->size();
  if (profile_pool_ && device_->profile() && !timed) ++untimed_;
  const uint32_t query = 2 * static_cast<uint32_t>(timed_.size());
  if (timed) profile_pool_->record_write(*this, query, true);  // written once the work before is done
  vkCmdBindPipeline(cb_, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.handle());
  std::vector<VkDescriptorBufferInfo> infos(bindings.size());
  std::vector<VkWriteDescriptorSet> writes(bindings.size());
  for (size_t i = 0; i < bindings.size(); ++i) {
    const bool texel = (pipeline.texel_bindings() >> i) & 1u;
    if (texel != (bindings[i].texel_view != VK_NULL_HANDLE))
      throw Error(device_->label() + ": pipeline '" + pipeline.name() + "' binding " + std::to_string(i) + " takes " +
                  (texel ? "a texel buffer view (Buffer::texel_window)" : "a storage buffer window (Buffer::window)"));
    infos[i] = {bindings[i].buffer, bindings[i].offset, bindings[i].range};
    writes[i] = {VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
    writes[i].dstBinding = static_cast<uint32_t>(i);
    writes[i].descriptorCount = 1;
    if (texel) {
      writes[i].descriptorType = VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER;
      writes[i].pTexelBufferView = &bindings[i].texel_view;
    } else {
      writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
      writes[i].pBufferInfo = &infos[i];
    }
  }
  vkCmdPushDescriptorSetKHR(cb_, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.layout(), 0,
                            static_cast<uint32_t>(writes.size()), writes.data());
  if (push_size) vkCmdPushConstants(cb_, pipeline.layout(), VK_SHADER_STAGE_COMPUTE_BIT, 0, push_size, push);
  vkCmdDispatch(cb_, gx, gy, gz);
  ++dispatches_;
  if (timed) {
    profile_pool_->record_write(*this, query + 1, true);  // written once the dispatch is done
    timed_.push_back({&pipeline, gx, gy, gz});
  }
}

void CommandBuffer::barrier() {
  ++barriers_;
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                     VK_ACCESS_TRANSFER_WRITE_BIT;
  const VkPipelineStageFlags stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
  vkCmdPipelineBarrier(cb_, stages, stages, 0, 1, &mb, 0, nullptr, 0, nullptr);
}

void CommandBuffer::barrier_to_host() {
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
  vkCmdPipelineBarrier(cb_, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                       VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, nullptr, 0, nullptr);
}

void CommandBuffer::copy(const Buffer& src, uint64_t src_offset, const Buffer& dst, uint64_t dst_offset, uint64_t size) {
  if (src_offset + size > src.size() || dst_offset + size > dst.size())
    throw Error(device_->label() + ": copy of " + std::to_string(size) + " bytes from '" + src.tag() + "' to '" +
                dst.tag() + "' runs past the end of a buffer");
  const VkBufferCopy region{src_offset, dst_offset, size};
  vkCmdCopyBuffer(cb_, src.handle(), dst.handle(), 1, &region);
}

void CommandBuffer::fill(const Buffer& dst, uint64_t offset, uint64_t size, uint32_t value) {
  vkCmdFillBuffer(cb_, dst.handle(), offset, size, value);
}

Timeline::Timeline(Device& device, std::string name, uint64_t initial) : device_(&device), name_(std::move(name)) {
  VkSemaphoreTypeCreateInfo ti{VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO};
  ti.semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE;
  ti.initialValue = initial;
  VkSemaphoreCreateInfo si{VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO, &ti};
  check(vkCreateSemaphore(device.handle(), &si, nullptr, &sem_), device.label() + ": creating timeline '" + name_ + "'");
}

Timeline::~Timeline() {
  if (sem_) vkDestroySemaphore(device_->handle(), sem_, nullptr);
}

uint64_t Timeline::value() const {
  uint64_t v = 0;
  check(vkGetSemaphoreCounterValue(device_->handle(), sem_, &v), device_->label() + ": reading timeline '" + name_ + "'");
  return v;
}

void Timeline::signal(uint64_t value) {
  VkSemaphoreSignalInfo si{VK_STRUCTURE_TYPE_SEMAPHORE_SIGNAL_INFO};
  si.semaphore = sem_;
  si.value = value;
  check(vkSignalSemaphore(device_->handle(), &si),
        device_->label() + ": signalling timeline '" + name_ + "' to " + std::to_string(value));
}

bool Timeline::wait_for(uint64_t value, uint64_t timeout_ns) {
  device_->counters().host_waits.fetch_add(1);
  VkSemaphoreWaitInfo wi{VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO};
  wi.semaphoreCount = 1;
  wi.pSemaphores = &sem_;
  wi.pValues = &value;
  const VkResult r = vkWaitSemaphores(device_->handle(), &wi, timeout_ns);
  if (r == VK_TIMEOUT) return false;
  check(r, device_->label() + ": waiting for timeline '" + name_ + "' to reach " + std::to_string(value));
  return true;
}

namespace {

uint64_t clock_ns(clockid_t id) {
  timespec ts{};
  ::clock_gettime(id, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

}  // namespace

bool Timeline::wait_progressing(uint64_t value) {
  const uint64_t limit = device_->timeout_ns(), slice = std::clamp<uint64_t>(limit / 4, 1'000'000, 250'000'000);
  const bool cpu = device_->info().type == DeviceType::cpu;
  // Progress: the timeline's value, plus on a CPU device one tick per slice in which this
  // process (where the device's work runs) used at least a tenth of a core.
  uint64_t ticks = 0, cpu0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
  ProgressWatch watch(limit, clock_ns(CLOCK_MONOTONIC), this->value());
  while (!wait_for(value, slice)) {
    const uint64_t cpu1 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    if (cpu && cpu1 - cpu0 >= slice / 10) ++ticks;
    cpu0 = cpu1;
    if (watch.stalled(this->value() + (ticks << 40), clock_ns(CLOCK_MONOTONIC))) return false;
  }
  return true;
}

void Timeline::wait(uint64_t value, const std::string& what) {
  if (!wait_progressing(value))
    throw TimeoutError(device_->label() + " did not finish " + what + ": no progress for " +
                           std::to_string(device_->timeout_ns() / 1'000'000) + " ms (timeline '" + name_ +
                           "' stuck at " + std::to_string(this->value()) + ", waiting for " + std::to_string(value) +
                           "; a slow device is waited for while it progresses, CHORUS_TIMEOUT_MS sets the limit)",
                       VK_TIMEOUT);
}

}  // namespace chorus::vk
