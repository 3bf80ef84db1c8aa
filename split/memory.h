// split/memory.h — every device's bytes for a plan and a context, before anything is allocated,
// and fitting a request into the devices' free memory.
//
// The byte counts mirror what Model::load and Context allocate (engine/model.cpp,
// engine/forward.cpp, split/executor.cpp, split/collective.cpp) buffer by buffer, from the
// plan's ranges alone: weights (each device's shard, Q6_K rows padded as on the device), the
// F16 KV cache of its KV heads for every sequence, the forward pass's scratch buffers and the
// executor's (partials, pipeline in/outboxes), and the collective's host-visible slots when
// they are allocated per device. tests/test_memory_plan.cpp holds the two to within 2% on real
// models; `chorus fit` prints them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "split/plan.h"

namespace chorus::split {

// What a context needs besides the weights.
struct ContextShape {
  uint32_t n_ctx = 4096;     // positions per sequence
  uint32_t n_seq = 1;        // sequences (server slots, perplexity chunks per batch)
  uint32_t n_ubatch = 512;   // tokens per forward pass
  uint32_t logit_rows = 1;   // logits rows per forward pass (1 for generation; n_ubatch for perplexity)
  bool collective_per_device = false;  // the collective's slots in each device's memory (no host import)
};

struct DeviceMemory {
  uint64_t weights = 0;
  uint64_t kv_cache = 0;
  uint64_t scratch = 0;     // forward pass and executor buffers
  uint64_t collective = 0;  // the collective's slots, when held in this device's memory
  // Saturates at UINT64_MAX: a hostile header's sizes must read as "too much", never wrap.
  uint64_t total() const;
};

// Bytes per device (index = device of the plan); a device holding nothing needs nothing.
std::vector<DeviceMemory> plan_memory(const Plan& plan, const ContextShape& ctx);

// Per device, the bytes it may use: its free memory less a margin for the driver, pipelines
// and descriptor pools (kMarginFraction of the free memory, at least kMarginMin).
inline constexpr double kMarginFraction = 0.05;
inline constexpr uint64_t kMarginMin = 8ull << 20;
uint64_t usable_bytes(uint64_t free_bytes);

// A request to fit: the model, the devices' free memory, and what the user asked for.
struct FitRequest {
  ModelShape model;
  std::vector<uint64_t> free_bytes;  // per device
  SplitRequest split;                // mode and main device; ratios empty = choose them
  bool mode_given = false;           // the user chose the mode: fitting never changes it
  ContextShape ctx;
  uint32_t n_ctx_min = 4096;         // --fit-ctx-min (capped at the requested n_ctx)
  bool fit = true;                   // false: --fit off, keep exactly what was asked
  // Weight bytes each device reads per second (engine/calibration.h); empty when unknown. With
  // it, ratios not given follow speed (within memory) and the time per token is predicted.
  std::vector<double> speed;
  // Seconds of one reduce point's round trip through the collective on these devices (0:
  // unknown); the prediction adds it per reduce point of a tensor group.
  double reduce_seconds = 0;
};

struct FitResult {
  Plan plan;
  ContextShape ctx;
  std::vector<DeviceMemory> memory;
  std::vector<uint64_t> usable;      // per device
  bool fits = false;
  std::vector<std::string> notes;    // every change made to the request, one sentence each
  std::string refusal;               // when !fits: what is missing on which device, what would fit
  // With speeds: seconds per decode token (predict_token_seconds).
  double predicted_token_seconds = 0;
};

// Seconds per decode token of `plan` on devices reading weights at `speed` bytes per second:
// the slowest device of each tensor group plus `reduce_seconds` per reduce point of a group of
// several devices, the groups (or a layer split's devices) one after another.
double predict_token_seconds(const Plan& plan, const std::vector<double>& speed, double reduce_seconds = 0);

// Hybrid groups from speeds: consecutive devices within 10% of each other share a group.
std::vector<uint32_t> speed_groups(const std::vector<double>& speed);

// Plans the split and checks every device's bytes against its usable memory. When it does not
// fit and fitting is on: the context shrinks (to the largest that fits, not below n_ctx_min);
// then ratios not given are rebalanced to each device's usable memory less its fixed costs;
// then, unless the user chose the mode, a tensor split becomes a layer split; each time the
// context is the largest that fits up to the request. If nothing fits, `refusal` names each
// device short of memory and by how much, and the largest context that would fit if any does.
FitResult fit(const FitRequest& request);

}  // namespace chorus::split
