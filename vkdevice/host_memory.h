// vkdevice/host_memory.h — host memory that the host and several logical devices share, and
// the host side of handing it back and forth.
//
// Owns: one page-aligned host allocation imported into every device of a group with
// VK_EXT_external_memory_host (a VkDeviceMemory and a vk::Buffer over the whole allocation on
// each device, so every device and the host see the same bytes), the two barriers that hand
// host-visible memory between a device and the host, and timeline waits for threads other
// than the main thread (a proxy's waits are not main-thread host waits and are not counted
// in DeviceCounters::host_waits). docs/sync.md states the rules these implement.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "vkdevice/commands.h"
#include "vkdevice/device.h"
#include "vkdevice/memory.h"

namespace chorus::vk {

// "" if host memory can be imported into `dev` (the extension is enabled and an imported host
// pointer gets a host-coherent memory type usable by storage buffers), else the reason.
std::string host_import_unavailable(const Device& dev);

class SharedHostMemory {
 public:
  // Allocates at least `size` bytes (zeroed) and imports them into each device. Throws Error
  // naming the device when one cannot import them.
  SharedHostMemory(std::span<Device* const> devices, uint64_t size, const std::string& tag);
  ~SharedHostMemory();
  SharedHostMemory(const SharedHostMemory&) = delete;
  SharedHostMemory& operator=(const SharedHostMemory&) = delete;

  std::byte* data() const { return host_; }
  uint64_t size() const { return size_; }
  // The buffer over the whole allocation on devices[i].
  const Buffer& buffer(size_t i) const { return imports_[i]->buffer; }

 private:
  void release();

  struct Import {
    Device* device = nullptr;
    VkDeviceMemory memory = VK_NULL_HANDLE;
    Buffer buffer;  // destroyed before memory (the destructor frees memory after)
  };
  std::byte* host_ = nullptr;
  uint64_t size_ = 0;
  std::vector<std::unique_ptr<Import>> imports_;
};

// Recorded after a command buffer's last write of host-visible memory that the host reads
// once the batch's timeline signal is observed: compute/transfer writes -> host reads.
// (CommandBuffer::barrier_to_host does the same.)
void barrier_device_to_host(CommandBuffer& cb);
// Recorded at the start of a batch that waits on a timeline value the host signalled after
// writing host-visible memory: host writes -> compute/transfer reads (the memory domain
// operation host -> device; a host signal carries no access scope of its own).
void barrier_host_to_device(CommandBuffer& cb);

// Reads a timeline's counter (no wait, not counted).
uint64_t timeline_value(const Device& dev, const Timeline& t);
// Blocks until `t` reaches `value` or timeout_ns passes; false on timeout. Not counted as a
// main-thread host wait (for proxy threads). A timeout of 0 only tests the value, and is how
// a thread that saw the value by polling makes the device's signal happen-before its reads.
bool wait_timeline(const Device& dev, const Timeline& t, uint64_t value, uint64_t timeout_ns);

}  // namespace chorus::vk
