#include "engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace chorus {
namespace {

// Draw order: logit descending, then id ascending.
bool before(const Candidate& a, const Candidate& b) {
  return a.logit != b.logit ? a.logit > b.logit : a.id < b.id;
}

// p[i] = softmax(logit[i] * scale) over the candidates (sorted, so the first is the largest).
void softmax_into(std::vector<Candidate>& c, double scale) {
  const double top = static_cast<double>(c.front().logit) * scale;
  if (!std::isfinite(top)) {  // every logit -inf (or worse): the first one takes all
    for (auto& x : c) x.p = 0;
    c.front().p = 1;
    return;
  }
  double sum = 0;
  for (const auto& x : c) sum += std::exp(static_cast<double>(x.logit) * scale - top);
  for (auto& x : c) x.p = static_cast<float>(std::exp(static_cast<double>(x.logit) * scale - top) / sum);
}

}  // namespace

int32_t argmax(std::span<const float> logits) {
  if (logits.empty()) throw std::invalid_argument("argmax of an empty logit row");
  size_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best] || (std::isnan(logits[best]) && !std::isnan(logits[i]))) best = i;
  return static_cast<int32_t>(best);
}

Sampler::Sampler(const SamplerParams& params) : params_(params), rng_(params.seed) {}

void Sampler::accept(int32_t token) {
  if (params_.repeat_last_n == 0) return;
  history_.push_back(token);
  if (params_.repeat_last_n > 0 && history_.size() > static_cast<size_t>(params_.repeat_last_n))
    history_.erase(history_.begin(), history_.end() - params_.repeat_last_n);
}

void Sampler::reset() {
  history_.clear();
  rng_.seed(params_.seed);
}

double Sampler::uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

std::vector<float> Sampler::penalised(std::span<const float> logits) const {
  std::vector<float> out(logits.begin(), logits.end());
  // A NaN would break the ordering every later stage relies on: it never wins.
  for (auto& v : out)
    if (std::isnan(v)) v = -std::numeric_limits<float>::infinity();
  const float penalty = params_.repeat_penalty;
  if (penalty == 1.0f) return out;
  std::vector<bool> done(out.size(), false);
  for (const int32_t t : history_) {
    if (t < 0 || static_cast<size_t>(t) >= out.size() || done[static_cast<size_t>(t)]) continue;
    done[static_cast<size_t>(t)] = true;
    float& v = out[static_cast<size_t>(t)];
    if (v > 0) v /= penalty;
    else v *= penalty;
  }
  return out;
}

std::vector<Candidate> Sampler::candidates(std::span<const float> logits) const {
  if (logits.empty()) throw std::invalid_argument("sampling from an empty logit row");
  const std::vector<float> pen = penalised(logits);
  const size_t n = pen.size();
  if (params_.temp <= 0) {
    const int32_t best = argmax(pen);
    return {Candidate{best, pen[static_cast<size_t>(best)], 1.0f}};
  }

  std::vector<Candidate> c(n);
  for (size_t i = 0; i < n; ++i) c[i] = Candidate{static_cast<int32_t>(i), pen[i], 0.0f};

  // top-k (and the sort every later stage needs).
  size_t keep = n;
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n) keep = static_cast<size_t>(params_.top_k);
  std::partial_sort(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(keep), c.end(), before);
  c.resize(keep);

  // top-p: smallest prefix whose probability mass reaches p.
  if (params_.top_p < 1.0f) {
    softmax_into(c, 1.0);
    double cum = 0;
    for (size_t i = 0; i < c.size(); ++i) {
      cum += static_cast<double>(c[i].p);
      if (cum >= static_cast<double>(params_.top_p)) {
        c.resize(i + 1);
        break;
      }
    }
  }

  // min-p: p_i >= min_p * p_max, i.e. logit_i >= logit_max + log(min_p).
  if (params_.min_p > 0.0f && std::isfinite(c.front().logit)) {
    const float floor_logit = c.front().logit + std::log(params_.min_p);
    size_t i = 1;
    while (i < c.size() && c[i].logit >= floor_logit) ++i;
    c.resize(i);
  }

  softmax_into(c, 1.0 / static_cast<double>(params_.temp));
  return c;
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (params_.temp <= 0 && params_.repeat_penalty == 1.0f) {  // plain greedy: no copy
    if (logits.empty()) throw std::invalid_argument("sampling from an empty logit row");
    return argmax(logits);
  }
  const std::vector<Candidate> c = candidates(logits);
  if (params_.temp <= 0) return c.front().id;
  const double u = uniform();
  double cum = 0;
  for (const auto& x : c) {
    cum += static_cast<double>(x.p);
    if (u < cum) return x.id;
  }
  return c.back().id;  // rounding left u just above the total
}

}  // namespace chorus
