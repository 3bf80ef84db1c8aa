// The interpreter: statements, expressions, operators, attribute and item access. See jinja_eval.h.
#include "engine/jinja_eval.h"

#include <algorithm>
#include <cmath>

namespace chorus::jinja {

const Value* Scope::lookup(std::string_view name) const {
  for (const Scope* s = this; s; s = s->parent.get())
    for (const auto& [k, v] : s->vars)
      if (k == name) return &v;
  return nullptr;
}

void Scope::set(std::string_view name, Value v) {
  for (auto& [k, old] : vars)
    if (k == name) {
      old = std::move(v);
      return;
    }
  vars.emplace_back(std::string(name), std::move(v));
}

void Interpreter::step(uint64_t n) {
  steps += n;
  if (steps > options.limits.max_steps)
    fail(TemplateError::Kind::Limit,
         "the template did more than " + std::to_string(options.limits.max_steps) + " steps of work (endless or huge loop?)");
}

void Interpreter::fail(TemplateError::Kind kind, const std::string& message) const {
  throw TemplateError(kind, line, column, message);
}

bool Interpreter::equal(const Value& a, const Value& b) {
  uint64_t budget = steps < options.limits.max_steps ? options.limits.max_steps - steps : 0;
  const uint64_t before = budget;
  try {
    const bool eq = equals(a, b, &budget);
    steps += before - budget;
    return eq;
  } catch (const TemplateError&) {
    step(before + 1);  // out of budget: report it as the step limit, at this node
    throw;
  }
}

void Interpreter::check_string_size(size_t bytes) const {
  if (bytes > options.limits.max_string_bytes)
    fail(TemplateError::Kind::Limit, "a string of " + std::to_string(bytes) + " bytes would exceed the limit of " +
                                         std::to_string(options.limits.max_string_bytes) + " bytes");
}

void Interpreter::check_list_size(size_t items) const {
  if (items > options.limits.max_list_items)
    fail(TemplateError::Kind::Limit, "a list of " + std::to_string(items) + " items would exceed the limit of " +
                                         std::to_string(options.limits.max_list_items) + " items");
}

void Interpreter::append_output(std::string& out, std::string_view text) {
  step(text.size() / 64);
  if (out.size() + text.size() > options.limits.max_output_bytes)
    fail(TemplateError::Kind::Limit,
         "the rendered text would exceed the limit of " + std::to_string(options.limits.max_output_bytes) + " bytes");
  out += text;
}

uint64_t work_of(const Value& v) {
  if (v.is_string()) return v.as_string().size() / 16;
  if (v.is_sequence()) return v.items().size() / 4;
  if (v.is_dict()) return v.entries().size() / 4;
  return 0;
}

namespace {

// A loop iteration costs more than one expression (a scope reset and a loop object), so it is
// charged as several steps.
constexpr uint64_t kLoopIterationSteps = 4;


// Marks the node being evaluated (for error positions) and counts how deeply evaluations nest:
// a macro recursing through deep expressions would otherwise exhaust the C++ stack.
struct Position {
  Interpreter& in;
  int line, column;
  Position(Interpreter& interp, int l, int c) : in(interp), line(interp.line), column(interp.column) {
    interp.line = l;
    interp.column = c;
    if (++interp.eval_depth > interp.options.limits.max_eval_depth) {
      --interp.eval_depth;
      interp.fail(TemplateError::Kind::Limit, "evaluation nested deeper than " +
                                                  std::to_string(interp.options.limits.max_eval_depth) + " levels");
    }
    const auto here = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
    if (interp.stack_base > here && interp.stack_base - here > interp.options.limits.max_stack_bytes) {
      --interp.eval_depth;
      interp.fail(TemplateError::Kind::Limit,
                  "evaluation nested deeper than " + std::to_string(interp.eval_depth) + " levels used " +
                      std::to_string(interp.options.limits.max_stack_bytes >> 10) + " KiB of stack");
    }
  }
  ~Position() {
    --in.eval_depth;
    in.line = line;
    in.column = column;
  }
};

[[noreturn]] void undefined_error(Interpreter& in, const Value& v) {
  in.fail(v.undefined_hint().empty() ? "value is undefined" : v.undefined_hint());
}

std::string type_repr(const Value& obj) {
  return obj.is_none() ? "None" : std::string(obj.type_name()) + " object";
}

Value missing_attribute(const Value& obj, const std::string& name) {
  return Value::undefined("'" + type_repr(obj) + "' has no attribute '" + name + "'");
}

Value missing_element(const Value& obj, const Value& key) {
  if (key.is_string()) return missing_attribute(obj, key.as_string());
  return Value::undefined(type_repr(obj) + " has no element " + to_repr(key));
}

// 64-bit integer arithmetic; overflow is an error (Python would grow a bigint).
int64_t checked(Interpreter& in, char op, int64_t a, int64_t b) {
  int64_t r = 0;
  const bool overflow = op == '+'   ? __builtin_add_overflow(a, b, &r)
                        : op == '-' ? __builtin_sub_overflow(a, b, &r)
                                    : __builtin_mul_overflow(a, b, &r);
  if (overflow) in.fail("integer overflow (chat templates compute with 64-bit integers)");
  return r;
}

int64_t floor_div(Interpreter& in, int64_t a, int64_t b) {
  if (b == 0) in.fail("integer division or modulo by zero");
  if (a == INT64_MIN && b == -1) in.fail("integer overflow (chat templates compute with 64-bit integers)");
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

Value repeat(Interpreter& in, const Value& seq, int64_t n) {
  if (n <= 0) return seq.is_string() ? Value(std::string()) : seq.is_sequence() ? Value::list(ValueList{}) : Value();
  const auto count = static_cast<uint64_t>(n);
  if (seq.is_string()) {
    const size_t len = seq.as_string().size();
    if (len != 0 && count > in.options.limits.max_string_bytes / len + 1) in.check_string_size(SIZE_MAX);
    in.check_string_size(len * count);
    in.step(len * count / 64);
    std::string out;
    out.reserve(len * count);
    for (uint64_t i = 0; i < count; ++i) out += seq.as_string();
    return Value(std::move(out));
  }
  const size_t len = seq.items().size();
  if (len != 0 && count > in.options.limits.max_list_items / len + 1) in.check_list_size(SIZE_MAX);
  in.check_list_size(len * count);
  in.step(len * count);
  ValueList out;
  for (uint64_t i = 0; i < count; ++i) out.insert(out.end(), seq.items().begin(), seq.items().end());
  return seq.type() == Value::Type::Tuple ? Value::tuple(std::move(out)) : Value::list(std::move(out));
}

[[noreturn]] void bad_operands(Interpreter& in, const std::string& op, const Value& a, const Value& b) {
  in.fail("unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" + b.type_name() + "'");
}

Value binary_op(Interpreter& in, const std::string& op, const Value& a, const Value& b) {
  if (op == "~") {
    const std::string sa = to_str(a), sb = to_str(b);
    in.check_string_size(sa.size() + sb.size());
    in.step((sa.size() + sb.size()) / 64);
    return Value(sa + sb);
  }
  if (a.is_undefined()) undefined_error(in, a);
  if (b.is_undefined()) undefined_error(in, b);
  const bool nums = a.is_number() && b.is_number();
  const bool ints = nums && !a.is_float() && !b.is_float();
  if (op == "+") {
    if (ints) return Value(checked(in, '+', a.as_int(), b.as_int()));
    if (nums) return Value(a.as_float() + b.as_float());
    if (a.is_string() && b.is_string()) {
      in.check_string_size(a.as_string().size() + b.as_string().size());
      in.step(b.as_string().size() / 256);
      return Value(a.as_string() + b.as_string());
    }
    if (a.is_sequence() && a.type() == b.type()) {
      in.check_list_size(a.items().size() + b.items().size());
      in.step(a.items().size() + b.items().size());
      ValueList out = a.items();
      out.insert(out.end(), b.items().begin(), b.items().end());
      return a.type() == Value::Type::Tuple ? Value::tuple(std::move(out)) : Value::list(std::move(out));
    }
    bad_operands(in, op, a, b);
  }
  if (op == "-") {
    if (ints) return Value(checked(in, '-', a.as_int(), b.as_int()));
    if (nums) return Value(a.as_float() - b.as_float());
    bad_operands(in, op, a, b);
  }
  if (op == "*") {
    if (ints) return Value(checked(in, '*', a.as_int(), b.as_int()));
    if (nums) return Value(a.as_float() * b.as_float());
    if ((a.is_string() || a.is_sequence()) && b.is_number() && !b.is_float()) return repeat(in, a, b.as_int());
    if ((b.is_string() || b.is_sequence()) && a.is_number() && !a.is_float()) return repeat(in, b, a.as_int());
    bad_operands(in, op, a, b);
  }
  if (!nums) {
    if (op == "%" && a.is_string()) {
      // Python reads a tuple as the arguments, and lets a list or dict (a "mapping") go unused.
      if (b.type() == Value::Type::Tuple) return Value(percent_format(in, a.as_string(), b.items()));
      return Value(percent_format(in, a.as_string(), ValueList{b}, b.is_dict() || b.type() == Value::Type::List));
    }
    bad_operands(in, op, a, b);
  }
  if (op == "/") {
    if (b.as_float() == 0.0) in.fail("division by zero");
    return Value(a.as_float() / b.as_float());
  }
  if (op == "//") {
    if (ints) return Value(floor_div(in, a.as_int(), b.as_int()));
    if (b.as_float() == 0.0) in.fail("float floor division by zero");
    return Value(std::floor(a.as_float() / b.as_float()));
  }
  if (op == "%") {
    if (ints) {
      const int64_t q = floor_div(in, a.as_int(), b.as_int());
      return Value(a.as_int() - q * b.as_int());
    }
    if (b.as_float() == 0.0) in.fail("float modulo by zero");
    double m = std::fmod(a.as_float(), b.as_float());
    if (m != 0 && ((m < 0) != (b.as_float() < 0))) m += b.as_float();
    if (m == 0) m = std::copysign(0.0, b.as_float());  // Python: the sign of the divisor
    return Value(m);
  }
  if (op == "**") {
    if (ints && b.as_int() >= 0) {
      int64_t base = a.as_int(), e = b.as_int(), acc = 1;
      while (e > 0) {
        in.step();
        if (e & 1) acc = checked(in, '*', acc, base);
        e >>= 1;
        if (e > 0) base = checked(in, '*', base, base);
      }
      return Value(acc);
    }
    return Value(std::pow(a.as_float(), b.as_float()));
  }
  in.fail("unknown operator " + op);
}

bool contains(Interpreter& in, const Value& container, const Value& item) {
  switch (container.type()) {
    case Value::Type::String:
      if (!item.is_string()) in.fail(std::string("'in <string>' requires string as left operand, not ") + item.type_name());
      in.step(container.as_string().size() / 64);
      return container.as_string().find(item.as_string()) != std::string::npos;
    case Value::Type::List:
    case Value::Type::Tuple:
      in.step(container.items().size() / 16);
      for (const auto& v : container.items())
        if (in.equal(v, item)) return true;
      return false;
    case Value::Type::Dict: return container.find(item) != nullptr;
    case Value::Type::Undefined: return false;
    default: in.fail(std::string("argument of type '") + container.type_name() + "' is not iterable");
  }
}

bool compare(Interpreter& in, const std::string& op, const Value& a, const Value& b) {
  in.step(work_of(a) + work_of(b));
  if (op == "==") return in.equal(a, b);
  if (op == "!=") return !in.equal(a, b);
  if (op == "in") return contains(in, b, a);
  if (op == "notin") return !contains(in, b, a);
  if (op == "<") return less_than(in, a, b);
  if (op == ">") return less_than(in, b, a);
  if (op == "<=") return !less_than(in, b, a);
  if (op == ">=") return !less_than(in, a, b);
  in.fail("unknown comparison " + op);
}

// Python's index normalisation for a[i]: negative counts from the end; nullopt when outside.
// Byte offset of every code point of s, then s.size(): 4 bytes per code point.
std::vector<uint32_t> code_point_starts(const std::string& s) {
  std::vector<uint32_t> starts;
  for (size_t i = 0; i < s.size();) {
    starts.push_back(static_cast<uint32_t>(i));
    decode_utf8(s, i);
  }
  starts.push_back(static_cast<uint32_t>(s.size()));
  return starts;
}

bool is_ascii(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

std::optional<size_t> index_of(int64_t i, size_t size) {
  const auto n = static_cast<int64_t>(size);
  if (i < 0) i += n;
  if (i < 0 || i >= n) return std::nullopt;
  return static_cast<size_t>(i);
}

Value slice(Interpreter& in, const Value& obj, const Value& start_v, const Value& stop_v, const Value& step_v) {
  if (obj.is_undefined()) undefined_error(in, obj);
  in.step(work_of(obj));
  auto bound = [&](const Value& v) -> std::optional<int64_t> {
    if (v.is_none() || v.is_undefined()) return std::nullopt;
    if (!v.is_number() || v.is_float()) in.fail("slice indices must be integers or None");
    return v.as_int();
  };
  const int64_t step = bound(step_v).value_or(1);
  if (step == 0) in.fail("slice step cannot be zero");
  std::vector<uint32_t> starts;
  size_t n = 0;
  const bool ascii = obj.is_string() && is_ascii(obj.as_string());
  if (ascii) {
    n = obj.as_string().size();
  } else if (obj.is_string()) {
    in.step(obj.as_string().size() / 2);  // decoding every code point costs more than a scan
    starts = code_point_starts(obj.as_string());
    n = starts.size() - 1;
  } else if (obj.is_sequence()) {
    n = obj.items().size();
  } else {
    in.fail(std::string("'") + obj.type_name() + "' object is not subscriptable");
  }
  const auto len = static_cast<int64_t>(n);
  auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {
    if (!v) return dflt;
    int64_t x = *v;
    if (x < 0) x += len;
    if (step > 0) return std::clamp<int64_t>(x, 0, len);
    return std::clamp<int64_t>(x, -1, len - 1);
  };
  const int64_t start = clamp(bound(start_v), step > 0 ? 0 : len - 1);
  const int64_t stop = clamp(bound(stop_v), step > 0 ? len : -1);
  std::vector<size_t> picks;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) picks.push_back(static_cast<size_t>(i));
  in.step(picks.size() / 16);
  if (obj.is_string()) {
    std::string out;
    if (ascii && step == 1 && !picks.empty()) return Value(obj.as_string().substr(picks.front(), picks.size()));
    for (size_t i : picks) {
      if (ascii) out += obj.as_string()[i];
      else out.append(obj.as_string(), starts[i], starts[i + 1] - starts[i]);
    }
    return Value(std::move(out));
  }
  ValueList out;
  for (size_t i : picks) out.push_back(obj.items()[i]);
  return obj.type() == Value::Type::Tuple ? Value::tuple(std::move(out)) : Value::list(std::move(out));
}

Value loop_attribute(const Value& loop, const std::string& name) {
  const LoopInfo& info = loop.loop_info();
  const auto n = static_cast<int64_t>(info.items->size());
  const auto i = static_cast<int64_t>(info.index);
  if (name == "index") return Value(i + 1);
  if (name == "index0") return Value(i);
  if (name == "revindex") return Value(n - i);
  if (name == "revindex0") return Value(n - i - 1);
  if (name == "first") return Value(i == 0);
  if (name == "last") return Value(i == n - 1);
  if (name == "length") return Value(n);
  if (name == "depth") return Value(int64_t{1});
  if (name == "depth0") return Value(int64_t{0});
  if (name == "previtem") return i > 0 ? (*info.items)[info.index - 1] : Value::undefined("there is no previous item");
  if (name == "nextitem") return i < n - 1 ? (*info.items)[info.index + 1] : Value::undefined("there is no next item");
  if (name == "cycle") {
    return Value::function("loop.cycle", [i](Interpreter& interp, ValueList& args, KwValues&) {
      if (args.empty()) interp.fail("no items for cycling given");
      return args[static_cast<size_t>(i) % args.size()];
    });
  }
  return missing_attribute(loop, name);
}

void assign_targets(Interpreter& in, Scope& scope, const std::vector<std::string>& targets, const Value& v) {
  if (targets.size() == 1) {
    scope.set(targets[0], v);
    return;
  }
  const ValueList items = iterate(in, v);
  if (items.size() != targets.size())
    in.fail("cannot unpack " + std::to_string(items.size()) + " values into " + std::to_string(targets.size()) + " names");
  for (size_t k = 0; k < targets.size(); ++k) scope.set(targets[k], items[k]);
}

// A macro (or a call block's body as `caller`) as a callable value. It holds its defining
// scope weakly: scopes own the values in them, so a strong reference would be a cycle.
Value make_callable(const std::string& name, const std::vector<MacroParam>* params, const Body* body,
                    const std::weak_ptr<Scope>& where) {
  return Value::function(name, [name, params, body, where](Interpreter& in, ValueList& args, KwValues& kwargs) {
    auto parent = where.lock();
    if (!parent) in.fail("macro '" + name + "' called after the scope it was defined in ended");
    if (in.call_depth >= in.options.limits.max_call_depth)
      in.fail(TemplateError::Kind::Limit,
              "macro calls nested deeper than " + std::to_string(in.options.limits.max_call_depth) + " (endless recursion?)");
    struct Depth {
      int& d;
      explicit Depth(int& depth) : d(depth) { ++d; }
      ~Depth() { --d; }
    } depth(in.call_depth);
    auto s = std::make_shared<Scope>();
    s->parent = parent;
    if (args.size() > params->size())
      in.fail("macro '" + name + "' takes not more than " + std::to_string(params->size()) + " argument(s)");
    std::vector<bool> bound(params->size(), false);
    for (size_t i = 0; i < args.size(); ++i) {
      s->set((*params)[i].name, args[i]);
      bound[i] = true;
    }
    for (auto& [key, v] : kwargs) {
      size_t k = 0;
      while (k < params->size() && (*params)[k].name != key) ++k;
      if (k == params->size()) {
        if (key == "caller") {
          s->set("caller", v);
          continue;
        }
        in.fail("macro '" + name + "' takes no keyword argument '" + key + "'");
      }
      if (bound[k]) in.fail("macro '" + name + "' got multiple values for argument '" + key + "'");
      s->set(key, v);
      bound[k] = true;
    }
    for (size_t k = 0; k < params->size(); ++k) {
      if (bound[k]) continue;
      const MacroParam& p = (*params)[k];
      s->set(p.name, p.default_value ? in.eval(*p.default_value, s)
                                     : Value::undefined("parameter '" + p.name + "' was not provided"));
    }
    std::string out;
    in.exec(*body, s, out);
    return Value(std::move(out));
  });
}

}  // namespace

Value Interpreter::getattr(const Value& obj, const std::string& name) {
  if (!name.empty() && name[0] == '_')
    fail("access to attribute '" + name + "' of '" + obj.type_name() + "' object is unsafe");
  switch (obj.type()) {
    case Value::Type::Undefined: undefined_error(*this, obj);
    case Value::Type::Dict: {
      if (auto m = bound_method(*this, obj, name)) return *m;
      if (const Value* v = obj.find(std::string_view(name))) return *v;
      return missing_attribute(obj, name);
    }
    case Value::Type::Namespace: {
      auto& attrs = obj.namespace_object().attrs;
      auto it = attrs.find(name);
      if (it != attrs.end()) return it->second;
      return missing_attribute(obj, name);
    }
    case Value::Type::String:
    case Value::Type::List:
    case Value::Type::Tuple:
      if (auto m = bound_method(*this, obj, name)) return *m;
      return missing_attribute(obj, name);
    case Value::Type::Loop: return loop_attribute(obj, name);
    default: return missing_attribute(obj, name);
  }
}

Value Interpreter::getitem(const Value& obj, const Value& key) {
  switch (obj.type()) {
    case Value::Type::Undefined: undefined_error(*this, obj);
    case Value::Type::Dict:
      step(obj.entries().size() / 4 + work_of(key) * obj.entries().size());  // a linear search
      if (const Value* v = obj.find(key)) return *v;
      break;
    case Value::Type::List:
    case Value::Type::Tuple:
      if (key.is_number() && !key.is_float()) {
        if (auto i = index_of(key.as_int(), obj.items().size())) return obj.items()[*i];
        return missing_element(obj, key);
      }
      break;
    case Value::Type::String:
      if (key.is_number() && !key.is_float()) {
        step(work_of(obj));
        if (is_ascii(obj.as_string())) {
          if (auto i = index_of(key.as_int(), obj.as_string().size())) return Value(std::string(1, obj.as_string()[*i]));
          return missing_element(obj, key);
        }
        step(obj.as_string().size() / 2);  // decoding every code point costs more than a scan
        const auto starts = code_point_starts(obj.as_string());
        if (auto i = index_of(key.as_int(), starts.size() - 1))
          return Value(obj.as_string().substr(starts[*i], starts[*i + 1] - starts[*i]));
        return missing_element(obj, key);
      }
      break;
    default: break;
  }
  if (key.is_string()) {  // Jinja falls back to attribute access for string keys
    if (!key.as_string().empty() && key.as_string()[0] == '_')
      fail("access to attribute '" + key.as_string() + "' of '" + obj.type_name() + "' object is unsafe");
    if (obj.is_namespace()) return getattr(obj, key.as_string());
    if (auto m = bound_method(*this, obj, key.as_string())) return *m;
  }
  return missing_element(obj, key);
}

Value Interpreter::call(const Value& callee, ValueList& args, KwValues& kwargs) {
  if (callee.is_undefined()) undefined_error(*this, callee);
  if (!callee.is_function()) fail(std::string("'") + callee.type_name() + "' object is not callable");
  return callee.function_object()(*this, args, kwargs);
}

// A call, filter or test: arguments first, then the callee; filters and methods are charged for
// the size of what they read and return.
Value Interpreter::eval_call(const Expr& e, const std::shared_ptr<Scope>& scope) {
  ValueList args;
  for (const auto& a : e.args) args.push_back(eval(*a, scope));
  KwValues kwargs;
  for (const auto& [k, v] : e.kwargs) kwargs.emplace_back(k, eval(*v, scope));
  // Filters and methods do work in proportion to the size of what they read and write.
  for (const auto& a : args) step(work_of(a));
  try {
    if (e.kind == Expr::Kind::Call) {
      Value callee = std::move(args[0]);
      args.erase(args.begin());
      Value result = call(callee, args, kwargs);
      step(work_of(result));
      return result;
    }
    if (e.kind == Expr::Kind::Filter) {
      Value result = apply_filter(*this, e.name, args, kwargs);
      step(work_of(result));
      return result;
    }
    return Value(apply_test(*this, e.name, args, kwargs) != e.negated);
  } catch (const TemplateError& err) {
    if (err.line() != 0) throw;
    throw TemplateError(err.kind(), e.line, e.column, err.message());  // errors from jinja_value.cpp
  }
}

Value Interpreter::eval(const Expr& e, const std::shared_ptr<Scope>& scope) {
  step();
  Position pos(*this, e.line, e.column);
  switch (e.kind) {
    case Expr::Kind::Const: return e.value;
    case Expr::Kind::Name: {
      if (const Value* v = scope->lookup(e.name)) return *v;
      return Value::undefined("'" + e.name + "' is undefined");
    }
    case Expr::Kind::List:
    case Expr::Kind::Tuple: {
      ValueList items;
      for (const auto& a : e.args) items.push_back(eval(*a, scope));
      return e.kind == Expr::Kind::List ? Value::list(std::move(items)) : Value::tuple(std::move(items));
    }
    case Expr::Kind::Dict: {
      DictEntries entries;
      for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
        Value k = eval(*e.args[i], scope);
        Value v = eval(*e.args[i + 1], scope);
        if (k.is_undefined()) undefined_error(*this, k);
        if (k.depth() > 0 && k.type() != Value::Type::Tuple) fail(std::string("unhashable type: '") + k.type_name() + "'");
        bool replaced = false;
        for (auto& entry : entries)
          if (equal(entry.first, k)) entry.second = v, replaced = true;
        if (!replaced) entries.emplace_back(std::move(k), std::move(v));
      }
      return Value::dict(std::move(entries));
    }
    case Expr::Kind::GetAttr: return getattr(eval(*e.args[0], scope), e.name);
    case Expr::Kind::GetItem: {
      Value obj = eval(*e.args[0], scope);
      return getitem(obj, eval(*e.args[1], scope));
    }
    case Expr::Kind::Slice: {
      Value obj = eval(*e.args[0], scope);
      auto part = [&](size_t k) { return e.args[k] ? eval(*e.args[k], scope) : Value::none(); };
      return slice(*this, obj, part(1), part(2), part(3));
    }
    case Expr::Kind::Call:
    case Expr::Kind::Filter:
    case Expr::Kind::Test: return eval_call(e, scope);
    case Expr::Kind::Unary: {
      Value v = eval(*e.args[0], scope);
      if (e.name == "not") return Value(!v.truthy());
      if (v.is_undefined()) undefined_error(*this, v);
      if (!v.is_number()) fail(std::string("bad operand type for unary ") + e.name + ": '" + v.type_name() + "'");
      if (e.name == "+") return v.is_bool() ? Value(v.as_int()) : v;
      if (v.is_float()) return Value(-v.as_float());
      if (v.as_int() == INT64_MIN) fail("integer overflow (chat templates compute with 64-bit integers)");
      return Value(-v.as_int());
    }
    case Expr::Kind::Binary: {
      if (e.name == "and" || e.name == "or") {
        Value l = eval(*e.args[0], scope);
        if (l.truthy() == (e.name == "or")) return l;
        return eval(*e.args[1], scope);
      }
      Value l = eval(*e.args[0], scope);
      Value r = eval(*e.args[1], scope);
      Position at(*this, e.line, e.column);
      return binary_op(*this, e.name, l, r);
    }
    case Expr::Kind::Compare: {
      Value left = eval(*e.args[0], scope);
      for (size_t k = 0; k < e.ops.size(); ++k) {
        Value right = eval(*e.args[k + 1], scope);
        Position at(*this, e.line, e.column);
        if (!compare(*this, e.ops[k], left, right)) return Value(false);
        left = std::move(right);
      }
      return Value(true);
    }
    case Expr::Kind::CondExpr:
      if (eval(*e.args[0], scope).truthy()) return eval(*e.args[1], scope);
      if (e.args[2]) return eval(*e.args[2], scope);
      return Value::undefined("the inline if expression had no else branch");
  }
  fail("unknown expression");
}

Interpreter::Flow Interpreter::exec(const Body& body, const std::shared_ptr<Scope>& scope, std::string& out) {
  for (const Node& n : body) {
    step();
    Position pos(*this, n.line, n.column);
    switch (n.kind) {
      case Node::Kind::Text: append_output(out, n.text); break;
      case Node::Kind::Output: {
        const Value v = eval(*n.expr, scope);
        append_output(out, v.is_string() ? std::string_view(v.as_string()) : std::string_view(to_str(v)));
        break;
      }
      case Node::Kind::If:
        if (const Flow f = exec_if(n, scope, out); f != Flow::Normal) return f;
        break;
      case Node::Kind::For:
        if (const Flow f = exec_for(n, scope, out); f != Flow::Normal) return f;
        break;
      case Node::Kind::Set: exec_set(n, scope); break;
      case Node::Kind::Macro: scope->set(n.text, make_callable(n.text, &n.params, &n.body, scope)); break;
      case Node::Kind::CallBlock: exec_call_block(n, scope, out); break;
      case Node::Kind::With: {
        auto s = std::make_shared<Scope>();
        s->parent = scope;
        for (size_t k = 0; k < n.targets.size(); ++k) s->set(n.targets[k], eval(*n.withs[k], scope));
        if (const Flow f = exec(n.body, s, out); f != Flow::Normal) return f;
        break;
      }
      case Node::Kind::Block:
        if (const Flow f = exec(n.body, scope, out); f != Flow::Normal) return f;
        break;
      case Node::Kind::Break: return Flow::Break;
      case Node::Kind::Continue: return Flow::Continue;
    }
  }
  return Flow::Normal;
}

Interpreter::Flow Interpreter::exec_if(const Node& n, const std::shared_ptr<Scope>& scope, std::string& out) {
  for (const auto& [cond, branch] : n.branches)
    if (eval(*cond, scope).truthy()) return exec(branch, scope, out);
  return exec(n.else_body, scope, out);
}

// A for loop: the iterable (filtered by `if` first, as Jinja2 does, so loop.length counts only
// kept items), one scope for the body emptied at each iteration, `loop` rebuilt per iteration.
// Break and continue end here; the else body runs when nothing was iterated.
Interpreter::Flow Interpreter::exec_for(const Node& n, const std::shared_ptr<Scope>& scope, std::string& out) {
  const Value iterable = eval(*n.expr, scope);
  std::shared_ptr<const ValueList> items;
  if (iterable.is_sequence() && !n.expr2) {
    items = iterable.shared_items();  // no copy
  } else {
    ValueList all = iterate(*this, iterable);
    if (n.expr2) {
      ValueList kept;
      auto s = std::make_shared<Scope>();
      s->parent = scope;
      for (auto& item : all) {
        s->vars.clear();
        assign_targets(*this, *s, n.targets, item);
        if (eval(*n.expr2, s).truthy()) kept.push_back(std::move(item));
      }
      all = std::move(kept);
    }
    items = std::make_shared<const ValueList>(std::move(all));
  }
  if (items->empty()) return exec(n.else_body, scope, out);
  auto s = std::make_shared<Scope>();
  s->parent = scope;
  for (size_t i = 0; i < items->size(); ++i) {
    step(kLoopIterationSteps);
    s->vars.clear();
    assign_targets(*this, *s, n.targets, (*items)[i]);
    s->set("loop", Value::loop(std::make_shared<const LoopInfo>(LoopInfo{items, i})));
    if (exec(n.body, s, out) == Flow::Break) break;
  }
  return Flow::Normal;
}

void Interpreter::exec_set(const Node& n, const std::shared_ptr<Scope>& scope) {
  if (!n.targets.empty() && n.targets[0].empty()) {  // {% set x %}...{% endset %}
    std::string captured;
    exec(n.body, scope, captured);
    scope->set(n.targets[1], Value(std::move(captured)));
  } else if (!n.text.empty()) {  // {% set ns.attr = value %}
    const Value* target = scope->lookup(n.targets[0]);
    if (!target || !target->is_namespace())
      fail("cannot assign attribute '" + n.text + "' of '" + n.targets[0] + "': only namespace() objects take assignments");
    Value v = eval(*n.expr, scope);
    target->namespace_object().attrs[n.text] = std::move(v);
  } else {
    assign_targets(*this, *scope, n.targets, eval(*n.expr, scope));
  }
}

// {% call(params) macro(args) %}body{% endcall %}: the macro gets the body as `caller`.
void Interpreter::exec_call_block(const Node& n, const std::shared_ptr<Scope>& scope, std::string& out) {
  ValueList args;
  for (size_t k = 1; k < n.expr->args.size(); ++k) args.push_back(eval(*n.expr->args[k], scope));
  KwValues kwargs;
  for (const auto& [k, v] : n.expr->kwargs) kwargs.emplace_back(k, eval(*v, scope));
  kwargs.emplace_back("caller", make_callable("caller", &n.params, &n.body, scope));
  const Value callee = eval(*n.expr->args[0], scope);
  append_output(out, to_str(call(callee, args, kwargs)));
}

std::string render(const Body& body, const Value& context, const RenderOptions& options) {
  Interpreter in;
  in.options = options;
  in.stack_base = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
  auto root = std::make_shared<Scope>();
  add_globals(*root);
  if (context.is_dict())
    for (const auto& [k, v] : context.entries())
      if (k.is_string()) root->set(k.as_string(), v);
  auto top = std::make_shared<Scope>();
  top->parent = root;
  std::string out;
  in.exec(body, top, out);
  return out;
}

}  // namespace chorus::jinja
