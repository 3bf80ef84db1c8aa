// Recursive-descent parser for the Jinja subset chat templates use. See jinja_parse.h.
//
// The parser mirrors Jinja2's precedence: condexpr < or < and < not < compare (== != < <= > >= in
// not in) < + - < ~ < * / // % < ** < unary -/+ < filters/tests/calls < postfix (. [] ()).
#include "engine/jinja_parse.h"

#include <algorithm>

#include "engine/jinja_lexer.h"

namespace chorus::jinja {
namespace {

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : toks_(std::move(tokens)) {}

  Body parse_all() {
    std::string end_tag;
    Body body = parse_body({}, end_tag);
    return body;
  }

 private:
  std::vector<Token> toks_;
  size_t i_ = 0;
  int depth_ = 0;

  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& parser) : p(parser) {
      if (++p.depth_ > kMaxNesting) p.fail(p.cur(), "template nested deeper than " + std::to_string(kMaxNesting) + " levels");
    }
    ~DepthGuard() { --p.depth_; }
  };

  const Token& cur() const { return toks_[i_]; }
  const Token& peek(size_t k = 1) const { return toks_[std::min(i_ + k, toks_.size() - 1)]; }
  [[noreturn]] void fail(const Token& t, const std::string& message) const {
    throw TemplateError(TemplateError::Kind::Syntax, t.line, t.column, message);
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case Token::Type::End: return "end of template";
      case Token::Type::VarEnd: return "'}}'";
      case Token::Type::BlockEnd: return "'%}'";
      case Token::Type::VarBegin: return "'{{'";
      case Token::Type::BlockBegin: return "'{%'";
      case Token::Type::Text: return "template text";
      case Token::Type::String: return "string literal";
      case Token::Type::Int:
      case Token::Type::Float: return "number " + t.text;
      default: return "'" + t.text + "'";
    }
  }
  bool is_op(const char* op) const { return cur().type == Token::Type::Op && cur().text == op; }
  bool is_name(const char* name) const { return cur().type == Token::Type::Name && cur().text == name; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    ++i_;
    return true;
  }
  bool skip_name(const char* name) {
    if (!is_name(name)) return false;
    ++i_;
    return true;
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) fail(cur(), std::string("expected '") + op + "', found " + describe(cur()));
  }
  std::string expect_name() {
    if (cur().type != Token::Type::Name) fail(cur(), "expected a name, found " + describe(cur()));
    return toks_[i_++].text;
  }
  void expect_block_end() {
    if (cur().type != Token::Type::BlockEnd) fail(cur(), "expected '%}', found " + describe(cur()));
    ++i_;
  }
  ExprPtr make(Expr::Kind kind, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = at.line;
    e->column = at.column;
    return e;
  }

  // Sets e's depth from its children; refuses trees too tall to evaluate (or destroy) safely.
  ExprPtr sealed(ExprPtr e) {
    int d = 0;
    for (const auto& a : e->args)
      if (a) d = std::max(d, a->depth);
    for (const auto& [k, a] : e->kwargs) d = std::max(d, a->depth);
    e->depth = d + 1;
    if (e->depth > kMaxExprDepth)
      fail(cur(), "expression nested deeper than " + std::to_string(kMaxExprDepth) + " levels");
    return e;
  }

  // ---- statements -------------------------------------------------------------------------

  // Parses nodes until one of end_tags opens a block (left unconsumed: its name in end_tag).
  Body parse_body(const std::vector<std::string>& end_tags, std::string& end_tag) {
    DepthGuard guard(*this);
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.type == Token::Type::End) {
        if (!end_tags.empty()) fail(t, "unexpected end of template: expected '{% " + end_tags.back() + " %}'");
        return body;
      }
      if (t.type == Token::Type::Text) {
        Node n;
        n.kind = Node::Kind::Text;
        n.line = t.line, n.column = t.column;
        n.text = t.text;
        body.push_back(std::move(n));
        ++i_;
      } else if (t.type == Token::Type::VarBegin) {
        ++i_;
        Node n;
        n.kind = Node::Kind::Output;
        n.line = t.line, n.column = t.column;
        n.expr = parse_tuple(true, {}, false);
        if (cur().type != Token::Type::VarEnd) fail(cur(), "expected '}}', found " + describe(cur()));
        ++i_;
        body.push_back(std::move(n));
      } else if (t.type == Token::Type::BlockBegin) {
        const Token& name = peek();
        if (name.type != Token::Type::Name) fail(name, "expected a tag name after '{%', found " + describe(name));
        if (std::find(end_tags.begin(), end_tags.end(), name.text) != end_tags.end()) {
          end_tag = name.text;
          i_ += 2;
          return body;
        }
        i_ += 2;
        body.push_back(parse_statement(t, name));
      } else {
        fail(t, "unexpected " + describe(t));
      }
    }
  }

  Node parse_statement(const Token& begin, const Token& name) {
    Node n;
    n.kind = Node::Kind::Text;
    n.line = begin.line, n.column = begin.column;
    const std::string& tag = name.text;
    std::string end;
    if (tag == "if") {
      n.kind = Node::Kind::If;
      ExprPtr cond = parse_tuple(false, {}, false);
      expect_block_end();
      while (true) {
        Body b = parse_body({"elif", "else", "endif"}, end);
        n.branches.emplace_back(std::move(cond), std::move(b));
        if (end == "elif") {
          cond = parse_tuple(false, {}, false);
          expect_block_end();
          continue;
        }
        if (end == "else") {
          expect_block_end();
          n.else_body = parse_body({"endif"}, end);
        }
        break;
      }
    } else if (tag == "for") {
      n.kind = Node::Kind::For;
      n.targets = parse_targets("in");
      if (!skip_name("in")) fail(cur(), "expected 'in' in for loop, found " + describe(cur()));
      n.expr = parse_tuple(false, {"recursive", "if"}, false);
      if (skip_name("if")) n.expr2 = parse_expression(true);
      if (is_name("recursive")) fail(cur(), "recursive for loops are not supported");
      expect_block_end();
      n.body = parse_body({"endfor", "else"}, end);
      if (end == "else") {
        expect_block_end();
        n.else_body = parse_body({"endfor"}, end);
      }
    } else if (tag == "set") {
      n.kind = Node::Kind::Set;
      if (cur().type == Token::Type::Name && peek().type == Token::Type::Op && peek().text == ".") {
        n.targets.push_back(expect_name());
        ++i_;
        n.text = expect_name();  // namespace attribute
      } else {
        n.targets = parse_targets("=");
      }
      if (skip_op("=")) {
        n.expr = parse_tuple(true, {}, false);
        expect_block_end();
      } else {
        if (n.targets.size() != 1 || !n.text.empty()) fail(cur(), "a block set assigns one plain name");
        if (is_op("|")) fail(cur(), "filters on block set are not supported");
        expect_block_end();
        n.body = parse_body({"endset"}, end);
        n.kind = Node::Kind::Set;
        n.expr = nullptr;
        n.text.clear();
        n.targets.insert(n.targets.begin(), "");  // marks a block set: targets = {"", name}
      }
    } else if (tag == "macro") {
      n.kind = Node::Kind::Macro;
      n.text = expect_name();
      n.params = parse_params();
      expect_block_end();
      n.body = parse_body({"endmacro"}, end);
    } else if (tag == "call") {
      n.kind = Node::Kind::CallBlock;
      if (is_op("(")) n.params = parse_params();
      n.expr = parse_expression(true);
      if (n.expr->kind != Expr::Kind::Call) fail(name, "'{% call %}' needs a macro call");
      expect_block_end();
      n.body = parse_body({"endcall"}, end);
    } else if (tag == "with") {
      n.kind = Node::Kind::With;
      while (cur().type != Token::Type::BlockEnd) {
        if (!n.targets.empty()) expect_op(",");
        n.targets.push_back(expect_name());
        expect_op("=");
        n.withs.push_back(parse_expression(true));
      }
      expect_block_end();
      n.body = parse_body({"endwith"}, end);
    } else if (tag == "generation") {  // transformers' assistant-mask marker: renders its body
      n.kind = Node::Kind::Block;
      expect_block_end();
      n.body = parse_body({"endgeneration"}, end);
    } else if (tag == "break" || tag == "continue") {
      n.kind = tag == "break" ? Node::Kind::Break : Node::Kind::Continue;
    } else if (tag == "filter" || tag == "include" || tag == "import" || tag == "from" || tag == "extends" ||
               tag == "block" || tag == "do" || tag == "autoescape" || tag == "trans") {
      fail(name, "the '" + tag + "' tag is not supported in chat templates");
    } else {
      fail(name, "unknown tag '" + tag + "'");
    }
    if (n.kind == Node::Kind::Break || n.kind == Node::Kind::Continue || !end.empty()) expect_block_end();
    return n;
  }

  // for/set targets: "a" or "a, b" or "(a, b)".
  std::vector<std::string> parse_targets(const char* stop) {
    std::vector<std::string> out;
    const bool paren = skip_op("(");
    while (true) {
      out.push_back(expect_name());
      if (!skip_op(",")) break;
      if (is_name(stop) || is_op(stop) || is_op(")")) break;
    }
    if (paren) expect_op(")");
    return out;
  }

  std::vector<MacroParam> parse_params() {
    std::vector<MacroParam> out;
    expect_op("(");
    while (!is_op(")")) {
      if (!out.empty()) expect_op(",");
      if (is_op(")")) break;
      MacroParam p;
      p.name = expect_name();
      if (skip_op("=")) p.default_value = parse_expression(true);
      out.push_back(std::move(p));
    }
    expect_op(")");
    return out;
  }

  // ---- expressions ------------------------------------------------------------------------

  bool tuple_end(const std::vector<std::string>& extra_end) const {
    const Token& t = cur();
    if (t.type == Token::Type::VarEnd || t.type == Token::Type::BlockEnd || t.type == Token::Type::End) return true;
    if (t.type == Token::Type::Op && t.text == ")") return true;
    return t.type == Token::Type::Name && std::find(extra_end.begin(), extra_end.end(), t.text) != extra_end.end();
  }

  ExprPtr parse_tuple(bool with_condexpr, const std::vector<std::string>& extra_end, bool explicit_parens) {
    const Token& start = cur();
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (tuple_end(extra_end)) break;
      items.push_back(parse_expression(with_condexpr));
      if (is_op(",")) is_tuple = true;
      else break;
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens) fail(cur(), "expected an expression, found " + describe(cur()));
    }
    auto e = make(Expr::Kind::Tuple, start);
    e->args = std::move(items);
    return sealed(std::move(e));
  }

  ExprPtr parse_expression(bool with_condexpr) {
    DepthGuard guard(*this);
    if (!with_condexpr) return parse_or();
    ExprPtr expr = parse_or();
    while (is_name("if")) {
      const Token& at = cur();
      ++i_;
      ExprPtr cond = parse_or();
      ExprPtr other;
      if (skip_name("else")) other = parse_expression(true);
      auto e = make(Expr::Kind::CondExpr, at);
      e->args.push_back(std::move(cond));
      e->args.push_back(std::move(expr));
      e->args.push_back(std::move(other));
      expr = sealed(std::move(e));
    }
    return expr;
  }

  ExprPtr binary(const char* op, const Token& at, ExprPtr l, ExprPtr r) {
    auto e = make(Expr::Kind::Binary, at);
    e->name = op;
    e->args.push_back(std::move(l));
    e->args.push_back(std::move(r));
    return sealed(std::move(e));
  }

  ExprPtr parse_or() {
    ExprPtr l = parse_and();
    while (is_name("or")) {
      const Token& at = toks_[i_++];
      l = binary("or", at, std::move(l), parse_and());
    }
    return l;
  }
  ExprPtr parse_and() {
    ExprPtr l = parse_not();
    while (is_name("and")) {
      const Token& at = toks_[i_++];
      l = binary("and", at, std::move(l), parse_not());
    }
    return l;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(*this);
      const Token& at = toks_[i_++];
      auto e = make(Expr::Kind::Unary, at);
      e->name = "not";
      e->args.push_back(parse_not());
      return sealed(std::move(e));
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    const Token& at = cur();
    ExprPtr first = parse_math1();
    std::vector<std::string> ops;
    std::vector<ExprPtr> rest;
    while (true) {
      const Token& t = cur();
      if (t.type == Token::Type::Op && (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == "<=" || t.text == ">" ||
                                        t.text == ">=")) {
        ++i_;
        ops.push_back(t.text);
      } else if (is_name("in")) {
        ++i_;
        ops.push_back("in");
      } else if (is_name("not") && peek().type == Token::Type::Name && peek().text == "in") {
        i_ += 2;
        ops.push_back("notin");
      } else {
        break;
      }
      rest.push_back(parse_math1());
    }
    if (ops.empty()) return first;
    auto e = make(Expr::Kind::Compare, at);
    e->args.push_back(std::move(first));
    for (auto& r : rest) e->args.push_back(std::move(r));
    e->ops = std::move(ops);
    return sealed(std::move(e));
  }
  ExprPtr parse_math1() {
    ExprPtr l = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& at = toks_[i_++];
      l = binary(at.text == "+" ? "+" : "-", at, std::move(l), parse_concat());
    }
    return l;
  }
  ExprPtr parse_concat() {
    ExprPtr l = parse_math2();
    while (is_op("~")) {
      const Token& at = toks_[i_++];
      l = binary("~", at, std::move(l), parse_math2());
    }
    return l;
  }
  ExprPtr parse_math2() {
    ExprPtr l = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& at = toks_[i_++];
      const char* op = at.text == "*" ? "*" : at.text == "/" ? "/" : at.text == "//" ? "//" : "%";
      l = binary(op, at, std::move(l), parse_pow());
    }
    return l;
  }
  ExprPtr parse_pow() {
    ExprPtr l = parse_unary(true);
    while (is_op("**")) {
      const Token& at = toks_[i_++];
      l = binary("**", at, std::move(l), parse_unary(true));
    }
    return l;
  }
  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      const Token& at = toks_[i_++];
      node = make(Expr::Kind::Unary, at);
      node->name = at.text;
      node->args.push_back(parse_unary(false));
      node = sealed(std::move(node));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }
  ExprPtr parse_primary() {
    const Token& t = cur();
    switch (t.type) {
      case Token::Type::Name: {
        ++i_;
        if (t.text == "true" || t.text == "True" || t.text == "false" || t.text == "False") {
          auto e = make(Expr::Kind::Const, t);
          e->value = Value(t.text == "true" || t.text == "True");
          return e;
        }
        if (t.text == "none" || t.text == "None") {
          auto e = make(Expr::Kind::Const, t);
          e->value = Value::none();
          return e;
        }
        auto e = make(Expr::Kind::Name, t);
        e->name = t.text;
        return e;
      }
      case Token::Type::String: {
        std::string s;
        while (cur().type == Token::Type::String) s += toks_[i_++].text;  // "a" "b" concatenates
        auto e = make(Expr::Kind::Const, t);
        e->value = Value(std::move(s));
        return e;
      }
      case Token::Type::Int:
      case Token::Type::Float: {
        ++i_;
        auto e = make(Expr::Kind::Const, t);
        e->value = t.value;
        return e;
      }
      case Token::Type::Op:
        if (t.text == "(") {
          ++i_;
          ExprPtr e = parse_tuple(true, {}, true);
          expect_op(")");
          return e;
        }
        if (t.text == "[") {
          ++i_;
          auto e = make(Expr::Kind::List, t);
          while (!is_op("]")) {
            if (!e->args.empty()) expect_op(",");
            if (is_op("]")) break;
            e->args.push_back(parse_expression(true));
          }
          expect_op("]");
          return sealed(std::move(e));
        }
        if (t.text == "{") {
          ++i_;
          auto e = make(Expr::Kind::Dict, t);
          while (!is_op("}")) {
            if (!e->args.empty()) expect_op(",");
            if (is_op("}")) break;
            e->args.push_back(parse_expression(true));
            expect_op(":");
            e->args.push_back(parse_expression(true));
          }
          expect_op("}");
          return sealed(std::move(e));
        }
        break;
      default: break;
    }
    fail(t, "unexpected " + describe(t));
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (is_op(".") || is_op("[")) {
        node = sealed(parse_subscript(std::move(node)));
      } else if (is_op("(")) {
        node = sealed(parse_call(std::move(node)));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (is_op("|")) {
        const Token& at = toks_[i_++];
        auto e = make(Expr::Kind::Filter, at);
        e->name = expect_name();
        while (is_op(".")) {
          ++i_;
          e->name += "." + expect_name();
        }
        e->args.push_back(std::move(node));
        if (is_op("(")) parse_call_args(*e);
        node = sealed(std::move(e));
      } else if (is_name("is")) {
        const Token& at = toks_[i_++];
        auto e = make(Expr::Kind::Test, at);
        e->negated = skip_name("not");
        e->name = expect_name();
        e->args.push_back(std::move(node));
        const Token& t = cur();
        if (is_op("(")) {
          parse_call_args(*e);
        } else if ((t.type == Token::Type::Name || t.type == Token::Type::String || t.type == Token::Type::Int ||
                    t.type == Token::Type::Float || (t.type == Token::Type::Op && (t.text == "[" || t.text == "{"))) &&
                   !(t.type == Token::Type::Name && (t.text == "else" || t.text == "or" || t.text == "and"))) {
          if (is_name("is")) fail(t, "you cannot chain multiple tests with 'is'");
          e->args.push_back(parse_postfix(parse_primary()));
        }
        node = sealed(std::move(e));
      } else if (is_op("(")) {
        node = sealed(parse_call(std::move(node)));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr node) {
    const Token& at = toks_[i_++];
    if (at.text == ".") {
      const Token& t = cur();
      if (t.type == Token::Type::Name) {
        ++i_;
        auto e = make(Expr::Kind::GetAttr, t);
        e->name = t.text;
        e->args.push_back(std::move(node));
        return e;
      }
      if (t.type == Token::Type::Int) {
        ++i_;
        auto e = make(Expr::Kind::GetItem, t);
        e->args.push_back(std::move(node));
        auto idx = make(Expr::Kind::Const, t);
        idx->value = t.value;
        e->args.push_back(std::move(idx));
        return e;
      }
      fail(t, "expected an attribute name after '.', found " + describe(t));
    }
    // '['
    std::vector<ExprPtr> parts;
    while (!is_op("]")) {
      if (!parts.empty()) expect_op(",");
      if (is_op("]")) break;
      parts.push_back(parse_subscribed());
    }
    expect_op("]");
    if (parts.empty()) fail(at, "empty subscript");
    if (parts.size() == 1 && parts[0]->kind == Expr::Kind::Slice) {
      parts[0]->args[0] = std::move(node);
      return std::move(parts[0]);
    }
    for (const auto& part : parts)
      if (part->kind == Expr::Kind::Slice) fail(at, "a slice inside a tuple subscript is not supported");
    auto e = make(Expr::Kind::GetItem, at);
    e->args.push_back(std::move(node));
    if (parts.size() == 1) {
      e->args.push_back(std::move(parts[0]));
    } else {
      auto tup = make(Expr::Kind::Tuple, at);
      tup->args = std::move(parts);
      e->args.push_back(std::move(tup));
    }
    return e;
  }

  // One subscript item: an expression or a slice a:b:c (each part optional).
  ExprPtr parse_subscribed() {
    const Token& at = cur();
    ExprPtr start;
    if (!is_op(":")) {
      start = parse_expression(true);
      if (!is_op(":")) return start;
    }
    ++i_;  // ':'
    auto e = make(Expr::Kind::Slice, at);
    e->args.push_back(nullptr);  // the object, filled in by parse_subscript
    e->args.push_back(std::move(start));
    if (!is_op(":") && !is_op("]") && !is_op(",")) e->args.push_back(parse_expression(true));
    else e->args.push_back(nullptr);
    if (skip_op(":")) {
      if (!is_op("]") && !is_op(",")) e->args.push_back(parse_expression(true));
      else e->args.push_back(nullptr);
    } else {
      e->args.push_back(nullptr);
    }
    return e;
  }

  ExprPtr parse_call(ExprPtr node) {
    auto e = make(Expr::Kind::Call, cur());
    e->args.push_back(std::move(node));
    parse_call_args(*e);
    return e;
  }

  void parse_call_args(Expr& e) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) fail(cur(), "*args and **kwargs in calls are not supported");
      if (cur().type == Token::Type::Name && peek().type == Token::Type::Op && peek().text == "=") {
        std::string key = expect_name();
        ++i_;
        e.kwargs.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!e.kwargs.empty()) fail(cur(), "positional argument after keyword argument");
        e.args.push_back(parse_expression(true));
      }
    }
    expect_op(")");
  }
};

}  // namespace

Body parse_template(std::string_view source) {
  Parser parser(lex_template(source));
  return parser.parse_all();
}

}  // namespace chorus::jinja
