// tests/gpu.h — what GPU tests share: one Vulkan instance per test process, logical devices
// on the first usable physical device (or CHORUS_TEST_DEVICE), random data, error measures,
// and a fixture that fails a test on any validation error it caused.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vkdevice/commands.h"
#include "vkdevice/device.h"
#include "vkdevice/instance.h"

namespace chorus::test {

// The process's instance (validation layer enabled when CHORUS_VALIDATION=1). Fails the
// calling test with a how-to message when Vulkan or a usable device is missing.
vk::Instance& instance();
// The physical device index GPU tests use.
uint32_t test_device_index();
// Logical device number `n` (0, 1, 2, ...: each its own VkDevice on the same physical
// device), opened on first use and kept for the process. A test that keeps objects of a
// device in a function-local static must call device() before creating them, so that the
// device (a static too) is destroyed after them.
vk::Device& device(int n = 0);

// The shared data folder: $CHORUS_SHARED_DIR if set, else ../shared beside the repository
// (models/, models/vocab/, corpus/). Pointing the variable elsewhere shows how every suite
// behaves without it: failed tests with this message, never a crash.
std::string shared_dir();

// Path of a model that scripts/fetch-models.sh fetches (into $CHORUS_MODELS_DIR, else
// $XDG_CACHE_HOME/chorus/models, else ~/.cache/chorus/models). A missing file throws
// std::runtime_error naming the command that fetches it, which fails the calling test there
// (GoogleTest reports the exception) instead of letting it run on without the file.
std::string fetched_model(const std::string& file_name, const std::string& fetch_name);
// Path of a file in shared_dir()/models; a missing file throws as fetched_model does.
std::string shared_model(const std::string& name);

// Runs `command` through the shell with stderr merged into stdout (for suites that drive the
// chorus binary). exit_code is -1 when the command did not exit normally.
struct CommandResult {
  int exit_code;
  std::string output;
};
CommandResult run_command(const std::string& command);

// Uniform random floats in [-scale, scale], deterministic per seed.
std::vector<float> random_floats(size_t n, uint64_t seed, float scale = 1.0f);
// Normalised mean squared error sum((a-b)^2)/sum(a^2); +inf if any value is NaN or inf.
double nmse(std::span<const float> reference, std::span<const float> got);
// Largest |a-b|; +inf if any value is NaN.
double max_abs_diff(std::span<const float> reference, std::span<const float> got);

// A device buffer holding `data`.
template <typename T>
vk::Buffer make_buffer(vk::Device& dev, std::span<const T> data, const std::string& tag = "test") {
  vk::Buffer b = dev.create_buffer(std::max<uint64_t>(data.size_bytes(), 4), vk::BufferKind::Device, tag);
  if (!data.empty()) dev.upload(b, 0, std::as_bytes(data));
  return b;
}
template <typename T>
vk::Buffer make_buffer(vk::Device& dev, const std::vector<T>& data, const std::string& tag = "test") {
  return make_buffer(dev, std::span<const T>(data), tag);
}

// Fixture for GPU tests: fails the test if the validation layer reported an error during it.
class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

 private:
  uint64_t errors_before_ = 0;
};

template <typename P>
class GpuTestP : public ::testing::TestWithParam<P> {
 protected:
  void SetUp() override { errors_before_ = instance().validation_errors(); }
  void TearDown() override {
    EXPECT_EQ(instance().validation_errors(), errors_before_) << "the Vulkan validation layer reported errors";
  }

 private:
  uint64_t errors_before_ = 0;
};

// Runs recorded work on dev and waits: begin(), fn(cb), end(), run.
template <typename Fn>
void run_on(vk::Device& dev, Fn&& fn) {
  vk::CommandBuffer cb(dev);
  cb.begin();
  fn(cb);
  cb.end();
  dev.run(cb);
}

}  // namespace chorus::test
