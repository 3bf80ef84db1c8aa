// tools/chat_format.h — which chat format `chat` and `serve` use: --chat-template, else the
// model's own template, else a built-in one.
#pragma once

#include <string>

#include "engine/chat_template.h"
#include "engine/gguf.h"

namespace chorus::tools {

// --chat-template NAME|FILE (`requested`, may be empty), else the model's own template, else the
// built-in chatml; a template that cannot render a plain conversation (with `system` as its
// system prompt when not empty) falls back to the built-in format its markers suggest, with a
// warning on stderr. A bad --chat-template is a UsageError.
ModelChatFormat choose_chat_template(const gguf::File& f, const std::string& requested, const std::string& system);
// "chatml, llama2, ...": the built-in formats, for --help.
std::string builtin_chat_template_list();

}  // namespace chorus::tools
