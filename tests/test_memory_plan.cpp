// The memory planner (split/memory.h) against what Model::load and Context really allocate, and
// fitting a model into devices of unequal memory (simulated with per-device budgets).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <array>
#include <cstdio>
#include <memory>

#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/model_config.h"
#include "engine/tokenizer.h"
#include "engine/vocab.h"
#include "split/memory.h"
#include "tests/gpu.h"
#include "vkdevice/host_memory.h"

namespace chorus {
namespace {

struct Case {
  const char* name;
  std::vector<double> ratios;  // one per logical device
  split::SplitMode mode;
  split::ContextShape ctx;
  std::vector<uint32_t> groups = {};  // hybrid
};

std::string smollm2() { return test::fetched_model("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2"); }

// Within 2% (and a few KiB for tiny buffers, whose alignment padding is a larger fraction).
void expect_close(uint64_t planned, uint64_t allocated, const std::string& what) {
  const double slack = std::max(0.02 * static_cast<double>(allocated), 16.0 * 1024);
  EXPECT_LE(std::fabs(static_cast<double>(planned) - static_cast<double>(allocated)), slack)
      << what << ": planned " << planned << " bytes, allocated " << allocated;
}

class MemoryPlan : public ::testing::TestWithParam<Case> {};

TEST_P(MemoryPlan, PredictsEveryDevicesBytesWithinTwoPercentOfWhatIsAllocated) {
  const Case& c = GetParam();
  std::vector<std::unique_ptr<vk::Device>> owned;  // fresh devices: their allocators start empty
  std::vector<vk::Device*> devices;
  for (size_t d = 0; d < c.ratios.size(); ++d) {
    vk::DeviceOptions o;
    o.physical_index = test::test_device_index();
    o.opening = static_cast<uint32_t>(d);
    owned.push_back(std::make_unique<vk::Device>(test::instance(), o));
    devices.push_back(owned.back().get());
  }
  const std::string path = smollm2();
  const gguf::File f = gguf::File::open(path);
  const ModelConfig config = ModelConfig::from_gguf(f);
  split::SplitRequest req{c.mode, c.ratios, 0};
  req.groups = c.groups;
  const split::Plan plan = split::plan_split(model_shape(config, f), req);
  split::ContextShape ctx = c.ctx;
  for (vk::Device* d : devices) ctx.collective_per_device = ctx.collective_per_device || !vk::host_import_unavailable(*d).empty();
  const std::vector<split::DeviceMemory> planned = split::plan_memory(plan, ctx);

  auto model = Model::load(path, devices, req);
  Context context(*model, ContextOptions{ctx.n_ctx, ctx.n_seq, ctx.n_ubatch});
  // Grow the logits rows to what the shape says (a perplexity-style pass), so they are allocated.
  std::vector<int32_t> tokens(ctx.logit_rows, 1);
  (void)context.decode(0, tokens, ctx.logit_rows > 1);
  ASSERT_EQ(planned.size(), devices.size());
  for (size_t d = 0; d < devices.size(); ++d) {
    const vk::Allocator& a = devices[d]->allocator();
    const std::string who = std::string(c.name) + ", device " + std::to_string(d);
    expect_close(planned[d].weights, a.in_use("weights"), who + " weights");
    expect_close(planned[d].kv_cache, a.in_use("kv cache"), who + " KV cache");
    expect_close(planned[d].scratch, a.in_use("scratch"), who + " scratch");
    expect_close(planned[d].collective, a.in_use("collective"), who + " collective");
    expect_close(planned[d].total(), a.in_use(), who + " total");
  }
}

INSTANTIATE_TEST_SUITE_P(
    SmolLM2, MemoryPlan,
    ::testing::Values(Case{"one device", {1}, split::SplitMode::none, {2048, 1, 512, 1}},
                      // 3 KV heads on two devices: 2 and 1, so the KV caches differ by two to one.
                      Case{"tensor 1:1", {1, 1}, split::SplitMode::tensor, {4096, 1, 512, 1}},
                      Case{"tensor 5:3:1, 2 sequences, all logits", {5, 3, 1}, split::SplitMode::tensor, {1024, 2, 256, 256}},
                      Case{"layer 1:2:1", {1, 2, 1}, split::SplitMode::layer, {1024, 1, 128, 1}},
                      Case{"hybrid 2:2:1", {2, 2, 1}, split::SplitMode::hybrid, {1024, 1, 128, 1}, {0, 0, 1}}),
    [](const auto& param_info) {
      std::string n = param_info.param.name;
      for (char& ch : n)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return n;
    });

std::vector<int32_t> greedy(Model& model, uint32_t n_ctx, int n) {
  Context ctx(model, ContextOptions{n_ctx, 1, 64});
  const Tokenizer tok(load_vocab(model.file()));
  const std::vector<int32_t> prompt = tok.encode("Once upon a time", EncodeOptions{true, true});
  std::vector<float> logits = ctx.decode(0, prompt);
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    const int32_t next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(next);
    logits = ctx.decode(0, std::span(&next, 1));
  }
  return out;
}

TEST(Fit, UnequalBudgetsPutThreeQuartersOnTheLargerDeviceAndGiveOneDevicesTokens) {
  const std::string path = smollm2();
  const gguf::File f = gguf::File::open(path);
  const ModelConfig config = ModelConfig::from_gguf(f);
  std::vector<std::unique_ptr<vk::Device>> owned;
  std::vector<vk::Device*> devices;
  split::FitRequest fr;
  fr.model = model_shape(config, f);
  fr.split.mode = split::SplitMode::tensor;
  fr.ctx = split::ContextShape{1024, 1, 64, 1};
  for (const uint64_t budget : {384ull << 20, 128ull << 20}) {
    vk::DeviceOptions o;
    o.physical_index = test::test_device_index();
    o.opening = static_cast<uint32_t>(owned.size());
    o.memory_budget = budget;
    owned.push_back(std::make_unique<vk::Device>(test::instance(), o));
    devices.push_back(owned.back().get());
    fr.free_bytes.push_back(budget);
    fr.ctx.collective_per_device = fr.ctx.collective_per_device || !vk::host_import_unavailable(*devices.back()).empty();
  }
  const split::FitResult fitted = split::fit(fr);
  ASSERT_TRUE(fitted.fits) << fitted.refusal;
  const double first = static_cast<double>(fitted.memory[0].total()) /
                       static_cast<double>(fitted.memory[0].total() + fitted.memory[1].total());
  EXPECT_GT(first, 0.6) << "the 384 MiB device should hold about three quarters";
  std::vector<double> ratios;
  for (const auto& s : fitted.plan.devices) ratios.push_back(s.ratio);
  auto model = Model::load(path, devices, split::SplitRequest{split::SplitMode::tensor, ratios, 0});
  const std::vector<int32_t> split_tokens = greedy(*model, fitted.ctx.n_ctx, 12);
  for (size_t d = 0; d < devices.size(); ++d)
    EXPECT_LE(devices[d]->allocator().reserved(), devices[d]->allocator().budget()) << "device " << d;
  model.reset();

  auto alone = Model::load(path, test::device(0));
  EXPECT_EQ(split_tokens, greedy(*alone, 1024, 12));
}

struct Output {
  int exit_code = -1;
  std::string text;  // stdout and stderr
};

Output chorus(const std::string& args, const std::string& env = "") {
  Output r;
  FILE* p = popen(((env.empty() ? "" : env + " ") + CHORUS_BINARY + " " + args + " 2>&1").c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  for (size_t n; (n = fread(buf.data(), 1, buf.size(), p)) > 0;) r.text.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// The generated text in a `chorus run` log (stdout and stderr together): between the blank line
// after "prompt: N tokens" and the one before "stopped at".
std::string completion(const std::string& log) {
  const size_t at = log.find("prompt: ");
  const size_t start = log.find("\n\n", at);
  const size_t end = log.find("\n\nstopped at", start);
  return start == std::string::npos || end == std::string::npos ? std::string() : log.substr(start + 2, end - start - 2);
}

TEST(FitTool, AContextTooLargeShrinksWithAOneLineNoteAndAModelThatCannotFitIsRefusedBeforeUpload) {
  const std::string model = smollm2();
  Output r = chorus("run -m " + model + " --device 0 --memory-budget 160M -c 8192 --fit-ctx-min 512 -n 2 --temp 0 -p Hi");
  EXPECT_EQ(r.exit_code, 0) << r.text;
  EXPECT_NE(r.text.find("fit: context shrunk from 8192 to "), std::string::npos) << r.text;
  EXPECT_NE(r.text.find("context: "), std::string::npos) << r.text;

  r = chorus("run -m " + model + " --device 0,0 --memory-budget 60M,60M -n 2 -p Hi");
  EXPECT_EQ(r.exit_code, 1) << r.text;
  EXPECT_NE(r.text.find("device 0 needs"), std::string::npos) << r.text;
  EXPECT_NE(r.text.find("device 1 needs"), std::string::npos) << r.text;
  EXPECT_NE(r.text.find("missing"), std::string::npos) << r.text;
  EXPECT_EQ(r.text.find("loading weights"), std::string::npos) << "refused before any upload\n" << r.text;

  r = chorus("run -m " + model + " --device 0,0 --memory-budget 60M -n 2 -p Hi");
  EXPECT_EQ(r.exit_code, 2) << r.text;
  EXPECT_NE(r.text.find("--memory-budget gives 1 sizes for 2 devices"), std::string::npos) << r.text;
}

// "device 0/1 (...): weights 57.83 MiB, KV cache 30.00 MiB, scratch 7.57 MiB" lines of `chorus run`, in order.
std::vector<std::array<double, 3>> allocated_mib(const std::string& log) {
  std::vector<std::array<double, 3>> out;
  for (size_t at = log.find("): weights "); at != std::string::npos; at = log.find("): weights ", at + 1)) {
    std::array<double, 3> v{};
    if (std::sscanf(log.c_str() + at, "): weights %lf MiB, KV cache %lf MiB, scratch %lf MiB", &v[0], &v[1], &v[2]) == 3)
      out.push_back(v);
  }
  return out;
}

TEST(FitTool, FitPredictsWhatRunThenAllocatesOnEveryDeviceWithinTwoPercent) {
  const std::string model = smollm2();
  for (const std::string& placement : {std::string("--device 0"), std::string("--device 0,0 -ts 1,1"),
                                       std::string("--device 0,0,0 -ts 5,3,1"), std::string("--device 0,0 -sm layer")}) {
    const Output fit = chorus("fit -m " + model + " -c 1024 -o json " + placement);
    ASSERT_EQ(fit.exit_code, 0) << fit.text;
    const nlohmann::json plan = nlohmann::json::parse(fit.text);
    const Output run = chorus("run -m " + model + " -c 1024 -n 1 -p Hi " + placement);
    ASSERT_EQ(run.exit_code, 0) << run.text;
    const auto got = allocated_mib(run.text);
    ASSERT_EQ(got.size(), plan["devices"].size()) << placement << "\n" << run.text;
    for (size_t d = 0; d < got.size(); ++d) {
      const auto& dev = plan["devices"][d];
      const double mib = 1 << 20;
      const std::string who = placement + ", device " + std::to_string(d);
      EXPECT_NEAR(dev["weights_bytes"].get<double>() / mib, got[d][0], 0.02 * got[d][0] + 0.01) << who;
      EXPECT_NEAR(dev["kv_cache_bytes"].get<double>() / mib, got[d][1], 0.02 * got[d][1] + 0.01) << who;
      EXPECT_NEAR(dev["scratch_bytes"].get<double>() / mib, got[d][2], 0.02 * got[d][2] + 0.05) << who;
    }
  }
}

TEST(FitTool, AHalfSpeedDeviceGetsAThirdOfTheWorkTheSameTokensAndPredictedBesideMeasuredTime) {
  const std::string model = smollm2();
  const std::string common = "run -m " + model + " -c 512 -n 12 --temp 0 -p 'Once upon a time' ";
  const Output alone = chorus(common + "--device 0");
  ASSERT_EQ(alone.exit_code, 0) << alone.text;
  const Output split = chorus(common + "--device 0,0 --device-speed 1,0.5 --show-devices");
  ASSERT_EQ(split.exit_code, 0) << split.text;
  EXPECT_NE(split.text.find("fit: ratios follow each device's calibrated speed"), std::string::npos) << split.text;
  EXPECT_NE(split.text.find("x0.5 by --device-speed"), std::string::npos) << split.text;
  EXPECT_NE(split.text.find("device 1 (33.3%)"), std::string::npos) << split.text;
  EXPECT_NE(split.text.find("generation: predicted "), std::string::npos) << split.text;
  EXPECT_NE(split.text.find(" ms per token (weight reads at the calibrated speeds, reduce round trips), measured "), std::string::npos) << split.text;
  // --show-devices: each device's memory, busy fraction, waiting time and how often the reduces
  // waited for it last.
  const size_t view = split.text.find("devices: memory in use; over the last ");
  ASSERT_NE(view, std::string::npos) << split.text;
  size_t lines = 0;
  for (size_t at = split.text.find("% of reduce points", view); at != std::string::npos;
       at = split.text.find("% of reduce points", at + 1)) {
    const size_t start = split.text.rfind('\n', at) + 1;
    const std::string line = split.text.substr(start, at - start);
    EXPECT_NE(line.find("; busy "), std::string::npos) << line;
    EXPECT_NE(line.find(" ms per token), waiting "), std::string::npos) << line;
    ++lines;
  }
  EXPECT_EQ(lines, 2u) << split.text;
  EXPECT_FALSE(completion(alone.text).empty()) << alone.text;
  EXPECT_EQ(completion(alone.text), completion(split.text));
}

// `process: peak resident memory X MiB; the plan's device bytes Y MiB` (--show-devices): {X, Y}.
std::pair<double, double> peak_and_planned(const std::string& log) {
  const size_t at = log.find("process: peak resident memory ");
  if (at == std::string::npos) return {0, 0};
  double peak = 0, planned = 0;
  if (std::sscanf(log.c_str() + at, "process: peak resident memory %lf MiB; the plan's device bytes %lf MiB", &peak, &planned) != 2)
    return {0, 0};
  return {peak, planned};
}

// On lavapipe device memory is this process's memory, committed when a buffer is created
// (vk::Device::create_buffer): the peak RSS is the plan's bytes plus a fixed overhead — the
// libraries, the driver, and LLVM compiling the kernels at the first forward pass — measured at
// 397 MiB (448 MiB with the validation layer) in docs/memory.md since the decode kernels fuse
// the norm and the epilogues. The bound leaves room for other driver and library versions; the
// comparison between contexts holds whatever it is.
constexpr double kLavapipeOverheadMiB = 512;
// Sanitizer builds add shadow memory and a quarantine of freed blocks: no bound on the
// overhead holds there, but the comparison between contexts does, with ASan's quarantine off
// for the measured runs. With it on (256 MiB by default) freed blocks stay resident for a
// while and the peak moved by ~100 MiB between identical runs (1270-1369 MiB at -c 256, ASan
// build, CI's ASan options), more than half the KV cache's growth: the check failed once in CI.
// Off: 685.0 and 685.1 MiB at -c 256, 769.3 and 769.6 at -c 4096 (+84.3, the plan's +84.4).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#if defined(__SANITIZE_ADDRESS__)
constexpr const char* kNoQuarantine =
    " ASAN_OPTIONS=\"${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0:thread_local_quarantine_size_kb=0\"";
#else
constexpr const char* kNoQuarantine = "";
#endif

TEST(FitTool, PeakResidentMemoryStaysWithinThePlanPlusTheFixedOverheadAndGrowsWithTheContext) {
  const std::string model = smollm2();
  if (test::instance().devices().at(test::test_device_index()).type != vk::DeviceType::cpu)
    GTEST_SKIP() << "the device's memory is not this process's memory (not a CPU device)";
  std::vector<std::pair<double, double>> runs;  // {peak RSS, planned} in MiB
  for (const char* ctx : {"256", "4096"}) {
    // Mesa's on-disk shader cache and chorus's pipeline list off: both runs compile the same
    // kernels with LLVM one after another at the first forward pass, so both peaks hold the same
    // transient. With them on, a run whose kernels an earlier run had compiled peaked ~90 MiB
    // lower, and builds ahead of time overlapping the load moved the peak: the KV cache's growth
    // was hidden (measured: 581.6 MiB at -c 256 against 567.5 at -c 4096).
    const Output r = chorus("run -m " + model + " --device 0 -c " + ctx + " -n 4 --temp 0 -p 'Once upon a time' --show-devices",
                            std::string("MESA_SHADER_CACHE_DISABLE=true CHORUS_NO_PIPELINE_CACHE=1") + kNoQuarantine);
    ASSERT_EQ(r.exit_code, 0) << r.text;
    runs.push_back(peak_and_planned(r.text));
    ASSERT_GT(runs.back().second, 0) << r.text;
    if (!kSanitized) {
      EXPECT_LE(runs.back().first, runs.back().second + kLavapipeOverheadMiB) << "-c " << ctx << "\n" << r.text;
    }
  }
  const double planned_more = runs[1].second - runs[0].second;  // the KV cache of 3840 more positions: 84 MiB
  EXPECT_GT(planned_more, 64);
  // The larger context's KV cache is resident from the start: at least half its extra bytes show.
  EXPECT_GE(runs[1].first - runs[0].first, planned_more / 2) << "peak RSS " << runs[0].first << " MiB at -c 256, "
                                                              << runs[1].first << " MiB at -c 4096";
}

TEST(FitTool, ThreeUnequalDevicesInAHybridSplitGiveOneDevicesTokens) {
  const std::string model = smollm2();
  const std::string common = "run -m " + model + " -c 512 -n 12 --temp 0 -p 'Once upon a time' ";
  const Output alone = chorus(common + "--device 0");
  ASSERT_EQ(alone.exit_code, 0) << alone.text;
  // Two devices of one speed and one at half: groups 0,0,1 chosen from the calibration.
  const Output hybrid = chorus(common + "--device 0,0,0 -sm hybrid --device-speed 1,1,0.5");
  ASSERT_EQ(hybrid.exit_code, 0) << hybrid.text;
  EXPECT_NE(hybrid.text.find("fit: hybrid groups 0,0,1"), std::string::npos) << hybrid.text;
  EXPECT_NE(hybrid.text.find("hybrid split over 3 devices, groups 0,0,1"), std::string::npos) << hybrid.text;
  EXPECT_FALSE(completion(alone.text).empty()) << alone.text;
  EXPECT_EQ(completion(alone.text), completion(hybrid.text));
}

}  // namespace
}  // namespace chorus
