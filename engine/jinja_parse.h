// engine/jinja_parse.h — the syntax tree of a Jinja template and the parser that builds it.
//
// Owns: lexing (delimiters {{ }} {% %} {# #}, whitespace control with '-' and '+', and the
// trim_blocks / lstrip_blocks rules chat templates are written for, newline normalisation and
// the removal of one trailing newline, as Jinja2's lexer does), parsing with Jinja2's operator
// precedence, and the tree (Expr for expressions, Node for statements) the interpreter walks.
// Every node carries the 1-based line and column it came from; every syntax error names them.
// Nesting is bounded (kMaxNesting) so a hostile template cannot exhaust the stack while parsing.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/jinja_value.h"

namespace chorus::jinja {

inline constexpr int kMaxNesting = 200;     // brackets, operators and blocks nested inside each other
inline constexpr int kMaxExprDepth = 1000;  // height of one expression tree (a + a + ... chains too)

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;
using KwArgs = std::vector<std::pair<std::string, ExprPtr>>;

struct Expr {
  enum class Kind {
    Const,     // value
    Name,      // name
    List,      // args: items
    Tuple,     // args: items
    Dict,      // args: key0, value0, key1, value1, ...
    GetAttr,   // args[0].name
    GetItem,   // args[0][args[1]]
    Slice,     // args[0][args[1]:args[2]:args[3]] (null for an omitted part)
    Call,      // args[0](args[1..], kwargs)
    Filter,    // args[0] | name(args[1..], kwargs)
    Test,      // args[0] is [not] name(args[1..], kwargs)
    Unary,     // name ("-", "+", "not") args[0]
    Binary,    // args[0] name args[1]: + - * / // % ** ~ and or
    Compare,   // args[0] ops[0] args[1] ops[1] args[2] ... (== != < <= > >= in notin)
    CondExpr,  // args[1] if args[0] else args[2] (args[2] null: undefined)
  };
  Kind kind = Kind::Const;
  int line = 0, column = 0;
  int depth = 1;  // height of this expression's tree, bounded by kMaxExprDepth
  Value value;
  std::string name;
  bool negated = false;
  std::vector<ExprPtr> args;
  KwArgs kwargs;
  std::vector<std::string> ops;
};

struct Node;
using Body = std::vector<Node>;

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // null: required
};

struct Node {
  enum class Kind {
    Text,      // text
    Output,    // {{ expr }}
    If,        // branches: (condition, body)...; else_body
    For,       // targets in expr [if expr2] body [else else_body]
    Set,       // targets (one name, or a tuple of names) or ns_attr = expr; or block set: body
    Macro,     // name(params) body
    CallBlock, // {% call(params) expr %} body
    With,      // with targets[i] = withs[i]... body
    Block,     // a body rendered in place ({% generation %})
    Break,
    Continue,
  };
  Kind kind = Kind::Text;
  int line = 0, column = 0;
  std::string text;      // Text; Macro name; Set: namespace attribute when setting ns.attr
  ExprPtr expr, expr2;   // Output/Set/For iterable/CallBlock call; For filter
  std::vector<std::string> targets;
  std::vector<ExprPtr> withs;
  std::vector<MacroParam> params;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body, else_body;
};

// Parses a template with Jinja2's lexer settings trim_blocks=True, lstrip_blocks=True and
// keep_trailing_newline=False. Throws TemplateError(Syntax) naming line and column.
Body parse_template(std::string_view source);

}  // namespace chorus::jinja
