#include "split/collective.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "vkdevice/host_memory.h"

namespace chorus::split {
namespace {

constexpr size_t kMaxSamples = size_t(1) << 20;
constexpr uint64_t kBlockSliceNs = 10'000'000;  // a blocking wait re-checks for failure this often
// After a failure, how long (at least) a device gets to run out its work before the
// collective leaks its objects: a device that timed out may only be slow.
constexpr uint64_t kDrainNs = 120'000'000'000ull;

uint64_t now_ns() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

void append_capped(std::vector<uint32_t>& dst, const std::vector<uint32_t>& src) {
  dst.insert(dst.end(), src.begin(), src.end());
  if (dst.size() > kMaxSamples) dst.erase(dst.begin(), dst.begin() + static_cast<std::ptrdiff_t>(dst.size() - kMaxSamples));
}

uint32_t clamp_u32(uint64_t v) { return static_cast<uint32_t>(std::min<uint64_t>(v, UINT32_MAX)); }

std::string ms_text(uint64_t ns) { return std::to_string(ns / 1'000'000) + " ms"; }

}  // namespace

double CollectiveStats::latency_us(double q) const { return quantile_us(latency_ns, q); }

double CollectiveStats::quantile_us(std::vector<uint32_t> v, double q) {
  if (v.empty()) return 0.0;
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(i), v.end());
  return v[i] / 1e3;
}

Collective::Collective(std::vector<vk::Device*> devices, const CollectiveOptions& options) : options_(options) {
  if (devices.empty()) throw std::invalid_argument("a collective needs at least one device");
  if (options_.max_points == 0 || options_.max_floats == 0)
    throw std::invalid_argument("a collective needs max_points and max_floats above 0");
  timeout_ns_ = options_.timeout_ns ? options_.timeout_ns : devices[0]->timeout_ns();
  bool cpu_device = false;
  for (const vk::Device* d : devices) cpu_device = cpu_device || d->info().type == vk::DeviceType::cpu;
  spin_ns_ = options_.spin_ns ? *options_.spin_ns : cpu_device ? 0 : 20'000;
  uint64_t align = 256;  // a cache line at least, and every device's storage offset alignment
  for (const vk::Device* d : devices) align = std::max(align, d->info().min_storage_buffer_offset_alignment);
  slot_bytes_ = align_up(uint64_t(options_.max_floats) * 4, align);
  if (options_.ring == 1) throw std::invalid_argument("a collective's ring needs at least 2 slots (or 0: one per point)");
  slots_ = options_.ring ? std::min(options_.ring, options_.max_points) : options_.max_points;
  const uint64_t slots = slots_;
  if (options_.stall && (options_.stall->first >= devices.size() || options_.stall->second >= options_.max_points))
    throw std::invalid_argument("the injected stall names device " + std::to_string(options_.stall->first) +
                                " and reduce point " + std::to_string(options_.stall->second) +
                                "; expected a device below " + std::to_string(devices.size()) + " and a point below " +
                                std::to_string(options_.max_points));

  bool import = options_.memory == CollectiveMemory::Imported;
  if (options_.memory == CollectiveMemory::Auto) {
    import = true;
    for (const vk::Device* d : devices) import = import && vk::host_import_unavailable(*d).empty();
  } else if (import) {
    for (const vk::Device* d : devices)
      if (std::string why = vk::host_import_unavailable(*d); !why.empty())
        throw vk::Error("the collective cannot share host memory with " + d->label() + ": " + why);
  }
  // Imported: [results: slots][partials of device 0: slots][partials of device 1] ...
  // PerDevice, in each device's own buffer: [results: slots][partials: slots].
  if (import) shared_ = std::make_unique<vk::SharedHostMemory>(devices, slot_bytes_ * slots * (1 + devices.size()), "collective");

  members_.resize(devices.size());
  for (size_t d = 0; d < devices.size(); ++d) {
    Member& m = members_[d];
    m.device = devices[d];
    m.partials_ready = std::make_unique<vk::Timeline>(*m.device, "partials_ready");
    m.reduced = std::make_unique<vk::Timeline>(*m.device, "reduced");
    if (shared_) {
      m.view = &shared_->buffer(d);
      m.host = shared_->data();
    } else {
      m.own = m.device->create_buffer(slot_bytes_ * slots * 2, vk::BufferKind::Host, "collective");
      if (!m.own.mapped()) throw vk::Error(m.device->label() + ": the collective's host-visible buffer is not mapped");
      std::memset(m.own.mapped(), 0, m.own.size());
      m.view = &m.own;
      m.host = m.own.mapped();
    }
  }
  if (options_.stall) stall_ = std::make_unique<vk::Timeline>(*devices[options_.stall->first], "injected stall");
  if (options_.signal_threads.value_or(cpu_device) && devices.size() > 1 && !options_.serialise) {
    for (size_t d = 0; d < devices.size(); ++d) signallers_.push_back(std::make_unique<Signaller>());
    for (size_t d = 0; d < devices.size(); ++d)  // started once the list no longer changes
      signallers_[d]->thread = std::thread([this, d, sg = signallers_[d].get()] { signal_loop(d, *sg); });
  }
  proxy_ = std::thread([this] { proxy_loop(); });
}

bool Collective::abandoned() {
  {
    std::unique_lock lock(mutex_);
    done_cv_.wait(lock, [&] { return finished_tokens_ == next_token_ || error_; });
    if (!error_) return false;
    stop_ = true;
  }
  failed_ = true;
  work_cv_.notify_all();
  if (proxy_.joinable()) proxy_.join();
  stop_signallers();
  drain();
  return leak_;
}

Collective::~Collective() {
  {
    std::unique_lock lock(mutex_);
    // The proxy finishes every submitted token or fails within its timeout per point.
    done_cv_.wait(lock, [&] { return finished_tokens_ == next_token_ || error_; });
    stop_ = true;
  }
  failed_ = true;  // a proxy still waiting (after a failure) gives up at its next slice
  work_cv_.notify_all();
  if (proxy_.joinable()) proxy_.join();
  stop_signallers();
  if (error_ && !drained_) drain();
  if (leak_) {
    // A device still runs (or will run) segments that use these objects; destroying them
    // would be undefined behaviour. They are left to the process's end.
    for (auto& m : members_) {
      (void)m.partials_ready.release();
      (void)m.reduced.release();
      (void)new vk::Buffer(std::move(m.own));
    }
    (void)shared_.release();
    (void)stall_.release();
  }
}

void Collective::drain() noexcept {
  drained_ = true;
  try {
    if (stall_) stall_->signal(1);  // the injected stall ends: the device answers again
  } catch (...) {
    leak_ = true;
  }
  // Every segment submitted waits for a `reduced` value <= next_value_ - 1 and signals a
  // `partials_ready` value <= next_value_: signalling every `reduced` to next_value_ lets the
  // devices run out their work (on stale results) so nothing is destroyed while in use.
  for (auto& m : members_) {
    try {
      if (vk::timeline_value(*m.device, *m.reduced) < next_value_) m.reduced->signal(next_value_);
    } catch (...) {
      leak_ = true;
    }
  }
  for (auto& m : members_) {
    try {
      if (!vk::wait_timeline(*m.device, *m.partials_ready, next_value_, std::max(timeout_ns_, kDrainNs))) leak_ = true;
    } catch (...) {
      leak_ = true;
    }
  }
}

uint64_t Collective::partial_offset(size_t d, uint32_t k) const {
  return (shared_ ? slots_ * (1 + d) : slots_) * slot_bytes_ + (k % slots_) * slot_bytes_;
}

uint64_t Collective::result_offset(size_t, uint32_t k) const { return (k % slots_) * slot_bytes_; }

void Collective::record_publish(vk::CommandBuffer& cb) { vk::barrier_device_to_host(cb); }

void Collective::record_acquire(vk::CommandBuffer& cb) { vk::barrier_host_to_device(cb); }

bool Collective::stalls(size_t d, size_t segment) const {
  return stall_ && options_.stall->first == d && options_.stall->second == segment;
}

std::string Collective::member_name(size_t d) const {
  return "logical device " + std::to_string(d) + " of the collective (" + members_[d].device->label() + ")";
}

uint64_t Collective::last_value() const {
  std::lock_guard lock(mutex_);
  return next_value_;
}

uint64_t Collective::submit(std::span<const std::vector<Segment>> segments, std::span<const uint32_t> point_floats) {
  const size_t n_points = point_floats.size();
  if (segments.size() != members_.size())
    throw std::invalid_argument("collective: " + std::to_string(segments.size()) + " segment lists for " +
                                std::to_string(members_.size()) + " devices");
  if (n_points > options_.max_points)
    throw std::invalid_argument("collective: " + std::to_string(n_points) + " reduce points, at most " +
                                std::to_string(options_.max_points) + " (max_points)");
  for (uint32_t n : point_floats)
    if (n == 0 || n > options_.max_floats)
      throw std::invalid_argument("collective: a partial of " + std::to_string(n) + " floats (1.." +
                                  std::to_string(options_.max_floats) + ")");
  for (size_t d = 0; d < segments.size(); ++d) {
    if (segments[d].size() != n_points + 1)
      throw std::invalid_argument("collective: " + member_name(d) + " has " + std::to_string(segments[d].size()) +
                                  " segments for " + std::to_string(n_points) + " reduce points (needs points + 1)");
    for (const Segment& s : segments[d])
      if (!s.cb) throw std::invalid_argument("collective: a segment of " + member_name(d) + " has no command buffer");
  }

  uint64_t token = 0, base = 0;
  {
    std::lock_guard lock(mutex_);
    if (error_) std::rethrow_exception(error_);
    token = next_token_++;
    base = next_value_;
    next_value_ += n_points + 1;
    queue_.push_back(Work{token, base, std::vector<uint32_t>(point_floats.begin(), point_floats.end())});
    ++stats_.tokens;
  }
  work_cv_.notify_one();

  try {
    // Segment j of a device: waits reduced >= base + j (the previous point's sum, or for
    // j == 0 the previous token's end), signals partials_ready = base + j + 1.
    std::vector<std::vector<TimelinePoint>> waits(members_.size()), signals(members_.size());
    std::vector<std::vector<vk::Device::Batch>> batches(members_.size(), std::vector<vk::Device::Batch>(n_points + 1));
    for (size_t d = 0; d < members_.size(); ++d) {
      Member& m = members_[d];
      size_t n_waits = 0, n_signals = 0;
      for (const Segment& s : segments[d]) {
        n_waits += 2 + s.waits.size();
        n_signals += 1 + s.signals.size();
      }
      waits[d].reserve(n_waits);  // no reallocation below: the batches' spans point into these
      signals[d].reserve(n_signals);
      for (size_t j = 0; j <= n_points; ++j) {
        const Segment& s = segments[d][j];
        auto& w = waits[d];
        auto& g = signals[d];
        const size_t w0 = w.size(), s0 = g.size();
        if (base + j > 0) w.push_back({m.reduced.get(), base + j});
        if (stalls(d, j)) w.push_back({stall_.get(), 1});
        w.insert(w.end(), s.waits.begin(), s.waits.end());
        g.push_back({m.partials_ready.get(), base + j + 1});
        g.insert(g.end(), s.signals.begin(), s.signals.end());
        batches[d][j] = {s.cb, std::span(w).subspan(w0, w.size() - w0), std::span(g).subspan(s0, g.size() - s0)};
      }
      if (!options_.serialise) {
        m.device->submit(batches[d]);
        std::lock_guard lock(mutex_);
        ++stats_.submits;
      }
    }
    if (options_.serialise) submit_serialised(batches, base, token);
  } catch (...) {
    fail(std::current_exception());
    throw;
  }
  return token;
}

void Collective::submit_serialised(const std::vector<std::vector<vk::Device::Batch>>& batches, uint64_t base,
                                   uint64_t token) {
  // Nothing overlaps: device 0's segment j, then device 1's, ..., then the proxy's reduce of
  // point j, then segment j + 1. The timeline values are those of the normal mode.
  for (size_t j = 0; j < batches[0].size(); ++j) {
    const uint64_t value = base + j + 1;
    for (size_t d = 0; d < members_.size(); ++d) {
      members_[d].device->submit(std::span(&batches[d][j], 1));
      {
        std::lock_guard lock(mutex_);
        ++stats_.submits;
        ++stats_.main_waits;
      }
      if (!members_[d].partials_ready->wait_for(value, timeout_ns_)) {
        check();
        throw vk::TimeoutError("serialised collective: " + member_name(d) + " did not finish segment " +
                                   std::to_string(j) + " of token " + std::to_string(token) + " within " +
                                   ms_text(timeout_ns_),
                               VK_TIMEOUT);
      }
    }
    // Then the proxy's reduce (or token end): it reports each value once it has signalled
    // every device. (Waiting on the host-signalled `reduced` timeline from this thread would do
    // too, but validation layer 1.3.239 then times out now and again: a race in its tracking
    // of a host signal on one thread against a host wait on another.)
    std::unique_lock lock(mutex_);
    ++stats_.main_waits;
    if (!done_cv_.wait_for(lock, std::chrono::nanoseconds(timeout_ns_), [&] { return proxy_value_ >= value || error_; })) {
      throw vk::TimeoutError("serialised collective: the proxy did not finish point " + std::to_string(j) + " of token " +
                                 std::to_string(token) + " within " + ms_text(timeout_ns_),
                             VK_TIMEOUT);
    }
    if (error_) std::rethrow_exception(error_);
  }
}

void Collective::wait(uint64_t token) {
  std::unique_lock lock(mutex_);
  if (token >= next_token_) throw std::logic_error("collective: waiting for token " + std::to_string(token) + " never submitted");
  ++stats_.main_waits;
  done_cv_.wait(lock, [&] { return finished_tokens_ > token || error_; });
  if (finished_tokens_ > token) return;
  std::rethrow_exception(error_);
}

void Collective::check() {
  std::lock_guard lock(mutex_);
  if (error_) std::rethrow_exception(error_);
}

void Collective::fail(std::exception_ptr e) {
  {
    std::lock_guard lock(mutex_);
    if (!error_) error_ = e;
  }
  failed_ = true;
  done_cv_.notify_all();
  work_cv_.notify_all();
}

std::span<const float> Collective::host_result(uint32_t k, uint32_t n_floats) const {
  if (k >= options_.max_points || n_floats > options_.max_floats)
    throw std::out_of_range("collective: result " + std::to_string(k) + " of " + std::to_string(n_floats) + " floats");
  return {reinterpret_cast<const float*>(members_[0].host + result_offset(0, k)), n_floats};
}

CollectiveStats Collective::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void Collective::reset_stats() {
  std::lock_guard lock(mutex_);
  stats_ = CollectiveStats{};
}

// ---- the proxy thread ----------------------------------------------------------------------

void Collective::proxy_loop() {
  for (;;) {
    Work w;
    {
      std::unique_lock lock(mutex_);
      work_cv_.wait(lock, [&] { return stop_ || !queue_.empty() || error_; });
      if (queue_.empty() || error_) return;
      w = std::move(queue_.front());
      queue_.pop_front();
    }
    try {
      run_token(w);
    } catch (...) {
      fail(std::current_exception());
      return;
    }
  }
}

void Collective::signal_reduced(uint64_t value, bool wait) {
  if (signallers_.empty()) {
    for (auto& m : members_) m.reduced->signal(value);
    return;
  }
  for (auto& sg : signallers_) {
    {
      std::lock_guard lock(sg->mutex);
      sg->values.push_back(value);
    }
    sg->cv.notify_all();
  }
  if (!wait) return;
  for (auto& sg : signallers_) {
    std::unique_lock lock(sg->mutex);
    sg->cv.wait(lock, [&] { return sg->signalled >= value || sg->stop || failed_; });
  }
}

void Collective::signal_loop(size_t d, Signaller& sg) {
  for (;;) {
    uint64_t value = 0;
    {
      std::unique_lock lock(sg.mutex);
      sg.cv.wait(lock, [&] { return sg.stop || !sg.values.empty(); });  // (notify_all wakes the proxy too)
      if (sg.values.empty()) return;  // stopped, nothing left to signal
      value = sg.values.front();
      sg.values.pop_front();
    }
    try {
      members_[d].reduced->signal(value);  // may run device d's released work in this thread
    } catch (...) {
      fail(std::current_exception());
      sg.cv.notify_all();  // a proxy waiting for this signal sees failed_
      return;
    }
    {
      std::lock_guard lock(sg.mutex);
      sg.signalled = value;
    }
    sg.cv.notify_all();
  }
}

void Collective::stop_signallers() noexcept {
  for (auto& sg : signallers_) {
    {
      std::lock_guard lock(sg->mutex);
      sg->stop = true;
    }
    sg->cv.notify_one();
    if (sg->thread.joinable()) sg->thread.join();
  }
}

void Collective::run_token(const Work& w) {
  const uint32_t n_points = static_cast<uint32_t>(w.floats.size());
  std::vector<uint32_t> latency, waited, summed;
  latency.reserve(n_points);
  waited.reserve(n_points);
  summed.reserve(n_points);
  uint64_t blocks = 0;
  for (uint32_t k = 0; k <= n_points; ++k) {
    const uint64_t value = w.base + k + 1;
    const uint64_t t0 = now_ns();
    wait_all(value, w, k, blocks);  // every device's partial of point k (or its token end)
    const uint64_t t1 = now_ns();
    if (k < n_points) reduce(k, w.floats[k]);
    const uint64_t t2 = now_ns();
    signal_reduced(value, k == n_points);  // the sum is written: devices go on (the token's end: before wait() returns)
    if (options_.serialise) {
      {
        std::lock_guard lock(mutex_);
        proxy_value_ = value;
      }
      done_cv_.notify_all();
    }
    if (k < n_points) {
      latency.push_back(clamp_u32(now_ns() - t1));
      waited.push_back(clamp_u32(t1 - t0));
      summed.push_back(clamp_u32(t2 - t1));
    }
  }
  {
    std::lock_guard lock(mutex_);
    finished_tokens_ = w.token + 1;
    stats_.reduces += n_points;
    stats_.proxy_blocks += blocks;
    append_capped(stats_.latency_ns, latency);
    append_capped(stats_.wait_ns, waited);
    append_capped(stats_.sum_ns, summed);
    stats_.device_wait_ns.resize(members_.size(), 0);
    stats_.device_last.resize(members_.size(), 0);
    for (size_t d = 0; d < proxy_device_wait_ns_.size(); ++d) {
      stats_.device_wait_ns[d] += std::exchange(proxy_device_wait_ns_[d], 0);
      stats_.device_last[d] += std::exchange(proxy_device_last_[d], 0);
    }
  }
  done_cv_.notify_all();
}

void Collective::wait_all(uint64_t value, const Work& w, uint32_t k, uint64_t& blocks) {
  const uint64_t deadline = now_ns() + timeout_ns_;
  const uint32_t n_points = static_cast<uint32_t>(w.floats.size());
  proxy_device_wait_ns_.resize(members_.size(), 0);  // the proxy's own; merged into stats_ per token
  proxy_device_last_.resize(members_.size(), 0);
  size_t last = members_.size();
  for (size_t d = 0; d < members_.size(); ++d) {
    const uint64_t t0 = now_ns();
    const bool delivered = wait_one(d, value, deadline, blocks);
    const uint64_t waited = now_ns() - t0;
    proxy_device_wait_ns_[d] += waited;
    if (waited >= 1000) last = d;
    if (delivered) {
      // Reduce points only: the token's end (k == n_points) is no reduce point.
      if (d + 1 == members_.size() && last < members_.size() && k < n_points) ++proxy_device_last_[last];
      continue;
    }
    if (failed_) throw vk::Error("collective stopped while waiting for " + member_name(d));
    const uint64_t at = vk::timeline_value(*members_[d].device, *members_[d].partials_ready);
    const std::string what = k < n_points ? "deliver its partial for reduce point " + std::to_string(k) + " of token " +
                                                std::to_string(w.token)
                                          : "finish token " + std::to_string(w.token) + " (its segment after the last of " +
                                                std::to_string(n_points) + " reduce points)";
    throw vk::TimeoutError(member_name(d) + " did not " + what + " within " + ms_text(timeout_ns_) +
                               " (timeline 'partials_ready' at " + std::to_string(at) + ", waiting for " +
                               std::to_string(value) + "; CHORUS_TIMEOUT_MS sets the limit)",
                           VK_TIMEOUT);
  }
}

bool Collective::wait_one(size_t d, uint64_t value, uint64_t deadline_ns, uint64_t& blocks) {
  Member& m = members_[d];
  const vk::Device& dev = *m.device;
  // Poll: the counter usually arrives within microseconds, and a blocking wait's wake-up
  // costs more than that. A zero-timeout vkWaitSemaphores then makes the device's signal
  // (and the writes before it) happen-before the proxy's reads.
  const uint64_t spin_end = now_ns() + spin_ns_;
  for (;;) {
    if (vk::timeline_value(dev, *m.partials_ready) >= value) return vk::wait_timeline(dev, *m.partials_ready, value, 0);
    const uint64_t now = now_ns();
    if (now >= spin_end || now >= deadline_ns) break;
    std::this_thread::yield();
  }
  ++blocks;
  for (;;) {
    const uint64_t now = now_ns();
    if (now >= deadline_ns || failed_) return false;
    if (vk::wait_timeline(dev, *m.partials_ready, value, std::min(kBlockSliceNs, deadline_ns - now))) return true;
  }
}

void Collective::reduce(uint32_t k, uint32_t n) {
  // Fixed order: out = p[0] + p[1] + ... + p[N-1], element by element, so the result never
  // depends on which device finished first.
  float* out = reinterpret_cast<float*>(members_[0].host + result_offset(0, k));
  const float* p0 = reinterpret_cast<const float*>(members_[0].host + partial_offset(0, k));
  std::memcpy(out, p0, size_t(n) * 4);
  for (size_t d = 1; d < members_.size(); ++d) {
    const float* p = reinterpret_cast<const float*>(members_[d].host + partial_offset(d, k));
    for (uint32_t i = 0; i < n; ++i) out[i] += p[i];
  }
  if (!shared_)  // each device reads its own copy
    for (size_t d = 1; d < members_.size(); ++d) std::memcpy(members_[d].host + result_offset(d, k), out, size_t(n) * 4);
}

}  // namespace chorus::split
