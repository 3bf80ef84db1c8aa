#include "vkdevice/host_memory.h"

#include <cstdlib>
#include <cstring>

namespace chorus::vk {
namespace {

constexpr VkExternalMemoryHandleTypeFlagBits kHostHandle = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT;
constexpr VkMemoryPropertyFlags kHostCoherent = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
constexpr VkBufferUsageFlags kUsage =
    VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

uint64_t import_alignment(const Device& dev) {
  VkPhysicalDeviceExternalMemoryHostPropertiesEXT host{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_MEMORY_HOST_PROPERTIES_EXT};
  VkPhysicalDeviceProperties2 p2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, &host};
  vkGetPhysicalDeviceProperties2(dev.physical(), &p2);
  return host.minImportedHostPointerAlignment ? host.minImportedHostPointerAlignment : 4096;
}

// The first memory type among `bits` that is host-visible and host-coherent, or UINT32_MAX.
uint32_t coherent_type(const Device& dev, uint32_t bits) {
  VkPhysicalDeviceMemoryProperties mem{};
  vkGetPhysicalDeviceMemoryProperties(dev.physical(), &mem);
  for (uint32_t t = 0; t < mem.memoryTypeCount; ++t)
    if ((bits & (1u << t)) && (mem.memoryTypes[t].propertyFlags & kHostCoherent) == kHostCoherent) return t;
  return UINT32_MAX;
}

// A VkBuffer that may be bound to imported host memory; the caller owns it.
VkBuffer create_importable_buffer(const Device& dev, uint64_t size, const std::string& tag) {
  VkExternalMemoryBufferCreateInfo ext{VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO};
  ext.handleTypes = kHostHandle;
  VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, &ext};
  bi.size = size;
  bi.usage = kUsage;
  bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  VkBuffer b = VK_NULL_HANDLE;
  check(vkCreateBuffer(dev.handle(), &bi, nullptr, &b), dev.label() + ": creating buffer '" + tag + "' over host memory");
  return b;
}

}  // namespace

std::string host_import_unavailable(const Device& dev) {
  if (!dev.info().external_memory_host) return dev.label() + " lacks VK_EXT_external_memory_host";
  // Probe with one page: the memory types an imported pointer may use must include a
  // host-coherent one that storage buffers accept.
  const uint64_t align = import_alignment(dev);
  void* probe = std::aligned_alloc(align, align);
  if (!probe) return "out of host memory";
  VkMemoryHostPointerPropertiesEXT props{VK_STRUCTURE_TYPE_MEMORY_HOST_POINTER_PROPERTIES_EXT};
  const VkResult r = vkGetMemoryHostPointerPropertiesEXT(dev.handle(), kHostHandle, probe, &props);
  std::free(probe);
  if (r != VK_SUCCESS) return dev.label() + " rejects host pointers (" + std::string(result_name(r)) + ")";
  VkBuffer b = create_importable_buffer(dev, align, "probe");
  VkMemoryRequirements req{};
  vkGetBufferMemoryRequirements(dev.handle(), b, &req);
  vkDestroyBuffer(dev.handle(), b, nullptr);
  if (coherent_type(dev, props.memoryTypeBits & req.memoryTypeBits) == UINT32_MAX)
    return dev.label() + " offers no host-coherent memory type for imported host pointers";
  return "";
}

SharedHostMemory::SharedHostMemory(std::span<Device* const> devices, uint64_t size, const std::string& tag) {
  uint64_t align = 64;
  for (const Device* d : devices) align = std::max(align, import_alignment(*d));
  size_ = align_up(std::max<uint64_t>(size, 1), align);
  host_ = static_cast<std::byte*>(std::aligned_alloc(align, size_));
  if (!host_) throw Error("allocating " + format_bytes(size_) + " of host memory for '" + tag + "'", VK_ERROR_OUT_OF_HOST_MEMORY);
  std::memset(host_, 0, size_);
  try {
    for (Device* d : devices) {
      auto imp = std::make_unique<Import>();
      imp->device = d;
      VkMemoryHostPointerPropertiesEXT props{VK_STRUCTURE_TYPE_MEMORY_HOST_POINTER_PROPERTIES_EXT};
      check(vkGetMemoryHostPointerPropertiesEXT(d->handle(), kHostHandle, host_, &props),
            d->label() + ": querying memory types for host memory '" + tag + "'");
      VkBuffer b = create_importable_buffer(*d, size_, tag);
      VkMemoryRequirements req{};
      vkGetBufferMemoryRequirements(d->handle(), b, &req);
      const uint32_t type = coherent_type(*d, props.memoryTypeBits & req.memoryTypeBits);
      if (type == UINT32_MAX || size_ % std::max<uint64_t>(req.alignment, 1) != 0) {
        vkDestroyBuffer(d->handle(), b, nullptr);
        throw Error(d->label() + ": no host-coherent memory type accepts host memory '" + tag + "'");
      }
      VkImportMemoryHostPointerInfoEXT import{VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT};
      import.handleType = kHostHandle;
      import.pHostPointer = host_;
      VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, &import};
      ai.allocationSize = size_;
      ai.memoryTypeIndex = type;
      VkResult r = vkAllocateMemory(d->handle(), &ai, nullptr, &imp->memory);
      if (r == VK_SUCCESS) r = vkBindBufferMemory(d->handle(), b, imp->memory, 0);
      if (r != VK_SUCCESS) {
        vkDestroyBuffer(d->handle(), b, nullptr);
        if (imp->memory) vkFreeMemory(d->handle(), imp->memory, nullptr);
        check(r, d->label() + ": importing " + format_bytes(size_) + " of host memory for '" + tag + "'");
      }
      imp->buffer = Buffer(d->allocator(), d->handle(), b, size_, host_, tag, d->info().min_storage_buffer_offset_alignment,
                           d->info().max_storage_buffer_range);
      imports_.push_back(std::move(imp));
    }
  } catch (...) {
    release();
    throw;
  }
}

SharedHostMemory::~SharedHostMemory() { release(); }

void SharedHostMemory::release() {
  for (auto& imp : imports_) {
    imp->buffer = Buffer();  // the VkBuffer goes before the memory it is bound to
    vkFreeMemory(imp->device->handle(), imp->memory, nullptr);
  }
  imports_.clear();
  std::free(host_);
  host_ = nullptr;
}

void barrier_device_to_host(CommandBuffer& cb) { cb.barrier_to_host(); }

void barrier_host_to_device(CommandBuffer& cb) {
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  mb.srcAccessMask = VK_ACCESS_HOST_WRITE_BIT;
  mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_TRANSFER_READ_BIT;
  // The source stages include the stages the batch's semaphore wait blocks (compute and
  // transfer, Device::submit), which chains this barrier after the wait.
  vkCmdPipelineBarrier(cb.handle(), VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                       VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &mb, 0, nullptr, 0,
                       nullptr);
}

uint64_t timeline_value(const Device& dev, const Timeline& t) {
  uint64_t v = 0;
  check(vkGetSemaphoreCounterValue(dev.handle(), t.handle(), &v), dev.label() + ": reading timeline '" + t.name() + "'");
  return v;
}

bool wait_timeline(const Device& dev, const Timeline& t, uint64_t value, uint64_t timeout_ns) {
  const VkSemaphore sem = t.handle();
  VkSemaphoreWaitInfo wi{VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO};
  wi.semaphoreCount = 1;
  wi.pSemaphores = &sem;
  wi.pValues = &value;
  const VkResult r = vkWaitSemaphores(dev.handle(), &wi, timeout_ns);
  if (r == VK_TIMEOUT) return false;
  check(r, dev.label() + ": waiting for timeline '" + t.name() + "' to reach " + std::to_string(value));
  return true;
}

}  // namespace chorus::vk
