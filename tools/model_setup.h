// tools/model_setup.h — what the model commands (run, perplexity, bench) share: the device
// and split flags, opening the devices, loading with a progress bar, and the load summary.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/sampling.h"
#include "split/plan.h"
#include "vkdevice/device.h"
#include "vkdevice/instance.h"

namespace chorus::tools {

// Where a model goes: --device LIST, -sm MODE, -ts RATIOS, -mg MAIN.
struct Placement {
  std::vector<uint32_t> devices;  // physical indices, repeats allowed; empty: every usable device
  bool mode_given = false;
  split::SplitMode mode = split::SplitMode::tensor;
  std::vector<double> ratios;     // empty: from each device's free memory
  uint32_t main_device = 0;       // position in `devices`
  bool force_staging = false;     // --force-staging: the discrete-GPU memory path
  std::optional<int64_t> gpu_layers;  // llama.cpp's -ngl: accepted when it covers every layer
};

// Consumes args[i] (and its value) if it is a placement flag; returns whether it was.
bool parse_placement_flag(const std::vector<std::string>& args, size_t& i, Placement& p);
// The --help lines of the placement flags.
extern const char* const kPlacementHelp;

struct LoadedModel {
  std::unique_ptr<vk::Instance> instance;
  std::vector<std::unique_ptr<vk::Device>> devices;  // logical devices, in --device order
  std::unique_ptr<Model> model;
};

// Opens the logical devices, plans the split (printing it when there are several devices),
// loads the model with a progress bar on stderr and prints what was loaded.
LoadedModel load_model(const std::string& path, const Placement& placement, bool validation);

// "<device>: weights 93.81 MiB, KV cache 45.00 MiB, scratch 12.34 MiB" per device, on stderr.
void print_memory_use(const Context& ctx);

// Consumes args[i] (and its value) if it is a sampling flag (--temp, --top-k, --top-p,
// --min-p, --repeat-penalty, --repeat-last-n, --seed); returns whether it was.
bool parse_sampling_flag(const std::vector<std::string>& args, size_t& i, SamplerParams& sp,
                         std::optional<uint64_t>& seed);

// The positive count a flag takes (1 .. 2^24), or a UsageError.
uint32_t parse_positive(const std::string& flag, const std::string& text);

inline double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace chorus::tools
