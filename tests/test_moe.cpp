// The mixture-of-experts families (qwen3moe, and Mixtral's layout in llama) on small random models
// written by the test with their real tensor layout and metadata (blk.N.ffn_gate_inp [n_embd,
// n_expert], the expert stacks ffn_{gate,up,down}_exps [.., .., n_expert], {arch}.expert_count /
// expert_used_count, qwen3moe's expert_feed_forward_length and QK-norm): the GPU forward pass
// against the independent NumPy reference (scripts/numpy_reference.py: float64, written from the
// model's definition) on one
// device and on tensor splits 1:1 and 5:3:1, for a prefill long enough that every expert gets
// several tokens (the grouped products) and for decode tokens after it (one product per slot);
// also on a layer split 1:1.
// Also: a decode token is one submit per device and the layer reduces twice whatever k is; each
// device holds its planned bytes of every expert. And the kernels alone (engine/ops/moe.h)
// against plain C++: moe_route (softmax, top-k with ties to the lower index, renormalised or
// not) and mul_mm_id for every weight format in slot mode and grouped mode, also with the expert
// stack bound in windows of whole experts. Tolerance of mul_mm_id: normalised MSE 1e-10 against
// a double-precision product of the dequantised weights (every dequantised value is exact in f32,
// so only the f32 summation order counts), as for mul_mv.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <random>
#include <unistd.h>

#include "engine/model.h"
#include "engine/ops/moe.h"
#include "engine/quant.h"
#include "split/memory.h"
#include "tests/gpu.h"
#include "tests/model_writer.h"
#include "tests/reference_model.h"

namespace chorus {
namespace {

struct TinyMoe {
  const char* name;
  uint32_t E, H, KV, D, F, V, n_expert, k;  // F: each expert's FFN width
  GgmlType router, gate, up, down, attn;
  const char* arch = "qwen3moe";  // or "llama": Mixtral's layout (llama attention, no QK-norm, the
                                  // experts' width in feed_forward_length)
};
// n_expert 8, k 2; F16/Q8_0 experts with an F16 ffn_down (K slices of any width, so 5:3:1
// gives every device rows of every expert), an F32 router.
constexpr TinyMoe kMixed{"mixed", 64, 4, 2, 32, 96, 100, 8, 2, GgmlType::F32, GgmlType::Q8_0, GgmlType::F16,
                         GgmlType::F16, GgmlType::Q8_0};
// K-quants as in a Q4_K_M file (Q4_K gate/up, Q6_K down, Q8_0 router), n_ff of two 256-blocks,
// n_expert 6, k 3.
constexpr TinyMoe kKQuants{"kquants", 256, 4, 2, 64, 512, 100, 6, 3, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q4_K,
                           GgmlType::Q6_K, GgmlType::Q4_K};
// Mixtral's layout in llama: 8 experts, k 2, Q8_0/F16 experts.
constexpr TinyMoe kMixtral{"mixtral", 64, 4, 2, 16, 96, 100, 8, 2, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q8_0,
                           GgmlType::F16, GgmlType::Q8_0, "llama"};

// `used`: expert_used_count to write instead of m.k (0: m.k); `with_count`: write expert_count.
std::string write_tiny_moe(const TinyMoe& m, uint32_t used = 0, bool with_count = true) {
  const std::string a = m.arch;
  const bool qwen = a == "qwen3moe";
  std::mt19937 rng(11);
  test::ModelWriter w;
  w.kv_str("general.architecture", a);
  w.kv_str("general.name", "tiny random " + a + " with experts, " + m.name + " (chorus test)");
  w.kv_u32(a + ".context_length", 256);
  w.kv_u32(a + ".embedding_length", m.E);
  w.kv_u32(a + ".block_count", 2);
  if (qwen) {
    w.kv_u32(a + ".feed_forward_length", 4 * m.E);  // the dense width, unused by an all-MoE model
    w.kv_u32(a + ".expert_feed_forward_length", m.F);
  } else {
    w.kv_u32(a + ".feed_forward_length", m.F);  // Mixtral: the experts' width
  }
  if (with_count) w.kv_u32(a + ".expert_count", m.n_expert);
  w.kv_u32(a + ".expert_used_count", used ? used : m.k);
  w.kv_u32(a + ".attention.head_count", m.H);
  w.kv_u32(a + ".attention.head_count_kv", m.KV);
  if (qwen) {
    w.kv_u32(a + ".attention.key_length", m.D);
    w.kv_u32(a + ".attention.value_length", m.D);
  }
  w.kv_f32(a + ".attention.layer_norm_rms_epsilon", 1e-6f);
  w.kv_f32(a + ".rope.freq_base", 1000000.0f);
  w.tensor("token_embd.weight", m.E, m.V, GgmlType::F16, 1.0f, rng);
  w.tensor("output_norm.weight", m.E, 1, GgmlType::F32, 1.0f, rng);
  w.tensor("output.weight", m.E, m.V, GgmlType::Q8_0, 0.2f, rng);
  for (uint32_t l = 0; l < 2; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    w.tensor(b + "attn_norm.weight", m.E, 1, GgmlType::F32, 1.0f, rng);
    w.tensor(b + "attn_q.weight", m.E, m.H * m.D, m.attn, 0.2f, rng);
    w.tensor(b + "attn_k.weight", m.E, m.KV * m.D, m.attn, 0.2f, rng);
    w.tensor(b + "attn_v.weight", m.E, m.KV * m.D, GgmlType::F16, 0.2f, rng);
    if (qwen) {
      w.tensor(b + "attn_q_norm.weight", m.D, 1, GgmlType::F32, 1.0f, rng);
      w.tensor(b + "attn_k_norm.weight", m.D, 1, GgmlType::F32, 1.0f, rng);
    }
    w.tensor(b + "attn_output.weight", m.H * m.D, m.E, m.attn, 0.2f, rng);
    w.tensor(b + "ffn_norm.weight", m.E, 1, GgmlType::F32, 1.0f, rng);
    // Router logits of a few units: a softmax neither flat nor one-hot, the k-th and (k+1)-th
    // experts of every token well apart (relative gap above 1e-4, far above f32 rounding).
    w.tensor(b + "ffn_gate_inp.weight", m.E, m.n_expert, m.router, 4.0f / std::sqrt(static_cast<float>(m.E)), rng);
    w.tensor(b + "ffn_gate_exps.weight", m.E, m.F, m.n_expert, m.gate, 0.2f, rng);
    w.tensor(b + "ffn_up_exps.weight", m.E, m.F, m.n_expert, m.up, 0.2f, rng);
    w.tensor(b + "ffn_down_exps.weight", m.F, m.E, m.n_expert, m.down, 0.2f, rng);
  }
  const auto dir = std::filesystem::temp_directory_path() / ("chorus-moe-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return w.write((dir / ("tiny-" + a + "-" + m.name + ".gguf")).string());
}

// A prompt of 48 tokens: 96 slots over the experts, several tokens for each.
std::vector<int32_t> long_prompt(uint32_t n_vocab) {
  std::vector<int32_t> p;
  for (uint32_t i = 0; i < 48; ++i) p.push_back(static_cast<int32_t>((i * 37 + 11) % n_vocab));
  return p;
}
const std::vector<int32_t> kDecoded{42, 7, 99};

struct Split {
  split::SplitMode mode;
  std::vector<double> ratios;
};
const Split kOne{split::SplitMode::none, {1}}, kHalves{split::SplitMode::tensor, {1, 1}},
    kFiveThreeOne{split::SplitMode::tensor, {5, 3, 1}}, kLayerHalves{split::SplitMode::layer, {1, 1}};

std::string split_name(const Split& sp) {
  std::string s;
  for (double v : sp.ratios) s += (s.empty() ? "" : "_") + std::to_string(static_cast<int>(v));
  return sp.mode == split::SplitMode::none ? "one_device" : std::string(split::to_string(sp.mode)) + "_" + s;
}

std::vector<vk::Device*> devices_for(const Split& sp) {
  std::vector<vk::Device*> out;
  for (size_t i = 0; i < sp.ratios.size(); ++i) out.push_back(&test::device(static_cast<int>(i)));
  return out;
}

// The NumPy reference's logits of `ids` at `positions` (it runs python3 with gguf and numpy).
ref::ExpectedLogits numpy_logits(const std::string& path, const std::vector<int32_t>& ids,
                                 const std::vector<int32_t>& positions, uint32_t n_vocab) {
  const std::filesystem::path dir = std::filesystem::path(path).parent_path() / "numpy";
  std::string list, pos;
  for (int32_t t : ids) list += (list.empty() ? "" : " ") + std::to_string(t);
  for (int32_t p : positions) pos += (pos.empty() ? "" : ",") + std::to_string(p);
  const std::string cmd = "python3 '" + std::string(CHORUS_SOURCE_DIR) + "/scripts/numpy_reference.py' logits -m '" +
                          path + "' --ids '" + list + "' --positions " + pos + " --out '" + dir.string() +
                          "' >/dev/null 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0)
      << cmd << "\nfailed: it needs python3 with the gguf and numpy packages (scripts/install-deps.sh installs them)";
  return ref::read_expected_logits(dir.string(), n_vocab);
}

// (split, model)
class MoeFamilies : public test::GpuTestP<std::tuple<const Split*, const TinyMoe*>> {};

TEST_P(MoeFamilies, PrefillAndDecodeLogitsMatchTheIndependentNumPyReferenceWithin1e3) {
  const Split& sp = *std::get<0>(GetParam());
  const TinyMoe& tiny = *std::get<1>(GetParam());
  const std::string path = write_tiny_moe(tiny);
  const std::vector<int32_t> prompt = long_prompt(tiny.V);
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), kDecoded.begin(), kDecoded.end());
  const int32_t P = static_cast<int32_t>(prompt.size());
  // Prefill rows 0, 17 and P-1; then each decoded token's row.
  const std::vector<int32_t> positions{0, 17, P - 1, P, P + 1, P + 2};
  const ref::ExpectedLogits e = numpy_logits(path, all, positions, tiny.V);
  ASSERT_EQ(e.ids, all) << "cannot read the NumPy reference's output";

  auto model = Model::load(path, devices_for(sp), split::SplitRequest{sp.mode, sp.ratios, 0});
  const ModelConfig& c = model->config();
  ASSERT_EQ(c.n_expert, tiny.n_expert);
  ASSERT_EQ(c.n_expert_used, tiny.k);
  ASSERT_EQ(c.n_ff, tiny.F);
  ASSERT_EQ(c.qk_norm, std::string(tiny.arch) == "qwen3moe");
  ASSERT_EQ(c.rope_neox, std::string(tiny.arch) == "qwen3moe");
  ASSERT_TRUE(c.expert_norm_top_k);
  if (sp.mode == split::SplitMode::tensor) {
    for (const split::DeviceShard& s : model->plan().devices)
      EXPECT_GT(s.ffn.size(), 0u) << "every device holds rows of every expert";
  }
  const uint32_t V = c.n_vocab;
  Context ctx(*model, ContextOptions{128, 1, 512});
  const std::vector<float> got = ctx.decode(0, prompt, true);  // one micro-batch: grouped by expert
  for (size_t k = 0; k < 3; ++k) {
    const std::span<const float> want(e.logits.data() + k * V, V), row(got.data() + size_t(e.positions[k]) * V, V);
    EXPECT_LE(test::nmse(want, row), 1e-6) << "prefill position " << e.positions[k] << " (relative L2 above 1e-3)";
  }
  for (size_t i = 0; i < kDecoded.size(); ++i) {
    const std::vector<int32_t> next{kDecoded[i]};
    const std::vector<float> row = ctx.decode(0, next);
    const std::span<const float> want(e.logits.data() + (3 + i) * V, V);
    EXPECT_LE(test::nmse(want, row), 1e-6) << "decoding token " << kDecoded[i] << " at position " << P + i;
  }
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
}

const auto kTestName = [](const auto& p) {
  return std::string(std::get<1>(p.param)->name) + "_" + split_name(*std::get<0>(p.param));
};
INSTANTIATE_TEST_SUITE_P(NumPy, MoeFamilies,
                         ::testing::Combine(::testing::Values(&kOne, &kHalves, &kFiveThreeOne, &kLayerHalves),
                                            ::testing::Values(&kMixed, &kMixtral)),
                         kTestName);
// K-quant experts: ffn_down's 256-element blocks cut n_ff 512 in halves at most.
INSTANTIATE_TEST_SUITE_P(NumPyKQuants, MoeFamilies,
                         ::testing::Combine(::testing::Values(&kOne, &kHalves), ::testing::Values(&kKQuants)),
                         kTestName);

class MoeSplit : public test::GpuTestP<const Split*> {};

TEST_P(MoeSplit, DecodeIsOneSubmitPerDeviceAndTwoReducePointsPerLayerWhateverK) {
  const Split& sp = *GetParam();
  const std::string path = write_tiny_moe(kMixed);
  const std::vector<vk::Device*> devices = devices_for(sp);
  auto model = Model::load(path, devices, split::SplitRequest{sp.mode, sp.ratios, 0});
  const uint32_t n_layer = model->config().n_layer;
  Context ctx(*model, ContextOptions{128, 1, 64});
  const std::vector<int32_t> prompt = long_prompt(model->config().n_vocab);
  const auto stats_p = *ctx.collective_stats();
  ctx.decode(0, prompt);  // one micro-batch of 48 tokens (64 per micro-batch)
  EXPECT_EQ(ctx.collective_stats()->reduces - stats_p.reduces, 2u * n_layer) << "the prefill's reduce points";
  int32_t token = 5;
  ctx.decode(0, std::span(&token, 1));  // the first decode token records the step
  std::vector<uint64_t> submits0;
  for (vk::Device* d : devices) submits0.push_back(d->counters().submits.load());
  const uint64_t recordings0 = ctx.counters().recordings, waits0 = ctx.counters().host_waits;
  const auto stats0 = *ctx.collective_stats();
  constexpr uint64_t kTokens = 8;
  for (uint64_t i = 0; i < kTokens; ++i) {
    const auto logits = ctx.decode(0, std::span(&token, 1));
    token = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  for (size_t d = 0; d < devices.size(); ++d)
    EXPECT_EQ(devices[d]->counters().submits.load() - submits0[d], kTokens) << "vkQueueSubmit calls of device " << d;
  EXPECT_EQ(ctx.counters().host_waits - waits0, kTokens) << "host waits of the main thread";
  EXPECT_EQ(ctx.counters().recordings, recordings0) << "decode re-recorded its command buffers";
  const auto stats = *ctx.collective_stats();
  EXPECT_EQ(stats.reduce_submits, 0u);
  EXPECT_EQ(stats.reduces - stats0.reduces, kTokens * 2 * n_layer) << "reduce points: 2 per layer per token, k = 2";
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
}

TEST_P(MoeSplit, EachDeviceHoldsItsPlannedBytesOfEveryExpertAndItsPlannedScratch) {
  const Split& sp = *GetParam();
  const std::string path = write_tiny_moe(kMixed);
  const std::vector<vk::Device*> devices = devices_for(sp);
  std::vector<uint64_t> weights0, scratch0;
  for (vk::Device* d : devices) {
    weights0.push_back(d->allocator().in_use("weights"));
    scratch0.push_back(d->allocator().in_use("scratch"));
  }
  auto model = Model::load(path, devices, split::SplitRequest{sp.mode, sp.ratios, 0});
  const split::ModelShape& m = model->plan().model;
  ASSERT_EQ(m.n_expert, 8u);
  const auto planned = split::weight_bytes(model->plan());
  uint64_t experts = 0;
  for (size_t d = 0; d < devices.size(); ++d) {
    const uint64_t held = devices[d]->allocator().in_use("weights") - weights0[d];
    // Allocations are rounded up to the device's alignment: a few hundred bytes per tensor at most.
    EXPECT_GE(held, planned[d].total()) << "device " << d;
    EXPECT_LE(held, planned[d].total() + 64 * 256) << "device " << d << " holds more than its shard";
    EXPECT_GT(planned[d].router, 0u) << "device " << d << " holds the router";
    experts += planned[d].ffn;
  }
  EXPECT_EQ(experts, split::model_bytes(m).ffn) << "the experts' slices add up to one copy of every expert";
  const split::ContextShape cs{128, 1, 64, 1, false};
  Context ctx(*model, ContextOptions{cs.n_ctx, cs.n_seq, cs.n_ubatch});
  const auto mem = split::plan_memory(model->plan(), cs);
  for (size_t d = 0; d < devices.size(); ++d) {
    const double held = static_cast<double>(devices[d]->allocator().in_use("scratch") - scratch0[d]);
    EXPECT_NEAR(held, static_cast<double>(mem[d].scratch), 0.02 * static_cast<double>(mem[d].scratch))
        << "device " << d << "'s scratch against split/memory.cpp's count";
  }
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
}

INSTANTIATE_TEST_SUITE_P(Splits, MoeSplit, ::testing::Values(&kHalves, &kFiveThreeOne),
                         [](const auto& p) { return split_name(*p.param); });

// ---- the metadata ------------------------------------------------------------------------------

// Loading fails with a gguf::Error naming `what`.
void expect_refused(const std::string& path, const std::string& what) {
  try {
    (void)ModelConfig::from_gguf(gguf::File::open(path));
    ADD_FAILURE() << path << " loaded";
  } catch (const gguf::Error& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
}

TEST(MoeConfig, Qwen3MoeWithoutExpertCountOrWithMoreExpertsUsedThanThereAreIsRefusedNamingTheKey) {
  expect_refused(write_tiny_moe(kMixed, 0, false), "qwen3moe.expert_count");
  expect_refused(write_tiny_moe(kMixed, 9), "qwen3moe.expert_used_count (9) is more than expert_count (8)");
}

TEST(MoeConfig, LlamaWithExpertCountReadsTheExpertTableAndWithoutItTheDenseOne) {
  const std::string path = write_tiny_moe(kMixtral);
  const ModelConfig c = ModelConfig::from_gguf(gguf::File::open(path));
  EXPECT_EQ(c.n_expert, 8u);
  EXPECT_EQ(c.n_ff, 96u);
  EXPECT_EQ(layer_tensor(c, 3, LayerTensor::ffn_down), "blk.3.ffn_down_exps.weight");
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
  // Without llama.expert_count the file is a dense llama, whose blk.0.ffn_gate.weight it lacks.
  expect_refused(write_tiny_moe(kMixtral, 0, false), "blk.0.ffn_gate.weight");
}

// ---- the kernels alone -------------------------------------------------------------------------

using MoeKernels = test::GpuTest;

TEST_F(MoeKernels, RouteTakesTheTopKOfTheSoftmaxWithTiesToTheLowerIndexAndRenormalises) {
  vk::Device& dev = test::device(0);
  ops::Kernels k(dev);
  constexpr uint32_t E = 7, K = 3, T = 5;
  std::vector<float> logits = test::random_floats(T * E, 3, 4.0f);
  logits[2 * E + 1] = logits[2 * E + 4] = 9.0f;  // token 2: a tie for first place, expert 1 before 4
  const vk::Buffer lb = test::make_buffer(dev, logits);
  for (bool norm : {true, false}) {
    vk::Buffer ids = dev.create_buffer(T * K * 4, vk::BufferKind::Host, "test"),
               wts = dev.create_buffer(T * K * 4, vk::BufferKind::Host, "test");
    test::run_on(dev, [&](vk::CommandBuffer& cb) { ops::moe_route(k, cb, lb, 0, ids, 0, wts, 0, {E, K, T, norm}); });
    const auto* gi = reinterpret_cast<const uint32_t*>(ids.mapped());
    const auto* gw = reinterpret_cast<const float*>(wts.mapped());
    for (uint32_t t = 0; t < T; ++t) {
      std::vector<double> p(E);
      double mx = -1e30, sum = 0;
      for (uint32_t e = 0; e < E; ++e) mx = std::max<double>(mx, logits[t * E + e]);
      for (uint32_t e = 0; e < E; ++e) sum += p[e] = std::exp(logits[t * E + e] - mx);
      std::vector<uint32_t> order(E);
      std::iota(order.begin(), order.end(), 0u);
      std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return p[a] > p[b]; });
      double chosen = 0;
      for (uint32_t j = 0; j < K; ++j) chosen += p[order[j]] / sum;
      for (uint32_t j = 0; j < K; ++j) {
        EXPECT_EQ(gi[t * K + j], order[j]) << "token " << t << " slot " << j;
        const double want = p[order[j]] / sum / (norm ? chosen : 1.0);
        EXPECT_NEAR(gw[t * K + j], want, 1e-6 * want + 1e-9) << "token " << t << " slot " << j << " norm " << norm;
      }
    }
    EXPECT_EQ(gi[2 * K], 1u);
    EXPECT_EQ(gi[2 * K + 1], 4u);
  }
}

// A stack of E experts of N rows of K weights of `type` in the device layout, and their values.
struct ExpertStack {
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // [E][N][K]
};
ExpertStack make_stack(GgmlType type, uint32_t E, uint32_t N, uint32_t K, uint64_t seed) {
  const uint64_t rb = *row_bytes(type, K), drb = *device_row_bytes(type, K), rows = uint64_t(E) * N;
  ExpertStack s;
  s.bytes.assign((drb * rows + 3) / 4 * 4, 0);
  s.values.resize(rows * K);
  const std::vector<float> src = test::random_floats(rows * K, seed);
  std::vector<uint8_t> row(rb);
  for (uint64_t r = 0; r < rows; ++r) {
    quantize_row(type, src.data() + r * K, row.data(), K);
    dequantize_row(type, row.data(), s.values.data() + r * K, K);
    blocks_to_device(type, row.data(), K / type_traits(type).block_elems, s.bytes.data() + r * drb);
  }
  return s;
}

class MulMatId : public test::GpuTestP<GgmlType> {};

TEST_P(MulMatId, SlotAndGroupedProductsMatchTheDequantisedReferenceAlsoInExpertWindows) {
  const GgmlType type = GetParam();
  vk::Device& dev = test::device(0);
  ops::Kernels k(dev);
  const uint32_t qk = type_traits(type).block_elems;
  // K of two blocks, and of 512 (rows of several blocks).
  const std::vector<uint32_t> widths = qk == 1 ? std::vector<uint32_t>{45} : qk == 32 ? std::vector<uint32_t>{64, 512}
                                                                                 : std::vector<uint32_t>{512};
  for (const uint32_t K : widths) {
  const uint32_t E = 5, N = 37, T = 19, used = 2, slots = T * used;
  const ExpertStack w = make_stack(type, E, N, K, 100 + static_cast<uint32_t>(type));
  const std::vector<float> x = test::random_floats(size_t(T) * K, 7);
  std::vector<uint32_t> ids(slots);
  for (uint32_t t = 0; t < T; ++t) {  // two different experts per token, unevenly spread
    ids[t * used] = (t * t) % E;
    ids[t * used + 1] = (ids[t * used] + 1 + t % 3) % E;
  }
  std::vector<float> want(size_t(slots) * N);
  for (uint32_t s = 0; s < slots; ++s)
    for (uint32_t r = 0; r < N; ++r) {
      double acc = 0;
      for (uint32_t c = 0; c < K; ++c)
        acc += double(w.values[(size_t(ids[s]) * N + r) * K + c]) * x[size_t(s / used) * K + c];
      want[size_t(s) * N + r] = static_cast<float>(acc);
    }
  const vk::Buffer wb = test::make_buffer(dev, w.bytes), xb = test::make_buffer(dev, x), ib = test::make_buffer(dev, ids);
  const vk::Buffer gb = dev.create_buffer(ops::moe_groups_bytes(E, T), vk::BufferKind::Device, "test");
  const uint64_t expert_bytes = *device_row_bytes(type, K) * N;
  for (bool grouped : {false, true})
    for (uint64_t window : {uint64_t{0}, 2 * expert_bytes + 260}) {  // 0: one binding; else 2 experts each
      vk::Buffer yb = dev.create_buffer(uint64_t(slots) * N * 4, vk::BufferKind::Host, "test");
      std::fill_n(reinterpret_cast<float*>(yb.mapped()), size_t(slots) * N, std::nanf(""));  // every row must be written
      ops::ExpertRouting r{&ib, 0, grouped ? &gb : nullptr, 0, E, slots, grouped ? T : 0};
      test::run_on(dev, [&](vk::CommandBuffer& cb) {
        if (grouped) {
          ops::moe_group(k, cb, ib, 0, gb, 0, E, slots, T);
          cb.barrier();
        }
        ops::mul_mm_id(k, cb, type, wb, K, N, xb, 0, yb, 0, ops::ExpertRows{K, used, N}, r, window);
      });
      const std::span<const float> got(reinterpret_cast<const float*>(yb.mapped()), want.size());
      EXPECT_LE(test::nmse(want, got), 1e-10) << (grouped ? "grouped" : "slot") << " mode, window " << window << ", K " << K;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(EveryWeightFormat, MulMatId, ::testing::ValuesIn(weight_types()), [](const auto& p) {
  std::string n = type_traits(p.param).name;
  for (char& ch : n) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return n;
});

}  // namespace
}  // namespace chorus
