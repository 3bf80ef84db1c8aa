// split/collective.h — the host-mediated all-reduce across N logical devices.
//
// Owns: the memory the devices' partial sums and the reduced results live in (host memory
// imported into every device when all of them allow it, else one host-visible buffer per
// device), two timelines per device (`partials_ready`, `reduced`), the submission of a
// token's work as ONE vkQueueSubmit per device, and the proxy thread that, for each reduce
// point, waits for every device's partial, sums the partials in device order and signals
// every device. The main thread submits and waits once per token; it takes no part in the
// reduces. docs/sync.md names every timeline value and justifies every wait, signal and
// barrier; read it before changing anything here.
//
// A token on device d is a list of P+1 command buffers ("segments") around P reduce points:
//
//   segment 0 | point 0 | segment 1 | point 1 | ... | point P-1 | segment P
//
// Segment k < P ends by writing the device's partial of point k (f32) at
// partials(d) + partial_offset(d, k) and recording record_publish(); segment k > 0 starts with
// record_acquire() and may then read the sum of point k-1 at results(d) + result_offset(d, k-1).
// Result k stays valid on the devices until the next token starts, and on the host
// (host_result) from wait(token) until the next submit.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "vkdevice/commands.h"
#include "vkdevice/device.h"
#include "vkdevice/memory.h"

namespace chorus::vk {
class SharedHostMemory;
}

namespace chorus::split {

enum class CollectiveMemory {
  Auto,      // imported host memory if every device allows it, else per-device host buffers
  Imported,  // one host allocation imported into every device (VK_EXT_external_memory_host)
  PerDevice, // a host-visible buffer per device; the proxy writes the sum into each
};

struct CollectiveOptions {
  uint32_t max_points = 64;       // reduce points per token (one slot each)
  uint32_t max_floats = 16384;    // floats per partial (64 KiB)
  // Slots reused ring-wise: point k of a token uses slot k % ring (0: one slot per point).
  // 2 is always enough (docs/sync.md, "Slot lifetimes"); a step of many tokens (prefill) then
  // needs 2 slots of max_floats instead of max_points of them.
  uint32_t ring = 0;
  CollectiveMemory memory = CollectiveMemory::Auto;
  // Debug: one submit per segment and a main-thread wait after each, so nothing overlaps
  // (docs/sync.md, "Serialise everything"). Results are identical to the normal mode.
  bool serialise = false;
  // How long the proxy waits for a device before it gives up (0: the first device's
  // timeout_ns(), i.e. CHORUS_TIMEOUT_MS or 60 s).
  uint64_t timeout_ns = 0;
  // The proxy polls the timelines' counters for this long before it blocks in
  // vkWaitSemaphores (0: block at once). Polling saves a blocking wait's wake-up on a GPU;
  // on a CPU device (lavapipe) the device's work runs on the cores a polling proxy burns, so
  // unset means 0 when any device is a CPU device, else 20 us (docs/sync.md, "Waiting").
  std::optional<uint64_t> spin_ns;
  // Fault injection, for testing what happens when a device stops answering: {device, point}
  // makes that member stop before it delivers that reduce point of every token (its segment
  // waits on a timeline only the collective's teardown signals).
  std::optional<std::pair<uint32_t, uint32_t>> stall;
  // Each device's `reduced` signals come from a thread of its own instead of the proxy (unset:
  // on when any device is a CPU device). Mesa's emulated timelines run the work a signal
  // releases in the signalling thread: signalled one after the other by the proxy, lavapipe's
  // logical devices would run their segments one after the other (docs/sync.md, "Waiting").
  // Never in serialise mode.
  std::optional<bool> signal_threads;
};

struct CollectiveStats {
  uint64_t tokens = 0;          // tokens submitted
  uint64_t reduces = 0;         // reduce points completed by the proxy
  uint64_t submits = 0;         // vkQueueSubmit calls made by the collective (all devices)
  uint64_t reduce_submits = 0;  // submits made on behalf of a reduce point: 0 by design
  uint64_t main_waits = 0;      // waits of the main thread (wait(); serialise mode adds its own)
  uint64_t proxy_blocks = 0;    // proxy waits that fell back to blocking in vkWaitSemaphores
  // Per reduce point, in order (the most recent 2^20): nanoseconds from the proxy seeing the
  // last device's partials_ready to its last reduced signal (the sum and the signals).
  std::vector<uint32_t> latency_ns;
  // Per reduce point: nanoseconds the proxy spent waiting for the partials (device time plus
  // the polling/wake-up delay).
  std::vector<uint32_t> wait_ns;
  // Per reduce point: nanoseconds of the sum alone (the rest of latency_ns is the signals).
  std::vector<uint32_t> sum_ns;
  // Per device, in total: nanoseconds the proxy waited for this device's partial after the
  // devices before it had delivered theirs — the time this device held the others back.
  std::vector<uint64_t> device_wait_ns;
  // Per device: reduce points at which it was the last whose partial the proxy had to wait
  // for (waits under a microsecond count as already delivered); they add up to at most reduces.
  std::vector<uint64_t> device_last;

  // The q-quantile (0..1) of latency_ns in microseconds (0 if there are none).
  double latency_us(double q) const;
  static double quantile_us(std::vector<uint32_t> samples_ns, double q);
};

class Collective {
 public:
  // One extra wait or signal for a segment, besides the collective's own.
  using TimelinePoint = vk::Device::TimelinePoint;
  struct Segment {
    const vk::CommandBuffer* cb = nullptr;
    std::span<const TimelinePoint> waits = {};
    std::span<const TimelinePoint> signals = {};
  };

  // devices: the members in reduce order (the sum is p[0] + p[1] + ... in that order, so
  // results never depend on timing). Starts the proxy thread. Throws vk::Error if the memory
  // cannot be had (Imported on a device without the extension names the device).
  Collective(std::vector<vk::Device*> devices, const CollectiveOptions& options = {});
  // Waits for submitted tokens (bounded by the timeout), stops the proxy, releases everything.
  // After a failure it first signals every `reduced` timeline past the last value any
  // submitted segment waits for, so the devices run out their work; a device that does not
  // finish within the timeout keeps the collective's objects alive (leaked, never destroyed
  // while in use).
  ~Collective();
  Collective(const Collective&) = delete;
  Collective& operator=(const Collective&) = delete;

  size_t size() const { return members_.size(); }
  vk::Device& device(size_t d) const { return *members_[d].device; }
  bool imported() const { return shared_ != nullptr; }
  const CollectiveOptions& options() const { return options_; }

  // Where device d writes its partial of point k, and reads the sum of point k.
  const vk::Buffer& partials(size_t d) const { return *members_[d].view; }
  uint64_t partial_offset(size_t d, uint32_t k) const;
  const vk::Buffer& results(size_t d) const { return *members_[d].view; }
  uint64_t result_offset(size_t d, uint32_t k) const;
  uint64_t slot_bytes() const { return slot_bytes_; }

  // Records the barrier ending a segment that wrote its partial (device writes -> host reads).
  static void record_publish(vk::CommandBuffer& cb);
  // Records the barrier starting a segment that reads a result (host writes -> device reads).
  static void record_acquire(vk::CommandBuffer& cb);

  // Submits one token: segments[d] holds device d's P+1 segments, point_floats the P partial
  // sizes (1..max_floats). One vkQueueSubmit per device (serialise mode: see options).
  // Returns the token's number (0, 1, ...). Throws the proxy's error if it has failed.
  uint64_t submit(std::span<const std::vector<Segment>> segments, std::span<const uint32_t> point_floats);
  // Blocks until every device has finished `token` (its last segment) — the main thread's one
  // host wait per token. Rethrows the proxy's error (vk::TimeoutError naming the device and
  // the reduce point when a device stopped answering).
  void wait(uint64_t token);
  // Throws the proxy's error, if any, without waiting.
  void check();

  // The sum of point k of the last waited-for token, as the host sees it (with a ring, only
  // the last `ring` points are still there).
  std::span<const float> host_result(uint32_t k, uint32_t n_floats) const;

  CollectiveStats stats() const;
  void reset_stats();
  // After a failure: whether teardown will leave the collective's objects alive because a
  // device may still run segments (it drains first; see ~Collective). Owners of the segments'
  // command buffers must then leave those alive too.
  bool abandoned();

  // The two timelines of device d. For token t with P reduce points starting at value B
  // (B = the previous token's end value, 0 for the first), point k has value B + k + 1 and
  // the token's end B + P + 1; last_value() is the end value of the last submitted token.
  const vk::Timeline& partials_ready(size_t d) const { return *members_[d].partials_ready; }
  const vk::Timeline& reduced(size_t d) const { return *members_[d].reduced; }
  uint64_t last_value() const;

 private:
  struct Member {
    vk::Device* device = nullptr;
    std::unique_ptr<vk::Timeline> partials_ready;
    std::unique_ptr<vk::Timeline> reduced;
    vk::Buffer own;                   // PerDevice memory: [results | partials]
    const vk::Buffer* view = nullptr;  // the buffer kernels bind (own, or the shared import)
    std::byte* host = nullptr;         // host address of view's first byte
  };
  struct Work {
    uint64_t token = 0;
    uint64_t base = 0;                 // timeline value before the token's first point
    std::vector<uint32_t> floats;      // per reduce point
  };

  void proxy_loop();
  struct Signaller;
  void signal_loop(size_t d, Signaller& sg);
  void signal_reduced(uint64_t value, bool wait);  // every device's `reduced` = value (directly or via
                                                  // its thread; `wait`: until every one is done)
  void stop_signallers() noexcept;
  void run_token(const Work& w);
  void wait_all(uint64_t value, const Work& w, uint32_t k, uint64_t& blocks);
  bool wait_one(size_t d, uint64_t value, uint64_t deadline_ns, uint64_t& blocks);
  std::string member_name(size_t d) const;
  bool stalls(size_t d, size_t segment) const;  // options_.stall applies to this segment
  void reduce(uint32_t k, uint32_t n);
  void submit_serialised(const std::vector<std::vector<vk::Device::Batch>>& batches, uint64_t base, uint64_t token);
  void fail(std::exception_ptr e);
  void drain() noexcept;

  CollectiveOptions options_;
  uint64_t timeout_ns_ = 0;
  uint64_t spin_ns_ = 0;
  uint64_t slot_bytes_ = 0;
  uint64_t slots_ = 0;                  // slots per region: max_points, or ring
  std::unique_ptr<vk::Timeline> stall_;  // options_.stall's timeline (signalled by teardown)
  std::unique_ptr<vk::SharedHostMemory> shared_;
  std::vector<Member> members_;

  mutable std::mutex mutex_;            // guards everything below
  std::condition_variable work_cv_;     // proxy: work arrived or stop
  std::condition_variable done_cv_;     // main thread: a token finished or the proxy failed
  std::deque<Work> queue_;
  uint64_t next_token_ = 0;
  uint64_t next_value_ = 0;             // timeline value of the last point submitted
  uint64_t proxy_value_ = 0;            // serialise mode: the last value the proxy signalled
  uint64_t finished_tokens_ = 0;        // tokens 0..finished_tokens_-1 are done on every device
  bool stop_ = false;
  std::atomic<bool> failed_{false};     // read by the proxy between its waits, without the lock
  std::exception_ptr error_;
  std::vector<uint64_t> proxy_device_wait_ns_;  // the proxy thread's per-device waits of the current token
  std::vector<uint64_t> proxy_device_last_;     // and the points at which each was last
  CollectiveStats stats_;
  bool leak_ = false;                   // a device never finished: keep its objects
  bool drained_ = false;                // drain() ran (abandoned() or the destructor)

  // Per-device signal threads (options.signal_threads): values to signal, in order.
  struct Signaller {
    std::mutex mutex;
    std::condition_variable cv;
    std::deque<uint64_t> values;
    uint64_t signalled = 0;  // the last value signalled
    bool stop = false;
    std::thread thread;
  };
  std::vector<std::unique_ptr<Signaller>> signallers_;

  std::thread proxy_;  // last: started once everything above exists
};

}  // namespace chorus::split
