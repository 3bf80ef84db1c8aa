// engine/sampling.h — choosing the next token from a row of logits.
//
// Owns: the sampler chain (repetition penalty, top-k, top-p, min-p, temperature, a seeded
// draw) and greedy selection, with llama.cpp's semantics for each stage:
//   repetition penalty  every distinct token among the last `repeat_last_n` accepted tokens
//                       (prompt included) has its logit divided by the penalty when positive,
//                       multiplied by it when negative (zero stays zero);
//   top-k               keep the k highest logits (k <= 0: keep all);
//   top-p               softmax of what is left, keep the smallest prefix (by probability,
//                       descending) whose mass reaches p (p >= 1: keep all);
//   min-p               keep tokens whose probability is at least min_p times the largest
//                       (min_p <= 0: keep all);
//   temperature         divide the remaining logits by temp, softmax, draw.
// temp <= 0 is greedy: the penalty still applies, then the highest logit wins (ties: lowest id).
// Every stage keeps at least one token. Candidates are ordered by logit descending, ties by
// id ascending, so the chain is a pure function of (logits, history, params) and the draw
// depends only on the seed: std::mt19937_64 and a hand-written uniform -> index draw (no
// std:: distributions, whose output differs between standard libraries).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace chorus {

struct SamplerParams {
  float temp = 0.8f;            // <= 0: greedy
  int32_t top_k = 40;           // <= 0: disabled
  float top_p = 0.95f;          // >= 1: disabled
  float min_p = 0.05f;          // <= 0: disabled
  float repeat_penalty = 1.0f;  // 1: disabled
  int32_t repeat_last_n = 64;   // tokens of history the penalty looks at (0: disabled, -1: all)
  uint64_t seed = 0;            // seeds the draw
};

// One surviving token: its (penalised, untempered) logit and, after the chain, its probability.
struct Candidate {
  int32_t id;
  float logit;
  float p;
};

// Index of the largest value; ties go to the lowest index. `logits` must not be empty.
int32_t argmax(std::span<const float> logits);

class Sampler {
 public:
  explicit Sampler(const SamplerParams& params);

  // Records a token (prompt or generated) in the history the repetition penalty looks at.
  void accept(int32_t token);
  // Picks the next token from a row of n_vocab logits (does not accept it).
  int32_t sample(std::span<const float> logits);
  // The tokens the draw would choose among, in draw order, with their probabilities after
  // temperature (sum 1). Greedy: the single winner with p = 1. For tests and diagnostics.
  std::vector<Candidate> candidates(std::span<const float> logits) const;

  // Forgets the history and restarts the random stream from the seed.
  void reset();
  const SamplerParams& params() const { return params_; }
  const std::vector<int32_t>& history() const { return history_; }

 private:
  // Logits with the repetition penalty applied.
  std::vector<float> penalised(std::span<const float> logits) const;
  // A uniform double in [0, 1) from 53 random bits.
  double uniform();

  SamplerParams params_;
  std::vector<int32_t> history_;  // accepted tokens, oldest first (trimmed to repeat_last_n)
  std::mt19937_64 rng_;
};

}  // namespace chorus
