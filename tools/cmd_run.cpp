// `chorus run`: load a model, evaluate a prompt, stream a completion. Generated text alone goes
// to stdout (flushed per token); the load log, memory use and timings go to stderr.

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>

#include "engine/model.h"
#include "engine/sampling.h"
#include "engine/tokenizer.h"
#include "engine/vocab.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/model_setup.h"
#include "vkdevice/instance.h"

namespace chorus::tools {

namespace {

// One line of llama_perf_context_print's table.
void print_perf(const char* what, double ms, size_t n, const char* unit) {
  std::fprintf(stderr, "%16s = %10.2f ms / %5zu %-6s (%8.2f ms per token, %8.2f tokens per second)\n", what, ms, n, unit,
               n ? ms / static_cast<double>(n) : 0.0, ms > 0 ? 1000.0 * static_cast<double>(n) / ms : 0.0);
}

// llama.cpp's -e: \n \r \t \\ \' \" and \xHH become the characters they name.
std::string process_escapes(const std::string& in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '\\' || i + 1 == in.size()) {
      out += in[i];
      continue;
    }
    const char c = in[++i];
    if (c == 'n') out += '\n';
    else if (c == 'r') out += '\r';
    else if (c == 't') out += '\t';
    else if (c == '\\' || c == '\'' || c == '"') out += c;
    else if (c == 'x' && i + 2 < in.size() && std::isxdigit(static_cast<unsigned char>(in[i + 1])) &&
             std::isxdigit(static_cast<unsigned char>(in[i + 2]))) {
      out += static_cast<char>(std::stoi(in.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += '\\';
      out += c;
    }
  }
  return out;
}

}  // namespace

int cmd_run(const std::vector<std::string>& args) {
  std::string model_path, prompt;
  uint32_t n_predict = 128, n_ctx = 0, n_ubatch = 512;
  Placement placement;
  std::optional<uint64_t> seed;
  SamplerParams sp;
  bool ignore_eos = false, print_ids = false, validation = false, escapes = false, list_devices = false;
  std::vector<std::string> reverse_prompts;
  const auto t_start = std::chrono::steady_clock::now();
  for (const std::string& a : args)  // llama-cli's conversation mode is `chorus chat`
    if (a == "-cnv" || a == "--conversation" || a == "-i" || a == "--interactive") return cmd_chat(args);
  cli::Parser p("usage: chorus run -m MODEL [-p PROMPT] [-n N] [options]",
                "Evaluates PROMPT and streams up to N generated tokens. Only the generated text is written\n"
                "to stdout; the load log, memory use and timings go to stderr. With -p \"\" (the default)\n"
                "generation starts from BOS alone. Generation stops at an end-of-generation token unless\n"
                "--ignore-eos, and when the context is full.");
  p.option({"-m", "--model"}, "FILE", "a GGUF model", model_path)
      .option({"-p", "--prompt"}, "TEXT", "the prompt (special tokens such as <s> are recognised)", prompt)
      .option({"-f", "--file"}, "FILE", "the prompt from a file (- for standard input)",
              [&](const std::string& flag, const std::string& v) { prompt = read_text_input(flag, v); })
      .flag({"-e", "--escape"}, "process \\n \\t \\\\ \\\" \\xHH escapes in the prompt", escapes)
      .option({"-r", "--reverse-prompt"}, "S", "stop when the output ends with S (may be repeated)",
              [&](const std::string&, const std::string& v) { reverse_prompts.push_back(v); })
      .option({"-n", "--n-predict", "--predict"}, "N", "tokens to generate (default 128)",
              [&](const std::string& flag, const std::string& v) {
                const uint64_t n = parse_uint(flag, v);
                if (n > (1u << 24)) throw UsageError(flag + " expects at most 16777216 tokens, got " + v);
                n_predict = static_cast<uint32_t>(n);
              })
      .option({"-c", "--ctx-size"}, "N", "context length in tokens (default: the model's, at most 4096)",
              store_positive(n_ctx))
      .option({"-ub", "--ubatch-size"}, "N", "prompt tokens per forward pass (default 512)",
              store_positive(n_ubatch))
      .option({"-b", "--batch-size"}, "N", "accepted and ignored (the prompt is one batch; -ub sets the tokens per forward pass)",
              [](const std::string& flag, const std::string& v) {
                (void)parse_positive(flag, v);
                std::fprintf(stderr, "note: %s is accepted and ignored by run (its prompt is one batch; -ub sets the tokens "
                             "per forward pass)\n", flag.c_str());
              })
      .flag({"--ignore-eos"}, "keep generating past end-of-generation tokens", ignore_eos)
      .flag({"--print-ids"}, "print the generated token ids (space-separated) instead of text", print_ids)
      .flag({"-cnv", "--conversation", "-i", "--interactive"},
            "a conversation in the model's chat format: `chorus chat` (see its --help)", [] {})
      .flag({"--list-devices"}, "list the devices (as `chorus devices`) and exit", list_devices)
      .flag({"--validation"}, "enable VK_LAYER_KHRONOS_validation (also CHORUS_VALIDATION=1)", validation);
  add_sampling_options(p, sp, seed);
  add_placement_options(p, placement);
  p.positional("TEXT", "", [](const std::string& a) {
    throw UsageError("unexpected argument '" + a + "' (the prompt goes after -p)");
  });
  if (!p.parse(args)) return 0;
  if (list_devices) return cmd_devices({});
  if (model_path.empty()) throw UsageError("-m MODEL is required");
  if (escapes) prompt = process_escapes(prompt);
  if (const char* v = std::getenv("CHORUS_VALIDATION"); v && std::string(v) == "1") validation = true;
  sp.seed = seed ? *seed : std::random_device{}();
  install_interrupt_handler();

  // The file and its vocabulary first: a bad path fails before Vulkan starts.
  const gguf::File vocab_file = gguf::File::open(model_path);
  const Tokenizer tok(load_vocab(vocab_file));
  const Vocab& vocab = tok.vocab();

  const auto t_load = std::chrono::steady_clock::now();
  const LoadedModel loaded = load_model(model_path, placement, validation, ContextRequest{n_ctx, 1, n_ubatch});
  const double load_ms = ms_since(t_load);
  Model* const model = loaded.model.get();
  Context ctx(*model, loaded.context);
  std::fprintf(stderr, "context: %u tokens\n", ctx.n_ctx());
  print_memory_use(ctx);
  std::fprintf(stderr, "sampling: temp %.2f, top-k %d, top-p %.2f, min-p %.2f, repeat-penalty %.2f (last %d), seed %" PRIu64 "\n",
               static_cast<double>(sp.temp), sp.top_k, static_cast<double>(sp.top_p), static_cast<double>(sp.min_p),
               static_cast<double>(sp.repeat_penalty), sp.repeat_last_n, sp.seed);

  std::vector<TokenId> input = tok.encode(prompt, EncodeOptions{true, true});
  if (input.empty()) {
    if (vocab.bos() == kNoToken)
      throw std::runtime_error("the prompt is empty and the model has no BOS token to start from; give a prompt with -p");
    input.push_back(vocab.bos());
  }
  if (input.size() >= ctx.n_ctx())
    throw std::runtime_error("the prompt is " + std::to_string(input.size()) + " tokens, which does not fit a context of " +
                             std::to_string(ctx.n_ctx()) + " tokens (raise -c)");
  std::fprintf(stderr, "prompt: %zu tokens\n\n", input.size());

  Sampler sampler(sp);
  for (const TokenId t : input) sampler.accept(t);
  // The prompt goes through the detokenizer too, so the first generated piece keeps its space.
  Detokenizer detok(tok);
  for (const TokenId t : input) detok.push(t);

  const auto t_prompt = std::chrono::steady_clock::now();
  std::vector<float> logits = ctx.decode(0, input);
  const double prompt_ms = ms_since(t_prompt);
  if (placement.verbose) print_startup(loaded, load_ms, ms_since(t_start));

  const auto t_gen = std::chrono::steady_clock::now();
  size_t generated = 0, evaluated = 0;
  std::string output;  // the generated text so far (for -r)
  const char* stop = "the token limit (-n)";
  while (generated < n_predict) {
    const TokenId next = sampler.sample(logits);
    if (!ignore_eos && vocab.is_eog(next)) {
      stop = "an end-of-generation token";
      break;
    }
    sampler.accept(next);
    ++generated;
    if (print_ids) std::printf("%s%d", generated > 1 ? " " : "", next);
    else {
      const std::string text = detok.push(next);
      std::fwrite(text.data(), 1, text.size(), stdout);
      output += text;
    }
    flush_stdout();
    if (std::any_of(reverse_prompts.begin(), reverse_prompts.end(), [&](const std::string& r) {
          return output.size() >= r.size() && output.compare(output.size() - r.size(), r.size(), r) == 0;
        })) {
      stop = "a reverse prompt (-r)";
      break;
    }
    if (interrupted()) {  // Ctrl-C: stop at this token boundary and report
      stop = "an interrupt (Ctrl-C)";
      break;
    }
    if (generated == n_predict) break;
    if (ctx.length(0) >= ctx.n_ctx()) {
      stop = "a full context (-c)";
      break;
    }
    logits = ctx.decode(0, std::span<const TokenId>(&next, 1));
    ++evaluated;
  }
  if (print_ids) std::printf("\n");
  else {
    const std::string rest = detok.flush();
    std::fwrite(rest.data(), 1, rest.size(), stdout);
  }
  flush_stdout();
  const double gen_ms = ms_since(t_gen);

  std::fprintf(stderr, "\n\nstopped at %s\n", stop);
  const auto rate = [](size_t n, double ms) { return ms > 0 ? 1000.0 * static_cast<double>(n) / ms : 0.0; };
  std::fprintf(stderr, "prompt: %zu tokens, %.2f t/s | generation: %zu tokens, %.2f t/s\n", input.size(),
               rate(input.size(), prompt_ms), evaluated, rate(evaluated, gen_ms));
  // As llama_perf_context_print lays it out.
  std::fprintf(stderr, "%16s = %10.2f ms\n", "load time", load_ms);
  print_perf("prompt eval time", prompt_ms, input.size(), "tokens");
  print_perf("eval time", gen_ms, evaluated, "runs");
  print_perf("total time", ms_since(t_start), input.size() + evaluated, "tokens");
  if (loaded.predicted_token_seconds > 0 && evaluated > 0)
    std::fprintf(stderr, "generation: predicted %.2f ms per token (weight reads at the calibrated speeds, reduce round trips), measured "
                 "%.2f ms per token\n",
                 loaded.predicted_token_seconds * 1e3, gen_ms / static_cast<double>(evaluated));
  return finish_command("run", loaded, ctx, placement, interrupted());
}

}  // namespace chorus::tools
