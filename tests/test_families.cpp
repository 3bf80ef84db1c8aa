// The llama-family architectures beyond llama on small random models written by the test: qwen2
// (QKV biases, NeoX RoPE; one of mixed F32/F16/Q8_0 matrices, one of K-quants with Q6_K as a
// Q4_K_M file has it), qwen3 (QK-norm, no biases, a head size other than n_embd / n_head),
// gemma3 (GeGLU, scaled embedding, post-norms, one KV head, a tied head, windowed layers with
// their own RoPE base around a global one with linear RoPE scaling) and llama with Mistral's
// sliding window: the GPU forward pass against the C++ reference, on one device, on tensor
// splits and on a layer split; phi3 (fused attn_qkv and gate|up ffn_up, cut segment by segment).
// gemma3, phi3, the Mistral window and qwen2 are also checked against the independent NumPy reference
// (scripts/numpy_reference.py, run by the test: python3 with gguf and numpy).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <tuple>
#include <unistd.h>

#include "engine/model.h"
#include "engine/quant.h"
#include "tests/gpu.h"
#include "tests/model_writer.h"
#include "tests/reference_model.h"

namespace chorus {
namespace {


// The tiny models below: their shapes and the formats of their matrices.
struct TinyQwen2 {
  uint32_t E, H, KV, D, F, V;
  GgmlType embd, head, q, k, o, gate, up, down;
  const char* name;
  const char* arch = "qwen2";  // qwen2: QKV biases; qwen3: QK-norm and key_length; gemma3: also
                               // post-norms, a tied head and windowed layers; llama: neither
  uint32_t layers = 2;
  uint32_t window = 0;         // {arch}.attention.sliding_window (0: absent)
};
// 2 layers, n_embd 64, 4 heads of 16 over 2 KV heads, n_ff 96, 100 tokens, untied Q8_0 head.
constexpr TinyQwen2 kMixed{64, 4, 2, 16, 96, 100, GgmlType::F32, GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::F16,
                           GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::F16, GgmlType::Q8_0, "mixed"};
// K-quants as in a Q4_K_M file: n_embd 512, n_ff 1024, Q6_K embedding (get_rows), head and
// ffn_down (whose K slices a tensor split cuts into whole 224-byte device blocks); every row,
// and every K slice of two devices, holds more than one block.
constexpr TinyQwen2 kKQuants{512, 8, 2, 64, 1024, 100, GgmlType::Q6_K, GgmlType::Q6_K, GgmlType::Q4_K, GgmlType::Q4_K,
                             GgmlType::Q5_K, GgmlType::Q4_K, GgmlType::Q4_K, GgmlType::Q6_K, "kquants"};
// qwen3: n_embd 64, 4 heads of 32 (n_q 128 != n_embd) over 2 KV heads, Q8_0/F16 matrices.
constexpr TinyQwen2 kQwen3{64, 4, 2, 32, 96, 100, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::F16,
                           GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::F16, GgmlType::Q8_0, "qwen3", "qwen3"};
// gemma3: n_embd 64, 4 heads of 32 over 1 KV head (every device of a tensor split holds it), 7
// layers (5 is the global one), a window of 5 positions, Q8_0 tied head/embedding.
constexpr TinyQwen2 kGemma3{64, 4, 1, 32, 96, 100, GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::F16,
                            GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::F16, GgmlType::Q8_0, "gemma3", "gemma3", 7, 5};
// phi3: fused attn_qkv (4 Q heads of 16, 2 KV heads: segments 64 | 32 | 32 rows) and fused
// ffn_up (gate | up, 96 rows each), Q8_0/F16.
constexpr TinyQwen2 kPhi3{64, 4, 2, 16, 96, 100, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::F16,
                          GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q8_0, "phi3", "phi3"};
// llama with Mistral's sliding window of 4 positions in every layer.
constexpr TinyQwen2 kMistral{64, 4, 2, 16, 96, 100, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::F16,
                             GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::F16, GgmlType::Q8_0, "mistral", "llama", 2, 4};

std::string write_tiny_qwen2(const TinyQwen2& m) {
  const uint32_t E = m.E, H = m.H, KV = m.KV, D = m.D, F = m.F, V = m.V, L = m.layers;
  const std::string a = m.arch;
  const bool gemma3 = a == "gemma3", qk_norm = a == "qwen3" || gemma3, bias = a == "qwen2", phi3 = a == "phi3";
  std::mt19937 rng(7);
  test::ModelWriter w;
  w.kv_str("general.architecture", a);
  w.kv_str("general.name", "tiny random " + a + ", " + m.name + " (chorus test)");
  w.kv_u32(a + ".context_length", 256);
  w.kv_u32(a + ".embedding_length", E);
  w.kv_u32(a + ".block_count", L);
  w.kv_u32(a + ".feed_forward_length", F);
  w.kv_u32(a + ".attention.head_count", H);
  w.kv_u32(a + ".attention.head_count_kv", KV);
  if (qk_norm) w.kv_u32(a + ".attention.key_length", D);
  if (m.window) w.kv_u32(a + ".attention.sliding_window", m.window);
  w.kv_f32(a + ".attention.layer_norm_rms_epsilon", 1e-6f);
  w.kv_f32(a + ".rope.freq_base", 1000000.0f);
  if (gemma3) {  // linear scaling, which gemma3's windowed layers do not use
    w.kv_str(a + ".rope.scaling.type", "linear");
    w.kv_f32(a + ".rope.scaling.factor", 8.0f);
  }
  // gemma3 scales the embedding up by sqrt(n_embd) = 8.
  w.tensor("token_embd.weight", E, V, m.embd, gemma3 ? 0.125f : 1.0f, rng);
  w.tensor("output_norm.weight", E, 1, GgmlType::F32, 1.0f, rng);
  if (!gemma3) w.tensor("output.weight", E, V, m.head, 0.2f, rng);
  for (uint32_t l = 0; l < L; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    w.tensor(b + "attn_norm.weight", E, 1, GgmlType::F32, 1.0f, rng);
    if (phi3) {
      w.tensor(b + "attn_qkv.weight", E, (H + 2 * KV) * D, m.q, 0.2f, rng);
    } else {
      w.tensor(b + "attn_q.weight", E, H * D, m.q, 0.2f, rng);
      w.tensor(b + "attn_k.weight", E, KV * D, m.k, 0.2f, rng);
      w.tensor(b + "attn_v.weight", E, KV * D, GgmlType::F32, 0.2f, rng);
    }
    if (qk_norm) {
      w.tensor(b + "attn_q_norm.weight", D, 1, GgmlType::F32, 1.0f, rng);
      w.tensor(b + "attn_k_norm.weight", D, 1, GgmlType::F32, 1.0f, rng);
    }
    if (bias) {
      w.tensor(b + "attn_q.bias", H * D, 1, GgmlType::F32, 0.5f, rng);
      w.tensor(b + "attn_k.bias", KV * D, 1, GgmlType::F32, 0.5f, rng);
      w.tensor(b + "attn_v.bias", KV * D, 1, GgmlType::F32, 0.5f, rng);
    }
    w.tensor(b + "attn_output.weight", H * D, E, m.o, 0.2f, rng);
    w.tensor(b + "ffn_norm.weight", E, 1, GgmlType::F32, 1.0f, rng);
    if (phi3) {
      w.tensor(b + "ffn_up.weight", E, 2 * F, m.up, 0.2f, rng);
    } else {
      w.tensor(b + "ffn_gate.weight", E, F, m.gate, 0.2f, rng);
      w.tensor(b + "ffn_up.weight", E, F, m.up, 0.2f, rng);
    }
    w.tensor(b + "ffn_down.weight", F, E, m.down, 0.2f, rng);
    if (gemma3) {
      w.tensor(b + "post_attention_norm.weight", E, 1, GgmlType::F32, 1.0f, rng);
      w.tensor(b + "post_ffw_norm.weight", E, 1, GgmlType::F32, 1.0f, rng);
    }
  }
  const auto dir = std::filesystem::temp_directory_path() / ("chorus-" + a + "-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return w.write((dir / ("tiny-" + a + "-" + m.name + ".gguf")).string());
}

// Splits: one device, tensor 1:1, tensor 5:3:1, layer 1:1.
struct Split {
  split::SplitMode mode;
  std::vector<double> ratios;
};
const Split kOne{split::SplitMode::none, {1}}, kHalves{split::SplitMode::tensor, {1, 1}},
    kFiveThreeOne{split::SplitMode::tensor, {5, 3, 1}}, kLayerHalves{split::SplitMode::layer, {1, 1}};

// (split, model)
class Families : public test::GpuTestP<std::tuple<const Split*, const TinyQwen2*>> {};

TEST_P(Families, LogitsMatchTheCppReferenceOnOneDeviceAndOnSplits) {
  const Split& sp = *std::get<0>(GetParam());
  const std::vector<double>& ratios = sp.ratios;
  const TinyQwen2& tiny = *std::get<1>(GetParam());
  const std::string arch = tiny.arch;
  const std::string path = write_tiny_qwen2(tiny);
  const std::vector<int32_t> prompt{3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26};
  ref::ReferenceModel reference(path, {.f16_kv_cache = true});
  const ModelConfig& rc = reference.config();
  ASSERT_EQ(rc.qkv_bias, arch == "qwen2");
  ASSERT_EQ(rc.qk_norm, arch == "qwen3" || arch == "gemma3");
  ASSERT_EQ(rc.post_norms, arch == "gemma3");
  ASSERT_EQ(rc.rope_neox, arch != "llama");
  ASSERT_EQ(rc.sliding_window, tiny.window);
  if (arch == "gemma3") {  // 5 windowed layers at RoPE base 10000 unscaled, then a global one
    ASSERT_TRUE(rc.tied_output);
    ASSERT_EQ(rc.glu, Glu::geglu);
    ASSERT_EQ(rc.embd_scale, 8.0f);
    ASSERT_EQ(rc.window(4), 5u);
    ASSERT_EQ(rc.window(5), 0u);
    ASSERT_EQ(rc.rope_base_of(0), 10000.0f);
    ASSERT_EQ(rc.rope_freq_scale_of(0), 1.0f);
    ASSERT_EQ(rc.rope_base_of(5), 1000000.0f);
    ASSERT_EQ(rc.rope_freq_scale_of(5), 0.125f);
  }
  const auto want = reference.forward(prompt);
  std::vector<vk::Device*> devices;
  for (size_t i = 0; i < ratios.size(); ++i) devices.push_back(&test::device(static_cast<int>(i)));
  auto model = Model::load(path, devices, split::SplitRequest{sp.mode, ratios, 0});
  Context ctx(*model, ContextOptions{64, 1, 512});
  const auto got = ctx.decode(0, prompt, true);
  // Prefill stages activations in f16 tiles where the device has fp16 matmul kernels.
  // nmse <= 1e-6: a relative L2 error of at most 1e-3.
  EXPECT_LE(test::nmse(want, got), 1e-6);
  // Decode continues from the cache (the second and third tokens replay the first's recording).
  for (int32_t t : {42, 7, 99}) {
    const std::vector<int32_t> next{t};
    EXPECT_LE(test::nmse(reference.forward(next), ctx.decode(0, next)), 1e-6) << "decoding token " << t;
  }
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
}

// The same tiny models against the independent NumPy reference (scripts/numpy_reference.py: float64,
// K and V rounded through f16 as the GPU's cache, no chorus code) at three positions of the prompt.
class FamiliesNumPy : public test::GpuTestP<std::tuple<const Split*, const TinyQwen2*>> {};

TEST_P(FamiliesNumPy, LogitsMatchTheIndependentNumPyReferenceWithin1e3) {
  const Split& sp = *std::get<0>(GetParam());
  const TinyQwen2& tiny = *std::get<1>(GetParam());
  const std::string path = write_tiny_qwen2(tiny);
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  const std::vector<int32_t> prompt{3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26};
  std::string ids;
  for (int32_t t : prompt) ids += (ids.empty() ? "" : " ") + std::to_string(t);
  const std::string cmd = "python3 '" + std::string(CHORUS_SOURCE_DIR) + "/scripts/numpy_reference.py' logits -m '" +
                          path + "' --ids '" + ids + "' --positions 0,5,11 --out '" + (dir / "numpy").string() +
                          "' >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0)
      << cmd << "\nfailed: it needs python3 with the gguf and numpy packages (scripts/install-deps.sh installs them)";
  std::vector<vk::Device*> devices;
  for (size_t i = 0; i < sp.ratios.size(); ++i) devices.push_back(&test::device(static_cast<int>(i)));
  auto model = Model::load(path, devices, split::SplitRequest{sp.mode, sp.ratios, 0});
  const uint32_t V = model->config().n_vocab;
  const ref::ExpectedLogits e = ref::read_expected_logits((dir / "numpy").string(), V);
  ASSERT_EQ(e.ids, prompt) << "cannot read the reference's output in " << dir / "numpy";
  Context ctx(*model, ContextOptions{64, 1, 512});
  const auto got = ctx.decode(0, prompt, true);
  for (size_t k = 0; k < e.positions.size(); ++k) {
    const std::span<const float> want(e.logits.data() + k * V, V), row(got.data() + size_t(e.positions[k]) * V, V);
    EXPECT_LE(test::nmse(want, row), 1e-6) << "position " << e.positions[k] << " (relative L2 error above 1e-3)";
  }
  std::filesystem::remove_all(dir);
}

std::string ratio_name(const Split& sp) {
  std::string s;
  for (double v : sp.ratios) s += (s.empty() ? "" : "_") + std::to_string(static_cast<int>(v));
  return sp.mode == split::SplitMode::none ? "one_device" : std::string(split::to_string(sp.mode)) + "_" + s;
}

INSTANTIATE_TEST_SUITE_P(Qwen2, Families,
                         ::testing::Combine(::testing::Values(&kOne, &kHalves), ::testing::Values(&kMixed, &kKQuants)),
                         [](const auto& p) { return ratio_name(*std::get<0>(p.param)) + "_" + std::get<1>(p.param)->name; });
INSTANTIATE_TEST_SUITE_P(Qwen3, Families,
                         ::testing::Combine(::testing::Values(&kOne, &kHalves, &kFiveThreeOne), ::testing::Values(&kQwen3)),
                         [](const auto& p) { return ratio_name(*std::get<0>(p.param)); });
INSTANTIATE_TEST_SUITE_P(Gemma3, Families,
                         ::testing::Combine(::testing::Values(&kOne, &kHalves, &kFiveThreeOne, &kLayerHalves),
                                            ::testing::Values(&kGemma3)),
                         [](const auto& p) { return ratio_name(*std::get<0>(p.param)); });
INSTANTIATE_TEST_SUITE_P(Phi3, Families,
                         ::testing::Combine(::testing::Values(&kOne, &kHalves, &kFiveThreeOne, &kLayerHalves),
                                            ::testing::Values(&kPhi3)),
                         [](const auto& p) { return ratio_name(*std::get<0>(p.param)); });
INSTANTIATE_TEST_SUITE_P(NumPy, FamiliesNumPy,
                         ::testing::Combine(::testing::Values(&kOne, &kFiveThreeOne),
                                            ::testing::Values(&kGemma3, &kPhi3, &kMistral, &kMixed)),
                         [](const auto& p) {
                           return std::string(std::get<1>(p.param)->name) + "_" + ratio_name(*std::get<0>(p.param));
                         });
INSTANTIATE_TEST_SUITE_P(MistralSlidingWindow, Families,
                         ::testing::Combine(::testing::Values(&kOne, &kHalves, &kFiveThreeOne, &kLayerHalves),
                                            ::testing::Values(&kMistral)),
                         [](const auto& p) { return ratio_name(*std::get<0>(p.param)); });

}  // namespace
}  // namespace chorus
