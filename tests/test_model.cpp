// The forward pass on real models, on one device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/model.h"
#include "engine/weights.h"
#include "shaders/registry.h"
#include "tests/gpu.h"
#include "tests/reference_model.h"

namespace chorus {
namespace {

using test::GpuTest;

using test::shared_model;

std::vector<int32_t> read_ids(const std::string& path) {
  std::ifstream in(path);
  std::vector<int32_t> ids;
  int32_t v = 0;
  while (in >> v) ids.push_back(v);
  return ids;
}

int32_t argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

TEST_F(GpuTest, Stories260KGreedyFromBosReproducesTheDocumented256Tokens) {
  const auto want = read_ids(shared_model("stories260K.greedy-t0.ids.txt"));
  ASSERT_EQ(want.size(), 256u);
  auto model = Model::load(shared_model("stories260K.gguf"), test::device(0));
  Context ctx(*model, ContextOptions{512, 1, 512});
  std::vector<int32_t> got;
  int32_t token = 1;  // BOS
  for (size_t i = 0; i < want.size(); ++i) {
    const auto logits = ctx.decode(0, std::span(&token, 1));
    token = argmax(logits);
    got.push_back(token);
    if (got.back() != want[i]) break;
  }
  const auto first = std::mismatch(want.begin(), want.end(), got.begin(), got.end());
  EXPECT_EQ(got, want) << "first difference at step " << (first.first - want.begin());
}

TEST_F(GpuTest, PrefillInMicroBatchesGivesTheSameLogitsAsOneTokenAtATime) {
  const auto ids = read_ids(shared_model("stories260K.greedy-t0.ids.txt"));
  std::vector<int32_t> prompt{1};
  prompt.insert(prompt.end(), ids.begin(), ids.begin() + 40);
  auto model = Model::load(shared_model("stories260K.gguf"), test::device(0));
  Context stepwise(*model, ContextOptions{128, 1, 512});
  std::vector<float> want;
  for (int32_t t : prompt) {
    const auto l = stepwise.decode(0, std::span(&t, 1));
    want.insert(want.end(), l.begin(), l.end());
  }
  for (uint32_t ubatch : {7u, 16u, 512u}) {
    Context batched(*model, ContextOptions{128, 1, ubatch});
    const auto got = batched.decode(0, prompt, true);
    // Prefill's fp16 matmul variant stages activations in f16; one-token decode does not.
    EXPECT_LE(test::nmse(want, got), 1e-7) << "n_ubatch " << ubatch;
  }
}

TEST_F(GpuTest, DecodeAllocatesNoMemoryAndBuildsNoPipelinePerToken) {
  auto model = Model::load(shared_model("stories260K.gguf"), test::device(0));
  Context ctx(*model, ContextOptions{128, 1, 512});
  int32_t token = 1;
  for (int i = 0; i < 2; ++i) token = argmax(ctx.decode(0, std::span(&token, 1)));  // warm-up builds the pipelines
  // (and those an earlier run listed, which threads may still be building: ops::Kernels::prepare)
  for (const Shard& s : model->impl().shards) s.kernels->wait_prepared();
  vk::Device& dev = test::device(0);
  const uint64_t allocations = dev.allocator().allocations();
  const uint64_t pipelines = dev.counters().pipelines.load();
  for (int i = 0; i < 16; ++i) token = argmax(ctx.decode(0, std::span(&token, 1)));
  EXPECT_EQ(dev.allocator().allocations(), allocations) << "decode allocated device memory";
  EXPECT_EQ(dev.counters().pipelines.load(), pipelines) << "decode built pipelines";
}

TEST_F(GpuTest, LoadSummaryAccountsWeightsKvCacheAndScratchOnTheDevice) {
  auto model = Model::load(shared_model("stories260K.gguf"), test::device(0));
  Context ctx(*model, ContextOptions{256, 2, 64});
  const auto use = ctx.memory_use();
  ASSERT_EQ(use.size(), 1u);
  uint64_t tensor_bytes = 0;
  for (const auto& t : model->file().tensors()) tensor_bytes += t.size;
  EXPECT_GE(use[0].weights, tensor_bytes);
  EXPECT_LE(use[0].weights, tensor_bytes + 48 * 256) << "more than the tensors plus alignment padding";
  const auto& c = model->config();
  EXPECT_EQ(use[0].kv_cache, 2ull * c.n_layer * 2 * c.n_head_kv * 256 * c.head_dim * 2);  // K and V, f16, 2 sequences
  EXPECT_GT(use[0].scratch, 0u);
}

TEST_F(GpuTest, IndependentSequencesInOneBatchMatchEachSequenceAlone) {
  const auto ids = read_ids(shared_model("stories260K.greedy-t0.ids.txt"));
  const std::vector<int32_t> a(ids.begin(), ids.begin() + 30), b(ids.begin() + 50, ids.begin() + 71);
  auto model = Model::load(shared_model("stories260K.gguf"), test::device(0));
  Context alone(*model, ContextOptions{64, 1, 512});
  const auto la = alone.decode(0, a, true);
  alone.clear(0);
  const auto lb = alone.decode(0, b, true);
  Context both(*model, ContextOptions{64, 2, 512});
  const Context::Segment segs[] = {{0, a, true}, {1, b, true}};
  const auto lab = both.decode(segs);
  const size_t n_vocab = model->config().n_vocab;
  ASSERT_EQ(lab.size(), (a.size() + b.size()) * n_vocab);
  EXPECT_LE(test::nmse(la, std::span(lab).first(la.size())), 1e-10);
  EXPECT_LE(test::nmse(lb, std::span(lab).subspan(la.size())), 1e-10);
}

TEST_F(GpuTest, BadTokenIdsAndOverlongSequencesAreRejectedWithTheReason) {
  auto model = Model::load(shared_model("stories260K.gguf"), test::device(0));
  Context ctx(*model, ContextOptions{8, 1, 8});
  const std::vector<int32_t> bad{1, 512};
  EXPECT_THROW(ctx.decode(0, bad), std::invalid_argument);
  const std::vector<int32_t> long_seq(9, 1);
  EXPECT_THROW(ctx.decode(0, long_seq), std::invalid_argument);
  EXPECT_THROW(ctx.decode(1, std::vector<int32_t>{1}), std::invalid_argument);
}

TEST_F(GpuTest, TinyRandomF16LlamaLogitsMatchTheCppReferenceForwardPass) {
  const std::string path = shared_model("llama-2-tiny-random.gguf");
  const std::vector<int32_t> prompt{1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203, 29889};
  ref::ReferenceModel reference(path, {.f16_kv_cache = true});
  const auto want = reference.forward(prompt);
  auto model = Model::load(path, test::device(0));
  Context ctx(*model, ContextOptions{64, 1, 512});
  const auto got = ctx.decode(0, prompt, true);
  EXPECT_LE(test::nmse(want, got), 1e-6);
  // Then generation continues from the cache, one token at a time.
  std::vector<int32_t> next{argmax(std::span(got).last(model->config().n_vocab))};
  const auto want2 = reference.forward(next);
  const auto got2 = ctx.decode(0, next);
  EXPECT_LE(test::nmse(want2, got2), 1e-6);
}

TEST_F(GpuTest, SmolLM2Q4_1LogitsMatchTheIndependentNumPyForwardPassWithin1e3) {
  const std::string path = test::fetched_model("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2");
  ASSERT_TRUE(std::filesystem::exists(path));
  auto model = Model::load(path, test::device(0));
  const uint32_t V = model->config().n_vocab;
  const ref::SmolExpected e = ref::read_smol_expected(V);
  ASSERT_FALSE(e.ids.empty()) << "cannot read tests/data/smollm2/{prompt.ids.txt,logits.bin}";
  Context ctx(*model, ContextOptions{64, 1, 512});
  const auto logits = ctx.decode(0, e.ids, true);
  ASSERT_EQ(logits.size(), e.ids.size() * V);
  for (size_t k = 0; k < e.positions.size(); ++k) {
    const size_t p = size_t(e.positions[k]);
    double num = 0, den = 0;
    for (size_t j = 0; j < V; ++j) {
      const double want = e.logits[k * V + j], d = double(logits[p * V + j]) - want;
      num += d * d;
      den += want * want;
    }
    // The GPU keeps K and V in F16 (the NumPy pass in F32): about 2e-4 of the budget.
    EXPECT_LE(std::sqrt(num / den), 1e-3) << "position " << p;
  }
  // Decoding the same prompt one token at a time (matrix-vector kernels) agrees with the
  // batched prefill to f16 rounding (the fp16 matmul tiles): with the kernels a CPU device
  // gets, and with the GPU kernels (the CPU capability hidden) on the same device.
  vk::DeviceOptions gpu_kernels;
  gpu_kernels.physical_index = test::test_device_index();
  gpu_kernels.disabled_caps = shaders::kCpu;
  vk::Device plain_dev(test::instance(), gpu_kernels);
  for (vk::Device* dev : {&test::device(0), &plain_dev}) {
    auto m = Model::load(path, *dev);
    Context stepwise(*m, ContextOptions{64, 1, 512});
    std::vector<float> last;
    for (int32_t t : e.ids) last = stepwise.decode(0, std::span(&t, 1));
    EXPECT_LE(test::nmse(std::span(logits).last(V), last), 1e-6)
        << "kernels {" << shaders::capability_names(dev->capabilities()) << "}";
  }
}

}  // namespace
}  // namespace chorus
