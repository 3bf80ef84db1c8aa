// The host-mediated all-reduce (split/collective.h) on 2 and 3 logical devices of the test
// GPU: many reduce points in one submit per device, exact sums in device order, the
// serialise-everything mode, the counters, and a device that stops answering.
//
// Every device d runs, per reduce point k, partial = x * w_d + (d + 1) (two kernels), where x
// is the sum of point k - 1 read straight from the collective's result slot (or, at point 0,
// the device's state); the last segment copies the last sum back into the state, so the next
// token continues from it. The host reference does the same float operations in the same
// order, so every comparison is exact.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "engine/ops/kernels.h"
#include "engine/ops/ops.h"
#include "split/collective.h"
#include "tests/gpu.h"
#include "vkdevice/host_memory.h"

namespace chorus {
namespace {

using split::Collective;
using split::CollectiveMemory;
using split::CollectiveOptions;

struct DeviceRig {
  vk::Device* dev = nullptr;
  std::unique_ptr<ops::Kernels> kernels;
  vk::Buffer w;      // [n] per-device weights
  vk::Buffer c;      // [1] d + 1
  vk::Buffer state;  // [n] the running value; point 0 reads it, the last segment writes it
  std::vector<std::unique_ptr<vk::CommandBuffer>> cbs;  // [points + 1] segments
};

class Rig {
 public:
  Rig(int n_devices, uint32_t n, uint32_t points, const CollectiveOptions& options, uint64_t seed = 1)
      : n_(n), points_(points), state_(test::random_floats(n, seed)) {
    std::vector<vk::Device*> devs;
    for (int d = 0; d < n_devices; ++d) devs.push_back(&test::device(d));
    coll_ = std::make_unique<Collective>(devs, options);
    rigs_.resize(devs.size());
    for (size_t d = 0; d < devs.size(); ++d) {
      DeviceRig& r = rigs_[d];
      r.dev = devs[d];
      r.kernels = std::make_unique<ops::Kernels>(*r.dev);
      std::vector<float> w = test::random_floats(n, seed * 100 + d, 0.3f);
      w_.push_back(w);
      r.w = test::make_buffer(*r.dev, w, "test w");
      r.c = test::make_buffer(*r.dev, std::vector<float>{float(d + 1)}, "test c");
      r.state = test::make_buffer(*r.dev, state_, "test state");
    }
    record();
  }

  void record() {
    for (size_t d = 0; d < rigs_.size(); ++d) {
      DeviceRig& r = rigs_[d];
      r.cbs.clear();
      const vk::Buffer& res = coll_->results(d);
      const vk::Buffer& par = coll_->partials(d);
      for (uint32_t j = 0; j <= points_; ++j) {
        auto cb = std::make_unique<vk::CommandBuffer>(*r.dev);
        cb->begin();
        if (j > 0) Collective::record_acquire(*cb);  // reads the proxy's sum of point j - 1
        if (j < points_) {
          const vk::Buffer& x = j == 0 ? r.state : res;
          const uint64_t x_off = j == 0 ? 0 : coll_->result_offset(d, j - 1);
          const uint64_t p_off = coll_->partial_offset(d, j);
          ops::mul(*r.kernels, *cb, x, x_off, r.w, 0, par, p_off, n_, n_);
          cb->barrier();  // add reads what mul wrote
          ops::add(*r.kernels, *cb, par, p_off, r.c, 0, par, p_off, n_, 1);
          Collective::record_publish(*cb);  // the proxy reads the partial
        } else {
          cb->copy(res, coll_->result_offset(d, points_ - 1), r.state, 0, uint64_t(n_) * 4);
          cb->barrier_to_host();  // the test reads the state after wait()
        }
        cb->end();
        r.cbs.push_back(std::move(cb));
      }
    }
  }

  // Device d's segments, with an optional extra wait on segment `stall_segment`.
  std::vector<std::vector<Collective::Segment>> segments(int stall_device = -1, uint32_t stall_segment = 0,
                                                         std::span<const Collective::TimelinePoint> stall = {}) const {
    std::vector<std::vector<Collective::Segment>> s(rigs_.size());
    for (size_t d = 0; d < rigs_.size(); ++d)
      for (uint32_t j = 0; j <= points_; ++j) {
        Collective::Segment seg{rigs_[d].cbs[j].get()};
        if (int(d) == stall_device && j == stall_segment) seg.waits = stall;
        s[d].push_back(seg);
      }
    return s;
  }

  std::vector<uint32_t> sizes() const { return std::vector<uint32_t>(points_, n_); }

  // One token on the GPU.
  void run_token() {
    const auto segs = segments();
    const auto sz = sizes();
    coll_->wait(coll_->submit(segs, sz));
  }

  // One token on the host; returns the sum of every point.
  std::vector<std::vector<float>> reference_token() {
    std::vector<std::vector<float>> sums;
    std::vector<float> x = state_;
    for (uint32_t k = 0; k < points_; ++k) {
      std::vector<float> sum(n_);
      for (size_t d = 0; d < rigs_.size(); ++d)
        for (uint32_t i = 0; i < n_; ++i) {
          const float prod = x[i] * w_[d][i];
          const float partial = prod + float(d + 1);
          sum[i] = d == 0 ? partial : sum[i] + partial;
        }
      x = sum;
      sums.push_back(sum);
    }
    state_ = x;
    return sums;
  }

  std::vector<float> device_state(size_t d) { return rigs_[d].dev->download<float>(rigs_[d].state, n_); }

  Collective& coll() { return *coll_; }
  DeviceRig& rig(size_t d) { return rigs_[d]; }
  uint32_t n() const { return n_; }
  uint32_t points() const { return points_; }

 private:
  uint32_t n_, points_;
  std::vector<float> state_;  // the host reference's state
  std::vector<std::vector<float>> w_;
  std::vector<DeviceRig> rigs_;
  std::unique_ptr<Collective> coll_;  // destroyed first: it waits for work that uses the rigs
};

CollectiveOptions options(CollectiveMemory memory, uint32_t points, uint32_t floats) {
  CollectiveOptions o;
  o.memory = memory;
  o.max_points = points;
  o.max_floats = floats;
  o.timeout_ns = 20'000'000'000ull;  // lavapipe under validation on a busy 2-core machine
  return o;
}

bool can_import() {
  for (int d = 0; d < 3; ++d)
    if (!vk::host_import_unavailable(test::device(d)).empty()) return false;
  return true;
}

const char* memory_name(CollectiveMemory m) {
  return m == CollectiveMemory::Imported ? "imported" : m == CollectiveMemory::PerDevice ? "per_device" : "auto";
}

// ---- sums ----------------------------------------------------------------------------------

struct SumCase {
  int devices;
  uint32_t floats;
  CollectiveMemory memory;
};

class CollectiveSums : public test::GpuTestP<SumCase> {};

TEST_P(CollectiveSums, EveryDeviceGetsTheDeviceOrderSumAtEveryReducePointOfEveryToken) {
  const SumCase c = GetParam();
  if (c.memory == CollectiveMemory::Imported && !can_import()) GTEST_SKIP() << "the test GPU cannot import host memory";
  const uint32_t points = 32;
  Rig rig(c.devices, c.floats, points, options(c.memory, points, c.floats), 7 + c.floats);
  EXPECT_EQ(rig.coll().imported(), c.memory == CollectiveMemory::Imported);
  for (int token = 0; token < 2; ++token) {
    rig.run_token();
    const auto sums = rig.reference_token();
    for (uint32_t k = 0; k < points; ++k) {
      const auto got = rig.coll().host_result(k, c.floats);
      ASSERT_EQ(std::vector<float>(got.begin(), got.end()), sums[k]) << "token " << token << ", reduce point " << k;
    }
    for (int d = 0; d < c.devices; ++d)
      ASSERT_EQ(rig.device_state(d), sums.back()) << "token " << token << ", logical device " << d;
  }
}

INSTANTIATE_TEST_SUITE_P(
    DevicesSizesMemory, CollectiveSums,
    ::testing::Values(SumCase{2, 1, CollectiveMemory::Imported}, SumCase{2, 1000, CollectiveMemory::Imported},
                      SumCase{2, 16384, CollectiveMemory::Imported}, SumCase{3, 1, CollectiveMemory::Imported},
                      SumCase{3, 4097, CollectiveMemory::Imported}, SumCase{3, 16384, CollectiveMemory::Imported},
                      SumCase{2, 7, CollectiveMemory::PerDevice}, SumCase{2, 16384, CollectiveMemory::PerDevice},
                      SumCase{3, 1, CollectiveMemory::PerDevice}, SumCase{3, 16384, CollectiveMemory::PerDevice}),
    [](const ::testing::TestParamInfo<SumCase>& i) {
      return std::to_string(i.param.devices) + "_devices_" + std::to_string(i.param.floats) + "_floats_" +
             memory_name(i.param.memory);
    });

using CollectiveTest = test::GpuTest;

TEST_F(CollectiveTest, AutoSharesImportedHostMemoryWhenEveryDeviceAllowsIt) {
  Rig rig(2, 16, 2, options(CollectiveMemory::Auto, 2, 16));
  EXPECT_EQ(rig.coll().imported(), can_import());
  rig.run_token();
  EXPECT_EQ(rig.device_state(1), rig.reference_token().back());
}

TEST_F(CollectiveTest, APollingAndABlockingProxyGiveTheSameSums) {
  for (uint64_t spin_ns : {uint64_t(0), uint64_t(5'000'000)}) {
    CollectiveOptions o = options(CollectiveMemory::Auto, 8, 333);
    o.spin_ns = spin_ns;
    Rig rig(3, 333, 8, o, 5);
    for (int token = 0; token < 2; ++token) {
      rig.run_token();
      const auto sums = rig.reference_token();
      ASSERT_EQ(rig.device_state(2), sums.back()) << "spin " << spin_ns << " ns, token " << token;
    }
  }
}

TEST_F(CollectiveTest, SerialiseEverythingGivesBitIdenticalResultsToTheNormalMode) {
  for (CollectiveMemory memory : {CollectiveMemory::Auto, CollectiveMemory::PerDevice}) {
    std::vector<std::vector<float>> states[2];
    for (int serialise = 0; serialise < 2; ++serialise) {
      CollectiveOptions o = options(memory, 16, 1000);
      o.serialise = serialise == 1;
      Rig rig(3, 1000, 16, o, 99);
      for (int token = 0; token < 2; ++token) {
        rig.run_token();
        for (int d = 0; d < 3; ++d) states[serialise].push_back(rig.device_state(d));
      }
      if (serialise) {
        // Serialised: one submit and one main-thread wait per segment and device, plus a wait per point.
        const auto st = rig.coll().stats();
        EXPECT_EQ(st.submits, 2u * 3 * 17);
      }
    }
    EXPECT_EQ(states[0], states[1]) << memory_name(memory);
  }
}

TEST_F(CollectiveTest, OneSubmitPerDevicePerTokenNoneForAReduceAndOneMainThreadWaitPerToken) {
  const uint32_t points = 32, tokens = 3;
  Rig rig(2, 4096, points, options(CollectiveMemory::Auto, points, 4096));
  uint64_t submits_before[2], waits_before[2];
  for (int d = 0; d < 2; ++d) {
    submits_before[d] = rig.rig(d).dev->counters().submits.load();
    waits_before[d] = rig.rig(d).dev->counters().host_waits.load();
  }
  for (uint32_t t = 0; t < tokens; ++t) rig.run_token();
  const auto st = rig.coll().stats();
  for (int d = 0; d < 2; ++d) {
    EXPECT_EQ(rig.rig(d).dev->counters().submits.load() - submits_before[d], tokens) << "vkQueueSubmit calls, device " << d;
    EXPECT_EQ(rig.rig(d).dev->counters().host_waits.load() - waits_before[d], 0u) << "host waits on device " << d;
  }
  EXPECT_EQ(st.tokens, tokens);
  EXPECT_EQ(st.submits, 2u * tokens);
  EXPECT_EQ(st.reduces, uint64_t(points) * tokens);
  EXPECT_EQ(st.reduce_submits, 0u);
  EXPECT_EQ(st.main_waits, tokens);
  EXPECT_EQ(st.latency_ns.size(), size_t(points) * tokens);
  EXPECT_GT(st.latency_us(0.5), 0.0);
  EXPECT_GE(st.latency_us(0.99), st.latency_us(0.5));
}

TEST_F(CollectiveTest, TimelinesOfEveryDeviceMeetAtEachTokensEndValue) {
  Rig rig(3, 8, 5, options(CollectiveMemory::Auto, 5, 8));
  rig.run_token();
  EXPECT_EQ(rig.coll().last_value(), 6u);  // points 1..5, end 6
  rig.run_token();
  EXPECT_EQ(rig.coll().last_value(), 12u);
  for (size_t d = 0; d < 3; ++d) {
    EXPECT_EQ(vk::timeline_value(*rig.rig(d).dev, rig.coll().partials_ready(d)), 12u);
    EXPECT_EQ(vk::timeline_value(*rig.rig(d).dev, rig.coll().reduced(d)), 12u);
  }
}

TEST_F(CollectiveTest, DestroyingWithTokensInFlightWaitsForThemInsteadOfHanging) {
  Rig rig(2, 256, 8, options(CollectiveMemory::Auto, 8, 256));
  const auto segs = rig.segments();
  const auto sz = rig.sizes();
  rig.coll().submit(segs, sz);
  // No wait: ~Rig destroys the collective (which waits for the token) before the command
  // buffers. (Submitting the same command buffers again before wait() would be an error:
  // they are still pending.)
}

TEST_F(CollectiveTest, ArgumentsThatDoNotMatchTheDevicesAreRejected) {
  Rig rig(2, 4, 2, options(CollectiveMemory::Auto, 2, 4));
  auto segs = rig.segments();
  const auto sz = rig.sizes();
  segs[1].pop_back();
  EXPECT_THROW(rig.coll().submit(segs, sz), std::invalid_argument);
  const std::vector<uint32_t> too_big = {4, 5};
  EXPECT_THROW(rig.coll().submit(rig.segments(), too_big), std::invalid_argument);
  rig.run_token();  // still usable
}

// ---- faults --------------------------------------------------------------------------------

class CollectiveFault : public test::GpuTestP<CollectiveMemory> {};

TEST_P(CollectiveFault, AStalledDeviceMakesTheProxyTimeOutNamingTheDeviceAndReducePoint) {
  if (GetParam() == CollectiveMemory::Imported && !can_import()) GTEST_SKIP() << "the test GPU cannot import host memory";
  vk::Device& dev1 = test::device(1);
  const uint64_t before = dev1.allocator().in_use("collective");
  vk::Timeline blocker(dev1, "test blocker");  // nobody signals it until the error is seen
  {
    CollectiveOptions o = options(GetParam(), 4, 64);
    o.timeout_ns = 300'000'000;
    Rig rig(2, 64, 4, o);
    const Collective::TimelinePoint stall{&blocker, 1};
    const auto segs = rig.segments(1, 2, std::span(&stall, 1));  // device 1 never delivers point 2
    const auto sz = rig.sizes();
    const auto t0 = std::chrono::steady_clock::now();
    const uint64_t token = rig.coll().submit(segs, sz);
    try {
      rig.coll().wait(token);
      FAIL() << "wait() returned although logical device 1 never delivered reduce point 2";
    } catch (const vk::TimeoutError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("logical device 1"), std::string::npos) << what;
      EXPECT_NE(what.find("reduce point 2 of token 0"), std::string::npos) << what;
      EXPECT_NE(what.find("300 ms"), std::string::npos) << what;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(seconds, 5.0) << "the timeout is 300 ms";
    EXPECT_THROW(rig.coll().check(), vk::TimeoutError);
    EXPECT_THROW(rig.coll().submit(segs, sz), vk::TimeoutError) << "a failed collective refuses new work";
    blocker.signal(1);  // the device comes back late: the collective can run it out and release
  }
  EXPECT_EQ(dev1.allocator().in_use("collective"), before) << "the collective's memory was released";
}

INSTANTIATE_TEST_SUITE_P(Memory, CollectiveFault,
                         ::testing::Values(CollectiveMemory::Imported, CollectiveMemory::PerDevice),
                         [](const ::testing::TestParamInfo<CollectiveMemory>& i) { return memory_name(i.param); });

}  // namespace
}  // namespace chorus
