// The sampler chain on hand-made logits (CPU only).
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <vector>

#include "engine/sampling.h"

namespace chorus {
namespace {

std::vector<float> random_logits(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(static_cast<double>(rng() >> 11) * 0x1.0p-53 * 8.0 - 4.0);
  return v;
}

SamplerParams no_filters(float temp, uint64_t seed = 1) {
  SamplerParams p;
  p.temp = temp;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = seed;
  return p;
}

std::vector<int32_t> ids(const std::vector<Candidate>& c) {
  std::vector<int32_t> out;
  for (const auto& x : c) out.push_back(x.id);
  return out;
}

TEST(Sampling, GreedyPicksTheLargestLogit) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    const auto logits = random_logits(1000, seed);
    Sampler s(SamplerParams{.temp = 0.0f, .seed = seed});
    const auto best = std::max_element(logits.begin(), logits.end()) - logits.begin();
    EXPECT_EQ(s.sample(logits), best);
  }
}

TEST(Sampling, GreedyTiesGoToTheLowestId) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 2.0f};
  Sampler s(SamplerParams{.temp = 0.0f});
  EXPECT_EQ(s.sample(logits), 1);
  EXPECT_EQ(argmax(logits), 1);
  SamplerParams negative;
  negative.temp = -1.0f;
  EXPECT_EQ(Sampler(negative).sample(logits), 1);
}

TEST(Sampling, NanLogitsNeverWin) {
  const std::vector<float> logits = {std::nanf(""), 1.0f, std::nanf(""), 3.0f};
  EXPECT_EQ(Sampler(SamplerParams{.temp = 0.0f}).sample(logits), 3);
  Sampler s(SamplerParams{.temp = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f});
  for (const auto& c : s.candidates(logits))
    if (c.id == 0 || c.id == 2) {
      EXPECT_EQ(c.p, 0.0f);
    }
}

TEST(Sampling, TopKOfOneEqualsGreedy) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    const auto logits = random_logits(777, seed);
    SamplerParams p;
    p.temp = 1.5f;
    p.top_k = 1;
    p.seed = seed;
    Sampler s(p);
    EXPECT_EQ(s.sample(logits), argmax(logits)) << "seed " << seed;
  }
}

TEST(Sampling, SameSeedGivesTheSameTokens) {
  auto run = [](uint64_t seed) {
    SamplerParams p;
    p.temp = 1.0f;
    p.seed = seed;
    p.repeat_penalty = 1.1f;
    Sampler s(p);
    std::vector<int32_t> out;
    for (int step = 0; step < 200; ++step) {
      const int32_t t = s.sample(random_logits(300, static_cast<uint64_t>(step)));
      s.accept(t);
      out.push_back(t);
    }
    return out;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
}

TEST(Sampling, ResetRestartsTheRandomStream) {
  Sampler s(no_filters(1.0f, 7));
  const auto logits = random_logits(50, 3);
  std::vector<int32_t> a, b;
  for (int i = 0; i < 50; ++i) a.push_back(s.sample(logits));
  s.reset();
  for (int i = 0; i < 50; ++i) b.push_back(s.sample(logits));
  EXPECT_EQ(a, b);
}

TEST(Sampling, DrawsAreFixedForAGivenSeed) {
  // Pins the uniform -> index draw: the same on every standard library.
  Sampler s(no_filters(1.0f, 12345));
  const std::vector<float> logits = {0.0f, 0.0f, 0.0f, 0.0f};  // uniform over 4
  std::mt19937_64 rng(12345);
  for (int i = 0; i < 100; ++i) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    EXPECT_EQ(s.sample(logits), static_cast<int32_t>(u * 4)) << "draw " << i;
  }
}

TEST(Sampling, TopKKeepsTheKLargestInOrder) {
  const std::vector<float> logits = {1.0f, 5.0f, 3.0f, 4.0f, 2.0f, 4.0f};
  SamplerParams p = no_filters(1.0f);
  p.top_k = 3;
  EXPECT_EQ(ids(Sampler(p).candidates(logits)), (std::vector<int32_t>{1, 3, 5}));
  p.top_k = 0;
  EXPECT_EQ(ids(Sampler(p).candidates(logits)), (std::vector<int32_t>{1, 3, 5, 2, 4, 0}));
  p.top_k = 100;
  EXPECT_EQ(Sampler(p).candidates(logits).size(), 6u);
}

TEST(Sampling, TopPKeepsTheSmallestPrefixReachingP) {
  // Probabilities 0.5, 0.25, 0.125, 0.125 (logits are their logs).
  const std::vector<float> logits = {std::log(0.125f), std::log(0.5f), std::log(0.25f), std::log(0.125f)};
  SamplerParams p = no_filters(1.0f);
  p.top_p = 0.45f;
  EXPECT_EQ(ids(Sampler(p).candidates(logits)), (std::vector<int32_t>{1}));
  p.top_p = 0.6f;
  EXPECT_EQ(ids(Sampler(p).candidates(logits)), (std::vector<int32_t>{1, 2}));
  p.top_p = 0.8f;
  EXPECT_EQ(ids(Sampler(p).candidates(logits)), (std::vector<int32_t>{1, 2, 0}));
  p.top_p = 0.01f;
  EXPECT_EQ(ids(Sampler(p).candidates(logits)), (std::vector<int32_t>{1}));
  // Renormalised after the cut.
  p.top_p = 0.7f;
  const auto c = Sampler(p).candidates(logits);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_NEAR(c[0].p, 2.0 / 3.0, 1e-6);
  EXPECT_NEAR(c[1].p, 1.0 / 3.0, 1e-6);
}

TEST(Sampling, MinPDropsTokensBelowAFractionOfTheBest) {
  // Probabilities relative to the best: 1, 0.5, 0.2, 0.05.
  const std::vector<float> logits = {std::log(0.05f), std::log(1.0f), std::log(0.2f), std::log(0.5f)};
  SamplerParams p = no_filters(1.0f);
  p.min_p = 0.3f;
  EXPECT_EQ(ids(Sampler(p).candidates(logits)), (std::vector<int32_t>{1, 3}));
  p.min_p = 0.1f;
  EXPECT_EQ(ids(Sampler(p).candidates(logits)), (std::vector<int32_t>{1, 3, 2}));
  p.min_p = 1.0f;
  EXPECT_EQ(ids(Sampler(p).candidates(logits)), (std::vector<int32_t>{1}));
}

TEST(Sampling, TemperatureSharpensAndFlattens) {
  const std::vector<float> logits = {0.0f, 1.0f};
  const double e = std::exp(1.0);
  for (const float t : {0.25f, 0.5f, 1.0f, 2.0f, 4.0f}) {
    const auto c = Sampler(no_filters(t)).candidates(logits);
    ASSERT_EQ(c.size(), 2u);
    const double want = 1.0 / (1.0 + std::pow(e, -1.0 / t));
    EXPECT_NEAR(c[0].p, want, 1e-6) << "temp " << t;
    EXPECT_EQ(c[0].id, 1);
  }
}

TEST(Sampling, FiltersUseUntemperedProbabilities) {
  // llama.cpp's order: top-p and min-p see temperature 1; temperature comes last.
  const std::vector<float> logits = {std::log(0.6f), std::log(0.3f), std::log(0.1f)};
  SamplerParams p = no_filters(10.0f);
  p.top_p = 0.85f;
  EXPECT_EQ(ids(Sampler(p).candidates(logits)), (std::vector<int32_t>{0, 1}));
  p.top_p = 1.0f;
  p.min_p = 0.4f;
  EXPECT_EQ(ids(Sampler(p).candidates(logits)), (std::vector<int32_t>{0, 1}));
}

TEST(Sampling, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  const std::vector<float> logits = {2.0f, -2.0f, 1.0f, -1.0f, 0.0f};
  SamplerParams p = no_filters(1.0f);
  p.repeat_penalty = 2.0f;
  p.repeat_last_n = 64;
  Sampler s(p);
  for (const int32_t t : {0, 1, 0, 4, 0}) s.accept(t);  // repeats count once
  std::map<int32_t, float> got;
  for (const auto& c : s.candidates(logits)) got[c.id] = c.logit;
  EXPECT_EQ(got[0], 1.0f);
  EXPECT_EQ(got[1], -4.0f);
  EXPECT_EQ(got[2], 1.0f);
  EXPECT_EQ(got[3], -1.0f);
  EXPECT_EQ(got[4], 0.0f);
}

TEST(Sampling, RepetitionPenaltyLooksOnlyAtTheLastNTokens) {
  const std::vector<float> logits = {3.0f, 2.9f, 0.0f};
  SamplerParams p = no_filters(0.0f);  // greedy still applies the penalty (llama.cpp's chain)
  p.repeat_penalty = 1.5f;
  p.repeat_last_n = 2;
  Sampler s(p);
  s.accept(0);
  EXPECT_EQ(s.sample(logits), 1);  // 3.0 / 1.5 = 2.0 < 2.9
  s.accept(2);
  s.accept(2);  // token 0 is now older than the last 2
  EXPECT_EQ(s.sample(logits), 0);
  EXPECT_EQ(s.history(), (std::vector<int32_t>{2, 2}));

  p.repeat_last_n = 0;  // disabled
  Sampler off(p);
  off.accept(0);
  EXPECT_EQ(off.sample(logits), 0);
}

TEST(Sampling, ProbabilitiesSumToOne) {
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    SamplerParams p;
    p.temp = 0.7f;
    p.seed = seed;
    const auto c = Sampler(p).candidates(random_logits(5000, seed));
    double sum = 0;
    for (const auto& x : c) sum += static_cast<double>(x.p);
    EXPECT_NEAR(sum, 1.0, 1e-5);
    EXPECT_GE(c.size(), 1u);
    EXPECT_LE(c.size(), 40u);
  }
}

TEST(Sampling, DrawFrequenciesFollowTheSoftmax) {
  // Chi-square goodness of fit over 8 tokens and 80,000 draws: 7 degrees of freedom, the
  // 0.999 quantile is 24.3. The seed is fixed, so the test is deterministic.
  const std::vector<float> logits = {0.0f, 0.5f, 1.0f, -1.0f, 2.0f, 0.2f, -0.5f, 1.5f};
  const float temp = 0.9f;
  Sampler s(no_filters(temp, 2024));
  const int draws = 80000;
  std::vector<int> count(logits.size(), 0);
  for (int i = 0; i < draws; ++i) ++count[static_cast<size_t>(s.sample(logits))];
  double z = 0;
  for (const float l : logits) z += std::exp(static_cast<double>(l / temp));
  double chi2 = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double expected = draws * std::exp(static_cast<double>(logits[i] / temp)) / z;
    chi2 += (count[i] - expected) * (count[i] - expected) / expected;
  }
  EXPECT_LT(chi2, 24.3);
}

TEST(Sampling, EmptyLogitsAreRejected) {
  Sampler s(SamplerParams{});
  EXPECT_THROW(s.sample(std::span<const float>()), std::invalid_argument);
}

}  // namespace
}  // namespace chorus
