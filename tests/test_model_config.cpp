// Model metadata a hostile file could carry, refused at load by ModelConfig::from_gguf with the
// file, the field and what was expected — before anything is sized from it: counts whose
// products overflowed 32 bits, a vocabulary that disagrees with token_embd's rows, a context
// length of 0, non-finite hyper-parameters. Each case is a tiny llama the test writes.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <string>
#include <unistd.h>

#include "engine/gguf.h"
#include "engine/model_config.h"
#include "tests/model_writer.h"

namespace chorus {
namespace {

struct Meta {
  uint32_t head_count = 4, head_count_kv = 2, key_length = 0, context_length = 64;
  float eps = 1e-5f, rope_base = 10000.0f;
  uint32_t vocab_tokens = 0;  // tokenizer.ggml.tokens entries (0: none written)
  float softcap = 0;          // llama.final_logit_softcapping (0: absent)
  bool rope_factors = false;  // a rope_factors_long.weight tensor (LongRoPE)
  uint32_t sliding_window = 0;  // llama.attention.sliding_window (0: absent)
};

// A 1-layer llama with n_embd 32, 4 heads of 8, n_ff 64, 40 tokens, whose metadata is `m`.
// This process's folder for the models it writes, removed when the tests end.
std::filesystem::path scratch_dir() {
  return std::filesystem::temp_directory_path() / ("chorus-config-" + std::to_string(::getpid()));
}
class RemoveScratchDir : public ::testing::Environment {
 public:
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(scratch_dir(), ec);
  }
};
[[maybe_unused]] ::testing::Environment* const kRemoveScratchDir = ::testing::AddGlobalTestEnvironment(new RemoveScratchDir);

std::string write_model(const Meta& m, const std::string& name) {
  std::mt19937 rng(3);
  test::ModelWriter w;
  w.kv_str("general.architecture", "llama");
  w.kv_u32("llama.context_length", m.context_length);
  w.kv_u32("llama.embedding_length", 32);
  w.kv_u32("llama.block_count", 1);
  w.kv_u32("llama.feed_forward_length", 64);
  w.kv_u32("llama.attention.head_count", m.head_count);
  w.kv_u32("llama.attention.head_count_kv", m.head_count_kv);
  if (m.key_length) w.kv_u32("llama.attention.key_length", m.key_length);
  w.kv_f32("llama.attention.layer_norm_rms_epsilon", m.eps);
  w.kv_f32("llama.rope.freq_base", m.rope_base);
  if (m.softcap) w.kv_f32("llama.final_logit_softcapping", m.softcap);
  if (m.sliding_window) w.kv_u32("llama.attention.sliding_window", m.sliding_window);
  if (m.vocab_tokens) w.kv_str_array("tokenizer.ggml.tokens", std::vector<std::string>(m.vocab_tokens, "t"));
  w.tensor("token_embd.weight", 32, 40, GgmlType::F32, 1.0f, rng);
  w.tensor("output_norm.weight", 32, 1, GgmlType::F32, 1.0f, rng);
  if (m.rope_factors) w.tensor("rope_factors_long.weight", 4, 1, GgmlType::F32, 1.0f, rng);
  w.tensor("blk.0.attn_norm.weight", 32, 1, GgmlType::F32, 1.0f, rng);
  w.tensor("blk.0.attn_q.weight", 32, 32, GgmlType::F32, 0.2f, rng);
  w.tensor("blk.0.attn_k.weight", 32, 16, GgmlType::F32, 0.2f, rng);
  w.tensor("blk.0.attn_v.weight", 32, 16, GgmlType::F32, 0.2f, rng);
  w.tensor("blk.0.attn_output.weight", 32, 32, GgmlType::F32, 0.2f, rng);
  w.tensor("blk.0.ffn_norm.weight", 32, 1, GgmlType::F32, 1.0f, rng);
  w.tensor("blk.0.ffn_gate.weight", 32, 64, GgmlType::F32, 0.2f, rng);
  w.tensor("blk.0.ffn_up.weight", 32, 64, GgmlType::F32, 0.2f, rng);
  w.tensor("blk.0.ffn_down.weight", 64, 32, GgmlType::F32, 0.2f, rng);
  const std::filesystem::path dir = scratch_dir();
  std::filesystem::create_directories(dir);
  return w.write((dir / (name + ".gguf")).string());
}

// Loading `m` fails with a gguf::Error whose message holds every one of `parts`.
void expect_refused(const Meta& m, const std::string& name, std::initializer_list<const char*> parts) {
  const std::string path = write_model(m, name);
  try {
    (void)ModelConfig::from_gguf(gguf::File::open(path));
    ADD_FAILURE() << name << ": loaded";
  } catch (const gguf::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << name << ": '" << p << "' missing in: " << msg;
  }
  std::filesystem::remove(path);
}

TEST(ModelConfigChecks, AWellFormedTinyModelLoads) {
  const std::string path = write_model(Meta{}, "good");
  const ModelConfig c = ModelConfig::from_gguf(gguf::File::open(path));
  EXPECT_EQ(c.n_q(), 32u);
  EXPECT_EQ(c.n_vocab, 40u);
  std::filesystem::remove(path);
}

TEST(ModelConfigChecks, LogitSoftCappingAndPerDimensionRopeFactorsAreRefusedRatherThanIgnored) {
  expect_refused(Meta{.softcap = 30.0f}, "softcap", {"final_logit_softcapping", "soft-capping"});
  expect_refused(Meta{.rope_factors = true}, "rope-factors", {"rope_factors_long.weight", "RoPE factors"});
}

TEST(ModelConfigChecks, AMistralSlidingWindowAppliesToEveryLayerWithTheModelsRope) {
  const std::string path = write_model(Meta{.sliding_window = 16}, "swa");
  const ModelConfig c = ModelConfig::from_gguf(gguf::File::open(path));
  EXPECT_EQ(c.sliding_window, 16u);
  EXPECT_EQ(c.window(0), 16u);
  EXPECT_EQ(c.window(5), 16u);
  EXPECT_EQ(c.rope_base_of(5), 10000.0f);
  std::filesystem::remove(path);
}

TEST(ModelConfigChecks, HeadCountsWhoseProductWrapsThirtyTwoBitsAreRefused) {
  // (2^29 + 4) heads of 8 are 2^32 + 32 wide, which wraps to the 32 rows attn_q really has (and
  // 2 KV heads of 8 match attn_k): in 32 bits every shape check passed and the planner then
  // asked for terabytes.
  Meta m;
  m.head_count = (1u << 29) + 4;
  m.head_count_kv = 2;
  m.key_length = 8;
  expect_refused(m, "wrap", {"attention.head_count", "536870916", "expected 1..65536"});
}

TEST(ModelConfigChecks, AVocabularyThatDisagreesWithTheEmbeddingRowsIsRefusedNamingBothFields) {
  Meta m;
  m.vocab_tokens = 30;  // token_embd has 40 rows
  expect_refused(m, "vocab", {"tokenizer.ggml.tokens", "30", "token_embd.weight", "40"});
}

TEST(ModelConfigChecks, AContextLengthOfZeroIsRefusedAtLoad) {
  Meta m;
  m.context_length = 0;
  expect_refused(m, "ctx0", {"llama.context_length", "is 0"});
}

TEST(ModelConfigChecks, NonFiniteOrNonPositiveHyperParametersAreRefused) {
  for (const float bad : {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(), 0.0f, -1.0f}) {
    Meta eps;
    eps.eps = bad;
    expect_refused(eps, "eps", {"layer_norm_rms_epsilon", "positive finite"});
    Meta rope;
    rope.rope_base = bad;
    expect_refused(rope, "rope", {"rope.freq_base", "positive finite"});
  }
}

}  // namespace
}  // namespace chorus
