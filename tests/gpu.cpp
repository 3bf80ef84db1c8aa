#include "tests/gpu.h"

#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <map>
#include <memory>
#include <random>

namespace chorus::test {

vk::Instance& instance() {
  static std::unique_ptr<vk::Instance> inst = [] {
    vk::InstanceOptions o;
    if (const char* v = std::getenv("CHORUS_VALIDATION"); v && std::string(v) == "1") o.validation = true;
    try {
      return std::make_unique<vk::Instance>(o);
    } catch (const vk::Error& e) {
      ADD_FAILURE() << e.what() << "\nGPU tests need a Vulkan driver: `apt-get install mesa-vulkan-drivers` gives lavapipe.";
      std::exit(1);
    }
  }();
  return *inst;
}

uint32_t test_device_index() {
  const auto& devs = instance().devices();
  if (const char* env = std::getenv("CHORUS_TEST_DEVICE")) return static_cast<uint32_t>(std::stoul(env));
  for (const auto& d : devs)
    if (d.usable()) return d.index;
  ADD_FAILURE() << "no usable Vulkan device; GPU tests need one (`apt-get install mesa-vulkan-drivers` gives lavapipe)";
  std::exit(1);
}

vk::Device& device(int n) {
  static std::map<int, std::unique_ptr<vk::Device>> devices;
  auto& slot = devices[n];
  if (!slot) {
    vk::DeviceOptions o;
    o.physical_index = test_device_index();
    o.opening = static_cast<uint32_t>(n);
    slot = std::make_unique<vk::Device>(instance(), o);
  }
  return *slot;
}

std::string fetched_model(const std::string& file_name, const std::string& fetch_name) {
  std::string dir;
  if (const char* d = std::getenv("CHORUS_MODELS_DIR"); d && *d)
    dir = d;
  else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    dir = std::string(x) + "/chorus/models";
  else
    dir = std::string(std::getenv("HOME") ? std::getenv("HOME") : "/root") + "/.cache/chorus/models";
  const std::string path = dir + "/" + file_name;
  if (!std::filesystem::exists(path))
    throw std::runtime_error(path + " is missing: run `scripts/fetch-models.sh " + fetch_name + "` to fetch it");
  return path;
}

std::string shared_dir() {
  if (const char* d = std::getenv("CHORUS_SHARED_DIR"); d && *d) return d;
  return std::string(CHORUS_SOURCE_DIR) + "/../shared";
}

std::string shared_model(const std::string& name) {
  const std::string path = shared_dir() + "/models/" + name;
  if (!std::filesystem::exists(path))
    throw std::runtime_error(path + " is missing: the tests need ../shared beside the repository (or CHORUS_SHARED_DIR) "
                             "with its models/ folder");
  return path;
}

CommandResult run_command(const std::string& command) {
  CommandResult r{-1, ""};
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  size_t n = 0;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::vector<float> random_floats(size_t n, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

double nmse(std::span<const float> a, std::span<const float> b) {
  if (a.size() != b.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(a[i]) * a[i];
  }
  if (den == 0) return num == 0 ? 0 : INFINITY;
  return num / den;
}

double max_abs_diff(std::span<const float> a, std::span<const float> b) {
  if (a.size() != b.size()) return INFINITY;
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return INFINITY;
    m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]));
  }
  return m;
}

void GpuTest::SetUp() { errors_before_ = instance().validation_errors(); }

void GpuTest::TearDown() {
  EXPECT_EQ(instance().validation_errors(), errors_before_) << "the Vulkan validation layer reported errors";
}

}  // namespace chorus::test
