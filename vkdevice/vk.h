// vkdevice/vk.h — the one place chorus includes Vulkan (through volk).
//
// Owns: loading the Vulkan loader at run time, VkResult naming, the error type every
// vkdevice failure is reported with, and the move-only owner used for every Vulkan handle.
#pragma once

#include <volk.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace chorus::vk {

// An expected failure (no driver, out of memory, a timeout, a rejected pipeline). The message
// is one sentence naming the object, what was expected and the device.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, VkResult result = VK_SUCCESS)
      : std::runtime_error(what), result_(result) {}
  VkResult result() const { return result_; }

 private:
  VkResult result_;
};

// A wait that ran past its deadline (a device stopped answering).
class TimeoutError : public Error {
 public:
  using Error::Error;
};

// "VK_ERROR_OUT_OF_DEVICE_MEMORY" for a VkResult.
const char* result_name(VkResult r);

// Throws Error("<what>: <VkResult name>") unless r is VK_SUCCESS.
void check(VkResult r, const std::string& what);

// Loads libvulkan through volk once per process. Throws Error if no loader is installed.
void load_vulkan();

// A move-only owner of one Vulkan handle. Destroy is a callable (handle) -> void capturing
// whatever parent the handle needs; it runs once, when the owner dies or is reset.
template <typename Handle, typename Destroy>
class Owner {
 public:
  Owner() = default;
  Owner(Handle h, Destroy d) : handle_(h), destroy_(std::move(d)) {}
  Owner(Owner&& o) noexcept : handle_(std::exchange(o.handle_, Handle{})), destroy_(std::move(o.destroy_)) {}
  Owner& operator=(Owner&& o) noexcept {
    if (this != &o) {
      reset();
      handle_ = std::exchange(o.handle_, Handle{});
      destroy_ = std::move(o.destroy_);
    }
    return *this;
  }
  Owner(const Owner&) = delete;
  Owner& operator=(const Owner&) = delete;
  ~Owner() { reset(); }

  void reset() {
    if (handle_ != Handle{}) destroy_(handle_);
    handle_ = Handle{};
  }
  Handle get() const { return handle_; }
  explicit operator bool() const { return handle_ != Handle{}; }

 private:
  Handle handle_{};
  Destroy destroy_{};
};

}  // namespace chorus::vk
