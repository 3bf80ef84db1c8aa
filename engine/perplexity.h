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
//
// KL divergence against a base run (llama-perplexity's --kl-divergence-base / --kl-divergence):
// a normal run may save every scored row's log-probabilities to a base file (KlBaseWriter); a
// later run of another model, quantisation or split reads it (KlBaseReader), evaluates the same
// chunks of the same tokens and compares row by row (KldStats). The file layout is llama.cpp's,
// so a base written by either tool is read by the other (all little-endian):
//   char[8]  "_logits_"
//   int32    n_ctx, n_vocab, n_chunk
//   int32    tokens[n_chunk * n_ctx]       the text's tokens (before BOS replaces each chunk's first)
//   then per chunk, per scored row (n_ctx - 1 - n_ctx/2 rows), nv = 2 * ((n_vocab + 1) / 2) + 4
//   uint16 values: float32 scale, float32 min_log_prob (the first four uint16), then n_vocab
//   uint16 q[i] (and one unused uint16 when n_vocab is odd), decoded as
//     log p[i] = scale * q[i] + min_log_prob.
// Compression: with max and min of the row's logits, min raised to max - 16, lse = log sum
// exp(logit - max): scale = (max - min) / 65535, min_log_prob = min - max - lse,
// q[i] = round((logit[i] - min) / scale) when logit[i] > min, else 0. Entries whose decoded
// log-probability is -16 or less are ignored when comparing (llama.cpp's rule).
// Per scored token the comparison takes: the nll under Q (the current model) and under the base,
// KLD(base || Q) = sum_i p_base[i] * (log p_base[i] - log q[i]), the change of the target's
// probability, and whether Q's top token is a top token of the base. One difference from
// llama.cpp, on purpose: the KLD sum runs over the entries the base keeps (log p > -16), with
// both distributions renormalised over them. The file holds nothing about the tail below e^-16
// but its total mass, which the 16-bit rounding blurs; renormalising removes the first-order
// rounding error (llama.cpp's mean KLD of a model against itself is ~1e-5 of noise, ours ~1e-9).
// The nll under the base is the stored value, as llama.cpp's. Ties at the base's maximum
// (rounding can make two entries equal) all count as its top token.
#pragma once

#include <atomic>
#include <cstdint>
#include <fstream>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace chorus {

class Context;
class KlBaseWriter;

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
  // When set, perplexity() saves every scored row there (the base of a later KL-divergence run).
  KlBaseWriter* save_base = nullptr;
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

// ---- KL divergence against a base run ----

// uint16 values per row in a base file: 2 * ((n_vocab + 1) / 2) + 4.
size_t base_row_width(uint32_t n_vocab);
// Compresses one row of logits into `row` (base_row_width(logits.size()) values).
void compress_log_probs(std::span<const float> logits, std::span<uint16_t> row);
// The decoded log-probability of entry i of a compressed row (as stored, not renormalised).
double decoded_log_prob(std::span<const uint16_t> row, uint32_t i);

// Writes a base file: the header and tokens at construction, then one chunk's rows at a time.
// Errors (cannot create, disk full) throw std::runtime_error naming the file.
class KlBaseWriter {
 public:
  // Saves the first n_chunk * n_ctx of `tokens`.
  KlBaseWriter(const std::string& path, uint32_t n_ctx, uint32_t n_vocab, uint32_t n_chunk,
               std::span<const int32_t> tokens);
  // The scored rows of the next chunk: (n_ctx - 1 - n_ctx/2) * n_vocab logits.
  void add_chunk(std::span<const float> rows);
  // Flushes; throws if anything failed to write.
  void close();
  uint32_t chunks_written() const { return chunks_written_; }

 private:
  std::string path_;
  uint32_t n_ctx_, n_vocab_;
  std::ofstream out_;
  std::vector<uint16_t> buffer_;  // [rows * base_row_width(n_vocab)]
  uint32_t chunks_written_ = 0;
};

// Reads a base file: the header and tokens at construction (a wrong magic, a header field or
// the token table missing, or a token outside the vocabulary throws std::runtime_error naming the
// file and what was expected), then one chunk's rows at a time.
class KlBaseReader {
 public:
  explicit KlBaseReader(const std::string& path);
  const std::string& path() const { return path_; }
  uint32_t n_ctx() const { return n_ctx_; }
  uint32_t n_vocab() const { return n_vocab_; }
  uint32_t n_chunk() const { return n_chunk_; }         // as the header announces
  uint32_t complete_chunks() const { return complete_; }  // whole chunks the file holds
  std::span<const int32_t> tokens() const { return tokens_; }  // [n_chunk * n_ctx]
  uint32_t rows_per_chunk() const { return n_ctx_ - 1 - n_ctx_ / 2; }
  // Throws, naming the file and the whole chunks it holds, when that is fewer than n.
  void require_chunks(uint32_t n) const;
  // The compressed rows of chunk `chunk` (rows_per_chunk() rows of base_row_width(n_vocab)).
  // Chunks are read in order; a truncated file throws naming the file and the chunk.
  std::span<const uint16_t> chunk_rows(uint32_t chunk);

 private:
  std::string path_;
  std::ifstream in_;
  uint32_t n_ctx_ = 0, n_vocab_ = 0, n_chunk_ = 0, complete_ = 0;
  std::vector<int32_t> tokens_;
  std::vector<uint16_t> rows_;
};

// Mean and its standard error from running sums (error 0 with 10 values or fewer, as llama.cpp).
struct MeanError {
  double mean = 0, error = 0;
};
MeanError mean_and_error(double sum, double sum2, uint64_t count);

// Running comparison of Q's logits with a base's compressed rows, token by token.
struct KldStats {
  double sum_nll = 0, sum_nll2 = 0;            // Q
  double sum_nll_base = 0, sum_nll_base2 = 0;  // base
  double sum_nll_nll_base = 0;
  double sum_kld = 0, sum_kld2 = 0;
  double sum_p_diff = 0, sum_p_diff2 = 0, sum_p_diff4 = 0;
  uint64_t n_same_top = 0, count = 0;
  std::vector<float> kld_values;     // [count] per token, in order
  std::vector<float> p_diff_values;  // [count] p_Q(target) - p_base(target)

  void add(std::span<const float> logits, std::span<const uint16_t> base_row, int32_t target);
  MeanError ln_ppl() const;       // mean nll under Q
  MeanError ln_ppl_base() const;  // mean nll under the base
  MeanError ln_ppl_ratio() const; // ln(PPL(Q) / PPL(base)), its error with the covariance
  MeanError kld() const;
  MeanError same_top() const;     // fraction of tokens whose top token agrees
  MeanError rms_p_diff() const;
};

struct KldResult {
  uint32_t n_chunks = 0;     // chunks compared
  bool interrupted = false;  // options.stop ended the run early
  KldStats stats;
};

// Evaluates the base's chunks (options.n_ctx and n_vocab must match the base; max_chunks,
// chunks_per_call, bos and stop as for perplexity()) and compares every scored row with the
// base's. Throws std::runtime_error naming the file when it holds fewer whole chunks than asked
// for, std::invalid_argument for mismatched options. `on_chunk(i, stats)` after chunk i.
KldResult kl_divergence(KlBaseReader& base, const PerplexityOptions& options, const ChunkEvaluator& evaluate,
                        const std::function<void(uint32_t chunk, const KldStats&)>& on_chunk = {});

// llama-perplexity's KL-divergence table: the column header, one line per chunk (1-based), and
// the closing statistics (several lines, each ending in a newline).
std::string format_kld_header();
std::string format_kld_chunk(uint32_t chunk_1based, const KldStats& stats);
std::string format_kld_summary(const KldStats& stats);

// A ChunkEvaluator over a Context with at least chunks_per_call sequences of n_ctx positions:
// each chunk clears its sequence, decodes positions 0 .. first - 1 without logits, then
// first .. n_ctx - 2 with all logits (so only the scored rows are ever copied to the host).
ChunkEvaluator context_evaluator(Context& context);

}  // namespace chorus
