// Python's str semantics for templates: case mapping (Latin, Greek and Cyrillic; other scripts
// keep their case), split/replace/strip helpers, printf and str.format formatting, number
// parsing and the str methods templates may call. See jinja_strings.h.
#include "engine/jinja_strings.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>

namespace chorus::jinja {

// Simple (one code point to one) case mapping for Basic Latin, Latin-1, Latin Extended-A, Greek
// and Cyrillic, the scripts chat templates meet in practice; other code points keep their case.
uint32_t upper_of(uint32_t c) {
  if (c < 0x80) return c >= 'a' && c <= 'z' ? c - 32 : c;
  if (c == 0xb5) return 0x39c;  // micro sign
  if (c >= 0xe0 && c <= 0xfe && c != 0xf7) return c - 32;
  if (c == 0xff) return 0x178;
  if (c >= 0x100 && c <= 0x17f) {
    if (c == 0x131) return 'I';  // dotless i
    if (c == 0x17f) return 'S';  // long s
    if (c == 0x130 || c == 0x138 || c == 0x149 || c == 0x178) return c;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return c % 2 == 0 ? c - 1 : c;
    return c % 2 == 1 ? c - 1 : c;
  }
  if (c >= 0x3b1 && c <= 0x3c9) return c == 0x3c2 ? 0x3a3 : c - 32;  // final sigma -> Sigma
  if (c == 0x3ac) return 0x386;
  if (c >= 0x3ad && c <= 0x3af) return c - 37;
  if (c == 0x3cc) return 0x38c;
  if (c == 0x3cd || c == 0x3ce) return c - 63;
  if (c >= 0x430 && c <= 0x44f) return c - 32;
  if (c >= 0x450 && c <= 0x45f) return c - 80;
  return c;
}

uint32_t lower_of(uint32_t c) {
  if (c < 0x80) return c >= 'A' && c <= 'Z' ? c + 32 : c;
  if (c >= 0xc0 && c <= 0xde && c != 0xd7) return c + 32;
  if (c >= 0x100 && c <= 0x17f) {
    if (c == 0x178) return 0xff;
    if (c == 0x130 || c == 0x131 || c == 0x138 || c == 0x149 || c == 0x17f) return c;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return c % 2 == 1 ? c + 1 : c;
    return c % 2 == 0 ? c + 1 : c;
  }
  if (c >= 0x391 && c <= 0x3a9 && c != 0x3a2) return c + 32;
  if (c == 0x386) return 0x3ac;
  if (c >= 0x388 && c <= 0x38a) return c + 37;
  if (c == 0x38c) return 0x3cc;
  if (c == 0x38e || c == 0x38f) return c + 63;
  if (c >= 0x410 && c <= 0x42f) return c + 32;
  if (c >= 0x400 && c <= 0x40f) return c + 80;
  return c;
}

bool is_cased(uint32_t c) { return upper_of(c) != c || lower_of(c) != c || c == 0xdf; }

namespace {

// Maps every code point of s; to_upper also spells sharp s as "SS", as Python does.
template <typename Map>
std::string map_code_points(const std::string& s, Map map) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const uint32_t cp = decode_utf8(s, i);
    const uint32_t mapped = map(cp);
    if (mapped == cp) out.append(s, start, i - start);  // keeps stray bytes as they were
    else if (mapped == 0xdf0000) out += "SS";
    else append_utf8(out, mapped);
  }
  return out;
}

}  // namespace

std::string to_lower(const std::string& s) { return map_code_points(s, lower_of); }
std::string to_upper(const std::string& s) {
  return map_code_points(s, [](uint32_t c) { return c == 0xdf ? 0xdf0000u : upper_of(c); });
}

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// Python's str.capitalize: the first character raised, the rest lowered.
std::string capitalize(const std::string& s) {
  bool first = true;
  return map_code_points(s, [&](uint32_t c) {
    const uint32_t m = first ? upper_of(c) : lower_of(c);
    first = false;
    return m;
  });
}

// Python's str.title(): a cased character after a cased one is lowered, any other raised.
std::string py_title(const std::string& s) {
  bool prev_cased = false;
  return map_code_points(s, [&](uint32_t c) {
    const uint32_t m = prev_cased ? lower_of(c) : upper_of(c);
    prev_cased = is_cased(c);
    return m;
  });
}

// Jinja's |title: words begin after '-', whitespace or an opening bracket.
std::string jinja_title(const std::string& s) {
  bool word_start = true;
  return map_code_points(s, [&](uint32_t c) {
    if (c == '-' || is_py_space(c) || c == '(' || c == '{' || c == '[' || c == '<') {
      word_start = true;
      return c;
    }
    const uint32_t m = word_start ? upper_of(c) : lower_of(c);
    word_start = false;
    return m;
  });
}

// str.islower (upper = false) / str.isupper: a cased character, and none of the other case.
static bool all_cased_as(const std::string& s, bool upper) {
  bool cased = false;
  for (size_t i = 0; i < s.size();) {
    const uint32_t c = decode_utf8(s, i);
    const bool is_lower = upper_of(c) != c, is_upper = lower_of(c) != c;
    if (upper ? is_lower : is_upper) return false;
    cased = cased || (upper ? is_upper : is_lower);
  }
  return cased;
}
bool py_islower(const std::string& s) { return all_cased_as(s, false); }
bool py_isupper(const std::string& s) { return all_cased_as(s, true); }

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
      in.check_list_size(out.size() + 1);
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
    in.check_list_size(out.size() + 2);  // before building: a string of separators splits into many
    out.push_back(Value(s.substr(pos, hit - pos)));
    pos = hit + d.size();
  }
  out.push_back(Value(s.substr(pos)));
  return out;
}

std::vector<std::string> py_splitlines(Interpreter& in, const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const uint32_t cp = decode_utf8(s, i);
    if (cp == '\n' || cp == '\r' || cp == '\v' || cp == '\f' || cp == 0x1c || cp == 0x1d || cp == 0x1e || cp == 0x85 ||
        cp == 0x2028 || cp == 0x2029) {
      if (cp == '\r' && i < s.size() && s[i] == '\n') ++i;
      in.check_list_size(out.size() + 1);
      out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.append(s, start, i - start);
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

std::string replace_chars(const std::string& s, std::initializer_list<std::pair<char, std::string_view>> map) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    const auto* hit = std::find_if(map.begin(), map.end(), [c](const auto& m) { return m.first == c; });
    if (hit != map.end()) out += hit->second;
    else out += c;
  }
  return out;
}

std::string html_escape(const std::string& s) {
  return replace_chars(s, {{'&', "&amp;"}, {'<', "&lt;"}, {'>', "&gt;"}, {'"', "&#34;"}, {'\'', "&#39;"}});
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

// printf-style "%s" formatting, as Jinja's |format filter (and Python's %) for s, d, i, f, %.
std::string percent_format(Interpreter& in, const std::string& fmt, const ValueList& values, bool mapping) {
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
  if (next < values.size() && !mapping) in.fail("not all arguments converted during string formatting");
  return out;
}

namespace {

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

const char* const kStringMethods[] = {"strip",   "lstrip", "rstrip",     "split",        "splitlines", "startswith",
                                      "endswith", "upper", "lower",      "title",        "capitalize", "replace",
                                      "find",    "rfind",  "index",      "rindex",       "count",      "format",
                                      "join",    "isdigit", "isalpha",   "isalnum",      "isspace",    "islower",
                                      "isupper", "removeprefix", "removesuffix"};
}  // namespace

bool is_string_method(const std::string& name) {
  return std::find_if(std::begin(kStringMethods), std::end(kStringMethods), [&](const char* m) { return name == m; }) !=
         std::end(kStringMethods);
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
    for (auto& line : py_splitlines(in, s)) out.push_back(Value(std::move(line)));
    return Value::list(std::move(out));
  }
  if (name == "startswith" || name == "endswith") {
    if (args.empty()) in.fail(name + "() takes at least 1 argument");
    return Value(starts_or_ends(in, s, args[0], name == "startswith"));
  }
  if (name == "upper") return Value(to_upper(s));
  if (name == "lower") return Value(to_lower(s));
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
  if (name == "islower") return Value(py_islower(s));
  if (name == "isupper") return Value(py_isupper(s));
  in.fail("unknown str method " + name);
}

}  // namespace chorus::jinja
