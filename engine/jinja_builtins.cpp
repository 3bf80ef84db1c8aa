// The values templates reach beyond their data: iteration and ordering as Python does them, the
// safe methods of str, dict and list values, and the globals (range, namespace, dict,
// raise_exception, strftime_now). See jinja_eval.h.
#include <algorithm>
#include <cmath>
#include <ctime>
#include <map>

#include "engine/jinja_eval.h"
#include "engine/jinja_strings.h"

namespace chorus::jinja {

Value arg(ValueList& args, KwValues& kwargs, size_t index, const char* name, Value fallback) {
  for (auto& [k, v] : kwargs)
    if (k == name) return v;
  if (index < args.size()) return args[index];
  return fallback;
}

int64_t int_arg(Interpreter& in, const Value& v, const char* what) {
  if (!v.is_number() || v.is_float()) in.fail(std::string(what) + " must be an integer, not " + v.type_name());
  return v.as_int();
}

Value items_of(const Value& dict) {
  ValueList out;
  for (const auto& [k, v] : dict.entries()) out.push_back(Value::tuple({k, v}));
  return Value::list(std::move(out));
}

namespace {

const char* const kUnsafeMethods[] = {"append", "extend", "insert", "pop",   "remove",     "clear",  "sort",
                                      "reverse", "update", "setdefault", "popitem", "__setitem__", "__delitem__"};

template <size_t N>
bool listed(const char* const (&names)[N], const std::string& name) {
  for (const char* n : names)
    if (name == n) return true;
  return false;
}

}  // namespace

ValueList iterate(Interpreter& in, const Value& v) {
  switch (v.type()) {
    case Value::Type::Undefined: return {};
    case Value::Type::String: {
      ValueList out;
      in.step(v.as_string().size());  // one value built per code point
      for (auto cp : split_code_points(v.as_string())) out.push_back(Value(std::string(cp)));
      return out;
    }
    case Value::Type::List:
    case Value::Type::Tuple: in.step(v.items().size() / 4); return v.items();
    case Value::Type::Dict: {
      ValueList out;
      in.step(v.entries().size() / 4);
      for (const auto& [k, val] : v.entries()) out.push_back(k);
      return out;
    }
    default: in.fail(std::string("'") + v.type_name() + "' object is not iterable");
  }
}

bool less_than(Interpreter& in, const Value& a, const Value& b) {
  if (a.is_undefined()) in.fail(a.undefined_hint());
  if (b.is_undefined()) in.fail(b.undefined_hint());
  in.step(1 + (a.is_string() ? a.as_string().size() / 64 : 0));  // sorts compare n log n times
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_float() < b.as_float();
    return a.as_int() < b.as_int();
  }
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();
  if (a.is_sequence() && b.is_sequence()) {
    const auto &x = a.items(), &y = b.items();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (in.equal(x[i], y[i])) continue;
      return less_than(in, x[i], y[i]);
    }
    return x.size() < y.size();
  }
  in.fail(std::string("'<' not supported between instances of '") + a.type_name() + "' and '" + b.type_name() + "'");
}

std::optional<Value> bound_method(Interpreter& in, const Value& obj, const std::string& name) {
  in.step(work_of(obj));  // every method reads (at most) its whole object once
  if (listed(kUnsafeMethods, name) && (obj.is_dict() || obj.is_sequence()))
    in.fail("access to attribute '" + name + "' of '" + obj.type_name() + "' object is unsafe (templates cannot modify data)");
  if (obj.is_string() && is_string_method(name)) {
    return Value::function("str." + name, [obj, name](Interpreter& interp, ValueList& args, KwValues& kwargs) {
      return string_method(interp, obj.as_string(), name, args, kwargs);
    });
  }
  if (obj.is_dict() && (name == "items" || name == "keys" || name == "values" || name == "get" || name == "copy")) {
    return Value::function("dict." + name, [obj, name](Interpreter& interp, ValueList& args, KwValues& kwargs) -> Value {
      if (name == "items") return items_of(obj);
      if (name == "copy") return obj;
      if (name == "get") {
        if (args.empty()) interp.fail("get expected at least 1 argument, got 0");
        if (const Value* v = obj.find(args[0])) return *v;
        return arg(args, kwargs, 1, "default", Value::none());
      }
      ValueList out;
      for (const auto& [k, v] : obj.entries()) out.push_back(name == "keys" ? k : v);
      return Value::list(std::move(out));
    });
  }
  if (obj.is_sequence() && (name == "index" || name == "count")) {
    return Value::function("list." + name, [obj, name](Interpreter& interp, ValueList& args, KwValues&) -> Value {
      if (args.empty()) interp.fail(name + "() takes exactly one argument");
      int64_t n = 0;
      for (size_t i = 0; i < obj.items().size(); ++i) {
        if (!interp.equal(obj.items()[i], args[0])) continue;
        if (name == "index") return Value(static_cast<int64_t>(i));
        ++n;
      }
      if (name == "index") interp.fail(to_repr(args[0]) + " is not in list");
      return Value(n);
    });
  }
  return std::nullopt;
}

void add_globals(Scope& scope) {
  std::map<std::string, Value> globals;
  globals["range"] = Value::function("range", [](Interpreter& in, ValueList& args, KwValues&) {
    if (args.empty() || args.size() > 3) in.fail("range expected 1 to 3 arguments, got " + std::to_string(args.size()));
    int64_t start = 0, stop = 0, step = 1;
    if (args.size() == 1) {
      stop = int_arg(in, args[0], "range() argument");
    } else {
      start = int_arg(in, args[0], "range() argument");
      stop = int_arg(in, args[1], "range() argument");
      if (args.size() == 3) step = int_arg(in, args[2], "range() argument");
    }
    if (step == 0) in.fail("range() arg 3 must not be zero");
    const long double span = static_cast<long double>(stop) - static_cast<long double>(start);
    const long double count_ld = span / static_cast<long double>(step);
    const uint64_t count = count_ld <= 0 ? 0 : static_cast<uint64_t>(std::ceil(count_ld));
    in.check_list_size(count);
    in.step(count);
    ValueList out;
    out.reserve(count);
    for (uint64_t i = 0; i < count; ++i) out.push_back(Value(start + static_cast<int64_t>(i) * step));
    return Value::list(std::move(out));
  });
  globals["namespace"] = Value::function("namespace", [](Interpreter& in, ValueList& args, KwValues& kwargs) {
    auto ns = std::make_shared<Namespace>();
    for (const auto& a : args) {
      if (!a.is_dict()) in.fail("namespace() takes a mapping or keyword arguments");
      for (const auto& [k, v] : a.entries()) ns->attrs[to_str(k)] = v;
    }
    for (auto& [k, v] : kwargs) ns->attrs[k] = v;
    return Value::ns(std::move(ns));
  });
  globals["dict"] = Value::function("dict", [](Interpreter& in, ValueList& args, KwValues& kwargs) {
    DictEntries entries;
    for (const auto& a : args) {
      if (!a.is_dict()) in.fail("dict() takes a mapping or keyword arguments");
      entries = a.entries();
    }
    for (auto& [k, v] : kwargs) entries.emplace_back(Value(k), v);
    return Value::dict(std::move(entries));
  });
  globals["raise_exception"] = Value::function("raise_exception", [](Interpreter& in, ValueList& args, KwValues&) -> Value {
    in.fail(TemplateError::Kind::Raised, args.empty() ? std::string() : to_str(args[0]));
  });
  globals["strftime_now"] = Value::function("strftime_now", [](Interpreter& in, ValueList& args, KwValues&) {
    if (args.size() != 1 || !args[0].is_string()) in.fail("strftime_now takes one format string");
    const std::string& fmt = args[0].as_string();
    if (fmt.size() > 256) in.fail("strftime_now: format longer than 256 characters");
    std::tm tm{};
    const std::time_t t = in.options.now ? *in.options.now : std::time(nullptr);
    if (in.options.now) gmtime_r(&t, &tm);
    else localtime_r(&t, &tm);
    char buf[2048];
    const size_t n = std::strftime(buf, sizeof buf, fmt.c_str(), &tm);
    return Value(std::string(buf, n));
  });
  for (auto& [name, fn] : globals) scope.set(name, std::move(fn));
}

}  // namespace chorus::jinja
