// The chorus command as a user meets it: exit codes and one-sentence errors.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

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

// The collective's benchmark opens its devices as a tensor split does: on lavapipe each in an
// instance of its own (unless LP_NUM_THREADS is set), which it says; every row is printed.
TEST(ChorusTool, BenchCollectiveRunsEveryProxyPolicyOnDevicesOpenedAsATensorSplitOpensThem) {
  const Result r = run("bench collective --floats 64 --points 4 --tokens 2 --runs 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* row : {"\n  poll ", "\n  hybrid ", "\n  block ", "device work alone"})
    EXPECT_NE(r.output.find(row), std::string::npos) << row << ": " << r.output;
  if (r.output.find("(llvmpipe") != std::string::npos && !std::getenv("LP_NUM_THREADS")) {
    EXPECT_NE(r.output.find("devices: each in a Vulkan instance of its own"), std::string::npos) << r.output;
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
  // The planner refuses it before anything is allocated, naming the cause.
  Result r = run("run -m " + kStories + " -ub 16777216 -c 512 -n 1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("tokens per forward pass do not fit even with a context of 1: lower -ub"), std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("loading weights"), std::string::npos) << "refused before the upload\n" << r.output;
  // With --fit off the allocation itself refuses it, with the buffer's purpose and the limit.
  r = run("run -m " + kStories + " -ub 16777216 -c 512 -n 1 --fit off");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("buffer 'scratch' of 4.00 GiB (4294967296 bytes) exceeds the device's"), std::string::npos)
      << r.output;
}

TEST(ChorusTool, EveryCommandsHelpComesFromItsOptionsAndAMisspeltOptionGetsTheClosest) {
  for (const char* c : {"devices", "selftest", "bench", "bench kernels", "bench collective", "inspect", "tokenize", "chat",
                        "run", "perplexity"}) {
    const Result r = run(std::string(c) + " --help");
    EXPECT_EQ(r.exit_code, 0) << c << ": " << r.output;
    EXPECT_NE(r.output.find("usage: chorus "), std::string::npos) << c << ": " << r.output;
    EXPECT_NE(r.output.find("  -h, --help "), std::string::npos) << c << ": " << r.output;
  }
  // The shared groups appear in every command that takes them, from the one definition.
  for (const char* c : {"run", "chat", "perplexity", "bench"}) {
    const Result r = run(std::string(c) + " -h");
    EXPECT_NE(r.output.find("-ngl, --n-gpu-layers"), std::string::npos) << c << ": " << r.output;
  }
  for (const auto& [args, suggestion] : std::vector<std::pair<std::string, std::string>>{
           {"run -m x.gguf --tmep 0", "did you mean '--temp'?"},
           {"chat -m x.gguf --sytem-prompt hi", "did you mean '--system-prompt'?"},
           {"perplexity -m x.gguf --chunk 3", "did you mean '--chunks'?"},
           {"bench -m x.gguf --ouput csv", "did you mean '--output'?"},
           {"tokenize -m x.gguf --show-cnt", "did you mean '--show-count'?"},
           {"run -m x.gguf --tensor-splt 1,1", "did you mean '--tensor-split'?"}}) {
    const Result r = run(args);
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.output;
    EXPECT_NE(r.output.find(suggestion), std::string::npos) << args << ": " << r.output;
  }
  Result r = run("run -m x.gguf --temp");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--temp needs a value"), std::string::npos) << r.output;
  // An option's value may start with a dash; -p "--help" is a prompt, not a request for help.
  r = run("run -m /nonexistent.gguf -p --help");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("/nonexistent.gguf"), std::string::npos) << r.output;
}

// --profile: per test, every device's time per kernel; its dispatches per token are the
// column's, and a tensor split lists each device. run prints one table at its end.
TEST(ChorusTool, ProfileListsEachDevicesKernelsWithTheDispatchesPerTokenTheBenchCounts) {
  const std::string err_file = ::testing::TempDir() + "chorus-profile-" + std::to_string(getpid()) + ".txt";
  Result r = capture(std::string(CHORUS_BINARY) + " bench -m " + kStories +
                     " -p 0 -n 4 -r 1 --device 0 --device 0,0 -sm tensor --profile -o jsonl 2>" + err_file);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const Result err = capture("cat " + err_file + "; rm -f " + err_file);
  std::vector<double> column;
  for (size_t start = 0, nl; (nl = r.output.find('\n', start)) != std::string::npos; start = nl + 1)
    column.push_back(nlohmann::json::parse(r.output.substr(start, nl - start))["dispatches_per_token"].get<double>());
  ASSERT_EQ(column.size(), 2u) << r.output;
  // "profile of <model> <split> tg4, <device>: X ms of dispatches per token over 4 token(s), D dispatches per token"
  std::vector<std::pair<std::string, double>> tables;
  for (size_t at = 0; (at = err.output.find("profile of ", at)) != std::string::npos; ++at) {
    const size_t eol = err.output.find('\n', at);
    const std::string line = err.output.substr(at, eol - at);
    const size_t over = line.find(" token(s), ");
    ASSERT_NE(over, std::string::npos) << line;
    EXPECT_NE(line.find(" tg4, device 0"), std::string::npos) << line;
    EXPECT_NE(line.find(" over 4 token(s)"), std::string::npos) << line;
    tables.emplace_back(line, std::stod(line.substr(over + 11)));
    // The table under it: at least the kernel that reads the weights.
    const std::string rows = err.output.substr(eol, err.output.find("\nprofile of", eol) - eol);
    EXPECT_NE(rows.find("mul_mv"), std::string::npos) << rows;
  }
  ASSERT_EQ(tables.size(), 3u) << err.output;  // one device, then the two of the tensor split
  EXPECT_NE(tables[1].first.find(" tg4, device 0 ("), std::string::npos) << tables[1].first;
  EXPECT_NE(tables[2].first.find(" tg4, device 0/1 ("), std::string::npos) << tables[2].first;
  EXPECT_DOUBLE_EQ(tables[0].second, column[0]);
  EXPECT_DOUBLE_EQ(std::max(tables[1].second, tables[2].second), column[1]);  // the column is the busiest device's

  r = run("run -m " + kStories + " -n 4 --temp 0 -p 'Once upon' --profile");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("profile of chorus run, device 0"), std::string::npos) << r.output;

  // Without timestamps nothing can be timed, and both say so instead of printing nothing.
  for (const std::string& cmd : {"bench -m " + kStories + " -p 0 -n 2 -r 1 --profile -o csv",
                                 "run -m " + kStories + " -n 2 --temp 0 -p 'Once' --profile"}) {
    r = run(cmd, "CHORUS_NO_TIMESTAMPS=1");
    ASSERT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;
    EXPECT_NE(r.output.find("profile: nothing was timed"), std::string::npos) << cmd << "\n" << r.output;
    EXPECT_EQ(r.output.find("profile of"), std::string::npos) << cmd << "\n" << r.output;
  }
}

TEST(ChorusTool, BenchMeasuresTheCrossProductOfDevicesAndSplitModesInEveryOutputFormat) {
  // 2 device lists x 2 split modes = 4 configurations, each with a pp and a tg test.
  Result r = capture(std::string(CHORUS_BINARY) + " bench -m " + kStories +
                     " -p 8 -n 4 -r 1 --device 0 --device=0,0 -sm layer,tensor -o jsonl 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<nlohmann::json> rows;
  size_t start = 0;
  while (start < r.output.size()) {
    const size_t nl = r.output.find('\n', start);
    rows.push_back(nlohmann::json::parse(r.output.substr(start, nl - start)));
    start = nl + 1;
  }
  ASSERT_EQ(rows.size(), 8u) << r.output;
  size_t tensor_tg_on_two = 0;
  for (const auto& row : rows) {
    EXPECT_EQ(row["type"], "F32") << row;
    EXPECT_EQ(row["size_bytes"].get<uint64_t>(), 1171200u) << row;  // the file's tensor bytes
    EXPECT_GT(row["avg_ts"].get<double>(), 0) << row;
    EXPECT_TRUE(row["test"] == "pp8" || row["test"] == "tg4") << row;
    const bool two = row["devices"] == "0,0";
    EXPECT_EQ(row["ratios"].get<std::string>().size(), two ? 9u : 4u) << row;  // "0.50/0.50" or "1.00"
    EXPECT_GT(row["dispatches_per_token"].get<double>(), 0) << row;
    EXPECT_GT(row["barriers_per_token"].get<double>(), 0) << row;
    // Weight bandwidth and its share of memcpy for generation rows only (bytes x t/s / memcpy).
    EXPECT_EQ(row["weight_gbps"].is_null(), row["test"] == "pp8") << row;
    if (row["test"] == "tg4") {
      EXPECT_NEAR(row["weight_gbps"].get<double>(), 1171200e-9 * row["avg_ts"].get<double>(), 1e-9) << row;
      EXPECT_GT(row["memcpy_fraction"].get<double>(), 0) << row;
      // One submit per device per token on every split; a tensor split reduces through the collective.
      EXPECT_EQ(row["submits_per_token"].get<double>(), 1.0) << row;
      // Every decode token replays one recording: a whole number of dispatches per token.
      const double d = row["dispatches_per_token"].get<double>();
      EXPECT_EQ(d, std::floor(d)) << row;
      if (two && row["split_mode"] == "tensor") {
        ++tensor_tg_on_two;
        EXPECT_EQ(row["host_waits_per_token"].get<double>(), 1.0) << row;
        EXPECT_FALSE(row["reduce_p50_us"].is_null()) << row;
      }
    }
  }
  EXPECT_EQ(tensor_tg_on_two, 1u) << r.output;

  r = capture(std::string(CHORUS_BINARY) + " bench -m " + kStories + " -p 8 -n 0 -r 1 --device 0/0,0 -o csv 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.rfind("model,arch,type,size_bytes,params,backend,devices,", 0), 0u) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 3) << r.output;  // header + 2 configurations
  EXPECT_NE(r.output.find(",\"0,0\","), std::string::npos) << r.output;  // a field with a comma is quoted

  r = capture(std::string(CHORUS_BINARY) + " bench -m " + kStories + " -p 0 -n 2 -r 1 -o json 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json all = nlohmann::json::parse(r.output);
  ASSERT_TRUE(all.is_array());
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0]["test"], "tg2");

  r = run("bench -m " + kStories + " -p 8 -n 0 -r 1 -o md");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("| model "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("pp8"), std::string::npos) << r.output;

  // A ratio list that fits no device list leaves nothing to run: a usage error, before loading.
  r = run("bench -m " + kStories + " -p 8 -n 0 --device 0 -ts 1,1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("no configuration left"), std::string::npos) << r.output;
  r = run("bench -m " + kStories + " -o xml");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("md, json, jsonl or csv"), std::string::npos) << r.output;
}

TEST(ChorusTool, ShowDevicesGivesEveryDeviceItsBusyFractionOrSaysItHasNoTimestamps) {
  const std::string args = "run -m " + kStories + " -n 4 --temp 0 -p 'Once' --device 0,0 -sm layer --show-devices";
  Result r = run(args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("devices: memory in use; over the last "), std::string::npos) << r.output;
  size_t busy = 0;
  for (size_t at = r.output.find("; busy "); at != std::string::npos; at = r.output.find("; busy ", at + 1)) ++busy;
  EXPECT_EQ(busy, 2u) << r.output;
  EXPECT_NE(r.output.find("process: peak resident memory "), std::string::npos) << r.output;
  r = run(args, "CHORUS_NO_TIMESTAMPS=1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  size_t na = 0;
  for (size_t at = r.output.find("busy: n/a (device has no timestamps)"); at != std::string::npos;
       at = r.output.find("busy: n/a (device has no timestamps)", at + 1))
    ++na;
  EXPECT_EQ(na, 2u) << r.output;
  // chat's /devices, after a reply on a tensor split: the same view, with the reduces' share.
  r = bash("printf \"Hello\\n/devices\\n/exit\\n\" | " + std::string(CHORUS_BINARY) + " chat -m " + kStories +
           " -n 4 --temp 0 --device 0,0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  busy = 0;
  for (size_t at = r.output.find("; busy "); at != std::string::npos; at = r.output.find("; busy ", at + 1)) ++busy;
  EXPECT_EQ(busy, 2u) << r.output;
  EXPECT_NE(r.output.find("% of reduce points"), std::string::npos) << r.output;
}

TEST(ChorusTool, RunVerboseReportsTheUploadThePipelinesAndTheFirstToken) {
  const Result r = run("run -m " + kStories + " -n 2 --temp 0 -p 'Once' --verbose");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("MiB of weights on the device(s) in "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("of the file's read speed"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("start-up: first token "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" pipelines created ("), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("accepted and ignored"), std::string::npos) << r.output;
}

// The text a greedy run printed (its stdout alone), for comparing runs.
std::string generated_text(const std::string& args, const std::string& env) {
  return capture(env + " " + CHORUS_BINARY + " " + args + " 2>/dev/null").output;
}

TEST(ChorusTool, ASecondRunBuildsTheFirstRunsPipelinesAheadOfTimeAndAnswersTheSame) {
  // Disk caches on (CI turns them off for every other test) in a cache folder of its own.
  char dir[] = "/tmp/chorus-pipeline-list-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string env = std::string("env -u CHORUS_NO_PIPELINE_CACHE XDG_CACHE_HOME=") + dir;
  const std::string args = "run -m " + kStories + " -n 12 --temp 0 -p 'Once upon a time'";

  const Result first = run(args + " --verbose", env);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_NE(first.output.find("none ahead of time"), std::string::npos) << first.output;
  const Result lists = capture(std::string("ls ") + dir + "/chorus/ 2>&1");
  EXPECT_NE(lists.output.find(".list"), std::string::npos) << "no pipeline list written:\n" << lists.output;

  const Result second = run(args + " --verbose", env);
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("the last run built"), std::string::npos) << second.output;
  EXPECT_EQ(second.output.find("warning"), std::string::npos) << second.output;
  const std::string expected = generated_text(args, "CHORUS_NO_PIPELINE_CACHE=1");
  ASSERT_FALSE(expected.empty());
  EXPECT_EQ(generated_text(args, env), expected);

  // A list that is not one chorus wrote is ignored with a warning naming it; the answer holds.
  ASSERT_EQ(capture(std::string("for f in ") + dir + "/chorus/*.list; do printf 'chorus pipeline list 1\\nmul_mv ../../x 1 2 -\\n' > $f; done").exit_code, 0);
  const Result hostile = run(args, env);
  ASSERT_EQ(hostile.exit_code, 0) << hostile.output;
  EXPECT_NE(hostile.output.find("warning: "), std::string::npos) << hostile.output;
  EXPECT_NE(hostile.output.find(".list: ignored, line 2"), std::string::npos) << hostile.output;
  EXPECT_EQ(generated_text(args, env), expected);
  (void)capture(std::string("rm -rf ") + dir);
}

// The revision is looked up at every build, so a build folder configured at an older commit
// still names the commit the binary came from (it once kept the configure's).
TEST(ChorusTool, VersionNamesTheCommitTheBinaryWasBuiltFrom) {
  const Result r = run("--version");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const Result git = capture(std::string("git -C '") + CHORUS_SOURCE_DIR +
                             "' describe --always --dirty --abbrev=12 2>/dev/null");
  std::string want = git.exit_code == 0 ? git.output : "unknown";
  while (!want.empty() && (want.back() == '\n' || want.back() == '\r')) want.pop_back();
  EXPECT_NE(r.output.find("(git " + want + ")"), std::string::npos) << r.output << " (expected git " << want << ")";
}

TEST(ChorusTool, HelpListsEveryCommand) {
  const Result r = run("--help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* c : {"devices", "selftest", "bench"}) EXPECT_NE(r.output.find(c), std::string::npos) << c;
}

}  // namespace
