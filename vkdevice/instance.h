// vkdevice/instance.h — the Vulkan instance and the survey of physical devices.
//
// Owns: VkInstance (with the validation layer and a debug messenger when asked), the list of
// every physical device with the facts chorus plans with, and for each device chorus cannot
// use, the reason.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "vkdevice/vk.h"

namespace chorus::vk {

struct MemoryHeapInfo {
  uint64_t size = 0;          // bytes, as the driver reports the heap
  uint64_t budget = 0;        // VK_EXT_memory_budget's budget, else the heap size
  uint64_t usage = 0;         // VK_EXT_memory_budget's usage, else 0
  bool device_local = false;
};

enum class DeviceType { discrete, integrated, virtual_gpu, cpu, other };
const char* to_string(DeviceType t);  // "discrete", "integrated", "virtual", "cpu", "other"

struct DeviceInfo {
  uint32_t index = 0;                 // position in vkEnumeratePhysicalDevices
  std::string name;
  uint32_t vendor_id = 0;
  std::string vendor;                 // "AMD", "NVIDIA", "Intel", "Mesa (CPU)", ...
  std::string driver_name;            // VkPhysicalDeviceDriverProperties::driverName
  std::string driver_info;            // VkPhysicalDeviceDriverProperties::driverInfo
  uint32_t api_version = 0;
  uint32_t driver_version = 0;
  DeviceType type = DeviceType::other;
  std::vector<MemoryHeapInfo> heaps;
  bool memory_budget_ext = false;     // heaps' budget/usage come from VK_EXT_memory_budget
  bool unified_memory = false;        // a memory type is both device-local and host-visible
  uint32_t subgroup_size = 0;
  bool subgroup_arithmetic = false;   // in compute shaders
  bool fp16 = false;                  // shaderFloat16 + storageBuffer16BitAccess + shaderInt16
  bool int8_dot = false;              // shaderIntegerDotProduct + shaderInt8 + 8-bit storage
  bool storage8 = false;
  bool storage16 = false;
  bool timeline_semaphore = false;
  bool push_descriptor = false;
  bool external_memory_host = false;
  uint64_t max_storage_buffer_range = 0;
  uint64_t max_memory_allocation_size = 0;
  uint64_t max_buffer_size = 0;       // VkPhysicalDeviceMaintenance4Properties (Vulkan 1.3); 0: unknown
  uint64_t min_storage_buffer_offset_alignment = 0;
  uint64_t min_texel_buffer_offset_alignment = 0;  // buffer views (uniform texel buffers)
  uint64_t max_texel_buffer_elements = 0;
  uint32_t max_workgroup_invocations = 0;
  uint32_t max_shared_memory = 0;
  float timestamp_period = 0;         // nanoseconds per timestamp tick (VkPhysicalDeviceLimits)
  uint8_t pipeline_cache_uuid[VK_UUID_SIZE] = {};
  std::string reject_reason;          // empty when chorus can use the device

  bool usable() const { return reject_reason.empty(); }
  uint64_t device_local_bytes() const;
  uint32_t capabilities() const;      // shaders::Capability bits the hardware offers
};

struct InstanceOptions {
  bool validation = false;   // enable VK_LAYER_KHRONOS_validation (error if not installed)
  // Worker threads lavapipe gives the devices of this instance (0: it runs every dispatch on
  // the submitting thread). Lavapipe has no API for it: it reads LP_NUM_THREADS when an instance
  // lists its devices, once per instance, so the constructor sets that variable while it does
  // and restores it after. Unset, or LP_NUM_THREADS already in the environment (the user's
  // choice wins): the driver's default. Other drivers ignore it. See cpu_threads_per_opening.
  std::optional<uint32_t> cpu_threads;
};

// Worker threads for each of `openings` logical devices of one CPU device that run at the same
// time (a tensor split): the host's cores shared out, and 0 where that leaves one core or less
// each, as the submitting thread then does the work without handing it to another thread
// (docs/performance.md, "One instance per logical device of a CPU device").
uint32_t cpu_threads_per_opening(uint32_t openings, uint32_t host_cores);

// Whether `d` is a Vulkan implementation on the CPU that takes InstanceOptions::cpu_threads.
bool takes_cpu_threads(const DeviceInfo& d);


class Instance {
 public:
  // Loads Vulkan and creates the instance. Throws Error with a clear sentence on failure.
  explicit Instance(const InstanceOptions& options = {});
  ~Instance();
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;

  VkInstance handle() const { return instance_; }
  const std::vector<DeviceInfo>& devices() const { return devices_; }
  VkPhysicalDevice physical(uint32_t index) const;

  // Messages of severity error reported by the validation layer (or any layer) so far.
  uint64_t validation_errors() const { return validation_errors_->load(); }
  bool validation_enabled() const { return validation_; }
  // The worker threads asked for by InstanceOptions::cpu_threads, when the instance set them.
  std::optional<uint32_t> cpu_threads() const { return cpu_threads_; }

 private:
  VkInstance instance_ = VK_NULL_HANDLE;
  VkDebugUtilsMessengerEXT messenger_ = VK_NULL_HANDLE;
  bool validation_ = false;
  std::optional<uint32_t> cpu_threads_;
  std::unique_ptr<std::atomic<uint64_t>> validation_errors_ = std::make_unique<std::atomic<uint64_t>>(0);
  std::vector<VkPhysicalDevice> physical_;
  std::vector<DeviceInfo> devices_;
};

// For one of `openings` logical devices of physical device `index` (of `survey`) that work at
// the same time: an instance of its own with the host's cores shared out, when the device takes
// cpu_threads and is opened more than once; else null (open it from `survey`). Devices of one
// lavapipe instance share one pool of workers and one lock around every dispatch. Throws Error
// if the new instance does not list the same device at `index`.
std::unique_ptr<Instance> own_instance_for(const Instance& survey, uint32_t index, uint32_t openings, bool validation);

// Why chorus cannot use a device ("" if it can): a pure function of the survey's facts.
std::string reject_reason(const DeviceInfo& d, bool has_compute_queue);

// Returns "1.3.230".
std::string version_string(uint32_t vk_version);

}  // namespace chorus::vk
