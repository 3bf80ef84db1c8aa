// The chorus command as a user meets it: exit codes and one-sentence errors.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/gpu.h"

namespace {

struct Result {
  int exit_code;
  std::string output;  // stdout and stderr together
};

// Runs a shell command line; its output (it redirects stderr as it likes) and exit code.
Result capture(const std::string& cmd) {
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

Result run(const std::string& args, const std::string& env = "") {
  return capture(env + " " + CHORUS_BINARY + " " + args + " 2>&1");
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

const std::string kShared = chorus::test::shared_dir() + "/";
const std::string kStories = kShared + "models/stories260K.gguf";
const std::string kVocab = kShared + "models/vocab/ggml-vocab-gpt-2.gguf";

// Runs a bash command line (for <(...) and redirections), output and exit code.
Result bash(const std::string& line) { return capture("bash -c '" + line + "' 2>&1"); }

TEST(ChorusTool, OutputLostToAFullDiskIsAnErrorNotExitZero) {
  // stdout on /dev/full: every write fails with ENOSPC once the buffer is flushed.
  const std::string chorus = CHORUS_BINARY;
  for (const std::string& cmd : {"inspect " + kStories, "tokenize -m " + kVocab + " -p hello",
                                 "run -m " + kStories + " -n 4 --temp 0", "perplexity -m " + kStories + " -c 128 --chunks 1 -f " +
                                     kShared + "corpus/tinystories-valid-excerpt.txt",
                                 std::string("--help")}) {
    const Result r = bash(chorus + " " + cmd + " 2>&1 >/dev/full");
    EXPECT_EQ(r.exit_code, 1) << cmd << ": " << r.output;
    EXPECT_NE(r.output.find("write error on standard output: No space left on device"), std::string::npos)
        << cmd << ": " << r.output;
  }
}

TEST(ChorusTool, AFifoOrDirectoryAsTextIsRefusedAtOnceWhileAPipeOnPurposeIsRead) {
  const std::string chorus = CHORUS_BINARY;
  const std::string fifo = "/tmp/chorus-test-fifo-" + std::to_string(::getpid());
  ::unlink(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // A FIFO with no writer used to block in open(2) forever.
  Result r = run("tokenize -m " + kVocab + " -f " + fifo);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("-f " + fifo + ": a FIFO (named pipe) with no writer"), std::string::npos) << r.output;
  r = run("inspect " + fifo);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(fifo + ": a FIFO (named pipe), not a regular file"), std::string::npos) << r.output;
  ::unlink(fifo.c_str());
  r = run("perplexity -m " + kStories + " -f /tmp");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("-f /tmp: a directory, expected a text file or a pipe"), std::string::npos) << r.output;
  // Pipes on purpose: process substitution (/dev/fd/N) and standard input.
  r = bash(chorus + " tokenize -m " + kVocab + " --ids -f <(printf \"Hello world\")");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "[15496, 995]\n");
  r = bash("printf \"Hello world\" | " + chorus + " tokenize -m " + kVocab + " --ids -f -");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "[15496, 995]\n");
}

TEST(ChorusTool, FlagNumbersAreParsedStrictlyAndErrorsNameTheFlag) {
  const struct {
    const char* args;
    const char* message;
  } cases[] = {
      {"inspect x.gguf --max-elems -1", "--max-elems expects a non-negative integer, got '-1'"},
      {"bench kernels --texel 2", "--texel expects an integer from 0 to 1, got '2'"},
      {"bench kernels --row-per-invocation 3", "--row-per-invocation expects an integer from 0 to 1, got '3'"},
      {"bench kernels --repeat 0", "--repeat expects a positive count, got 0"},
      {"bench kernels -r 0", "-r expects a positive count, got 0"},
      {"bench kernels --k 64x", "--k expects a non-negative integer, got '64x'"},
      {"run -m x.gguf --device 0,", "--device expects a comma-separated list such as 0,0,1, got '0,'"},
      {"run -m x.gguf --device ,0", "--device expects a comma-separated list such as 0,0,1, got ',0'"},
      {"run -m x.gguf -ts 1,", "-ts expects a comma-separated list such as 3,1, got '1,'"},
      {"run -m x.gguf -ts 1,1e-400", "-ts expects a finite number, got '1e-400'"},
      {"run -m x.gguf -ts 1,-2", "-ts expects positive ratios, got '-2' in '1,-2'"},
      {"run -m x.gguf -ts 1e308,1e-300", "-ts ratio '1e-300' is too small next to '1e308' in '1e308,1e-300'"},
      {"run -m x.gguf --temp \" 1\"", "--temp expects a finite number, got ' 1'"},
      {"run -m x.gguf --top-k 99999999999999999999", "--top-k expects an integer from 0 to 2147483647"},
      {"run -m x.gguf --repeat-last-n -2", "--repeat-last-n expects an integer from -1 to 2147483647, got '-2'"},
      {"run -m x.gguf -n 18446744073709551617", "-n value '18446744073709551617' is too large"},
      {"bench -m x.gguf -p 99999999", "-p expects token counts up to 16777216, got 99999999"},
  };
  for (const auto& c : cases) {
    const Result r = run(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << ": " << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << ": " << r.output;
  }
}

TEST(ChorusTool, HugeRatiosSplitEvenlyInsteadOfOverflowing) {
  // 1e308 + 1e308 overflowed to infinity and every ratio became 0.
  const Result r = run("run -m " + kStories + " --device 0,0 -sm tensor -ts 1e308,1e308 -n 2 --temp 0");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST(ChorusTool, BenchKernelsRejectsABadDeviceOrShapeBeforeDoingAnyWork) {
  // Both used to run the 256 MiB memcpy benchmark (or fill 4 GB of host memory) first.
  Result r = run("bench kernels --device 99");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--device 99 is not a device index"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("host memcpy"), std::string::npos) << r.output;
  r = run("bench kernels --m 16777216");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("buffer 'bench x (--k x --m floats)' of 256.00 GiB"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("host memcpy"), std::string::npos) << r.output;
}

TEST(ChorusTool, ABufferOfFourGibibytesIsRefusedWithItsPurposeAndTheLimit) {
  // -ub 16777216 asks for a 4 GiB scratch buffer, which failed inside vkCreateBuffer with
  // VK_ERROR_OUT_OF_DEVICE_MEMORY before the budget check.
  const Result r = run("run -m " + kStories + " -ub 16777216 -c 512 -n 1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("buffer 'scratch' of 4.00 GiB (4294967296 bytes) exceeds the device's"), std::string::npos)
      << r.output;
}

TEST(ChorusTool, HelpListsEveryCommand) {
  const Result r = run("--help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* c : {"devices", "selftest", "bench"}) EXPECT_NE(r.output.find(c), std::string::npos) << c;
}

}  // namespace
