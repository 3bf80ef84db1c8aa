// `chorus devices`: the device survey, explaining every device it will not use.
#include <cstdio>

#include "shaders/registry.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "vkdevice/instance.h"
#include "vkdevice/memory.h"

namespace chorus::tools {

int cmd_devices(const std::vector<std::string>& args) {
  bool validation = false;
  cli::Parser p("usage: chorus devices [--validation]",
                "Lists every Vulkan physical device with its driver, memory, limits and capabilities.\n"
                "Devices chorus cannot use are listed with the reason. Indices are those --device takes;\n"
                "an index may be given several times to open one GPU as several logical devices.");
  p.flag({"--validation"}, "enable VK_LAYER_KHRONOS_validation", validation)
      .epilog("environment: CHORUS_DISABLE_CAPS=fp16,subgroup,cpu hides capabilities from kernel selection.");
  if (!p.parse(args)) return 0;
  vk::Instance inst(vk::InstanceOptions{validation});
  const auto& devs = inst.devices();
  if (devs.empty()) {
    std::fprintf(stderr, "chorus devices: the Vulkan loader found no devices (for a CPU device: apt-get install mesa-vulkan-drivers)\n");
    return 1;
  }
  for (const auto& d : devs) {
    std::printf("device %u: %s\n", d.index, d.name.c_str());
    std::printf("  vendor      %s (0x%04x), %s\n", d.vendor.c_str(), d.vendor_id, vk::to_string(d.type));
    std::printf("  driver      %s, %s; Vulkan %s\n", d.driver_name.c_str(), d.driver_info.c_str(),
                vk::version_string(d.api_version).c_str());
    for (size_t h = 0; h < d.heaps.size(); ++h) {
      const auto& heap = d.heaps[h];
      std::printf("  heap %zu      %s%s, budget %s%s\n", h, vk::format_bytes(heap.size).c_str(),
                  heap.device_local ? " device-local" : " host", vk::format_bytes(heap.budget).c_str(),
                  d.memory_budget_ext ? (", in use " + vk::format_bytes(heap.usage)).c_str() : " (no VK_EXT_memory_budget: heap size)");
    }
    std::printf("  memory      %s\n", d.unified_memory ? "unified (device-local memory is host-visible)" : "discrete (staging copies)");
    std::printf("  subgroup    %u lanes, arithmetic %s\n", d.subgroup_size, d.subgroup_arithmetic ? "yes" : "no");
    std::printf("  features    fp16 %s, int8 dot %s, 8-bit storage %s, 16-bit storage %s, timeline semaphores %s\n",
                d.fp16 ? "yes" : "no", d.int8_dot ? "yes" : "no", d.storage8 ? "yes" : "no", d.storage16 ? "yes" : "no",
                d.timeline_semaphore ? "yes" : "no");
    std::printf("  limits      maxStorageBufferRange %s, maxMemoryAllocationSize %s, offset alignment %llu\n",
                vk::format_bytes(d.max_storage_buffer_range).c_str(), vk::format_bytes(d.max_memory_allocation_size).c_str(),
                static_cast<unsigned long long>(d.min_storage_buffer_offset_alignment));
    std::printf("  kernels     use {%s}\n", shaders::capability_names(d.capabilities()).c_str());
    if (d.usable())
      std::printf("  status      usable\n");
    else
      std::printf("  status      not used: %s\n", d.reject_reason.c_str());
  }
  return 0;
}

}  // namespace chorus::tools
