#include "engine/ops/kernels.h"

#include <algorithm>
#include <atomic>
#include <stdexcept>


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

Kernels::MapKey Kernels::map_key(const shaders::Variant& v, uint32_t n_bindings, uint32_t push_bytes,
                                 uint32_t texel_bindings, const std::vector<uint32_t>& spec) {
  // The layout is part of the key: a list written by another build of chorus may name the
  // same op with other bindings or push constants, and must not stand in for the one asked for.
  std::string name(v.name);
  name += "#" + std::to_string(n_bindings) + "#" + std::to_string(push_bytes);
  if (texel_bindings) name += "#texel" + std::to_string(texel_bindings);  // a different layout
  return {std::move(name), spec};
}

const vk::Pipeline& Kernels::pipeline(std::string_view op, uint32_t n_bindings, uint32_t push_bytes,
                                      const std::vector<uint32_t>& spec, uint32_t texel_bindings) {
  const shaders::Variant& v = variant(op);
  MapKey key = map_key(v, n_bindings, push_bytes, texel_bindings, spec);
  {
    std::unique_lock lock(mutex_);
    for (;;) {
      auto it = pipelines_.find(key);
      if (it != pipelines_.end()) return *it->second;
      if (!pending_.count(key)) break;
      prepared_one_.wait(lock);  // prepare's threads are building it (or gave up on it)
    }
  }
  vk::PipelineDesc desc{std::string(v.name), v.spirv(), n_bindings, push_bytes, spec, texel_bindings};
  auto p = std::make_unique<vk::Pipeline>(*device_, desc);
  std::lock_guard lock(mutex_);
  auto [it, inserted] = pipelines_.emplace(std::move(key), std::move(p));
  if (inserted) built_.push_back(PipelineKey{std::string(op), n_bindings, push_bytes, texel_bindings, spec});
  return *it->second;
}

std::vector<PipelineKey> Kernels::built() const {
  std::lock_guard lock(mutex_);
  return built_;
}

Kernels::~Kernels() {
  stop_ = true;
  for (std::thread& t : workers_)
    if (t.joinable()) t.join();
}

size_t Kernels::prepare(std::span<const PipelineKey> keys, unsigned threads) {
  if (!workers_.empty()) throw std::logic_error("Kernels::prepare called twice");
  {
    std::lock_guard lock(mutex_);
    for (const PipelineKey& k : keys) {
      const shaders::Variant* v = shaders::select(k.op, caps_);
      if (v == nullptr) continue;
      MapKey mk = map_key(*v, k.n_bindings, k.push_bytes, k.texel_bindings, k.spec);
      if (pipelines_.count(mk) || !pending_.insert(mk).second) continue;
      jobs_.push_back(Job{k, std::move(mk),
                          vk::PipelineDesc{std::string(v->name), v->spirv(), k.n_bindings, k.push_bytes, k.spec, k.texel_bindings}});
    }
    prepare_start_ = prepare_end_ = std::chrono::steady_clock::now();
  }
  const size_t n = std::min<size_t>(std::max(1u, threads), jobs_.size());
  for (size_t t = 0; t < n; ++t) workers_.emplace_back([this] { prepare_worker(); });
  return jobs_.size();
}

void Kernels::prepare_worker() {
  for (size_t i; !stop_ && (i = next_job_.fetch_add(1)) < jobs_.size();) {
    const Job& j = jobs_[i];
    std::unique_ptr<vk::Pipeline> p;
    try {
      p = std::make_unique<vk::Pipeline>(*device_, j.desc);
    } catch (const std::exception&) {
      // left to pipeline(), which reports it if a recording really asks for this one
    }
    std::lock_guard lock(mutex_);
    if (p && pipelines_.emplace(j.map_key, std::move(p)).second) {
      built_.push_back(j.key);
      ++prepared_;
    }
    pending_.erase(j.map_key);
    prepare_end_ = std::chrono::steady_clock::now();
    prepared_one_.notify_all();
  }
}

size_t Kernels::prepared() const {
  std::lock_guard lock(mutex_);
  return prepared_;
}

size_t Kernels::wait_prepared(double* ms) {
  for (std::thread& t : workers_)
    if (t.joinable()) t.join();
  std::lock_guard lock(mutex_);
  if (ms) *ms = std::chrono::duration<double, std::milli>(prepare_end_ - prepare_start_).count();
  return prepared_;
}

uint32_t skip_elems(const vk::BufferWindow& w, uint32_t elem_bytes) {
  if (w.skip % elem_bytes != 0)
    throw vk::Error("a tensor starts " + std::to_string(w.skip) + " bytes into an aligned window, not a multiple of its " +
                    std::to_string(elem_bytes) + "-byte elements");
  return static_cast<uint32_t>(w.skip / elem_bytes);
}

}  // namespace chorus::ops
