#include "engine/perplexity.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
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

namespace {

struct ChunkRun {
  uint32_t n_chunks = 0;
  bool interrupted = false;
};

// The chunk loop shared by perplexity() and kl_divergence(): cuts `tokens` into n_chunks chunks
// of n_ctx, hands options.chunks_per_call of them at a time to the evaluator (first token
// replaced by BOS when options.bos >= 0) and calls score(chunk, original tokens, rows) for each
// chunk in order. Checks options.stop after each call.
ChunkRun run_chunks(std::span<const int32_t> tokens, uint32_t n_chunks, const PerplexityOptions& options,
                    const ChunkEvaluator& evaluate,
                    const std::function<void(uint32_t, std::span<const int32_t>, std::span<const float>)>& score) {
  const uint32_t n_ctx = options.n_ctx;
  const uint32_t per_call = std::max(1u, options.chunks_per_call);
  const uint32_t first = n_ctx / 2;
  const size_t rows = n_ctx - 1 - first;  // scored tokens per chunk
  const size_t row_floats = options.n_vocab;
  ChunkRun run{n_chunks, false};
  std::vector<std::vector<int32_t>> chunks;
  for (uint32_t c0 = 0; c0 < n_chunks; c0 += per_call) {
    const uint32_t n = std::min(per_call, n_chunks - c0);
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
      const size_t offset = static_cast<size_t>(c0 + k) * n_ctx;
      score(c0 + k, tokens.subspan(offset, n_ctx),
            std::span<const float>(logits.data() + k * rows * row_floats, rows * row_floats));
    }
    if (options.stop && options.stop->load() && c0 + n < n_chunks) {
      run.interrupted = true;
      run.n_chunks = c0 + n;
      break;
    }
  }
  return run;
}

}  // namespace

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

  PerplexityResult result;
  const size_t max_chunks = tokens.size() / n_ctx;
  result.n_chunks_max = static_cast<uint32_t>(std::min<size_t>(max_chunks, std::numeric_limits<uint32_t>::max()));
  const uint32_t n_chunks =
      options.max_chunks == 0 ? result.n_chunks_max : std::min(options.max_chunks, result.n_chunks_max);
  const uint32_t first = n_ctx / 2;
  const size_t row_floats = options.n_vocab;

  const ChunkRun run = run_chunks(
      tokens, n_chunks, options, evaluate,
      [&](uint32_t chunk, std::span<const int32_t> chunk_tokens, std::span<const float> rows) {
        for (size_t r = 0; r * row_floats < rows.size(); ++r) {
          // The logits at position first + r predict the (original) token at first + r + 1.
          result.stats.add(token_nll(rows.subspan(r * row_floats, row_floats), chunk_tokens[first + r + 1]));
        }
        if (options.save_base) options.save_base->add_chunk(rows);
        result.running.push_back(result.stats.ppl());
        if (on_chunk) on_chunk(chunk, result.running.back());
      });
  result.n_chunks = run.n_chunks;
  result.interrupted = run.interrupted;
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

// ---- KL divergence against a base run ----

static_assert(std::endian::native == std::endian::little, "base files are little-endian");

namespace {

constexpr char kBaseMagic[8] = {'_', 'l', 'o', 'g', 'i', 't', 's', '_'};
constexpr double kMinBaseLogProb = -16.0;  // base entries at or below are ignored (llama.cpp's rule)

float row_float(std::span<const uint16_t> row, size_t index) {
  float f;
  std::memcpy(&f, row.data() + 2 * index, sizeof f);
  return f;
}

}  // namespace

size_t base_row_width(uint32_t n_vocab) { return 2 * ((static_cast<size_t>(n_vocab) + 1) / 2) + 4; }

void compress_log_probs(std::span<const float> logits, std::span<uint16_t> row) {
  const size_t n = logits.size();
  if (n == 0 || row.size() != base_row_width(static_cast<uint32_t>(n)))
    throw std::invalid_argument("compress_log_probs: a row of " + std::to_string(row.size()) + " for " +
                                std::to_string(n) + " logits");
  float max_logit = logits[0], min_logit = logits[0];
  for (const float v : logits) {
    max_logit = std::max(max_logit, v);
    min_logit = std::min(min_logit, v);
  }
  min_logit = std::max(min_logit, max_logit - 16.0f);
  double sum_exp = 0;
  for (const float v : logits) sum_exp += std::exp(static_cast<double>(v) - max_logit);
  const float log_sum_exp = static_cast<float>(std::log(sum_exp));
  const float min_log_prob = min_logit - max_logit - log_sum_exp;
  const float scale = (max_logit - min_logit) / 65535.0f;
  std::memcpy(row.data(), &scale, sizeof scale);
  std::memcpy(row.data() + 2, &min_log_prob, sizeof min_log_prob);
  std::fill(row.begin() + 4, row.end(), uint16_t{0});
  if (scale > 0) {
    const float inv_scale = 1.0f / scale;
    for (size_t i = 0; i < n; ++i) {
      if (!(logits[i] > min_logit)) continue;
      const long q = std::lround(inv_scale * (logits[i] - min_logit));
      row[4 + i] = static_cast<uint16_t>(std::clamp(q, 0L, 65535L));
    }
  }
}

double decoded_log_prob(std::span<const uint16_t> row, uint32_t i) {
  return static_cast<double>(row_float(row, 0)) * row[4 + i] + static_cast<double>(row_float(row, 1));
}

KlBaseWriter::KlBaseWriter(const std::string& path, uint32_t n_ctx, uint32_t n_vocab, uint32_t n_chunk,
                           std::span<const int32_t> tokens)
    : path_(path), n_ctx_(n_ctx), n_vocab_(n_vocab), out_(path, std::ios::binary | std::ios::trunc) {
  if (!out_) throw std::runtime_error(path + ": cannot create the KL-divergence base file");
  const size_t n_tokens = static_cast<size_t>(n_chunk) * n_ctx;
  if (tokens.size() < n_tokens)
    throw std::invalid_argument(path + ": " + std::to_string(n_chunk) + " chunks of " + std::to_string(n_ctx) +
                                " need " + std::to_string(n_tokens) + " tokens, got " + std::to_string(tokens.size()));
  const int32_t header[3] = {static_cast<int32_t>(n_ctx), static_cast<int32_t>(n_vocab), static_cast<int32_t>(n_chunk)};
  out_.write(kBaseMagic, sizeof kBaseMagic);
  out_.write(reinterpret_cast<const char*>(header), sizeof header);
  out_.write(reinterpret_cast<const char*>(tokens.data()), static_cast<std::streamsize>(n_tokens * sizeof(int32_t)));
  if (!out_) throw std::runtime_error(path + ": writing the header of the KL-divergence base file failed");
  buffer_.resize(static_cast<size_t>(n_ctx - 1 - n_ctx / 2) * base_row_width(n_vocab));
}

void KlBaseWriter::add_chunk(std::span<const float> rows) {
  const size_t width = base_row_width(n_vocab_);
  const size_t n_rows = buffer_.size() / width;
  if (rows.size() != n_rows * n_vocab_)
    throw std::invalid_argument(path_ + ": a chunk of " + std::to_string(rows.size()) + " logits, expected " +
                                std::to_string(n_rows * n_vocab_));
  for (size_t r = 0; r < n_rows; ++r)
    compress_log_probs(rows.subspan(r * n_vocab_, n_vocab_), std::span<uint16_t>(buffer_).subspan(r * width, width));
  out_.write(reinterpret_cast<const char*>(buffer_.data()), static_cast<std::streamsize>(buffer_.size() * sizeof(uint16_t)));
  if (!out_)
    throw std::runtime_error(path_ + ": writing chunk " + std::to_string(chunks_written_ + 1) +
                             " of the KL-divergence base file failed (disk full?)");
  ++chunks_written_;
}

void KlBaseWriter::close() {
  out_.flush();
  if (!out_) throw std::runtime_error(path_ + ": flushing the KL-divergence base file failed (disk full?)");
  out_.close();
}

KlBaseReader::KlBaseReader(const std::string& path) : path_(path), in_(path, std::ios::binary) {
  if (!in_) throw std::runtime_error(path + ": cannot open the KL-divergence base file");
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) throw std::runtime_error(path + ": cannot read the size of the KL-divergence base file: " + ec.message());
  char magic[8] = {};
  in_.read(magic, sizeof magic);
  if (!in_ || std::memcmp(magic, kBaseMagic, sizeof magic) != 0)
    throw std::runtime_error(path + ": not a KL-divergence base file (expected the magic \"_logits_\" in its first "
                             "8 bytes, as llama-perplexity --kl-divergence-base or chorus perplexity writes)");
  const char* names[3] = {"n_ctx", "n_vocab", "n_chunk"};
  int32_t header[3] = {};
  for (int i = 0; i < 3; ++i) {
    in_.read(reinterpret_cast<char*>(&header[i]), sizeof header[i]);
    if (!in_)
      throw std::runtime_error(path + ": truncated KL-divergence base file: expected " + names[i] + " (int32 at byte " +
                               std::to_string(8 + 4 * i) + "), the file has " + std::to_string(size) + " bytes");
    if (header[i] <= 0)
      throw std::runtime_error(path + ": bad KL-divergence base file: " + names[i] + " is " + std::to_string(header[i]) +
                               ", expected a positive number");
  }
  if (header[0] < 4)
    throw std::runtime_error(path + ": bad KL-divergence base file: n_ctx is " + std::to_string(header[0]) +
                             ", expected at least 4");
  n_ctx_ = static_cast<uint32_t>(header[0]);
  n_vocab_ = static_cast<uint32_t>(header[1]);
  n_chunk_ = static_cast<uint32_t>(header[2]);
  const uint64_t token_bytes = uint64_t{n_chunk_} * n_ctx_ * sizeof(int32_t);
  const uint64_t data_start = 20 + token_bytes;
  if (size < data_start)
    throw std::runtime_error(path + ": truncated KL-divergence base file: expected " + std::to_string(n_chunk_) + " x " +
                             std::to_string(n_ctx_) + " tokens (int32 from byte 20 to " + std::to_string(data_start) +
                             "), the file has " + std::to_string(size) + " bytes");
  tokens_.resize(static_cast<size_t>(n_chunk_) * n_ctx_);
  in_.read(reinterpret_cast<char*>(tokens_.data()), static_cast<std::streamsize>(token_bytes));
  if (!in_) throw std::runtime_error(path + ": reading the tokens of the KL-divergence base file failed");
  for (size_t i = 0; i < tokens_.size(); ++i)
    if (tokens_[i] < 0 || static_cast<uint32_t>(tokens_[i]) >= n_vocab_)
      throw std::runtime_error(path + ": bad KL-divergence base file: token " + std::to_string(i) + " is " +
                               std::to_string(tokens_[i]) + ", outside the vocabulary of " + std::to_string(n_vocab_));
  const uint64_t chunk_bytes = uint64_t{rows_per_chunk()} * base_row_width(n_vocab_) * sizeof(uint16_t);
  complete_ = static_cast<uint32_t>(std::min<uint64_t>((size - data_start) / chunk_bytes, n_chunk_));
  rows_.resize(static_cast<size_t>(rows_per_chunk()) * base_row_width(n_vocab_));
}

std::span<const uint16_t> KlBaseReader::chunk_rows(uint32_t chunk) {
  const uint64_t chunk_bytes = rows_.size() * sizeof(uint16_t);
  const uint64_t offset = 20 + uint64_t{n_chunk_} * n_ctx_ * sizeof(int32_t) + chunk * chunk_bytes;
  if (chunk >= complete_)
    throw std::runtime_error(path_ + ": truncated KL-divergence base file: expected the log-probabilities of chunk " +
                             std::to_string(chunk + 1) + " of " + std::to_string(n_chunk_) + " (" +
                             std::to_string(chunk_bytes) + " bytes at byte " + std::to_string(offset) +
                             "); it holds " + std::to_string(complete_) + " whole chunks");
  in_.seekg(static_cast<std::streamoff>(offset));
  in_.read(reinterpret_cast<char*>(rows_.data()), static_cast<std::streamsize>(chunk_bytes));
  if (!in_)
    throw std::runtime_error(path_ + ": reading chunk " + std::to_string(chunk + 1) +
                             " of the KL-divergence base file failed");
  return rows_;
}

void KlBaseReader::require_chunks(uint32_t n) const {
  if (n <= complete_) return;
  throw std::runtime_error(path_ + ": truncated KL-divergence base file: it holds " +
                           (complete_ == 0 ? std::string("no whole chunk")
                                           : std::to_string(complete_) + " whole chunks") +
                           " of the " + std::to_string(n_chunk_) + " its header announces" +
                           (complete_ == 0 ? std::string() : "; --chunks " + std::to_string(complete_) + " compares those"));
}

MeanError mean_and_error(double sum, double sum2, uint64_t count) {
  if (count < 1) return {};
  const double n = static_cast<double>(count);
  const double mean = sum / n;
  const double variance = sum2 / n - mean * mean;
  return {mean, variance > 0 && count > 10 ? std::sqrt(variance / (n - 1)) : 0.0};
}

void KldStats::add(std::span<const float> logits, std::span<const uint16_t> base_row, int32_t target) {
  const size_t n = logits.size();
  if (target < 0 || static_cast<size_t>(target) >= n || base_row.size() != base_row_width(static_cast<uint32_t>(n)))
    throw std::invalid_argument("KldStats::add: token " + std::to_string(target) + ", " + std::to_string(n) +
                                " logits, a base row of " + std::to_string(base_row.size()));
  // Q: log q[i] = logit[i] - log_z.
  size_t top = 0;
  for (size_t i = 1; i < n; ++i)
    if (logits[i] > logits[top]) top = i;
  const double max_logit = logits[top];
  double sum_exp = 0;
  for (const float v : logits) sum_exp += std::exp(static_cast<double>(v) - max_logit);
  const double log_z = max_logit + std::log(sum_exp);
  // Base: decoded, then renormalised over the kept entries (log p[i] = decoded[i] - log_z_base).
  const double scale = row_float(base_row, 0), min_log_prob = row_float(base_row, 1);
  const std::span<const uint16_t> q = base_row.subspan(4, n);
  uint16_t q_max = 0;
  double base_sum = 0;
  for (size_t i = 0; i < n; ++i) {
    q_max = std::max(q_max, q[i]);
    const double lp = scale * q[i] + min_log_prob;
    if (lp > kMinBaseLogProb) base_sum += std::exp(lp);
  }
  const double log_z_base = base_sum > 0 ? std::log(base_sum) : 0.0;
  // Q renormalised over the same kept entries: log q_K[i] = logit[i] - log_z_kept.
  double kept_sum = 0;
  for (size_t i = 0; i < n; ++i)
    if (scale * q[i] + min_log_prob > kMinBaseLogProb) kept_sum += std::exp(static_cast<double>(logits[i]) - max_logit);
  const double log_z_kept = kept_sum > 0 ? max_logit + std::log(kept_sum) : log_z;
  double kld = 0;
  for (size_t i = 0; i < n; ++i) {
    const double lp = scale * q[i] + min_log_prob;
    if (!(lp > kMinBaseLogProb)) continue;
    const double lp_base = lp - log_z_base;
    kld += std::exp(lp_base) * (lp_base - (static_cast<double>(logits[i]) - log_z_kept));
  }
  const double nll = log_z - logits[static_cast<size_t>(target)];
  // As stored (llama.cpp's): renormalising would move the tail's mass onto the target.
  const double nll_base = -(scale * q[static_cast<size_t>(target)] + min_log_prob);
  sum_nll += nll;
  sum_nll2 += nll * nll;
  sum_nll_base += nll_base;
  sum_nll_base2 += nll_base * nll_base;
  sum_nll_nll_base += nll * nll_base;
  sum_kld += kld;
  sum_kld2 += kld * kld;
  const double p_diff = std::exp(-nll) - std::exp(-nll_base);
  sum_p_diff += p_diff;
  sum_p_diff2 += p_diff * p_diff;
  sum_p_diff4 += p_diff * p_diff * p_diff * p_diff;
  if (q[top] == q_max) ++n_same_top;
  ++count;
  kld_values.push_back(static_cast<float>(kld));
  p_diff_values.push_back(static_cast<float>(p_diff));
}

MeanError KldStats::ln_ppl() const { return mean_and_error(sum_nll, sum_nll2, count); }
MeanError KldStats::ln_ppl_base() const { return mean_and_error(sum_nll_base, sum_nll_base2, count); }

MeanError KldStats::ln_ppl_ratio() const {
  const MeanError q = ln_ppl(), b = ln_ppl_base();
  double covariance = 0;
  if (count >= 10) {
    const double n = static_cast<double>(count);
    covariance = (sum_nll_nll_base / n - (sum_nll / n) * (sum_nll_base / n)) / (n - 1);
  }
  const double variance = q.error * q.error + b.error * b.error - 2 * covariance;
  return {q.mean - b.mean, variance > 0 ? std::sqrt(variance) : 0.0};
}

MeanError KldStats::kld() const { return mean_and_error(sum_kld, sum_kld2, count); }

MeanError KldStats::same_top() const {
  if (count == 0) return {};
  const double p = static_cast<double>(n_same_top) / static_cast<double>(count);
  return {p, count > 1 ? std::sqrt(p * (1 - p) / static_cast<double>(count - 1)) : 0.0};
}

MeanError KldStats::rms_p_diff() const {
  const MeanError mse = mean_and_error(sum_p_diff2, sum_p_diff4, count);
  const double rms = std::sqrt(mse.mean);
  return {rms, rms > 0 ? 0.5 / rms * mse.error : 0.0};
}

KldResult kl_divergence(KlBaseReader& base, const PerplexityOptions& options, const ChunkEvaluator& evaluate,
                        const std::function<void(uint32_t, const KldStats&)>& on_chunk) {
  if (options.n_ctx != base.n_ctx())
    throw std::invalid_argument(base.path() + " was computed with chunks of " + std::to_string(base.n_ctx()) +
                                " tokens, the run asks for " + std::to_string(options.n_ctx));
  if (options.n_vocab != base.n_vocab())
    throw std::invalid_argument(base.path() + " has a vocabulary of " + std::to_string(base.n_vocab()) +
                                " tokens, the model " + std::to_string(options.n_vocab));
  const uint32_t n_chunks = options.max_chunks == 0 ? base.n_chunk() : std::min(options.max_chunks, base.n_chunk());
  base.require_chunks(n_chunks);
  const uint32_t first = options.n_ctx / 2;
  const size_t width = base_row_width(base.n_vocab());
  KldResult result;
  const ChunkRun run = run_chunks(
      base.tokens(), n_chunks, options, evaluate,
      [&](uint32_t chunk, std::span<const int32_t> chunk_tokens, std::span<const float> rows) {
        const std::span<const uint16_t> base_rows = base.chunk_rows(chunk);
        for (size_t r = 0; r < base.rows_per_chunk(); ++r)
          result.stats.add(rows.subspan(r * options.n_vocab, options.n_vocab), base_rows.subspan(r * width, width),
                           chunk_tokens[first + r + 1]);
        if (on_chunk) on_chunk(chunk, result.stats);
      });
  result.n_chunks = run.n_chunks;
  result.interrupted = run.interrupted;
  return result;
}

namespace {

std::string printf_string(const char* format, auto... args) {
  char buf[256];
  std::snprintf(buf, sizeof buf, format, args...);
  return buf;
}

// Linear interpolation between the sorted values around `fraction` (llama.cpp's percentile).
double percentile(const std::vector<float>& sorted, double fraction) {
  if (fraction <= 0) return sorted.front();
  if (fraction >= 1) return sorted.back();
  double p = fraction * static_cast<double>(sorted.size() - 1);
  const size_t i = static_cast<size_t>(p);
  p -= static_cast<double>(i);
  return (1 - p) * sorted[i] + p * sorted[std::min(i + 1, sorted.size() - 1)];
}

}  // namespace

std::string format_kld_header() {
  return "chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              "
         "\xce\x94p RMS            Same top p\n";
}

std::string format_kld_chunk(uint32_t chunk_1based, const KldStats& stats) {
  const MeanError lq = stats.ln_ppl(), ratio = stats.ln_ppl_ratio(), kld = stats.kld(), rms = stats.rms_p_diff(),
                  top = stats.same_top();
  const double ppl = std::exp(lq.mean);
  return printf_string("%4u    %9.4f \xc2\xb1 %9.4f    %10.5f \xc2\xb1 %10.5f    %10.5f \xc2\xb1 %10.5f    %6.3f \xc2\xb1 %6.3f %%"
                       "    %6.3f \xc2\xb1 %6.3f %%\n",
                       chunk_1based, ppl, ppl * lq.error, ratio.mean, ratio.error, kld.mean, kld.error,
                       100 * rms.mean, 100 * rms.error, 100 * top.mean, 100 * top.error);
}

std::string format_kld_summary(const KldStats& stats) {
  if (stats.count == 0) return "no tokens compared\n";
  const MeanError lq = stats.ln_ppl(), lb = stats.ln_ppl_base(), ratio = stats.ln_ppl_ratio(), kld = stats.kld(),
                  rms = stats.rms_p_diff(), top = stats.same_top();
  const double ppl = std::exp(lq.mean), ppl_base = std::exp(lb.mean), ppl_ratio = std::exp(ratio.mean);
  std::string s = "====== Perplexity statistics ======\n";
  s += printf_string("Mean PPL(Q)                   : %10.6f \xc2\xb1 %10.6f\n", ppl, ppl * lq.error);
  s += printf_string("Mean PPL(base)                : %10.6f \xc2\xb1 %10.6f\n", ppl_base, ppl_base * lb.error);
  s += printf_string("Mean ln(PPL(Q)/PPL(base))     : %10.6f \xc2\xb1 %10.6f\n", ratio.mean, ratio.error);
  s += printf_string("Mean PPL(Q)/PPL(base)         : %10.6f \xc2\xb1 %10.6f\n", ppl_ratio, ppl_ratio * ratio.error);
  s += "\n====== KL divergence statistics ======\n";
  s += printf_string("Mean    KLD: %10.6f \xc2\xb1 %10.6f\n", kld.mean, kld.error);
  std::vector<float> sorted = stats.kld_values;
  std::sort(sorted.begin(), sorted.end());
  s += printf_string("Maximum KLD: %10.6f\n", static_cast<double>(sorted.back()));
  s += printf_string("99.9%%   KLD: %10.6f\n", percentile(sorted, 0.999));
  s += printf_string("99.0%%   KLD: %10.6f\n", percentile(sorted, 0.990));
  s += printf_string("Median  KLD: %10.6f\n", percentile(sorted, 0.5));
  s += printf_string("Minimum KLD: %10.6f\n", static_cast<double>(sorted.front()));
  s += "\n====== Token probability statistics ======\n";
  const MeanError dp = mean_and_error(stats.sum_p_diff, stats.sum_p_diff2, stats.count);
  s += printf_string("Mean    \xce\x94p: %6.3f \xc2\xb1 %5.3f %%\n", 100 * dp.mean, 100 * dp.error);
  sorted = stats.p_diff_values;
  std::sort(sorted.begin(), sorted.end());
  s += printf_string("Maximum \xce\x94p: %6.3f%%\n", 100.0 * sorted.back());
  s += printf_string("Median  \xce\x94p: %6.3f%%\n", 100 * percentile(sorted, 0.5));
  s += printf_string("Minimum \xce\x94p: %6.3f%%\n", 100.0 * sorted.front());
  s += printf_string("RMS \xce\x94p    : %6.3f \xc2\xb1 %5.3f %%\n", 100 * rms.mean, 100 * rms.error);
  s += printf_string("Same top p: %6.3f \xc2\xb1 %5.3f %%\n", 100 * top.mean, 100 * top.error);
  return s;
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
