#include "tools/chat_format.h"

#include <unistd.h>

#include <cstdio>

#include "tools/commands.h"

namespace chorus::tools {

std::string builtin_chat_template_list() {
  std::string names;
  for (const std::string& n : builtin_chat_template_names()) names += (names.empty() ? "" : ", ") + n;
  return names;
}

ModelChatFormat choose_chat_template(const gguf::File& f, const std::string& requested, const std::string& system) {
  ModelChatFormat fmt = model_chat_format(f);
  std::string origin = "the model's template";
  if (!requested.empty()) {
    if (auto b = builtin_chat_template(requested)) {
      fmt.chat_template = *b;
      origin = "the built-in '" + requested + "' format";
    } else if (::access(requested.c_str(), R_OK) == 0) {
      fmt.chat_template = read_text_input("--chat-template", requested);
      origin = requested;
    } else {
      throw UsageError("--chat-template '" + requested + "' is neither a built-in format (" + builtin_chat_template_list() +
                       ") nor a readable file");
    }
  } else if (fmt.chat_template.empty()) {
    std::fprintf(stderr, "the model has no chat template; using the built-in chatml format\n");
    fmt.chat_template = *builtin_chat_template("chatml");
    origin = "the built-in 'chatml' format";
  }
  try {  // a probe render: parse errors and templates that refuse a plain conversation
    std::vector<ChatMessage> probe;
    if (!system.empty()) probe.push_back({"system", system});
    probe.push_back({"user", "hi"});
    ChatTemplateOptions o;
    o.bos_token = fmt.bos_token;
    o.eos_token = fmt.eos_token;
    (void)ChatTemplate::parse(fmt.chat_template).render(probe, o);
  } catch (const TemplateError& e) {
    const std::string fallback = guess_builtin_chat_template(fmt.chat_template);
    std::fprintf(stderr, "warning: %s cannot be rendered (%s); using the built-in '%s' format instead\n",
                 origin.c_str(), e.what(), fallback.c_str());
    fmt.chat_template = *builtin_chat_template(fallback);
  }
  return fmt;
}

}  // namespace chorus::tools
