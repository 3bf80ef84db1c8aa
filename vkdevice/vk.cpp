#include "vkdevice/vk.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

namespace chorus::vk {

const char* result_name(VkResult r) {
  switch (r) {
#define CHORUS_RESULT(x) \
  case x:                \
    return #x;
    CHORUS_RESULT(VK_SUCCESS)
    CHORUS_RESULT(VK_NOT_READY)
    CHORUS_RESULT(VK_TIMEOUT)
    CHORUS_RESULT(VK_EVENT_SET)
    CHORUS_RESULT(VK_EVENT_RESET)
    CHORUS_RESULT(VK_INCOMPLETE)
    CHORUS_RESULT(VK_ERROR_OUT_OF_HOST_MEMORY)
    CHORUS_RESULT(VK_ERROR_OUT_OF_DEVICE_MEMORY)
    CHORUS_RESULT(VK_ERROR_INITIALIZATION_FAILED)
    CHORUS_RESULT(VK_ERROR_DEVICE_LOST)
    CHORUS_RESULT(VK_ERROR_MEMORY_MAP_FAILED)
    CHORUS_RESULT(VK_ERROR_LAYER_NOT_PRESENT)
    CHORUS_RESULT(VK_ERROR_EXTENSION_NOT_PRESENT)
    CHORUS_RESULT(VK_ERROR_FEATURE_NOT_PRESENT)
    CHORUS_RESULT(VK_ERROR_INCOMPATIBLE_DRIVER)
    CHORUS_RESULT(VK_ERROR_TOO_MANY_OBJECTS)
    CHORUS_RESULT(VK_ERROR_FORMAT_NOT_SUPPORTED)
    CHORUS_RESULT(VK_ERROR_FRAGMENTED_POOL)
    CHORUS_RESULT(VK_ERROR_UNKNOWN)
    CHORUS_RESULT(VK_ERROR_OUT_OF_POOL_MEMORY)
    CHORUS_RESULT(VK_ERROR_INVALID_EXTERNAL_HANDLE)
    CHORUS_RESULT(VK_ERROR_FRAGMENTATION)
    CHORUS_RESULT(VK_ERROR_INVALID_OPAQUE_CAPTURE_ADDRESS)
    CHORUS_RESULT(VK_PIPELINE_COMPILE_REQUIRED)
    CHORUS_RESULT(VK_ERROR_INVALID_SHADER_NV)
#undef CHORUS_RESULT
    default:
      return "VkResult(unknown)";
  }
}

void check(VkResult r, const std::string& what) {
  if (r != VK_SUCCESS) throw Error(what + ": " + result_name(r), r);
}

void load_vulkan() {
  // The loader is opened by hand (not volkInitialize) so CHORUS_VULKAN_LIBRARY can point
  // elsewhere: a test uses it to prove a missing loader is reported, not a crash.
  static std::once_flag once;
  static std::string failure;
  std::call_once(once, [] {
    const char* env = std::getenv("CHORUS_VULKAN_LIBRARY");
    const std::string path = env && *env ? env : "libvulkan.so.1";
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      failure = "no Vulkan loader found (" + path +
                " could not be opened): install one with a driver, e.g. `apt-get install libvulkan1 mesa-vulkan-drivers`";
      return;
    }
    auto gipa = reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(lib, "vkGetInstanceProcAddr"));
    if (gipa == nullptr) {
      failure = path + " is not a Vulkan loader: it has no vkGetInstanceProcAddr";
      return;
    }
    volkInitializeCustom(gipa);  // the library stays open for the life of the process
  });
  if (!failure.empty()) throw Error(failure, VK_ERROR_INITIALIZATION_FAILED);
}

}  // namespace chorus::vk
