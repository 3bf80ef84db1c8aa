#include "vkdevice/device.h"

#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "shaders/registry.h"
#include "vkdevice/cache_file.h"
#include "vkdevice/commands.h"
#include "vkdevice/env.h"

namespace chorus::vk {
namespace {

std::string hex(const uint8_t* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

}  // namespace

uint32_t parse_capability_list(const std::string& list, const std::string& source) {
  uint32_t caps = 0;
  std::stringstream ss(list);
  std::string word;
  while (std::getline(ss, word, ',')) {
    while (!word.empty() && word.front() == ' ') word.erase(word.begin());
    while (!word.empty() && word.back() == ' ') word.pop_back();
    if (word.empty() || word == "none") continue;
    if (word == "all") caps |= shaders::kAllCapabilities;
    else if (word == "subgroup") caps |= shaders::kSubgroup;
    else if (word == "fp16") caps |= shaders::kFp16;
    else if (word == "cpu") caps |= shaders::kCpu;
    else
      throw Error(source + ": unknown capability '" + word + "' (expected a comma-separated list of subgroup, fp16, cpu, or all/none)");
  }
  return caps;
}

Device::Device(const Instance& instance, const DeviceOptions& options) : options_(options) {
  const VkPhysicalDevice pd = instance.physical(options.physical_index);
  physical_ = pd;
  info_ = instance.devices()[options.physical_index];
  label_ = "device " + std::to_string(info_.index) + (options.opening ? "/" + std::to_string(options.opening) : "") +
           " (" + info_.name + ")";
  if (!info_.usable()) throw Error(label_ + " cannot be used: " + info_.reject_reason);

  const std::optional<uint64_t> env_ms = env_uint("CHORUS_TIMEOUT_MS", 1, kMaxTimeoutMs, "milliseconds");
  if (options_.timeout_ns == 0) options_.timeout_ns = env_ms.value_or(kDefaultTimeoutMs) * 1'000'000ull;
  uint32_t disabled = options.disabled_caps;
  if (const char* env = std::getenv("CHORUS_DISABLE_CAPS"))
    disabled |= parse_capability_list(env, "CHORUS_DISABLE_CAPS");
  caps_ = info_.capabilities() & ~disabled;
  staging_path_ = options.force_staging || !info_.unified_memory;

  uint32_t n_families = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &n_families, nullptr);
  std::vector<VkQueueFamilyProperties> families(n_families);
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &n_families, families.data());
  queue_family_ = UINT32_MAX;
  for (uint32_t i = 0; i < n_families && queue_family_ == UINT32_MAX; ++i)
    if (families[i].queueFlags & VK_QUEUE_COMPUTE_BIT) queue_family_ = i;
  if (queue_family_ != UINT32_MAX) timestamp_bits_ = families[queue_family_].timestampValidBits;
  if (env_uint("CHORUS_NO_TIMESTAMPS", 0, 1).value_or(0) == 1) options_.timestamps = false;
  if (env_uint("CHORUS_PROFILE", 0, 1).value_or(0) == 1) options_.profile = true;
  if (options_.profile && options_.timestamps && timestamp_bits_ > 0 && info_.timestamp_period > 0)
    profile_ = std::make_unique<DispatchProfile>();

  std::vector<const char*> exts = {VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME};
  if (info_.memory_budget_ext) exts.push_back(VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
  if (info_.external_memory_host) exts.push_back(VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME);  // vkdevice/host_memory.h
  const bool api13 = VK_API_VERSION_MINOR(info_.api_version) >= 3;
  if (info_.int8_dot && !api13) exts.push_back(VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);

  VkPhysicalDeviceShaderIntegerDotProductFeatures dot{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES};
  dot.shaderIntegerDotProduct = info_.int8_dot;
  VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, info_.int8_dot ? &dot : nullptr};
  f12.timelineSemaphore = VK_TRUE;
  f12.shaderFloat16 = info_.fp16;
  f12.shaderInt8 = info_.int8_dot;
  f12.storageBuffer8BitAccess = info_.int8_dot;
  VkPhysicalDeviceVulkan11Features f11{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES, &f12};
  f11.storageBuffer16BitAccess = info_.fp16;
  VkPhysicalDeviceFeatures2 f2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, &f11};
  f2.features.shaderInt16 = info_.fp16;

  const float priority = 1.0f;
  VkDeviceQueueCreateInfo qi{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  qi.queueFamilyIndex = queue_family_;
  qi.queueCount = 1;
  qi.pQueuePriorities = &priority;
  VkDeviceCreateInfo ci{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, &f2};
  ci.queueCreateInfoCount = 1;
  ci.pQueueCreateInfos = &qi;
  ci.enabledExtensionCount = static_cast<uint32_t>(exts.size());
  ci.ppEnabledExtensionNames = exts.data();
  check(vkCreateDevice(pd, &ci, nullptr, &device_), label_ + ": creating the logical device");
  vkGetDeviceQueue(device_, queue_family_, 0, &queue_);

  // Pipeline cache: load what an earlier run stored; a stale or foreign file is ignored by
  // the driver (its header carries vendor, device and cache UUID).
  std::vector<char> cache_data;
  if (disk_caches()) {
    std::string warning;
    cache_data = read_cache_file(pipeline_cache_path(), warning);
    if (!warning.empty()) std::fprintf(stderr, "chorus: warning: %s\n", warning.c_str());
  }
  VkPipelineCacheCreateInfo pci{VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
  pci.initialDataSize = cache_data.size();
  pci.pInitialData = cache_data.empty() ? nullptr : cache_data.data();
  pipeline_cache_loaded_ = cache_data.size();
  if (vkCreatePipelineCache(device_, &pci, nullptr, &pipeline_cache_) != VK_SUCCESS) {
    pipeline_cache_loaded_ = 0;
    pci.initialDataSize = 0;
    pci.pInitialData = nullptr;
    check(vkCreatePipelineCache(device_, &pci, nullptr, &pipeline_cache_), label_ + ": creating the pipeline cache");
  }

  VkPhysicalDeviceMemoryProperties mem{};
  vkGetPhysicalDeviceMemoryProperties(pd, &mem);
  uint64_t budget = options.memory_budget;
  if (budget == 0) {
    for (const auto& h : info_.heaps)
      if (h.device_local) budget += h.budget;
    if (budget == 0) budget = info_.heaps.empty() ? 0 : info_.heaps[0].budget;
  }
  Allocator::Config ac{device_, mem, budget, info_.max_memory_allocation_size,
                       std::min<uint64_t>(256ull << 20, info_.max_memory_allocation_size), staging_path_, label_};
  allocator_ = std::make_unique<Allocator>(ac);
  transfer_timeline_ = std::make_unique<Timeline>(*this, "transfers");
}

Device::~Device() {
  if (!device_) return;
  vkDeviceWaitIdle(device_);
  transfer_timeline_.reset();
  allocator_.reset();
  save_pipeline_cache();
  vkDestroyPipelineCache(device_, pipeline_cache_, nullptr);
  vkDestroyDevice(device_, nullptr);
}

std::string Device::pipeline_cache_path() const {
  return (std::filesystem::path(cache_dir()) / ("pipelines-" + hex(info_.pipeline_cache_uuid, VK_UUID_SIZE) + ".bin")).string();
}

bool Device::disk_caches() const { return options_.pipeline_cache && !std::getenv("CHORUS_NO_PIPELINE_CACHE"); }

std::string Device::pipeline_list_path(std::string_view context) const {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a: the same name in every run and build
  for (const char ch : context) h = (h ^ static_cast<uint8_t>(ch)) * 0x100000001b3ull;
  char tail[24];
  std::snprintf(tail, sizeof tail, "-%016llx.list", static_cast<unsigned long long>(h));
  return (std::filesystem::path(cache_dir()) / ("pipelines-" + hex(info_.pipeline_cache_uuid, VK_UUID_SIZE) + tail)).string();
}

void Device::release_freed_heap() const {
  if (info_.type != DeviceType::cpu) return;
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

void Device::record_activity(const ActivityStep& step) {
  std::lock_guard lock(activity_mutex_);
  activity_.add(step);
}

ActivitySummary Device::activity() const {
  std::lock_guard lock(activity_mutex_);
  return activity_.summary();
}

void Device::save_pipeline_cache() {
  if (!disk_caches()) return;
  size_t size = 0;
  if (vkGetPipelineCacheData(device_, pipeline_cache_, &size, nullptr) != VK_SUCCESS || size == 0) return;
  std::vector<char> data(size);
  if (vkGetPipelineCacheData(device_, pipeline_cache_, &size, data.data()) != VK_SUCCESS) return;
  // A cache is an optimisation: failing to write it is reported, never fatal. Several
  // logical devices of one physical device write the same file; the rename keeps it whole.
  std::string warning;
  if (!write_cache_file(pipeline_cache_path(), std::span<const char>(data.data(), size),
                        std::to_string(::getpid()) + "-" + std::to_string(reinterpret_cast<uintptr_t>(this)), warning))
    std::fprintf(stderr, "chorus: warning: %s\n", warning.c_str());
}

void Device::check_buffer_size(uint64_t size, const std::string& name) const {
  const uint64_t padded = size > UINT64_MAX - 3 ? UINT64_MAX : (size + 3) / 4 * 4;  // buffers are padded to words
  const auto refuse = [&](uint64_t limit, const char* what) {
    throw Error(label_ + ": buffer '" + name + "' of " + format_bytes(size) + " (" + std::to_string(size) +
                    " bytes) exceeds the device's " + what + " of " + format_bytes(limit) + " (" + std::to_string(limit) +
                    " bytes)",
                VK_ERROR_OUT_OF_DEVICE_MEMORY);
  };
  if (info_.max_buffer_size && padded > info_.max_buffer_size) refuse(info_.max_buffer_size, "maxBufferSize");
  if (info_.max_memory_allocation_size && padded > info_.max_memory_allocation_size)
    refuse(info_.max_memory_allocation_size, "maxMemoryAllocationSize");
  if (padded > allocator_->budget()) refuse(allocator_->budget(), "memory budget");
}

Buffer Device::create_buffer(uint64_t size, BufferKind kind, const std::string& name, Fill fill) {
  check_buffer_size(size, name);
  Buffer b(*allocator_, device_, size, kind, name, info_.min_storage_buffer_offset_alignment,
           info_.max_storage_buffer_range);
  b.allow_texel_views(info_.min_texel_buffer_offset_alignment, info_.max_texel_buffer_elements);
  // On a CPU device, device memory is this process's memory, and the driver's allocation is
  // only reserved: a page becomes resident when first written. Writing the buffer now commits
  // it as a GPU's allocation is, so the process's memory follows the plan (a KV cache for -c
  // positions is resident from the start, not as positions fill) and a shortage shows at load,
  // not in the middle of a reply (docs/memory.md, "Process memory on lavapipe").
  if (info_.type == DeviceType::cpu && b.mapped() && fill == Fill::commit) std::memset(b.mapped(), 0, size);
  return b;
}

void Device::submit(const CommandBuffer& cb, std::span<const TimelinePoint> waits, std::span<const TimelinePoint> signals) {
  const Batch batch{&cb, waits, signals};
  submit(std::span(&batch, 1));
}

void Device::submit(std::span<const Batch> batches) {
  // Every array is sized up front: the VkSubmitInfos point into them.
  size_t n_waits = 0, n_signals = 0;
  for (const auto& b : batches) {
    n_waits += b.waits.size();
    n_signals += b.signals.size();
  }
  std::vector<VkSemaphore> wait_sems(n_waits), signal_sems(n_signals);
  std::vector<uint64_t> wait_values(n_waits), signal_values(n_signals);
  std::vector<VkPipelineStageFlags> wait_stages(n_waits, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT);
  std::vector<VkCommandBuffer> cbs(batches.size());
  std::vector<VkTimelineSemaphoreSubmitInfo> tis(batches.size());
  std::vector<VkSubmitInfo> sis(batches.size());
  size_t w = 0, s = 0;
  for (size_t i = 0; i < batches.size(); ++i) {
    const Batch& b = batches[i];
    const size_t w0 = w, s0 = s;
    for (const auto& p : b.waits) {
      wait_sems[w] = p.timeline->handle();
      wait_values[w++] = p.value;
    }
    for (const auto& p : b.signals) {
      signal_sems[s] = p.timeline->handle();
      signal_values[s++] = p.value;
    }
    cbs[i] = b.cb->handle();
    tis[i] = {VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO};
    tis[i].waitSemaphoreValueCount = static_cast<uint32_t>(w - w0);
    tis[i].pWaitSemaphoreValues = wait_values.data() + w0;
    tis[i].signalSemaphoreValueCount = static_cast<uint32_t>(s - s0);
    tis[i].pSignalSemaphoreValues = signal_values.data() + s0;
    sis[i] = {VK_STRUCTURE_TYPE_SUBMIT_INFO, &tis[i]};
    sis[i].waitSemaphoreCount = static_cast<uint32_t>(w - w0);
    sis[i].pWaitSemaphores = wait_sems.data() + w0;
    sis[i].pWaitDstStageMask = wait_stages.data() + w0;
    sis[i].commandBufferCount = 1;
    sis[i].pCommandBuffers = &cbs[i];
    sis[i].signalSemaphoreCount = static_cast<uint32_t>(s - s0);
    sis[i].pSignalSemaphores = signal_sems.data() + s0;
  }
  std::lock_guard lock(queue_mutex_);
  check(vkQueueSubmit(queue_, static_cast<uint32_t>(sis.size()), sis.data(), VK_NULL_HANDLE), label_ + ": submitting work");
  counters_.submits.fetch_add(1);
  for (const auto& b : batches) {
    counters_.dispatches.fetch_add(b.cb->dispatches());
    counters_.barriers.fetch_add(b.cb->barriers());
  }
}

void Device::run(const CommandBuffer& cb) {
  const uint64_t value = ++transfer_value_;
  const TimelinePoint done{transfer_timeline_.get(), value};
  submit(cb, {}, std::span(&done, 1));
  try {
    transfer_timeline_->wait(value, "a command buffer");
  } catch (const TimeoutError&) {
    // The caller will destroy cb: give the device a grace period, then leave cb allocated.
    if (!transfer_timeline_->wait_for(value, std::max<uint64_t>(timeout_ns(), 120'000'000'000ull))) cb.abandon();
    throw;
  }
}

void Device::upload(Buffer& dst, uint64_t offset, std::span<const std::byte> bytes) {
  if (offset + bytes.size() > dst.size())
    throw Error(label_ + ": uploading " + std::to_string(bytes.size()) + " bytes at offset " + std::to_string(offset) +
                " overruns buffer '" + dst.tag() + "' of " + std::to_string(dst.size()) + " bytes");
  if (bytes.empty()) return;
  if (dst.mapped()) {
    std::memcpy(dst.mapped() + offset, bytes.data(), bytes.size());
    return;
  }
  const uint64_t chunk = std::min<uint64_t>(bytes.size(), 64ull << 20);
  Buffer staging = create_buffer(chunk, BufferKind::Host, "staging");
  CommandBuffer cb(*this);
  for (uint64_t done = 0; done < bytes.size(); done += chunk) {
    const uint64_t n = std::min<uint64_t>(chunk, bytes.size() - done);
    std::memcpy(staging.mapped(), bytes.data() + done, n);
    cb.begin();
    cb.copy(staging, 0, dst, offset + done, n);
    cb.end();
    run(cb);
  }
}

void Device::download(const Buffer& src, uint64_t offset, std::span<std::byte> bytes) {
  if (offset + bytes.size() > src.size())
    throw Error(label_ + ": downloading " + std::to_string(bytes.size()) + " bytes at offset " + std::to_string(offset) +
                " overruns buffer '" + src.tag() + "' of " + std::to_string(src.size()) + " bytes");
  if (bytes.empty()) return;
  if (src.mapped()) {
    std::memcpy(bytes.data(), src.mapped() + offset, bytes.size());
    return;
  }
  const uint64_t chunk = std::min<uint64_t>(bytes.size(), 64ull << 20);
  Buffer staging = create_buffer(chunk, BufferKind::Host, "staging");
  CommandBuffer cb(*this);
  for (uint64_t done = 0; done < bytes.size(); done += chunk) {
    const uint64_t n = std::min<uint64_t>(chunk, bytes.size() - done);
    cb.begin();
    cb.copy(src, offset + done, staging, 0, n);
    cb.barrier_to_host();
    cb.end();
    run(cb);
    std::memcpy(bytes.data() + done, staging.mapped(), n);
  }
}

}  // namespace chorus::vk
