// engine/perplexity.h — perplexity of a model over a text, by llama-perplexity's method.
//
// Owns: cutting the tokenized text into chunks, the BOS rule, which positions are scored,
// the negative log-likelihood sums and the final estimate with its error. The model is
// behind a callback (ChunkEvaluator) so the arithmetic is tested on the CPU with fake logits;
// context_evaluator() adapts a Context to it.
//
// The method (facts from llama.cpp's perplexity tool):
//   * the whole text is tokenized once, with the vocabulary's add-BOS rule;
//   * it is cut into n_chunks = n_tokens / n_ctx chunks of n_ctx tokens (the tail is dropped;
//     fewer than 2 * n_ctx tokens is an error); --chunks N keeps the first N;
//   * each chunk is evaluated from an empty cache as its own sequence; when the model adds
//     BOS, the chunk's first token is replaced by BOS;
//   * with first = n_ctx / 2, the logits of positions first .. n_ctx - 2 score the tokens at
//     first + 1 .. n_ctx - 1 (n_ctx - 1 - first tokens per chunk);
//   * nll = -log_softmax(logits)[next token], in double; after each chunk the running
//     estimate exp(mean nll) is reported (printed "[1]5.1234,[2]...");
//   * final: PPL = exp(mean nll), error = PPL * sqrt((mean(nll^2) - mean(nll)^2) / (N - 1)),
//     the standard error of the mean nll carried through exp (printed
//     "Final estimate: PPL = X +/- Y").
// Several chunks may go to the evaluator at once (independent sequences); the sums are taken
// in chunk order and token order either way, so the result does not depend on that grouping.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace chorus {

class Context;

// Running sums of negative log-likelihoods.
struct NllStats {
  double sum = 0;   // sum of nll
  double sum2 = 0;  // sum of nll^2
  uint64_t count = 0;

  void add(double nll) {
    sum += nll;
    sum2 += nll * nll;
    ++count;
  }
  double mean() const { return sum / static_cast<double>(count); }
  double ppl() const;
  // The standard error of exp(mean nll); NaN when it is undefined (fewer than 2 tokens or a
  // non-positive variance, which llama.cpp reports as an error).
  double ppl_error() const;
};

// -log softmax(logits)[target], computed in double.
double token_nll(std::span<const float> logits, int32_t target);

struct PerplexityOptions {
  uint32_t n_ctx = 512;           // tokens per chunk (at least 4)
  uint32_t n_vocab = 0;           // width of a logit row
  uint32_t max_chunks = 0;        // 0: every whole chunk
  uint32_t chunks_per_call = 1;   // chunks handed to the evaluator at once (sequences per batch)
  int32_t bos = -1;               // >= 0: replaces the first token of every chunk (model adds BOS)
  // Cancellation: read after each evaluator call's chunks are scored and reported; when set
  // and true, the run stops there and returns the chunks scored so far
  // (PerplexityResult::interrupted), so at least the first call's chunks always are. A signal
  // handler may set it (std::atomic<bool> is lock-free).
  const std::atomic<bool>* stop = nullptr;
};

// Evaluates `chunks` (each n_ctx tokens, one independent sequence each, from an empty cache)
// and returns, chunk after chunk, the logit rows of positions first .. n_ctx - 2
// (n_ctx - 1 - first rows of n_vocab floats each), where first = n_ctx / 2.
using ChunkEvaluator =
    std::function<std::vector<float>(std::span<const std::vector<int32_t>> chunks, uint32_t first)>;

struct PerplexityResult {
  uint32_t n_chunks = 0;         // chunks scored
  bool interrupted = false;      // options.stop ended the run early: n_chunks were scored
  uint32_t n_chunks_max = 0;     // whole chunks in the text
  NllStats stats;                // over every scored token
  std::vector<double> running;   // [n_chunks] exp(mean nll) after each chunk
};

// Runs the method over an already tokenized text (tokenized with add-BOS as the model says).
// `on_chunk(i, running_ppl)` is called after chunk i (0-based) is scored. Throws
// std::invalid_argument for a text shorter than 2 * n_ctx tokens or bad options, and
// std::runtime_error when the evaluator returns the wrong number of floats. With options.stop
// set, returns early with interrupted = true and n_chunks = the chunks scored before it.
PerplexityResult perplexity(std::span<const int32_t> tokens, const PerplexityOptions& options,
                            const ChunkEvaluator& evaluate,
                            const std::function<void(uint32_t chunk, double running_ppl)>& on_chunk = {});

// "[3]5.1234," — llama-perplexity's running line, one chunk (1-based index).
std::string format_running(uint32_t chunk_1based, double ppl);
// "Final estimate: PPL = 5.1234 +/- 0.01234"
std::string format_final(const NllStats& stats);

// A ChunkEvaluator over a Context with at least chunks_per_call sequences of n_ctx positions:
// each chunk clears its sequence, decodes positions 0 .. first - 1 without logits, then
// first .. n_ctx - 2 with all logits (so only the scored rows are ever copied to the host).
ChunkEvaluator context_evaluator(Context& context);

}  // namespace chorus
