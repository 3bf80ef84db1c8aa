// shaders/registry.h — the embedded SPIR-V of every compute kernel.
//
// Owns: the table of compiled shader variants (built from the lists in shaders/*.cmake) and
// the rule that picks one variant per op for a device's capabilities. Knows nothing about
// Vulkan objects; vkdevice turns a blob into a pipeline.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <string>
#include <vector>

namespace chorus::shaders {

// Device capabilities a shader variant may use (bit values match shaders/CMakeLists.txt).
enum Capability : uint32_t {
  kSubgroup = 1u,  // subgroup arithmetic (subgroupAdd, subgroupMax) in compute shaders
  kFp16 = 2u,      // shaderFloat16 + 16-bit storage buffer access
  kCpu = 4u,       // the device runs shaders on the host's CPU (lavapipe, SwiftShader): kernels
                   // written for it (whole rows per invocation, texel gathers, register tiles)
                   // are the ones chosen there; hide it (CHORUS_DISABLE_CAPS=cpu) to run the
                   // GPU kernels on such a device
};
inline constexpr uint32_t kAllCapabilities = kSubgroup | kFp16 | kCpu;

struct Variant {
  std::string_view op;       // e.g. "mul_mv_q4_0"
  std::string_view name;     // e.g. "mul_mv_q4_0+subgroup+fp16"
  uint32_t requires_caps;    // Capability bits the variant needs
  const uint32_t* words;     // SPIR-V
  std::size_t n_words;

  std::span<const uint32_t> spirv() const { return {words, n_words}; }
};

// Every compiled variant, in registration order.
std::span<const Variant> all_variants();

// A hash of every variant's name and SPIR-V: differs between builds whose kernels differ
// (names what is cached per build, e.g. the pipeline lists).
uint64_t fingerprint();

// The variants of one op (empty if the op is unknown).
std::vector<const Variant*> variants_of(std::string_view op);

// The variant of `op` that uses the most capabilities among those in `caps`; ties go to
// the later registration. nullptr if the op is unknown or has no variant `caps` allows.
const Variant* select(std::string_view op, uint32_t caps);

// "subgroup,fp16" style description of a capability set ("none" when empty).
std::string capability_names(uint32_t caps);

}  // namespace chorus::shaders
