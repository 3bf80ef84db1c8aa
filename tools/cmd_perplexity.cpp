// `chorus perplexity`: a model's perplexity over a text file, by llama-perplexity's method
// (engine/perplexity.h). The running estimates and the final line go to stdout; the load log,
// progress and timings to stderr.

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "engine/model.h"
#include "engine/perplexity.h"
#include "engine/tokenizer.h"
#include "engine/vocab.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/model_setup.h"
#include "vkdevice/instance.h"

namespace chorus::tools {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// --kl-divergence: evaluates the base's chunks on MODEL and prints llama-perplexity's table and
// statistics on stdout.
int compare_with_base(const std::string& model_path, KlBaseReader& base, const Placement& placement, bool validation,
                      uint32_t max_chunks, uint32_t n_batch, uint32_t n_ubatch) {
  const gguf::File vocab_file = gguf::File::open(model_path);
  const Tokenizer tok(load_vocab(vocab_file));
  const Vocab& vocab = tok.vocab();
  if (vocab.add_eos())
    throw std::runtime_error(model_path + ": the vocabulary appends EOS to every text, which llama-perplexity's method does not allow");
  const uint32_t n_ctx = base.n_ctx();
  const uint32_t n_chunks = max_chunks ? std::min(max_chunks, base.n_chunk()) : base.n_chunk();
  const uint32_t n_seq = std::clamp(n_batch / n_ctx, 1u, n_chunks);
  base.require_chunks(n_chunks);

  const LoadedModel loaded = load_model(model_path, placement, validation,
                                        ContextRequest{n_ctx, n_seq, n_ubatch, std::min(n_ubatch, n_ctx * n_seq), false});
  Model* const model = loaded.model.get();
  if (model->config().n_vocab != base.n_vocab())
    throw std::runtime_error(base.path() + " was computed with a vocabulary of " + std::to_string(base.n_vocab()) +
                             " tokens; " + model_path + " has " + std::to_string(model->config().n_vocab));
  Context ctx(*model, loaded.context);
  print_memory_use(ctx);
  std::fprintf(stderr, "perplexity: comparing with %s over %u chunks, n_ctx=%u, n_seq=%u\n", base.path().c_str(),
               n_chunks, n_ctx, n_seq);

  PerplexityOptions po;
  po.n_ctx = n_ctx;
  po.n_vocab = base.n_vocab();
  po.max_chunks = n_chunks;
  po.chunks_per_call = n_seq;
  po.bos = vocab.add_bos() ? vocab.bos() : -1;
  po.stop = &interrupt_flag();

  const auto t_start = std::chrono::steady_clock::now();
  std::printf("%s", format_kld_header().c_str());
  const KldResult r = kl_divergence(base, po, context_evaluator(ctx), [&](uint32_t chunk, const KldStats& stats) {
    std::printf("%s", format_kld_chunk(chunk + 1, stats).c_str());
    flush_stdout();
  });
  std::printf("\n%s", format_kld_summary(r.stats).c_str());
  flush_stdout();
  if (r.interrupted)
    std::fprintf(stderr, "perplexity: interrupted (Ctrl-C): the statistics cover the first %u of %u chunks\n",
                 r.n_chunks, n_chunks);
  std::fprintf(stderr, "perplexity: %u chunks, %" PRIu64 " tokens compared, %.2f s\n", r.n_chunks, r.stats.count,
               seconds_since(t_start));
  return finish_command("perplexity", loaded, ctx, placement, r.interrupted);
}

}  // namespace

int cmd_perplexity(const std::vector<std::string>& args) {
  std::string model_path, text_path, base_path;
  bool compare = false, ctx_given = false;
  uint32_t n_ctx = 512, n_batch = 2048, n_ubatch = 512, max_chunks = 0;
  Placement placement;
  bool validation = false;
  cli::Parser p(
      "usage: chorus perplexity -m MODEL -f FILE [-c N_CTX] [--chunks N] [-b N_BATCH] [options]\n"
      "       chorus perplexity -m MODEL --kl-divergence-base BASE --kl-divergence [--chunks N] [options]",
      "Perplexity of MODEL over the text in FILE, computed as llama.cpp's llama-perplexity does:\n"
      "the whole file is tokenized once (with BOS if the model adds one), cut into chunks of N_CTX\n"
      "tokens, each chunk evaluated from an empty cache with its first token replaced by BOS, and\n"
      "only the second half of each chunk scored. Prints the running estimate after every chunk\n"
      "([1]5.1234,[2]...) and 'Final estimate: PPL = X +/- Y' on stdout.\n"
      "\n"
      "FILE is read as is: CRLF line endings stay CRLF (they tokenize differently from LF, so\n"
      "convert the file first to compare with numbers measured on an LF copy).");
  p.option({"-m", "--model"}, "FILE", "a GGUF model", model_path)
      .option({"-f", "--file"}, "FILE", "the text (- is standard input; a pipe such as <(command) works)", text_path)
      .option({"-c", "--ctx-size"}, "N", "tokens per chunk (default 512)",
              [&](const std::string& flag, const std::string& v) {
                n_ctx = parse_positive(flag, v);
                ctx_given = true;
              })
      .option({"--chunks"}, "N", "score only the first N chunks (default: all)", store_positive(max_chunks))
      .option({"-b", "--batch-size"}, "N",
              "tokens per decode call: N / N_CTX chunks are evaluated together as independent sequences (default "
              "2048); results do not depend on it",
              store_positive(n_batch))
      .option({"-ub", "--ubatch-size"}, "N", "tokens per forward pass (default 512)", store_positive(n_ubatch))
      .option({"--kl-divergence-base"}, "F",
              "save every scored row's log-probabilities to F (llama-perplexity's format) for a later "
              "--kl-divergence run of another model or split",
              base_path)
      .flag({"--kl-divergence"}, "compare with the base F instead: the tokens and N_CTX come from F (no -f); prints mean "
            "KLD, PPL(Q)/PPL(base) and 'Same top p'", compare)
      .flag({"--validation"}, "enable VK_LAYER_KHRONOS_validation (also CHORUS_VALIDATION=1)", validation);
  add_placement_options(p, placement);
  if (!p.parse(args)) return 0;
  if (model_path.empty()) throw UsageError("-m MODEL is required");
  if (compare && base_path.empty()) throw UsageError("--kl-divergence needs --kl-divergence-base FILE (the base to compare with)");
  if (text_path.empty() && !compare) throw UsageError("-f FILE is required");
  if (n_ctx < 4) throw UsageError("-c must be at least 4 tokens");
  if (const char* v = std::getenv("CHORUS_VALIDATION"); v && std::string(v) == "1") validation = true;

  install_interrupt_handler();
  if (compare) {
    if (!text_path.empty())
      std::fprintf(stderr, "perplexity: -f %s is not read: --kl-divergence takes the tokens from %s\n",
                   text_path.c_str(), base_path.c_str());
    KlBaseReader base(base_path);
    if (ctx_given && n_ctx != base.n_ctx())
      std::fprintf(stderr, "perplexity: %s was computed with -c %u; using that instead of -c %u\n", base_path.c_str(),
                   base.n_ctx(), n_ctx);
    return compare_with_base(model_path, base, placement, validation, max_chunks, n_batch, n_ubatch);
  }
  // Everything that can fail without a GPU first.
  const std::string text = read_text_input("-f", text_path);
  const gguf::File vocab_file = gguf::File::open(model_path);
  const Tokenizer tok(load_vocab(vocab_file));
  const Vocab& vocab = tok.vocab();
  if (vocab.add_eos())
    throw std::runtime_error(model_path + ": the vocabulary appends EOS to every text, which llama-perplexity's method does not allow");

  std::fprintf(stderr, "perplexity: tokenizing the input ..\n");
  const auto t_tok = std::chrono::steady_clock::now();
  const std::vector<TokenId> tokens = tok.encode(text, EncodeOptions{true, false});
  std::fprintf(stderr, "perplexity: tokenization took %.3f ms, %zu tokens\n", seconds_since(t_tok) * 1e3, tokens.size());
  if (tokens.size() < 2 * static_cast<size_t>(n_ctx))
    throw std::runtime_error(text_path + " tokenizes to only " + std::to_string(tokens.size()) +
                             " tokens; perplexity with -c " + std::to_string(n_ctx) + " needs at least " +
                             std::to_string(2 * static_cast<size_t>(n_ctx)));
  const uint32_t n_chunks_max = static_cast<uint32_t>(std::min<size_t>(tokens.size() / n_ctx, 1u << 30));
  const uint32_t n_chunks = max_chunks ? std::min(max_chunks, n_chunks_max) : n_chunks_max;
  const uint32_t n_seq = std::clamp(n_batch / n_ctx, 1u, n_chunks);

  const LoadedModel loaded = load_model(model_path, placement, validation,
                                        ContextRequest{n_ctx, n_seq, n_ubatch, std::min(n_ubatch, n_ctx * n_seq), false});
  Model* const model = loaded.model.get();
  Context ctx(*model, loaded.context);
  print_memory_use(ctx);
  std::fprintf(stderr, "perplexity: calculating perplexity over %u chunks, n_ctx=%u, batch_size=%u, n_seq=%u\n",
               n_chunks, n_ctx, n_batch, n_seq);

  PerplexityOptions po;
  po.n_ctx = n_ctx;
  po.n_vocab = model->config().n_vocab;
  po.max_chunks = n_chunks;
  po.chunks_per_call = n_seq;
  po.bos = vocab.add_bos() ? vocab.bos() : -1;
  po.stop = &interrupt_flag();

  std::optional<KlBaseWriter> base;
  if (!base_path.empty()) {
    base.emplace(base_path, n_ctx, po.n_vocab, n_chunks, tokens);
    po.save_base = &*base;
    std::fprintf(stderr, "perplexity: saving the log-probabilities of every scored token to %s\n", base_path.c_str());
  }

  const auto t_start = std::chrono::steady_clock::now();
  const PerplexityResult r =
      perplexity(tokens, po, context_evaluator(ctx), [&](uint32_t chunk, double ppl) {
        if (chunk == 0) {  // the first call (n_seq chunks) is done
          const double per_call = seconds_since(t_start);
          const double eta = per_call * static_cast<double>((n_chunks + n_seq - 1) / n_seq);
          std::fprintf(stderr, "perplexity: %.2f seconds per pass - ETA %.2f minutes\n", per_call, eta / 60.0);
        }
        const std::string s = format_running(chunk + 1, ppl);
        std::fwrite(s.data(), 1, s.size(), stdout);
        flush_stdout();
      });
  const double total = seconds_since(t_start);
  std::printf("\n%s\n", format_final(r.stats).c_str());
  if (r.interrupted)
    std::fprintf(stderr, "perplexity: interrupted (Ctrl-C): the estimate covers the first %u of %u chunks\n", r.n_chunks,
                 n_chunks);
  if (base) {
    base->close();
    if (r.interrupted)
      std::fprintf(stderr, "perplexity: %s holds only %u of %u chunks; compare with --chunks %u\n", base_path.c_str(),
                   base->chunks_written(), n_chunks, base->chunks_written());
  }
  flush_stdout();
  std::fprintf(stderr, "perplexity: %u chunks, %" PRIu64 " tokens scored, %.2f s (%.2f tokens/s evaluated)\n",
               r.n_chunks, r.stats.count, total,
               total > 0 ? static_cast<double>(r.n_chunks) * (n_ctx - 1) / total : 0.0);
  return finish_command("perplexity", loaded, ctx, placement, r.interrupted);
}

}  // namespace chorus::tools
