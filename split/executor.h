// split/executor.h — running one step of the forward pass across the devices of a split.
//
// Owns: how each device's work for one step (a micro-batch of prefill, or one decode token)
// is cut at the reduce points, submitted, joined and torn down. The forward pass
// (engine/forward.cpp) records every device's work on its own shard and calls the executor
// at its cut points; it never asks which split mode runs:
//
//   reduce point k:  a device that computes part of a block writes its partial [T][width]
//                    f32 at partial(d, k); reduce(d, k) returns where the sum over every
//                    device's partial of k is, readable by d's next commands.
//   hand-off:        a device that does not embed receives the hidden state (receive), and
//                    one that does not compute the LM head sends it on (send).
//
// Two strategies behind this one interface:
//   pipeline — one submit per device, run one device after the other; a reduce point is
//              local (the sum of one partial is itself: a barrier) and the hidden state moves
//              between devices through host memory. One device alone, and the layer split. The
//              host waits for a device as long as it makes progress (vkdevice/watchdog.h).
//   tensor   — the collective (split/collective.h): every device's step is a list of segments
//              between reduce points, submitted with ONE vkQueueSubmit per device; the proxy
//              thread sums; the main thread waits once per step. Its partial slots are reused
//              ring-wise, two of them, so a micro-batch of any size goes through it (ordering
//              argument: docs/sync.md, "Slot lifetimes"). A serialised debug mode runs one
//              segment at a time; fault injection (a stalled device) lives in the collective.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "split/collective.h"
#include "split/plan.h"
#include "vkdevice/commands.h"
#include "vkdevice/device.h"
#include "vkdevice/memory.h"

namespace chorus::split {

// A place in a buffer.
struct Slice {
  const vk::Buffer* buffer = nullptr;
  uint64_t offset = 0;
};

struct ExecutorOptions {
  uint32_t max_tokens = 1;   // rows of a step
  uint32_t width = 1;        // floats per row of a partial and of the hidden state (n_embd)
  uint32_t max_points = 1;   // reduce points per step
  // Debugging: the tensor split runs one segment at a time with a host wait after each
  // (docs/sync.md, "Serialise everything"). Results are identical.
  bool serialise = false;
  CollectiveMemory memory = CollectiveMemory::Auto;
  // Fault injection: device `first` stops before reduce point `second` (its work waits on a
  // timeline only the executor's teardown signals).
  std::optional<std::pair<uint32_t, uint32_t>> stall;
};

class Executor {
 public:
  // The executor for a plan: `devices` holds the devices that take part, in plan order (the
  // plan's devices that hold anything). Throws std::invalid_argument for a bad option.
  static std::unique_ptr<Executor> create(const Plan& plan, std::vector<vk::Device*> devices,
                                          const ExecutorOptions& options);
  virtual ~Executor() = default;

  // Starts recording a step of `tokens` rows (at most max_tokens) on every device.
  virtual void begin(uint32_t tokens) = 0;
  // The command buffer device d records into now (it changes at reduce points).
  virtual vk::CommandBuffer& cb(size_t d) = 0;
  // Where device d writes its partial of reduce point k.
  virtual Slice partial(size_t d, uint32_t k) = 0;
  // Ends reduce point k on device d (`wrote`: d wrote a partial; else it adds nothing) and
  // returns where the sum of every device's partial of k is, for d's next commands.
  virtual Slice reduce(size_t d, uint32_t k, bool wrote) = 0;
  // Whether device d's reduce points are local: the sum is d's own partial (one device runs
  // the whole block), so d may add its block output to the hidden state itself; reduce(d, ...)
  // is still called (it orders the step and marks progress).
  virtual bool sums_locally(size_t d) const = 0;
  // Whether device d is the first of the devices whose partials one reduce sums (the sum
  // starts from its partial): the one that may carry the hidden state through the sum.
  virtual bool holds_residual(size_t d) const = 0;
  // Records: the hidden state [tokens][width] from the previous device into x (at offset 0).
  virtual void receive(size_t d, const vk::Buffer& x) = 0;
  // Records: device d's hidden state x on to the next device, if one follows in a pipeline
  // (else nothing).
  virtual void send(size_t d, const vk::Buffer& x) = 0;
  // Ends the recording on every device.
  virtual void end() = 0;
  // Runs the recorded step (again, for a replayed decode step) and waits until every device
  // has finished it. Throws vk::TimeoutError naming a device that stopped answering. Then
  // reports the step to every device (vk::Device::record_activity): its wall time and the
  // device's busy time by the GPU timestamps written around each of its segments (read after
  // the wait: no host wait or submit of their own).
  virtual void run() = 0;

  // Host waits of the calling thread so far (one per step, one per device in a pipeline).
  virtual uint64_t host_waits() const = 0;
  // The collective's counters (tensor split), else nullopt.
  virtual std::optional<CollectiveStats> collective_stats() const { return std::nullopt; }
};

}  // namespace chorus::split
