// tools/model_setup.h — what the model commands (run, perplexity, bench) share: choosing the
// device, loading with a progress bar, and the load summary on stderr.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "engine/model.h"
#include "vkdevice/device.h"
#include "vkdevice/instance.h"

namespace chorus::tools {

struct LoadedModel {
  std::unique_ptr<vk::Instance> instance;
  std::unique_ptr<vk::Device> device;
  std::unique_ptr<Model> model;
};

// Opens the device (the first usable one when device_index is empty), loads the model with a
// progress bar on stderr and prints what was loaded and how long it took.
LoadedModel load_model(const std::string& path, std::optional<uint32_t> device_index, bool validation);

// "<device>: weights 93.81 MiB, KV cache 45.00 MiB, scratch 12.34 MiB" per device, on stderr.
void print_memory_use(const Context& ctx);

// The positive count a flag takes (1 .. 2^24), or a UsageError.
uint32_t parse_positive(const std::string& flag, const std::string& text);

inline double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace chorus::tools
