// Chat templates: chorus's Jinja interpreter against Python Jinja2, byte for byte, and the
// sandbox against hostile templates.
//
// The expected renders come from tests/data/chat_templates/make_renders.py (Jinja2 configured
// as transformers and llama.cpp configure it); manifest.json lists every case. A case whose
// Jinja2 render raised is stored as "<name>.error": raise_exception's message must match
// exactly, any other Jinja2 error only has to be a runtime TemplateError here too.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/chat_template.h"
#include "engine/gguf.h"
#include "tests/gpu.h"

namespace {

using chorus::ChatMessage;
using chorus::ChatTemplate;
using chorus::ChatTemplateOptions;
using chorus::TemplateError;
using chorus::jinja::Value;
using Kind = chorus::TemplateError::Kind;

const std::string kDataDir = std::string(CHORUS_SOURCE_DIR) + "/tests/data/chat_templates/";

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

const Value& manifest() {
  static const Value m = chorus::jinja::parse_json(read_file(kDataDir + "renders/manifest.json"));
  return m;
}

const Value& conversations() {
  static const Value c = chorus::jinja::parse_json(read_file(kDataDir + "conversations.json"));
  return c;
}

const Value& features() {
  static const Value f = chorus::jinja::parse_json(read_file(kDataDir + "features.json"));
  return f;
}

std::string field(const Value& dict, const char* key) {
  const Value* v = dict.find(std::string_view(key));
  return v && v->is_string() ? v->as_string() : std::string();
}

// Where two renders first differ, with the text around it on both sides.
std::string first_difference(const std::string& want, const std::string& got) {
  size_t i = 0;
  while (i < want.size() && i < got.size() && want[i] == got[i]) ++i;
  const size_t from = i > 40 ? i - 40 : 0;
  auto around = [&](const std::string& s) {
    std::string out;
    for (char c : s.substr(from, 80)) out += c == '\n' ? std::string("\\n") : std::string(1, c);
    return out;
  };
  return "first difference at byte " + std::to_string(i) + " (expected " + std::to_string(want.size()) + " bytes, got " +
         std::to_string(got.size()) + ")\n  expected: ..." + around(want) + "\n  got:      ..." + around(got);
}

// Renders `render()` and compares with an expected .txt or .error file.
template <typename Render>
void expect_same_as_jinja2(const std::string& expected_path, Render render) {
  const std::string expected = read_file(kDataDir + expected_path);
  const bool is_error = expected_path.size() > 6 && expected_path.substr(expected_path.size() - 6) == ".error";
  if (!is_error) {
    std::string got;
    try {
      got = render();
    } catch (const TemplateError& e) {
      FAIL() << "Jinja2 rendered " << expected_path << " but chorus threw: " << e.what();
    }
    if (got != expected) FAIL() << expected_path << ": " << first_difference(expected, got);
    return;
  }
  try {
    const std::string got = render();
    FAIL() << "Jinja2 failed with \"" << expected << "\" but chorus rendered " << got.size() << " bytes";
  } catch (const TemplateError& e) {
    if (expected.rfind("raised: ", 0) == 0) {
      EXPECT_EQ(e.kind(), Kind::Raised) << e.what();
      EXPECT_EQ(e.message(), expected.substr(8));
    } else {
      EXPECT_EQ(e.kind(), Kind::Runtime) << "Jinja2: " << expected << "\nchorus: " << e.what();
    }
  }
}

// ---- the real templates --------------------------------------------------------------------

struct RenderCase {
  std::string name, template_file, conversation, bos_token, eos_token, expected;
  chorus::jinja::ToJson tojson;
};

chorus::jinja::ToJson tojson_of(const Value& c) {
  return field(c, "tojson") == "transformers" ? chorus::jinja::ToJson::Transformers : chorus::jinja::ToJson::Jinja2;
}

std::vector<RenderCase> render_cases() {
  std::vector<RenderCase> out;
  for (const Value& c : manifest().find(std::string_view("cases"))->items()) {
    RenderCase rc{"", field(c, "template"), field(c, "conversation"), field(c, "bos_token"), field(c, "eos_token"),
                  field(c, "expected"), tojson_of(c)};
    rc.name = rc.template_file.substr(0, rc.template_file.find(".jinja")) + "_" + rc.conversation +
              (rc.tojson == chorus::jinja::ToJson::Transformers ? "_transformers_tojson" : "");
    for (char& ch : rc.name)
      if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    out.push_back(std::move(rc));
  }
  return out;
}

class RealTemplate : public ::testing::TestWithParam<RenderCase> {};

TEST_P(RealTemplate, RendersExactlyAsJinja2) {
  const RenderCase& rc = GetParam();
  const ChatTemplate t = ChatTemplate::parse(read_file(kDataDir + rc.template_file));
  const Value& conv = *conversations().find(std::string_view(rc.conversation));
  ChatTemplateOptions options;
  options.add_generation_prompt = conv.find(std::string_view("add_generation_prompt"))->truthy();
  options.bos_token = rc.bos_token;
  options.eos_token = rc.eos_token;
  options.tojson = rc.tojson;
  options.now = static_cast<std::time_t>(manifest().find(std::string_view("now"))->as_int());
  if (const Value* vars = conv.find(std::string_view("variables"))) options.extra = *vars;
  const Value messages = *conv.find(std::string_view("messages"));
  expect_same_as_jinja2(rc.expected, [&] { return t.render_messages(messages, options); });
}

INSTANTIATE_TEST_SUITE_P(ChatTemplates, RealTemplate, ::testing::ValuesIn(render_cases()),
                         [](const ::testing::TestParamInfo<RenderCase>& p) { return p.param.name; });

TEST(RealTemplates, EveryRequiredFamilyIsCovered) {
  const std::vector<std::string> files = {"smollm2.jinja", "gemma3.jinja",    "llama3.2.jinja", "llama2.jinja",
                                          "mistral-v0.1.jinja", "qwen2.5.jinja", "qwen3.jinja",    "phi3.jinja",
                                          "deepseek-r1-distill.jinja"};
  const auto cases = render_cases();
  for (const auto& f : files) {
    const auto n = std::count_if(cases.begin(), cases.end(), [&](const RenderCase& c) { return c.template_file == f; });
    EXPECT_GE(n, 10) << f;
  }
}

// ---- language features, each checked against Jinja2 ----------------------------------------

struct FeatureCase {
  std::string name, expected;
  chorus::jinja::ToJson tojson;
};

std::vector<FeatureCase> feature_cases() {
  std::vector<FeatureCase> out;
  for (const Value& c : manifest().find(std::string_view("features"))->items())
    out.push_back({field(c, "feature"), field(c, "expected"), tojson_of(c)});
  return out;
}

class LanguageFeature : public ::testing::TestWithParam<FeatureCase> {};

TEST_P(LanguageFeature, RendersExactlyAsJinja2) {
  const FeatureCase& fc = GetParam();
  const Value& feature = *features().find(std::string_view(fc.name));
  chorus::jinja::RenderOptions options;
  options.now = static_cast<std::time_t>(manifest().find(std::string_view("now"))->as_int());
  options.tojson = fc.tojson;
  const Value* vars = feature.find(std::string_view("variables"));
  const Value context = vars ? *vars : Value::dict();
  expect_same_as_jinja2(fc.expected, [&] {
    return ChatTemplate::parse(field(feature, "source")).render_context(context, options);
  });
}

INSTANTIATE_TEST_SUITE_P(Jinja2, LanguageFeature, ::testing::ValuesIn(feature_cases()),
                         [](const ::testing::TestParamInfo<FeatureCase>& p) { return p.param.name; });

// ---- the public API --------------------------------------------------------------------------

TEST(ChatTemplateApi, SmolLM2TemplateFormatsAConversationAsChatML) {
  const ChatTemplate t = ChatTemplate::parse(read_file(kDataDir + "smollm2.jinja"));
  ChatTemplateOptions options;
  const std::string got = t.render({{"user", "What is the capital of France?"}}, options);
  EXPECT_EQ(got,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplateApi, SmolLM2GgufCarriesItsTemplateAndSpecialTokens) {
  const std::string path = chorus::test::fetched_model("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2");
  const auto file = chorus::gguf::File::open(path);
  const chorus::ModelChatFormat format = chorus::model_chat_format(file);
  EXPECT_EQ(format.chat_template, read_file(kDataDir + "smollm2.jinja"));
  EXPECT_EQ(format.bos_token, "<|im_start|>");
  EXPECT_EQ(format.eos_token, "<|im_end|>");
}

TEST(ChatTemplateApi, EveryBuiltinFormatParsesAndRendersAMultiTurnConversation) {
  const std::vector<ChatMessage> conversation = {
      {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}, {"user", "Bye"}};
  ChatTemplateOptions options;
  options.bos_token = "<s>";
  options.eos_token = "</s>";
  ASSERT_EQ(chorus::builtin_chat_template_names().size(), 7u);
  for (const auto& name : chorus::builtin_chat_template_names()) {
    const auto source = chorus::builtin_chat_template(name);
    ASSERT_TRUE(source) << name;
    const std::string got = ChatTemplate::parse(*source).render(conversation, options);
    EXPECT_NE(got.find("Be brief."), std::string::npos) << name << ": " << got;
    EXPECT_NE(got.find("Bye"), std::string::npos) << name << ": " << got;
  }
  EXPECT_FALSE(chorus::builtin_chat_template("no-such-format"));
  EXPECT_EQ(ChatTemplate::parse(*chorus::builtin_chat_template("chatml")).render({{"user", "Hi"}}, options),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplateApi, GuessesTheBuiltinFormatFromATemplatesMarkers) {
  EXPECT_EQ(chorus::guess_builtin_chat_template(read_file(kDataDir + "llama3.2.jinja")), "llama3");
  EXPECT_EQ(chorus::guess_builtin_chat_template(read_file(kDataDir + "gemma3.jinja")), "gemma");
  EXPECT_EQ(chorus::guess_builtin_chat_template(read_file(kDataDir + "llama2.jinja")), "llama2");
  EXPECT_EQ(chorus::guess_builtin_chat_template(read_file(kDataDir + "mixtral-v0.1.jinja")), "mistral");
  EXPECT_EQ(chorus::guess_builtin_chat_template(read_file(kDataDir + "phi3.jinja")), "phi3");
  EXPECT_EQ(chorus::guess_builtin_chat_template(read_file(kDataDir + "deepseek-r1-distill.jinja")), "deepseek");
  EXPECT_EQ(chorus::guess_builtin_chat_template(read_file(kDataDir + "qwen3.jinja")), "chatml");
}

TEST(ChatTemplateApi, JsonRoundTripKeepsKeyOrderAndEscapesAsPython) {
  const Value v = chorus::jinja::parse_json(R"({"b": [1, 2.5, true, null], "a": "\u00e9\n\ud83d\ude42"})");
  EXPECT_EQ(chorus::jinja::to_json(v), R"({"b": [1, 2.5, true, null], "a": "\u00e9\n\ud83d\ude42"})");
  EXPECT_EQ(chorus::jinja::to_json(v, {.sort_keys = true}), R"({"a": "\u00e9\n\ud83d\ude42", "b": [1, 2.5, true, null]})");
  EXPECT_THROW(chorus::jinja::parse_json("{\"a\": }"), TemplateError);
}

// ---- errors name the line and column -------------------------------------------------------

TemplateError error_of(const std::string& source, const Value& context = Value::dict(),
                       const chorus::jinja::RenderLimits& limits = {}) {
  try {
    chorus::jinja::RenderOptions options;
    options.limits = limits;
    ChatTemplate::parse(source).render_context(context, options);
  } catch (const TemplateError& e) {
    return e;
  }
  ADD_FAILURE() << "no error for: " << source.substr(0, 200);
  return TemplateError(Kind::Runtime, 0, 0, "");
}

TEST(TemplateErrors, UnterminatedTagsAreSyntaxErrorsNamingLineAndColumn) {
  struct Case {
    std::string source;
    int line, column;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"hello\n  {{ name", 2, 3, "unterminated '{{'"},
      {"{% if x %}never closed", 1, 23, "expected '{% endif %}'"},
      {"a\nb {# comment", 2, 3, "unterminated comment"},
      {"{{ 'abc }}", 1, 4, "unterminated string"},
      {"{% for %}{% endfor %}", 1, 8, "expected a name"},
      {"{% frobnicate %}", 1, 4, "unknown tag 'frobnicate'"},
      {"{{ 1 + }}", 1, 8, "unexpected '}}'"},
      {"{% include 'x.j2' %}", 1, 4, "not supported"},
      {"{{ (1 }}", 1, 7, "unexpected '}'"},
      {"{{ x[1, :, 3] }}", 1, 5, "slice inside a tuple subscript"},  // found by fuzz_chat_template
      {"{% if x %}\n  {{ y | frobnicate }}{% endif %}", 2, 8, "no filter named 'frobnicate'"},
      {"{{ y is frobnicated }}", 1, 6, "no test named 'frobnicated'"},
  };
  for (const auto& c : cases) {
    const TemplateError e = error_of(c.source);
    EXPECT_EQ(e.kind(), Kind::Syntax) << c.source << ": " << e.what();
    EXPECT_EQ(e.line(), c.line) << c.source << ": " << e.what();
    EXPECT_EQ(e.column(), c.column) << c.source << ": " << e.what();
    EXPECT_NE(e.message().find(c.says), std::string::npos) << c.source << ": " << e.what();
    EXPECT_NE(std::string(e.what()).find("line " + std::to_string(c.line)), std::string::npos) << e.what();
  }
}

TEST(TemplateErrors, RuntimeErrorsNameTheLineOfTheFailingExpression) {
  const TemplateError e = error_of("line one\n{% for m in messages %}\n  {{ m.content + 1 }}\n{% endfor %}",
                                   Value::dict({{Value("messages"), Value::list({Value::dict({{Value("content"), Value("x")}})})}}));
  EXPECT_EQ(e.kind(), Kind::Runtime);
  EXPECT_EQ(e.line(), 3);
  EXPECT_NE(e.message().find("unsupported operand type(s) for +: 'str' and 'int'"), std::string::npos) << e.what();
}

TEST(TemplateErrors, RaiseExceptionCarriesTheTemplatesMessageExactly) {
  const TemplateError e = error_of("\n{{ raise_exception('Conversation roles must alternate!') }}");
  EXPECT_EQ(e.kind(), Kind::Raised);
  EXPECT_EQ(e.message(), "Conversation roles must alternate!");
  EXPECT_EQ(e.line(), 2);
}

TEST(TemplateErrors, UndefinedValuesFailWhenUsedNotWhenPrinted) {
  EXPECT_EQ(ChatTemplate::parse("[{{ nope }}]").render_context(Value::dict(), {}), "[]");
  EXPECT_NE(error_of("{{ nope.attr }}").message().find("'nope' is undefined"), std::string::npos);
  EXPECT_NE(error_of("{{ nope + 1 }}").message().find("'nope' is undefined"), std::string::npos);
  EXPECT_NE(error_of("{{ [][0]['role'] }}").message().find("list object has no element 0"), std::string::npos);
  EXPECT_NE(error_of("{{ 2 ** 100 }}").message().find("integer overflow"), std::string::npos);
}

// ---- the sandbox -----------------------------------------------------------------------------

TEST(Sandbox, AttributeWalkingOutsideTheDataFailsNamingTheAttribute) {
  const Value context = Value::dict({{Value("x"), Value("text")}, {Value("m"), Value::dict({{Value("role"), Value("user")}})}});
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{{ ''.__class__ }}", "__class__"},
      {"{{ ''.__class__.__mro__[1].__subclasses__() }}", "__class__"},
      {"{{ x.__init__ }}", "__init__"},
      {"{{ cycler.__init__.__globals__ }}", "__init__"},
      {"{{ range.__globals__ }}", "__globals__"},
      {"{{ raise_exception.__code__ }}", "__code__"},
      {"{{ m.__class__ }}", "__class__"},
      {"{{ m['__class__'] }}", "__class__"},
      {"{{ namespace.__init__ }}", "__init__"},
      {"{{ (1).__class__ }}", "__class__"},
      {"{{ m.update({'role': 'system'}) }}", "update"},
      {"{{ [1].append(2) }}", "append"},
      {"{{ m.pop('role') }}", "pop"},
  };
  for (const auto& [source, attribute] : cases) {
    const TemplateError e = error_of(source, context);
    EXPECT_EQ(e.kind(), Kind::Runtime) << source << ": " << e.what();
    EXPECT_NE(e.message().find("'" + attribute + "'"), std::string::npos) << source << ": " << e.what();
  }
  // Names that are neither data keys nor safe methods are undefined, as in Jinja2.
  EXPECT_EQ(ChatTemplate::parse("[{{ x.mro is defined }}{{ m.func_globals is defined }}]").render_context(context, {}),
            "[FalseFalse]");
  EXPECT_NE(error_of("{{ x.mro() }}", context).message().find("has no attribute 'mro'"), std::string::npos);
  EXPECT_NE(error_of("{% set m.role = 'system' %}", context).message().find("only namespace() objects"), std::string::npos);
}

// The render stops with TemplateError(Limit) whose message says `says`.
void expect_limit(const std::string& source, const std::string& says, const chorus::jinja::RenderLimits& limits = {}) {
  const TemplateError e = error_of(source, Value::dict(), limits);
  EXPECT_EQ(e.kind(), Kind::Limit) << source.substr(0, 200) << ": " << e.what();
  EXPECT_NE(e.message().find(says), std::string::npos) << source.substr(0, 200) << ": " << e.what();
}

TEST(Sandbox, HugeRangeIsRefusedBeforeAnythingIsBuilt) {
  expect_limit("{% for i in range(999999999) %}x{% endfor %}", "999999999 items");
}

TEST(Sandbox, EndlessWorkStopsAtTheStepBudget) {
  expect_limit("{% for i in range(1000000) %}{% for j in range(1000000) %}{% endfor %}{% endfor %}", "steps of work");
}

TEST(Sandbox, ExpensiveOperationsInLoopsAreChargedByTheirSize) {
  const std::string big = "{% set s = 'x' * 1000000 %}{% set l = range(1000000) | list %}{% for i in range(1000000) %}";
  for (const char* body : {"{% set t = s | tojson %}", "{% if 'y' in s %}{% endif %}", "{{ s[:1] }}", "{{ s[5] }}",
                           "{% set n = s.find('y') %}", "{% set n = l | length %}", "{% set b = l == l %}",
                           "{% set t = s.strip() %}", "{% set t = s ~ '' %}", "{% set n = s.count('y') %}",
                           "{% set t = s | list %}", "{% set t = s | reverse %}", "{% for c in s %}{% endfor %}",
                           "{% set t = s | replace('x', 'yy') %}", "{% set t = s.split() %}"})
    expect_limit(big + body + "{% endfor %}", "steps of work");
}

TEST(Sandbox, GigabyteStringsAreRefusedBeforeAllocating) {
  for (const char* source : {
           "{{ 'a' * 1000000000 }}",
           "{{ 1000000000 * 'ab' }}",
           "{{ 'x' * 9223372036854775807 }}",
           "{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
           "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
           "{% set s = 'a' * 10000000 %}{{ [s, s] | join(s) }}",
           "{% set s = 'a' * 10000000 %}{{ s | replace('a', 'aa') }}",
           "{% set s = 'a\\n' * 100000 %}{{ s | indent(1000, true, true) }}",
       })
    expect_limit(source, "bytes");
}

TEST(Sandbox, HugeListsAreRefusedBeforeAllocating) {
  expect_limit("{{ [1] * 1000000000 }}", "items");
  expect_limit("{{ (',' * 10000000).split(',') | length }}", "items");
  expect_limit("{{ ('x ' * 5000000).split() | length }}", "items");
  expect_limit("{{ ('\\n' * 10000000).splitlines() | length }}", "items");
  expect_limit("{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}", "items");
}

TEST(Sandbox, OutputStopsAtTheOutputLimit) {
  chorus::jinja::RenderLimits limits;
  limits.max_output_bytes = 1000;
  expect_limit("{% for i in range(100) %}{{ 'x' * 100 }}{% endfor %}", "rendered text", limits);
}

TEST(Sandbox, EndlessMacroRecursionStopsAtTheDepthLimit) {
  expect_limit("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "nested deeper than 64");
}

TEST(Sandbox, RecursionThroughDeepExpressionsStopsBeforeTheStackDoes) {
  // Each call of f sits under 150 ifs and 900 filters, so every level of the recursion nests
  // about a thousand evaluations: the depth limit stops it long before 64 calls.
  std::string filters;
  for (int i = 0; i < 900; ++i) filters += "|trim";
  std::string body;
  for (int i = 0; i < 150; ++i) body += "{% if true %}";
  body += "{{ f(n + 1)" + filters + " }}";
  for (int i = 0; i < 150; ++i) body += "{% endif %}";
  expect_limit("{% macro f(n) %}" + body + "{% endmacro %}{{ f(0) }}", "evaluation nested deeper");
}

TEST(Sandbox, RecursionStopsAtTheStackBudgetWhateverTheFrameSize) {
  // Frames are several times larger under sanitizers; the measured stack budget stops the
  // recursion there even when the level count alone would let it overflow the stack.
  std::string filters;
  for (int i = 0; i < 200; ++i) filters += "|trim";
  const std::string source = "{% macro f(n) %}{{ f(n + 1)" + filters + " }}{% endmacro %}{{ f(0) }}";
  chorus::jinja::RenderLimits limits;
  limits.max_eval_depth = 1 << 30;
  limits.max_stack_bytes = 64u << 10;
  expect_limit(source, "KiB of stack", limits);
}

TEST(Sandbox, DeeplyNestedSourceIsASyntaxErrorNotAStackOverflow) {
  for (const std::string& source :
       {"{{ " + std::string(100000, '(') + "1" + std::string(100000, ')') + " }}",
        "{{ " + std::string(100000, '[') + std::string(100000, ']') + " }}",
        "{{ " + std::string(50000, '-') + "1 }}",
        [] {
          std::string s;
          for (int i = 0; i < 100000; ++i) s += "not ";
          return "{{ " + s + "1 }}";
        }(),
        [] {
          std::string s;
          for (int i = 0; i < 100000; ++i) s += "{% if true %}";
          return s;
        }(),
        [] {  // long flat chains build tall trees without nesting brackets
          std::string s = "{{ a";
          for (int i = 0; i < 100000; ++i) s += " + a";
          return s + " }}";
        }(),
        [] {
          std::string s = "{{ a";
          for (int i = 0; i < 100000; ++i) s += "|trim";
          return s + " }}";
        }(),
        [] {
          std::string s = "{{ a";
          for (int i = 0; i < 100000; ++i) s += ".b[0]";
          return s + " }}";
        }(),
        [] {
          std::string s = "{{ (((a";
          for (int i = 0; i < 900; ++i) s += " ~ a";
          s += ") ~ a";
          for (int i = 0; i < 900; ++i) s += " ~ a";
          return s + ")) }}";
        }()}) {
    const TemplateError e = error_of(source);
    EXPECT_EQ(e.kind(), Kind::Syntax) << e.what();
    EXPECT_NE(e.message().find("nested deeper than"), std::string::npos) << e.what();
  }
}

TEST(Sandbox, ValuesNestedWithoutBoundAreRefused) {
  // Printing, comparing or freeing a list nested a million deep would recurse that deep.
  expect_limit("{% set ns = namespace(l=[]) %}{% for i in range(1000000) %}{% set ns.l = [ns.l] %}{% endfor %}{{ ns.l }}",
               "nested deeper than 500");
  expect_limit("{% set ns = namespace(d={}) %}{% for i in range(1000) %}{% set ns.d = {'k': ns.d} %}{% endfor %}", "nested deeper");
}

TEST(Sandbox, ComparingLargeValuesIsChargedAsWork) {
  // Equal contents in distinct strings, so no comparison can stop at the first byte or at identity.
  const std::string setup =
      "{% set a = 'x' * 10000000 ~ 'a' %}{% set b = 'x' * 10000000 ~ 'b' %}{% set l = [a, b] * 100000 %}"
      "{% set m = [b, a] * 100000 %}{% set a2 = 'x' * 10000000 ~ 'a' %}{% set b2 = 'x' * 10000000 ~ 'b' %}";
  expect_limit(setup + "{{ l == [a2, b2] * 100000 }}", "steps of work");
  expect_limit(setup + "{{ l | unique | list }}", "steps of work");
  expect_limit(setup + "{{ l | sort | length }}", "steps of work");
  expect_limit(setup + "{% set d = {a: 1, b: 2} %}{% for i in range(1000000) %}{% set x = d[b] %}{% endfor %}",
               "steps of work");
  expect_limit(setup + "{{ b in l }}{{ b in m }}{{ m.index(a) }}{{ l.count(b) }}{{ l is in [m] }}", "steps of work");
}

TEST(Sandbox, DeeplyNestedJsonIsRefused) {
  EXPECT_THROW(chorus::jinja::parse_json(std::string(100000, '[')), TemplateError);
}

}  // namespace
