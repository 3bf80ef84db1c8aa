#include "engine/ops/kernels.h"

namespace chorus::ops {

Kernels::Kernels(vk::Device& device, uint32_t caps_mask) : device_(&device), caps_(device.capabilities() & caps_mask) {}

const shaders::Variant& Kernels::variant(std::string_view op) const {
  const shaders::Variant* v = shaders::select(op, caps_);
  if (v == nullptr) {
    if (shaders::variants_of(op).empty())
      throw vk::Error("no kernel named '" + std::string(op) + "' is compiled into chorus");
    throw vk::Error(device_->label() + ": no variant of kernel '" + std::string(op) +
                    "' runs with capabilities {" + shaders::capability_names(caps_) + "}");
  }
  return *v;
}

const vk::Pipeline& Kernels::pipeline(std::string_view op, uint32_t n_bindings, uint32_t push_bytes,
                                      const std::vector<uint32_t>& spec) {
  return pipeline(op, n_bindings, push_bytes, spec, 0);
}

const vk::Pipeline& Kernels::pipeline(std::string_view op, uint32_t n_bindings, uint32_t push_bytes,
                                      const std::vector<uint32_t>& spec, uint32_t texel_bindings) {
  const shaders::Variant& v = variant(op);
  std::string name(v.name);
  if (texel_bindings) name += "#texel" + std::to_string(texel_bindings);  // a different layout
  auto key = std::make_pair(name, spec);
  auto it = pipelines_.find(key);
  if (it != pipelines_.end()) return *it->second;
  vk::PipelineDesc desc{std::string(v.name), v.spirv(), n_bindings, push_bytes, spec, texel_bindings};
  auto p = std::make_unique<vk::Pipeline>(*device_, desc);
  return *pipelines_.emplace(std::move(key), std::move(p)).first->second;
}

uint32_t skip_elems(const vk::BufferWindow& w, uint32_t elem_bytes) {
  if (w.skip % elem_bytes != 0)
    throw vk::Error("a tensor starts " + std::to_string(w.skip) + " bytes into an aligned window, not a multiple of its " +
                    std::to_string(elem_bytes) + "-byte elements");
  return static_cast<uint32_t>(w.skip / elem_bytes);
}

}  // namespace chorus::ops
