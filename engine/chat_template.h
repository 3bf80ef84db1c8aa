// engine/chat_template.h — turning a conversation into the prompt text a model was trained on.
//
// Owns: ChatTemplate (a model's `tokenizer.chat_template`, a Jinja2 template, parsed once and
// rendered per turn by our own sandboxed interpreter, jinja_*.h) and the named built-in
// formats used when a model has no template or its template cannot be rendered.
//
// Rendering matches Python Jinja2 (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
// which is what Hugging Face transformers and llama.cpp use) byte for byte for the templates in
// tests/data/chat_templates/. Templates are data from strangers: they see only the values
// given here, cannot modify them, and every render is bounded in work, output, string and list
// size and call depth (jinja::RenderLimits). Every failure is a TemplateError naming the
// template line and column; raise_exception("...") in a template is TemplateError::Kind::Raised
// with exactly the template's message.
//
// Known differences from Jinja2: integers are 64-bit (overflow is an error, not a bigint);
// case mapping covers Latin, Greek and Cyrillic (one code point to one, plus "ß" -> "SS"; no
// final-sigma rule); select/reject/map/unique build lists at once where Jinja2 builds lazy
// generators (an error can come earlier); dict.keys()/values()/items() print as lists, not
// views; attribute names starting with '_' (`''.__class__`) fail when accessed (Jinja2 fails
// when the result is used); {% include %}, {% import %}, {% extends %}, {% filter %}, recursive
// loops and loop.changed are not supported (parse errors). |tojson is Jinja2's built-in (sorted
// keys, HTML-safe escapes) unless ChatTemplateOptions::tojson asks for transformers' override,
// which is what models saw in training when tools are in the prompt.
#pragma once

#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/gguf.h"
#include "engine/jinja_eval.h"
#include "engine/jinja_parse.h"
#include "engine/jinja_value.h"

namespace chorus {

using jinja::TemplateError;

struct ChatMessage {
  std::string role;     // "system", "user", "assistant", "tool", ...
  std::string content;
};

struct ChatTemplateOptions {
  bool add_generation_prompt = true;  // end with the header that starts the assistant's turn
  std::string bos_token, eos_token;   // the model's special tokens, as text
  jinja::RenderLimits limits;
  std::optional<std::time_t> now;     // what strftime_now() sees; the clock when empty
  jinja::Value extra;                 // a dict of further variables (tools, enable_thinking, ...)
  jinja::ToJson tojson = jinja::ToJson::Jinja2;  // Transformers: |tojson as transformers renders it
};

class ChatTemplate {
 public:
  // Parses a template; throws TemplateError(Syntax) naming line and column.
  static ChatTemplate parse(std::string_view source);

  std::string render(const std::vector<ChatMessage>& messages, const ChatTemplateOptions& options) const;
  // `messages` is a list of dicts, which may carry more than role and content (tool_calls,
  // reasoning_content, content as a list of parts, ...).
  std::string render_messages(const jinja::Value& messages, const ChatTemplateOptions& options) const;
  // The general form: every variable the template sees is in `context` (a dict).
  std::string render_context(const jinja::Value& context, const jinja::RenderOptions& options) const;

 private:
  explicit ChatTemplate(std::shared_ptr<const jinja::Body> body) : body_(std::move(body)) {}
  std::shared_ptr<const jinja::Body> body_;
};

// What a GGUF model says about its chat format: `tokenizer.chat_template` (empty when the model
// has none) and the text of its BOS and EOS tokens (empty when the ids are missing or out of
// range), which templates use as bos_token and eos_token.
struct ModelChatFormat {
  std::string chat_template;
  std::string bos_token, eos_token;
};
ModelChatFormat model_chat_format(const gguf::File& file);

// Conversation messages as the list-of-dicts value templates iterate over.
jinja::Value chat_messages_value(const std::vector<ChatMessage>& messages);

// The Jinja source of a named built-in format ("chatml", "llama2", "llama3", "gemma",
// "mistral", "phi3", "deepseek"), or nullopt for an unknown name.
std::optional<std::string> builtin_chat_template(std::string_view name);
std::vector<std::string> builtin_chat_template_names();
// The built-in format whose markers a template's source uses ("<|im_start|>" -> "chatml", ...),
// for falling back when that template cannot be rendered; "chatml" when nothing matches.
std::string guess_builtin_chat_template(std::string_view source);

}  // namespace chorus
