#include "engine/perplexity.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>

#include "engine/model.h"

namespace chorus {

double NllStats::ppl() const { return std::exp(mean()); }

double NllStats::ppl_error() const {
  if (count < 2) return std::numeric_limits<double>::quiet_NaN();
  const double n = static_cast<double>(count);
  const double m = sum / n;
  const double variance = sum2 / n - m * m;
  if (!(variance > 0)) return std::numeric_limits<double>::quiet_NaN();
  return std::sqrt(variance / (n - 1)) * std::exp(m);
}

double token_nll(std::span<const float> logits, int32_t target) {
  if (target < 0 || static_cast<size_t>(target) >= logits.size())
    throw std::out_of_range("token " + std::to_string(target) + " is outside a logit row of " +
                            std::to_string(logits.size()));
  double top = -std::numeric_limits<double>::infinity();
  for (const float v : logits) top = std::max(top, static_cast<double>(v));
  double sum = 0;
  for (const float v : logits) sum += std::exp(static_cast<double>(v) - top);
  return top + std::log(sum) - static_cast<double>(logits[static_cast<size_t>(target)]);
}

PerplexityResult perplexity(std::span<const int32_t> tokens, const PerplexityOptions& options,
                            const ChunkEvaluator& evaluate,
                            const std::function<void(uint32_t, double)>& on_chunk) {
  const uint32_t n_ctx = options.n_ctx;
  if (n_ctx < 4) throw std::invalid_argument("perplexity needs a context of at least 4 tokens, got " +
                                             std::to_string(n_ctx));
  if (options.n_vocab == 0) throw std::invalid_argument("perplexity: n_vocab is 0");
  if (tokens.size() < 2 * static_cast<size_t>(n_ctx))
    throw std::invalid_argument("the text tokenizes to only " + std::to_string(tokens.size()) +
                                " tokens; perplexity with a context of " + std::to_string(n_ctx) +
                                " needs at least " + std::to_string(2 * static_cast<size_t>(n_ctx)));
  const uint32_t per_call = std::max(1u, options.chunks_per_call);

  PerplexityResult result;
  const size_t max_chunks = tokens.size() / n_ctx;
  result.n_chunks_max = static_cast<uint32_t>(std::min<size_t>(max_chunks, std::numeric_limits<uint32_t>::max()));
  result.n_chunks = options.max_chunks == 0 ? result.n_chunks_max : std::min(options.max_chunks, result.n_chunks_max);

  const uint32_t first = n_ctx / 2;
  const size_t rows = n_ctx - 1 - first;  // scored tokens per chunk
  const size_t row_floats = options.n_vocab;

  std::vector<std::vector<int32_t>> chunks;
  for (uint32_t c0 = 0; c0 < result.n_chunks; c0 += per_call) {
    const uint32_t n = std::min(per_call, result.n_chunks - c0);
    chunks.resize(n);
    for (uint32_t k = 0; k < n; ++k) {
      const auto begin = tokens.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(c0 + k) * n_ctx);
      chunks[k].assign(begin, begin + n_ctx);
      if (options.bos >= 0) chunks[k][0] = options.bos;
    }
    const std::vector<float> logits = evaluate(chunks, first);
    if (logits.size() != n * rows * row_floats)
      throw std::runtime_error("perplexity: the evaluator returned " + std::to_string(logits.size()) +
                               " floats for " + std::to_string(n) + " chunks, expected " +
                               std::to_string(n * rows * row_floats));
    for (uint32_t k = 0; k < n; ++k) {
      for (size_t r = 0; r < rows; ++r) {
        const std::span<const float> row(logits.data() + (k * rows + r) * row_floats, row_floats);
        // The logits at position first + r predict the (original) token at first + r + 1.
        result.stats.add(token_nll(row, chunks[k][first + r + 1]));
      }
      result.running.push_back(result.stats.ppl());
      if (on_chunk) on_chunk(c0 + k, result.running.back());
    }
    if (options.stop && options.stop->load() && c0 + n < result.n_chunks) {
      result.interrupted = true;
      result.n_chunks = c0 + n;
      break;
    }
  }
  return result;
}

std::string format_running(uint32_t chunk_1based, double ppl) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "[%u]%.4f,", chunk_1based, ppl);
  return buf;
}

std::string format_final(const NllStats& stats) {
  const double err = stats.ppl_error();
  char buf[128];
  if (std::isnan(err))
    std::snprintf(buf, sizeof buf, "Final estimate: PPL = %.4f +/- nan (too few tokens or zero variance)",
                  stats.ppl());
  else
    std::snprintf(buf, sizeof buf, "Final estimate: PPL = %.4f +/- %.5f", stats.ppl(), err);
  return buf;
}

ChunkEvaluator context_evaluator(Context& context) {
  return [&context](std::span<const std::vector<int32_t>> chunks, uint32_t first) {
    const uint32_t n = static_cast<uint32_t>(chunks.size());
    if (n > context.n_seq())
      throw std::invalid_argument("perplexity: " + std::to_string(n) + " chunks per call but the context has " +
                                  std::to_string(context.n_seq()) + " sequences");
    std::vector<Context::Segment> segments(n);
    // Positions 0 .. first - 1: only fill the KV cache.
    for (uint32_t k = 0; k < n; ++k) {
      if (chunks[k].size() > context.n_ctx())
        throw std::invalid_argument("perplexity: a chunk of " + std::to_string(chunks[k].size()) +
                                    " tokens does not fit a context of " + std::to_string(context.n_ctx()));
      context.clear(k);
      segments[k] = {k, std::span<const int32_t>(chunks[k]).first(first), false};
    }
    context.decode(segments);
    // Positions first .. n_ctx - 2: the scored rows (the last token predicts nothing scored).
    for (uint32_t k = 0; k < n; ++k)
      segments[k] = {k, std::span<const int32_t>(chunks[k]).subspan(first, chunks[k].size() - 1 - first), true};
    std::vector<float> logits = context.decode(segments);
    for (uint32_t k = 0; k < n; ++k) context.clear(k);
    return logits;
  };
}

}  // namespace chorus
