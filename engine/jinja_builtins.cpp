// Filters, tests, the safe str/dict/list methods and the globals templates may call.
// Semantics follow Jinja2's built-in filters and Python's str methods; case mapping is ASCII
// only (non-ASCII letters keep their case). See jinja_eval.h.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <map>

#include "engine/jinja_eval.h"

namespace chorus::jinja {
namespace {

// Positional argument `index` or keyword `name`, else `fallback`.
Value arg(ValueList& args, KwValues& kwargs, size_t index, const char* name, Value fallback = Value()) {
  for (auto& [k, v] : kwargs)
    if (k == name) return v;
  if (index < args.size()) return args[index];
  return fallback;
}

int64_t int_arg(Interpreter& in, const Value& v, const char* what) {
  if (!v.is_number() || v.is_float()) in.fail(std::string(what) + " must be an integer, not " + v.type_name());
  return v.as_int();
}

std::string ascii_lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}
std::string ascii_upper(std::string s) {
  for (char& c : s)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return s;
}
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

std::string capitalize(const std::string& s) {
  std::string out = ascii_lower(s);
  if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 'a' + 'A');
  return out;
}

// Python's str.title(): a letter after a letter is lowered, any other letter raised.
std::string py_title(const std::string& s) {
  std::string out = s;
  bool prev_cased = false;
  for (char& c : out) {
    if (is_alpha(c)) {
      c = prev_cased ? ascii_lower(std::string(1, c))[0] : ascii_upper(std::string(1, c))[0];
      prev_cased = true;
    } else {
      prev_cased = false;
    }
  }
  return out;
}

// Jinja's |title: words begin after '-', whitespace or an opening bracket.
std::string jinja_title(const std::string& s) {
  std::string out;
  bool word_start = true;
  for (char c : s) {
    const bool sep = c == '-' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || c == '(' ||
                     c == '{' || c == '[' || c == '<';
    if (sep) {
      out += c;
      word_start = true;
    } else {
      out += word_start ? ascii_upper(std::string(1, c))[0] : ascii_lower(std::string(1, c))[0];
      word_start = false;
    }
  }
  return out;
}

size_t code_point_count(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); ++n) decode_utf8(s, i);
  return n;
}

std::string py_replace(Interpreter& in, const std::string& s, const std::string& old, const std::string& repl, int64_t count) {
  std::string out;
  int64_t done = 0;
  auto grow = [&](size_t extra) {
    in.check_string_size(out.size() + extra);
    in.step(extra / 256);
  };
  if (old.empty()) {  // Python inserts repl before every code point and at the end
    for (auto cp : split_code_points(s)) {
      if (count < 0 || done < count) {
        grow(repl.size());
        out += repl;
        ++done;
      }
      out += cp;
    }
    if (count < 0 || done < count) {
      grow(repl.size());
      out += repl;
    }
    return out;
  }
  size_t pos = 0;
  while (count < 0 || done < count) {
    const size_t hit = s.find(old, pos);
    if (hit == std::string::npos) break;
    grow(hit - pos + repl.size());
    out.append(s, pos, hit - pos);
    out += repl;
    pos = hit + old.size();
    ++done;
  }
  grow(s.size() - pos);
  out.append(s, pos);
  return out;
}

ValueList py_split(Interpreter& in, const std::string& s, const Value& sep, int64_t maxsplit) {
  ValueList out;
  if (sep.is_none() || sep.is_undefined()) {  // runs of whitespace, ends ignored
    size_t i = 0;
    while (i < s.size()) {
      size_t j = i;
      while (j < s.size()) {
        size_t k = j;
        if (!is_py_space(decode_utf8(s, k))) break;
        j = k;
      }
      if (j >= s.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) {
        out.push_back(Value(std::string(py_strip(std::string_view(s).substr(j), false, true))));
        return out;
      }
      size_t k = j;
      while (k < s.size()) {
        size_t m = k;
        if (is_py_space(decode_utf8(s, m))) break;
        k = m;
      }
      out.push_back(Value(s.substr(j, k - j)));
      i = k;
    }
    return out;
  }
  if (!sep.is_string()) in.fail(std::string("must be str or None, not ") + sep.type_name());
  const std::string& d = sep.as_string();
  if (d.empty()) in.fail("empty separator");
  size_t pos = 0;
  while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
    const size_t hit = s.find(d, pos);
    if (hit == std::string::npos) break;
    out.push_back(Value(s.substr(pos, hit - pos)));
    pos = hit + d.size();
  }
  out.push_back(Value(s.substr(pos)));
  in.check_list_size(out.size());
  return out;
}

std::vector<std::string> py_splitlines(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const uint32_t cp = decode_utf8(s, i);
    if (cp == '\n' || cp == '\r' || cp == '\v' || cp == '\f' || cp == 0x1c || cp == 0x1d || cp == 0x1e || cp == 0x85 ||
        cp == 0x2028 || cp == 0x2029) {
      if (cp == '\r' && i < s.size() && s[i] == '\n') ++i;
      out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.append(s, start, i - start);
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// Jinja's |tojson: json.dumps(sort_keys=True) with <, >, & and ' escaped for HTML.
std::string jinja_tojson(Interpreter& in, const Value& v, int indent) {
  const std::string raw = to_json(v, {.indent = indent, .sort_keys = true, .max_bytes = in.options.limits.max_string_bytes});
  std::string out;
  out.reserve(raw.size());
  for (char c : raw) {
    switch (c) {
      case '<': out += "\\u003c"; break;
      case '>': out += "\\u003e"; break;
      case '&': out += "\\u0026"; break;
      case '\'': out += "\\u0027"; break;
      default: out += c;
    }
  }
  in.check_string_size(out.size());
  return out;
}

// Attribute path "a.b.0" as Jinja's make_attrgetter resolves it (item access per part).
Value get_path(Interpreter& in, Value v, const Value& attribute) {
  if (!attribute.is_string()) return in.getitem(v, attribute);
  const std::string& path = attribute.as_string();
  size_t pos = 0;
  while (true) {
    const size_t dot = path.find('.', pos);
    const std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    int64_t idx = 0;
    auto r = std::from_chars(part.data(), part.data() + part.size(), idx);
    if (!part.empty() && r.ec == std::errc() && r.ptr == part.data() + part.size()) v = in.getitem(v, Value(idx));
    else v = in.getitem(v, Value(part));
    if (dot == std::string::npos) return v;
    pos = dot + 1;
  }
}

std::string sort_key_string(const Value& v, bool case_sensitive) {
  return case_sensitive ? v.as_string() : ascii_lower(v.as_string());
}

bool key_less(Interpreter& in, const Value& a, const Value& b, bool case_sensitive) {
  if (!case_sensitive && a.is_string() && b.is_string()) return sort_key_string(a, false) < sort_key_string(b, false);
  return less_than(in, a, b);
}

Value to_int(const Value& v, const Value& fallback, int64_t base) {
  if (v.is_number() && !v.is_float()) return Value(v.as_int());
  if (v.is_float()) {
    const double d = v.as_float();
    if (!std::isfinite(d) || std::fabs(d) >= 9.2e18) return fallback;
    return Value(static_cast<int64_t>(d));
  }
  if (!v.is_string()) return fallback;
  std::string s(py_strip(v.as_string(), true, true));
  s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
  const char* b = s.data();
  const char* e = s.data() + s.size();
  bool negative = false;
  if (b != e && (*b == '+' || *b == '-')) negative = *b++ == '-';
  auto prefixed = [&](char lower) { return e - b > 2 && b[0] == '0' && (b[1] == lower || b[1] == lower - 32); };
  if (base == 0) base = prefixed('x') ? 16 : prefixed('o') ? 8 : prefixed('b') ? 2 : 10;
  if ((base == 16 && prefixed('x')) || (base == 8 && prefixed('o')) || (base == 2 && prefixed('b'))) b += 2;
  if (base < 2 || base > 36) return fallback;
  int64_t out = 0;
  auto r = std::from_chars(b, e, out, static_cast<int>(base));
  if (negative) out = -out;
  if (b != e && r.ec == std::errc() && r.ptr == e) return Value(out);
  double d = 0;
  auto rf = std::from_chars(b, e, d);
  if (base == 10 && b != e && rf.ec == std::errc() && rf.ptr == e && std::isfinite(d) && std::fabs(d) < 9.2e18)
    return Value(static_cast<int64_t>(negative ? -d : d));
  return fallback;
}

Value to_float(const Value& v, const Value& fallback) {
  if (v.is_number()) return Value(v.as_float());
  if (!v.is_string()) return fallback;
  std::string s(py_strip(v.as_string(), true, true));
  const char* b = s.data();
  const char* e = s.data() + s.size();
  if (b != e && *b == '+') ++b;
  double d = 0;
  auto r = std::from_chars(b, e, d);
  if (b != e && r.ec == std::errc() && r.ptr == e) return Value(d);
  return fallback;
}

// Python's round(x, n) for floats: correctly rounded through decimal text, ties to even.
double py_round(double x, int64_t digits) {
  if (!std::isfinite(x)) return x;
  if (digits > 300) return x;
  if (digits < 0) {
    const double p = std::pow(10.0, static_cast<double>(-digits));
    return std::nearbyint(x / p) * p;
  }
  char buf[1024];  // 309 integer digits, the point and 300 decimals at most
  std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(digits), x);
  double out = 0;
  std::from_chars(buf, buf + std::strlen(buf), out);
  return out;
}

// Python's str.format with "{}", "{0}" and "{name}" fields (no format specs).
std::string brace_format(Interpreter& in, const std::string& fmt, const ValueList& args, const KwValues& kwargs) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    const char c = fmt[i];
    if (c == '{' && i + 1 < fmt.size() && fmt[i + 1] == '{') {
      out += '{';
      ++i;
    } else if (c == '}' && i + 1 < fmt.size() && fmt[i + 1] == '}') {
      out += '}';
      ++i;
    } else if (c == '{') {
      const size_t close = fmt.find('}', i);
      if (close == std::string::npos) in.fail("single '{' encountered in format string");
      const std::string field = fmt.substr(i + 1, close - i - 1);
      if (field.find_first_of(":!") != std::string::npos) in.fail("format specs in str.format are not supported");
      const Value* v = nullptr;
      if (field.empty()) {
        if (auto_index < args.size()) v = &args[auto_index++];
      } else if (field[0] >= '0' && field[0] <= '9') {
        size_t k = 0;
        const auto r = std::from_chars(field.data(), field.data() + field.size(), k);
        if (r.ec == std::errc() && r.ptr == field.data() + field.size() && k < args.size()) v = &args[k];
      } else {
        for (const auto& [name, val] : kwargs)
          if (name == field) v = &val;
      }
      if (!v) in.fail("format field {" + field + "} has no argument");
      out += to_str(*v);
      in.check_string_size(out.size());
      i = close;
    } else {
      out += c;
    }
  }
  return out;
}

bool starts_or_ends(Interpreter& in, const std::string& s, const Value& what, bool start) {
  auto one = [&](const Value& p) {
    if (!p.is_string()) in.fail(std::string(start ? "startswith" : "endswith") + " first arg must be str or a tuple of str");
    const std::string& x = p.as_string();
    if (x.size() > s.size()) return false;
    return start ? s.compare(0, x.size(), x) == 0 : s.compare(s.size() - x.size(), x.size(), x) == 0;
  };
  if (what.is_sequence()) {
    for (const auto& p : what.items())
      if (one(p)) return true;
    return false;
  }
  return one(what);
}

Value string_method(Interpreter& in, const std::string& s, const std::string& name, ValueList& args, KwValues& kwargs) {
  auto chars = [&]() -> const std::string* {
    for (auto& [k, v] : kwargs)
      if (k == "chars" && v.is_string()) return &v.as_string();
    if (!args.empty() && args[0].is_string()) return &args[0].as_string();
    return nullptr;
  };
  if (name == "strip") return Value(std::string(py_strip(s, true, true, chars())));
  if (name == "lstrip") return Value(std::string(py_strip(s, true, false, chars())));
  if (name == "rstrip") return Value(std::string(py_strip(s, false, true, chars())));
  if (name == "split") {
    const Value maxsplit = arg(args, kwargs, 1, "maxsplit", Value(int64_t{-1}));
    return Value::list(py_split(in, s, arg(args, kwargs, 0, "sep", Value::none()), int_arg(in, maxsplit, "maxsplit")));
  }
  if (name == "splitlines") {
    ValueList out;
    for (auto& line : py_splitlines(s)) out.push_back(Value(std::move(line)));
    return Value::list(std::move(out));
  }
  if (name == "startswith" || name == "endswith") {
    if (args.empty()) in.fail(name + "() takes at least 1 argument");
    return Value(starts_or_ends(in, s, args[0], name == "startswith"));
  }
  if (name == "upper") return Value(ascii_upper(s));
  if (name == "lower") return Value(ascii_lower(s));
  if (name == "title") return Value(py_title(s));
  if (name == "capitalize") return Value(capitalize(s));
  if (name == "replace") {
    if (args.size() < 2 || !args[0].is_string() || !args[1].is_string()) in.fail("replace() takes two strings");
    const Value count = arg(args, kwargs, 2, "count", Value(int64_t{-1}));
    return Value(py_replace(in, s, args[0].as_string(), args[1].as_string(), int_arg(in, count, "count")));
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
    if (args.empty() || !args[0].is_string()) in.fail(name + "() takes a string");
    const std::string& sub = args[0].as_string();
    if (name == "count") {
      if (sub.empty()) return Value(static_cast<int64_t>(code_point_count(s) + 1));
      int64_t n = 0;
      for (size_t pos = s.find(sub); pos != std::string::npos; pos = s.find(sub, pos + sub.size())) ++n;
      return Value(n);
    }
    const size_t hit = name[0] == 'r' ? s.rfind(sub) : s.find(sub);
    if (hit == std::string::npos) {
      if (name == "index" || name == "rindex") in.fail("substring not found");
      return Value(int64_t{-1});
    }
    return Value(static_cast<int64_t>(code_point_count(std::string_view(s).substr(0, hit))));
  }
  if (name == "format") return Value(brace_format(in, s, args, kwargs));
  if (name == "join") {
    if (args.empty()) in.fail("join() takes one argument");
    std::string out;
    bool first = true;
    for (const auto& v : iterate(in, args[0])) {
      if (!v.is_string()) in.fail(std::string("sequence item: expected str instance, ") + v.type_name() + " found");
      in.check_string_size(out.size() + s.size() + v.as_string().size());
      if (!first) out += s;
      first = false;
      out += v.as_string();
    }
    return Value(std::move(out));
  }
  if (name == "removeprefix" || name == "removesuffix") {
    if (args.empty() || !args[0].is_string()) in.fail(name + "() takes a string");
    const std::string& x = args[0].as_string();
    if (name == "removeprefix") return Value(s.compare(0, x.size(), x) == 0 ? s.substr(x.size()) : s);
    return Value(x.size() <= s.size() && s.compare(s.size() - x.size(), x.size(), x) == 0 ? s.substr(0, s.size() - x.size()) : s);
  }
  auto all_of = [&](auto pred) {
    if (s.empty()) return Value(false);
    return Value(std::all_of(s.begin(), s.end(), pred));
  };
  if (name == "isdigit") return all_of([](char c) { return c >= '0' && c <= '9'; });
  if (name == "isalpha") return all_of([](char c) { return is_alpha(c); });
  if (name == "isalnum") return all_of([](char c) { return is_alpha(c) || (c >= '0' && c <= '9'); });
  if (name == "isspace") return all_of([](char c) { return is_py_space(static_cast<unsigned char>(c)); });
  if (name == "islower") return Value(s != ascii_upper(s) && s == ascii_lower(s));
  if (name == "isupper") return Value(s != ascii_lower(s) && s == ascii_upper(s));
  in.fail("unknown str method " + name);
}

const char* const kStringMethods[] = {"strip",   "lstrip", "rstrip",     "split",        "splitlines", "startswith",
                                      "endswith", "upper", "lower",      "title",        "capitalize", "replace",
                                      "find",    "rfind",  "index",      "rindex",       "count",      "format",
                                      "join",    "isdigit", "isalpha",   "isalnum",      "isspace",    "islower",
                                      "isupper", "removeprefix", "removesuffix"};
const char* const kUnsafeMethods[] = {"append", "extend", "insert", "pop",   "remove",     "clear",  "sort",
                                      "reverse", "update", "setdefault", "popitem", "__setitem__", "__delitem__"};

template <size_t N>
bool listed(const char* const (&names)[N], const std::string& name) {
  for (const char* n : names)
    if (name == n) return true;
  return false;
}

Value items_of(const Value& dict) {
  ValueList out;
  for (const auto& [k, v] : dict.entries()) out.push_back(Value::tuple({k, v}));
  return Value::list(std::move(out));
}

Value filter_select(Interpreter& in, ValueList& args, KwValues& kwargs, bool by_attribute, bool keep) {
  ValueList out;
  const size_t first_test_arg = by_attribute ? 2 : 1;
  const Value attribute = by_attribute ? arg(args, kwargs, 1, "attr") : Value();
  const Value test = first_test_arg < args.size() ? args[first_test_arg] : Value();
  for (const auto& item : iterate(in, args[0])) {
  const Value v = by_attribute ? get_path(in, item, attribute) : item;
  bool ok;
  if (test.is_undefined()) {
    ok = v.truthy();
  } else {
    ValueList targs{v};
    for (size_t k = first_test_arg + 1; k < args.size(); ++k) targs.push_back(args[k]);
    KwValues none;
    ok = apply_test(in, to_str(test), targs, none);
  }
  if (ok == keep) out.push_back(item);
  }
  return Value::list(std::move(out));
}

}  // namespace

// printf-style "%s" formatting, as Jinja's |format filter (and Python's %) for s, d, i, f, %.
std::string percent_format(Interpreter& in, const std::string& fmt, const ValueList& values) {
  std::string out;
  size_t next = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out += fmt[i];
      continue;
    }
    if (++i >= fmt.size()) in.fail("incomplete format");
    const char c = fmt[i];
    if (c == '%') {
      out += '%';
      continue;
    }
    if (next >= values.size()) in.fail("not enough arguments for format string");
    const Value& v = values[next++];
    if (c == 's') out += to_str(v);
    else if (c == 'r') out += to_repr(v);
    else if (c == 'd' || c == 'i') out += std::to_string(to_int(v, Value(int64_t{0}), 10).as_int());
    else if (c == 'f') out += std::to_string(v.as_float());
    else in.fail(std::string("unsupported format character '") + c + "'");
    in.check_string_size(out.size());
  }
  if (next < values.size()) in.fail("not all arguments converted during string formatting");
  return out;
}

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
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_float() < b.as_float();
    return a.as_int() < b.as_int();
  }
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();
  if (a.is_sequence() && b.is_sequence()) {
    const auto &x = a.items(), &y = b.items();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (equals(x[i], y[i])) continue;
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
  if (obj.is_string() && listed(kStringMethods, name)) {
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
        if (!equals(obj.items()[i], args[0])) continue;
        if (name == "index") return Value(static_cast<int64_t>(i));
        ++n;
      }
      if (name == "index") interp.fail(to_repr(args[0]) + " is not in list");
      return Value(n);
    });
  }
  return std::nullopt;
}

// ---- filters: value | name(args), args[0] being the value ----------------------------------

namespace {

Value filter_trim(Interpreter&, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const Value chars = arg(args, kwargs, 1, "chars", Value::none());
  return Value(std::string(py_strip(to_str(v), true, true, chars.is_string() ? &chars.as_string() : nullptr)));
}

Value filter_length(Interpreter& in, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  if (v.is_string()) return Value(static_cast<int64_t>(code_point_count(v.as_string())));
  if (v.is_sequence()) return Value(static_cast<int64_t>(v.items().size()));
  if (v.is_dict()) return Value(static_cast<int64_t>(v.entries().size()));
  if (v.is_undefined()) return Value(int64_t{0});
  in.fail(std::string("object of type '") + v.type_name() + "' has no len()");
}

Value filter_tojson(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const bool transformers = in.options.tojson == ToJson::Transformers;
  const Value indent = arg(args, kwargs, transformers ? 2 : 1, "indent", Value::none());
  if (!indent.is_none() && (!indent.is_number() || indent.is_float() || indent.as_int() < 0 || indent.as_int() > 64))
    in.fail("tojson: indent must be an integer from 0 to 64");
  const int width = indent.is_none() ? -1 : static_cast<int>(indent.as_int());
  if (!transformers) return Value(jinja_tojson(in, v, width));
  JsonFormat f{.indent = width,
               .sort_keys = arg(args, kwargs, 4, "sort_keys", Value(false)).truthy(),
               .ensure_ascii = arg(args, kwargs, 1, "ensure_ascii", Value(false)).truthy(),
               .max_bytes = in.options.limits.max_string_bytes};
  const Value separators = arg(args, kwargs, 3, "separators", Value::none());
  if (!separators.is_none()) {
    if (!separators.is_sequence() || separators.items().size() != 2 || !separators.items()[0].is_string() ||
        !separators.items()[1].is_string())
      in.fail("tojson: separators must be a pair of strings");
    f.item_separator = separators.items()[0].as_string();
    f.key_separator = separators.items()[1].as_string();
    f.explicit_separators = true;
  }
  return Value(to_json(v, f));
}

Value filter_upper(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return Value(ascii_upper(to_str(v)));
}

Value filter_lower(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return Value(ascii_lower(to_str(v)));
}

Value filter_capitalize(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return Value(capitalize(to_str(v)));
}

Value filter_title(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return Value(jinja_title(to_str(v)));
}

Value filter_default(Interpreter&, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const Value fallback = arg(args, kwargs, 1, "default_value", Value(std::string()));
  const bool boolean = arg(args, kwargs, 2, "boolean", Value(false)).truthy();
  if (v.is_undefined() || (boolean && !v.truthy())) return fallback;
  return v;
}

Value filter_first(Interpreter& in, const std::string& name, ValueList& args, KwValues&) {
  const Value& v = args[0];
  if (v.is_undefined()) in.fail(v.undefined_hint());
  ValueList items = iterate(in, v);
  if (items.empty()) return Value::undefined(std::string("No ") + name + " item, sequence was empty.");
  return name == "first" ? items.front() : items.back();
}

Value filter_join(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const Value sep = arg(args, kwargs, 1, "d", Value(std::string()));
  const Value attribute = arg(args, kwargs, 2, "attribute");
  const std::string d = to_str(sep);
  std::string out;
  bool first = true;
  for (const auto& item : iterate(in, v)) {
    const std::string s = to_str(attribute.is_undefined() ? item : get_path(in, item, attribute));
    in.check_string_size(out.size() + d.size() + s.size());
    if (!first) out += d;
    first = false;
    out += s;
  }
  return Value(std::move(out));
}

Value filter_replace(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const Value old = arg(args, kwargs, 1, "old"), repl = arg(args, kwargs, 2, "new");
  const Value count = arg(args, kwargs, 3, "count", Value::none());
  return Value(py_replace(in, to_str(v), to_str(old), to_str(repl), count.is_none() ? -1 : int_arg(in, count, "count")));
}

Value filter_list(Interpreter& in, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return Value::list(iterate(in, v));
}

Value filter_string(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return Value(to_str(v));
}

Value filter_safe(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return v;
}

Value filter_escape(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return Value(html_escape(to_str(v)));
}

Value filter_int(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const Value base = arg(args, kwargs, 2, "base", Value(int64_t{10}));
  return to_int(v, arg(args, kwargs, 1, "default", Value(int64_t{0})), int_arg(in, base, "base"));
}

Value filter_float(Interpreter&, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  return to_float(v, arg(args, kwargs, 1, "default", Value(0.0)));
}

Value filter_abs(Interpreter& in, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  if (!v.is_number()) in.fail(std::string("bad operand type for abs(): '") + v.type_name() + "'");
  if (v.is_float()) return Value(std::fabs(v.as_float()));
  if (v.as_int() == INT64_MIN) in.fail("integer overflow (chat templates compute with 64-bit integers)");
  return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
}

Value filter_round(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const int64_t precision = int_arg(in, arg(args, kwargs, 1, "precision", Value(int64_t{0})), "precision");
  const std::string method = to_str(arg(args, kwargs, 2, "method", Value("common")));
  if (!v.is_number()) in.fail("round: value must be a number");
  if (method == "common") {
    if (!v.is_float()) return Value(v.as_int());
    return Value(py_round(v.as_float(), precision));
  }
  const double p = std::pow(10.0, static_cast<double>(precision));
  if (method == "floor") return Value(std::floor(v.as_float() * p) / p);
  if (method == "ceil") return Value(std::ceil(v.as_float() * p) / p);
  in.fail("method must be common, ceil or floor");
}

Value filter_items(Interpreter& in, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  if (v.is_undefined()) return Value::list(ValueList{});
  if (!v.is_dict()) in.fail("items: value must be a mapping");
  return items_of(v);
}

Value filter_selectattr(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  return filter_select(in, args, kwargs, true, true);
}

Value filter_rejectattr(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  return filter_select(in, args, kwargs, true, false);
}

Value filter_select(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  return filter_select(in, args, kwargs, false, true);
}

Value filter_reject(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  return filter_select(in, args, kwargs, false, false);
}

Value filter_map(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  ValueList out;
  const Value attribute = arg(args, kwargs, 99, "attribute");
  if (!attribute.is_undefined()) {
    const Value fallback = arg(args, kwargs, 99, "default");
    for (const auto& item : iterate(in, v)) {
      Value x = get_path(in, item, attribute);
      out.push_back(x.is_undefined() && !fallback.is_undefined() ? fallback : x);
    }
    return Value::list(std::move(out));
  }
  if (args.size() < 2) in.fail("map: give a filter name or attribute=");
  const std::string filter = to_str(args[1]);
  for (const auto& item : iterate(in, v)) {
    ValueList fargs{item};
    fargs.insert(fargs.end(), args.begin() + 2, args.end());
    KwValues fkw = kwargs;
    out.push_back(apply_filter(in, filter, fargs, fkw));
  }
  return Value::list(std::move(out));
}

Value filter_unique(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const bool case_sensitive = arg(args, kwargs, 1, "case_sensitive", Value(false)).truthy();
  const Value attribute = arg(args, kwargs, 2, "attribute");
  ValueList out, keys;
  for (const auto& item : iterate(in, v)) {
    Value key = attribute.is_undefined() ? item : get_path(in, item, attribute);
    if (!case_sensitive && key.is_string()) key = Value(ascii_lower(key.as_string()));
    bool seen = false;
    for (const auto& k : keys) seen = seen || equals(k, key);
    in.step(keys.size() / 16);
    if (seen) continue;
    keys.push_back(key);
    out.push_back(item);
  }
  return Value::list(std::move(out));
}

Value filter_indent(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const Value width = arg(args, kwargs, 1, "width", Value(int64_t{4}));
  const bool first = arg(args, kwargs, 2, "first", Value(false)).truthy();
  const bool blank = arg(args, kwargs, 3, "blank", Value(false)).truthy();
  std::string pad;
  if (width.is_string()) {
    pad = width.as_string();
  } else {
    const int64_t w = int_arg(in, width, "width");
    in.check_string_size(static_cast<size_t>(std::max<int64_t>(w, 0)));
    pad = std::string(static_cast<size_t>(std::max<int64_t>(w, 0)), ' ');
  }
  const std::string s = to_str(v) + "\n";
  const std::vector<std::string> lines = py_splitlines(s);
  in.check_string_size(s.size() + pad.size() * (lines.size() + 1));
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) {
      out += '\n';
      if (blank || !lines[i].empty()) out += pad;
    }
    out += lines[i];
  }
  if (first) out = pad + out;
  return Value(std::move(out));
}

Value filter_wordcount(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  int64_t n = 0;
  bool in_word = false;
  for (char c : to_str(v)) {
    const bool w = is_alpha(c) || (c >= '0' && c <= '9') || c == '_' || static_cast<unsigned char>(c) >= 0x80;
    if (w && !in_word) ++n;
    in_word = w;
  }
  return Value(n);
}

Value filter_dictsort(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  if (!v.is_dict()) in.fail("dictsort: value must be a mapping");
  const bool case_sensitive = arg(args, kwargs, 1, "case_sensitive", Value(false)).truthy();
  const std::string by = to_str(arg(args, kwargs, 2, "by", Value("key")));
  const bool reverse = arg(args, kwargs, 3, "reverse", Value(false)).truthy();
  DictEntries entries = v.entries();
  const bool by_value = by == "value";
  std::stable_sort(entries.begin(), entries.end(), [&](const auto& a, const auto& b) {
    const Value& x = by_value ? a.second : a.first;
    const Value& y = by_value ? b.second : b.first;
    return reverse ? key_less(in, y, x, case_sensitive) : key_less(in, x, y, case_sensitive);
  });
  ValueList out;
  for (auto& [k, val] : entries) out.push_back(Value::tuple({k, val}));
  return Value::list(std::move(out));
}

Value filter_reverse(Interpreter& in, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  if (v.is_string()) {
    auto cps = split_code_points(v.as_string());
    std::string out;
    for (auto it = cps.rbegin(); it != cps.rend(); ++it) out += *it;
    return Value(std::move(out));
  }
  ValueList items = iterate(in, v);
  std::reverse(items.begin(), items.end());
  return Value::list(std::move(items));
}

Value filter_sort(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const bool reverse = arg(args, kwargs, 1, "reverse", Value(false)).truthy();
  const bool case_sensitive = arg(args, kwargs, 2, "case_sensitive", Value(false)).truthy();
  const Value attribute = arg(args, kwargs, 3, "attribute");
  ValueList items = iterate(in, v);
  in.step(items.size() * 4);
  std::vector<std::pair<Value, Value>> keyed;
  for (auto& item : items) keyed.emplace_back(attribute.is_undefined() ? item : get_path(in, item, attribute), item);
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
    return reverse ? key_less(in, b.first, a.first, case_sensitive) : key_less(in, a.first, b.first, case_sensitive);
  });
  ValueList out;
  for (auto& [k, item] : keyed) out.push_back(item);
  return Value::list(std::move(out));
}

Value filter_sum(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const Value attribute = arg(args, kwargs, 1, "attribute");
  ValueList none;
  Value total = arg(args, kwargs, 2, "start", Value(int64_t{0}));
  for (const auto& item : iterate(in, v)) {
    const Value x = attribute.is_undefined() ? item : get_path(in, item, attribute);
    if (!x.is_number() || !total.is_number()) in.fail("sum: items must be numbers");
    total = total.is_float() || x.is_float() ? Value(total.as_float() + x.as_float()) : Value(total.as_int() + x.as_int());
  }
  return total;
}

Value filter_min(Interpreter& in, const std::string& name, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const bool case_sensitive = arg(args, kwargs, 1, "case_sensitive", Value(false)).truthy();
  const Value attribute = arg(args, kwargs, 2, "attribute");
  ValueList items = iterate(in, v);
  if (items.empty()) return Value::undefined("No " + std::string(name == "min" ? "smallest" : "largest") + " item, sequence was empty.");
  size_t best = 0;
  for (size_t i = 1; i < items.size(); ++i) {
    const Value a = attribute.is_undefined() ? items[i] : get_path(in, items[i], attribute);
    const Value b = attribute.is_undefined() ? items[best] : get_path(in, items[best], attribute);
    if (name == "min" ? key_less(in, a, b, case_sensitive) : key_less(in, b, a, case_sensitive)) best = i;
  }
  return items[best];
}

Value filter_format(Interpreter& in, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  ValueList values(args.begin() + 1, args.end());
  return Value(percent_format(in, to_str(v), values));
}

Value filter_attr(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  return in.getattr(v, to_str(arg(args, kwargs, 1, "name")));
}

Value filter_center(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const int64_t width = int_arg(in, arg(args, kwargs, 1, "width", Value(int64_t{80})), "width");
  const std::string s = to_str(v);
  const auto len = static_cast<int64_t>(code_point_count(s));
  if (width <= len) return Value(s);
  in.check_string_size(static_cast<size_t>(width));
  const int64_t total = width - len, left = total / 2 + (total & width & 1);
  return Value(std::string(static_cast<size_t>(left), ' ') + s + std::string(static_cast<size_t>(total - left), ' '));
}

using FilterFn = Value (*)(Interpreter&, const std::string&, ValueList&, KwValues&);
const std::pair<std::string_view, FilterFn> kFilters[] = {
    {"trim", filter_trim},
    {"length", filter_length},
    {"count", filter_length},
    {"tojson", filter_tojson},
    {"upper", filter_upper},
    {"lower", filter_lower},
    {"capitalize", filter_capitalize},
    {"title", filter_title},
    {"default", filter_default},
    {"d", filter_default},
    {"first", filter_first},
    {"last", filter_first},
    {"join", filter_join},
    {"replace", filter_replace},
    {"list", filter_list},
    {"string", filter_string},
    {"safe", filter_safe},
    {"escape", filter_escape},
    {"e", filter_escape},
    {"forceescape", filter_escape},
    {"int", filter_int},
    {"float", filter_float},
    {"abs", filter_abs},
    {"round", filter_round},
    {"items", filter_items},
    {"selectattr", filter_selectattr},
    {"rejectattr", filter_rejectattr},
    {"select", filter_select},
    {"reject", filter_reject},
    {"map", filter_map},
    {"unique", filter_unique},
    {"indent", filter_indent},
    {"wordcount", filter_wordcount},
    {"dictsort", filter_dictsort},
    {"reverse", filter_reverse},
    {"sort", filter_sort},
    {"sum", filter_sum},
    {"min", filter_min},
    {"max", filter_min},
    {"format", filter_format},
    {"attr", filter_attr},
    {"center", filter_center},
};

}  // namespace

bool has_filter(std::string_view name) {
  return std::any_of(std::begin(kFilters), std::end(kFilters), [&](const auto& f) { return f.first == name; });
}

Value apply_filter(Interpreter& in, const std::string& name, ValueList& args, KwValues& kwargs) {
  for (const auto& [n, fn] : kFilters)
    if (n == name) return fn(in, name, args, kwargs);
  in.fail("no filter named '" + name + "'");
}

// ---- tests: value is name(args), args[0] being the value -----------------------------------

namespace {

bool test_defined(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return !v.is_undefined();
}

bool test_undefined(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return v.is_undefined();
}

bool test_none(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return v.is_none();
}

bool test_boolean(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return v.is_bool();
}

bool test_true(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return v.is_bool() && v.as_bool();
}

bool test_false(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return v.is_bool() && !v.as_bool();
}

bool test_integer(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return v.is_int();
}

bool test_float(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return v.is_float();
}

bool test_number(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return v.is_number();
}

bool test_string(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return v.is_string();
}

bool test_mapping(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return v.is_dict();
}

bool test_iterable(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return v.is_string() || v.is_sequence() || v.is_dict() || v.is_undefined();
}

bool test_sequence(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return v.is_string() || v.is_sequence() || v.is_dict() || v.is_undefined();
}

bool test_callable(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return v.is_function();
}

bool test_odd(Interpreter& in, const std::string& name, ValueList& args, KwValues&) {
  const Value& v = args[0];
  if (v.is_undefined()) in.fail(v.undefined_hint());
  if (!v.is_number() || v.is_float()) in.fail(std::string("'") + name + "' test needs an integer");
  return (v.as_int() % 2 != 0) == (name == "odd");
}

bool test_divisibleby(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const Value other = arg(args, kwargs, 1, "other");
  const int64_t n = int_arg(in, other, "divisibleby argument");
  if (n == 0) in.fail("integer division or modulo by zero");
  return int_arg(in, v, "value") % n == 0;
}

bool test_eq(Interpreter&, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const Value other = arg(args, kwargs, 1, "other");
  return equals(v, other);
}

bool test_ne(Interpreter&, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const Value other = arg(args, kwargs, 1, "other");
  return !equals(v, other);
}

bool test_lt(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const Value other = arg(args, kwargs, 1, "other");
  return less_than(in, v, other);
}

bool test_le(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const Value other = arg(args, kwargs, 1, "other");
  return !less_than(in, other, v);
}

bool test_gt(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const Value other = arg(args, kwargs, 1, "other");
  return less_than(in, other, v);
}

bool test_ge(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const Value other = arg(args, kwargs, 1, "other");
  return !less_than(in, v, other);
}

bool test_in(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const Value seq = arg(args, kwargs, 1, "seq");
  if (seq.is_string()) return v.is_string() && seq.as_string().find(v.as_string()) != std::string::npos;
  if (seq.is_dict()) return seq.find(v) != nullptr;
  for (const auto& x : iterate(in, seq))
    if (equals(x, v)) return true;
  return false;
}

bool test_lower(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return v.is_string() && ascii_lower(v.as_string()) == v.as_string();
}

bool test_upper(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return v.is_string() && ascii_upper(v.as_string()) == v.as_string();
}

bool test_sameas(Interpreter&, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const Value other = arg(args, kwargs, 1, "other");
  if (v.type() != other.type()) return false;
  if (v.is_none() || v.is_bool()) return equals(v, other);
  return v.is_namespace() && &v.namespace_object() == &other.namespace_object();
}

bool test_escaped(Interpreter&, const std::string&, ValueList&, KwValues&) {
  return false;
}

using TestFn = bool (*)(Interpreter&, const std::string&, ValueList&, KwValues&);
const std::pair<std::string_view, TestFn> kTests[] = {
    {"defined", test_defined},
    {"undefined", test_undefined},
    {"none", test_none},
    {"boolean", test_boolean},
    {"true", test_true},
    {"false", test_false},
    {"integer", test_integer},
    {"float", test_float},
    {"number", test_number},
    {"string", test_string},
    {"mapping", test_mapping},
    {"iterable", test_iterable},
    {"sequence", test_sequence},
    {"callable", test_callable},
    {"odd", test_odd},
    {"even", test_odd},
    {"divisibleby", test_divisibleby},
    {"eq", test_eq},
    {"equalto", test_eq},
    {"==", test_eq},
    {"ne", test_ne},
    {"!=", test_ne},
    {"lt", test_lt},
    {"lessthan", test_lt},
    {"<", test_lt},
    {"le", test_le},
    {"<=", test_le},
    {"gt", test_gt},
    {"greaterthan", test_gt},
    {">", test_gt},
    {"ge", test_ge},
    {">=", test_ge},
    {"in", test_in},
    {"lower", test_lower},
    {"upper", test_upper},
    {"sameas", test_sameas},
    {"escaped", test_escaped},
};

}  // namespace

bool has_test(std::string_view name) {
  return std::any_of(std::begin(kTests), std::end(kTests), [&](const auto& t) { return t.first == name; });
}

bool apply_test(Interpreter& in, const std::string& name, ValueList& args, KwValues& kwargs) {
  for (const auto& [n, fn] : kTests)
    if (n == name) return fn(in, name, args, kwargs);
  in.fail("no test named '" + name + "'");
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

namespace {

void check_expr(const Expr& e) {
  if (e.kind == Expr::Kind::Filter && !has_filter(e.name))
    throw TemplateError(TemplateError::Kind::Syntax, e.line, e.column, "no filter named '" + e.name + "'");
  if (e.kind == Expr::Kind::Test && !has_test(e.name))
    throw TemplateError(TemplateError::Kind::Syntax, e.line, e.column, "no test named '" + e.name + "'");
  for (const auto& a : e.args)
    if (a) check_expr(*a);
  for (const auto& [k, a] : e.kwargs) check_expr(*a);
}

}  // namespace

void check_filters_and_tests(const Body& body) {
  for (const Node& n : body) {
    for (const Expr* e : {n.expr.get(), n.expr2.get()})
      if (e) check_expr(*e);
    for (const auto& w : n.withs) check_expr(*w);
    for (const auto& p : n.params)
      if (p.default_value) check_expr(*p.default_value);
    for (const auto& [cond, branch] : n.branches) {
      check_expr(*cond);
      check_filters_and_tests(branch);
    }
    check_filters_and_tests(n.body);
    check_filters_and_tests(n.else_body);
  }
}

}  // namespace chorus::jinja
