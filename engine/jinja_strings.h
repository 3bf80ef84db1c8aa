// engine/jinja_strings.h — Python's str semantics, as chat templates see them.
//
// Owns: case mapping (Latin, Greek and Cyrillic; other scripts keep their case), Jinja's |title
// and Python's str.title, split / splitlines / replace / count with Python's rules on code
// points, printf ('%s' % x) and str.format formatting, int() and float() parsing, round(), HTML
// escaping, and the str methods templates may call (string_method). Every function that builds
// a string checks the render's size limits before growing it.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "engine/jinja_eval.h"
#include "engine/jinja_value.h"

namespace chorus::jinja {

bool is_alpha(char c);  // an ASCII letter
// Case mapping one code point to one, for Basic Latin, Latin-1, Latin Extended-A, Greek and
// Cyrillic (Python also maps other scripts, and a few letters to several).
uint32_t upper_of(uint32_t cp);
uint32_t lower_of(uint32_t cp);
bool is_cased(uint32_t cp);
std::string to_lower(const std::string& s);
std::string to_upper(const std::string& s);  // also "ß" -> "SS"
std::string capitalize(const std::string& s);    // str.capitalize
std::string py_title(const std::string& s);      // str.title
std::string jinja_title(const std::string& s);   // |title: words begin after '-', space or brackets
// str.islower / str.isupper: a cased letter, and none of the other case.
bool py_islower(const std::string& s);
bool py_isupper(const std::string& s);
size_t code_point_count(std::string_view s);
std::string py_replace(Interpreter& in, const std::string& s, const std::string& old, const std::string& repl, int64_t count);
ValueList py_split(Interpreter& in, const std::string& s, const Value& sep, int64_t maxsplit);
std::vector<std::string> py_splitlines(Interpreter& in, const std::string& s);
// s with each character found in `map` replaced by its text.
std::string replace_chars(const std::string& s, std::initializer_list<std::pair<char, std::string_view>> map);
std::string html_escape(const std::string& s);  // |escape: & < > " '
Value to_int(const Value& v, const Value& fallback, int64_t base);  // |int
Value to_float(const Value& v, const Value& fallback);              // |float
double py_round(double x, int64_t digits);  // round(x, n): correctly rounded, ties to even
std::string brace_format(Interpreter& in, const std::string& fmt, const ValueList& args, const KwValues& kwargs);

bool is_string_method(const std::string& name);
Value string_method(Interpreter& in, const std::string& s, const std::string& name, ValueList& args, KwValues& kwargs);

}  // namespace chorus::jinja
