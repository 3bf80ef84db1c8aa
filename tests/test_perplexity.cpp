// Perplexity arithmetic on fake logit callbacks (CPU only); the model-backed runs live in
// test_run.cpp.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <numeric>
#include <vector>

#include "engine/perplexity.h"

namespace chorus {
namespace {

std::vector<int32_t> text_tokens(size_t n, uint32_t n_vocab, uint64_t seed = 1) {
  std::vector<int32_t> t(n);
  uint64_t x = seed;
  for (auto& v : t) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    v = static_cast<int32_t>((x >> 33) % n_vocab);
  }
  return t;
}

// Logits that depend only on the chunk's tokens up to and including the position (as a
// causal model's do), so every grouping of chunks must give the same numbers.
ChunkEvaluator causal_fake(uint32_t n_vocab, uint32_t n_ctx, int* calls = nullptr) {
  return [=](std::span<const std::vector<int32_t>> chunks, uint32_t first) {
    if (calls) ++*calls;
    std::vector<float> out;
    for (const auto& c : chunks) {
      EXPECT_EQ(c.size(), n_ctx);
      uint64_t h = 1469598103934665603ull;
      for (uint32_t pos = 0; pos + 1 < n_ctx; ++pos) {
        h = (h ^ static_cast<uint64_t>(c[pos])) * 1099511628211ull;
        if (pos < first) continue;
        uint64_t g = h;
        for (uint32_t v = 0; v < n_vocab; ++v) {
          g = g * 6364136223846793005ull + 1442695040888963407ull;
          out.push_back(static_cast<float>(static_cast<double>(g >> 40) / 16777216.0 * 6.0 - 3.0));
        }
      }
    }
    return out;
  };
}

TEST(Perplexity, UniformLogitsGiveTheVocabularySize) {
  const uint32_t n_vocab = 37, n_ctx = 16;
  const auto tokens = text_tokens(5 * n_ctx, n_vocab);
  const ChunkEvaluator uniform = [&](std::span<const std::vector<int32_t>> chunks, uint32_t first) {
    return std::vector<float>(chunks.size() * (n_ctx - 1 - first) * n_vocab, 0.25f);
  };
  const auto r = perplexity(tokens, {.n_ctx = n_ctx, .n_vocab = n_vocab}, uniform);
  EXPECT_EQ(r.n_chunks, 5u);
  EXPECT_EQ(r.stats.count, 5u * 7u);
  EXPECT_NEAR(r.stats.ppl(), 37.0, 1e-9);
  for (const double p : r.running) EXPECT_NEAR(p, 37.0, 1e-9);
  EXPECT_TRUE(std::isnan(r.stats.ppl_error()));  // every nll equal: no spread
}

TEST(Perplexity, ScoresTheSecondHalfOfEachChunkFromThePreviousPosition) {
  // Two tokens; every row gives token 1 probability 3/4. The text's tokens decide the score.
  const uint32_t n_vocab = 2, n_ctx = 8;  // first = 4: rows 4,5,6 predict tokens 5,6,7
  std::vector<int32_t> tokens(2 * n_ctx, 0);
  // chunk 0: tokens 5,6,7 = 1,0,1; chunk 1: tokens 13,14,15 = 0,0,0; everything else 1.
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = 1;
  tokens[6] = 0;
  tokens[13] = tokens[14] = tokens[15] = 0;
  const ChunkEvaluator fake = [&](std::span<const std::vector<int32_t>> chunks, uint32_t first) {
    EXPECT_EQ(first, 4u);
    std::vector<float> out;
    for (size_t k = 0; k < chunks.size() * 3; ++k) {
      out.push_back(0.0f);
      out.push_back(static_cast<float>(std::log(3.0)));
    }
    return out;
  };
  const auto r = perplexity(tokens, {.n_ctx = n_ctx, .n_vocab = n_vocab}, fake);
  const double hit = -std::log(0.75), miss = -std::log(0.25);
  ASSERT_EQ(r.running.size(), 2u);
  EXPECT_NEAR(r.running[0], std::exp((2 * hit + miss) / 3), 1e-6);
  EXPECT_NEAR(r.running[1], std::exp((2 * hit + 4 * miss) / 6), 1e-6);
  EXPECT_EQ(r.stats.count, 6u);
  EXPECT_NEAR(r.stats.sum, 2 * hit + 4 * miss, 1e-6);
  EXPECT_NEAR(r.stats.sum2, 2 * hit * hit + 4 * miss * miss, 1e-6);
}

TEST(Perplexity, EachChunkStartsWithBosWhenTheModelAddsIt) {
  const uint32_t n_vocab = 10, n_ctx = 6;
  const auto tokens = text_tokens(3 * n_ctx + 2, n_vocab, 7);
  for (const int32_t bos : {-1, 9}) {
    std::vector<std::vector<int32_t>> seen;
    const ChunkEvaluator record = [&](std::span<const std::vector<int32_t>> chunks, uint32_t first) {
      seen.insert(seen.end(), chunks.begin(), chunks.end());
      return std::vector<float>(chunks.size() * (n_ctx - 1 - first) * n_vocab, 0.0f);
    };
    perplexity(tokens, {.n_ctx = n_ctx, .n_vocab = n_vocab, .chunks_per_call = 2, .bos = bos}, record);
    ASSERT_EQ(seen.size(), 3u);
    for (size_t c = 0; c < 3; ++c) {
      std::vector<int32_t> want(tokens.begin() + static_cast<std::ptrdiff_t>(c * n_ctx),
                                tokens.begin() + static_cast<std::ptrdiff_t>((c + 1) * n_ctx));
      if (bos >= 0) want[0] = bos;
      EXPECT_EQ(seen[c], want) << "chunk " << c << " bos " << bos;
    }
  }
}

TEST(Perplexity, ResultDoesNotDependOnChunksPerCall) {
  const uint32_t n_vocab = 50, n_ctx = 20;
  const auto tokens = text_tokens(11 * n_ctx + 5, n_vocab, 3);
  PerplexityResult base;
  for (const uint32_t per_call : {1u, 2u, 3u, 4u, 11u, 64u}) {
    int calls = 0;
    const auto r = perplexity(tokens, {.n_ctx = n_ctx, .n_vocab = n_vocab, .chunks_per_call = per_call, .bos = 1},
                              causal_fake(n_vocab, n_ctx, &calls));
    EXPECT_EQ(calls, static_cast<int>((11 + per_call - 1) / per_call));
    if (per_call == 1) {
      base = r;
      continue;
    }
    EXPECT_EQ(r.running, base.running) << per_call << " chunks per call";
    EXPECT_EQ(r.stats.sum, base.stats.sum);
    EXPECT_EQ(r.stats.sum2, base.stats.sum2);
  }
  EXPECT_GT(base.stats.ppl(), 1.0);
  EXPECT_LT(base.stats.ppl(), 200.0);
}

TEST(Perplexity, ChunksOptionKeepsTheFirstChunks) {
  const uint32_t n_vocab = 30, n_ctx = 10;
  const auto tokens = text_tokens(7 * n_ctx + 9, n_vocab);
  const auto all = perplexity(tokens, {.n_ctx = n_ctx, .n_vocab = n_vocab}, causal_fake(n_vocab, n_ctx));
  EXPECT_EQ(all.n_chunks, 7u);
  EXPECT_EQ(all.n_chunks_max, 7u);
  const auto three =
      perplexity(tokens, {.n_ctx = n_ctx, .n_vocab = n_vocab, .max_chunks = 3}, causal_fake(n_vocab, n_ctx));
  EXPECT_EQ(three.n_chunks, 3u);
  EXPECT_EQ(three.stats.count, 3u * 4u);
  EXPECT_EQ(three.running, std::vector<double>(all.running.begin(), all.running.begin() + 3));
  const auto many =
      perplexity(tokens, {.n_ctx = n_ctx, .n_vocab = n_vocab, .max_chunks = 100}, causal_fake(n_vocab, n_ctx));
  EXPECT_EQ(many.n_chunks, 7u);
}

TEST(Perplexity, OddContextScoresTokensAfterTheMiddle) {
  // n_ctx = 7: first = 3, rows 3..5 score tokens 4..6.
  const uint32_t n_vocab = 5, n_ctx = 7;
  const auto tokens = text_tokens(2 * n_ctx, n_vocab);
  uint32_t got_first = 0;
  const ChunkEvaluator fake = [&](std::span<const std::vector<int32_t>> chunks, uint32_t first) {
    got_first = first;
    return std::vector<float>(chunks.size() * 3 * n_vocab, 1.0f);
  };
  const auto r = perplexity(tokens, {.n_ctx = n_ctx, .n_vocab = n_vocab}, fake);
  EXPECT_EQ(got_first, 3u);
  EXPECT_EQ(r.stats.count, 6u);
}

TEST(Perplexity, RunningEstimatesAreReportedAfterEveryChunk) {
  const uint32_t n_vocab = 30, n_ctx = 10;
  const auto tokens = text_tokens(5 * n_ctx, n_vocab);
  std::vector<uint32_t> order;
  std::vector<double> values;
  const auto r = perplexity(tokens, {.n_ctx = n_ctx, .n_vocab = n_vocab, .chunks_per_call = 2},
                            causal_fake(n_vocab, n_ctx), [&](uint32_t i, double p) {
                              order.push_back(i);
                              values.push_back(p);
                            });
  EXPECT_EQ(order, (std::vector<uint32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(values, r.running);
  EXPECT_EQ(r.running.back(), r.stats.ppl());
}

TEST(Perplexity, ErrorIsTheStandardErrorOfTheMeanCarriedThroughExp) {
  NllStats s;
  for (const double v : {1.0, 2.0, 3.0, 4.0}) s.add(v);
  // mean 2.5, mean of squares 7.5, population variance 1.25, over N - 1 = 3.
  EXPECT_DOUBLE_EQ(s.ppl(), std::exp(2.5));
  EXPECT_NEAR(s.ppl_error(), std::sqrt(1.25 / 3.0) * std::exp(2.5), 1e-12);

  NllStats one;
  one.add(2.0);
  EXPECT_TRUE(std::isnan(one.ppl_error()));
}

TEST(Perplexity, LogSoftmaxIsStableForLargeLogits) {
  const std::vector<float> big = {1000.0f, 1000.0f, -1000.0f};
  EXPECT_NEAR(token_nll(big, 0), std::log(2.0), 1e-12);
  EXPECT_GT(token_nll(big, 2), 1999.0);
  const std::vector<float> row = {0.0f, 1.0f, 2.0f};
  const double z = 1 + std::exp(1.0) + std::exp(2.0);
  EXPECT_NEAR(token_nll(row, 1), std::log(z) - 1.0, 1e-12);
  EXPECT_THROW(token_nll(row, 3), std::out_of_range);
}

TEST(Perplexity, OutputLinesLookLikeLlamaPerplexity) {
  EXPECT_EQ(format_running(1, 5.12344), "[1]5.1234,");
  EXPECT_EQ(format_running(12, 13.5), "[12]13.5000,");
  NllStats s;
  for (const double v : {1.0, 2.0, 3.0, 4.0}) s.add(v);
  EXPECT_EQ(format_final(s), "Final estimate: PPL = 12.1825 +/- 7.86377");
}

TEST(Perplexity, ShortTextsAndBadOptionsAreRejected) {
  const ChunkEvaluator never = [](std::span<const std::vector<int32_t>>, uint32_t) -> std::vector<float> {
    ADD_FAILURE() << "evaluated";
    return {};
  };
  const auto tokens = text_tokens(2 * 16 - 1, 10);
  EXPECT_THROW(perplexity(tokens, {.n_ctx = 16, .n_vocab = 10}, never), std::invalid_argument);
  EXPECT_THROW(perplexity(tokens, {.n_ctx = 2, .n_vocab = 10}, never), std::invalid_argument);
  EXPECT_THROW(perplexity(tokens, {.n_ctx = 8, .n_vocab = 0}, never), std::invalid_argument);
}

TEST(Perplexity, AnEvaluatorReturningTheWrongSizeIsAnError) {
  const auto tokens = text_tokens(40, 10);
  const ChunkEvaluator wrong = [](std::span<const std::vector<int32_t>>, uint32_t) {
    return std::vector<float>(7, 0.0f);
  };
  EXPECT_THROW(perplexity(tokens, {.n_ctx = 8, .n_vocab = 10}, wrong), std::runtime_error);
}


TEST(Perplexity, AStopFlagSetAfterTheSecondChunkReturnsTheTwoChunksScoredSoFar) {
  const uint32_t n_vocab = 11, n_ctx = 8;
  const auto tokens = text_tokens(6 * n_ctx, n_vocab);
  std::atomic<bool> stop{false};
  PerplexityOptions o{.n_ctx = n_ctx, .n_vocab = n_vocab};
  o.stop = &stop;
  // Set from the progress callback, as a signal handler would set it between chunks.
  const auto r = perplexity(tokens, o, causal_fake(n_vocab, n_ctx), [&](uint32_t chunk, double) {
    if (chunk == 1) stop = true;
  });
  EXPECT_TRUE(r.interrupted);
  EXPECT_EQ(r.n_chunks, 2u);
  EXPECT_EQ(r.n_chunks_max, 6u);
  EXPECT_EQ(r.running.size(), 2u);
  EXPECT_EQ(r.stats.count, 2u * (n_ctx - 1 - n_ctx / 2));
  // The same two chunks as an uninterrupted run limited to two.
  const auto two = perplexity(tokens, {.n_ctx = n_ctx, .n_vocab = n_vocab, .max_chunks = 2}, causal_fake(n_vocab, n_ctx));
  EXPECT_FALSE(two.interrupted);
  EXPECT_EQ(r.stats.sum, two.stats.sum);
}

}  // namespace
}  // namespace chorus
