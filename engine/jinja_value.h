// engine/jinja_value.h — the values a chat template computes with, and the one error type.
//
// Owns: jinja::Value (None, bool, int, float, string, list, tuple, dict, Undefined, namespace,
// callables), Python's conversions of them to text (str() for output, repr() inside
// containers), JSON in (parse_json) and out (to_json, as Python's json.dumps writes it), and
// TemplateError, the single exception every part of the interpreter throws.
//
// Values are immutable once built, except a namespace's attributes (Jinja's `namespace()` is
// the one mutable object templates may assign into). Lists and dicts share their storage
// between copies, so passing a conversation around never copies its text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace chorus::jinja {

// Any failure while parsing or rendering a template. line/column are 1-based positions in the
// template source (0 when the failure has no position, e.g. a bad JSON document).
class TemplateError : public std::runtime_error {
 public:
  enum class Kind {
    Syntax,   // the template does not parse
    Runtime,  // an operation failed (type error, undefined value used, unsafe attribute, ...)
    Raised,   // the template called raise_exception(message); message() is exactly its text
    Limit,    // a work, output, size or depth limit was reached
  };
  TemplateError(Kind kind, int line, int column, std::string message);
  Kind kind() const { return kind_; }
  int line() const { return line_; }
  int column() const { return column_; }
  const std::string& message() const { return message_; }

 private:
  Kind kind_;
  int line_, column_;
  std::string message_;
};

class Value;
struct Interpreter;
using ValueList = std::vector<Value>;
using DictEntries = std::vector<std::pair<Value, Value>>;  // insertion order, as Python's dict

// A native function callable from templates: positional args, keyword args.
using NativeFunction = std::function<Value(Interpreter&, ValueList& args, std::vector<std::pair<std::string, Value>>& kwargs)>;

struct Namespace {
  std::map<std::string, Value, std::less<>> attrs;
};

// The `loop` variable of one for-loop iteration; its attributes are computed when read.
struct LoopInfo {
  std::shared_ptr<const ValueList> items;  // what the loop iterates, after its `if` filter
  size_t index = 0;                        // 0-based
};

struct FunctionBox {
  std::string name;
  NativeFunction fn;
};

class Value {
 public:
  enum class Type { Undefined, None, Bool, Int, Float, String, List, Tuple, Dict, Namespace, Function, Loop };

  Value() = default;  // Undefined
  static Value undefined(std::string hint = {});
  static Value none();
  Value(bool b);
  Value(int64_t i);
  Value(int i) : Value(static_cast<int64_t>(i)) {}
  Value(double d);
  Value(std::string s);
  Value(std::string_view s) : Value(std::string(s)) {}
  Value(const char* s) : Value(std::string(s)) {}
  static Value list(ValueList items);
  static Value tuple(ValueList items);
  static Value dict(DictEntries entries = {});
  static Value ns(std::shared_ptr<Namespace> n);
  static Value function(std::string name, NativeFunction f);
  static Value list(std::shared_ptr<const ValueList> items);
  static Value loop(std::shared_ptr<const LoopInfo> info);

  Type type() const { return type_; }
  bool is_undefined() const { return type_ == Type::Undefined; }
  bool is_none() const { return type_ == Type::None; }
  bool is_bool() const { return type_ == Type::Bool; }
  bool is_int() const { return type_ == Type::Int; }
  bool is_float() const { return type_ == Type::Float; }
  bool is_number() const { return type_ == Type::Int || type_ == Type::Float || type_ == Type::Bool; }
  bool is_string() const { return type_ == Type::String; }
  bool is_sequence() const { return type_ == Type::List || type_ == Type::Tuple; }
  bool is_dict() const { return type_ == Type::Dict; }
  bool is_namespace() const { return type_ == Type::Namespace; }
  bool is_function() const { return type_ == Type::Function; }
  bool is_loop() const { return type_ == Type::Loop; }

  bool as_bool() const { return b_; }
  int64_t as_int() const { return type_ == Type::Bool ? (b_ ? 1 : 0) : i_; }
  double as_float() const { return type_ == Type::Float ? d_ : static_cast<double>(as_int()); }
  const std::string& as_string() const { return *static_cast<const std::string*>(p_.get()); }
  const ValueList& items() const { return *static_cast<const ValueList*>(p_.get()); }  // List, Tuple
  std::shared_ptr<const ValueList> shared_items() const { return std::static_pointer_cast<const ValueList>(p_); }
  const DictEntries& entries() const { return *static_cast<const DictEntries*>(p_.get()); }  // Dict
  Namespace& namespace_object() const { return *const_cast<Namespace*>(static_cast<const Namespace*>(p_.get())); }
  const NativeFunction& function_object() const { return static_cast<const FunctionBox*>(p_.get())->fn; }
  const std::string& function_name() const { return static_cast<const FunctionBox*>(p_.get())->name; }
  const LoopInfo& loop_info() const { return *static_cast<const LoopInfo*>(p_.get()); }
  const std::string& undefined_hint() const;  // Undefined: what was missing ("'x' is undefined")
  const void* identity() const { return p_.get(); }  // for `is sameas` and equality of objects
  // How deeply containers nest inside this value (0 for scalars). Building a value nested deeper
  // than kMaxValueDepth throws TemplateError(Limit), so every recursion over values is bounded.
  uint32_t depth() const { return depth_; }

  // Dict lookup by key (Python equality); nullptr when absent.
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;

  bool truthy() const;
  // Python's type name as Jinja's messages spell it: "str", "dict", "list", "int", ...
  const char* type_name() const;

 private:
  Type type_ = Type::Undefined;
  uint32_t depth_ = 0;  // containers: 1 + the deepest item's depth (fits in the padding)
  union {
    bool b_;
    int64_t i_ = 0;
    double d_;
  };
  std::shared_ptr<const void> p_;  // the string, list, dict, Namespace, FunctionBox or LoopInfo
};

inline constexpr uint32_t kMaxValueDepth = 500;

// Python ==, as Jinja compares (1 == 1.0 == True; Undefined equals only Undefined). With a
// budget, every item and every 64 bytes compared take one unit from it, and running out throws
// TemplateError(Limit): comparing large lists of large strings is bounded work.
bool equals(const Value& a, const Value& b, uint64_t* budget = nullptr);

// str(value) as Jinja prints it: strings as they are, None as "None", lists as Python's repr.
std::string to_str(const Value& v);
// repr(value): strings quoted as Python quotes them.
std::string to_repr(const Value& v);
// Python's repr(float): shortest round-trip digits, "1.0", "1e+16", "inf", "nan".
std::string float_repr(double d);

// How to_json writes, in json.dumps's terms. The defaults are json.dumps's: ensure_ascii, and
// ", " / ": " separators, or "," and a newline plus `indent` spaces per level when indent >= 0.
struct JsonFormat {
  int indent = -1;            // < 0: all on one line
  bool sort_keys = false;
  bool ensure_ascii = true;   // false: non-ASCII characters are written as they are
  std::string item_separator = ", ";  // used as "," when indent >= 0 unless given explicitly
  std::string key_separator = ": ";
  bool explicit_separators = false;
  size_t max_bytes = SIZE_MAX;  // TemplateError(Limit) past this size
};
// JSON as Python's json.dumps writes it. Undefined, namespaces and functions are not
// serializable: TemplateError(Runtime).
std::string to_json(const Value& v, const JsonFormat& format = {});
// Parses a JSON document (objects keep their key order). Throws TemplateError(Syntax).
Value parse_json(std::string_view text);

// UTF-8 helpers shared by the lexer and the string filters. Invalid bytes count as one code
// point each, so no input is ever rejected.
uint32_t decode_utf8(std::string_view s, size_t& i);  // advances i past one code point
void append_utf8(std::string& out, uint32_t cp);
std::vector<std::string_view> split_code_points(std::string_view s);
bool is_py_space(uint32_t cp);  // Python's str.isspace() for one code point
// s without leading (left) and/or trailing (right) code points that are Python whitespace, or,
// when chars is given, code points found in chars: Python's str.strip/lstrip/rstrip.
std::string_view py_strip(std::string_view s, bool left, bool right, const std::string* chars = nullptr);

}  // namespace chorus::jinja
