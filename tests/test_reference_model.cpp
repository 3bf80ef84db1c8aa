// Tests of the host reference forward pass (tests/reference_model.h): it reproduces the
// documented greedy output of stories260K, runs the F16 llama-2-tiny-random model, and agrees
// with an independent NumPy forward pass over SmolLM2-135M-Instruct Q4_1
// (tests/data/smollm2/make_reference.py) when that model has been fetched.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/gguf.h"
#include "tests/gpu.h"
#include "tests/reference_model.h"

namespace chorus::ref {
namespace {

const std::string kShared = test::shared_dir() + "/models/";
const std::string kStories = kShared + "stories260K.gguf";
const std::string kStoriesIds = kShared + "stories260K.greedy-t0.ids.txt";
const std::string kTinyRandom = kShared + "llama-2-tiny-random.gguf";
const std::string kSmolData = std::string(CHORUS_SOURCE_DIR) + "/tests/data/smollm2/";

// Shared test data is part of the checkout: its absence is a failure, not a skip.
#define REQUIRE_FILE(path) \
  ASSERT_TRUE(std::filesystem::exists(path)) << "missing test data file " << (path)

std::vector<int32_t> read_ids(const std::string& path) {
  std::ifstream in(path);
  std::vector<int32_t> ids;
  for (int32_t id; in >> id;) ids.push_back(id);
  return ids;
}

// Index of the first difference, or -1.
long first_difference(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    if (a[i] != b[i]) return long(i);
  return a.size() == b.size() ? -1 : long(std::min(a.size(), b.size()));
}

TEST(ReferenceModel, Stories260KGreedyFromBosReproducesAll256DocumentedTokensWithF32Cache) {
  REQUIRE_FILE(kStories);
  REQUIRE_FILE(kStoriesIds);
  const std::vector<int32_t> expected = read_ids(kStoriesIds);
  ASSERT_EQ(expected.size(), 256u) << kStoriesIds;
  ReferenceModel model(kStories, {.f16_kv_cache = false});
  const std::vector<int32_t> got = model.greedy({1}, 256);
  EXPECT_EQ(first_difference(got, expected), -1) << "first differing step (0-based) of " << kStoriesIds;
}

TEST(ReferenceModel, Stories260KGreedyFromBosReproducesAll256DocumentedTokensWithF16Cache) {
  REQUIRE_FILE(kStories);
  REQUIRE_FILE(kStoriesIds);
  const std::vector<int32_t> expected = read_ids(kStoriesIds);
  ReferenceModel model(kStories, {.f16_kv_cache = true});
  const std::vector<int32_t> got = model.greedy({1}, 256);
  EXPECT_EQ(first_difference(got, expected), -1) << "first differing step (0-based) of " << kStoriesIds;
}

TEST(ReferenceModel, Stories260KReadsItsConfigurationFromTheFile) {
  REQUIRE_FILE(kStories);
  ReferenceModel model(kStories);
  const ModelConfig& c = model.config();
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.n_vocab, 512u);
  EXPECT_EQ(c.n_embd, 64u);
  EXPECT_EQ(c.n_layer, 5u);
  EXPECT_EQ(c.n_head, 8u);
  EXPECT_EQ(c.n_head_kv, 4u);
  EXPECT_EQ(c.head_dim, 8u);
  EXPECT_FALSE(c.rope_neox);
}

TEST(ReferenceModel, OneBatchGivesTheSameLogitsAsTokenByTokenDecode) {
  REQUIRE_FILE(kStories);
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378, 505, 13, 42};
  ReferenceModel batch(kStories);
  const std::vector<float> all = batch.forward(prompt);
  ASSERT_EQ(all.size(), prompt.size() * 512);
  EXPECT_EQ(batch.n_past(), prompt.size());
  ReferenceModel step(kStories);
  std::vector<float> joined;
  for (int32_t t : prompt) {
    const std::vector<float> l = step.forward(std::vector<int32_t>{t});
    joined.insert(joined.end(), l.begin(), l.end());
  }
  EXPECT_EQ(all, joined);
}

TEST(ReferenceModel, ResetStartsAgainAtPositionZero) {
  REQUIRE_FILE(kStories);
  ReferenceModel model(kStories);
  const std::vector<float> first = model.forward(std::vector<int32_t>{1, 400, 300});
  model.reset();
  EXPECT_EQ(model.n_past(), 0u);
  EXPECT_EQ(model.forward(std::vector<int32_t>{1, 400, 300}), first);
}

TEST(ReferenceModel, LlamaTinyRandomF16GivesFiniteLogitsAtEveryPosition) {
  REQUIRE_FILE(kTinyRandom);
  ReferenceModel model(kTinyRandom);
  const ModelConfig& c = model.config();
  EXPECT_EQ(c.n_vocab, 32000u);
  EXPECT_FALSE(c.tied_output);
  const std::vector<int32_t> prompt = {1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203};
  const std::vector<float> logits = model.forward(prompt);
  ASSERT_EQ(logits.size(), prompt.size() * c.n_vocab);
  size_t non_finite = 0;
  for (float v : logits) non_finite += !std::isfinite(v);
  EXPECT_EQ(non_finite, 0u);
  // Random weights still give logits that vary across the vocabulary and across positions.
  EXPECT_NE(logits[0], logits[1]);
  EXPECT_NE(std::vector<float>(logits.begin(), logits.begin() + c.n_vocab),
            std::vector<float>(logits.end() - c.n_vocab, logits.end()));
}

TEST(ReferenceModel, AMissingFileThrowsAnErrorNamingThePath) {
  const std::string path = kShared + "no-such-model.gguf";
  try {
    ReferenceModel model(path);
    FAIL() << "expected gguf::Error";
  } catch (const gguf::Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(ReferenceModel, ATokenOutsideTheVocabularyThrows) {
  REQUIRE_FILE(kStories);
  ReferenceModel model(kStories);
  EXPECT_THROW(model.forward(std::vector<int32_t>{1, 512}), std::out_of_range);
  EXPECT_THROW(model.forward(std::vector<int32_t>{-1}), std::out_of_range);
}

// --- SmolLM2-135M-Instruct Q4_1 against the NumPy reference ------------------------------------


TEST(ReferenceModel, SmolLM2Q4_1MatchesTheIndependentNumPyForwardPass) {
  const std::string path = test::fetched_model("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2");
  ASSERT_TRUE(std::filesystem::exists(path));
  REQUIRE_FILE(kSmolData + "prompt.ids.txt");
  REQUIRE_FILE(kSmolData + "logits.bin");
  // The NumPy pass keeps K and V in F32: compare like with like.
  ReferenceModel model(path, {.f16_kv_cache = false});
  const uint32_t V = model.config().n_vocab;
  const SmolExpected e = ref::read_smol_expected(V);
  ASSERT_FALSE(e.ids.empty()) << "cannot read " << kSmolData << "{prompt.ids.txt,logits.bin}";
  // Relative L2 error of the logits of each stored position.
  auto errors = [&](const std::vector<float>& logits) {
    std::vector<double> rel;
    for (size_t k = 0; k < e.positions.size(); ++k) {
      const size_t p = size_t(e.positions[k]);
      double num = 0, den = 0;
      for (size_t j = 0; j < V; ++j) {
        const double want = e.logits[k * V + j], d = double(logits[p * V + j]) - want;
        num += d * d;
        den += want * want;
      }
      rel.push_back(std::sqrt(num / den));
    }
    return rel;
  };
  for (int32_t p : e.positions) ASSERT_LT(size_t(p), e.ids.size());
  const std::vector<double> f32 = errors(model.forward(e.ids));
  // The GPU keeps an F16 cache: what that rounding alone costs, against the 1e-3 acceptance bound.
  model.set_options({.f16_kv_cache = true});
  const std::vector<double> f16 = errors(model.forward(e.ids));
  for (size_t k = 0; k < e.positions.size(); ++k) {
    std::cout << "[          ] position " << e.positions[k] << ": relative L2 error " << f32[k] << " (F32 cache), "
              << f16[k] << " (F16 cache)\n";
    EXPECT_LE(f32[k], 1e-5) << "position " << e.positions[k] << ", F32 KV cache";
    EXPECT_LE(f16[k], 1e-3) << "position " << e.positions[k] << ", F16 KV cache";
  }
}

}  // namespace
}  // namespace chorus::ref
