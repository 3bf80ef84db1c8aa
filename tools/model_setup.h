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
#include "split/memory.h"
#include "split/plan.h"
#include "tools/cli.h"
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
  bool fit = true;                // --fit off: load exactly what was asked
  std::optional<uint32_t> fit_ctx_min;  // --fit-ctx-min: the context is not shrunk below it
  std::vector<uint64_t> budgets;  // --memory-budget: pretend each device has this much memory
  std::vector<double> speed_factors;  // --device-speed: multiply each device's calibrated speed
  bool recalibrate = false;       // --recalibrate: measure every device's speed again
  bool show_devices = false;      // --show-devices: the per-device view after the work
  std::vector<uint32_t> groups;   // --groups: each device's group in a hybrid split
  bool verbose = false;           // --verbose: the start-up report (upload speed, pipelines)
  bool profile = false;           // --profile: GPU time per kernel (vkdevice/profile.h)
};

// The weight format holding most of a model's matrix bytes (what calibration measures).
GgmlType main_weight_type(const gguf::File& file);

// What the command's context will need; the planner checks it against the devices before loading.
struct ContextRequest {
  uint32_t n_ctx = 0;        // 0: the model's trained length, at most 4096
  uint32_t n_seq = 1;
  uint32_t n_ubatch = 512;
  uint32_t logit_rows = 1;   // logits rows per forward pass
  bool shrinkable = true;    // false: n_ctx is part of the result (perplexity's chunk size)
};

// Declares the placement options (--device/-dev, -sm, -ts, -mg, --force-staging, and llama.cpp's
// -ngl, -t, -tb, -v, -fa, --no-mmap, --mlock: accepted, with a note where ignored) in `p`.
// Without `with_layout`, --device, -sm and -ts are left for the caller to declare (bench takes
// several of each).
void add_placement_options(cli::Parser& p, Placement& placement, bool with_layout = true);
// -sm's value (none | layer | tensor; llama.cpp's row is refused with the reason).
split::SplitMode parse_split_mode_flag(const std::string& text);
// -ts's value: "3,1" or "3/1", positive numbers, scaled so the largest is 1.
std::vector<double> parse_ratios(const std::string& flag, std::string text);

struct LoadedModel {
  std::unique_ptr<vk::Instance> instance;  // the survey, and the devices that share it
  // Instances of their own for the logical devices of a CPU device in a tensor or hybrid split
  // (vk::InstanceOptions::cpu_threads); declared before `devices`, so they outlive them.
  std::vector<std::unique_ptr<vk::Instance>> own_instances;
  uint64_t validation_errors() const;  // of every instance
  std::vector<std::unique_ptr<vk::Device>> devices;  // logical devices, in --device order
  std::vector<uint32_t> physical;                     // each one's physical device (survey index)
  std::unique_ptr<Model> model;
  ContextOptions context;  // the request, fitted (n_ctx may have shrunk)
  std::vector<split::DeviceMemory> planned;  // bytes per device of the plan
  double predicted_token_seconds = 0;        // from the calibrated speeds (0: unknown)
};

// --verbose: what the time to the first token went into, printed once it is there: the load
// (from load_model), pipelines built and whether the pipeline cache had them.
void print_startup(const LoadedModel& m, double load_ms, double first_token_ms);

// Opens the logical devices, plans the split and every device's bytes for the model and the
// context (split/memory.h), fits them into the devices' free memory (rebalancing ratios that
// were not given, shrinking a shrinkable context) or refuses before anything is uploaded,
// prints the per-device table, then loads with a progress bar on stderr.
LoadedModel load_model(const std::string& path, const Placement& placement, bool validation,
                       const ContextRequest& context = {});

// load_model in two steps, for a caller that starts threads of its own while the model loads
// (serve): open_devices reads the model's header (a bad file fails here) and opens the logical
// devices, which may set the process's environment for a moment (vk::InstanceOptions::cpu_threads:
// setenv is not safe while another thread may call getenv), so call it before starting threads;
// load_into then plans, fits and loads the model into m's devices.
LoadedModel open_devices(const std::string& path, const Placement& placement, bool validation);
void load_into(LoadedModel& m, const std::string& path, const Placement& placement, const ContextRequest& context);

// The planner's request for a model, placement and context on devices with `free_bytes` each.
split::FitRequest fit_request(const ModelConfig& config, const gguf::File& file, const Placement& placement,
                              const ContextRequest& context, const std::vector<uint64_t>& free_bytes,
                              bool collective_per_device);

// The plan's per-device table: weights, KV cache, scratch, total, usable, left (MiB).
std::string describe_memory(const split::FitResult& fit, const std::vector<vk::Device*>& devices);

// The per-device view (--show-devices, chat's /devices): each device's memory in use and,
// over the last steps (vk::Device::activity), its busy fraction by GPU timestamps ("n/a" where
// the device has none), its idle time per token and, on a tensor split, how long the reduces
// waited for it per token — which device holds the others back.
std::string device_view(const LoadedModel& loaded, const Context& ctx);

// --profile: for one device, the time per kernel over `tokens` tokens of `what` ("tg128", "the
// run"), the kernels taking most first; "" when nothing was timed.
std::string profile_table(const std::string& device, const std::string& what, const std::vector<vk::KernelTime>& kernels,
                          uint64_t untimed, double tokens);
// What --profile prints when none of the devices can time anything.
inline constexpr const char* kProfileNothingTimed =
    "profile: nothing was timed (no device writes timestamps, or CHORUS_NO_TIMESTAMPS is set)\n";

// The end of a model command: the device view and the profile if asked for, then its exit status — 1 if the
// validation layer reported errors (said on stderr), kInterruptedExit after Ctrl-C, else 0.
int finish_command(const char* name, const LoadedModel& loaded, const Context& ctx, const Placement& placement,
                   bool was_interrupted);

// "<device>: weights 93.81 MiB, KV cache 45.00 MiB, scratch 12.34 MiB" per device, on stderr.
void print_memory_use(const Context& ctx);

// Declares the sampling options (--temp, --top-k, --top-p, --min-p, --repeat-penalty,
// --repeat-last-n, --seed/-s) in `p`, their defaults taken from `sp`.
void add_sampling_options(cli::Parser& p, SamplerParams& sp, std::optional<uint64_t>& seed);
// A default value for help text: 0.8, 40, 1e-05.
std::string format_default(double v);

// The positive count a flag takes (1 .. 2^24), or a UsageError.
uint32_t parse_positive(const std::string& flag, const std::string& text);
// An option action that stores parse_positive's count in `target`.
inline auto store_positive(uint32_t& target) {
  return [&target](const std::string& flag, const std::string& v) { target = parse_positive(flag, v); };
}

inline double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace chorus::tools
