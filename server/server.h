// server/server.h — `chorus serve`: an OpenAI-compatible HTTP server over one loaded model.
//
// Owns: the HTTP listener (cpp-httplib) and its routes — GET / (a chat page,
// server/chat_page.h), GET /health, GET /v1/models,
// POST /v1/chat/completions, POST /v1/completions, POST /v1/embeddings, POST /tokenize,
// POST /detokenize, GET /metrics — the parsing and checking of every request (each mistake an
// OpenAI-shaped error {"error":{"message","type","code"}} with its status), the API key, and
// server-sent events for `stream: true`. Generation itself is the Scheduler's
// (server/scheduler.h); this file only turns requests into jobs and jobs into responses.
// docs/server.md documents the endpoints, the flags and what is not supported.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <memory>
#include <string>

#include "engine/chat_template.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "server/scheduler.h"

namespace chorus::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                   // 0: any free port (Server::start returns it)
  std::string api_key;               // non-empty: every request but /health needs "Authorization: Bearer KEY"
  std::string model_name = "model";  // the id /v1/models lists and requests may name
  size_t max_body = 8u << 20;        // bytes; a larger body is refused with 413
  time_t read_timeout_s = 30;        // a client that sends nothing for this long is dropped (slow headers)
  time_t write_timeout_s = 30;
  uint32_t http_threads = 0;         // 0: slots + queue + 8
  SchedulerOptions scheduler;
};

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts answering on a thread of its own; returns the port. Until attach(),
  // /health answers 503 and every other endpoint 503 "loading". Throws std::runtime_error when
  // the address cannot be bound.
  int start();
  // The model is loaded: builds the scheduler (a context of scheduler.n_slots sequences) and
  // answers requests. `model`, `tok` must outlive the server. `n_ctx` (tokens per slot), when
  // not 0, replaces scheduler.n_ctx: the size the memory planner fitted.
  void attach(Model& model, const Tokenizer& tok, const ModelChatFormat& format, uint32_t n_ctx = 0);
  // Stops listening (any thread may call it; the requests in flight end with the listener).
  void stop();
  // Blocks until the listener has stopped (after stop()); call it from one thread only.
  void wait();

  int port() const;
  // Null before attach().
  Scheduler* scheduler();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace chorus::server
