// `chorus chat` (and `chorus run -cnv`): talk to a model in a terminal. The conversation is
// formatted with the model's own chat template (engine/chat.h); replies stream to stdout;
// timings, the load log and notes go to stderr. Line editing and history come from libedit
// when stdin is a terminal; otherwise lines are read as they come (scripts, pipes).

#include <editline/readline.h>
#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>

#include "engine/chat.h"
#include "engine/gguf.h"
#include "engine/vocab.h"
#include "tools/chat_format.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/model_setup.h"

namespace chorus::tools {
namespace {

constexpr const char* kCommands =
    "commands: /exit, /clear, /regen, /save FILE, /load FILE, /devices, /help; a line ending in \\ continues;\n"
    "Ctrl-C stops a reply, Ctrl-C at the prompt or Ctrl-D leaves\n";

// SIGINT in chat: every press sets the flag (a reply checks it before each token; a prompt
// read returns with EINTR). No SA_RESTART, so a blocking read at the prompt is interrupted.
std::atomic<bool> g_stop{false};
void on_sigint(int) { g_stop = true; }

void install_chat_interrupt() {
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  ::sigaction(SIGINT, &sa, nullptr);
}

// One line of input: libedit on a terminal, plain reads otherwise. nullopt at end of input
// or Ctrl-C at the prompt.
std::optional<std::string> read_line(bool tty, const char* prompt) {
  if (tty) {
    char* l = readline(prompt);
    if (!l) return std::nullopt;
    std::string s(l);
    std::free(l);
    if (!s.empty()) add_history(s.c_str());
    return s;
  }
  std::string s;
  if (!std::getline(std::cin, s) || g_stop) return std::nullopt;
  return s;
}

// A template or saved conversation: a regular file (or a pipe given on purpose) of bounded
// size; a device such as /dev/zero, a directory or a FIFO without a writer is refused by name.
std::string read_file(const std::string& what, const std::string& path) { return read_text_input(what, path); }

void print_turn_stats(const ChatTurnStats& st, const ChatSession& chat) {
  const auto rate = [](size_t n, double ms) { return ms > 0 ? 1000.0 * static_cast<double>(n) / ms : 0.0; };
  if (st.dropped_messages)
    std::fprintf(stderr, "[ the context was full: the %zu oldest turn(s) were dropped ]\n", st.dropped_messages);
  std::fprintf(stderr, "\n[ prompt: %.1f t/s | generation: %.1f t/s | context: %u/%u%s ]\n",
               rate(st.prompt_tokens, st.prompt_ms), rate(st.generated, st.generation_ms), chat.context_used(),
               chat.context_size(), st.stop == "full context" ? " — full: /clear, or --context-shift" : "");
}

}  // namespace

int cmd_chat(const std::vector<std::string>& args) {
  std::string model_path, system, first_turn, template_arg;
  bool have_first_turn = false, validation = false, context_shift = false;
  int32_t n_predict = -1;
  uint32_t n_ctx = 0, n_ubatch = 512;
  Placement placement;
  std::optional<uint64_t> seed;
  SamplerParams sp;
  std::string names;
  for (const std::string& n : builtin_chat_template_names()) names += (names.empty() ? "" : ", ") + n;
  cli::Parser p("usage: chorus chat -m MODEL [options]       (also: chorus run -cnv -m MODEL ...)",
                "An interactive conversation. Each turn is formatted with the model's own chat template\n"
                "(tokenizer.chat_template in the GGUF) and the reply streams as it is generated. The KV cache\n"
                "keeps the conversation, so a turn costs only its new tokens.\n"
                "\n"
                "In the conversation:\n"
                "  a line ending in \\     continues on the next line\n"
                "  /exit                  leave (also Ctrl-D, or Ctrl-C at the prompt)\n"
                "  /clear                 forget the conversation (the system prompt stays)\n"
                "  /regen                 generate the last reply again\n"
                "  /save FILE, /load FILE the conversation as JSON\n"
                "  /devices               each device's memory in use, busy fraction and wait times over the last tokens\n"
                "  /help                  these commands\n"
                "  Ctrl-C                 while a reply streams: stop it and return to the prompt");
  p.option({"-m", "--model"}, "FILE", "a GGUF model", model_path)
      .option({"-sys", "--system-prompt"}, "TEXT", "the system prompt", system)
      .option({"-p", "--prompt"}, "TEXT", "say TEXT as the first turn, print the reply and exit",
              [&](const std::string&, const std::string& v) {
                first_turn = v;
                have_first_turn = true;
              })
      .option({"--chat-template"}, "NAME|FILE",
              "a built-in format (" + names + ") or a Jinja file; default: the model's own, else chatml", template_arg)
      .option({"-n", "--n-predict"}, "N", "at most N tokens per reply (default: until the model ends it)",
              [&](const std::string& flag, const std::string& v) { n_predict = static_cast<int32_t>(parse_int(flag, v, -1, 1 << 24)); })
      .option({"-c", "--ctx-size"}, "N", "context length in tokens (default: the model's, at most 4096)",
              store_positive(n_ctx))
      .flag({"--context-shift"}, "when the context fills, drop the oldest turns (the system prompt stays) instead of asking for /clear",
            context_shift)
      .option({"-ub", "--ubatch-size"}, "N", "prompt tokens per forward pass (default 512)",
              store_positive(n_ubatch))
      .flag({"-cnv", "--conversation", "-i", "--interactive"}, "accepted: chat is always a conversation", [] {})
      .flag({"--validation"}, "enable VK_LAYER_KHRONOS_validation (also CHORUS_VALIDATION=1)", validation);
  add_sampling_options(p, sp, seed);
  add_placement_options(p, placement);
  p.positional("TEXT", "", [](const std::string& a) {
    throw UsageError("unexpected argument '" + a + "' (a first message goes after -p)");
  });
  if (!p.parse(args)) return 0;
  if (model_path.empty()) throw UsageError("-m MODEL is required");
  if (const char* v = std::getenv("CHORUS_VALIDATION"); v && std::string(v) == "1") validation = true;
  sp.seed = seed ? *seed : std::random_device{}();

  const gguf::File file = gguf::File::open(model_path);
  const Tokenizer tok(load_vocab(file));
  const ModelChatFormat format = choose_chat_template(file, template_arg, system);

  const LoadedModel loaded = load_model(model_path, placement, validation, ContextRequest{n_ctx, 1, n_ubatch});
  Context ctx(*loaded.model, loaded.context);
  std::fprintf(stderr, "context: %u tokens\n", ctx.n_ctx());
  print_memory_use(ctx);

  ChatOptions co;
  co.system = system;
  co.sampling = sp;
  co.max_tokens = n_predict;
  co.context_shift = context_shift;
  ChatSession chat(ctx, tok, format, co);
  install_chat_interrupt();

  // Fault injection for the terminal test: CHORUS_FAULT_HOLD_REPLY=1 holds every reply after
  // its first piece until Ctrl-C, so "Ctrl-C while a reply streams" happens on any machine.
  const bool hold = std::getenv("CHORUS_FAULT_HOLD_REPLY") != nullptr;
  bool held = false;
  const auto on_text = [&](std::string_view t) {
    std::fwrite(t.data(), 1, t.size(), stdout);
    flush_stdout();
    while (hold && !held && !g_stop) ::usleep(10'000);
    held = true;
  };
  size_t total_prompt = 0, total_generated = 0;
  double total_prompt_ms = 0, total_generation_ms = 0;
  const auto turn = [&](const std::function<ChatTurnStats()>& run) {
    g_stop = false;
    held = false;
    try {
      const ChatTurnStats st = run();
      total_prompt += st.prompt_tokens;
      total_generated += st.generated;
      total_prompt_ms += st.prompt_ms;
      total_generation_ms += st.generation_ms;
      std::fputs("\n", stdout);
      flush_stdout();
      print_turn_stats(st, chat);
    } catch (const ContextFullError& e) {
      std::fprintf(stderr, "chat: %s\n", e.what());
    }
    g_stop = false;
  };

  if (have_first_turn) {
    turn([&] { return chat.send(first_turn, on_text, &g_stop); });
  } else {
    const bool tty = ::isatty(STDIN_FILENO) != 0;
    if (tty) rl_catch_signals = 0;  // our SIGINT handler; readline returns on Ctrl-C
    std::fprintf(stderr, "\n%s\n", kCommands);
    for (;;) {
      std::optional<std::string> line = read_line(tty, "> ");
      if (!line) break;  // Ctrl-D, end of input, or Ctrl-C at the prompt
      while (!line->empty() && line->back() == '\\') {  // continued on the next line
        line->back() = '\n';
        std::optional<std::string> more = read_line(tty, ". ");
        if (!more) break;
        *line += *more;
      }
      const std::string& text = *line;
      if (text.empty()) continue;
      std::istringstream words(text);
      std::string cmd, arg;
      words >> cmd;
      std::getline(words >> std::ws, arg);
      if (cmd == "/exit" || cmd == "/quit") break;
      if (cmd == "/help") {
        std::fputs(kCommands, stderr);
      } else if (cmd == "/devices") {
        std::fputs(device_view(loaded, ctx).c_str(), stderr);
      } else if (cmd == "/clear") {
        chat.clear();
        std::fprintf(stderr, "[ conversation cleared ]\n");
      } else if (cmd == "/regen") {
        try {
          turn([&] { return chat.regenerate(on_text, &g_stop); });
        } catch (const std::logic_error& e) {
          std::fprintf(stderr, "chat: %s\n", e.what());
        }
      } else if (cmd == "/save" || cmd == "/load") {
        if (arg.empty()) {
          std::fprintf(stderr, "chat: %s needs a file name\n", cmd.c_str());
          continue;
        }
        try {
          if (cmd == "/save") {
            std::ofstream out(arg, std::ios::binary);
            out << chat.to_json();
            if (!out.flush()) throw std::runtime_error(arg + ": cannot write");
            std::fprintf(stderr, "[ %zu messages saved to %s ]\n", chat.messages().size(), arg.c_str());
          } else {
            chat.set_messages(ChatSession::messages_from_json(read_file("/load", arg)));
            std::fprintf(stderr, "[ %zu messages loaded from %s ]\n", chat.messages().size(), arg.c_str());
          }
        } catch (const std::exception& e) {
          std::fprintf(stderr, "chat: %s: %s\n", cmd.c_str(), e.what());
        }
      } else if (cmd.size() > 1 && cmd[0] == '/' && cmd.find_first_of("/", 1) == std::string::npos &&
                 text.find('\n') == std::string::npos && cmd.size() < 16) {
        std::fprintf(stderr, "chat: unknown command '%s' (/help lists them)\n", cmd.c_str());
      } else {
        turn([&] { return chat.send(text, on_text, &g_stop); });
      }
    }
  }
  const auto rate = [](size_t n, double ms) { return ms > 0 ? 1000.0 * static_cast<double>(n) / ms : 0.0; };
  std::fprintf(stderr, "\nprompt: %zu tokens, %.1f t/s | generation: %zu tokens, %.1f t/s\n", total_prompt,
               rate(total_prompt, total_prompt_ms), total_generated, rate(total_generated, total_generation_ms));
  return finish_command("chat", loaded, ctx, placement, false);
}

}  // namespace chorus::tools
