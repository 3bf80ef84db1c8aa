// `chorus serve`: the OpenAI-compatible HTTP server (server/server.h) over a model loaded with
// the usual split flags. Opens the devices, listens (so /health answers 503 while the weights
// load), then loads, then serves until SIGINT or SIGTERM.
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>

#include "engine/gguf.h"
#include "engine/vocab.h"
#include "server/server.h"
#include "tools/chat_format.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/model_setup.h"

namespace chorus::tools {

int cmd_serve(const std::vector<std::string>& args) {
  std::string model_path, template_arg, alias;
  bool validation = false;
  uint32_t n_ctx_total = 0;
  Placement placement;
  server::ServerOptions o;
  if (const char* key = std::getenv("CHORUS_API_KEY")) o.api_key = key;
  cli::Parser p("usage: chorus serve -m MODEL [options]",
                "An OpenAI-compatible HTTP server: POST /v1/chat/completions (the model's chat template,\n"
                "streaming with \"stream\": true), /v1/completions, /v1/embeddings, /tokenize, /detokenize;\n"
                "GET /v1/models, /health, /metrics, and a chat page at /. Up to -np requests are generated\n"
                "at once, decoded together in one forward pass per step on every device of the split.\n"
                "docs/server.md has the details.");
  p.option({"-m", "--model"}, "FILE", "a GGUF model", model_path)
      .option({"--host"}, "ADDR", "address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)", o.host)
      .option({"--port"}, "N", "TCP port (default 8080; 0 picks a free one and prints it on stdout)",
              [&](const std::string& flag, const std::string& v) { o.port = static_cast<int>(parse_int(flag, v, 0, 65535)); })
      .option({"--api-key"}, "KEY",
              "require \"Authorization: Bearer KEY\" on every request but /health and / (also CHORUS_API_KEY)", o.api_key)
      .option({"-np", "--parallel"}, "N", "parallel slots, each its own sequence in the KV cache (default 4)",
              store_positive(o.scheduler.n_slots))
      .option({"-c", "--ctx-size"}, "N",
              "total context in tokens, shared equally by the slots (default: the model's trained length, at most "
              "4096, per slot)",
              store_positive(n_ctx_total))
      .option({"-ub", "--ubatch-size"}, "N", "tokens per step: one forward pass (default 512)",
              store_positive(o.scheduler.n_ubatch))
      .option({"--queue"}, "N", "requests that may wait for a slot; more get 503 (default 16)",
              [&](const std::string& flag, const std::string& v) {
                o.scheduler.max_queue = static_cast<uint32_t>(parse_int(flag, v, 0, 1 << 16));
              })
      .option({"--max-body"}, "SIZE", "largest request body, e.g. 8M (default 8M); larger gets 413",
              [&](const std::string& flag, const std::string& v) { o.max_body = parse_bytes(flag, v); })
      .option({"--timeout"}, "S", "drop a connection idle (or sending its headers) this many seconds (default 30)",
              [&](const std::string& flag, const std::string& v) { o.read_timeout_s = o.write_timeout_s = parse_int(flag, v, 1, 86400); })
      .option({"--alias"}, "NAME", "the model id /v1/models lists (default: the file name without .gguf)", alias)
      .option({"--chat-template"}, "NAME|FILE",
              "a built-in format (" + builtin_chat_template_list() + ") or a Jinja file; default: the model's own, else chatml",
              template_arg)
      .flag({"--validation"}, "enable VK_LAYER_KHRONOS_validation (also CHORUS_VALIDATION=1)", validation);
  add_placement_options(p, placement);
  if (!p.parse(args)) return 0;
  if (model_path.empty()) throw UsageError("-m MODEL is required");
  if (o.scheduler.n_slots > 256) throw UsageError("-np expects at most 256 slots");
  if (n_ctx_total) {
    if (n_ctx_total < 2 * o.scheduler.n_slots)
      throw UsageError("-c " + std::to_string(n_ctx_total) + " leaves fewer than 2 tokens for each of the " +
                       std::to_string(o.scheduler.n_slots) + " slots");
    o.scheduler.n_ctx = n_ctx_total / o.scheduler.n_slots;
  }
  if (const char* v = std::getenv("CHORUS_VALIDATION"); v && std::string(v) == "1") validation = true;
  o.model_name = alias.empty() ? std::filesystem::path(model_path).stem().string() : alias;

  // SIGINT / SIGTERM go to one thread: before the model is loaded they end the process, after
  // it they stop the server (finishing the responses in flight is not waited for).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);  // inherited by every thread started below

  // Declared before the server, so its scheduler (and context) goes before the model and devices.
  std::optional<gguf::File> file;
  std::optional<Tokenizer> tok;
  // The devices first: opening them may set the environment for a moment (lavapipe's threads,
  // vk::InstanceOptions::cpu_threads), which must not happen while the server's threads run.
  std::optional<LoadedModel> model(open_devices(model_path, placement, validation));
  server::Server srv(o);
  const int port = srv.start();
  std::fprintf(stderr, "serve: listening on http://%s:%d (loading the model; /health answers 503 until it is ready)\n",
               o.host.c_str(), port);
  std::atomic<bool> loaded{false};
  std::thread signals([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    if (!loaded) std::_Exit(128 + sig);
    std::fprintf(stderr, "serve: %s: stopping\n", sig == SIGINT ? "interrupted" : "terminated");
    srv.stop();
  });
  signals.detach();

  file.emplace(gguf::File::open(model_path));
  tok.emplace(load_vocab(*file));
  const ModelChatFormat format = choose_chat_template(*file, template_arg, "");
  load_into(*model, model_path, placement,
            // one logits row per slot in a step
            ContextRequest{o.scheduler.n_ctx, o.scheduler.n_slots, o.scheduler.n_ubatch, o.scheduler.n_slots});
  srv.attach(*model->model, *tok, format, model->context.n_ctx);  // the memory planner may have shrunk it
  loaded = true;
  const server::SchedulerStats st = srv.scheduler()->stats();
  for (const DeviceMemoryUse& u : st.memory)
    std::fprintf(stderr, "%s: weights %.2f MiB, KV cache %.2f MiB, scratch %.2f MiB\n", u.device.c_str(),
                 static_cast<double>(u.weights) / (1 << 20), static_cast<double>(u.kv_cache) / (1 << 20),
                 static_cast<double>(u.scratch) / (1 << 20));
  std::fprintf(stderr, "serve: ready: model '%s', %u slots of %u tokens, on http://%s:%d\n", o.model_name.c_str(),
               srv.scheduler()->n_slots(), srv.scheduler()->n_ctx(), o.host.c_str(), port);
  std::printf("%d\n", port);  // for scripts that asked for --port 0
  flush_stdout();
  srv.wait();
  // --profile (or CHORUS_PROFILE=1): the time per kernel over everything the server evaluated.
  for (const auto& dev : model->devices)
    if (vk::DispatchProfile* prof = dev->profile())
      std::fputs(profile_table(dev->label(), "chorus serve", prof->kernels(), prof->untimed(),
                               static_cast<double>(srv.scheduler()->stats().context.tokens))
                     .c_str(),
                 stderr);
  return 0;
}

}  // namespace chorus::tools
