#include "engine/chat.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace chorus {
namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

ChatSession::ChatSession(Context& ctx, const Tokenizer& tok, const ModelChatFormat& format, ChatOptions options)
    : ctx_(ctx), tok_(tok), template_(ChatTemplate::parse(format.chat_template)), options_(std::move(options)),
      sampler_(options_.sampling) {
  if (options_.seq >= ctx.n_seq())
    throw std::invalid_argument("chat: sequence " + std::to_string(options_.seq) + " does not exist in the context");
  template_options_.bos_token = format.bos_token;
  template_options_.eos_token = format.eos_token;
  clear();
}

void ChatSession::clear() {
  messages_.clear();
  if (!options_.system.empty()) messages_.push_back({"system", options_.system});
}

void ChatSession::set_messages(std::vector<ChatMessage> messages) {
  messages_ = std::move(messages);
  if (!messages_.empty() && messages_.front().role == "system") options_.system = messages_.front().content;
}

std::string ChatSession::render(bool add_generation_prompt) const {
  ChatTemplateOptions o = template_options_;
  o.add_generation_prompt = add_generation_prompt;
  return template_.render(messages_, o);
}

std::vector<TokenId> ChatSession::prompt_tokens() const {
  const std::string text = render(true);
  // The template writes the BOS token's text itself, or the vocabulary adds BOS: not both.
  const std::string& bos = template_options_.bos_token;
  const bool has_bos = !bos.empty() && text.compare(0, bos.size(), bos) == 0;
  return tok_.encode(text, EncodeOptions{!has_bos, true});
}

uint32_t ChatSession::context_used() const { return ctx_.length(options_.seq); }
uint32_t ChatSession::context_size() const { return ctx_.n_ctx(); }

ChatTurnStats ChatSession::send(std::string_view user, const std::function<void(std::string_view)>& on_text,
                                const std::atomic<bool>* stop) {
  messages_.push_back({"user", std::string(user)});
  try {
    return generate(on_text, stop);
  } catch (...) {
    messages_.pop_back();  // the turn did not happen
    throw;
  }
}

ChatTurnStats ChatSession::regenerate(const std::function<void(std::string_view)>& on_text, const std::atomic<bool>* stop) {
  if (messages_.empty() || messages_.back().role != "assistant")
    throw std::logic_error("there is no reply to regenerate yet");
  const ChatMessage last = messages_.back();
  messages_.pop_back();
  try {
    return generate(on_text, stop);
  } catch (...) {
    messages_.push_back(last);
    throw;
  }
}

ChatTurnStats ChatSession::generate(const std::function<void(std::string_view)>& on_text, const std::atomic<bool>* stop) {
  ChatTurnStats st;
  const uint32_t n_ctx = ctx_.n_ctx(), seq = options_.seq;
  std::vector<TokenId> prompt = prompt_tokens();
  // A prompt must leave room for at least one generated token.
  while (prompt.size() + 1 > n_ctx) {
    const size_t first = !messages_.empty() && messages_.front().role == "system" ? 1 : 0;
    if (!options_.context_shift || messages_.size() - first <= 1)
      throw ContextFullError("the conversation needs " + std::to_string(prompt.size() + 1) + " tokens but the context holds " +
                             std::to_string(n_ctx) + (options_.context_shift ? " even with only the newest turn"
                                                                              : "; /clear starts afresh (or use --context-shift, or a larger -c)"));
    messages_.erase(messages_.begin() + static_cast<std::ptrdiff_t>(first));  // the oldest turn after the system prompt
    ++st.dropped_messages;
    prompt = prompt_tokens();
  }

  // Reuse what the cache holds of this prompt; evaluate at least the last token for its logits.
  size_t keep = std::mismatch(cached_.begin(), cached_.end(), prompt.begin(), prompt.end()).first - cached_.begin();
  keep = std::min({keep, prompt.size() - 1, static_cast<size_t>(ctx_.length(seq))});
  ctx_.truncate(seq, static_cast<uint32_t>(keep));
  cached_.assign(prompt.begin(), prompt.begin() + static_cast<std::ptrdiff_t>(keep));
  st.reused_tokens = keep;
  st.prompt_tokens = prompt.size() - keep;

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<float> logits = ctx_.decode(seq, std::span<const TokenId>(prompt).subspan(keep));
  cached_ = prompt;
  st.prompt_ms = ms_since(t0);

  for (const TokenId t : prompt) sampler_.accept(t);
  Detokenizer detok(tok_);
  for (const TokenId t : prompt) detok.push(t);  // so the reply's first piece keeps its space
  std::string reply;
  const auto emit = [&](const std::string& text) {
    if (text.empty()) return;
    reply += text;
    if (on_text) on_text(text);
  };
  const auto t1 = std::chrono::steady_clock::now();
  st.stop = "end of generation";
  for (;;) {
    if (stop && stop->load()) {
      st.stop = "stopped";
      break;
    }
    const TokenId next = sampler_.sample(logits);
    if (tok_.vocab().is_eog(next)) break;
    sampler_.accept(next);
    ++st.generated;
    emit(detok.push(next));
    if (options_.max_tokens >= 0 && st.generated >= static_cast<size_t>(options_.max_tokens)) {
      st.stop = "token limit";
      break;
    }
    if (ctx_.length(seq) >= n_ctx) {
      st.stop = "full context";
      break;
    }
    logits = ctx_.decode(seq, std::span<const TokenId>(&next, 1));
    cached_.push_back(next);
  }
  emit(detok.flush());
  st.generation_ms = ms_since(t1);
  messages_.push_back({"assistant", reply});
  return st;
}

std::string ChatSession::to_json() const {
  nlohmann::json messages = nlohmann::json::array();
  for (const ChatMessage& m : messages_) messages.push_back({{"role", m.role}, {"content", m.content}});
  return nlohmann::json{{"messages", messages}}.dump(2) + "\n";
}

std::vector<ChatMessage> ChatSession::messages_from_json(std::string_view text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) throw std::invalid_argument("not JSON: expected {\"messages\":[{\"role\":...,\"content\":...}]}");
  if (!j.is_object() || !j.contains("messages") || !j["messages"].is_array())
    throw std::invalid_argument("expected an object with a \"messages\" array");
  std::vector<ChatMessage> out;
  for (const auto& m : j["messages"]) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string())
      throw std::invalid_argument("message " + std::to_string(out.size()) + ": expected {\"role\": string, \"content\": string}");
    out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return out;
}

}  // namespace chorus
