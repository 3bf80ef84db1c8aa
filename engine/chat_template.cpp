// Chat templates: parse once, render per turn; built-in formats. See chat_template.h.
#include "engine/chat_template.h"

#include <array>
#include <utility>

namespace chorus {

ChatTemplate ChatTemplate::parse(std::string_view source) {
  auto body = std::make_shared<jinja::Body>(jinja::parse_template(source));
  jinja::check_filters_and_tests(*body);
  return ChatTemplate(std::move(body));
}

ModelChatFormat model_chat_format(const gguf::File& file) {
  ModelChatFormat out;
  if (auto t = file.get_string("tokenizer.chat_template")) out.chat_template = std::string(*t);
  const auto tokens = file.array_strings("tokenizer.ggml.tokens");
  auto token_text = [&](std::string_view key) {
    const auto id = file.get_u32(key);
    return tokens && id && *id < tokens->size() ? std::string((*tokens)[*id]) : std::string();
  };
  out.bos_token = token_text("tokenizer.ggml.bos_token_id");
  out.eos_token = token_text("tokenizer.ggml.eos_token_id");
  return out;
}

jinja::Value chat_messages_value(const std::vector<ChatMessage>& messages) {
  jinja::ValueList list;
  list.reserve(messages.size());
  for (const auto& m : messages)
    list.push_back(jinja::Value::dict({{jinja::Value("role"), jinja::Value(m.role)}, {jinja::Value("content"), jinja::Value(m.content)}}));
  return jinja::Value::list(std::move(list));
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, const ChatTemplateOptions& options) const {
  return render_messages(chat_messages_value(messages), options);
}

std::string ChatTemplate::render_messages(const jinja::Value& messages, const ChatTemplateOptions& options) const {
  jinja::DictEntries context = {
      {jinja::Value("messages"), messages},
      {jinja::Value("add_generation_prompt"), jinja::Value(options.add_generation_prompt)},
      {jinja::Value("bos_token"), jinja::Value(options.bos_token)},
      {jinja::Value("eos_token"), jinja::Value(options.eos_token)},
  };
  if (options.extra.is_dict())
    for (const auto& e : options.extra.entries()) context.push_back(e);
  return render_context(jinja::Value::dict(std::move(context)), jinja::RenderOptions{options.limits, options.now, options.tojson});
}

std::string ChatTemplate::render_context(const jinja::Value& context, const jinja::RenderOptions& options) const {
  return jinja::render(*body_, context, options);
}

namespace {

// Plain versions of the common formats: no tools, no default system prompts, a system message
// folded in where the format has no system role.
constexpr std::array<std::pair<std::string_view, std::string_view>, 7> kBuiltins = {{
    {"chatml",
     "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
     "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"},
    {"llama2",
     "{%- if messages and messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
     "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
     "{%- for message in messages %}{%- if message['role'] == 'user' %}"
     "{{ bos_token + '[INST] ' }}{% if loop.first and system %}{{ '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}{% endif %}"
     "{{ message['content'] | trim + ' [/INST]' }}{%- else %}{{ ' ' + message['content'] | trim + ' ' + eos_token }}{%- endif %}"
     "{%- endfor %}"},
    {"llama3",
     "{{- bos_token }}{%- for message in messages %}"
     "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
     "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"},
    {"gemma",
     "{{ bos_token }}{%- if messages and messages[0]['role'] == 'system' %}{% set prefix = messages[0]['content'] + '\\n\\n' %}"
     "{% set messages = messages[1:] %}{% else %}{% set prefix = '' %}{% endif %}"
     "{%- for message in messages %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
     "{{ '<start_of_turn>' + role + '\\n' + (prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\\n' }}"
     "{%- endfor %}{%- if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{%- endif %}"},
    {"mistral",
     "{{ bos_token }}{%- if messages and messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] + '\\n\\n' %}"
     "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
     "{%- for message in messages %}{%- if message['role'] == 'user' %}"
     "{{ '[INST] ' + (system if loop.first else '') + message['content'] + ' [/INST]' }}"
     "{%- else %}{{ message['content'] + eos_token }}{%- endif %}{%- endfor %}"},
    {"phi3",
     "{%- for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}{%- endfor %}"
     "{%- if add_generation_prompt %}{{ '<|assistant|>\\n' }}{%- endif %}"},
    {"deepseek",
     "{{ bos_token }}{%- for message in messages %}{%- if message['role'] == 'system' %}{{ message['content'] }}"
     "{%- elif message['role'] == 'user' %}{{ '<\xef\xbd\x9cUser\xef\xbd\x9c>' + message['content'] }}"
     "{%- else %}{{ '<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>' + message['content'] + eos_token }}{%- endif %}{%- endfor %}"
     "{%- if add_generation_prompt %}{{ '<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>' }}{%- endif %}"},
}};

}  // namespace

std::optional<std::string> builtin_chat_template(std::string_view name) {
  for (const auto& [n, source] : kBuiltins)
    if (n == name) return std::string(source);
  return std::nullopt;
}

std::vector<std::string> builtin_chat_template_names() {
  std::vector<std::string> out;
  for (const auto& b : kBuiltins) out.emplace_back(b.first);
  return out;
}

std::string guess_builtin_chat_template(std::string_view source) {
  auto has = [&](std::string_view marker) { return source.find(marker) != std::string_view::npos; };
  if (has("<|start_header_id|>")) return "llama3";
  if (has("<start_of_turn>")) return "gemma";
  if (has("<<SYS>>")) return "llama2";
  if (has("[INST]")) return "mistral";
  if (has("<|assistant|>") && has("<|end|>")) return "phi3";
  if (has("\xef\xbd\x9c" "Assistant\xef\xbd\x9c")) return "deepseek";
  return "chatml";
}

}  // namespace chorus
