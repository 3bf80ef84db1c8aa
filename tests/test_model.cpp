// The forward pass on real models, on one device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/model.h"
#include "engine/quant.h"
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

// The device holds each row of a quantised tensor as the file's bytes followed by zeros up to
// a multiple of 16 bytes (engine/quant.h): SmolLM2's Q4_1 and Q8_0 rows of 576 elements are
// padded, read straight from the file into mapped memory and spread to their stride
// (engine/model.cpp, ReadPool); ffn_down's rows of 1536 need no padding. On a tensor split,
// attn_output's K slices are padded the same way.
std::vector<uint8_t> device_rows(vk::Device& dev, const DeviceTensor& t) {
  const uint64_t drb = *device_row_bytes(t.type, t.cols);
  std::vector<std::byte> bytes(drb * t.rows);
  dev.download(*t.mem, t.offset, bytes);
  std::vector<uint8_t> out(bytes.size());
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

TEST_F(GpuTest, UploadedQuantisedRowsAreTheFilesRowsPaddedTo16Bytes) {
  const std::string path = test::fetched_model("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2");
  ASSERT_TRUE(std::filesystem::exists(path));
  // Mapped device memory (lavapipe's: the file is read straight into it), and memory that is
  // never mapped (a discrete GPU's: the rows are padded on the host and copied through staging).
  vk::DeviceOptions staged;
  staged.physical_index = test::test_device_index();
  staged.force_staging = true;
  vk::Device staged_dev(test::instance(), staged);
  for (vk::Device* dev : {&test::device(0), &staged_dev}) {
    SCOPED_TRACE(dev == &staged_dev ? "through staging" : "read into mapped memory");
    auto model = Model::load(path, *dev);
    const gguf::File& f = model->file();
    const Shard& s = model->impl().shards.at(0);
    const auto expect_rows = [&](const DeviceTensor& t, const std::string& name, uint64_t first_row) {
      SCOPED_TRACE(name);
      const gguf::TensorInfo& info = f.require_tensor(name);
      ASSERT_EQ(t.type, info.type);
      ASSERT_EQ(t.cols, info.ne[0]);
      const uint64_t rb = info.row_bytes();
      const std::vector<uint8_t> want = rows_to_device(info.type, info.data.subspan(first_row * rb, rb * t.rows), t.cols, t.rows);
      const std::vector<uint8_t> got = device_rows(*dev, t);
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << "byte " << i;
    };
    EXPECT_EQ(*device_row_bytes(s.layers[0][LayerTensor::attn_q].type, 576), 368u);
    expect_rows(s.layers[0][LayerTensor::attn_q], "blk.0.attn_q.weight", 0);
    expect_rows(s.layers[0][LayerTensor::attn_v], "blk.0.attn_v.weight", 0);
    expect_rows(s.layers[29][LayerTensor::ffn_up], "blk.29.ffn_up.weight", 0);
    expect_rows(s.layers[29][LayerTensor::ffn_down], "blk.29.ffn_down.weight", 0);
    expect_rows(s.tok_embd, "token_embd.weight", 0);
  }

  // Tensor 1:1 over one device opened twice: each holds a K slice of attn_output, one or two of
  // the three kv groups (192 elements: rows of 120 bytes, padded to 128; or 384: 240 bytes).
  std::vector<vk::Device*> devices = {&test::device(0), &test::device(1)};
  auto split_model = Model::load(path, devices, split::SplitRequest{split::SplitMode::tensor, {1, 1}, 0});
  const gguf::TensorInfo& info = split_model->file().require_tensor("blk.3.attn_output.weight");
  const uint64_t qk = info.traits->block_elems, bb = info.traits->block_bytes, rb = info.row_bytes();
  bool padded = false;
  for (size_t d = 0; d < devices.size(); ++d) {
    SCOPED_TRACE("device " + std::to_string(d) + " of tensor 1:1");
    const Shard& sd = split_model->impl().shards.at(d);
    const DeviceTensor& o = sd.layers[3][LayerTensor::attn_output];
    ASSERT_LT(o.cols, info.ne[0]);
    const uint64_t drb = *device_row_bytes(o.type, o.cols), k0 = sd.spec.q_rows.begin;
    padded |= drb != o.cols / qk * bb;
    std::vector<uint8_t> want(drb * o.rows, 0);
    for (uint64_t r = 0; r < o.rows; ++r)
      std::memcpy(want.data() + r * drb, info.data.data() + r * rb + k0 / qk * bb, o.cols / qk * bb);
    EXPECT_EQ(device_rows(*devices[d], o), want);
  }
  EXPECT_TRUE(padded) << "neither K slice needed padding: the test no longer covers it";
}

}  // namespace
}  // namespace chorus
