// The real Gemma 3 270M Q4_K_M (scripts/fetch-models.sh gemma3) end to end: its tokenizer on a
// prompt, its logits against the independent NumPy forward pass (tests/data/gemma3/, made by
// scripts/numpy_reference.py), greedy text on one device and on tensor and layer splits, and
// perplexity over a slice of wikitext-2 on the same splits. A missing model fails each test
// with the command that fetches it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/perplexity.h"
#include "engine/tokenizer.h"
#include "tests/gpu.h"
#include "tests/reference_model.h"

namespace chorus {
namespace {

const char* const kGemmaFile = "gemma-3-270m-q4_k_m.gguf";
const std::string kGemmaData = std::string(CHORUS_SOURCE_DIR) + "/tests/data/gemma3/";

struct Split {
  const char* name;
  split::SplitMode mode;
  std::vector<double> ratios;
};
const std::vector<Split> kSplits{{"one device", split::SplitMode::none, {1}},
                                 {"tensor 1:1", split::SplitMode::tensor, {1, 1}},
                                 {"layer 1:1", split::SplitMode::layer, {1, 1}}};

std::unique_ptr<Model> load(const std::string& path, const Split& s) {
  std::vector<vk::Device*> devices;
  for (size_t i = 0; i < s.ratios.size(); ++i) devices.push_back(&test::device(static_cast<int>(i)));
  return Model::load(path, devices, split::SplitRequest{s.mode, s.ratios, 0});
}

int32_t argmax(std::span<const float> row) {
  size_t best = 0;
  for (size_t j = 1; j < row.size(); ++j)
    if (row[j] > row[best]) best = j;
  return static_cast<int32_t>(best);
}

// Index of the first difference, or -1.
long first_difference(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    if (a[i] != b[i]) return long(i);
  return a.size() == b.size() ? -1 : long(std::min(a.size(), b.size()));
}

class Gemma3 : public test::GpuTest {
 protected:
  void SetUp() override {
    test::GpuTest::SetUp();
    path_ = test::fetched_model(kGemmaFile, "gemma3");
  }
  std::string path_;
};

TEST_F(Gemma3, TheTokenizerGivesBosAndTheSentencePieceIdsOfAPrompt) {
  const gguf::File f = gguf::File::open(path_);
  const Tokenizer tok(load_vocab(f));
  // <bos> The ▁capital ▁of ▁France ▁is: Gemma's vocabulary, no space prefix, BOS added.
  EXPECT_EQ(tok.encode("The capital of France is"), (std::vector<TokenId>{2, 818, 5279, 529, 7001, 563}));
  EXPECT_EQ(tok.decode(std::vector<TokenId>{818, 5279, 529, 7001, 563}), "The capital of France is");
}

TEST_F(Gemma3, LogitsMatchTheIndependentNumPyForwardPassWithin1e3) {
  auto model = Model::load(path_, test::device(0));
  const uint32_t V = model->config().n_vocab;
  const ref::ExpectedLogits e = ref::read_expected_logits(kGemmaData, V);
  ASSERT_FALSE(e.ids.empty()) << "cannot read tests/data/gemma3/{prompt.ids.txt,logits.bin}";
  Context ctx(*model, ContextOptions{64, 1, 512});
  const auto got = ctx.decode(0, e.ids, true);
  for (size_t k = 0; k < e.positions.size(); ++k) {
    const std::span<const float> w(e.logits.data() + k * V, V), g(got.data() + size_t(e.positions[k]) * V, V);
    // Both keep K and V in F16; what remains is F32 against F64 arithmetic.
    const double rel = std::sqrt(test::nmse(w, g));
    std::printf("position %d: relative L2 difference %.2e\n", e.positions[k], rel);
    EXPECT_LE(rel, 1e-3) << "position " << e.positions[k];
    EXPECT_EQ(argmax(g), argmax(w)) << "position " << e.positions[k];
  }
}

TEST_F(Gemma3, GreedyTextIsCoherentAndTheSameOnOneDeviceAndOnTensorAndLayerSplits) {
  const gguf::File f = gguf::File::open(path_);
  const Tokenizer tok(load_vocab(f));
  const std::vector<int32_t> prompt = tok.encode("The capital of France is");
  std::vector<int32_t> first;
  for (const Split& s : kSplits) {
    SCOPED_TRACE(s.name);
    auto model = load(path_, s);
    Context ctx(*model, ContextOptions{64, 1, 512});
    std::vector<float> logits = ctx.decode(0, prompt);
    std::vector<int32_t> out;
    for (int i = 0; i < 12; ++i) {
      out.push_back(argmax(logits));
      logits = ctx.decode(0, std::span(&out.back(), 1));
    }
    const std::string text = tok.decode(out);
    // The model continues about France (measured: " the capital of the country of France.").
    EXPECT_NE(text.find("France"), std::string::npos) << "'" << text << "'";
    if (first.empty()) {
      first = out;
    } else {
      EXPECT_EQ(first_difference(out, first), -1) << "first greedy step (0-based) differing from one device: '"
                                                  << text << "'";
    }
  }
}

TEST_F(Gemma3, PerplexityOverAWikitextSliceIsFiniteAndTheSameOnOneDeviceAndOnTensorAndLayerSplits) {
  std::ifstream text_in(test::shared_dir() + "/corpus/wikitext-2-raw-wiki.test.raw");
  ASSERT_TRUE(text_in) << "missing " << test::shared_dir() << "/corpus/wikitext-2-raw-wiki.test.raw";
  std::string text(3000, '\0');
  text_in.read(text.data(), std::streamsize(text.size()));
  text.resize(size_t(text_in.gcount()));
  const gguf::File f = gguf::File::open(path_);
  const Tokenizer tok(load_vocab(f));
  const std::vector<int32_t> tokens = tok.encode(text);
  constexpr uint32_t kCtx = 64;
  ASSERT_GE(tokens.size(), 2u * kCtx);
  std::vector<double> ppl;
  for (const Split& s : kSplits) {
    SCOPED_TRACE(s.name);
    auto model = load(path_, s);
    Context ctx(*model, ContextOptions{kCtx, 1, 512});
    const PerplexityResult r = perplexity(
        tokens, {.n_ctx = kCtx, .n_vocab = model->config().n_vocab, .max_chunks = 2, .bos = 2}, context_evaluator(ctx));
    ASSERT_EQ(r.n_chunks, 2u);
    const double p = r.stats.ppl();
    // Finite and far below the 262144 of a uniform guess.
    EXPECT_TRUE(std::isfinite(p) && p > 1 && p < 1000) << p;
    if (!ppl.empty()) {
      EXPECT_LE(std::abs(p / ppl[0] - 1), 1e-4) << p << " vs " << ppl[0] << " on one device";
    }
    ppl.push_back(p);
    std::printf("%s: PPL %.6f over 2 chunks of %u tokens\n", s.name, p, kCtx);
  }
}

}  // namespace
}  // namespace chorus
