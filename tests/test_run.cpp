// `chorus run` and `chorus perplexity` end to end on stories260K (the GPU path, through the
// binary as a user runs it): the golden greedy ids, seeded sampling, stdout holding only the
// result, perplexity independent of batching, and the command-line errors.
// CHORUS_VALIDATION=1 reaches the binary through the environment; it then exits 1 on any
// validation error, which fails these tests.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "engine/model.h"
#include "engine/perplexity.h"
#include "engine/tokenizer.h"
#include "engine/vocab.h"
#include "tests/gpu.h"
#include "tests/reference_model.h"

namespace chorus {
namespace {

const std::string kModels = test::shared_dir() + "/models/";
const std::string kStories = kModels + "stories260K.gguf";
const std::string kTinyStories = test::shared_dir() + "/corpus/tinystories-valid-excerpt.txt";

struct Result {
  int exit_code;
  std::string out;  // stdout
  std::string err;  // stderr
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string device_flag() {
  const char* d = std::getenv("CHORUS_TEST_DEVICE");
  return d ? std::string(" --device ") + d : std::string();
}

// Runs `chorus ARGS` with ENV (VAR=value ...) added, stdout and stderr captured apart.
Result chorus(const std::string& args, const std::string& env = "") {
  char err_path[] = "/tmp/chorus_test_run_XXXXXX";
  const int fd = mkstemp(err_path);
  if (fd >= 0) close(fd);
  const std::string cmd = (env.empty() ? "" : "env " + env + " ") + CHORUS_BINARY + " " + args + " 2>" + err_path;
  Result r{-1, "", ""};
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  size_t n = 0;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = slurp(err_path);
  std::remove(err_path);
  return r;
}

std::vector<int> parse_ids(const std::string& text) {
  std::istringstream in(text);
  std::vector<int> ids;
  int v = 0;
  while (in >> v) ids.push_back(v);
  return ids;
}

TEST(ChorusRun, GreedyGenerationFromBosMatchesTheGoldenIds) {
  const Result r = chorus("run -m " + kStories + " -p \"\" -n 256 --temp 0 --print-ids" + device_flag());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<int> got = parse_ids(r.out);
  const std::vector<int> want = parse_ids(slurp(kModels + "stories260K.greedy-t0.ids.txt"));
  ASSERT_EQ(want.size(), 256u);
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i)
    ASSERT_EQ(got[i], want[i]) << "first difference at generated token " << i;
  EXPECT_EQ(got.size(), want.size());
}

TEST(ChorusRun, GreedyTextIsTheGoldenTextAndStdoutHoldsNothingElse) {
  const Result r = chorus("run -m " + kStories + " -n 256 --temp 0" + device_flag());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // llama2.c strips the first piece's leading space; chorus prints the piece as it is.
  EXPECT_EQ(r.out, " " + slurp(kModels + "stories260K.greedy-t0.txt"));
  EXPECT_NE(r.err.find("loading weights"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("KV cache"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("t/s"), std::string::npos) << r.err;
}

TEST(ChorusRun, SameSeedGivesTheSameTextAndAnotherSeedDoesNot) {
  const std::string base = "run -m " + kStories + " -p \"Once upon a time\" -n 48 --temp 1.0 --top-k 0 --top-p 1 --min-p 0";
  const Result a = chorus(base + " --seed 7" + device_flag());
  const Result b = chorus(base + " --seed 7" + device_flag());
  const Result c = chorus(base + " --seed 8" + device_flag());
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_FALSE(a.out.empty());
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
}

TEST(ChorusRun, APromptIsContinuedNotEchoed) {
  const Result r = chorus("run -m " + kStories + " -p \"Once upon a time\" -n 8 --temp 0" + device_flag());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Greedy continuation of the golden story's first words.
  EXPECT_EQ(r.out.rfind(", there was a little girl", 0), 0u) << r.out;
}

TEST(ChorusRun, AMissingModelFileIsOneSentenceAndExitCodeOne) {
  const Result r = chorus("run -m /nonexistent/model.gguf -p hi -n 4");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(r.out.empty());
  EXPECT_NE(r.err.find("/nonexistent/model.gguf"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("No such file"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

// Two logical devices of the test GPU, for the tensor-split paths.
std::string two_devices() {
  const char* d = std::getenv("CHORUS_TEST_DEVICE");
  const std::string i = d ? d : "0";
  return " --device " + i + "," + i + " -sm tensor";
}

// A tensor split over logical devices of the CPU opens each in a Vulkan instance of its own
// (vk::InstanceOptions::cpu_threads): the answers are the one device's, token for token.
TEST(ChorusRun, ATensorSplitOverLogicalDevicesOfOneGpuGivesTheGoldenIds) {
  const Result r = chorus("run -m " + kStories + " -p \"\" -n 256 --temp 0 --print-ids" + two_devices());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(parse_ids(r.out), parse_ids(slurp(kModels + "stories260K.greedy-t0.ids.txt")));
  // On lavapipe, unless LP_NUM_THREADS is set (the user's choice wins), both say so.
  if (r.err.find("(llvmpipe") != std::string::npos && !std::getenv("LP_NUM_THREADS")) {
    const size_t first = r.err.find(", an instance of its own ");
    ASSERT_NE(first, std::string::npos) << r.err;
    EXPECT_NE(r.err.find(", an instance of its own ", first + 1), std::string::npos) << r.err;
  }
}

// A device that stops answering (CHORUS_FAULT_STALL makes logical device 1 wait before it
// delivers a reduce point) must end the command within the timeout: one error naming the
// device and the reduce point, exit code 1, everything released without validation errors.
void expect_stall_reported(const std::string& prompt, const std::string& point, const std::string& path) {
  const auto t0 = std::chrono::steady_clock::now();
  const Result r = chorus("run -m " + kStories + " -p \"" + prompt + "\" -n 16 --temp 0" + two_devices(),
                          "CHORUS_FAULT_STALL=1:" + point + " CHORUS_TIMEOUT_MS=2000");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.exit_code, 1) << path << ": " << r.err;
  EXPECT_NE(r.err.find("chorus run: error: "), std::string::npos) << path << ": " << r.err;
  EXPECT_NE(r.err.find("device 0/1"), std::string::npos) << path << ": " << r.err;
  EXPECT_NE(r.err.find("reduce point " + point), std::string::npos) << path << ": " << r.err;
  EXPECT_NE(r.err.find("2000 ms"), std::string::npos) << path << ": " << r.err;
  EXPECT_EQ(r.err.find("validation error"), std::string::npos) << path << ": " << r.err;
  EXPECT_LT(seconds, 60.0) << path << ": the timeout is 2 s";
}

TEST(ChorusRun, ADeviceThatStopsAnsweringInTheCollectiveEndsTheRunWithAnErrorNamingItAndTheReducePoint) {
  expect_stall_reported("Once", "3", "a short prompt and decode (the collective)");
}

TEST(ChorusRun, ADeviceThatStopsAnsweringDuringALongPrefillEndsTheRunWithAnErrorNamingItAndTheReducePoint) {
  // A prompt of many tokens: the micro-batch goes through the collective too.
  expect_stall_reported("Once upon a time, there was a little girl named Lily. She loved to play outside in the sun "
                        "with her big red ball and her small dog.",
                        "5", "a long prompt (prefill through the collective)");
}

// One device, and a layer split: a device that stops making progress (CHORUS_FAULT_STALL on
// the pipeline's devices) is one error naming the device and CHORUS_TIMEOUT_MS, exit code 1,
// and nothing the device may still use is freed under it (no crash, no validation error).
// A slow device is not a stopped one: the limit is on time without progress (vkdevice/watchdog.h,
// tested without a clock in test_executor.cpp), so no test here depends on the machine's speed.
TEST(ChorusRun, ADeviceThatStopsMakingProgressAloneOrInALayerSplitIsOneErrorNotACrash) {
  const char* d = std::getenv("CHORUS_TEST_DEVICE");
  const std::string i = d ? d : "0";
  for (const auto& [devices, stall] : {std::pair<std::string, std::string>{i, "0:4"}, {i + "," + i + " -sm layer", "1:7"}}) {
    const Result r = chorus("run -m " + kStories + " -p \"Once upon a time\" -n 8 --temp 0 --device " + devices,
                            "CHORUS_FAULT_STALL=" + stall + " CHORUS_TIMEOUT_MS=1000");
    EXPECT_EQ(r.exit_code, 1) << devices << ": " << r.err;
    EXPECT_NE(r.err.find("chorus run: error: "), std::string::npos) << devices << ": " << r.err;
    EXPECT_NE(r.err.find("stopped making progress"), std::string::npos) << devices << ": " << r.err;
    EXPECT_NE(r.err.find("CHORUS_TIMEOUT_MS"), std::string::npos) << devices << ": " << r.err;
    EXPECT_EQ(r.err.find("validation error"), std::string::npos) << devices << ": " << r.err;
  }
}

TEST(ChorusRun, AFaultInjectionVariableThatIsNotTwoNumbersBelowTwoToTheThirtyTwoIsRefusedByName) {
  for (const std::string bad : {"4294967297:1", "1", "1:", "-1:2", "a:b", "1:2x"}) {
    const Result r = chorus("run -m " + kStories + " -p hi -n 2" + two_devices(), "CHORUS_FAULT_STALL=" + bad);
    EXPECT_EQ(r.exit_code, 1) << bad << ": " << r.err;
    EXPECT_NE(r.err.find("CHORUS_FAULT_STALL is '" + bad + "'"), std::string::npos) << r.err;
  }
}

TEST(ChorusRun, BadArgumentsAreUsageErrors) {
  for (const std::string args : {"run", "run -m x.gguf --temp warm", "run -m x.gguf --top-p 1.5",
                                 "run -m x.gguf --bogus", "run -m x.gguf -n", "run -m x.gguf -n -3",
                                 "run -m x.gguf --repeat-last-n -2", "run -m x.gguf -c 0", "run -m x.gguf extra",
                                 "perplexity -m x.gguf", "perplexity -f x.txt", "perplexity -m x -f y -c 2",
                                 "perplexity -m x -f y --chunks zero"}) {
    const Result r = chorus(args);
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.err;
    EXPECT_NE(r.err.find("--help"), std::string::npos) << args << ": " << r.err;
  }
}

TEST(ChorusRun, HelpDescribesTheOptions) {
  const Result run = chorus("run --help");
  EXPECT_EQ(run.exit_code, 0);
  for (const char* opt : {"--temp", "--top-k", "--top-p", "--min-p", "--repeat-penalty", "--repeat-last-n", "--seed",
                          "--ignore-eos", "-ub", "--device", "-c"})
    EXPECT_NE(run.out.find(opt), std::string::npos) << opt;
  const Result ppl = chorus("perplexity --help");
  EXPECT_EQ(ppl.exit_code, 0);
  EXPECT_NE(ppl.out.find("CRLF"), std::string::npos) << ppl.out;
  EXPECT_NE(ppl.out.find("--chunks"), std::string::npos) << ppl.out;
}

TEST(ChorusPerplexity, Stories260KOnTinyStoriesIsPlausibleAndIndependentOfBatching) {
  const std::string base = "perplexity -m " + kStories + " -f " + kTinyStories + " -c 128 --chunks 8" + device_flag();
  const Result one = chorus(base + " -b 128");   // one chunk per decode call
  const Result four = chorus(base + " -b 512");  // four chunks per decode call
  ASSERT_EQ(one.exit_code, 0) << one.err;
  ASSERT_EQ(four.exit_code, 0) << four.err;
  EXPECT_NE(four.err.find("n_seq=4"), std::string::npos) << four.err;
  EXPECT_EQ(one.out, four.out);
  EXPECT_EQ(one.out.rfind("[1]", 0), 0u) << one.out;
  EXPECT_NE(one.out.find(",[8]"), std::string::npos) << one.out;
  const size_t at = one.out.find("Final estimate: PPL = ");
  ASSERT_NE(at, std::string::npos) << one.out;
  const double ppl = std::strtod(one.out.c_str() + at + 22, nullptr);
  EXPECT_GT(ppl, 3.0);
  EXPECT_LT(ppl, 8.0);
  EXPECT_NE(one.out.find(" +/- "), std::string::npos) << one.out;
}

TEST(ChorusPerplexity, ATextShorterThanTwoChunksIsAClearError) {
  char path[] = "/tmp/chorus_short_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  const std::string text = "Once upon a time there was a cat.";
  ASSERT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  close(fd);
  const Result r = chorus("perplexity -m " + kStories + " -f " + path + " -c 128" + device_flag());
  std::remove(path);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("needs at least 256"), std::string::npos) << r.err;
}

// In process: perplexity through a Context (several chunks per decode call) against the same
// method over the plain C++ reference forward pass (F16-rounded KV cache, as on the GPU).
// Measured: within 3e-5 relative (fp16 rounding of K/V can differ by one ulp); limit 3e-4.
class PerplexityOnTheGpu : public test::GpuTest {};

TEST_F(PerplexityOnTheGpu, ThroughAContextMatchesTheCpuReferenceForwardPass) {
  const uint32_t n_ctx = 64, n_chunks = 3;
  const gguf::File file = gguf::File::open(kStories);
  const Tokenizer tok(load_vocab(file));
  const std::string text = slurp(kTinyStories).substr(0, 4000);
  const std::vector<int32_t> tokens = tok.encode(text, EncodeOptions{true, false});
  ASSERT_GE(tokens.size(), n_chunks * n_ctx);
  PerplexityOptions po;
  po.n_ctx = n_ctx;
  po.n_vocab = 512;
  po.max_chunks = n_chunks;
  po.bos = tok.vocab().bos();

  ref::ReferenceModel reference(kStories);
  const ChunkEvaluator cpu = [&](std::span<const std::vector<int32_t>> chunks, uint32_t first) {
    std::vector<float> out;
    for (const auto& c : chunks) {
      reference.reset();
      const std::vector<float> all = reference.forward(std::span<const int32_t>(c).first(c.size() - 1));
      out.insert(out.end(), all.begin() + static_cast<std::ptrdiff_t>(first) * 512, all.end());
    }
    return out;
  };
  const PerplexityResult want = perplexity(tokens, po, cpu);

  auto model = Model::load(kStories, test::device(0));
  for (const uint32_t per_call : {1u, 2u}) {
    Context ctx(*model, ContextOptions{n_ctx, per_call, 512});
    po.chunks_per_call = per_call;
    const PerplexityResult got = perplexity(tokens, po, context_evaluator(ctx));
    ASSERT_EQ(got.running.size(), want.running.size());
    for (size_t i = 0; i < got.running.size(); ++i)
      EXPECT_NEAR(got.running[i], want.running[i], 3e-4 * want.running[i]) << "chunk " << i << ", " << per_call;
    EXPECT_EQ(got.stats.count, want.stats.count);
  }
  EXPECT_GT(want.stats.ppl(), 2.0);
  EXPECT_LT(want.stats.ppl(), 10.0);
}

}  // namespace
}  // namespace chorus
