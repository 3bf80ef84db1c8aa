#include "server/server.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <nlohmann/json.hpp>

#include "server/api.h"
#include "server/chat_page.h"

namespace chorus::server {

using nlohmann::json;

struct Server::Impl {
  ServerOptions options;
  httplib::Server http;
  std::thread listener;
  int port = 0;

  // Set once by attach(), before `ready` turns true; read by the handlers after they see it.
  Model* model = nullptr;
  const Tokenizer* tok = nullptr;
  std::unique_ptr<Api> api;
  std::unique_ptr<Scheduler> scheduler;
  std::atomic<bool> ready{false};

  std::mutex status_mutex;
  std::map<int, uint64_t> responses;  // by status, for /metrics

  explicit Impl(ServerOptions o) : options(std::move(o)) {}

  void routes();
  bool authorised(const httplib::Request& req) const;
};

namespace {

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) { send_json(res, e.status, error_body(e)); }

}  // namespace

bool Server::Impl::authorised(const httplib::Request& req) const {
  if (options.api_key.empty()) return true;
  const std::string want = "Bearer " + options.api_key;
  const std::string got = req.get_header_value("Authorization");
  // Compared in time independent of where they differ.
  unsigned diff = got.size() == want.size() ? 0u : 1u;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) diff |= static_cast<unsigned>(got[i] ^ want[i]);
  return diff == 0;
}

void Server::Impl::routes() {
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    // The page carries no secret (its API key field is the user's): served like /health.
    if (req.path == "/health" || req.path == "/") return httplib::Server::HandlerResponse::Unhandled;
    if (!authorised(req)) {
      send_error(res, ApiError(401, "invalid or missing API key: send the header \"Authorization: Bearer KEY\" with the "
                                    "key given to --api-key", "authentication_error", "invalid_api_key"));
      return httplib::Server::HandlerResponse::Handled;
    }
    if (!ready.load(std::memory_order_acquire)) {
      send_error(res, ApiError(503, "the model is still loading; /health answers 200 when it is ready", "unavailable_error",
                               "loading"));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // a handler's own error
    const ApiError e = res.status == 404   ? ApiError(404, "no endpoint " + req.method + " " + req.path + " (see docs/server.md)",
                                                      "not_found_error", "not_found")
                       : res.status == 413 ? ApiError(413, "the request body is larger than the server's limit (--max-body)",
                                                      "invalid_request_error", "request_too_large")
                                           : ApiError(res.status, "the request could not be read (HTTP status " +
                                                                      std::to_string(res.status) + ")",
                                                      "invalid_request_error", "bad_request");
    send_error(res, e);
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, ApiError(500, "internal error: " + what, "server_error", "internal_error"));
  });
  http.set_logger([this](const httplib::Request&, const httplib::Response& res) {
    std::lock_guard lock(status_mutex);
    ++responses[res.status];
  });

  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (ready.load(std::memory_order_acquire))
      send_json(res, 200, json{{"status", "ok"}});
    else
      send_error(res, ApiError(503, "the model is still loading", "unavailable_error", "loading"));
  });
  http.Get("/", [](const httplib::Request&, httplib::Response& res) { res.set_content(chat_page(), "text/html; charset=utf-8"); });
  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) { send_json(res, 200, api->models()); });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    std::map<int, uint64_t> statuses;
    {
      std::lock_guard lock(status_mutex);
      statuses = responses;
    }
    res.set_content(api->metrics(statuses), "text/plain; version=0.0.4");
  });
  // Bodies are read here, not by httplib: its payload limit covers Content-Length bodies only,
  // and a chunked body would otherwise grow without bound.
  const auto post = [this](const char* path, auto handler) {
    http.Post(path, [this, handler](const httplib::Request& req, httplib::Response& res,
                                    const httplib::ContentReader& read) {
      try {
        std::string body;
        bool too_large = false;
        const bool complete = read([&](const char* data, size_t n) {
          if (body.size() + n > options.max_body) {
            too_large = true;
            return false;
          }
          body.append(data, n);
          return true;
        });
        // httplib refuses a Content-Length over its payload limit (set to the same) by itself.
        too_large = too_large || (!complete && req.get_header_value<uint64_t>("Content-Length") > options.max_body);
        if (too_large) {
          res.set_header("Connection", "close");  // the rest of the body is never read
          throw ApiError(413, "the request body is larger than the server's limit of " + std::to_string(options.max_body) +
                                  " bytes (--max-body)", "invalid_request_error", "request_too_large");
        }
        if (!complete)
          throw ApiError(400, "the request body could not be read to its end", "invalid_request_error", "bad_request");
        handler(*api, parse_request_json(body), res);
      } catch (const ApiError& e) {
        send_error(res, e);
      }
    });
  };
  post("/tokenize", [](Api& a, const json& body, httplib::Response& res) { send_json(res, 200, a.tokenize(body)); });
  post("/detokenize", [](Api& a, const json& body, httplib::Response& res) { send_json(res, 200, a.detokenize(body)); });
  post("/v1/embeddings", [](Api& a, const json& body, httplib::Response& res) { send_json(res, 200, a.embeddings(body)); });
  const auto generation = [](Api::Endpoint endpoint) {
    return [endpoint](Api& a, const json& body, httplib::Response& res) {
      std::shared_ptr<Reply> reply = a.start(endpoint, body);
      // Both forms are written as the reply comes (events, or one JSON object preceded by a space
      // per second of waiting), so a client that leaves is noticed at the next write either way.
      const bool stream = reply->stream();
      res.status = 200;
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(
          stream ? "text/event-stream" : "application/json",
          [reply, stream](size_t, httplib::DataSink& sink) {
            // One call per batch of events; a failed write means the client went away.
            std::string out;
            const bool more = stream ? reply->next_sse(out) : reply->next_whole(out);
            if (!out.empty() && !sink.write(out.data(), out.size())) {
              reply->cancel();
              return false;
            }
            if (!more) sink.done();
            return true;
          },
          [reply](bool) { reply->cancel(); });  // finished or aborted: the slot is free either way
    };
  };
  post("/v1/chat/completions", generation(Api::Endpoint::chat));
  post("/chat/completions", generation(Api::Endpoint::chat));
  post("/v1/completions", generation(Api::Endpoint::completion));
  post("/completions", generation(Api::Endpoint::completion));
}

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  Impl& m = *impl_;
  const ServerOptions& o = m.options;
  m.http.set_payload_max_length(o.max_body);
  m.http.set_read_timeout(o.read_timeout_s, 0);
  // An idle kept-alive connection holds a worker thread (and delays shutdown) at most 5 s.
  m.http.set_keep_alive_timeout(std::min<time_t>(o.read_timeout_s, 5));
  m.http.set_write_timeout(o.write_timeout_s, 0);
  const size_t threads = o.http_threads ? o.http_threads : o.scheduler.n_slots + o.scheduler.max_queue + 8;
  m.http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  m.routes();
}

Server::~Server() {
  stop();
  wait();
}

int Server::start() {
  Impl& m = *impl_;
  if (m.options.port == 0) {
    m.port = m.http.bind_to_any_port(m.options.host);
    if (m.port <= 0) throw std::runtime_error("serve: cannot bind a port on " + m.options.host);
  } else {
    if (!m.http.bind_to_port(m.options.host, m.options.port))
      throw std::runtime_error("serve: cannot listen on " + m.options.host + ":" + std::to_string(m.options.port) +
                               " (is another server using the port? --port picks another)");
    m.port = m.options.port;
  }
  m.listener = std::thread([&m] { m.http.listen_after_bind(); });
  // stop() only reaches a server that is running: wait for the listener to get there.
  while (!m.http.is_running()) std::this_thread::yield();
  return m.port;
}

void Server::attach(Model& model, const Tokenizer& tok, const ModelChatFormat& format, uint32_t n_ctx) {
  Impl& m = *impl_;
  if (n_ctx) m.options.scheduler.n_ctx = n_ctx;
  m.model = &model;
  m.tok = &tok;
  m.scheduler = std::make_unique<Scheduler>(model, tok, m.options.scheduler);
  m.api = std::make_unique<Api>(model, tok, format, *m.scheduler, m.options.model_name);
  m.ready.store(true, std::memory_order_release);
}

void Server::stop() { impl_->http.stop(); }

void Server::wait() {
  Impl& m = *impl_;
  if (m.listener.joinable()) m.listener.join();
}

int Server::port() const { return impl_->port; }
Scheduler* Server::scheduler() { return impl_->scheduler.get(); }

}  // namespace chorus::server
