// Jinja2's built-in filters and tests, one function each, found by name in kFilters / kTests,
// and the parse-time check that a template uses no others. See jinja_eval.h.
#include <algorithm>
#include <charconv>
#include <cmath>

#include "engine/jinja_eval.h"
#include "engine/jinja_strings.h"

namespace chorus::jinja {
namespace {

template <typename T, size_t N>
const T* find_named(const std::pair<std::string_view, T> (&table)[N], std::string_view name) {
  for (const auto& [n, entry] : table)
    if (n == name) return &entry;
  return nullptr;
}

// Jinja's |tojson: json.dumps(sort_keys=True) with <, >, & and ' escaped for HTML.
std::string jinja_tojson(Interpreter& in, const Value& v, int indent) {
  const std::string raw = to_json(v, {.indent = indent, .sort_keys = true, .max_bytes = in.options.limits.max_string_bytes});
  std::string out = replace_chars(raw, {{'<', "\\u003c"}, {'>', "\\u003e"}, {'&', "\\u0026"}, {'\'', "\\u0027"}});
  in.check_string_size(out.size());
  return out;
}

// Filters that map a value's text to text.
using TextFilter = std::string (*)(const std::string&);
const std::pair<std::string_view, TextFilter> kTextFilters[] = {
    {"upper", [](const std::string& s) { return to_upper(s); }},
    {"lower", [](const std::string& s) { return to_lower(s); }},
    {"capitalize", capitalize},
    {"title", jinja_title},
    {"string", [](const std::string& s) { return s; }},
    {"escape", html_escape},
    {"e", html_escape},
    {"forceescape", html_escape},
};

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

// The key Jinja2 sorts and compares by: strings lowered unless case_sensitive (charged, since a
// sort or a unique reads each key many times, the lowering is done once per item).
Value sort_key(Interpreter& in, const Value& v, bool case_sensitive) {
  if (case_sensitive || !v.is_string()) return v;
  in.step(work_of(v));
  return Value(to_lower(v.as_string()));
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

Value filter_default(Interpreter&, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const Value fallback = arg(args, kwargs, 1, "default_value", Value(std::string()));
  const bool boolean = arg(args, kwargs, 2, "boolean", Value(false)).truthy();
  if (v.is_undefined() || (boolean && !v.truthy())) return fallback;
  return v;
}

Value filter_first(Interpreter& in, const std::string& name, ValueList& args, KwValues&) {
  const Value& v = args[0];
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

Value filter_safe(Interpreter&, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  return v;
}

Value filter_int(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  if (v.is_undefined()) in.fail(v.undefined_hint());  // int(Undefined) raises in Jinja2
  const Value base = arg(args, kwargs, 2, "base", Value(int64_t{10}));
  return to_int(v, arg(args, kwargs, 1, "default", Value(int64_t{0})), int_arg(in, base, "base"));
}

Value filter_float(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  if (v.is_undefined()) in.fail(v.undefined_hint());  // float(Undefined) raises in Jinja2
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
    const Value key = sort_key(in, attribute.is_undefined() ? item : get_path(in, item, attribute), case_sensitive);
    bool seen = false;
    for (const auto& k : keys) seen = seen || in.equal(k, key);
    in.step(keys.size() / 16);
    if (seen) continue;
    keys.push_back(key);
    out.push_back(item);
  }
  return Value::list(std::move(out));
}

Value filter_indent(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  if (v.is_undefined()) in.fail(v.undefined_hint());
  if (!v.is_string()) in.fail(std::string("unsupported operand type(s) for +=: '") + v.type_name() + "' and 'str'");
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
  const std::vector<std::string> lines = py_splitlines(in, s);
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
  const bool by_value = by == "value";
  std::vector<std::pair<Value, Value>> keyed;  // (sort key, (key, value) tuple)
  for (const auto& [k, val] : v.entries()) keyed.emplace_back(sort_key(in, by_value ? val : k, case_sensitive), Value::tuple({k, val}));
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
    return reverse ? less_than(in, b.first, a.first) : less_than(in, a.first, b.first);
  });
  ValueList out;
  for (auto& [key, pair] : keyed) out.push_back(std::move(pair));
  return Value::list(std::move(out));
}

Value filter_reverse(Interpreter& in, const std::string&, ValueList& args, KwValues&) {
  const Value& v = args[0];
  if (v.is_string()) {  // reverse the bytes, then put each multi-byte sequence back in order
    std::string out(v.as_string().rbegin(), v.as_string().rend());
    for (size_t i = 0; i < v.as_string().size();) {
      const size_t start = i;
      decode_utf8(v.as_string(), i);
      const size_t len = i - start, at = out.size() - i;
      if (len > 1) std::reverse(out.begin() + static_cast<std::ptrdiff_t>(at), out.begin() + static_cast<std::ptrdiff_t>(at + len));
    }
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
  for (auto& item : items)
    keyed.emplace_back(sort_key(in, attribute.is_undefined() ? item : get_path(in, item, attribute), case_sensitive), item);
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
    return reverse ? less_than(in, b.first, a.first) : less_than(in, a.first, b.first);
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
  auto key = [&](const Value& item) {
    return sort_key(in, attribute.is_undefined() ? item : get_path(in, item, attribute), case_sensitive);
  };
  size_t best = 0;
  Value best_key = key(items[0]);
  for (size_t i = 1; i < items.size(); ++i) {
    Value k = key(items[i]);
    if (name == "min" ? less_than(in, k, best_key) : less_than(in, best_key, k)) best = i, best_key = std::move(k);
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
    {"default", filter_default},
    {"d", filter_default},
    {"first", filter_first},
    {"last", filter_first},
    {"join", filter_join},
    {"replace", filter_replace},
    {"list", filter_list},
    {"safe", filter_safe},
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

bool has_filter(std::string_view name) { return find_named(kTextFilters, name) || find_named(kFilters, name); }

Value apply_filter(Interpreter& in, const std::string& name, ValueList& args, KwValues& kwargs) {
  if (const auto* f = find_named(kTextFilters, name)) return Value((*f)(to_str(args[0])));
  if (const auto* f = find_named(kFilters, name)) return (*f)(in, name, args, kwargs);
  in.fail("no filter named '" + name + "'");
}

// ---- tests: value is name(args), args[0] being the value -----------------------------------

namespace {

using TypeTest = bool (*)(const Value&);
const std::pair<std::string_view, TypeTest> kTypeTests[] = {
    {"defined", [](const Value& v) { return !v.is_undefined(); }},
    {"undefined", [](const Value& v) { return v.is_undefined(); }},
    {"none", [](const Value& v) { return v.is_none(); }},
    {"boolean", [](const Value& v) { return v.is_bool(); }},
    {"true", [](const Value& v) { return v.is_bool() && v.as_bool(); }},
    {"false", [](const Value& v) { return v.is_bool() && !v.as_bool(); }},
    {"integer", [](const Value& v) { return v.is_int(); }},
    {"float", [](const Value& v) { return v.is_float(); }},
    {"number", [](const Value& v) { return v.is_number(); }},
    {"string", [](const Value& v) { return v.is_string(); }},
    {"mapping", [](const Value& v) { return v.is_dict(); }},
    // Undefined iterates as empty and has a length, so Jinja2 counts it as both.
    {"iterable", [](const Value& v) { return v.is_string() || v.is_sequence() || v.is_dict() || v.is_undefined(); }},
    {"sequence", [](const Value& v) { return v.is_string() || v.is_sequence() || v.is_dict() || v.is_undefined(); }},
    {"callable", [](const Value& v) { return v.is_function() || v.is_undefined(); }},  // Undefined has __call__
    {"lower", [](const Value& v) { return py_islower(to_str(v)); }},
    {"upper", [](const Value& v) { return py_isupper(to_str(v)); }},
    {"escaped", [](const Value&) { return false; }},  // no value is Markup here
};

// Comparison tests and the operator each one is.
const std::pair<std::string_view, std::string_view> kCompareTests[] = {
    {"eq", "=="}, {"equalto", "=="}, {"==", "=="}, {"ne", "!="}, {"!=", "!="}, {"lt", "<"}, {"lessthan", "<"},
    {"<", "<"},   {"le", "<="},      {"<=", "<="}, {"gt", ">"},  {"greaterthan", ">"}, {">", ">"}, {"ge", ">="},
    {">=", ">="},
};

bool compare_test(Interpreter& in, std::string_view op, const Value& a, const Value& b) {
  if (op == "==") return in.equal(a, b);
  if (op == "!=") return !in.equal(a, b);
  if (op == "<") return less_than(in, a, b);
  if (op == ">") return less_than(in, b, a);
  if (op == "<=") return !less_than(in, b, a);
  return !less_than(in, a, b);  // >=
}

// Python's value % divisor for numbers (floats included), as Jinja2's odd/even/divisibleby use it.
double py_mod(Interpreter& in, const Value& v, double divisor, const std::string& test) {
  if (v.is_undefined()) in.fail(v.undefined_hint());
  if (!v.is_number()) in.fail("'" + test + "' test needs a number, not " + v.type_name());
  if (divisor == 0) in.fail("integer division or modulo by zero");
  if (!v.is_float() && std::fabs(divisor) < 9e15 && divisor == std::floor(divisor)) {
    const auto d = static_cast<int64_t>(divisor);
    return static_cast<double>(((v.as_int() % d) + d) % d);
  }
  const double x = v.as_float();
  return x - divisor * std::floor(x / divisor);
}

bool test_odd(Interpreter& in, const std::string& name, ValueList& args, KwValues&) {
  return py_mod(in, args[0], 2, name) == (name == "odd" ? 1.0 : 0.0);
}

bool test_divisibleby(Interpreter& in, const std::string& name, ValueList& args, KwValues& kwargs) {
  const Value num = arg(args, kwargs, 1, "num");
  if (!num.is_number()) in.fail("divisibleby needs a number");
  return py_mod(in, args[0], num.as_float(), name) == 0.0;
}

bool test_in(Interpreter& in, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const Value seq = arg(args, kwargs, 1, "seq");
  if (seq.is_string()) return v.is_string() && seq.as_string().find(v.as_string()) != std::string::npos;
  if (seq.is_dict()) return seq.find(v) != nullptr;
  for (const auto& x : iterate(in, seq))
    if (in.equal(x, v)) return true;
  return false;
}

bool test_sameas(Interpreter&, const std::string&, ValueList& args, KwValues& kwargs) {
  const Value& v = args[0];
  const Value other = arg(args, kwargs, 1, "other");
  if (v.type() != other.type()) return false;
  if (v.is_none() || v.is_bool()) return v.type() == other.type() && v.as_int() == other.as_int();
  return v.identity() != nullptr && v.identity() == other.identity();
}

using TestFn = bool (*)(Interpreter&, const std::string&, ValueList&, KwValues&);
const std::pair<std::string_view, TestFn> kTests[] = {
    {"odd", test_odd}, {"even", test_odd}, {"divisibleby", test_divisibleby}, {"in", test_in}, {"sameas", test_sameas},
};

}  // namespace

bool has_test(std::string_view name) {
  return find_named(kTypeTests, name) || find_named(kCompareTests, name) || find_named(kTests, name);
}

bool apply_test(Interpreter& in, const std::string& name, ValueList& args, KwValues& kwargs) {
  if (const auto* t = find_named(kTypeTests, name)) {
    if (args.size() > 1 || !kwargs.empty()) in.fail("the '" + name + "' test takes no arguments");
    return (*t)(args[0]);
  }
  if (const auto* op = find_named(kCompareTests, name)) return compare_test(in, *op, args[0], arg(args, kwargs, 1, "other"));
  if (const auto* t = find_named(kTests, name)) return (*t)(in, name, args, kwargs);
  in.fail("no test named '" + name + "'");
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
