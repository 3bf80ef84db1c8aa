// `chorus serve` in-process (server/server.h): every endpoint over real HTTP on loopback with
// stories260K, against answers computed without the server (a Context's greedy tokens, the C++
// reference's logits); streaming framing; OpenAI-shaped errors for bad and hostile requests; a
// disconnecting client freeing its slot; and four concurrent streams on a tensor split of one
// device opened twice, each step one forward pass and one submit per device.
//
// Nothing here waits for time to pass: the scheduler's hold() lines requests up, and every wait
// is for a condition, with a generous timeout only as a guard against a hang.
#include <gtest/gtest.h>
#include <httplib.h>
#include <malloc.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/chat.h"
#include "engine/chat_template.h"
#include "engine/gguf.h"
#include "engine/vocab.h"
#include "server/api.h"
#include "server/server.h"
#include "tests/gpu.h"
#include "tests/reference_model.h"

namespace chorus {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kKey = "test-key";
constexpr auto kHangGuard = 120s;

std::string stories_path() { return test::shared_model("stories260K.gguf"); }

ModelChatFormat chatml(const gguf::File& f) {
  ModelChatFormat fmt = model_chat_format(f);
  if (fmt.chat_template.empty()) fmt.chat_template = *builtin_chat_template("chatml");
  return fmt;
}

// A server on a free loopback port over a model, with its tokenizer.
struct Served {
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<Model> model;
  std::unique_ptr<server::Server> srv;
  int port = 0;

  Served(std::unique_ptr<Model> m, const server::ServerOptions& o) : model(std::move(m)) {
    const gguf::File f = gguf::File::open(stories_path());
    tok = std::make_unique<Tokenizer>(load_vocab(f));
    srv = std::make_unique<server::Server>(o);
    port = srv->start();
    srv->attach(*model, *tok, chatml(f));
  }
  ~Served() {
    srv->stop();
    srv->wait();
  }

  server::Scheduler& sched() { return *srv->scheduler(); }
  std::unique_ptr<httplib::Client> client(bool with_key = true) const {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", port);
    c->set_read_timeout(kHangGuard);
    c->set_write_timeout(kHangGuard);
    if (with_key) c->set_default_headers({{"Authorization", std::string("Bearer ") + kKey}});
    return c;
  }
};

server::ServerOptions default_options() {
  server::ServerOptions o;
  o.port = 0;
  o.api_key = kKey;
  o.model_name = "stories260K";
  o.max_body = 64 << 10;
  o.read_timeout_s = 2;
  o.scheduler.n_slots = 4;
  o.scheduler.n_ctx = 1024;
  o.scheduler.max_queue = 4;
  return o;
}

// POSTs JSON; returns {status, parsed body}.
std::pair<int, json> post(httplib::Client& c, const std::string& path, const std::string& body) {
  const auto r = c.Post(path, body, "application/json");
  if (!r) return {0, json()};
  return {r->status, json::parse(r->body, nullptr, false)};
}
std::pair<int, json> post(httplib::Client& c, const std::string& path, const json& body) { return post(c, path, body.dump()); }

// Streams a request; returns the "data:" payloads in order (the last one "[DONE]").
std::vector<std::string> stream(httplib::Client& c, const std::string& path, const json& body,
                                const std::function<bool(const std::string&)>& on_event = nullptr) {
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  std::string buffer;
  std::vector<std::string> events;
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    buffer.append(data, n);
    for (size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
      const std::string block = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      if (block.rfind("data: ", 0) != 0) continue;  // comments
      events.push_back(block.substr(6));
      if (on_event && !on_event(events.back())) return false;
    }
    return true;
  };
  (void)c.send(req);
  return events;
}

// The reply text of streamed chunks (chat deltas or completion texts).
std::string streamed_text(const std::vector<std::string>& events) {
  std::string text;
  for (const std::string& e : events) {
    if (e == "[DONE]") break;
    const json j = json::parse(e);
    const json& choice = j["choices"][0];
    if (choice.contains("delta") && choice["delta"].contains("content")) text += choice["delta"]["content"].get<std::string>();
    if (choice.contains("text")) text += choice["text"].get<std::string>();
  }
  return text;
}

void expect_error(const std::pair<int, json>& r, int status, const std::string& code, const std::string& what) {
  EXPECT_EQ(r.first, status) << what << ": " << r.second.dump();
  ASSERT_TRUE(r.second.is_object() && r.second.contains("error")) << what << ": " << r.second.dump();
  const json& e = r.second["error"];
  EXPECT_TRUE(e["message"].is_string() && !e["message"].get<std::string>().empty()) << what;
  EXPECT_TRUE(e["type"].is_string()) << what;
  EXPECT_EQ(e["code"], code) << what << ": " << e.dump();
}

// Greedy continuation of `prompt` by a plain Context: the text the server must reproduce.
std::string greedy_text(Model& model, const Tokenizer& tok, const std::vector<TokenId>& prompt, uint32_t n) {
  Context ctx(model, ContextOptions{1024, 1, 512});
  std::vector<float> logits = ctx.decode(0, prompt);
  Detokenizer detok(tok);
  for (const TokenId t : prompt) (void)detok.push(t);
  std::string text;
  for (uint32_t i = 0; i < n; ++i) {
    const TokenId t = argmax(logits);
    if (tok.vocab().is_eog(t)) break;
    text += detok.push(t);
    logits = ctx.decode(0, std::span<const TokenId>(&t, 1));
  }
  return text + detok.flush();
}

class ServerTest : public test::GpuTest {
 protected:
  static void TearDownTestSuite() { served_.reset(); }
  void SetUp() override {
    test::GpuTest::SetUp();
    if (!served_) served_ = std::make_unique<Served>(Model::load(stories_path(), test::device(0)), default_options());
  }
  Served& s() { return *served_; }
  static std::unique_ptr<Served> served_;
};
std::unique_ptr<Served> ServerTest::served_;

TEST_F(ServerTest, HealthAnswers503UntilTheModelIsAttachedThen200) {
  server::ServerOptions o = default_options();
  server::Server srv(o);
  const int port = srv.start();
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(kHangGuard);
  c.set_default_headers({{"Authorization", std::string("Bearer ") + kKey}});
  auto r = c.Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  expect_error({r->status, json::parse(r->body)}, 503, "loading", "health while loading");
  r = c.Get("/v1/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503) << "every endpoint waits for the model";
  const gguf::File f = gguf::File::open(stories_path());
  const Tokenizer tok(load_vocab(f));
  srv.attach(*s().model, tok, chatml(f));
  r = c.Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body)["status"], "ok");
  srv.stop();
  srv.wait();
}

TEST_F(ServerTest, ModelsListsTheServedModelWithItsSlots) {
  auto c = s().client();
  const auto r = c->Get("/v1/models");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  const json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 1u);
  EXPECT_EQ(j["data"][0]["id"], "stories260K");
  EXPECT_EQ(j["data"][0]["meta"]["n_slots"], 4);
  EXPECT_EQ(j["data"][0]["meta"]["n_ctx_slot"], 1024);
}

TEST_F(ServerTest, GreedyCompletionEqualsAPlainContextsGreedyTokens) {
  const std::string prompt = "Once upon a time";
  const auto ids = s().tok->encode(prompt, EncodeOptions{true, true});
  const std::string want = greedy_text(*s().model, *s().tok, ids, 24);
  auto c = s().client();
  const auto [status, j] = post(*c, "/v1/completions", json{{"model", "stories260K"}, {"prompt", prompt}, {"max_tokens", 24}, {"temperature", 0}});
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], want);
  EXPECT_EQ(j["usage"]["prompt_tokens"], ids.size());
  EXPECT_EQ(j["usage"]["total_tokens"], j["usage"]["prompt_tokens"].get<size_t>() + j["usage"]["completion_tokens"].get<size_t>());
  // The same prompt as token ids gives the same text.
  const auto [status2, j2] = post(*c, "/v1/completions", json{{"prompt", ids}, {"max_tokens", 24}, {"temperature", 0}});
  ASSERT_EQ(status2, 200) << j2.dump();
  EXPECT_EQ(j2["choices"][0]["text"], want);
  EXPECT_GT(j2["usage"]["prompt_tokens_details"]["cached_tokens"], 0) << "the second request reuses the first's cache";
}

TEST_F(ServerTest, ChatRendersTheTemplateAndStreamsTheSameReplyItAnswersWhole) {
  const json messages = json::array({{{"role", "system"}, {"content", "Tell stories."}},
                                     {{"role", "user"}, {"content", json::array({{{"type", "text"}, {"text", "A cat"}}})}}});
  const std::string rendered = ChatTemplate::parse(*builtin_chat_template("chatml"))
                                   .render({{"system", "Tell stories."}, {"user", "A cat"}}, ChatTemplateOptions{});
  const auto ids = s().tok->encode(rendered, EncodeOptions{true, true});
  auto c = s().client();
  const json body{{"messages", messages}, {"max_tokens", 12}, {"temperature", 0}, {"ignore_eos", true}};
  const auto [status, whole] = post(*c, "/v1/chat/completions", body);
  ASSERT_EQ(status, 200) << whole.dump();
  EXPECT_EQ(whole["object"], "chat.completion");
  EXPECT_EQ(whole["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(whole["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(whole["usage"]["prompt_tokens"], ids.size());
  EXPECT_EQ(whole["usage"]["completion_tokens"], 12);
  EXPECT_EQ(whole["choices"][0]["message"]["content"], greedy_text(*s().model, *s().tok, ids, 12));

  json sbody = body;
  sbody["stream"] = true;
  const auto events = stream(*c, "/v1/chat/completions", sbody);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  const json first = json::parse(events.front());
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  const json last = json::parse(events[events.size() - 2]);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(last["usage"]["completion_tokens"], 12) << "usage rides on the final chunk";
  EXPECT_EQ(streamed_text(events), whole["choices"][0]["message"]["content"]);
}

TEST_F(ServerTest, AStopStringEndsTheReplyJustBeforeIt) {
  auto c = s().client();
  const json body{{"prompt", "Once upon a time"}, {"max_tokens", 40}, {"temperature", 0}};
  const auto [st, full] = post(*c, "/v1/completions", body);
  ASSERT_EQ(st, 200);
  const std::string text = full["choices"][0]["text"];
  ASSERT_GT(text.size(), 20u) << text;
  const std::string stop = text.substr(text.size() / 2, 4);
  json with_stop = body;
  with_stop["stop"] = json::array({"never appears", stop});
  for (const bool streamed : {false, true}) {
    std::string got;
    std::string reason;
    if (streamed) {
      with_stop["stream"] = true;
      const auto events = stream(*c, "/v1/completions", with_stop);
      got = streamed_text(events);
      reason = json::parse(events[events.size() - 2])["choices"][0]["finish_reason"];
    } else {
      const auto [st2, j] = post(*c, "/v1/completions", with_stop);
      ASSERT_EQ(st2, 200);
      got = j["choices"][0]["text"];
      reason = j["choices"][0]["finish_reason"];
    }
    EXPECT_EQ(got, text.substr(0, text.find(stop))) << "stop '" << stop << "', streamed " << streamed;
    EXPECT_EQ(reason, "stop");
  }
}

TEST_F(ServerTest, LogprobsNameTheChosenTokenAndItsMostLikelyAlternatives) {
  auto c = s().client();
  const auto [st, j] = post(*c, "/v1/chat/completions",
                            json{{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 4}, {"temperature", 0},
                                 {"logprobs", true}, {"top_logprobs", 3}, {"ignore_eos", true}});
  ASSERT_EQ(st, 200) << j.dump();
  const json& content = j["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 4u);
  std::string joined;
  for (const json& t : content) {
    ASSERT_EQ(t["top_logprobs"].size(), 3u);
    EXPECT_EQ(t["top_logprobs"][0]["token"], t["token"]) << "greedy picks the most likely token";
    EXPECT_LE(t["logprob"].get<double>(), 0.0);
    EXPECT_GE(t["top_logprobs"][0]["logprob"].get<double>(), t["top_logprobs"][1]["logprob"].get<double>());
    EXPECT_GE(t["top_logprobs"][1]["logprob"].get<double>(), t["top_logprobs"][2]["logprob"].get<double>());
    joined += t["token"].get<std::string>();
  }
  EXPECT_NE(joined.find(j["choices"][0]["message"]["content"].get<std::string>()), std::string::npos);
}

// OpenAI's penalties act on the tokens generated so far: greedy decoding with them repeats
// fewer tokens, and the first token (nothing generated yet) is unchanged.
TEST_F(ServerTest, PresenceAndFrequencyPenaltiesReduceRepeatedTokens) {
  auto c = s().client();
  const auto tokens = [&](double presence, double frequency) {
    const auto [st, j] = post(*c, "/v1/chat/completions",
                              json{{"messages", {{{"role", "user"}, {"content", "Tell me a story"}}}}, {"max_tokens", 48},
                                   {"temperature", 0}, {"ignore_eos", true}, {"logprobs", true},
                                   {"presence_penalty", presence}, {"frequency_penalty", frequency}});
    EXPECT_EQ(st, 200) << j.dump();
    std::vector<std::string> out;
    for (const json& t : j["choices"][0]["logprobs"]["content"]) out.push_back(t["token"]);
    return out;
  };
  const auto repeats = [](const std::vector<std::string>& t) {
    return t.size() - std::set<std::string>(t.begin(), t.end()).size();
  };
  const auto plain = tokens(0, 0), penalised = tokens(2, 2);
  ASSERT_EQ(plain.size(), 48u);
  ASSERT_EQ(penalised.size(), 48u);
  EXPECT_EQ(plain[0], penalised[0]);
  EXPECT_LT(repeats(penalised), repeats(plain)) << "without: " << repeats(plain) << " repeated tokens";
}

TEST_F(ServerTest, TheSameSeedSamplesTheSameText) {
  auto c = s().client();
  const json body{{"prompt", "The dog"}, {"max_tokens", 16}, {"temperature", 1.0}, {"top_k", 20}, {"seed", 1234}};
  const auto a = post(*c, "/v1/completions", body);
  const auto b = post(*c, "/v1/completions", body);
  ASSERT_EQ(a.first, 200);
  EXPECT_EQ(a.second["choices"][0]["text"], b.second["choices"][0]["text"]);
}

TEST_F(ServerTest, TokenizeAndDetokenizeRoundTrip) {
  auto c = s().client();
  const auto [st, t] = post(*c, "/tokenize", json{{"content", "Lily liked the park."}});
  ASSERT_EQ(st, 200);
  EXPECT_EQ(t["tokens"].get<std::vector<TokenId>>(), s().tok->encode("Lily liked the park.", EncodeOptions{false, true}));
  const auto [st2, d] = post(*c, "/detokenize", json{{"tokens", t["tokens"]}});
  ASSERT_EQ(st2, 200);
  EXPECT_EQ(d["content"], "Lily liked the park.");
  const auto pieces = post(*c, "/tokenize", json{{"content", "Lily"}, {"with_pieces", true}});
  EXPECT_TRUE(pieces.second["tokens"][0].contains("piece"));
}

// Context::embed against the C++ reference: the LM head is linear, so Wout * mean(h) equals the
// mean of the reference's logits over the tokens.
TEST_F(ServerTest, ContextEmbedIsTheMeanFinalNormHiddenStateOfTheReference) {
  const std::vector<TokenId> ids = s().tok->encode("Once upon a time there was a cat", EncodeOptions{true, true});
  Context ctx(*s().model, ContextOptions{128, 1, 4});  // micro-batches of 4: the sum spans several passes
  const std::vector<float> h = ctx.embed(0, ids);
  ref::ReferenceModel reference(stories_path());
  const std::vector<float> logits = reference.forward(ids);
  const ModelConfig& cfg = reference.config();
  const gguf::File f = gguf::File::open(stories_path());
  const auto* out = f.find_tensor("output.weight");
  const std::vector<float> w = ref::dequantize_tensor(out ? *out : f.require_tensor("token_embd.weight"));
  std::vector<float> want(cfg.n_vocab, 0.0f), got(cfg.n_vocab, 0.0f);
  for (size_t t = 0; t < ids.size(); ++t)
    for (uint32_t v = 0; v < cfg.n_vocab; ++v) want[v] += logits[t * cfg.n_vocab + v] / static_cast<float>(ids.size());
  for (uint32_t v = 0; v < cfg.n_vocab; ++v)
    for (uint32_t i = 0; i < cfg.n_embd; ++i) got[v] += w[size_t(v) * cfg.n_embd + i] * h[i];
  EXPECT_LT(test::nmse(want, got), 1e-6);
  // Decoding afterwards is unaffected (the recording without the copy is used again).
  EXPECT_EQ(ctx.length(0), ids.size());
}

TEST_F(ServerTest, EmbeddingsAreUnitVectorsInFloatOrBase64) {
  auto c = s().client();
  const auto [st, j] = post(*c, "/v1/embeddings", json{{"model", "stories260K"}, {"input", {"a cat", "a dog", "a cat"}}});
  ASSERT_EQ(st, 200) << j.dump();
  ASSERT_EQ(j["data"].size(), 3u);
  const auto v0 = j["data"][0]["embedding"].get<std::vector<float>>();
  const auto v1 = j["data"][1]["embedding"].get<std::vector<float>>();
  EXPECT_EQ(v0.size(), s().model->config().n_embd);
  double norm = 0;
  for (const float x : v0) norm += double(x) * x;
  EXPECT_NEAR(norm, 1.0, 1e-4);
  EXPECT_EQ(j["data"][2]["embedding"].get<std::vector<float>>(), v0) << "the same input, the same vector";
  EXPECT_NE(v0, v1);
  const size_t cat = s().tok->encode("a cat", EncodeOptions{true, false}).size();
  const size_t dog = s().tok->encode("a dog", EncodeOptions{true, false}).size();
  EXPECT_EQ(j["usage"]["prompt_tokens"].get<size_t>(), 2 * cat + dog);
  const auto [st2, b] = post(*c, "/v1/embeddings", json{{"input", "a cat"}, {"encoding_format", "base64"}});
  ASSERT_EQ(st2, 200);
  EXPECT_EQ(b["data"][0]["embedding"], server::base64(std::string_view(reinterpret_cast<const char*>(v0.data()), v0.size() * 4)));
}

TEST_F(ServerTest, BadRequestsGetOpenAIShapedErrorsWithTheRightStatus) {
  auto c = s().client();
  const json chat{{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 2}};
  const auto with = [&](const char* key, const json& value) {
    json b = chat;
    b[key] = value;
    return b;
  };
  expect_error(post(*c, "/v1/chat/completions", std::string("{\"messages\": [")), 400, "invalid_json", "truncated JSON");
  expect_error(post(*c, "/v1/chat/completions", std::string("[1,2]")), 400, "invalid_json", "not an object");
  expect_error(post(*c, "/v1/chat/completions", std::string(100, '[')), 400, "invalid_json", "deep nesting");
  expect_error(post(*c, "/v1/chat/completions", json{{"max_tokens", 2}}), 400, "missing_field", "no messages");
  expect_error(post(*c, "/v1/completions", json::object()), 400, "missing_field", "no prompt");
  expect_error(post(*c, "/v1/chat/completions", with("temperature", "hot")), 400, "invalid_request", "temperature string");
  expect_error(post(*c, "/v1/chat/completions", with("temperature", 7)), 400, "invalid_request", "temperature range");
  expect_error(post(*c, "/v1/chat/completions", with("max_tokens", 1.5)), 400, "invalid_request", "fractional max_tokens");
  expect_error(post(*c, "/v1/chat/completions", with("max_tokens", 0)), 400, "invalid_request", "max_tokens 0");
  expect_error(post(*c, "/v1/chat/completions", with("stop", 3)), 400, "invalid_request", "stop number");
  expect_error(post(*c, "/v1/chat/completions", with("messages", json::array())), 400, "invalid_request", "empty messages");
  expect_error(post(*c, "/v1/chat/completions", with("messages", {{{"content", "no role"}}})), 400, "invalid_request", "no role");
  expect_error(post(*c, "/v1/chat/completions", with("messages", {{{"role", "user"}, {"content", {{{"type", "image_url"}}}}}})), 400,
               "invalid_request", "image part");
  expect_error(post(*c, "/v1/chat/completions", with("n", 2)), 400, "unsupported_parameter", "n = 2");
  expect_error(post(*c, "/v1/chat/completions", with("model", "gpt-4")), 404, "model_not_found", "unknown model");
  expect_error(post(*c, "/v1/completions", json{{"prompt", {1, 2, 99999}}}), 400, "invalid_request", "token id out of range");
  expect_error(post(*c, "/v1/completions", json{{"prompt", std::vector<int>(1024, 5)}}), 400, "context_length_exceeded", "long prompt");
  expect_error(post(*c, "/v1/embeddings", json{{"input", 3.5}}), 400, "invalid_request", "embedding input");
  expect_error(post(*c, "/detokenize", json{{"tokens", {-1}}}), 400, "invalid_request", "negative token");
  expect_error(post(*c, "/tokenize", json{{"content", 1}}), 400, "invalid_type", "tokenize number");
  expect_error(post(*c, "/v1/completions", std::string(100 << 10, ' ')), 413, "request_too_large", "body over --max-body");
  const auto r = c->Get("/v1/nothing");
  ASSERT_TRUE(r);
  expect_error({r->status, json::parse(r->body)}, 404, "not_found", "unknown endpoint");
  auto anonymous = s().client(false);
  expect_error(post(*anonymous, "/v1/chat/completions", chat), 401, "invalid_api_key", "no key");
  anonymous->set_default_headers({{"Authorization", "Bearer wrong-key"}});
  expect_error(post(*anonymous, "/v1/chat/completions", chat), 401, "invalid_api_key", "wrong key");
  const auto h = anonymous->Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200) << "/health needs no key";
}

// A loopback TCP connection to the server, for what httplib's client will not send.
int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  timeval guard{static_cast<time_t>(kHangGuard.count()), 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &guard, sizeof guard);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &guard, sizeof guard);
  return fd;
}

// httplib's own limit covers Content-Length bodies only: a chunked body over --max-body must be
// refused too, not buffered to its end.
TEST_F(ServerTest, AChunkedBodyOverTheLimitIsRefusedBeforeItsEnd) {
  const int fd = connect_to(s().port);
  ASSERT_GE(fd, 0);
  std::string head = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + std::string(kKey) +
                     "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
  ASSERT_EQ(::send(fd, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
  const std::string chunk = "4000\r\n" + std::string(0x4000, ' ') + "\r\n";
  size_t sent = 0;
  for (int i = 0; i < 256; ++i) {  // 4 MiB, 64 times the limit
    if (::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(chunk.size())) break;
    sent += 0x4000;
  }
  std::string reply;
  char buf[4096];
  ssize_t n = 0;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) reply.append(buf, static_cast<size_t>(n));
  ::close(fd);
  // Either the 413 arrives, or the connection was reset because the server stopped reading; a
  // server that read everything would answer 400 (not JSON) after the whole body.
  if (!reply.empty()) {
    EXPECT_EQ(reply.rfind("HTTP/1.1 413", 0), 0u) << reply.substr(0, 200);
    EXPECT_NE(reply.find("request_too_large"), std::string::npos) << reply.substr(0, 400);
  } else {
    EXPECT_EQ(n, -1) << "no reply and no reset after " << sent << " bytes";
  }
  auto c = s().client();
  EXPECT_EQ(post(*c, "/v1/completions", json{{"prompt", "Once"}, {"max_tokens", 2}}).first, 200) << "the server still answers";
}

// The page's script run by Node (tests/chat_page_test.js) against this server: it streams the
// same greedy reply the API gives, then shows tokens/s and per-device memory from /metrics.
TEST_F(ServerTest, TheChatPageStreamsTheSameReplyTheAPIGivesAndFetchesNothingFromElsewhere) {
  auto anonymous = s().client(false);
  const auto page = anonymous->Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200) << "the page needs no key (its key field is the user's)";
  EXPECT_EQ(page->get_header_value("Content-Type"), "text/html; charset=utf-8");
  EXPECT_EQ(page->body.find("http://"), std::string::npos) << "the page works offline";
  EXPECT_EQ(page->body.find("https://"), std::string::npos) << "the page works offline";
  auto c = s().client();
  const auto [st, want] = post(*c, "/v1/chat/completions",
                               json{{"messages", {{{"role", "user"}, {"content", "Hello"}}}}, {"temperature", 0}, {"max_tokens", 24}});
  ASSERT_EQ(st, 200) << want.dump();
  const std::string cmd = std::string("node ") + CHORUS_SOURCE_DIR + "/tests/chat_page_test.js " + std::to_string(s().port) +
                          " " + kKey + " Hello 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string output;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) output.append(buf, n);
  const int status = ::pclose(p);
  ASSERT_EQ(status, 0) << output << "\n(the page's test needs Node.js: scripts/install-deps.sh installs nodejs)";
  const json got = json::parse(output.substr(output.rfind('{', output.rfind("\"header\""))), nullptr, false);
  ASSERT_TRUE(got.is_object()) << output;
  EXPECT_EQ(got["reply"], want["choices"][0]["message"]["content"]);
  EXPECT_EQ(got["replyClass"], "msg assistant");
  EXPECT_EQ(got["bubbles"], json::array({"msg user", "msg assistant"}));
  EXPECT_NE(got["header"].get<std::string>().find("stories260K"), std::string::npos) << got["header"];
  EXPECT_NE(got["stats"].get<std::string>().find("tokens/s"), std::string::npos) << got["stats"];
  EXPECT_NE(got["stats"].get<std::string>().find("MiB"), std::string::npos) << got["stats"];
}

// Bytes the C heap has handed out and not had back (glibc's count; sanitizer builds replace the
// allocator, and there LeakSanitizer checks for leaks at exit instead). mallinfo2 sees only the
// main arena, so every thread is made to use it before any starts.
[[maybe_unused]] const int kOneArena = ::mallopt(M_ARENA_MAX, 1);
size_t heap_in_use() { return ::mallinfo2().uordblks; }

TEST_F(ServerTest, AThousandBadRequestsLeaveTheServerAnsweringAndMemoryFlat) {
  auto c = s().client();
  const char* bodies[] = {"{", "[]", "{\"messages\":3}", "{\"prompt\":\"x\",\"n\":9}", "{\"prompt\":[99999]}"};
  for (int i = 0; i < 100; ++i) (void)post(*c, "/v1/completions", std::string(bodies[i % 5]));  // warm the allocator
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  ASSERT_EQ(kOneArena, 1) << "mallopt(M_ARENA_MAX, 1) failed";
#endif
  [[maybe_unused]] const size_t before = heap_in_use();
  for (int i = 0; i < 1000; ++i) {
    const auto r = post(*c, i % 2 ? "/v1/completions" : "/v1/chat/completions", std::string(bodies[i % 5]));
    ASSERT_TRUE(r.first == 400 || r.first == 404) << "request " << i << ": " << r.first;
  }
  [[maybe_unused]] const size_t after = heap_in_use();
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  EXPECT_LT(after, before + (1u << 20)) << "the heap grew from " << before << " to " << after << " bytes in use";
#endif
  const auto [st, j] = post(*c, "/v1/completions", json{{"prompt", "Once"}, {"max_tokens", 4}});
  EXPECT_EQ(st, 200) << j.dump();
}

// A client that sends half its headers and then nothing is dropped after the read timeout,
// while another client is served meanwhile.
TEST_F(ServerTest, SlowHeadersAreDroppedAfterTheReadTimeoutWhileOthersAreServed) {
  const int fd = connect_to(s().port);
  ASSERT_GE(fd, 0);
  const std::string half = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl";
  ASSERT_EQ(::send(fd, half.data(), half.size(), 0), static_cast<ssize_t>(half.size()));
  auto c = s().client();
  EXPECT_EQ(post(*c, "/v1/completions", json{{"prompt", "Once"}, {"max_tokens", 2}}).first, 200);
  char buf[256];
  ssize_t n = 0;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) {
  }
  EXPECT_EQ(n, 0) << "the server closes the connection (recv: " << std::strerror(errno) << ")";
  ::close(fd);
}

// With the scheduler held and a client gone: waits until the server has noticed (a job
// cancelled), releases the scheduler, and returns its counters once every slot is idle.
server::SchedulerStats release_when_cancelled(server::Scheduler& sched) {
  const auto t0 = std::chrono::steady_clock::now();
  while (sched.cancelled_pending() == 0 && std::chrono::steady_clock::now() - t0 < kHangGuard)
    std::this_thread::sleep_for(10ms);  // polls a condition; the bound is only a hang guard
  sched.hold(false);
  EXPECT_TRUE(sched.wait_idle(kHangGuard));
  return sched.stats();
}

TEST_F(ServerTest, AClientThatDisconnectsMidStreamFreesItsSlot) {
  server::Scheduler& sched = s().sched();
  ASSERT_TRUE(sched.wait_idle(kHangGuard));
  const auto before = sched.stats();
  auto c = s().client();
  size_t chunks = 0;
  const json body{{"prompt", "Once upon a time"}, {"max_tokens", 900}, {"ignore_eos", true}, {"stream", true}, {"temperature", 0}};
  (void)stream(*c, "/v1/completions", body, [&](const std::string&) {
    if (++chunks < 2) return true;
    sched.hold(true);  // the job cannot finish while the client leaves
    return false;      // closes the connection
  });
  c.reset();
  ASSERT_EQ(chunks, 2u);
  // The server notices at its next write (a token, or the keep-alive comment a second later).
  const auto after = release_when_cancelled(sched);
  EXPECT_EQ(after.jobs_cancelled - before.jobs_cancelled, 1u);
  EXPECT_EQ(after.active, 0u);
  EXPECT_LT(after.generated_tokens - before.generated_tokens, 900u) << "the job stopped when its client left";
  auto again = s().client();
  EXPECT_EQ(post(*again, "/v1/completions", json{{"prompt", "Once"}, {"max_tokens", 2}}).first, 200);
}

// A whole (non-streamed) reply is written as it comes too (a space per second of waiting), so a
// client that leaves before it is done frees its place as well: here while it is queued.
TEST_F(ServerTest, AClientThatLeavesBeforeAWholeReplyIsDoneFreesItsPlace) {
  server::Scheduler& sched = s().sched();
  ASSERT_TRUE(sched.wait_idle(kHangGuard));
  const auto before = sched.stats();
  sched.hold(true);
  const int fd = connect_to(s().port);
  ASSERT_GE(fd, 0);
  const std::string body = json{{"prompt", "Once upon a time"}, {"max_tokens", 900}, {"ignore_eos", true}}.dump();
  const std::string request = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " +
                              std::string(kKey) + "\r\nContent-Type: application/json\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
  ASSERT_TRUE(sched.wait_queued(1, kHangGuard));
  ::close(fd);
  const auto after = release_when_cancelled(sched);
  EXPECT_EQ(after.jobs_cancelled - before.jobs_cancelled, 1u);
  EXPECT_EQ(after.generated_tokens, before.generated_tokens) << "nothing was generated for a client that left";
}

TEST_F(ServerTest, MoreClientsThanSlotsAndQueueGet503) {
  server::Scheduler& sched = s().sched();
  ASSERT_TRUE(sched.wait_idle(kHangGuard));
  sched.hold(true);
  const uint32_t capacity = 4 + 4;  // slots + --queue
  std::vector<std::thread> waiting;
  std::vector<int> statuses(capacity, 0);
  for (uint32_t i = 0; i < capacity; ++i)
    waiting.emplace_back([&, i] {
      auto c = s().client();
      statuses[i] = post(*c, "/v1/completions", json{{"prompt", "Once"}, {"max_tokens", 2}}).first;
    });
  ASSERT_TRUE(sched.wait_queued(capacity, kHangGuard));
  auto c = s().client();
  expect_error(post(*c, "/v1/completions", json{{"prompt", "Once"}, {"max_tokens", 2}}), 503, "server_busy", "over capacity");
  sched.hold(false);
  for (auto& t : waiting) t.join();
  for (uint32_t i = 0; i < capacity; ++i) EXPECT_EQ(statuses[i], 200) << "queued request " << i;
}

// Four streams decoded together on a tensor split over device 0 opened twice: every step is
// one forward pass and one vkQueueSubmit per device, whatever the number of active slots, and
// each stream's greedy text equals the one it gets alone.
TEST_F(ServerTest, FourConcurrentStreamsOnATensorSplitCostOneSubmitPerDevicePerStep) {
  std::vector<vk::Device*> devices{&test::device(0), &test::device(1)};
  auto model = Model::load(stories_path(), devices, split::SplitRequest{split::SplitMode::tensor, {1.0, 1.0}, 0});
  Served split(std::move(model), default_options());
  server::Scheduler& sched = split.sched();
  const char* prompts[] = {"Once upon a time", "The little dog", "Lily and Ben went", "One day, a bird"};
  constexpr int kTokens = 16;
  std::vector<std::string> alone(4);
  for (int i = 0; i < 4; ++i) {
    auto c = split.client();
    const auto [st, j] = post(*c, "/v1/completions",
                              json{{"prompt", prompts[i]}, {"max_tokens", kTokens}, {"temperature", 0}, {"ignore_eos", true}});
    ASSERT_EQ(st, 200);
    alone[i] = j["choices"][0]["text"];
  }
  ASSERT_TRUE(sched.wait_idle(kHangGuard));
  // (Each prompt finds its cached slot again: a one-token prefill each, all in the first step.)
  sched.hold(true);
  const auto before = sched.stats();
  std::vector<uint64_t> submits0;
  for (vk::Device* d : devices) submits0.push_back(d->counters().submits.load());
  std::vector<std::vector<std::string>> events(4);
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i)
    clients.emplace_back([&, i] {
      auto c = split.client();
      events[i] = stream(*c, "/v1/completions",
                         json{{"prompt", prompts[i]}, {"max_tokens", kTokens}, {"temperature", 0}, {"ignore_eos", true}, {"stream", true}});
    });
  ASSERT_TRUE(sched.wait_queued(4, kHangGuard));
  sched.hold(false);
  for (auto& t : clients) t.join();
  ASSERT_TRUE(sched.wait_idle(kHangGuard));
  const auto after = sched.stats();
  for (int i = 0; i < 4; ++i) {
    ASSERT_FALSE(events[i].empty());
    EXPECT_EQ(events[i].back(), "[DONE]") << "stream " << i;
    EXPECT_EQ(json::parse(events[i][events[i].size() - 2])["usage"]["completion_tokens"], kTokens);
    EXPECT_EQ(streamed_text(events[i]), alone[i]) << "stream " << i << " differs from its run alone";
  }
  const uint64_t steps = after.steps - before.steps;
  // All four start in the same step (one prefill of the four prompts), then decode together.
  EXPECT_EQ(steps, static_cast<uint64_t>(kTokens));
  EXPECT_EQ(after.steps_full - before.steps_full, steps) << "every step carried all four slots";
  EXPECT_EQ(after.context.forward_passes - before.context.forward_passes, steps) << "one forward pass per step";
  for (size_t d = 0; d < devices.size(); ++d)
    EXPECT_EQ(devices[d]->counters().submits.load() - submits0[d], steps) << "vkQueueSubmit calls of device " << d;
  ASSERT_TRUE(after.collective.has_value()) << "a tensor split reduces through the collective";
  EXPECT_EQ(after.collective->reduce_submits, 0u);
  // Embeddings read the hidden state on the split as on one device (to rounding).
  auto c1 = s().client();
  auto c2 = split.client();
  const json body{{"input", "Lily and Ben went to the park"}};
  const auto one = post(*c1, "/v1/embeddings", body).second["data"][0]["embedding"].get<std::vector<float>>();
  const auto two = post(*c2, "/v1/embeddings", body).second["data"][0]["embedding"].get<std::vector<float>>();
  EXPECT_LT(test::nmse(one, two), 1e-6) << "largest difference " << test::max_abs_diff(one, two);  // the reduce sums in another order
}

// A real chat template (SmolLM2's ChatML, with its own special tokens): the server's greedy reply
// equals ChatSession's (engine/chat.h, the terminal chat's engine) for the same conversation.
using ServerSmolLM2 = test::GpuTest;

TEST_F(ServerSmolLM2, ChatRepliesAsChatSessionDoesWithTheModelsOwnTemplate) {
  const std::string path = test::fetched_model("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2");
  const gguf::File f = gguf::File::open(path);
  const Tokenizer tok(load_vocab(f));
  const ModelChatFormat format = model_chat_format(f);
  ASSERT_NE(format.chat_template.find("<|im_start|>"), std::string::npos);
  auto model = Model::load(path, test::device(0));
  std::string want;
  {
    Context ctx(*model, ContextOptions{512, 1, 512});
    ChatOptions co;
    co.system = "You are a helpful assistant.";
    co.sampling.temp = 0;
    co.max_tokens = 12;
    ChatSession chat(ctx, tok, format, co);
    chat.send("What is the capital of France?", [&](std::string_view t) { want += t; });
  }
  server::ServerOptions o = default_options();
  o.model_name = "smol";
  o.scheduler.n_slots = 1;
  o.scheduler.n_ctx = 512;
  server::Server srv(o);
  const int port = srv.start();
  srv.attach(*model, tok, format);
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(kHangGuard);
  c.set_default_headers({{"Authorization", std::string("Bearer ") + kKey}});
  const auto [st, j] = post(c, "/v1/chat/completions",
                            json{{"model", "smol"},
                                 {"messages", {{{"role", "system"}, {"content", "You are a helpful assistant."}},
                                               {{"role", "user"}, {"content", "What is the capital of France?"}}}},
                                 {"temperature", 0},
                                 {"max_tokens", 12}});
  ASSERT_EQ(st, 200) << j.dump();
  EXPECT_EQ(j["choices"][0]["message"]["content"], want);
  EXPECT_NE(want.find("Paris"), std::string::npos) << want;
  srv.stop();
  srv.wait();
}

}  // namespace
}  // namespace chorus
