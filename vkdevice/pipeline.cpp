#include "vkdevice/pipeline.h"

#include <chrono>

#include "vkdevice/device.h"

namespace chorus::vk {

Pipeline::Pipeline(Device& device, const PipelineDesc& desc)
    : device_(device.handle()), name_(desc.name), n_bindings_(desc.n_bindings), push_bytes_(desc.push_bytes),
      texel_bindings_(desc.texel_bindings) {
  label_ = name_ + " [";
  for (size_t i = 0; i < desc.spec.size(); ++i) label_ += (i ? "," : "") + std::to_string(desc.spec[i]);
  label_ += "]";
  const std::string where = device.label() + ": building pipeline '" + desc.name + "'";
  if (desc.spirv.size() < 5 || desc.spirv[0] != 0x07230203u)
    throw Error(where + ": the embedded SPIR-V is empty or lacks the SPIR-V magic number");
  if (desc.push_bytes > 128 || desc.push_bytes % 4 != 0)
    throw Error(where + ": push constants must be a multiple of 4 bytes and at most 128, got " + std::to_string(desc.push_bytes));

  try {
    std::vector<VkDescriptorSetLayoutBinding> bindings(desc.n_bindings);
    for (uint32_t i = 0; i < desc.n_bindings; ++i) {
      bindings[i].binding = i;
      bindings[i].descriptorType = (desc.texel_bindings >> i) & 1u ? VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER
                                                                   : VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
      bindings[i].descriptorCount = 1;
      bindings[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
    }
    VkDescriptorSetLayoutCreateInfo dl{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
    dl.flags = VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR;
    dl.bindingCount = desc.n_bindings;
    dl.pBindings = bindings.data();
    check(vkCreateDescriptorSetLayout(device_, &dl, nullptr, &set_layout_), where + " (descriptor set layout)");

    VkPushConstantRange pc{VK_SHADER_STAGE_COMPUTE_BIT, 0, desc.push_bytes};
    VkPipelineLayoutCreateInfo pl{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
    pl.setLayoutCount = 1;
    pl.pSetLayouts = &set_layout_;
    pl.pushConstantRangeCount = desc.push_bytes ? 1 : 0;
    pl.pPushConstantRanges = &pc;
    check(vkCreatePipelineLayout(device_, &pl, nullptr, &layout_), where + " (pipeline layout)");

    VkShaderModuleCreateInfo sm{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
    sm.codeSize = desc.spirv.size() * sizeof(uint32_t);
    sm.pCode = desc.spirv.data();
    VkShaderModule module = VK_NULL_HANDLE;
    check(vkCreateShaderModule(device_, &sm, nullptr, &module), where + " (shader module)");
    Owner module_owner(module, [d = device_](VkShaderModule m) { vkDestroyShaderModule(d, m, nullptr); });

    std::vector<VkSpecializationMapEntry> entries(desc.spec.size());
    for (uint32_t i = 0; i < desc.spec.size(); ++i) entries[i] = {i, i * 4u, 4u};
    VkSpecializationInfo si{static_cast<uint32_t>(entries.size()), entries.data(), desc.spec.size() * 4u, desc.spec.data()};

    VkComputePipelineCreateInfo ci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
    ci.stage = {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO};
    ci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    ci.stage.module = module;
    ci.stage.pName = "main";
    ci.stage.pSpecializationInfo = desc.spec.empty() ? nullptr : &si;
    ci.layout = layout_;
    const auto t0 = std::chrono::steady_clock::now();
    check(vkCreateComputePipelines(device_, device.pipeline_cache(), 1, &ci, nullptr, &pipeline_), where);
    device.counters().pipeline_ns.fetch_add(static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count()));
    device.counters().pipelines.fetch_add(1);
  } catch (...) {
    if (layout_) vkDestroyPipelineLayout(device_, layout_, nullptr);
    if (set_layout_) vkDestroyDescriptorSetLayout(device_, set_layout_, nullptr);
    throw;
  }
}

Pipeline::~Pipeline() {
  if (pipeline_) vkDestroyPipeline(device_, pipeline_, nullptr);
  if (layout_) vkDestroyPipelineLayout(device_, layout_, nullptr);
  if (set_layout_) vkDestroyDescriptorSetLayout(device_, set_layout_, nullptr);
}

}  // namespace chorus::vk
