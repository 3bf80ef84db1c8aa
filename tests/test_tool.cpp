// The chorus command as a user meets it: exit codes and one-sentence errors.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <string>
#include <sys/wait.h>

namespace {

struct Result {
  int exit_code;
  std::string output;  // stdout and stderr together
};

Result run(const std::string& args, const std::string& env = "") {
  const std::string cmd = env + " " + CHORUS_BINARY + " " + args + " 2>&1";
  Result r{-1, ""};
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  size_t n = 0;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(ChorusTool, WithoutAVulkanLoaderDevicesSaysSoAndExitsNonZero) {
  const Result r = run("devices", "CHORUS_VULKAN_LIBRARY=/nonexistent/libvulkan.so.1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("no Vulkan loader found"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/libvulkan.so.1"), std::string::npos) << r.output;
}

TEST(ChorusTool, WithoutAnyVulkanDriverDevicesAndSelftestSaySoAndExitNonZero) {
  for (const char* cmd : {"devices", "selftest"}) {
    const Result r = run(cmd, "VK_ICD_FILENAMES=/nonexistent/icd.json VK_DRIVER_FILES=/nonexistent/icd.json");
    EXPECT_EQ(r.exit_code, 1) << cmd << ": " << r.output;
    EXPECT_NE(r.output.find("found no driver"), std::string::npos) << cmd << ": " << r.output;
  }
}

TEST(ChorusTool, DevicesListsTheTestDeviceAndItsStatus) {
  const Result r = run("devices");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("device 0:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("status"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("maxStorageBufferRange"), std::string::npos) << r.output;
}

TEST(ChorusTool, UnknownCommandAndUnknownOptionAreUsageErrors) {
  Result r = run("frobnicate");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("unknown command 'frobnicate'"), std::string::npos) << r.output;
  r = run("devices --bogus");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--bogus"), std::string::npos) << r.output;
}

TEST(ChorusTool, BadCapabilityMaskIsOneClearSentence) {
  const Result r = run("selftest", "CHORUS_DISABLE_CAPS=fp16,warp");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("unknown capability 'warp'"), std::string::npos) << r.output;
}

TEST(ChorusTool, BenchKernelsTakesAnyKOfWholeBlocksAndSaysWhichFormatsItSkips) {
  Result r = run("bench kernels --k 100");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--k must be a positive multiple of 32"), std::string::npos) << r.output;
  // K = 96 x N = 8: Q4_1 (32-element blocks) runs, with its texel kernel on CPU devices; Q4_K
  // (256-element blocks) is listed as skipped.
  r = run("bench kernels --k 96 --n 8 --m 2 -r 1 --formats q4_1,q4_k");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("mul_mv_q4_1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("mul_mm"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Q4_K   skipped: K = 96 is not a whole number of its 256-element blocks"), std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("validation error"), std::string::npos) << r.output;
}

TEST(ChorusTool, HelpListsEveryCommand) {
  const Result r = run("--help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* c : {"devices", "selftest", "bench"}) EXPECT_NE(r.output.find(c), std::string::npos) << c;
}

}  // namespace
