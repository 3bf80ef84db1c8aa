// libFuzzer harness for the chat template interpreter: every input, taken as a template, must
// either render or throw TemplateError, within the render limits. Any other exception, a
// crash, a sanitizer report, a timeout or an out-of-memory stop is a bug. See README.md.
#include <cstdint>
#include <string_view>

#include "engine/chat_template.h"

namespace {

// A small conversation with the shapes real templates look at: system/user/assistant roles,
// tool calls, content as a list of parts.
const chorus::jinja::Value& conversation() {
  static const chorus::jinja::Value v = chorus::jinja::parse_json(R"([
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "H\u00e9llo"}, {"type": "image"}]},
    {"role": "assistant", "content": "<think>x</think>Hi", "tool_calls": [
      {"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]},
    {"role": "tool", "content": "{\"ok\": true}"},
    {"role": "user", "content": "Bye"}])");
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view source(reinterpret_cast<const char*>(data), size);
  chorus::ChatTemplateOptions options;
  options.bos_token = "<s>";
  options.eos_token = "</s>";
  options.now = 0;
  // Smaller limits than the defaults keep each input fast; the limits are what is under test.
  options.limits.max_steps = 200'000;
  options.limits.max_output_bytes = 1 << 20;
  options.limits.max_string_bytes = 1 << 20;
  options.limits.max_list_items = 1 << 16;
  options.tojson = size % 2 ? chorus::jinja::ToJson::Transformers : chorus::jinja::ToJson::Jinja2;
  try {
    const auto t = chorus::ChatTemplate::parse(source);
    volatile size_t sink = t.render_messages(conversation(), options).size();
    (void)sink;
  } catch (const chorus::TemplateError&) {
    // expected for most inputs
  }
  return 0;
}
