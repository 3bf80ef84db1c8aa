// Perplexity arithmetic on fake logit callbacks (CPU only); the model-backed runs live in
// test_run.cpp.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
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

std::vector<float> random_logits(size_t n, uint64_t seed, float scale = 4.0f) {
  std::vector<float> v(n);
  uint64_t x = seed;
  for (auto& f : v) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    f = static_cast<float>(static_cast<double>(x >> 40) / 16777216.0 * 2.0 - 1.0) * scale;
  }
  return v;
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

// ---- KL divergence against a base file ----

// A file path under the temporary folder, unique per test, removed at the end of the test.
class TempFile {
 public:
  TempFile() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = (std::filesystem::temp_directory_path() /
             (std::string("chorus_kld_") + info->name() + "_" + std::to_string(::getpid()) + ".bin"))
                .string();
  }
  ~TempFile() { std::filesystem::remove(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::vector<char> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// The message of the std::runtime_error `fn` throws ("" if none).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(KlBase, AWrittenFileReadsBackWithItsHeaderTokensAndCompressedRows) {
  const TempFile f;
  const uint32_t n_vocab = 37, n_ctx = 10, n_chunk = 3;  // odd vocabulary: one padding value per row
  const auto tokens = text_tokens(n_chunk * n_ctx + 4, n_vocab);
  const size_t rows = n_ctx - 1 - n_ctx / 2, width = base_row_width(n_vocab);
  EXPECT_EQ(width, 42u);
  std::vector<std::vector<float>> chunks;
  {
    KlBaseWriter w(f.path(), n_ctx, n_vocab, n_chunk, tokens);
    for (uint32_t c = 0; c < n_chunk; ++c) {
      chunks.push_back(random_logits(rows * n_vocab, 100 + c));
      w.add_chunk(chunks.back());
    }
    w.close();
  }
  EXPECT_EQ(std::filesystem::file_size(f.path()), 20 + 4 * n_chunk * n_ctx + 2 * n_chunk * rows * width);
  const std::vector<char> bytes = file_bytes(f.path());
  EXPECT_EQ(std::string(bytes.data(), 8), "_logits_");

  KlBaseReader r(f.path());
  EXPECT_EQ(r.n_ctx(), n_ctx);
  EXPECT_EQ(r.n_vocab(), n_vocab);
  EXPECT_EQ(r.n_chunk(), n_chunk);
  EXPECT_EQ(r.complete_chunks(), n_chunk);
  EXPECT_EQ(std::vector<int32_t>(r.tokens().begin(), r.tokens().end()),
            std::vector<int32_t>(tokens.begin(), tokens.begin() + n_chunk * n_ctx));
  for (uint32_t c = 0; c < n_chunk; ++c) {
    const auto got = r.chunk_rows(c);
    std::vector<uint16_t> want(rows * width);
    for (size_t k = 0; k < rows; ++k)
      compress_log_probs(std::span<const float>(chunks[c]).subspan(k * n_vocab, n_vocab),
                         std::span<uint16_t>(want).subspan(k * width, width));
    EXPECT_EQ(std::vector<uint16_t>(got.begin(), got.end()), want) << "chunk " << c;
  }
}

TEST(KlBase, CompressionKeepsEveryLogProbabilityAboveMinus16WithinHalfAStep) {
  const uint32_t n_vocab = 1000;
  const std::vector<float> logits = random_logits(n_vocab, 5, 12.0f);  // a range wider than 16
  std::vector<uint16_t> row(base_row_width(n_vocab));
  compress_log_probs(logits, row);
  float scale;
  std::memcpy(&scale, row.data(), sizeof scale);
  const float top = *std::max_element(logits.begin(), logits.end());
  EXPECT_NEAR(scale, 16.0f / 65535.0f, 1e-9);
  int kept = 0;
  for (uint32_t i = 0; i < n_vocab; ++i) {
    const double exact = -token_nll(logits, static_cast<int32_t>(i));
    if (logits[i] > top - 16.0f) {
      EXPECT_NEAR(decoded_log_prob(row, i), exact, scale * 0.5 + 1e-5) << "entry " << i;
      ++kept;
    } else {
      EXPECT_EQ(row[4 + i], 0u);
      EXPECT_LE(decoded_log_prob(row, i), -16.0 + 1e-5);
    }
  }
  EXPECT_GT(kept, 100);
  EXPECT_LT(kept, 1000);
  // A flat row has no spread: scale 0, every log-probability -log(n).
  const std::vector<float> flat(8, 3.0f);
  std::vector<uint16_t> flat_row(base_row_width(8));
  compress_log_probs(flat, flat_row);
  for (uint32_t i = 0; i < 8; ++i) EXPECT_NEAR(decoded_log_prob(flat_row, i), -std::log(8.0), 1e-6);
}

TEST(KlDivergence, IdenticalLogitsGiveZeroKldTheSamePplAndFullTopAgreement) {
  const TempFile f;
  const uint32_t n_vocab = 300, n_ctx = 32;
  const auto tokens = text_tokens(4 * n_ctx + 3, n_vocab, 9);
  KlBaseWriter w(f.path(), n_ctx, n_vocab, 4, tokens);
  PerplexityOptions o{.n_ctx = n_ctx, .n_vocab = n_vocab, .chunks_per_call = 3, .bos = 2};
  o.save_base = &w;
  const auto ppl = perplexity(tokens, o, causal_fake(n_vocab, n_ctx));
  w.close();

  KlBaseReader base(f.path());
  o.save_base = nullptr;
  std::vector<uint32_t> reported;
  const auto r = kl_divergence(base, o, causal_fake(n_vocab, n_ctx),
                               [&](uint32_t chunk, const KldStats&) { reported.push_back(chunk); });
  EXPECT_EQ(reported, (std::vector<uint32_t>{0, 1, 2, 3}));
  EXPECT_EQ(r.n_chunks, 4u);
  EXPECT_EQ(r.stats.count, ppl.stats.count);
  EXPECT_NEAR(std::exp(r.stats.ln_ppl().mean), ppl.stats.ppl(), 1e-9 * ppl.stats.ppl());
  // The base's 16-bit rounding is all that differs: below 1e-8 per token after renormalising.
  EXPECT_LT(std::abs(r.stats.kld().mean), 1e-8);
  for (const float k : r.stats.kld_values) EXPECT_LT(std::abs(k), 1e-7);
  EXPECT_LT(std::abs(r.stats.ln_ppl_ratio().mean), 1e-4);
  EXPECT_EQ(r.stats.same_top().mean, 1.0);
  const std::string summary = format_kld_summary(r.stats);
  EXPECT_NE(summary.find("Same top p: 100.000 \xc2\xb1 0.000 %"), std::string::npos) << summary;
  EXPECT_NE(summary.find("Mean    KLD:   0.000000"), std::string::npos) << summary;
}

TEST(KlDivergence, TwoTokenRowsGiveTheAnalyticKldAndTopAgreement) {
  // Base: p = (1/4, 3/4) on every row; Q: (1/2, 1/2) on odd tokens' rows... here on every row.
  const TempFile f;
  const uint32_t n_vocab = 2, n_ctx = 8;
  std::vector<int32_t> tokens(2 * n_ctx, 1);
  const auto rows_of = [&](float a, float b) {
    return [=](std::span<const std::vector<int32_t>> chunks, uint32_t first) {
      std::vector<float> out;
      for (size_t k = 0; k < chunks.size() * (n_ctx - 1 - first); ++k) {
        out.push_back(a);
        out.push_back(b);
      }
      return out;
    };
  };
  KlBaseWriter w(f.path(), n_ctx, n_vocab, 2, tokens);
  PerplexityOptions o{.n_ctx = n_ctx, .n_vocab = n_vocab};
  o.save_base = &w;
  perplexity(tokens, o, rows_of(0.0f, static_cast<float>(std::log(3.0))));
  w.close();
  o.save_base = nullptr;
  KlBaseReader base(f.path());
  const auto r = kl_divergence(base, o, rows_of(0.0f, 0.0f));
  const double kld = 0.25 * std::log(0.25 / 0.5) + 0.75 * std::log(0.75 / 0.5);
  EXPECT_EQ(r.stats.count, 6u);
  EXPECT_NEAR(r.stats.kld().mean, kld, 1e-4);
  EXPECT_NEAR(r.stats.ln_ppl().mean, std::log(2.0), 1e-9);
  EXPECT_NEAR(r.stats.ln_ppl_base().mean, -std::log(0.75), 1e-4);
  EXPECT_NEAR(r.stats.ln_ppl_ratio().mean, std::log(2.0) + std::log(0.75), 1e-4);
  EXPECT_NEAR(r.stats.p_diff_values[0], 0.5 - 0.75, 1e-4);
  // Q's rows are flat: its first entry (token 0) is its top token, the base's is token 1.
  EXPECT_EQ(r.stats.same_top().mean, 0.0);
}

TEST(KlBase, AWrongMagicIsAnErrorNamingTheFileAndTheMagic) {
  const TempFile f;
  write_bytes(f.path(), {'G', 'G', 'U', 'F', 0, 0, 0, 0, 1, 0, 0, 0});
  const std::string e = error_of([&] { KlBaseReader reader(f.path()); });
  EXPECT_NE(e.find(f.path()), std::string::npos) << e;
  EXPECT_NE(e.find("_logits_"), std::string::npos) << e;
  EXPECT_NE(error_of([] { KlBaseReader r("/nonexistent/chorus/base.kld"); }).find("/nonexistent/chorus/base.kld"),
            std::string::npos);
}

TEST(KlBase, ATruncatedFileIsAnErrorNamingTheFieldItLacks) {
  const TempFile f;
  const uint32_t n_vocab = 20, n_ctx = 8;
  const auto tokens = text_tokens(3 * n_ctx, n_vocab);
  {
    KlBaseWriter w(f.path(), n_ctx, n_vocab, 3, tokens);
    PerplexityOptions o{.n_ctx = n_ctx, .n_vocab = n_vocab};
    o.save_base = &w;
    perplexity(tokens, o, causal_fake(n_vocab, n_ctx));
    w.close();
  }
  const std::vector<char> whole = file_bytes(f.path());
  const auto cut = [&](size_t n) { write_bytes(f.path(), std::vector<char>(whole.begin(), whole.begin() + n)); };

  cut(14);  // inside n_vocab
  std::string e = error_of([&] { KlBaseReader reader(f.path()); });
  EXPECT_NE(e.find(f.path()), std::string::npos) << e;
  EXPECT_NE(e.find("n_vocab"), std::string::npos) << e;

  cut(20 + 4 * 3 * n_ctx - 1);  // inside the tokens
  e = error_of([&] { KlBaseReader reader(f.path()); });
  EXPECT_NE(e.find("tokens"), std::string::npos) << e;

  cut(20 + 4 * 3 * n_ctx + 10);  // tokens whole, the first chunk's rows cut
  e = error_of([&] { KlBaseReader(f.path()).require_chunks(1); });
  EXPECT_NE(e.find("holds no whole chunk of the 3"), std::string::npos) << e;

  cut(whole.size() - 1);  // inside the last chunk's rows: two whole chunks remain
  KlBaseReader base(f.path());
  EXPECT_EQ(base.n_chunk(), 3u);
  EXPECT_EQ(base.complete_chunks(), 2u);
  PerplexityOptions o{.n_ctx = n_ctx, .n_vocab = n_vocab};
  e = error_of([&] { kl_divergence(base, o, causal_fake(n_vocab, n_ctx)); });
  EXPECT_NE(e.find(f.path()), std::string::npos) << e;
  EXPECT_NE(e.find("--chunks 2"), std::string::npos) << e;
  o.max_chunks = 2;
  const auto r = kl_divergence(base, o, causal_fake(n_vocab, n_ctx));
  EXPECT_EQ(r.n_chunks, 2u);
  EXPECT_LT(std::abs(r.stats.kld().mean), 1e-8);

  // A bad header value and a token outside the vocabulary.
  std::vector<char> bad = whole;
  const int32_t zero = 0;
  std::memcpy(bad.data() + 16, &zero, 4);
  write_bytes(f.path(), bad);
  EXPECT_NE(error_of([&] { KlBaseReader reader(f.path()); }).find("n_chunk is 0"), std::string::npos);
  bad = whole;
  const int32_t big = 20;
  std::memcpy(bad.data() + 20 + 4 * 5, &big, 4);
  write_bytes(f.path(), bad);
  EXPECT_NE(error_of([&] { KlBaseReader reader(f.path()); }).find("token 5 is 20"), std::string::npos);
}

TEST(KlDivergence, ABaseOfAnotherContextOrVocabularyIsRejected) {
  const TempFile f;
  const auto tokens = text_tokens(2 * 8, 20);
  KlBaseWriter(f.path(), 8, 20, 2, tokens).close();
  KlBaseReader base(f.path());
  EXPECT_THROW(kl_divergence(base, {.n_ctx = 16, .n_vocab = 20}, causal_fake(20, 16)), std::invalid_argument);
  EXPECT_THROW(kl_divergence(base, {.n_ctx = 8, .n_vocab = 21}, causal_fake(21, 8)), std::invalid_argument);
}

TEST(KlDivergence, ChunkLinesLookLikeLlamaPerplexity) {
  KldStats s;
  std::vector<uint16_t> row(base_row_width(3));
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f};
  compress_log_probs(logits, row);
  for (int i = 0; i < 20; ++i) s.add(logits, row, i % 3);
  const std::string line = format_kld_chunk(1, s);
  EXPECT_EQ(line.substr(0, 8), "   1    ");
  EXPECT_NE(line.find("100.000 \xc2\xb1  0.000 %"), std::string::npos) << line;
  EXPECT_NE(format_kld_header().find("Same top p"), std::string::npos);
}

}  // namespace
}  // namespace chorus
