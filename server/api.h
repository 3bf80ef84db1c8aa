// server/api.h — the OpenAI-compatible API without the HTTP: request bodies (JSON) checked
// and turned into scheduler jobs, and jobs' events turned into response bodies (JSON objects,
// or server-sent events in OpenAI's chunk format).
//
// Owns: every check of a request's fields (type, range, presence), each failure an ApiError
// carrying the HTTP status and OpenAI's error type and code; the chat template rendering of
// `messages`; the response shapes of chat completions, completions, embeddings, /tokenize,
// /detokenize, /v1/models and the Prometheus text of /metrics.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/chat_template.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "server/scheduler.h"

namespace chorus::server {

// A request the API refuses: status 400 (invalid_request_error), 401 (authentication_error),
// 404 (not_found_error), 413, 503 (unavailable_error) or 500 (server_error).
struct ApiError : std::runtime_error {
  ApiError(int status_, const std::string& message, std::string type_, std::string code_)
      : std::runtime_error(message), status(status_), type(std::move(type_)), code(std::move(code_)) {}
  int status;
  std::string type, code;
};

// {"error":{"message":...,"type":...,"code":...}}
nlohmann::json error_body(const ApiError& e);
// JSON text; invalid UTF-8 (a byte token's piece) becomes U+FFFD instead of throwing.
std::string dump(const nlohmann::json& j);
// A request body as a JSON object, or ApiError 400 saying what is wrong (not JSON, where; not
// an object; nested deeper than 64 levels).
nlohmann::json parse_request_json(std::string_view body);
// Standard base64 of bytes (OpenAI's encoding_format "base64" of float32 embeddings).
std::string base64(std::string_view bytes);

// A generation in progress, read by one HTTP handler.
class Reply {
 public:
  Reply(std::shared_ptr<Job> job, bool chat, bool stream, const std::string& model, bool logprobs);
  bool stream() const { return stream_; }
  // Non-streaming: appends to `out` the response object once the reply is complete (returns
  // false then), or a space after a second of waiting (leading whitespace is valid JSON; a
  // client that left is noticed when it cannot be written). A job that failed gives an error
  // object (the 200 status is sent by then).
  bool next_whole(std::string& out);
  // Streaming: appends the next server-sent events to `out` (waits up to a second; with
  // nothing new, a comment line, so a client that left is noticed). Returns false after the
  // last event ("data: [DONE]").
  bool next_sse(std::string& out);
  void cancel() { job_->cancel(); }

 private:
  nlohmann::json chunk(const nlohmann::json& choice) const;
  nlohmann::json logprobs_json(const std::vector<TokenLogprob>& lps) const;
  nlohmann::json usage_json(const Usage& u) const;

  std::shared_ptr<Job> job_;
  bool chat_, stream_, logprobs_;
  std::string id_, model_;
  int64_t created_;
  bool started_ = false, finished_ = false;
  size_t text_offset_ = 0;  // completions' logprobs.text_offset
  std::string whole_text_;                    // next_whole: the reply so far
  std::vector<TokenLogprob> whole_logprobs_;
};

class Api {
 public:
  enum class Endpoint { chat, completion };
  Api(Model& model, const Tokenizer& tok, const ModelChatFormat& format, Scheduler& scheduler, std::string model_name);

  // Checks the request and queues its job (ApiError 503 when the queue is full).
  std::shared_ptr<Reply> start(Endpoint endpoint, const nlohmann::json& body);
  nlohmann::json embeddings(const nlohmann::json& body);
  nlohmann::json tokenize(const nlohmann::json& body) const;
  nlohmann::json detokenize(const nlohmann::json& body) const;
  nlohmann::json models() const;
  // Prometheus text exposition; `statuses`: responses sent so far by HTTP status.
  std::string metrics(const std::map<int, uint64_t>& statuses) const;

  // The prompt tokens a chat request's messages render to (for tests and /tokenize users).
  std::vector<TokenId> chat_prompt(const nlohmann::json& messages) const;

 private:
  void check_model(const nlohmann::json& body) const;
  std::vector<TokenId> checked_prompt(std::vector<TokenId> tokens, const char* what) const;

  Model& model_;
  const Tokenizer& tok_;
  ModelChatFormat format_;
  ChatTemplate template_;
  Scheduler& scheduler_;
  std::string model_name_;
  int64_t created_;
};

}  // namespace chorus::server
