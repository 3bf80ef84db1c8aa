// vkdevice/pipeline.h — compute pipelines.
//
// Owns: VkShaderModule → VkPipeline with specialisation constants, one push-descriptor set
// layout of storage buffers (or uniform texel buffers, per binding) and a push-constant range per pipeline, built through the
// device's persistent pipeline cache.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vkdevice/vk.h"

namespace chorus::vk {

class Device;

struct PipelineDesc {
  std::string name;                  // for errors: "mul_mv_q4_0+subgroup"
  std::span<const uint32_t> spirv;
  uint32_t n_bindings = 0;           // storage buffers at set 0, bindings 0..n-1
  uint32_t push_bytes = 0;           // size of the push-constant block (<= 128)
  std::vector<uint32_t> spec;        // specialisation constants 0..n-1 (0 = workgroup size x)
  uint32_t texel_bindings = 0;       // bit i set: binding i is a uniform texel buffer instead
};

class Pipeline {
 public:
  Pipeline(Device& device, const PipelineDesc& desc);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  VkPipeline handle() const { return pipeline_; }
  VkPipelineLayout layout() const { return layout_; }
  const std::string& name() const { return name_; }
  // The name and the specialisation constants, "mul_mv_texel_q4_1+cpu [8,8,...]": what
  // tells two pipelines of one kernel apart (vkdevice/profile.h).
  const std::string& label() const { return label_; }
  uint32_t n_bindings() const { return n_bindings_; }
  uint32_t push_bytes() const { return push_bytes_; }
  uint32_t texel_bindings() const { return texel_bindings_; }  // PipelineDesc::texel_bindings

 private:
  VkDevice device_ = VK_NULL_HANDLE;
  std::string name_;
  std::string label_;
  uint32_t n_bindings_ = 0;
  uint32_t push_bytes_ = 0;
  uint32_t texel_bindings_ = 0;
  VkDescriptorSetLayout set_layout_ = VK_NULL_HANDLE;
  VkPipelineLayout layout_ = VK_NULL_HANDLE;
  VkPipeline pipeline_ = VK_NULL_HANDLE;
};

}  // namespace chorus::vk
