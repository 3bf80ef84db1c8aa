// `chorus selftest`: the matrix kernels of every weight format, once per device, against the CPU reference.
#include <cstdio>
#include <memory>

#include "engine/selftest.h"
#include "shaders/registry.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "vkdevice/instance.h"

namespace chorus::tools {

int cmd_selftest(const std::vector<std::string>& args) {
  std::vector<uint32_t> indices;
  bool validation = false, force_staging = false;
  cli::Parser p("usage: chorus selftest [--device LIST] [--force-staging] [--validation]",
                "Runs the matrix kernels for every weight format on each device (default: every usable\n"
                "device) through the variant its capabilities select, and compares with the CPU reference.\n"
                "Exit status 0 only if every check passes.");
  p.option({"--device", "-dev"}, "LIST", "physical device indices from `chorus devices`, e.g. 0 or 0,0,1",
           [&](const std::string& flag, const std::string& v) { indices = parse_index_list(flag, v); })
      .flag({"--force-staging"}, "use the discrete-GPU memory path (staging copies) on unified memory", force_staging)
      .flag({"--validation"}, "enable VK_LAYER_KHRONOS_validation", validation)
      .epilog("environment: CHORUS_DISABLE_CAPS=fp16,subgroup,cpu tests the fallback kernels.");
  if (!p.parse(args)) return 0;
  vk::Instance inst(vk::InstanceOptions{validation});
  if (indices.empty())
    for (const auto& d : inst.devices())
      if (d.usable()) indices.push_back(d.index);
  if (indices.empty()) {
    std::fprintf(stderr, "chorus selftest: no usable Vulkan device (see `chorus devices`)\n");
    return 1;
  }
  int failures = 0;
  for (uint32_t index : indices) {
    vk::DeviceOptions o;
    o.physical_index = index;
    o.force_staging = force_staging;
    vk::Device dev(inst, o);
    std::printf("%s, kernels {%s}%s\n", dev.label().c_str(), shaders::capability_names(dev.capabilities()).c_str(),
                dev.uses_staging() ? ", staging copies" : "");
    run_selftest(dev, [&](const SelftestResult& r) {
      if (!r.error.empty())
        std::printf("  FAIL  %-34s %s\n", r.check.c_str(), r.error.c_str());
      else
        std::printf("  %s  %-34s %-32s nmse %.2e (limit %.0e)\n", r.passed() ? "ok  " : "FAIL", r.check.c_str(),
                    r.variant.c_str(), r.nmse, r.tolerance);
      failures += r.passed() ? 0 : 1;
      std::fflush(stdout);
    });
  }
  if (inst.validation_errors() > 0) {
    std::fprintf(stderr, "chorus selftest: the validation layer reported %llu error(s)\n",
                 static_cast<unsigned long long>(inst.validation_errors()));
    return 1;
  }
  if (failures) {
    std::fprintf(stderr, "chorus selftest: %d check(s) failed\n", failures);
    return 1;
  }
  std::printf("all checks passed\n");
  return 0;
}

}  // namespace chorus::tools
