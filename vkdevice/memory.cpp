#include "vkdevice/memory.h"

#include <cinttypes>
#include <algorithm>
#include <cstdio>
#include <optional>
#include <tuple>
#include <utility>

namespace chorus::vk {
namespace {

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace

std::string format_bytes(uint64_t bytes) {
  char buf[64];
  const double b = static_cast<double>(bytes);
  if (bytes >= (1ull << 30))
    std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1ull << 30));
  else if (bytes >= (1ull << 20))
    std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1ull << 20));
  else if (bytes >= (1ull << 10))
    std::snprintf(buf, sizeof buf, "%.1f KiB", b / (1ull << 10));
  else
    std::snprintf(buf, sizeof buf, "%" PRIu64 " B", bytes);
  return buf;
}

Allocator::Allocator(const Config& config) : config_(config) {}

Allocator::~Allocator() {
  for (auto& b : blocks_)
    if (b.memory) vkFreeMemory(config_.device, b.memory, nullptr);  // unmapped implicitly
}

bool Allocator::wants_mapping(BufferKind kind) const {
  return kind == BufferKind::Host || !config_.force_staging;
}

bool Allocator::device_memory_is_mapped() const {
  const uint32_t all = (1u << config_.memory.memoryTypeCount) - 1;
  const uint32_t t = pick_type(all, BufferKind::Device);
  return wants_mapping(BufferKind::Device) &&
         (config_.memory.memoryTypes[t].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT);
}

uint32_t Allocator::pick_type(uint32_t type_bits, BufferKind kind) const {
  // Preference lists, best first. Device: device-local (+host-visible when we may map it,
  // i.e. unified memory). Host: host-visible coherent, cached if possible.
  constexpr VkMemoryPropertyFlags DL = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
  constexpr VkMemoryPropertyFlags HV = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  constexpr VkMemoryPropertyFlags HC = VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
  std::vector<VkMemoryPropertyFlags> wanted;
  if (kind == BufferKind::Device) {
    if (!config_.force_staging) wanted.push_back(DL | HV);
    wanted.push_back(DL);
    wanted.push_back(0);
  } else {
    wanted = {HV | HC, HV};
  }
  for (auto w : wanted)
    for (uint32_t t = 0; t < config_.memory.memoryTypeCount; ++t)
      if ((type_bits & (1u << t)) && (config_.memory.memoryTypes[t].propertyFlags & w) == w) {
        // A device-local-only request must not land on memory that needs a host-visible
        // small BAR heap when plain device-local exists; order above already prefers that.
        return t;
      }
  throw Error(config_.label + ": no memory type fits a " +
              std::string(kind == BufferKind::Device ? "device" : "host-visible") + " buffer");
}

uint32_t Allocator::new_block(uint64_t size, uint32_t type, bool mapped, bool dedicated, const std::string& tag) {
  if (reserved_ + size > config_.budget)
    throw Error(config_.label + ": allocating " + format_bytes(size) + " for '" + tag + "' would exceed the memory budget of " +
                    format_bytes(config_.budget) + " (" + format_bytes(reserved_) + " already reserved)",
                VK_ERROR_OUT_OF_DEVICE_MEMORY);
  if (size > config_.max_allocation)
    throw Error(config_.label + ": '" + tag + "' needs one allocation of " + format_bytes(size) +
                    " but the device allows at most " + format_bytes(config_.max_allocation) + " (maxMemoryAllocationSize)",
                VK_ERROR_OUT_OF_DEVICE_MEMORY);
  VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  ai.allocationSize = size;
  ai.memoryTypeIndex = type;
  Block b;
  b.size = size;
  b.type = type;
  b.mapped_kind = mapped;
  b.dedicated = dedicated;
  check(vkAllocateMemory(config_.device, &ai, nullptr, &b.memory),
        config_.label + ": allocating " + format_bytes(size) + " of device memory for '" + tag + "'");
  if (mapped) {
    void* p = nullptr;
    const VkResult r = vkMapMemory(config_.device, b.memory, 0, VK_WHOLE_SIZE, 0, &p);
    if (r != VK_SUCCESS) {
      vkFreeMemory(config_.device, b.memory, nullptr);
      check(r, config_.label + ": mapping memory for '" + tag + "'");
    }
    b.mapped = static_cast<std::byte*>(p);
  }
  b.free[0] = size;
  reserved_ += size;
  // Reuse a slot of a released dedicated block if there is one.
  for (uint32_t i = 0; i < blocks_.size(); ++i)
    if (blocks_[i].memory == VK_NULL_HANDLE) {
      blocks_[i] = std::move(b);
      return i;
    }
  blocks_.push_back(std::move(b));
  return static_cast<uint32_t>(blocks_.size() - 1);
}

Allocation Allocator::allocate(const VkMemoryRequirements& req, BufferKind kind, const std::string& tag) {
  std::lock_guard lock(mutex_);
  ++allocations_;
  const uint32_t type = pick_type(req.memoryTypeBits, kind);
  const bool mapped = wants_mapping(kind) &&
                      (config_.memory.memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT);
  const uint64_t align = req.alignment ? req.alignment : 1;
  const uint64_t size = align_up(req.size, align);

  auto take = [&](uint32_t bi) -> std::optional<Allocation> {
    Block& b = blocks_[bi];
    for (auto it = b.free.begin(); it != b.free.end(); ++it) {
      const uint64_t start = align_up(it->first, align);
      const uint64_t end = it->first + it->second;
      if (start + size > end) continue;
      const uint64_t f_off = it->first;
      b.free.erase(it);
      if (start > f_off) b.free[f_off] = start - f_off;
      if (end > start + size) b.free[start + size] = end - (start + size);
      Allocation a;
      a.memory = b.memory;
      a.offset = start;
      a.size = size;
      a.block = bi;
      a.mapped = b.mapped ? b.mapped + start : nullptr;
      return a;
    }
    return std::nullopt;
  };

  if (size <= config_.block_size / 2) {
    for (uint32_t bi = 0; bi < blocks_.size(); ++bi) {
      const Block& b = blocks_[bi];
      if (!b.memory || b.dedicated || b.type != type || b.mapped_kind != mapped) continue;
      if (auto a = take(bi)) {
        by_tag_[tag] += a->size;
        return *a;
      }
    }
    // A fresh shared block; when the budget has no room for a whole one, just what is asked.
    uint64_t block = std::min(config_.block_size, config_.max_allocation);
    if (reserved_ + block > config_.budget) block = size;
    const uint32_t bi = new_block(block, type, mapped, false, tag);
    auto a = take(bi);
    by_tag_[tag] += a->size;
    return *a;
  }
  const uint32_t bi = new_block(size, type, mapped, true, tag);
  auto a = take(bi);
  by_tag_[tag] += a->size;
  return *a;
}

void Allocator::release(const Allocation& a, const std::string& tag) {
  std::lock_guard lock(mutex_);
  if (a.block >= blocks_.size()) return;
  Block& b = blocks_[a.block];
  by_tag_[tag] -= a.size;
  if (b.dedicated) {
    vkFreeMemory(config_.device, b.memory, nullptr);
    reserved_ -= b.size;
    b = Block{};
    return;
  }
  auto [it, inserted] = b.free.emplace(a.offset, a.size);
  // Coalesce with the following and preceding free ranges.
  auto next = std::next(it);
  if (next != b.free.end() && it->first + it->second == next->first) {
    it->second += next->second;
    b.free.erase(next);
  }
  if (it != b.free.begin()) {
    auto prev = std::prev(it);
    if (prev->first + prev->second == it->first) {
      prev->second += it->second;
      b.free.erase(it);
    }
  }
}

uint64_t Allocator::allocations() const {
  std::lock_guard lock(mutex_);
  return allocations_;
}

uint64_t Allocator::reserved() const {
  std::lock_guard lock(mutex_);
  return reserved_;
}

uint64_t Allocator::in_use() const {
  std::lock_guard lock(mutex_);
  uint64_t total = 0;
  for (const auto& [tag, bytes] : by_tag_) total += bytes;
  return total;
}

uint64_t Allocator::in_use(const std::string& tag) const {
  std::lock_guard lock(mutex_);
  auto it = by_tag_.find(tag);
  return it == by_tag_.end() ? 0 : it->second;
}

Buffer::Buffer(Allocator& allocator, VkDevice device, uint64_t size, BufferKind kind, std::string tag,
               uint64_t bind_alignment, uint64_t max_range)
    : allocator_(&allocator), device_(device), size_(size), kind_(kind), tag_(std::move(tag)),
      bind_alignment_(bind_alignment), max_range_(max_range) {
  if (size == 0) throw Error(allocator.label() + ": buffer '" + tag_ + "' has size 0");
  VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bi.size = align_up(size, 4);  // kernels read by 32-bit words: the last word is always whole
  bi.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT |
             VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT;  // texel_window() once allow_texel_views() is called
  bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  check(vkCreateBuffer(device, &bi, nullptr, &buffer_),
        allocator.label() + ": creating buffer '" + tag_ + "' of " + format_bytes(size));
  VkMemoryRequirements req{};
  vkGetBufferMemoryRequirements(device, buffer_, &req);
  try {
    alloc_ = allocator.allocate(req, kind, tag_);
    check(vkBindBufferMemory(device, buffer_, alloc_.memory, alloc_.offset),
          allocator.label() + ": binding memory to buffer '" + tag_ + "'");
  } catch (...) {
    if (alloc_.memory) allocator.release(alloc_, tag_);
    vkDestroyBuffer(device, buffer_, nullptr);
    buffer_ = VK_NULL_HANDLE;
    throw;
  }
}

Buffer::Buffer(Allocator& allocator, VkDevice device, VkBuffer buffer, uint64_t size, std::byte* mapped, std::string tag,
               uint64_t bind_alignment, uint64_t max_range)
    : allocator_(&allocator), device_(device), buffer_(buffer), size_(size), kind_(BufferKind::Host),
      tag_(std::move(tag)), bind_alignment_(bind_alignment), max_range_(max_range) {
  alloc_.mapped = mapped;  // alloc_.block stays UINT32_MAX: release() leaves foreign memory alone
}

struct Buffer::Views {
  std::mutex mutex;
  std::map<std::tuple<uint64_t, uint64_t, int>, VkBufferView> views;  // (offset, range, format)
};

void Buffer::destroy() {
  if (views_) {
    for (const auto& [key, view] : views_->views) vkDestroyBufferView(device_, view, nullptr);
    views_.reset();
  }
  if (buffer_) {
    vkDestroyBuffer(device_, buffer_, nullptr);
    allocator_->release(alloc_, tag_);
  }
  buffer_ = VK_NULL_HANDLE;
}

Buffer::~Buffer() { destroy(); }

Buffer::Buffer(Buffer&& o) noexcept { *this = std::move(o); }

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    destroy();
    allocator_ = o.allocator_;
    device_ = o.device_;
    buffer_ = std::exchange(o.buffer_, VK_NULL_HANDLE);
    alloc_ = o.alloc_;
    size_ = o.size_;
    kind_ = o.kind_;
    tag_ = std::move(o.tag_);
    bind_alignment_ = o.bind_alignment_;
    max_range_ = o.max_range_;
    texel_alignment_ = std::exchange(o.texel_alignment_, 0);
    texel_max_elements_ = std::exchange(o.texel_max_elements_, 0);
    views_ = std::move(o.views_);
  }
  return *this;
}

void Buffer::allow_texel_views(uint64_t offset_alignment, uint64_t max_elements) {
  texel_alignment_ = std::max<uint64_t>(offset_alignment, 1);
  texel_max_elements_ = max_elements;
  if (!views_) views_ = std::make_shared<Views>();
}

BufferWindow Buffer::texel_window(uint64_t offset, uint64_t size, VkFormat format, uint32_t texel_bytes) const {
  if (texel_alignment_ == 0 || !views_)
    throw Error("buffer '" + tag_ + "' was not created for texel buffer views");
  if (size == 0 || offset + size > size_)
    throw Error("buffer '" + tag_ + "': texel window [" + std::to_string(offset) + ", " + std::to_string(offset + size) +
                ") lies outside its " + std::to_string(size_) + " bytes");
  BufferWindow w;
  w.buffer = buffer_;
  w.offset = offset / texel_alignment_ * texel_alignment_;
  w.skip = offset - w.offset;
  if (w.skip % texel_bytes != 0)
    throw Error("buffer '" + tag_ + "': texel window at byte " + std::to_string(offset) + " is not a whole number of " +
                std::to_string(texel_bytes) + "-byte texels past an aligned offset");
  // Whole texels up to the data's end, but never past the buffer's (word-padded) end.
  const uint64_t end = std::min(align_up(offset + size, texel_bytes), align_up(size_, 4) / texel_bytes * texel_bytes);
  if (end <= w.offset) throw Error("buffer '" + tag_ + "': texel window holds no whole texel");
  w.range = end - w.offset;
  if (w.range / texel_bytes > texel_max_elements_)
    throw Error("buffer '" + tag_ + "': a texel window of " + std::to_string(w.range / texel_bytes) +
                " texels exceeds the device's maxTexelBufferElements of " + std::to_string(texel_max_elements_));
  std::lock_guard lock(views_->mutex);
  const auto key = std::make_tuple(w.offset, w.range, static_cast<int>(format));
  auto it = views_->views.find(key);
  if (it == views_->views.end()) {
    VkBufferViewCreateInfo vi{VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO};
    vi.buffer = buffer_;
    vi.format = format;
    vi.offset = w.offset;
    vi.range = w.range;
    VkBufferView view = VK_NULL_HANDLE;
    check(vkCreateBufferView(device_, &vi, nullptr, &view), "buffer '" + tag_ + "': creating a texel buffer view");
    it = views_->views.emplace(key, view).first;
  }
  w.texel_view = it->second;
  return w;
}

BufferWindow Buffer::window(uint64_t offset, uint64_t size) const {
  if (size == 0) size = size_ > offset ? size_ - offset : 0;
  if (offset + size > size_ || size == 0)
    throw Error("buffer '" + tag_ + "': window [" + std::to_string(offset) + ", " + std::to_string(offset + size) +
                ") lies outside its " + std::to_string(size_) + " bytes");
  BufferWindow w;
  w.buffer = buffer_;
  w.offset = offset / bind_alignment_ * bind_alignment_;
  w.skip = offset - w.offset;
  // Grow the range by what the aligned-down offset added, so the last bytes stay in range,
  // and round it up to whole 32-bit words (the buffer is padded to allow that).
  w.range = std::min(align_up(size + w.skip, 4), align_up(size_, 4) - w.offset);
  if (w.range > max_range_)
    throw Error("buffer '" + tag_ + "': a window of " + format_bytes(w.range) + " exceeds the device's maxStorageBufferRange of " +
                format_bytes(max_range_) + "; the kernel must bind it in smaller windows");
  return w;
}

}  // namespace chorus::vk
