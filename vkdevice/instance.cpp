#include "vkdevice/instance.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "shaders/registry.h"

namespace chorus::vk {
namespace {

// Sets an environment variable for a scope and restores what was there (set or not) after.
// setenv is not thread-safe against getenv on other threads: used only while an instance is
// created, before any device of it runs, and chorus's commands create such instances before
// they start threads of their own (tools/model_setup.h, open_devices; `chorus serve` opens its
// devices before it listens).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

bool has_extension(const std::vector<VkExtensionProperties>& exts, const char* name) {
  for (const auto& e : exts)
    if (std::strcmp(e.extensionName, name) == 0) return true;
  return false;
}

const char* vendor_name(uint32_t id) {
  switch (id) {
    case 0x1002: return "AMD";
    case 0x10DE: return "NVIDIA";
    case 0x8086: return "Intel";
    case 0x13B5: return "ARM";
    case 0x5143: return "Qualcomm";
    case 0x106B: return "Apple";
    case 0x1010: return "ImgTec";
    case 0x10005: return "Mesa";
    default: return "unknown vendor";
  }
}

DeviceType device_type(VkPhysicalDeviceType t) {
  switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return DeviceType::discrete;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return DeviceType::integrated;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return DeviceType::virtual_gpu;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return DeviceType::cpu;
    default: return DeviceType::other;
  }
}

VKAPI_ATTR VkBool32 VKAPI_CALL on_debug_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                               VkDebugUtilsMessageTypeFlagsEXT,
                                               const VkDebugUtilsMessengerCallbackDataEXT* data,
                                               void* user) {
  if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) {
    static_cast<std::atomic<uint64_t>*>(user)->fetch_add(1);
    std::fprintf(stderr, "vulkan validation error: %s\n", data->pMessage ? data->pMessage : "(no message)");
  }
  return VK_FALSE;
}

DeviceInfo survey_one(VkPhysicalDevice pd, uint32_t index) {
  DeviceInfo d;
  d.index = index;

  uint32_t n_ext = 0;
  vkEnumerateDeviceExtensionProperties(pd, nullptr, &n_ext, nullptr);
  std::vector<VkExtensionProperties> exts(n_ext);
  vkEnumerateDeviceExtensionProperties(pd, nullptr, &n_ext, exts.data());
  d.memory_budget_ext = has_extension(exts, VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
  d.push_descriptor = has_extension(exts, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME);
  d.external_memory_host = has_extension(exts, VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME);

  VkPhysicalDeviceProperties base{};
  vkGetPhysicalDeviceProperties(pd, &base);
  d.api_version = base.apiVersion;
  d.driver_version = base.driverVersion;
  d.name = base.deviceName;
  d.vendor_id = base.vendorID;
  d.vendor = vendor_name(base.vendorID);
  d.type = device_type(base.deviceType);
  d.max_storage_buffer_range = base.limits.maxStorageBufferRange;
  d.min_storage_buffer_offset_alignment = base.limits.minStorageBufferOffsetAlignment;
  d.min_texel_buffer_offset_alignment = base.limits.minTexelBufferOffsetAlignment;
  d.max_texel_buffer_elements = base.limits.maxTexelBufferElements;
  d.max_workgroup_invocations = base.limits.maxComputeWorkGroupInvocations;
  d.max_shared_memory = base.limits.maxComputeSharedMemorySize;
  d.timestamp_period = base.limits.timestampPeriod;
  std::memcpy(d.pipeline_cache_uuid, base.pipelineCacheUUID, VK_UUID_SIZE);

  if (VK_API_VERSION_MINOR(base.apiVersion) < 2 && VK_API_VERSION_MAJOR(base.apiVersion) == 1) {
    d.reject_reason = reject_reason(d, true);  // the 1.2 structures below are not there to query
    return d;
  }

  VkPhysicalDeviceDriverProperties driver{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
  // maxBufferSize is core in Vulkan 1.3 (maintenance4); on older devices it stays unknown.
  VkPhysicalDeviceMaintenance4Properties m4{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_4_PROPERTIES, &driver};
  const bool api13 = VK_API_VERSION_MINOR(base.apiVersion) >= 3 || VK_API_VERSION_MAJOR(base.apiVersion) > 1;
  VkPhysicalDeviceSubgroupProperties subgroup{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES,
                                              api13 ? static_cast<void*>(&m4) : static_cast<void*>(&driver)};
  VkPhysicalDeviceMaintenance3Properties m3{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES, &subgroup};
  VkPhysicalDeviceProperties2 props2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, &m3};
  vkGetPhysicalDeviceProperties2(pd, &props2);
  d.driver_name = driver.driverName;
  d.driver_info = driver.driverInfo;
  d.subgroup_size = subgroup.subgroupSize;
  d.subgroup_arithmetic = (subgroup.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                          (subgroup.supportedOperations & VK_SUBGROUP_FEATURE_BASIC_BIT) &&
                          (subgroup.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
  d.max_memory_allocation_size = m3.maxMemoryAllocationSize;
  d.max_buffer_size = api13 ? m4.maxBufferSize : 0;

  VkPhysicalDeviceShaderIntegerDotProductFeatures dot{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES};
  const bool dot_ext = VK_API_VERSION_MINOR(base.apiVersion) >= 3 ||
                       has_extension(exts, VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
  VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, dot_ext ? &dot : nullptr};
  VkPhysicalDeviceVulkan11Features f11{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES, &f12};
  VkPhysicalDeviceFeatures2 f2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, &f11};
  vkGetPhysicalDeviceFeatures2(pd, &f2);
  d.storage16 = f11.storageBuffer16BitAccess;
  d.storage8 = f12.storageBuffer8BitAccess;
  d.fp16 = f12.shaderFloat16 && f11.storageBuffer16BitAccess && f2.features.shaderInt16;
  d.int8_dot = dot_ext && dot.shaderIntegerDotProduct && f12.shaderInt8 && f12.storageBuffer8BitAccess;
  d.timeline_semaphore = f12.timelineSemaphore;

  VkPhysicalDeviceMemoryBudgetPropertiesEXT budget{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT};
  VkPhysicalDeviceMemoryProperties2 mem2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2,
                                         d.memory_budget_ext ? &budget : nullptr};
  vkGetPhysicalDeviceMemoryProperties2(pd, &mem2);
  const auto& mem = mem2.memoryProperties;
  for (uint32_t h = 0; h < mem.memoryHeapCount; ++h) {
    MemoryHeapInfo heap;
    heap.size = mem.memoryHeaps[h].size;
    heap.device_local = mem.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT;
    heap.budget = d.memory_budget_ext ? budget.heapBudget[h] : heap.size;
    heap.usage = d.memory_budget_ext ? budget.heapUsage[h] : 0;
    d.heaps.push_back(heap);
  }
  for (uint32_t t = 0; t < mem.memoryTypeCount; ++t) {
    const auto f = mem.memoryTypes[t].propertyFlags;
    if ((f & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT) && (f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)) {
      // Small BAR windows (256 MiB device-local host-visible heaps on discrete GPUs) are not unified memory.
      if (d.type == DeviceType::integrated || d.type == DeviceType::cpu || mem.memoryHeaps[mem.memoryTypes[t].heapIndex].size > (1ull << 30))
        d.unified_memory = true;
    }
  }

  uint32_t n_queues = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &n_queues, nullptr);
  std::vector<VkQueueFamilyProperties> queues(n_queues);
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &n_queues, queues.data());
  bool compute = false;
  for (const auto& q : queues) compute |= (q.queueFlags & VK_QUEUE_COMPUTE_BIT) != 0;

  d.reject_reason = reject_reason(d, compute);
  return d;
}

}  // namespace

std::string reject_reason(const DeviceInfo& d, bool has_compute_queue) {
  if (VK_API_VERSION_MAJOR(d.api_version) == 1 && VK_API_VERSION_MINOR(d.api_version) < 2)
    return "Vulkan 1.2 is required but the driver offers " + version_string(d.api_version);
  if (!has_compute_queue) return "it has no compute queue";
  if (!d.timeline_semaphore)
    return "it lacks timeline semaphores (Vulkan 1.2 feature timelineSemaphore), which every reduce waits on";
  if (!d.push_descriptor) return "it lacks VK_KHR_push_descriptor, which chorus binds kernel buffers with";
  if (d.max_storage_buffer_range < (1u << 20))
    return "its maxStorageBufferRange (" + std::to_string(d.max_storage_buffer_range) + " bytes) is below 1 MiB";
  return "";
}

std::string version_string(uint32_t v) {
  return std::to_string(VK_API_VERSION_MAJOR(v)) + "." + std::to_string(VK_API_VERSION_MINOR(v)) + "." +
         std::to_string(VK_API_VERSION_PATCH(v));
}

uint64_t DeviceInfo::device_local_bytes() const {
  uint64_t total = 0;
  for (const auto& h : heaps)
    if (h.device_local) total += h.size;
  return total;
}

uint32_t DeviceInfo::capabilities() const {
  uint32_t caps = 0;
  if (subgroup_arithmetic) caps |= shaders::kSubgroup;
  if (fp16) caps |= shaders::kFp16;
  if (type == DeviceType::cpu) caps |= shaders::kCpu;
  return caps;
}

const char* to_string(DeviceType t) {
  switch (t) {
    case DeviceType::discrete: return "discrete";
    case DeviceType::integrated: return "integrated";
    case DeviceType::virtual_gpu: return "virtual";
    case DeviceType::cpu: return "cpu";
    case DeviceType::other: return "other";
  }
  return "other";
}

uint32_t cpu_threads_per_opening(uint32_t openings, uint32_t host_cores) {
  const uint32_t each = host_cores / std::max(openings, 1u);
  return each > 1 ? each : 0;
}

bool takes_cpu_threads(const DeviceInfo& d) { return d.type == DeviceType::cpu && d.driver_name == "llvmpipe"; }

std::unique_ptr<Instance> own_instance_for(const Instance& survey, uint32_t index, uint32_t openings, bool validation) {
  if (openings < 2 || index >= survey.devices().size() || !takes_cpu_threads(survey.devices()[index])) return nullptr;
  InstanceOptions o;
  o.validation = validation;
  o.cpu_threads = cpu_threads_per_opening(openings, std::max(1u, std::thread::hardware_concurrency()));
  auto own = std::make_unique<Instance>(o);
  const DeviceInfo& was = survey.devices()[index];
  if (index >= own->devices().size() || own->devices()[index].name != was.name ||
      std::memcmp(own->devices()[index].pipeline_cache_uuid, was.pipeline_cache_uuid, VK_UUID_SIZE) != 0)
    throw Error("device " + std::to_string(index) + " (" + was.name +
                ") is not at the same index in a second Vulkan instance; list it once, or use -sm layer");
  return own;
}

Instance::Instance(const InstanceOptions& options) {
  // Lavapipe creates a device's worker pool when the instance lists it (vkEnumeratePhysicalDevices
  // below), reading LP_NUM_THREADS then; a value the user set is left alone.
  std::optional<ScopedEnv> lp_threads;
  if (options.cpu_threads && !std::getenv("LP_NUM_THREADS")) {
    lp_threads.emplace("LP_NUM_THREADS", std::to_string(*options.cpu_threads));
    cpu_threads_ = options.cpu_threads;
  }
  load_vulkan();
  uint32_t loader_version = VK_API_VERSION_1_0;
  if (vkEnumerateInstanceVersion) vkEnumerateInstanceVersion(&loader_version);
  if (VK_API_VERSION_MINOR(loader_version) < 2 && VK_API_VERSION_MAJOR(loader_version) == 1)
    throw Error("the Vulkan loader offers version " + version_string(loader_version) + ", chorus needs 1.2 or newer");

  uint32_t n_ext = 0;
  vkEnumerateInstanceExtensionProperties(nullptr, &n_ext, nullptr);
  std::vector<VkExtensionProperties> exts(n_ext);
  vkEnumerateInstanceExtensionProperties(nullptr, &n_ext, exts.data());
  std::vector<const char*> enabled;
  const bool debug_utils = has_extension(exts, VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
  if (debug_utils) enabled.push_back(VK_EXT_DEBUG_UTILS_EXTENSION_NAME);

  std::vector<const char*> layers;
  if (options.validation) {
    uint32_t n_layers = 0;
    vkEnumerateInstanceLayerProperties(&n_layers, nullptr);
    std::vector<VkLayerProperties> props(n_layers);
    vkEnumerateInstanceLayerProperties(&n_layers, props.data());
    bool found = false;
    for (const auto& p : props) found |= std::strcmp(p.layerName, "VK_LAYER_KHRONOS_validation") == 0;
    if (!found)
      throw Error("validation was requested but VK_LAYER_KHRONOS_validation is not installed (apt-get install vulkan-validationlayers)");
    layers.push_back("VK_LAYER_KHRONOS_validation");
    validation_ = true;
  }

  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "chorus";
  app.pEngineName = "chorus";
  app.apiVersion = VK_API_VERSION_1_3;
  VkInstanceCreateInfo ci{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  ci.pApplicationInfo = &app;
  ci.enabledExtensionCount = static_cast<uint32_t>(enabled.size());
  ci.ppEnabledExtensionNames = enabled.data();
  ci.enabledLayerCount = static_cast<uint32_t>(layers.size());
  ci.ppEnabledLayerNames = layers.data();
  const VkResult created = vkCreateInstance(&ci, nullptr, &instance_);
  if (created == VK_ERROR_INCOMPATIBLE_DRIVER)
    throw Error(
        "the Vulkan loader found no driver (VK_ERROR_INCOMPATIBLE_DRIVER creating the instance): install your GPU "
        "vendor's Vulkan driver, or `apt-get install mesa-vulkan-drivers` for lavapipe on the CPU",
        created);
  check(created, "creating the Vulkan instance");
  volkLoadInstance(instance_);  // device functions stay loader trampolines: many VkDevices share them

  if (debug_utils) {
    VkDebugUtilsMessengerCreateInfoEXT mi{VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
    mi.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT;
    mi.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT;
    mi.pfnUserCallback = on_debug_message;
    mi.pUserData = validation_errors_.get();
    if (vkCreateDebugUtilsMessengerEXT(instance_, &mi, nullptr, &messenger_) != VK_SUCCESS) messenger_ = VK_NULL_HANDLE;
  }

  uint32_t n = 0;
  check(vkEnumeratePhysicalDevices(instance_, &n, nullptr), "listing Vulkan physical devices");
  physical_.resize(n);
  check(vkEnumeratePhysicalDevices(instance_, &n, physical_.data()), "listing Vulkan physical devices");
  for (uint32_t i = 0; i < n; ++i) devices_.push_back(survey_one(physical_[i], i));
}

Instance::~Instance() {
  if (messenger_) vkDestroyDebugUtilsMessengerEXT(instance_, messenger_, nullptr);
  if (instance_) vkDestroyInstance(instance_, nullptr);
}

VkPhysicalDevice Instance::physical(uint32_t index) const {
  if (index >= physical_.size())
    throw Error("device index " + std::to_string(index) + " does not exist: this machine has " +
                std::to_string(physical_.size()) + " Vulkan device(s) (see `chorus devices`)");
  return physical_[index];
}

}  // namespace chorus::vk
