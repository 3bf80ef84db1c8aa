#include "vkdevice/profile.h"

#include <algorithm>

namespace chorus::vk {

void DispatchProfile::add(const std::string& kernel, const std::string& groups, uint64_t ns) {
  const std::lock_guard<std::mutex> lock(mutex_);
  KernelTime& k = by_kernel_[{kernel, groups}];
  if (k.calls == 0) {
    k.kernel = kernel;
    k.groups = groups;
  }
  ++k.calls;
  k.ns += ns;
}

void DispatchProfile::add_untimed(uint64_t n) {
  const std::lock_guard<std::mutex> lock(mutex_);
  untimed_ += n;
}

std::vector<KernelTime> DispatchProfile::kernels() const {
  std::vector<KernelTime> out;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [key, k] : by_kernel_) out.push_back(k);
  }
  std::stable_sort(out.begin(), out.end(), [](const KernelTime& a, const KernelTime& b) { return a.ns > b.ns; });
  return out;
}

uint64_t DispatchProfile::untimed() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return untimed_;
}

void DispatchProfile::clear() {
  const std::lock_guard<std::mutex> lock(mutex_);
  by_kernel_.clear();
  untimed_ = 0;
}

}  // namespace chorus::vk
