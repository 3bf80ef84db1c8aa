// engine/jinja_eval.h — the interpreter that renders a parsed template, and its limits.
//
// Owns: scopes (Jinja2's rules: a for-loop body and a macro body get their own scope, if
// does not), statement execution, expression evaluation with Python's operator semantics,
// the sandbox (attribute access reaches dict keys and a fixed list of safe str/dict/list
// methods only; names starting with '_' are refused), and the work bounds every render runs
// under (RenderLimits). Filters, tests, methods and globals live in jinja_builtins.cpp.
#pragma once

#include <cstdint>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/jinja_parse.h"
#include "engine/jinja_value.h"

namespace chorus::jinja {

// Bounds on one render. Each is checked before the work or the allocation it limits, so a
// hostile template stops with TemplateError(Limit) in well under a second.
struct RenderLimits {
  uint64_t max_steps = 10'000'000;        // expression evaluations, statements and loop iterations
  size_t max_output_bytes = 16u << 20;    // rendered text
  size_t max_string_bytes = 16u << 20;    // any one string built by the template
  size_t max_list_items = 1u << 20;       // any one list built by the template (range(), *, +)
  int max_call_depth = 64;                // macros calling macros (or themselves)
  int max_eval_depth = 2500;              // nested evaluation: about 1 MiB of C++ stack in a release build
  // C++ stack the evaluation may use below render()'s frame, measured from frame addresses: frames
  // are several times larger under sanitizers, where max_eval_depth alone would overflow 8 MiB.
  size_t max_stack_bytes = 2u << 20;
};

// Which |tojson a template gets. Jinja2's own sorts keys and escapes <, >, & and ' for HTML;
// Hugging Face transformers replaces it (chat templates are rendered that way in training and by
// llama.cpp): insertion order, no HTML escapes, non-ASCII kept, and the keyword arguments
// ensure_ascii, indent, separators and sort_keys (in that positional order).
enum class ToJson { Jinja2, Transformers };

struct RenderOptions {
  RenderLimits limits;
  std::optional<std::time_t> now;  // what strftime_now() sees (UTC); the local clock when empty
  ToJson tojson = ToJson::Jinja2;
};

// Renders a template. `context` is a dict of the variables the template sees (messages,
// add_generation_prompt, bos_token, ...); the globals range, namespace, dict, raise_exception
// and strftime_now are always present unless the context shadows them.
std::string render(const Body& body, const Value& context, const RenderOptions& options);

// ---- internal: shared between jinja_eval.cpp and jinja_builtins.cpp ------------------------

// Variables of one scope, searched innermost first. Scopes hold a handful of names, so a flat
// list beats a map; a for loop reuses one scope, emptied at each iteration.
struct Scope {
  std::vector<std::pair<std::string, Value>> vars;
  std::shared_ptr<Scope> parent;
  const Value* lookup(std::string_view name) const;
  void set(std::string_view name, Value v);
};

using KwValues = std::vector<std::pair<std::string, Value>>;

struct Interpreter {
  RenderOptions options;
  uint64_t steps = 0;
  int call_depth = 0;
  int eval_depth = 0;  // statements and expressions being evaluated inside each other
  uintptr_t stack_base = 0;  // render()'s frame address; the stack grows down from it
  int line = 0, column = 0;  // position of the node being evaluated, for error messages

  void step(uint64_t n = 1);
  [[noreturn]] void fail(TemplateError::Kind kind, const std::string& message) const;
  [[noreturn]] void fail(const std::string& message) const { fail(TemplateError::Kind::Runtime, message); }
  // Refuses a string or list longer than the limits allow, before it is built.
  void check_string_size(size_t bytes) const;
  void check_list_size(size_t items) const;

  enum class Flow { Normal, Break, Continue };
  Flow exec(const Body& body, const std::shared_ptr<Scope>& scope, std::string& out);
  Flow exec_if(const Node& n, const std::shared_ptr<Scope>& scope, std::string& out);
  Flow exec_for(const Node& n, const std::shared_ptr<Scope>& scope, std::string& out);
  void exec_set(const Node& n, const std::shared_ptr<Scope>& scope);
  void exec_call_block(const Node& n, const std::shared_ptr<Scope>& scope, std::string& out);
  Value eval(const Expr& e, const std::shared_ptr<Scope>& scope);
  Value eval_call(const Expr& e, const std::shared_ptr<Scope>& scope);
  Value call(const Value& callee, ValueList& args, KwValues& kwargs);
  void append_output(std::string& out, std::string_view text);

  // Python == within the step budget (charged for the items and bytes compared).
  bool equal(const Value& a, const Value& b);
  Value getattr(const Value& obj, const std::string& name);
  Value getitem(const Value& obj, const Value& key);
};

// Steps charged for an operation reading or returning `v`: one per 16 bytes of a string and
// one per 4 items of a list or dict.
uint64_t work_of(const Value& v);

// Builtins (jinja_builtins.cpp, jinja_filters.cpp).
// Positional argument `index` or keyword argument `name` of a call, else `fallback`.
Value arg(ValueList& args, KwValues& kwargs, size_t index, const char* name, Value fallback = Value());
int64_t int_arg(Interpreter& in, const Value& v, const char* what);  // an int argument, or an error
Value items_of(const Value& dict);  // dict.items(): a list of (key, value) tuples
bool has_filter(std::string_view name);
bool has_test(std::string_view name);
// Refuses, as Jinja2 does when it compiles a template, filters and tests that do not exist:
// TemplateError(Syntax) naming the first one's line and column.
void check_filters_and_tests(const Body& body);
Value apply_filter(Interpreter& in, const std::string& name, ValueList& args, KwValues& kwargs);
bool apply_test(Interpreter& in, const std::string& name, ValueList& args, KwValues& kwargs);
// A safe method of a str, dict or list value as a callable, or nullopt when `name` is none.
std::optional<Value> bound_method(Interpreter& in, const Value& obj, const std::string& name);
void add_globals(Scope& scope);
// Python's iteration over a value (dict: keys, str: code points); errors for non-iterables.
ValueList iterate(Interpreter& in, const Value& v);
// printf-style formatting ("%s and %d" % values): s, r, d, i, f and %%.
// values may go unused when `mapping` (Python's rule for str % list and str % dict).
std::string percent_format(Interpreter& in, const std::string& fmt, const ValueList& values, bool mapping = false);
// Python's < for sort/compare: numbers, strings, sequences; error for other pairs.
bool less_than(Interpreter& in, const Value& a, const Value& b);

}  // namespace chorus::jinja
