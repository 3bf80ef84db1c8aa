// Values, Python's str()/repr() of them, and JSON in and out. See jinja_value.h.
#include "engine/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>

namespace chorus::jinja {

TemplateError::TemplateError(Kind kind, int line, int column, std::string message)
    : std::runtime_error(line > 0 ? "chat template line " + std::to_string(line) + " column " + std::to_string(column) +
                                        ": " + message
                                  : "chat template: " + message),
      kind_(kind),
      line_(line),
      column_(column),
      message_(std::move(message)) {}

Value Value::undefined(std::string hint) {
  Value v;
  if (!hint.empty()) v.p_ = std::make_shared<const std::string>(std::move(hint));
  return v;
}
const std::string& Value::undefined_hint() const {
  static const std::string kNone;
  return p_ ? *static_cast<const std::string*>(p_.get()) : kNone;
}
Value Value::none() {
  Value v;
  v.type_ = Type::None;
  return v;
}
Value::Value(bool b) : type_(Type::Bool) { b_ = b; }
Value::Value(int64_t i) : type_(Type::Int) { i_ = i; }
Value::Value(double d) : type_(Type::Float) { d_ = d; }
Value::Value(std::string s) : type_(Type::String), p_(std::make_shared<const std::string>(std::move(s))) {}
Value Value::list(ValueList items) { return list(std::make_shared<const ValueList>(std::move(items))); }
namespace {

uint32_t container_depth(const ValueList& items) {
  uint32_t d = 0;
  for (const auto& item : items) d = std::max(d, item.depth());
  if (d + 1 > kMaxValueDepth)
    throw TemplateError(TemplateError::Kind::Limit, 0, 0,
                        "lists and dicts nested deeper than " + std::to_string(kMaxValueDepth) + " levels");
  return d + 1;
}

}  // namespace

Value Value::list(std::shared_ptr<const ValueList> items) {
  Value v;
  v.type_ = Type::List;
  v.depth_ = container_depth(*items);
  v.p_ = std::move(items);
  return v;
}
Value Value::tuple(ValueList items) {
  Value v = list(std::move(items));
  v.type_ = Type::Tuple;
  return v;
}
Value Value::dict(DictEntries entries) {
  Value v;
  v.type_ = Type::Dict;
  uint32_t d = 0;
  for (const auto& [k, val] : entries) d = std::max({d, k.depth(), val.depth()});
  if (d + 1 > kMaxValueDepth)
    throw TemplateError(TemplateError::Kind::Limit, 0, 0,
                        "lists and dicts nested deeper than " + std::to_string(kMaxValueDepth) + " levels");
  v.depth_ = d + 1;
  v.p_ = std::make_shared<const DictEntries>(std::move(entries));
  return v;
}
Value Value::ns(std::shared_ptr<Namespace> n) {
  Value v;
  v.type_ = Type::Namespace;
  v.p_ = std::move(n);
  return v;
}
Value Value::function(std::string name, NativeFunction f) {
  Value v;
  v.type_ = Type::Function;
  v.p_ = std::make_shared<const FunctionBox>(FunctionBox{std::move(name), std::move(f)});
  return v;
}
Value Value::loop(std::shared_ptr<const LoopInfo> info) {
  Value v;
  v.type_ = Type::Loop;
  v.p_ = std::move(info);
  return v;
}

const Value* Value::find(const Value& key) const {
  if (type_ != Type::Dict) return nullptr;
  for (const auto& [k, v] : entries())
    if (equals(k, key)) return &v;
  return nullptr;
}
const Value* Value::find(std::string_view key) const {
  if (type_ != Type::Dict) return nullptr;
  for (const auto& [k, v] : entries())
    if (k.is_string() && k.as_string() == key) return &v;
  return nullptr;
}

bool Value::truthy() const {
  switch (type_) {
    case Type::Undefined:
    case Type::None: return false;
    case Type::Bool: return b_;
    case Type::Int: return i_ != 0;
    case Type::Float: return d_ != 0.0;
    case Type::String: return !as_string().empty();
    case Type::List:
    case Type::Tuple: return !items().empty();
    case Type::Dict: return !entries().empty();
    case Type::Namespace:
    case Type::Function:
    case Type::Loop: return true;
  }
  return false;
}

const char* Value::type_name() const {
  switch (type_) {
    case Type::Undefined: return "Undefined";
    case Type::None: return "NoneType";
    case Type::Bool: return "bool";
    case Type::Int: return "int";
    case Type::Float: return "float";
    case Type::String: return "str";
    case Type::List: return "list";
    case Type::Tuple: return "tuple";
    case Type::Dict: return "dict";
    case Type::Namespace: return "Namespace";
    case Type::Function: return "function";
    case Type::Loop: return "LoopContext";
  }
  return "?";
}

bool equals(const Value& a, const Value& b, uint64_t* budget) {
  auto spend = [&](uint64_t units) {
    if (!budget) return;
    if (*budget < units) {
      *budget = 0;
      throw TemplateError(TemplateError::Kind::Limit, 0, 0, "comparing these values is more work than the step budget allows");
    }
    *budget -= units;
  };
  spend(1);
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_float() == b.as_float();
    return a.as_int() == b.as_int();
  }
  if (a.type() != b.type()) return false;  // [1] != (1,) in Python
  if (a.identity() != nullptr && a.identity() == b.identity()) return true;  // the same object
  switch (a.type()) {
    case Value::Type::Undefined:
    case Value::Type::None: return true;
    case Value::Type::String:
      if (a.as_string().size() != b.as_string().size()) return false;
      spend(a.as_string().size() / 64);
      return a.as_string() == b.as_string();
    case Value::Type::List:
    case Value::Type::Tuple: {
      const auto &x = a.items(), &y = b.items();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i)
        if (!equals(x[i], y[i], budget)) return false;
      return true;
    }
    case Value::Type::Dict: {
      if (a.entries().size() != b.entries().size()) return false;
      spend(a.entries().size() * b.entries().size() / 16);  // find() is a linear search
      for (const auto& [k, v] : a.entries()) {
        const Value* o = b.find(k);
        if (!o || !equals(v, *o, budget)) return false;
      }
      return true;
    }
    default: return false;  // namespaces, functions and loops are equal only to themselves
  }
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  // sci looks like "-1.2345e+02" or "5e-324": split into sign, digits, exponent.
  bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  const size_t e = sci.find('e');
  std::string mant = sci.substr(0, e);
  const int exp = std::stoi(sci.substr(e + 1));
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  std::string out = neg ? "-" : "";
  if (exp >= -4 && exp < 16) {  // Python's repr uses exponent form below 1e-4 and from 1e16
    if (exp < 0) {
      out += "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    } else if (static_cast<size_t>(exp) + 1 >= digits.size()) {
      out += digits + std::string(static_cast<size_t>(exp) + 1 - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, static_cast<size_t>(exp) + 1) + "." + digits.substr(static_cast<size_t>(exp) + 1);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char ebuf[16];
  std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
  return out + ebuf;
}

namespace {

std::string string_repr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    if (c == quote || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += quote;
  return out;
}

}  // namespace

std::string to_repr(const Value& v) {
  switch (v.type()) {
    case Value::Type::String: return string_repr(v.as_string());
    case Value::Type::List:
    case Value::Type::Tuple: {
      const bool tuple = v.type() == Value::Type::Tuple;
      std::string out = tuple ? "(" : "[";
      const auto& items = v.items();
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += ", ";
        out += to_repr(items[i]);
      }
      if (tuple && items.size() == 1) out += ",";
      return out + (tuple ? ")" : "]");
    }
    case Value::Type::Dict: {
      std::string out = "{";
      bool first = true;
      for (const auto& [k, val] : v.entries()) {
        if (!first) out += ", ";
        first = false;
        out += to_repr(k) + ": " + to_repr(val);
      }
      return out + "}";
    }
    case Value::Type::Undefined: return "Undefined";
    default: return to_str(v);
  }
}

std::string to_str(const Value& v) {
  switch (v.type()) {
    case Value::Type::Undefined: return "";
    case Value::Type::None: return "None";
    case Value::Type::Bool: return v.as_bool() ? "True" : "False";
    case Value::Type::Int: return std::to_string(v.as_int());
    case Value::Type::Float: return float_repr(v.as_float());
    case Value::Type::String: return v.as_string();
    case Value::Type::Namespace: return "<Namespace>";
    case Value::Type::Function: return "<function " + v.function_name() + ">";
    case Value::Type::Loop: return "<LoopContext " + std::to_string(v.loop_info().index + 1) + "/" +
                                   std::to_string(v.loop_info().items->size()) + ">";
    default: return to_repr(v);
  }
}

// Decodes one UTF-8 sequence at s[i]; invalid bytes decode as themselves (U+0080..U+00FF).
uint32_t decode_utf8(std::string_view s, size_t& i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const int n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
  if (n <= 0 || i + static_cast<size_t>(n) >= s.size()) {
    ++i;
    return c;
  }
  uint32_t cp = c & (0x3fu >> n);
  for (int k = 1; k <= n; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
    if ((cc & 0xc0) != 0x80) {
      ++i;
      return c;
    }
    cp = (cp << 6) | (cc & 0x3f);
  }
  i += static_cast<size_t>(n) + 1;
  return cp;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

std::vector<std::string_view> split_code_points(std::string_view s) {
  std::vector<std::string_view> out;
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    decode_utf8(s, i);
    out.push_back(s.substr(start, i - start));
  }
  return out;
}

bool is_py_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

std::string_view py_strip(std::string_view s, bool left, bool right, const std::string* chars) {
  std::vector<uint32_t> set;
  if (chars)
    for (size_t i = 0; i < chars->size();) set.push_back(decode_utf8(*chars, i));
  auto strip_it = [&](uint32_t cp) {
    return chars ? std::find(set.begin(), set.end(), cp) != set.end() : is_py_space(cp);
  };
  size_t begin = 0, end = s.size();
  if (left) {
    while (begin < end) {
      size_t i = begin;
      if (!strip_it(decode_utf8(s, i))) break;
      begin = i;
    }
  }
  if (right) {
    while (end > begin) {
      // The last code point starts at most 3 bytes back; a sequence that does not end exactly
      // at `end` means the last byte is a stray one, which decode_utf8 reads as itself.
      size_t start = end - 1;
      while (start > begin && end - start < 4 && (static_cast<unsigned char>(s[start]) & 0xc0) == 0x80) --start;
      size_t i = start;
      uint32_t cp = decode_utf8(s, i);
      if (i != end) {
        start = end - 1;
        cp = static_cast<unsigned char>(s[start]);
      }
      if (!strip_it(cp)) break;
      end = start;
    }
  }
  return s.substr(begin, end - begin);
}

namespace {

void json_u_escape(std::string& out, uint32_t unit) {
  static const char kHex[] = "0123456789abcdef";
  const char buf[6] = {'\\', 'u', kHex[(unit >> 12) & 15], kHex[(unit >> 8) & 15], kHex[(unit >> 4) & 15], kHex[unit & 15]};
  out.append(buf, 6);
}

void json_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\' && (c < 0x7f || !ensure_ascii)) {  // written as it is
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    const uint32_t cp = decode_utf8(s, i);
    switch (cp) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    if (cp >= 0x10000) {
      const uint32_t v = cp - 0x10000;
      json_u_escape(out, 0xd800 + (v >> 10));
      json_u_escape(out, 0xdc00 + (v & 0x3ff));
    } else {
      json_u_escape(out, cp);
    }
  }
  out += '"';
}

const std::string kComma = ",";

void json_value(std::string& out, const Value& v, const JsonFormat& f, int depth) {
  const int indent = f.indent;
  const size_t max_bytes = f.max_bytes;
  if (out.size() > max_bytes)
    throw TemplateError(TemplateError::Kind::Limit, 0, 0, "tojson: output larger than " + std::to_string(max_bytes) + " bytes");
  if (depth > static_cast<int>(kMaxValueDepth))
    throw TemplateError(TemplateError::Kind::Limit, 0, 0, "tojson: value nested deeper than " + std::to_string(kMaxValueDepth) + " levels");
  const std::string& item_sep = indent >= 0 && !f.explicit_separators ? kComma : f.item_separator;
  auto newline = [&](int d) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(indent) * static_cast<size_t>(d), ' ');
  };
  switch (v.type()) {
    case Value::Type::None: out += "null"; return;
    case Value::Type::Bool: out += v.as_bool() ? "true" : "false"; return;
    case Value::Type::Int: out += std::to_string(v.as_int()); return;
    case Value::Type::Float: {
      const double d = v.as_float();
      out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d < 0 ? "-Infinity" : "Infinity") : float_repr(d);
      return;
    }
    case Value::Type::String: json_string(out, v.as_string(), f.ensure_ascii); return;
    case Value::Type::List:
    case Value::Type::Tuple: {
      const auto& items = v.items();
      if (items.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += item_sep;
        newline(depth + 1);
        json_value(out, items[i], f, depth + 1);
      }
      newline(depth);
      out += ']';
      return;
    }
    case Value::Type::Dict: {
      const auto& entries = v.entries();
      if (entries.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<Value, Value>*> order;
      for (const auto& e : entries) order.push_back(&e);
      if (f.sort_keys)
        std::stable_sort(order.begin(), order.end(), [](auto* a, auto* b) { return to_str(a->first) < to_str(b->first); });
      out += '{';
      bool first = true;
      for (const auto* e : order) {
        if (!first) out += item_sep;
        first = false;
        newline(depth + 1);
        if (e->first.is_string()) {
          json_string(out, e->first.as_string(), f.ensure_ascii);
        } else if (e->first.is_bool()) {
          out += e->first.as_bool() ? "\"true\"" : "\"false\"";
        } else if (e->first.is_none()) {
          out += "\"null\"";
        } else if (e->first.is_number()) {
          out += '"' + to_str(e->first) + '"';
        } else {
          throw TemplateError(TemplateError::Kind::Runtime, 0, 0,
                              std::string("tojson: keys must be str, int, float, bool or None, not ") + e->first.type_name());
        }
        out += f.key_separator;
        json_value(out, e->second, f, depth + 1);
      }
      newline(depth);
      out += '}';
      return;
    }
    default:
      throw TemplateError(TemplateError::Kind::Runtime, 0, 0,
                          std::string("Object of type ") + v.type_name() + " is not JSON serializable");
  }
}

struct JsonParser {
  std::string_view s;
  size_t i = 0;
  int depth = 0;

  [[noreturn]] void fail(const std::string& what) {
    throw TemplateError(TemplateError::Kind::Syntax, 0, 0, "JSON at byte " + std::to_string(i) + ": " + what);
  }
  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  }
  bool lit(std::string_view w) {
    if (s.substr(i, w.size()) != w) return false;
    i += w.size();
    return true;
  }
  uint32_t hex4() {
    if (i + 4 > s.size()) fail("short \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s[i++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<uint32_t>(c - 'A' + 10);
      else fail("bad \\u escape");
    }
    return v;
  }
  std::string str() {
    ++i;  // opening quote
    std::string out;
    while (true) {
      if (i >= s.size()) fail("unterminated string");
      const char c = s[i++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i >= s.size()) fail("unterminated escape");
      const char e = s[i++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xd800 && cp < 0xdc00 && s.substr(i, 2) == "\\u") {
            const size_t save = i;
            i += 2;
            const uint32_t lo = hex4();
            if (lo >= 0xdc00 && lo < 0xe000) cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            else i = save;
          }
          append_utf8(out, cp);
          break;
        }
        default: fail("bad escape");
      }
    }
  }
  Value value() {
    if (++depth > static_cast<int>(kMaxValueDepth)) fail("nested deeper than " + std::to_string(kMaxValueDepth) + " levels");
    ws();
    if (i >= s.size()) fail("unexpected end");
    Value out;
    const char c = s[i];
    if (c == '{') {
      ++i;
      DictEntries entries;
      ws();
      if (i < s.size() && s[i] == '}') {
        ++i;
      } else {
        while (true) {
          ws();
          if (i >= s.size() || s[i] != '"') fail("expected a string key");
          Value key(str());
          ws();
          if (i >= s.size() || s[i] != ':') fail("expected ':'");
          ++i;
          Value val = value();
          bool replaced = false;
          for (auto& e : entries)
            if (e.first.as_string() == key.as_string()) e.second = val, replaced = true;
          if (!replaced) entries.emplace_back(std::move(key), std::move(val));
          ws();
          if (i < s.size() && s[i] == ',') {
            ++i;
            continue;
          }
          if (i < s.size() && s[i] == '}') {
            ++i;
            break;
          }
          fail("expected ',' or '}'");
        }
      }
      out = Value::dict(std::move(entries));
    } else if (c == '[') {
      ++i;
      ValueList items;
      ws();
      if (i < s.size() && s[i] == ']') {
        ++i;
      } else {
        while (true) {
          items.push_back(value());
          ws();
          if (i < s.size() && s[i] == ',') {
            ++i;
            continue;
          }
          if (i < s.size() && s[i] == ']') {
            ++i;
            break;
          }
          fail("expected ',' or ']'");
        }
      }
      out = Value::list(std::move(items));
    } else if (c == '"') {
      out = Value(str());
    } else if (lit("true")) {
      out = Value(true);
    } else if (lit("false")) {
      out = Value(false);
    } else if (lit("null")) {
      out = Value::none();
    } else {
      const size_t start = i;
      bool is_float = false;
      if (i < s.size() && s[i] == '-') ++i;
      while (i < s.size() && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == 'e' || s[i] == 'E' ||
                              ((s[i] == '+' || s[i] == '-') && (s[i - 1] == 'e' || s[i - 1] == 'E')))) {
        if (s[i] == '.' || s[i] == 'e' || s[i] == 'E') is_float = true;
        ++i;
      }
      const std::string_view num = s.substr(start, i - start);
      if (num.empty() || num == "-") fail("unexpected character");
      if (!is_float) {
        int64_t v = 0;
        auto r = std::from_chars(num.data(), num.data() + num.size(), v);
        if (r.ec == std::errc() && r.ptr == num.data() + num.size()) {
          out = Value(v);
        } else {
          is_float = true;
        }
      }
      if (is_float) {
        double d = 0;
        auto r = std::from_chars(num.data(), num.data() + num.size(), d);
        if (r.ec != std::errc() || r.ptr != num.data() + num.size()) fail("bad number");
        out = Value(d);
      }
    }
    --depth;
    return out;
  }
};

}  // namespace

std::string to_json(const Value& v, const JsonFormat& format) {
  std::string out;
  json_value(out, v, format, 0);
  if (out.size() > format.max_bytes)
    throw TemplateError(TemplateError::Kind::Limit, 0, 0, "tojson: output larger than " + std::to_string(format.max_bytes) + " bytes");
  return out;
}

Value parse_json(std::string_view text) {
  JsonParser p{text};
  Value v = p.value();
  p.ws();
  if (p.i != text.size()) p.fail("trailing characters");
  return v;
}

}  // namespace chorus::jinja
