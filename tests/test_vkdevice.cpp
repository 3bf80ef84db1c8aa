// The device layer on the test GPU: survey, several logical devices on one physical device,
// memory (sub-allocation, budget, windows, staging path), timelines, pipelines, caps.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <map>
#include <numeric>
#include <optional>
#include <sys/stat.h>
#include <unistd.h>

#include "shaders/registry.h"
#include "tests/gpu.h"
#include "vkdevice/pipeline.h"

namespace chorus {
namespace {

using test::GpuTest;

TEST_F(GpuTest, SurveyListsTheTestDeviceAsUsableWithItsLimits) {
  const auto& d = test::instance().devices().at(test::test_device_index());
  EXPECT_TRUE(d.usable()) << d.reject_reason;
  EXPECT_FALSE(d.name.empty());
  EXPECT_FALSE(d.driver_name.empty());
  EXPECT_GT(d.max_storage_buffer_range, 0u);
  EXPECT_GT(d.max_memory_allocation_size, 0u);
  EXPECT_GT(d.subgroup_size, 0u);
  EXPECT_TRUE(d.timeline_semaphore);
  ASSERT_FALSE(d.heaps.empty());
  EXPECT_GT(d.device_local_bytes(), 0u);
}

TEST(CpuThreads, TheHostsCoresAreSharedOutAndOneCoreEachRunsOnTheSubmittingThread) {
  EXPECT_EQ(vk::cpu_threads_per_opening(2, 2), 0u);
  EXPECT_EQ(vk::cpu_threads_per_opening(3, 2), 0u);
  EXPECT_EQ(vk::cpu_threads_per_opening(2, 3), 0u);
  EXPECT_EQ(vk::cpu_threads_per_opening(2, 4), 2u);
  EXPECT_EQ(vk::cpu_threads_per_opening(3, 16), 5u);
  EXPECT_EQ(vk::cpu_threads_per_opening(0, 8), 8u);
}

// The instance sets LP_NUM_THREADS only while it is created, and never over the user's value.
TEST_F(GpuTest, AnInstanceWithCpuThreadsLeavesTheEnvironmentAsItFoundIt) {
  const char* had = std::getenv("LP_NUM_THREADS");
  const std::optional<std::string> saved = had ? std::optional<std::string>(had) : std::nullopt;
  ::unsetenv("LP_NUM_THREADS");
  {
    vk::InstanceOptions o;
    o.cpu_threads = 0;
    const vk::Instance inst(o);
    EXPECT_EQ(std::getenv("LP_NUM_THREADS"), nullptr);
    EXPECT_EQ(inst.cpu_threads(), std::optional<uint32_t>(0));
    EXPECT_FALSE(inst.devices().empty());
  }
  ::setenv("LP_NUM_THREADS", "1", 1);
  {
    vk::InstanceOptions o;
    o.cpu_threads = 0;
    const vk::Instance inst(o);
    ASSERT_NE(std::getenv("LP_NUM_THREADS"), nullptr);
    EXPECT_STREQ(std::getenv("LP_NUM_THREADS"), "1");
    EXPECT_EQ(inst.cpu_threads(), std::nullopt) << "the user's LP_NUM_THREADS wins";
  }
  if (saved) ::setenv("LP_NUM_THREADS", saved->c_str(), 1);
  else ::unsetenv("LP_NUM_THREADS");
}

TEST(DeviceSurvey, ADeviceWithoutTimelineSemaphoresIsRejectedWithTheReason) {
  vk::DeviceInfo d;
  d.api_version = VK_API_VERSION_1_3;
  d.push_descriptor = true;
  d.max_storage_buffer_range = 1u << 27;
  d.timeline_semaphore = false;
  EXPECT_NE(vk::reject_reason(d, true).find("timeline semaphores"), std::string::npos);
  d.timeline_semaphore = true;
  EXPECT_EQ(vk::reject_reason(d, true), "");
  EXPECT_NE(vk::reject_reason(d, false).find("compute queue"), std::string::npos);
  d.api_version = VK_API_VERSION_1_1;
  EXPECT_NE(vk::reject_reason(d, true).find("Vulkan 1.2 is required"), std::string::npos);
}

TEST_F(GpuTest, OnePhysicalDeviceOpensAsThreeIndependentLogicalDevices) {
  vk::Device& a = test::device(0);
  vk::Device& b = test::device(1);
  vk::Device& c = test::device(2);
  EXPECT_NE(a.handle(), b.handle());
  EXPECT_NE(b.handle(), c.handle());
  // Each has its own memory: a buffer on one does not count against another.
  const uint64_t before_b = b.allocator().in_use();
  vk::Buffer buf = a.create_buffer(1 << 20, vk::BufferKind::Device, "only-on-a");
  EXPECT_EQ(b.allocator().in_use(), before_b);
  EXPECT_GE(a.allocator().in_use("only-on-a"), 1u << 20);
}

TEST_F(GpuTest, UploadThenDownloadRoundTripsOnDirectAndStagingPaths) {
  for (bool staging : {false, true}) {
    vk::DeviceOptions o;
    o.physical_index = test::test_device_index();
    o.force_staging = staging;
    vk::Device dev(test::instance(), o);
    EXPECT_EQ(dev.uses_staging(), staging || !dev.info().unified_memory);
    std::vector<uint32_t> data(70001);
    std::iota(data.begin(), data.end(), 7u);
    vk::Buffer b = dev.create_buffer(data.size() * 4 + 64, vk::BufferKind::Device, "roundtrip");
    if (staging) {
      EXPECT_EQ(b.mapped(), nullptr) << "the forced discrete path must not map device buffers";
    }
    dev.upload(b, 16, std::as_bytes(std::span(data)));
    auto back = dev.download<uint32_t>(b, data.size(), 16);
    EXPECT_EQ(back, data) << (staging ? "staging path" : "direct path");
  }
}

TEST_F(GpuTest, SubAllocatorPacksSmallBuffersIntoOneBlockAndReusesFreedSpace) {
  vk::Device& dev = test::device(0);
  const uint64_t reserved0 = dev.allocator().reserved();
  std::vector<vk::Buffer> bufs;
  for (int i = 0; i < 64; ++i) bufs.push_back(dev.create_buffer(4096, vk::BufferKind::Device, "small"));
  const uint64_t reserved1 = dev.allocator().reserved();
  EXPECT_LE(reserved1 - reserved0, 256ull << 20) << "64 small buffers must share blocks";
  bufs.clear();
  EXPECT_EQ(dev.allocator().in_use("small"), 0u);
  for (int i = 0; i < 64; ++i) bufs.push_back(dev.create_buffer(4096, vk::BufferKind::Device, "small"));
  EXPECT_EQ(dev.allocator().reserved(), reserved1) << "freed space must be reused";
}

TEST_F(GpuTest, AllocationBeyondTheBudgetOverrideIsAClearError) {
  vk::DeviceOptions o;
  o.physical_index = test::test_device_index();
  o.memory_budget = 8ull << 20;  // pretend the device has 8 MiB
  vk::Device dev(test::instance(), o);
  vk::Buffer fits = dev.create_buffer(4ull << 20, vk::BufferKind::Device, "weights");
  try {
    vk::Buffer too_big = dev.create_buffer(6ull << 20, vk::BufferKind::Device, "kv cache");
    FAIL() << "an allocation beyond the budget succeeded";
  } catch (const vk::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("kv cache"), std::string::npos) << msg;
    EXPECT_NE(msg.find("budget of 8.0 MiB"), std::string::npos) << msg;
    EXPECT_NE(msg.find(dev.label()), std::string::npos) << msg;
  }
}

TEST_F(GpuTest, ABufferAboveTheDeviceLimitsIsRefusedBeforeVkCreateBufferWithItsPurposeAndTheLimit) {
  vk::Device& dev = test::device(0);
  const vk::DeviceInfo& info = dev.info();
  // One past the smallest limit that applies: a single VkBuffer, its single allocation.
  uint64_t limit = info.max_memory_allocation_size;
  if (info.max_buffer_size) limit = std::min(limit, info.max_buffer_size);
  limit = std::min(limit, dev.allocator().budget());
  const uint64_t reserved = dev.allocator().reserved();
  try {
    vk::Buffer b = dev.create_buffer(limit + 1, vk::BufferKind::Device, "scratch");
    FAIL() << "a buffer of " << limit + 1 << " bytes was created";
  } catch (const vk::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(dev.label() + ": buffer 'scratch' of "), std::string::npos) << m;
    EXPECT_NE(m.find("(" + std::to_string(limit + 1) + " bytes) exceeds the device's "), std::string::npos) << m;
    EXPECT_EQ(e.result(), VK_ERROR_OUT_OF_DEVICE_MEMORY);
  }
  EXPECT_EQ(dev.allocator().reserved(), reserved) << "memory was allocated for a refused buffer";
}

TEST_F(GpuTest, WindowsAlignTheOffsetDownAndGrowTheRangeToCoverTheData) {
  vk::Device& dev = test::device(0);
  vk::Buffer b = dev.create_buffer(1000, vk::BufferKind::Device, "w");
  const uint64_t align = dev.info().min_storage_buffer_offset_alignment;
  const vk::BufferWindow w = b.window(align + 6, 100);
  EXPECT_EQ(w.offset, align);
  EXPECT_EQ(w.skip, 6u);
  EXPECT_EQ(w.range, 108u) << "6 skipped + 100 bytes, rounded up to whole words";
  EXPECT_THROW(b.window(990, 20), vk::Error);
}

TEST_F(GpuTest, TimelineHostSignalIsSeenByHostWaitAndAStuckWaitTimesOutWithAnError) {
  vk::DeviceOptions o;
  o.physical_index = test::test_device_index();
  o.timeout_ns = 50'000'000;  // 50 ms
  vk::Device dev(test::instance(), o);
  vk::Timeline t(dev, "partials_ready");
  t.signal(3);
  EXPECT_EQ(t.value(), 3u);
  t.wait(3, "reduce point 0");
  try {
    t.wait(4, "reduce point 1");
    FAIL() << "a wait for a value nobody signals returned";
  } catch (const vk::TimeoutError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("reduce point 1"), std::string::npos) << msg;
    EXPECT_NE(msg.find("partials_ready"), std::string::npos) << msg;
  }
}

TEST_F(GpuTest, DeviceSubmissionWaitsForAHostSignalledTimelineValue) {
  vk::Device& dev = test::device(0);
  vk::Timeline gate(dev, "reduced");
  vk::Timeline done(dev, "done");
  vk::Buffer b = dev.create_buffer(256, vk::BufferKind::Device, "gated");
  vk::CommandBuffer cb(dev);
  cb.begin();
  cb.fill(b, 0, 256, 0xABCDu);
  cb.barrier_to_host();
  cb.end();
  const vk::Device::TimelinePoint wait{&gate, 1}, signal{&done, 1};
  dev.submit(cb, std::span(&wait, 1), std::span(&signal, 1));
  EXPECT_FALSE(done.wait_for(1, 20'000'000)) << "work ran before its wait was satisfied";
  gate.signal(1);
  done.wait(1, "the gated fill");
  EXPECT_EQ(dev.download<uint32_t>(b, 1)[0], 0xABCDu);
}

TEST_F(GpuTest, PipelineWithBrokenSpirvIsRejectedWithItsName) {
  vk::Device& dev = test::device(0);
  const uint32_t junk[3] = {1, 2, 3};
  try {
    vk::Pipeline p(dev, vk::PipelineDesc{"not-a-shader", junk, 1, 0, {}});
    FAIL() << "broken SPIR-V built a pipeline";
  } catch (const vk::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not-a-shader"), std::string::npos) << e.what();
  }
}

// A private XDG_CACHE_HOME with the pipeline cache enabled (the test suite disables it), for
// the life of the object; the directory is removed afterwards.
class ScopedCacheDir {
 public:
  explicit ScopedCacheDir(const std::string& name)
      : dir_(std::filesystem::temp_directory_path() / (name + "-" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(dir_);
    ::setenv("XDG_CACHE_HOME", dir_.c_str(), 1);
    if (const char* v = std::getenv("CHORUS_NO_PIPELINE_CACHE")) saved_no_cache_ = v;
    ::unsetenv("CHORUS_NO_PIPELINE_CACHE");
  }
  ~ScopedCacheDir() {
    ::unsetenv("XDG_CACHE_HOME");
    if (saved_no_cache_) ::setenv("CHORUS_NO_PIPELINE_CACHE", saved_no_cache_->c_str(), 1);
    std::filesystem::remove_all(dir_);
  }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  std::optional<std::string> saved_no_cache_;
};

TEST_F(GpuTest, PipelineCacheIsWrittenToTheXdgCacheDirectory) {
  const ScopedCacheDir scoped("chorus-cache-test");
  const auto& dir = scoped.dir();
  {
    vk::DeviceOptions o;
    o.physical_index = test::test_device_index();
    vk::Device dev(test::instance(), o);
    const shaders::Variant* v = shaders::select("fill_f32", 0);
    ASSERT_NE(v, nullptr);
    vk::Pipeline p(dev, vk::PipelineDesc{std::string(v->name), v->spirv(), 1, 12, {64}});
  }
  bool found = false;
  if (std::filesystem::exists(dir / "chorus"))
    for (const auto& e : std::filesystem::directory_iterator(dir / "chorus"))
      found |= e.path().filename().string().rfind("pipelines-", 0) == 0;
  EXPECT_TRUE(found) << "no pipeline cache file under " << dir;
}

TEST_F(GpuTest, ADirectoryOrFifoAtThePipelineCachePathNeitherFailsNorHangsADevice) {
  const ScopedCacheDir scoped("chorus-cache-bad");
  const auto& dir = scoped.dir();
  vk::DeviceOptions o;
  o.physical_index = test::test_device_index();
  // A first device writes the cache, which tells us its file name.
  { vk::Device dev(test::instance(), o); }
  std::filesystem::path cache;
  for (const auto& e : std::filesystem::directory_iterator(dir / "chorus")) cache = e.path();
  ASSERT_FALSE(cache.empty());
  // Each of these once failed the run (an unnamed basic_filebuf error) or blocked in open(2).
  std::filesystem::remove(cache);
  std::filesystem::create_directories(cache);
  EXPECT_NO_THROW({ vk::Device dev(test::instance(), o); });
  std::filesystem::remove_all(cache);
  ASSERT_EQ(::mkfifo(cache.c_str(), 0600), 0);
  EXPECT_NO_THROW({ vk::Device dev(test::instance(), o); });
}

TEST_F(GpuTest, ABadTimeoutVariableIsRefusedWhenTheDeviceOpens) {
  const char* old = std::getenv("CHORUS_TIMEOUT_MS");
  const std::string saved = old ? old : "";
  ::setenv("CHORUS_TIMEOUT_MS", "18446744073710", 1);  // once wrapped to 0.45 ms
  vk::DeviceOptions o;
  o.physical_index = test::test_device_index();
  try {
    vk::Device dev(test::instance(), o);
    ADD_FAILURE() << "CHORUS_TIMEOUT_MS=18446744073710 was accepted";
  } catch (const vk::Error& e) {
    EXPECT_NE(std::string(e.what()).find("CHORUS_TIMEOUT_MS is '18446744073710'"), std::string::npos) << e.what();
  }
  if (old) ::setenv("CHORUS_TIMEOUT_MS", saved.c_str(), 1);
  else ::unsetenv("CHORUS_TIMEOUT_MS");
}

TEST_F(GpuTest, TheTimeoutVariableSetsTheDefaultButAnExplicitTimeoutWins) {
  const char* old = std::getenv("CHORUS_TIMEOUT_MS");
  const std::string saved = old ? old : "";
  ::setenv("CHORUS_TIMEOUT_MS", "600000", 1);
  vk::DeviceOptions o;
  o.physical_index = test::test_device_index();
  {
    vk::Device dev(test::instance(), o);
    EXPECT_EQ(dev.timeout_ns(), 600'000'000'000ull);
  }
  o.timeout_ns = 50'000'000;  // a test's deliberate 50 ms (it used to wait the variable's 10 minutes)
  {
    vk::Device dev(test::instance(), o);
    EXPECT_EQ(dev.timeout_ns(), 50'000'000ull);
  }
  ::unsetenv("CHORUS_TIMEOUT_MS");
  o.timeout_ns = 0;
  {
    vk::Device dev(test::instance(), o);
    EXPECT_EQ(dev.timeout_ns(), vk::kDefaultTimeoutMs * 1'000'000ull);
  }
  if (old) ::setenv("CHORUS_TIMEOUT_MS", saved.c_str(), 1);
}

TEST(Capabilities, ParsingNamesEachBitAndRejectsUnknownWords) {
  EXPECT_EQ(vk::parse_capability_list("fp16,cpu", "test"), shaders::kFp16 | shaders::kCpu);
  EXPECT_EQ(vk::parse_capability_list("all", "test"), shaders::kAllCapabilities);
  EXPECT_EQ(vk::parse_capability_list("", "test"), 0u);
  try {
    vk::parse_capability_list("fp16,warp", "CHORUS_DISABLE_CAPS");
    FAIL();
  } catch (const vk::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'warp'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("CHORUS_DISABLE_CAPS"), std::string::npos);
  }
}

TEST_F(GpuTest, DispatchWritesExactlyTheRequestedRangeThroughAnUnalignedWindow) {
  vk::Device& dev = test::device(0);
  const shaders::Variant* v = shaders::select("fill_f32", dev.capabilities());
  ASSERT_NE(v, nullptr);
  vk::Pipeline p(dev, vk::PipelineDesc{std::string(v->name), v->spirv(), 1, 12, {64}});
  std::vector<float> zeros(300, 0.0f);
  vk::Buffer b = test::make_buffer(dev, zeros);
  // Fill elements [5, 5 + 203): the window's offset is aligned down, skip goes in push constants.
  const vk::BufferWindow w = b.window(5 * 4, 203 * 4);
  struct {
    uint32_t n, y_base;
    float value;
  } push{203, static_cast<uint32_t>(w.skip / 4), 2.5f};
  test::run_on(dev, [&](vk::CommandBuffer& cb) {
    cb.dispatch(p, {w}, &push, sizeof push, 4);
    cb.barrier_to_host();
  });
  const auto got = dev.download<float>(b, 300);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], (i >= 5 && i < 208) ? 2.5f : 0.0f) << "element " << i;
}

// --profile (vkdevice/profile.h): each dispatch of a run is timed once, summed per kernel and
// workgroup count; a recording with more dispatches than its timestamps hold says how many went
// untimed, and the next recording of that command buffer has room for all of them.
TEST_F(GpuTest, AProfilingDeviceTimesEachDispatchOfARunOnceByKernelAndWorkgroups) {
  vk::DeviceOptions o;
  o.physical_index = test::test_device_index();
  EXPECT_EQ(vk::Device(test::instance(), o).profile(), nullptr);  // off unless asked for
  o.profile = true;
  vk::Device dev(test::instance(), o);
  if (!dev.profile()) {
    ASSERT_EQ(dev.timestamp_bits(), 0u) << "profiling is on and the queue has timestamps, yet no profile";
    GTEST_SKIP() << dev.label() << "'s queue writes no timestamps, so nothing can be profiled";
  }
  const shaders::Variant* v = shaders::select("fill_f32", dev.capabilities());
  ASSERT_NE(v, nullptr);
  vk::Pipeline p(dev, vk::PipelineDesc{std::string(v->name), v->spirv(), 1, 12, {64}});
  EXPECT_EQ(p.label(), std::string(v->name) + " [64]");
  vk::Buffer b = test::make_buffer(dev, std::vector<float>(64 * 4, 0.0f));
  struct {
    uint32_t n, y_base;
    float value;
  } push{64 * 4, 0, 1.0f};
  const auto record = [&](vk::CommandBuffer& cb, uint32_t big, uint32_t small) {
    cb.begin();
    for (uint32_t i = 0; i < big + small; ++i) {
      cb.dispatch(p, {b.window(0, b.size())}, &push, sizeof push, i < big ? 4 : 2);
      cb.barrier();  // the next fill writes the same elements
    }
    cb.barrier_to_host();
    cb.end();
  };
  const auto calls = [&](const std::string& groups) {
    for (const vk::KernelTime& k : dev.profile()->kernels())
      if (k.kernel == p.label() && k.groups == groups) return k.calls;
    return uint64_t(0);
  };
  vk::CommandBuffer cb(dev);
  record(cb, 2, 1);
  dev.run(cb);
  cb.collect_profile();
  EXPECT_EQ(dev.profile()->kernels().size(), 2u);
  EXPECT_EQ(calls("4x1x1"), 2u);
  EXPECT_EQ(calls("2x1x1"), 1u);
  uint64_t ns = 0;
  for (const vk::KernelTime& k : dev.profile()->kernels()) ns += k.ns;
  EXPECT_GT(ns, 0u);
  cb.collect_profile();  // the same run again: not counted twice
  EXPECT_EQ(calls("4x1x1"), 2u);
  dev.run(cb);  // a second run of the same recording
  cb.collect_profile();
  EXPECT_EQ(calls("4x1x1"), 4u);
  EXPECT_EQ(calls("2x1x1"), 2u);
  EXPECT_EQ(dev.profile()->untimed(), 0u);

  dev.profile()->clear();
  record(cb, 300, 0);  // more than the first recording's room (256)
  dev.run(cb);
  cb.collect_profile();
  EXPECT_EQ(calls("4x1x1"), 256u);
  EXPECT_EQ(dev.profile()->untimed(), 44u);
  record(cb, 300, 0);  // recorded again: room for all of them
  dev.run(cb);
  cb.collect_profile();
  EXPECT_EQ(calls("4x1x1"), 556u);
  EXPECT_EQ(dev.profile()->untimed(), 44u);
}

TEST_F(GpuTest, DisabledCapabilitiesAreHiddenFromKernelSelection) {
  vk::DeviceOptions o;
  o.physical_index = test::test_device_index();
  o.disabled_caps = shaders::kAllCapabilities;
  vk::Device dev(test::instance(), o);
  EXPECT_EQ(dev.capabilities(), 0u);
}

TEST(ShaderRegistry, EveryOpHasAFallbackVariantOrIsForCpuDevicesOnlyAndNoTwoVariantsShareRequirements) {
  std::map<std::string, std::vector<uint32_t>> by_op;
  for (const auto& v : shaders::all_variants()) by_op[std::string(v.op)].push_back(v.requires_caps);
  for (auto& [op, reqs] : by_op) {
    const bool cpu_only = std::all_of(reqs.begin(), reqs.end(), [](uint32_t r) { return (r & shaders::kCpu) != 0; });
    const bool fallback = std::find(reqs.begin(), reqs.end(), 0u) != reqs.end();
    EXPECT_TRUE(fallback || cpu_only) << op << " has no fallback variant";
    if (cpu_only) {
      EXPECT_NE(std::find(reqs.begin(), reqs.end(), uint32_t{shaders::kCpu}), reqs.end()) << op;
    }
    std::sort(reqs.begin(), reqs.end());
    EXPECT_EQ(std::adjacent_find(reqs.begin(), reqs.end()), reqs.end()) << op << " has two variants with the same requirements";
  }
}

}  // namespace
}  // namespace chorus
