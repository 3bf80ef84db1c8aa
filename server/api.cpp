#include "server/api.h"

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <limits>

namespace chorus::server {

using nlohmann::json;

namespace {

ApiError invalid(const std::string& message, const std::string& code = "invalid_request") {
  return ApiError(400, message, "invalid_request_error", code);
}

std::string type_name(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

// Optional typed fields of a request object: absent or null gives the default.
const json* field(const json& body, const char* key) {
  const auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

double number(const json& body, const char* key, double def, double lo, double hi) {
  const json* v = field(body, key);
  if (!v) return def;
  if (!v->is_number()) throw invalid(std::string("'") + key + "' must be a number, got " + type_name(*v));
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi))
    throw invalid(std::string("'") + key + "' must be between " + json(lo).dump() + " and " + json(hi).dump() + ", got " +
                  v->dump());
  return x;
}

int64_t integer(const json& body, const char* key, int64_t def, int64_t lo, int64_t hi) {
  const json* v = field(body, key);
  if (!v) return def;
  if (!v->is_number_integer()) throw invalid(std::string("'") + key + "' must be an integer, got " + type_name(*v) + " " + v->dump());
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    throw invalid(std::string("'") + key + "' is too large");
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi)
    throw invalid(std::string("'") + key + "' must be from " + std::to_string(lo) + " to " + std::to_string(hi) + ", got " +
                  std::to_string(x));
  return x;
}

bool boolean(const json& body, const char* key, bool def) {
  const json* v = field(body, key);
  if (!v) return def;
  if (!v->is_boolean()) throw invalid(std::string("'") + key + "' must be true or false, got " + type_name(*v));
  return v->get<bool>();
}

std::atomic<uint64_t> g_next_id{1};

std::string new_id(const char* prefix) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%s-%016" PRIx64, prefix, g_next_id.fetch_add(1));
  return buf;
}

json bytes_json(const std::string& s) {
  json b = json::array();
  for (const unsigned char c : s) b.push_back(c);
  return b;
}

// The sampling and stopping fields shared by chat and completions.
GenerationParams generation_params(const json& body, bool chat) {
  GenerationParams p;
  if (integer(body, "n", 1, 1, 128) != 1)
    throw invalid("'n' must be 1: chorus generates one choice per request (send several requests for several choices)",
                  "unsupported_parameter");
  if (boolean(body, "echo", false)) throw invalid("'echo' is not supported", "unsupported_parameter");
  if (field(body, "best_of") && integer(body, "best_of", 1, 1, 128) != 1)
    throw invalid("'best_of' must be 1", "unsupported_parameter");
  const int64_t max_tokens = integer(body, chat && field(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens",
                                     chat ? -1 : 16, 1, 1 << 24);
  p.max_tokens = static_cast<int32_t>(max_tokens);
  p.sampling.temp = static_cast<float>(number(body, "temperature", 1.0, 0.0, 2.0));
  p.sampling.top_p = static_cast<float>(number(body, "top_p", 1.0, 0.0, 1.0));
  p.sampling.top_k = static_cast<int32_t>(integer(body, "top_k", 0, 0, std::numeric_limits<int32_t>::max()));
  p.sampling.min_p = static_cast<float>(number(body, "min_p", 0.0, 0.0, 1.0));
  p.sampling.repeat_penalty = 1.0f;
  p.ignore_eos = boolean(body, "ignore_eos", false);
  p.presence_penalty = static_cast<float>(number(body, "presence_penalty", 0.0, -2.0, 2.0));
  p.frequency_penalty = static_cast<float>(number(body, "frequency_penalty", 0.0, -2.0, 2.0));
  if (const json* seed = field(body, "seed")) {
    if (!seed->is_number_integer()) throw invalid("'seed' must be an integer, got " + type_name(*seed));
    p.sampling.seed = seed->is_number_unsigned() ? seed->get<uint64_t>() : static_cast<uint64_t>(seed->get<int64_t>());
  } else {
    p.sampling.seed = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  if (const json* stop = field(body, "stop")) {
    if (stop->is_string()) {
      p.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      if (stop->size() > 16) throw invalid("'stop' may hold at most 16 strings");
      for (const json& s : *stop) {
        if (!s.is_string()) throw invalid("'stop' must be a string or an array of strings");
        p.stop.push_back(s.get<std::string>());
      }
    } else {
      throw invalid("'stop' must be a string or an array of strings, got " + type_name(*stop));
    }
    for (const std::string& s : p.stop)
      if (s.empty()) throw invalid("'stop' strings must not be empty");
  }
  if (chat) {
    p.logprobs = boolean(body, "logprobs", false);
    p.top_logprobs = static_cast<uint32_t>(integer(body, "top_logprobs", 0, 0, 20));
    if (p.top_logprobs > 0 && !p.logprobs) throw invalid("'top_logprobs' needs 'logprobs': true");
  } else if (const json* lp = field(body, "logprobs")) {
    if (!lp->is_number_integer()) throw invalid("'logprobs' must be an integer from 0 to 5 for completions");
    p.logprobs = true;
    p.top_logprobs = static_cast<uint32_t>(integer(body, "logprobs", 0, 0, 5));
  }
  return p;
}

// The text of a message's content: a string, or a list of {"type":"text","text":...} parts.
std::string message_content(const json& m, size_t index) {
  const json* c = field(m, "content");
  if (!c) return "";
  if (c->is_string()) return c->get<std::string>();
  if (c->is_array()) {
    std::string text;
    for (const json& part : *c) {
      if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") ||
          !part["text"].is_string())
        throw invalid("messages[" + std::to_string(index) + "].content: only text parts ({\"type\":\"text\",\"text\":...}) are "
                      "supported");
      text += part["text"].get<std::string>();
    }
    return text;
  }
  throw invalid("messages[" + std::to_string(index) + "].content must be a string or an array of text parts, got " +
                type_name(*c));
}

}  // namespace

json error_body(const ApiError& e) {
  return json{{"error", {{"message", e.what()}, {"type", e.type}, {"code", e.code}}}};
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json parse_request_json(std::string_view body) {
  // nlohmann's parser is iterative, but bound the nesting anyway: nothing valid nests deeply.
  int depth = 0;
  bool in_string = false, escaped = false;
  for (const char ch : body) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (ch == '\\') escaped = true;
      else if (ch == '"') in_string = false;
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      if (++depth > 64) throw invalid("the request body nests more than 64 levels deep", "invalid_json");
    } else if (ch == ']' || ch == '}') {
      --depth;
    }
  }
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    throw invalid(std::string("the request body is not valid JSON: ") + e.what(), "invalid_json");
  }
  if (!j.is_object()) throw invalid("the request body must be a JSON object, got " + type_name(j), "invalid_json");
  return j;
}

std::string base64(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t v = 0;
    for (size_t k = 0; k < 3; ++k) v = (v << 8) | (k < n ? static_cast<unsigned char>(bytes[i + k]) : 0u);
    for (size_t k = 0; k < 4; ++k) out += k <= n ? kAlphabet[(v >> (18 - 6 * k)) & 63] : '=';
  }
  return out;
}

// ---- Reply -----------------------------------------------------------------------------------

Reply::Reply(std::shared_ptr<Job> job, bool chat, bool stream, const std::string& model, bool logprobs)
    : job_(std::move(job)), chat_(chat), stream_(stream), logprobs_(logprobs), id_(new_id(chat ? "chatcmpl" : "cmpl")),
      model_(model), created_(static_cast<int64_t>(std::time(nullptr))) {}

json Reply::usage_json(const Usage& u) const {
  return json{{"prompt_tokens", u.prompt_tokens},
              {"completion_tokens", u.completion_tokens},
              {"total_tokens", u.prompt_tokens + u.completion_tokens},
              {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}

json Reply::logprobs_json(const std::vector<TokenLogprob>& lps) const {
  if (chat_) {
    json content = json::array();
    for (const TokenLogprob& t : lps) {
      json top = json::array();
      for (const TopLogprob& a : t.top) top.push_back({{"token", a.token}, {"logprob", a.logprob}, {"bytes", bytes_json(a.token)}});
      content.push_back({{"token", t.token}, {"logprob", t.logprob}, {"bytes", bytes_json(t.token)}, {"top_logprobs", top}});
    }
    return json{{"content", content}};
  }
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(), offsets = json::array();
  size_t offset = text_offset_;
  for (const TokenLogprob& t : lps) {
    tokens.push_back(t.token);
    token_logprobs.push_back(t.logprob);
    json alternatives = json::object();
    for (const TopLogprob& a : t.top) alternatives[a.token] = a.logprob;
    top.push_back(alternatives);
    offsets.push_back(offset);
    offset += t.token.size();
  }
  return json{{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top}, {"text_offset", offsets}};
}

json Reply::chunk(const json& choice) const {
  return json{{"id", id_},
              {"object", chat_ ? "chat.completion.chunk" : "text_completion"},
              {"created", created_},
              {"model", model_},
              {"choices", json::array({choice})}};
}

bool Reply::next_whole(std::string& out) {
  if (finished_) return false;
  std::vector<Event> events;
  if (!job_->next(events, std::chrono::seconds(1))) {
    out += ' ';  // JSON allows leading whitespace: a closed connection fails the write
    return true;
  }
  for (Event& e : events) {
    whole_text_ += e.text;
    whole_logprobs_.insert(whole_logprobs_.end(), e.logprobs.begin(), e.logprobs.end());
    if (!e.done) continue;
    finished_ = true;
    if (!e.error.empty()) {  // the status (200) is sent already: the body says what happened
      out += dump(error_body(ApiError(500, e.error, "server_error", "generation_failed")));
      return false;
    }
    json choice{{"index", 0},
                {"finish_reason", e.finish_reason},
                {"logprobs", logprobs_ ? logprobs_json(whole_logprobs_) : json(nullptr)}};
    if (chat_)
      choice["message"] = {{"role", "assistant"}, {"content", whole_text_}};
    else
      choice["text"] = whole_text_;
    out += dump(json{{"id", id_},
                     {"object", chat_ ? "chat.completion" : "text_completion"},
                     {"created", created_},
                     {"model", model_},
                     {"choices", json::array({choice})},
                     {"usage", usage_json(e.usage)}});
    return false;
  }
  return true;
}

bool Reply::next_sse(std::string& out) {
  if (finished_) return false;
  const auto event = [&](const json& j) { out += "data: " + dump(j) + "\n\n"; };
  if (!started_ && chat_) {  // OpenAI's first chunk names the role
    event(chunk({{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}}));
  }
  started_ = true;
  std::vector<Event> events;
  if (!job_->next(events, std::chrono::seconds(1))) {
    out += ": waiting\n\n";  // an SSE comment: clients ignore it; a closed connection fails the write
    return true;
  }
  for (Event& e : events) {
    if (!e.text.empty() || !e.logprobs.empty()) {
      json choice{{"index", 0}, {"finish_reason", nullptr}, {"logprobs", logprobs_ ? logprobs_json(e.logprobs) : json(nullptr)}};
      if (chat_)
        choice["delta"] = {{"content", e.text}};
      else
        choice["text"] = e.text;
      event(chunk(choice));
      for (const TokenLogprob& t : e.logprobs) text_offset_ += t.token.size();
    }
    if (!e.done) continue;
    if (!e.error.empty()) {
      event(error_body(ApiError(500, e.error, "server_error", "generation_failed")));
    } else {
      json choice{{"index", 0}, {"finish_reason", e.finish_reason}, {"logprobs", nullptr}};
      if (chat_)
        choice["delta"] = json::object();
      else
        choice["text"] = "";
      json last = chunk(choice);
      last["usage"] = usage_json(e.usage);
      event(last);
    }
    out += "data: [DONE]\n\n";
    finished_ = true;
    return false;
  }
  return true;
}

// ---- Api -------------------------------------------------------------------------------------

Api::Api(Model& model, const Tokenizer& tok, const ModelChatFormat& format, Scheduler& scheduler, std::string model_name)
    : model_(model), tok_(tok), format_(format), template_(ChatTemplate::parse(format.chat_template)), scheduler_(scheduler),
      model_name_(std::move(model_name)), created_(static_cast<int64_t>(std::time(nullptr))) {}

void Api::check_model(const json& body) const {
  const json* m = field(body, "model");
  if (!m) return;
  if (!m->is_string()) throw invalid("'model' must be a string, got " + type_name(*m));
  if (m->get<std::string>() != model_name_)
    throw ApiError(404, "the model '" + m->get<std::string>() + "' does not exist; this server serves '" + model_name_ + "'",
                   "invalid_request_error", "model_not_found");
}

std::vector<TokenId> Api::checked_prompt(std::vector<TokenId> tokens, const char* what) const {
  if (tokens.empty()) throw invalid(std::string("the ") + what + " is empty");
  if (tokens.size() >= scheduler_.n_ctx())
    throw invalid(std::string("the ") + what + " has " + std::to_string(tokens.size()) + " tokens but a slot's context holds " +
                      std::to_string(scheduler_.n_ctx()) + " (room is needed for at least one generated token); shorten it, or "
                      "start the server with a larger -c or fewer slots (-np)",
                  "context_length_exceeded");
  return tokens;
}

std::vector<TokenId> Api::chat_prompt(const json& messages) const {
  if (!messages.is_array() || messages.empty()) throw invalid("'messages' must be a non-empty array");
  std::vector<ChatMessage> list;
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    if (!m.is_object()) throw invalid("messages[" + std::to_string(i) + "] must be an object");
    const json* role = field(m, "role");
    if (!role || !role->is_string())
      throw invalid("messages[" + std::to_string(i) + "].role must be a string (\"system\", \"user\", \"assistant\", ...)");
    list.push_back({role->get<std::string>(), message_content(m, i)});
  }
  ChatTemplateOptions o;
  o.bos_token = format_.bos_token;
  o.eos_token = format_.eos_token;
  std::string text;
  try {
    text = template_.render(list, o);
  } catch (const TemplateError& e) {
    throw invalid(std::string("the model's chat template refused these messages: ") + e.what(), "invalid_messages");
  }
  // The template writes the BOS token's text itself, or the vocabulary adds BOS: not both.
  const bool has_bos = !o.bos_token.empty() && text.compare(0, o.bos_token.size(), o.bos_token) == 0;
  return tok_.encode(text, EncodeOptions{!has_bos, true});
}

std::shared_ptr<Reply> Api::start(Endpoint endpoint, const json& body) {
  check_model(body);
  const bool chat = endpoint == Endpoint::chat;
  const GenerationParams params = generation_params(body, chat);
  const bool stream = boolean(body, "stream", false);
  std::vector<TokenId> prompt;
  if (chat) {
    const json* messages = field(body, "messages");
    if (!messages) throw invalid("'messages' is required", "missing_field");
    prompt = checked_prompt(chat_prompt(*messages), "conversation");
  } else {
    const json* p = field(body, "prompt");
    if (!p) throw invalid("'prompt' is required", "missing_field");
    const json* one = p;
    if (p->is_array() && p->size() == 1 && ((*p)[0].is_string() || (*p)[0].is_array())) one = &(*p)[0];
    if (one->is_string()) {
      prompt = tok_.encode(one->get<std::string>(), EncodeOptions{true, true});
    } else if (one->is_array() && !one->empty()) {
      for (const json& t : *one) {
        if (!t.is_number_integer() || !tok_.vocab().valid(t.get<int64_t>() > std::numeric_limits<TokenId>::max() ? -1 : t.get<TokenId>()))
          throw invalid("'prompt' token ids must be integers from 0 to " + std::to_string(tok_.vocab().n_tokens() - 1));
        prompt.push_back(t.get<TokenId>());
      }
    } else {
      throw invalid("'prompt' must be a string, an array of token ids, or an array holding one of them (one prompt per "
                    "request)");
    }
    prompt = checked_prompt(std::move(prompt), "prompt");
  }
  try {
    return std::make_shared<Reply>(scheduler_.generate(std::move(prompt), params), chat, stream, model_name_, params.logprobs);
  } catch (const QueueFull& e) {
    throw ApiError(503, std::string("the server is busy: ") + e.what(), "unavailable_error", "server_busy");
  }
}

json Api::embeddings(const json& body) {
  check_model(body);
  const json* input = field(body, "input");
  if (!input) throw invalid("'input' is required", "missing_field");
  std::string format = "float";
  if (const json* f = field(body, "encoding_format")) {
    if (!f->is_string() || (*f != "float" && *f != "base64"))
      throw invalid("'encoding_format' must be \"float\" or \"base64\"");
    format = f->get<std::string>();
  }
  if (field(body, "dimensions")) throw invalid("'dimensions' is not supported", "unsupported_parameter");
  // The inputs: a string, an array of strings, an array of token ids, or an array of those.
  std::vector<std::vector<TokenId>> inputs;
  const auto add = [&](const json& v) {
    if (v.is_string()) {
      inputs.push_back(tok_.encode(v.get<std::string>(), EncodeOptions{true, false}));
    } else if (v.is_array() && !v.empty() && v[0].is_number_integer()) {
      std::vector<TokenId> ids;
      for (const json& t : v) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= int64_t{tok_.vocab().n_tokens()})
          throw invalid("'input' token ids must be integers from 0 to " + std::to_string(tok_.vocab().n_tokens() - 1));
        ids.push_back(t.get<TokenId>());
      }
      inputs.push_back(std::move(ids));
    } else {
      throw invalid("'input' must be a string, an array of strings, an array of token ids, or an array of those");
    }
  };
  if (input->is_array() && !input->empty() && !(*input)[0].is_number_integer()) {
    if (input->size() > 256) throw invalid("'input' may hold at most 256 items");
    for (const json& v : *input) add(v);
  } else {
    add(*input);
  }
  std::vector<std::shared_ptr<Job>> jobs;
  for (auto& ids : inputs) {
    checked_prompt(ids, "input");
  }
  json data = json::array();
  size_t prompt_tokens = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    std::shared_ptr<Job> job;
    try {
      job = scheduler_.embed(inputs[i]);
    } catch (const QueueFull& e) {
      throw ApiError(503, std::string("the server is busy: ") + e.what(), "unavailable_error", "server_busy");
    }
    std::vector<Event> events;
    while (events.empty() || !events.back().done) job->next(events, std::chrono::seconds(1));
    const Event& e = events.back();
    if (!e.error.empty()) throw ApiError(500, e.error, "server_error", "embedding_failed");
    // Mean pooling, then unit length (cosine similarity is then a dot product).
    std::vector<float> v = e.embedding;
    double norm = 0;
    for (const float x : v) norm += double(x) * x;
    norm = std::sqrt(norm);
    if (norm > 0)
      for (float& x : v) x = static_cast<float>(x / norm);
    json item{{"object", "embedding"}, {"index", i}};
    if (format == "base64")
      item["embedding"] = base64(std::string_view(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)));
    else
      item["embedding"] = v;
    data.push_back(item);
    prompt_tokens += inputs[i].size();
  }
  return json{{"object", "list"},
              {"data", data},
              {"model", model_name_},
              {"usage", {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}};
}

json Api::tokenize(const json& body) const {
  const json* content = field(body, "content");
  if (!content || !content->is_string()) throw invalid("'content' must be a string", content ? "invalid_type" : "missing_field");
  const bool add_special = boolean(body, "add_special", false);
  const bool parse_special = boolean(body, "parse_special", true);
  const bool with_pieces = boolean(body, "with_pieces", false);
  const std::vector<TokenId> ids = tok_.encode(content->get<std::string>(), EncodeOptions{add_special, parse_special});
  json tokens = json::array();
  for (const TokenId t : ids) {
    if (with_pieces)
      tokens.push_back({{"id", t}, {"piece", tok_.piece(t, true)}});
    else
      tokens.push_back(t);
  }
  return json{{"tokens", tokens}};
}

json Api::detokenize(const json& body) const {
  const json* tokens = field(body, "tokens");
  if (!tokens || !tokens->is_array()) throw invalid("'tokens' must be an array of token ids", tokens ? "invalid_type" : "missing_field");
  std::vector<TokenId> ids;
  for (const json& t : *tokens) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= int64_t{tok_.vocab().n_tokens()})
      throw invalid("'tokens' must hold integers from 0 to " + std::to_string(tok_.vocab().n_tokens() - 1) + ", got " + t.dump());
    ids.push_back(t.get<TokenId>());
  }
  return json{{"content", tok_.decode(ids)}};
}

json Api::models() const {
  const ModelConfig& c = model_.config();
  json devices = json::array();
  for (size_t i = 0; i < model_.n_devices(); ++i) devices.push_back(model_.device(i).label());
  return json{{"object", "list"},
              {"data", json::array({{{"id", model_name_},
                                     {"object", "model"},
                                     {"created", created_},
                                     {"owned_by", "chorus"},
                                     {"meta",
                                      {{"arch", c.arch},
                                       {"n_vocab", c.n_vocab},
                                       {"n_embd", c.n_embd},
                                       {"n_ctx_slot", scheduler_.n_ctx()},
                                       {"n_slots", scheduler_.n_slots()},
                                       {"devices", devices}}}}})}};
}

std::string Api::metrics(const std::map<int, uint64_t>& statuses) const {
  const SchedulerStats s = scheduler_.stats();
  std::string out;
  const auto metric = [&](const char* name, const char* type, const char* help, const std::string& samples) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + samples;
  };
  const auto sample = [](const char* name, double v, const std::string& labels = {}) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return std::string(name) + (labels.empty() ? "" : "{" + labels + "}") + " " + buf + "\n";
  };
  const auto one = [&](const char* name, const char* type, const char* help, double v) {
    metric(name, type, help, sample(name, v));
  };
  one("chorus_prompt_tokens_total", "counter", "Prompt tokens evaluated.", static_cast<double>(s.prompt_tokens));
  one("chorus_prompt_tokens_cached_total", "counter", "Prompt tokens reused from a slot's KV cache.",
      static_cast<double>(s.cached_tokens));
  one("chorus_generated_tokens_total", "counter", "Tokens generated.", static_cast<double>(s.generated_tokens));
  one("chorus_requests_started_total", "counter", "Jobs given a slot.", static_cast<double>(s.jobs_started));
  one("chorus_requests_finished_total", "counter", "Jobs that ran to their end.", static_cast<double>(s.jobs_finished));
  one("chorus_requests_cancelled_total", "counter", "Jobs whose client went away.", static_cast<double>(s.jobs_cancelled));
  one("chorus_requests_rejected_total", "counter", "Requests refused because every slot and the queue were full.",
      static_cast<double>(s.rejected_full));
  std::string by_status;
  for (const auto& [status, n] : statuses)
    by_status += sample("chorus_http_responses_total", static_cast<double>(n), "status=\"" + std::to_string(status) + "\"");
  metric("chorus_http_responses_total", "counter", "HTTP responses by status.", by_status);
  one("chorus_slots", "gauge", "Parallel slots (-np).", s.slots);
  one("chorus_slots_active", "gauge", "Slots serving a request.", s.active);
  one("chorus_queue_depth", "gauge", "Requests waiting for a slot.", s.queued);
  one("chorus_steps_total", "counter", "Scheduler steps (one decode call over every active slot).", static_cast<double>(s.steps));
  one("chorus_forward_passes_total", "counter", "Forward passes run.", static_cast<double>(s.context.forward_passes));
  one("chorus_host_waits_total", "counter", "Waits of the scheduler thread for the devices.",
      static_cast<double>(s.context.host_waits));
  std::string submits, memory;
  for (size_t i = 0; i < model_.n_devices(); ++i) {
    vk::Device& d = model_.device(i);
    const double n = static_cast<double>(d.counters().submits.load());
    const std::string label = "device=\"" + std::to_string(i) + "\",name=\"" + d.label() + "\"";
    submits += sample("chorus_device_submits_total", n, label);
  }
  metric("chorus_device_submits_total", "counter", "vkQueueSubmit calls per device.", submits);
  const double passes = static_cast<double>(s.context.forward_passes);
  std::string per_pass;
  for (size_t i = 0; i < model_.n_devices(); ++i)
    per_pass += sample("chorus_device_submits_per_forward_pass", passes > 0 ? static_cast<double>(model_.device(i).counters().submits.load()) / passes : 0,
                       "device=\"" + std::to_string(i) + "\"");
  metric("chorus_device_submits_per_forward_pass", "gauge", "vkQueueSubmit calls per device per forward pass (1 is the budget).",
         per_pass);
  for (size_t i = 0; i < s.memory.size(); ++i) {
    const DeviceMemoryUse& u = s.memory[i];
    const std::string d = "device=\"" + std::to_string(i) + "\",name=\"" + u.device + "\",kind=";
    memory += sample("chorus_device_memory_bytes", static_cast<double>(u.weights), d + "\"weights\"");
    memory += sample("chorus_device_memory_bytes", static_cast<double>(u.kv_cache), d + "\"kv_cache\"");
    memory += sample("chorus_device_memory_bytes", static_cast<double>(u.scratch), d + "\"scratch\"");
  }
  metric("chorus_device_memory_bytes", "gauge", "Device memory held, by device and kind.", memory);
  if (s.collective) {
    one("chorus_reduces_total", "counter", "Reduce points completed by the collective.", static_cast<double>(s.collective->reduces));
    one("chorus_reduce_latency_p50_seconds", "gauge", "Median reduce latency of the collective (recent reduces).",
        s.reduce_p50_us * 1e-6);
  }
  return out;
}

}  // namespace chorus::server
