// vkdevice/memory.h — device memory: a sub-allocator over large blocks, and buffers.
//
// Owns: VkDeviceMemory blocks (each at most maxMemoryAllocationSize; requests larger than a
// block get a dedicated allocation), the per-device budget (driver budget or an override),
// accounting by tag ("weights", "kv", "scratch", ...), and VkBuffer objects bound into those
// blocks. Buffers larger than maxStorageBufferRange are fine; kernels bind windows of them.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "vkdevice/vk.h"

namespace chorus::vk {

enum class BufferKind {
  Device,  // for kernels; device-local (mapped only on unified memory without force_staging)
  Host,    // host-visible, coherent and mapped: staging, readback, host-mediated reduces
};

struct Allocation {
  VkDeviceMemory memory = VK_NULL_HANDLE;
  uint64_t offset = 0;
  uint64_t size = 0;
  uint32_t block = UINT32_MAX;  // index in the allocator's blocks
  std::byte* mapped = nullptr;  // host pointer to offset 0 of this allocation, or null
};

class Allocator {
 public:
  struct Config {
    VkDevice device;
    VkPhysicalDeviceMemoryProperties memory;
    uint64_t budget;               // bytes this device may hold (all heaps together)
    uint64_t max_allocation;       // maxMemoryAllocationSize
    uint64_t block_size;           // preferred VkDeviceMemory block size
    bool force_staging;            // never map Kind::Device memory
    std::string label;             // how errors name the device
  };
  explicit Allocator(const Config& config);
  ~Allocator();
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  // Throws Error naming the device, the tag and the budget if the budget would be exceeded,
  // and VkResult errors by name.
  Allocation allocate(const VkMemoryRequirements& req, BufferKind kind, const std::string& tag);
  void release(const Allocation& a, const std::string& tag);

  uint64_t budget() const { return config_.budget; }
  uint64_t allocations() const;                    // allocate() calls so far (instrumentation)
  uint64_t reserved() const;                       // bytes of VkDeviceMemory held
  uint64_t in_use() const;                         // bytes handed out
  uint64_t in_use(const std::string& tag) const;   // bytes handed out under one tag
  bool device_memory_is_mapped() const;            // Kind::Device memory comes with a host pointer
  const std::string& label() const { return config_.label; }

 private:
  struct Block {
    VkDeviceMemory memory = VK_NULL_HANDLE;
    uint64_t size = 0;
    uint32_t type = 0;
    bool mapped_kind = false;
    bool dedicated = false;
    std::byte* mapped = nullptr;
    std::map<uint64_t, uint64_t> free;  // offset -> size, coalesced
  };
  uint32_t pick_type(uint32_t type_bits, BufferKind kind) const;
  bool wants_mapping(BufferKind kind) const;
  uint32_t new_block(uint64_t size, uint32_t type, bool mapped, bool dedicated, const std::string& tag);

  Config config_;
  mutable std::mutex mutex_;
  std::vector<Block> blocks_;
  uint64_t reserved_ = 0;
  uint64_t allocations_ = 0;
  std::map<std::string, uint64_t> by_tag_;
};

// A slice of a buffer ready to bind: offset is aligned for binding, skip is how far past it
// the requested data starts (kernels add it through their push constants). With texel_view
// set (Buffer::texel_window) it binds as a uniform texel buffer through that view, and
// offset/range are the view's.
struct BufferWindow {
  VkBuffer buffer = VK_NULL_HANDLE;
  uint64_t offset = 0;
  uint64_t range = 0;
  uint64_t skip = 0;
  VkBufferView texel_view = VK_NULL_HANDLE;
};

class Buffer {
 public:
  Buffer() = default;
  Buffer(Allocator& allocator, VkDevice device, uint64_t size, BufferKind kind, std::string tag,
         uint64_t bind_alignment, uint64_t max_range);
  // Adopts `buffer`, already bound to memory its creator owns and keeps alive longer than this
  // Buffer (host memory imported into a device, vkdevice/host_memory.h). The Buffer destroys
  // the VkBuffer only; the allocator neither accounts for nor frees that memory.
  Buffer(Allocator& allocator, VkDevice device, VkBuffer buffer, uint64_t size, std::byte* mapped, std::string tag,
         uint64_t bind_alignment, uint64_t max_range);
  ~Buffer();
  Buffer(Buffer&& o) noexcept;
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  VkBuffer handle() const { return buffer_; }
  uint64_t size() const { return size_; }
  BufferKind kind() const { return kind_; }
  const std::string& tag() const { return tag_; }
  std::byte* mapped() const { return alloc_.mapped; }
  explicit operator bool() const { return buffer_ != VK_NULL_HANDLE; }

  // The window [offset, offset + size) for binding; size 0 means to the end of the buffer.
  // The range is rounded up to whole 32-bit words (buffers are padded to 4 bytes).
  // Throws Error if the window lies outside the buffer or exceeds maxStorageBufferRange.
  BufferWindow window(uint64_t offset = 0, uint64_t size = 0) const;
  uint64_t max_range() const { return max_range_; }

  // Uniform texel buffers (buffers made by Device::create_buffer allow them): the window
  // [offset, offset + size) as a view of `format` (texels of texel_bytes bytes). The view starts
  // at offset aligned down to minTexelBufferOffsetAlignment (skip = bytes before the data, a
  // multiple of texel_bytes, or Error), covers whole texels up to the data's end (clamped to
  // the buffer), and stays alive, cached per (offset, range, format), until the buffer is
  // destroyed; each view costs a little host memory. Throws Error if the buffer allows no
  // texel views or the window exceeds maxTexelBufferElements.
  BufferWindow texel_window(uint64_t offset, uint64_t size, VkFormat format, uint32_t texel_bytes) const;
  uint64_t max_texel_elements() const { return texel_max_elements_; }
  // Set by Device::create_buffer: the buffer was created with texel-buffer usage.
  void allow_texel_views(uint64_t offset_alignment, uint64_t max_elements);

 private:
  void destroy();

  Allocator* allocator_ = nullptr;
  VkDevice device_ = VK_NULL_HANDLE;
  VkBuffer buffer_ = VK_NULL_HANDLE;
  Allocation alloc_{};
  uint64_t size_ = 0;
  BufferKind kind_ = BufferKind::Device;
  std::string tag_;
  uint64_t bind_alignment_ = 16;
  uint64_t max_range_ = 0;
  uint64_t texel_alignment_ = 0;      // 0: no texel views
  uint64_t texel_max_elements_ = 0;
  struct Views;                        // cache of VkBufferViews (memory.cpp)
  std::shared_ptr<Views> views_;       // shared_ptr: Views is incomplete here
};

// "512.0 MiB"
std::string format_bytes(uint64_t bytes);

}  // namespace chorus::vk
