// engine/jinja_lexer.h — the tokens of a Jinja template (internal to the parser).
//
// Owns: turning template source into text and tag tokens the way Jinja2's lexer does with
// trim_blocks=True, lstrip_blocks=True and keep_trailing_newline=False (newlines normalised to
// "\n", one trailing newline dropped, whitespace control as described in jinja_lexer.cpp),
// decoding string literals with Python's escapes, and giving every token its 1-based line and
// column. Errors are TemplateError(Syntax).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "engine/jinja_value.h"

namespace chorus::jinja {

struct Token {
  enum class Type { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, End };
  Type type;
  std::string text;  // Text, Name, String (decoded), Op
  Value value;       // Int, Float
  int line = 0, column = 0;
};

// The tokens of `source`, ending with one Token::Type::End.
std::vector<Token> lex_template(std::string_view source);

}  // namespace chorus::jinja
