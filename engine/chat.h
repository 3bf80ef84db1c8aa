// engine/chat.h — a conversation with a model: turns formatted by its chat template, replies
// generated token by token into one sequence of a context.
//
// Owns: the conversation (system prompt, user and assistant turns), rendering it with the
// model's template (engine/chat_template.h) or a named built-in one, reusing the KV cache for
// the part of the rendered prompt that did not change since the last turn (so a turn costs
// only its new tokens), generating a reply with the sampler until an end-of-generation token,
// the token limit or a stop request, and what to do when the context fills: refuse with a
// clear message, or (context_shift) drop the oldest turns after the system prompt and go on.
// The terminal (tools/cmd_chat.cpp) and a server both drive it; it prints nothing.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "engine/chat_template.h"
#include "engine/model.h"
#include "engine/sampling.h"
#include "engine/tokenizer.h"

namespace chorus {

struct ChatOptions {
  std::string system;             // system prompt ("" for none)
  SamplerParams sampling;
  int32_t max_tokens = -1;        // per reply (-1: until end of generation or a full context)
  bool context_shift = false;     // drop the oldest turns when the context fills
  uint32_t seq = 0;               // the context's sequence the conversation lives in
};

// How one reply went.
struct ChatTurnStats {
  size_t prompt_tokens = 0;       // tokens evaluated for the prompt (the part not reused)
  size_t reused_tokens = 0;       // tokens of the prompt already in the cache
  size_t generated = 0;           // reply tokens
  double prompt_ms = 0, generation_ms = 0;
  std::string stop;               // "end of generation", "token limit", "full context", "stopped"
  size_t dropped_messages = 0;    // turns dropped by the context shift
};

// Thrown when the conversation does not fit the context (and context_shift is off, or even
// the newest turn alone does not fit).
struct ContextFullError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class ChatSession {
 public:
  // `format`: the template to use and the model's BOS/EOS text. Throws TemplateError for a
  // template that does not parse (callers fall back to a built-in format with a warning).
  ChatSession(Context& ctx, const Tokenizer& tok, const ModelChatFormat& format, ChatOptions options);

  // Adds a user turn and generates the assistant's reply, calling on_text with each piece of
  // text as it is produced. `stop` (may be null) is checked before every token: when it is set
  // the reply ends there ("stopped") and is kept as far as it got.
  ChatTurnStats send(std::string_view user, const std::function<void(std::string_view)>& on_text,
                     const std::atomic<bool>* stop = nullptr);
  // Drops the last assistant reply and generates it again (throws std::logic_error if the
  // conversation does not end with one).
  ChatTurnStats regenerate(const std::function<void(std::string_view)>& on_text, const std::atomic<bool>* stop = nullptr);
  // Forgets every turn but the system prompt.
  void clear();

  const std::vector<ChatMessage>& messages() const { return messages_; }
  // Replaces the conversation (e.g. loaded from a file); a leading system message becomes the
  // system prompt.
  void set_messages(std::vector<ChatMessage> messages);
  // The conversation as JSON ({"messages":[{"role":...,"content":...},...]}) and back; parse
  // errors name what was expected.
  std::string to_json() const;
  static std::vector<ChatMessage> messages_from_json(std::string_view json);

  uint32_t context_used() const;  // tokens in the cache for this conversation
  uint32_t context_size() const;
  // The prompt text the template renders for the conversation as it stands.
  std::string render(bool add_generation_prompt) const;

 private:
  ChatTurnStats generate(const std::function<void(std::string_view)>& on_text, const std::atomic<bool>* stop);
  std::vector<TokenId> prompt_tokens() const;

  Context& ctx_;
  const Tokenizer& tok_;
  ChatTemplate template_;
  ChatTemplateOptions template_options_;
  ChatOptions options_;
  Sampler sampler_;                    // one random stream for the whole conversation
  std::vector<ChatMessage> messages_;  // system (if any) first
  std::vector<TokenId> cached_;        // the tokens the context holds for seq, in order
};

}  // namespace chorus
