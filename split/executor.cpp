#include "split/executor.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>

#include "vkdevice/timestamps.h"

namespace chorus::split {
namespace {

constexpr const char* kScratch = "scratch";
// After an error, how long (at least) a device gets to finish its last step before the
// executor leaks what that step uses: destroying objects a device still uses is undefined
// behaviour, and a device that timed out may only be slow.
constexpr uint64_t kTeardownNs = 120'000'000'000ull;

// A device's clock over a step's segments: a timestamp where each segment starts and one
// where it ends (vkdevice/timestamps.h), so the gaps between segments (waiting for a reduce,
// for the host) are not counted as busy. The step's first segment resets the pool: query
// commands run in submission order on the queue, and the host read the previous step's
// values after its wait, before this step was submitted. Read after the step's host wait
// (no wait of its own, no submit of its own).
class SegmentClock {
 public:
  SegmentClock(vk::Device& dev, uint32_t segments) : pool_(std::make_unique<vk::TimestampPool>(dev, 2 * segments)) {}
  void start(vk::CommandBuffer& cb, uint32_t segment) const {
    if (segment == 0) pool_->record_reset(cb, 0, pool_->size());
    pool_->record_write(cb, 2 * segment, false);
  }
  void stop(vk::CommandBuffer& cb, uint32_t segment) const { pool_->record_write(cb, 2 * segment + 1, true); }
  // The sum of the first `segments` segments' durations of the step that last finished
  // (nullopt: the device has no timestamps, or they are not all written).
  std::optional<uint64_t> busy_ns(uint32_t segments) {
    ticks_.resize(2 * size_t(segments));
    if (!pool_->read(0, ticks_)) return std::nullopt;
    uint64_t busy = 0;
    for (uint32_t j = 0; j < segments; ++j) busy += pool_->elapsed_ns(ticks_[2 * j], ticks_[2 * j + 1]);
    return busy;
  }

 private:
  std::unique_ptr<vk::TimestampPool> pool_;
  std::vector<uint64_t> ticks_;
};

// An executor that reports each step to its devices (vk::Device::record_activity): the wall
// time from the step's first submit to the end of its host wait, and each device's busy time
// in it. A hybrid split's groups run as parts of its steps (run_step) and report nothing
// themselves.
class StepExecutor : public Executor {
 public:
  void run() final {
    const auto t0 = std::chrono::steady_clock::now();
    run_step();
    collect_profile();
    const auto wall = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0);
    for (size_t d = 0; d < n_devices(); ++d)
      device(d).record_activity(vk::ActivityStep{static_cast<uint64_t>(wall.count()), step_tokens(), step_busy_ns(d)});
    if (std::exchange(fresh_, false))  // a new recording may have compiled kernels (vk::Device::release_freed_heap)
      for (size_t d = 0; d < n_devices(); ++d) device(d).release_freed_heap();
  }
  // Runs the recorded step and waits for it (Executor::run without the report).
  virtual void run_step() = 0;
  // Adds the step's dispatch times to each device's profile (vkdevice/profile.h), after its wait.
  virtual void collect_profile() = 0;
  virtual size_t n_devices() const = 0;
  virtual vk::Device& device(size_t d) const = 0;
  virtual uint32_t step_tokens() const = 0;
  // Device d's busy time in the step that last finished, by its timestamps.
  virtual std::optional<uint64_t> step_busy_ns(size_t d) = 0;

 protected:
  bool fresh_ = false;  // begin() was called since the last run()
};

// One device after another; reduce points are local, the hidden state moves through the host.
// A device's step is a few segments (a new one every `stride` reduce points) submitted as the
// batches of ONE vkQueueSubmit, each signalling the device's `progress` timeline: the host's
// wait tells a slow device (progress moving) from a stuck one (vkdevice/watchdog.h).
class PipelineExecutor final : public StepExecutor {
 public:
  PipelineExecutor(std::vector<vk::Device*> devices, const ExecutorOptions& o)
      : o_(o), stride_(std::max<uint32_t>(1, (o.max_points + kSegments - 1) / kSegments)) {
    const uint64_t bytes = uint64_t(o.max_tokens) * o.width * 4;
    for (vk::Device* dev : devices) {
      Member m;
      m.dev = dev;
      m.partial = dev->create_buffer(bytes, vk::BufferKind::Device, kScratch);
      if (devices.size() > 1) {
        m.inbox = dev->create_buffer(bytes, vk::BufferKind::Host, kScratch);
        m.outbox = dev->create_buffer(bytes, vk::BufferKind::Host, kScratch);
      }
      for (uint32_t j = 0; j <= kSegments + 1; ++j) m.segments.push_back(std::make_unique<vk::CommandBuffer>(*dev));
      m.clock = std::make_unique<SegmentClock>(*dev, kSegments + 2);
      m.progress = std::make_unique<vk::Timeline>(*dev, "progress");
      members_.push_back(std::move(m));
    }
    if (o.stall) {
      if (o.stall->first >= members_.size() || o.stall->second >= o.max_points)
        throw std::invalid_argument("the injected stall names device " + std::to_string(o.stall->first) +
                                    " and reduce point " + std::to_string(o.stall->second) + "; expected a device below " +
                                    std::to_string(members_.size()) + " and a point below " +
                                    std::to_string(o.max_points));
      stall_ = std::make_unique<vk::Timeline>(*devices[o.stall->first], "injected stall");
    }
  }

  // Nothing a device may still run is destroyed under it (see kTeardownNs).
  ~PipelineExecutor() override {
    bool idle = true;
    try {
      if (stall_) stall_->signal(1);  // the injected stall ends: the device answers again
    } catch (...) {
      idle = false;
    }
    for (Member& m : members_) {
      try {
        idle = m.progress->wait_for(m.done_value, std::max(m.dev->timeout_ns(), kTeardownNs)) && idle;
      } catch (...) {
        idle = false;
      }
    }
    if (!idle) {
      (void)new std::vector<Member>(std::move(members_));
      (void)stall_.release();
    }
  }

  void begin(uint32_t tokens) override {
    tokens_ = tokens;
    fresh_ = true;
    for (Member& m : members_) {
      m.sends = false;
      m.at = 0;
      m.stall_segment = -1;
      m.segments[0]->begin();
      m.clock->start(*m.segments[0], 0);
    }
  }
  vk::CommandBuffer& cb(size_t d) override { return *members_[d].segments[members_[d].at]; }
  Slice partial(size_t d, uint32_t) override { return {&members_[d].partial, 0}; }
  bool sums_locally(size_t) const override { return true; }
  bool holds_residual(size_t) const override { return true; }  // its sums are its own
  Slice reduce(size_t d, uint32_t k, bool wrote) override {
    Member& m = members_[d];
    vk::CommandBuffer& seg = *m.segments[m.at];
    if (!wrote) seg.fill(m.partial, 0, bytes(), 0);
    if (stall_ && o_.stall->first == d && o_.stall->second == k) m.stall_segment = static_cast<int>(m.at);
    if ((k + 1) % stride_ == 0 && m.at + 1 < m.segments.size()) {  // a new segment: a progress mark
      m.clock->stop(seg, m.at);
      seg.end();
      m.segments[++m.at]->begin();  // the queue orders the segments; the barrier below orders within one
      m.clock->start(*m.segments[m.at], m.at);
    }
    cb(d).barrier();  // the partial is complete before it is read as the sum
    return {&m.partial, 0};
  }
  void receive(size_t d, const vk::Buffer& x) override {
    Member& m = members_.at(d);
    if (d == 0 || !m.inbox) throw std::logic_error("pipeline executor: device " + std::to_string(d) + " has no sender");
    // The host wrote the inbox before this step's submit (covered by vkQueueSubmit's host
    // write ordering guarantee).
    cb(d).copy(m.inbox, 0, x, 0, bytes());
    cb(d).barrier();  // the hidden state is in x before the first layer reads it
  }
  void send(size_t d, const vk::Buffer& x) override {
    Member& m = members_.at(d);
    if (d + 1 >= members_.size()) return;  // the last device: nobody follows
    cb(d).copy(x, 0, m.outbox, 0, bytes());
    m.sends = true;
  }
  void end() override {
    for (Member& m : members_) {
      m.segments[m.at]->barrier_to_host();  // the host reads the outbox and logits after the last signal
      m.clock->stop(*m.segments[m.at], m.at);
      m.segments[m.at]->end();
    }
  }
  void run_step() override {
    for (size_t d = 0; d < members_.size(); ++d) {
      Member& m = members_[d];
      const uint64_t base = m.done_value;
      std::vector<vk::Device::TimelinePoint> signals(m.at + 1);
      const vk::Device::TimelinePoint stalled{stall_.get(), 1};
      std::vector<vk::Device::Batch> batches(m.at + 1);
      for (uint32_t j = 0; j <= m.at; ++j) {
        signals[j] = {m.progress.get(), base + j + 1};
        const bool stop = static_cast<int>(j) == m.stall_segment;
        batches[j] = {m.segments[j].get(), stop ? std::span(&stalled, 1) : std::span<const vk::Device::TimelinePoint>(),
                      std::span(&signals[j], 1)};
      }
      m.dev->submit(batches);
      m.done_value = base + m.at + 1;  // after the submit: the destructor waits for it
      wait_progressing(m, base);
      ++host_waits_;
      if (m.sends) std::memcpy(members_[d + 1].inbox.mapped(), m.outbox.mapped(), bytes());
    }
  }
  void collect_profile() override {
    for (Member& m : members_)
      for (uint32_t j = 0; j <= m.at; ++j) m.segments[j]->collect_profile();
  }
  uint64_t host_waits() const override { return host_waits_; }
  size_t n_devices() const override { return members_.size(); }
  vk::Device& device(size_t d) const override { return *members_[d].dev; }
  uint32_t step_tokens() const override { return tokens_; }
  std::optional<uint64_t> step_busy_ns(size_t d) override { return members_[d].clock->busy_ns(members_[d].at + 1); }

 private:
  static constexpr uint32_t kSegments = 8;  // progress marks per step (about)
  struct Member {
    vk::Device* dev = nullptr;
    vk::Buffer partial;  // [max_tokens][width] the local sum of a reduce point
    vk::Buffer inbox;    // [max_tokens][width] host-visible: the hidden state received
    vk::Buffer outbox;   // [max_tokens][width] host-visible: the hidden state sent
    std::vector<std::unique_ptr<vk::CommandBuffer>> segments;
    uint32_t at = 0;         // the segment being recorded; after end(), the last one
    int stall_segment = -1;  // the segment that waits for the injected stall
    std::unique_ptr<SegmentClock> clock;     // timestamps around each segment
    std::unique_ptr<vk::Timeline> progress;  // + 1 per segment run
    uint64_t done_value = 0;                 // its value when the last submitted step is done
    bool sends = false;
  };
  uint64_t bytes() const { return uint64_t(tokens_) * o_.width * 4; }

  // Waits for m's step for as long as it makes progress (vkdevice/watchdog.h).
  void wait_progressing(Member& m, uint64_t base) {
    if (m.progress->wait_progressing(m.done_value)) return;
    const uint64_t at = m.progress->value();
    throw vk::TimeoutError(m.dev->label() + " stopped making progress in a forward pass step: segment " +
                               std::to_string(at - base + 1) + " of " + std::to_string(m.done_value - base) +
                               " (reduce points " + std::to_string((at - base) * stride_) + ".." +
                               std::to_string(std::min<uint64_t>((at - base + 1) * stride_, o_.max_points) - 1) +
                               ") did not finish for " + std::to_string(m.dev->timeout_ns() / 1'000'000) +
                               " ms; a slower device is waited for as long as it progresses, and CHORUS_TIMEOUT_MS "
                               "sets how long no progress is tolerated",
                           VK_TIMEOUT);
  }

  ExecutorOptions o_;
  uint32_t stride_;  // reduce points per segment
  uint32_t tokens_ = 0;
  uint64_t host_waits_ = 0;
  std::unique_ptr<vk::Timeline> stall_;  // options.stall's timeline (signalled by the destructor)
  std::vector<Member> members_;
};

// Every device works on every layer; the partials meet through the collective.
class TensorExecutor final : public StepExecutor {
 public:
  TensorExecutor(std::vector<vk::Device*> devices, const ExecutorOptions& o) : o_(o) {
    CollectiveOptions co;
    co.max_points = o.max_points;
    co.max_floats = o.max_tokens * o.width;
    co.ring = 2;
    co.memory = o.memory;
    co.serialise = o.serialise;
    co.stall = o.stall;
    coll_ = std::make_unique<Collective>(devices, co);
    members_.resize(devices.size());
    for (size_t d = 0; d < devices.size(); ++d) {
      for (uint32_t j = 0; j <= o.max_points; ++j)
        members_[d].segments.push_back(std::make_unique<vk::CommandBuffer>(*devices[d]));
      members_[d].clock = std::make_unique<SegmentClock>(*devices[d], o.max_points + 1);
    }
  }

  // The collective drains the devices after a failure; if one may still run segments, the
  // segments are left alive with it (destroying them in use is undefined behaviour).
  ~TensorExecutor() override {
    if (coll_->abandoned()) {
      (void)new std::vector<Member>(std::move(members_));
      (void)coll_.release();
    }
  }

  void begin(uint32_t tokens) override {
    tokens_ = tokens;
    fresh_ = true;
    for (Member& m : members_) {
      m.at = 0;
      m.segments[0]->begin();
      m.clock->start(*m.segments[0], 0);
    }
  }
  vk::CommandBuffer& cb(size_t d) override { return *members_[d].segments[members_[d].at]; }
  Slice partial(size_t d, uint32_t k) override { return {&coll_->partials(d), coll_->partial_offset(d, k)}; }
  bool sums_locally(size_t) const override { return false; }
  bool holds_residual(size_t d) const override { return d == 0; }  // Collective::reduce starts from device 0's
  Slice reduce(size_t d, uint32_t k, bool wrote) override {
    Member& m = members_[d];
    if (k != m.at || k >= o_.max_points)
      throw std::logic_error("tensor executor: reduce point " + std::to_string(k) + " out of order on device " +
                             std::to_string(d));
    vk::CommandBuffer& seg = *m.segments[m.at];
    if (!wrote) seg.fill(coll_->partials(d), coll_->partial_offset(d, k), bytes(), 0);  // adds nothing
    Collective::record_publish(seg);  // the partial is visible to the proxy
    m.clock->stop(seg, m.at);
    seg.end();
    vk::CommandBuffer& next = *m.segments[++m.at];
    next.begin();
    m.clock->start(next, m.at);
    Collective::record_acquire(next);  // the proxy's sum is visible before it is read
    return {&coll_->results(d), coll_->result_offset(d, k)};
  }
  void receive(size_t, const vk::Buffer&) override {
    throw std::logic_error("tensor executor: every device embeds; nothing is handed off");
  }
  void send(size_t, const vk::Buffer&) override {}  // every device keeps the hidden state
  void end() override {
    for (size_t d = 0; d < members_.size(); ++d) {
      Member& m = members_[d];
      if (m.at != members_[0].at)
        throw std::logic_error("tensor executor: device " + std::to_string(d) + " recorded " + std::to_string(m.at) +
                               " reduce points, device 0 " + std::to_string(members_[0].at));
      m.segments[m.at]->barrier_to_host();  // the host reads logits after the step's end
      m.clock->stop(*m.segments[m.at], m.at);
      m.segments[m.at]->end();
    }
    points_ = members_[0].at;
  }
  void run_step() override {
    std::vector<std::vector<Collective::Segment>> segments(members_.size());
    for (size_t d = 0; d < members_.size(); ++d)
      for (uint32_t j = 0; j <= points_; ++j) segments[d].push_back(Collective::Segment{members_[d].segments[j].get()});
    const std::vector<uint32_t> floats(points_, tokens_ * o_.width);
    coll_->wait(coll_->submit(segments, floats));
    ++host_waits_;
  }
  void collect_profile() override {
    for (Member& m : members_)
      for (uint32_t j = 0; j <= points_; ++j) m.segments[j]->collect_profile();
  }
  uint64_t host_waits() const override { return host_waits_; }
  std::optional<CollectiveStats> collective_stats() const override { return coll_->stats(); }
  size_t n_devices() const override { return members_.size(); }
  vk::Device& device(size_t d) const override { return coll_->device(d); }
  uint32_t step_tokens() const override { return tokens_; }
  std::optional<uint64_t> step_busy_ns(size_t d) override { return members_[d].clock->busy_ns(points_ + 1); }

 private:
  struct Member {
    std::vector<std::unique_ptr<vk::CommandBuffer>> segments;  // max_points + 1
    std::unique_ptr<SegmentClock> clock;                       // timestamps around each segment
    uint32_t at = 0;                                           // the segment being recorded
  };
  uint64_t bytes() const { return uint64_t(tokens_) * o_.width * 4; }

  ExecutorOptions o_;
  uint32_t tokens_ = 0;
  uint32_t points_ = 0;
  uint64_t host_waits_ = 0;
  // Declared before the collective: its drain must run while the segments still exist.
  std::vector<Member> members_;
  std::unique_ptr<Collective> coll_;
};

// Groups of devices one after another over the layers, a tensor split (or one device) inside
// each: one executor per group, and the hidden state handed from a group's first device to
// every device of the next through host memory between the groups' steps.
class HybridExecutor final : public StepExecutor {
 public:
  // `groups`: the group of each device (0, 1, 2 ...); `first_point`: each group's first reduce
  // point (twice its first layer); `points`: its reduce points.
  HybridExecutor(const std::vector<vk::Device*>& devices, const std::vector<uint32_t>& groups,
                 const std::vector<uint32_t>& first_point, const std::vector<uint32_t>& points, const ExecutorOptions& o)
      : o_(o) {
    for (size_t d = 0; d < devices.size(); ++d) {
      if (groups[d] == groups_.size()) groups_.emplace_back();
      Group& g = groups_.back();
      where_.push_back({groups_.size() - 1, g.members.size()});
      g.members.push_back(d);
      g.devices.push_back(devices[d]);
    }
    const uint64_t bytes = uint64_t(o.max_tokens) * o.width * 4;
    for (size_t gi = 0; gi < groups_.size(); ++gi) {
      Group& g = groups_[gi];
      g.first_point = first_point[gi];
      ExecutorOptions go = o;
      go.max_points = std::max<uint32_t>(1, points[gi]);
      go.stall.reset();
      if (o.stall && where_.at(o.stall->first).first == gi && o.stall->second >= g.first_point &&
          o.stall->second < g.first_point + go.max_points)
        go.stall = std::make_pair(static_cast<uint32_t>(where_[o.stall->first].second), o.stall->second - g.first_point);
      if (g.devices.size() > 1)
        g.exec = std::make_unique<TensorExecutor>(g.devices, go);
      else
        g.exec = std::make_unique<PipelineExecutor>(g.devices, go);
      all_.insert(all_.end(), g.devices.begin(), g.devices.end());
      for (vk::Device* dev : g.devices) g.inbox.push_back(gi > 0 ? dev->create_buffer(bytes, vk::BufferKind::Host, kScratch) : vk::Buffer());
      if (gi + 1 < groups_.size()) g.outbox = g.devices[0]->create_buffer(bytes, vk::BufferKind::Host, kScratch);
    }
  }

  void begin(uint32_t tokens) override {
    tokens_ = tokens;
    fresh_ = true;
    for (Group& g : groups_) g.exec->begin(tokens);
  }
  vk::CommandBuffer& cb(size_t d) override { return group(d).exec->cb(where_[d].second); }
  Slice partial(size_t d, uint32_t k) override { return group(d).exec->partial(where_[d].second, local(d, k)); }
  Slice reduce(size_t d, uint32_t k, bool wrote) override { return group(d).exec->reduce(where_[d].second, local(d, k), wrote); }
  bool sums_locally(size_t d) const override { return group(d).exec->sums_locally(where_[d].second); }
  bool holds_residual(size_t d) const override { return group(d).exec->holds_residual(where_[d].second); }
  void receive(size_t d, const vk::Buffer& x) override {
    const Group& g = group(d);
    if (where_[d].first == 0) throw std::logic_error("hybrid executor: the first group embeds; nothing is handed to it");
    // The host wrote the inbox before this group's submit (vkQueueSubmit's host write ordering).
    cb(d).copy(g.inbox[where_[d].second], 0, x, 0, bytes());
    cb(d).barrier();  // the hidden state is in x before the group's first layer reads it
  }
  void send(size_t d, const vk::Buffer& x) override {
    Group& g = group(d);
    if (where_[d].first + 1 == groups_.size() || where_[d].second != 0) return;  // the group's first device hands on
    cb(d).copy(x, 0, g.outbox, 0, bytes());
  }
  void end() override {
    for (Group& g : groups_) g.exec->end();  // ends with a barrier to the host: the outbox is readable after the wait
  }
  void run_step() override {
    for (size_t gi = 0; gi < groups_.size(); ++gi) {
      groups_[gi].exec->run_step();
      if (gi + 1 < groups_.size())
        for (vk::Buffer& in : groups_[gi + 1].inbox) std::memcpy(in.mapped(), groups_[gi].outbox.mapped(), bytes());
    }
  }
  void collect_profile() override {
    for (Group& g : groups_) g.exec->collect_profile();
  }
  uint64_t host_waits() const override {
    uint64_t n = 0;
    for (const Group& g : groups_) n += g.exec->host_waits();
    return n;
  }
  size_t n_devices() const override { return all_.size(); }
  vk::Device& device(size_t d) const override { return *all_[d]; }
  uint32_t step_tokens() const override { return tokens_; }
  std::optional<uint64_t> step_busy_ns(size_t d) override { return group(d).exec->step_busy_ns(where_[d].second); }

  // The groups' collectives together, per device in the executor's device order.
  std::optional<CollectiveStats> collective_stats() const override {
    std::optional<CollectiveStats> all;
    for (const Group& g : groups_) {
      const std::optional<CollectiveStats> s = g.exec->collective_stats();
      if (!s) continue;
      if (!all) {
        all.emplace();
        all->device_wait_ns.assign(where_.size(), 0);
        all->device_last.assign(where_.size(), 0);
      }
      all->tokens = std::max(all->tokens, s->tokens);
      all->reduces += s->reduces;
      all->submits += s->submits;
      all->reduce_submits += s->reduce_submits;
      all->main_waits += s->main_waits;
      all->proxy_blocks += s->proxy_blocks;
      all->latency_ns.insert(all->latency_ns.end(), s->latency_ns.begin(), s->latency_ns.end());
      all->wait_ns.insert(all->wait_ns.end(), s->wait_ns.begin(), s->wait_ns.end());
      all->sum_ns.insert(all->sum_ns.end(), s->sum_ns.begin(), s->sum_ns.end());
      for (size_t i = 0; i < g.members.size(); ++i) {
        if (i < s->device_wait_ns.size()) all->device_wait_ns[g.members[i]] += s->device_wait_ns[i];
        if (i < s->device_last.size()) all->device_last[g.members[i]] += s->device_last[i];
      }
    }
    return all;
  }

 private:
  struct Group {
    std::vector<size_t> members;        // executor device indices
    std::vector<vk::Device*> devices;
    std::unique_ptr<StepExecutor> exec;
    uint32_t first_point = 0;
    std::vector<vk::Buffer> inbox;      // per member (groups after the first), host-visible
    vk::Buffer outbox;                  // the first member's (groups before the last), host-visible
  };
  Group& group(size_t d) { return groups_[where_.at(d).first]; }
  const Group& group(size_t d) const { return groups_[where_.at(d).first]; }
  uint32_t local(size_t d, uint32_t k) const {
    const Group& g = groups_[where_.at(d).first];
    if (k < g.first_point) throw std::logic_error("hybrid executor: reduce point " + std::to_string(k) + " is before device " +
                                                  std::to_string(d) + "'s group's layers");
    return k - g.first_point;
  }
  uint64_t bytes() const { return uint64_t(tokens_) * o_.width * 4; }

  ExecutorOptions o_;
  uint32_t tokens_ = 0;
  std::vector<std::pair<size_t, size_t>> where_;  // device -> (group, index in the group)
  std::vector<vk::Device*> all_;                  // the devices, in the executor's order
  std::vector<Group> groups_;
};

}  // namespace

std::unique_ptr<Executor> Executor::create(const Plan& plan, std::vector<vk::Device*> devices,
                                           const ExecutorOptions& options) {
  if (devices.empty()) throw std::invalid_argument("an executor needs at least one device");
  if (options.max_tokens == 0 || options.width == 0 || options.max_points == 0)
    throw std::invalid_argument("an executor needs max_tokens, width and max_points above 0");
  if (plan.mode == SplitMode::tensor && devices.size() > 1)
    return std::make_unique<TensorExecutor>(std::move(devices), options);
  if (plan.mode == SplitMode::hybrid) {
    // The executor's devices are the plan's devices holding something, in order.
    std::vector<uint32_t> groups, first_point, points;
    for (uint32_t d = 0; d < plan.devices.size(); ++d) {
      const DeviceShard& s = plan.devices[d];
      if (s.empty()) continue;
      const uint32_t g = plan.groups.at(d);
      if (groups.empty() || g != groups.back()) {
        first_point.push_back(static_cast<uint32_t>(2 * s.layers.begin));
        points.push_back(static_cast<uint32_t>(2 * s.layers.size()));
      }
      groups.push_back(g);
    }
    if (groups.size() != devices.size())
      throw std::invalid_argument("hybrid executor: " + std::to_string(devices.size()) + " devices for a plan with " +
                                  std::to_string(groups.size()) + " holding anything");
    // Renumber the groups that hold anything 0, 1, 2 ...
    std::vector<uint32_t> renumbered(groups.size());
    for (size_t d = 0; d < groups.size(); ++d) renumbered[d] = d == 0 ? 0 : renumbered[d - 1] + (groups[d] != groups[d - 1]);
    return std::make_unique<HybridExecutor>(devices, renumbered, first_point, points, options);
  }
  return std::make_unique<PipelineExecutor>(std::move(devices), options);
}

}  // namespace chorus::split
