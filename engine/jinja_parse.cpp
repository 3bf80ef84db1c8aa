// Lexer and recursive-descent parser for the Jinja subset chat templates use. See jinja_parse.h.
//
// The lexer follows Jinja2's rules with trim_blocks and lstrip_blocks on:
//  - "{%-", "{{-", "{#-" remove all whitespace before the tag; "-%}", "-}}", "-#}" all after it;
//  - lstrip_blocks: spaces and tabs between the start of a line and a "{%" or "{#" are removed
//    (not before "{{", and not with "{%+");
//  - trim_blocks: the first newline after "%}" or "#}" is removed (not after "+%}").
// The parser mirrors Jinja2's precedence: condexpr < or < and < not < compare (== != < <= > >= in
// not in) < + - < ~ < * / // % < ** < unary -/+ < filters/tests/calls < postfix (. [] ()).
#include "engine/jinja_parse.h"

#include <algorithm>
#include <charconv>

namespace chorus::jinja {
namespace {

struct Token {
  enum class Type { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, End };
  Type type;
  std::string text;  // Text, Name, String (decoded), Op
  Value value;       // Int, Float
  int line = 0, column = 0;
};

bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_expr_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

class Lexer {
 public:
  explicit Lexer(std::string_view source) {
    // Jinja2 normalises \r\n and \r to \n and drops one trailing newline (keep_trailing_newline=False).
    src_.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_ += '\n';
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_ += source[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;
    const size_t n = src_.size();
    while (pos < n) {
      size_t t = pos;
      while (true) {
        t = src_.find('{', t);
        if (t == std::string::npos || t + 1 >= n) {
          t = std::string::npos;
          break;
        }
        const char k = src_[t + 1];
        if (k == '{' || k == '%' || k == '#') break;
        ++t;
      }
      if (t == std::string::npos) {
        emit_text(pos, src_.substr(pos));
        break;
      }
      std::string text = src_.substr(pos, t - pos);
      const char kind = src_[t + 1];
      size_t p = t + 2;
      char sign = 0;
      if (p < n && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
      if (sign == '-') {
        text = std::string(py_strip(text, false, true));
      } else if (sign != '+' && kind != '{') {
        const size_t nl = text.rfind('\n');
        const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
        if ((l_pos > 0 || line_starting) && l_pos < text.size() &&
            py_strip(std::string_view(text).substr(l_pos), true, false).empty())
          text.resize(l_pos);
      }
      emit_text(pos, text);
      if (kind == '#') {
        const size_t end = src_.find("#}", p);
        if (end == std::string::npos) fail(t, "unterminated comment: missing '#}'");
        const char close_sign = end > p ? src_[end - 1] : 0;
        pos = end + 2;
        if (close_sign == '-') pos = skip_space(pos);
        else if (close_sign != '+' && pos < n && src_[pos] == '\n') ++pos;
        line_starting = src_[pos - 1] == '\n';
        continue;
      }
      if (kind == '%' && try_raw(t, p, pos)) {
        line_starting = src_[pos - 1] == '\n';
        continue;
      }
      pos = lex_tag(t, p, kind == '{');
      line_starting = src_[pos - 1] == '\n';
    }
    Token end{Token::Type::End, {}, {}, 0, 0};
    position(n, end);
    tokens_.push_back(end);
    return std::move(tokens_);
  }

 private:
  std::string src_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;

  void position(size_t offset, Token& tok) const {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    const size_t line = static_cast<size_t>(it - line_starts_.begin());
    tok.line = static_cast<int>(line);
    tok.column = static_cast<int>(offset - line_starts_[line - 1] + 1);
  }
  [[noreturn]] void fail(size_t offset, const std::string& message) const {
    Token t;
    position(offset, t);
    throw TemplateError(TemplateError::Kind::Syntax, t.line, t.column, message);
  }
  size_t skip_space(size_t pos) const {
    while (pos < src_.size()) {
      size_t i = pos;
      if (!is_py_space(decode_utf8(src_, i))) break;
      pos = i;
    }
    return pos;
  }
  void emit_text(size_t offset, std::string text) {
    if (text.empty()) return;
    Token tok{Token::Type::Text, std::move(text), {}, 0, 0};
    position(offset, tok);
    tokens_.push_back(std::move(tok));
  }
  void emit(Token::Type type, size_t offset, std::string text = {}, Value value = {}) {
    Token tok{type, std::move(text), std::move(value), 0, 0};
    position(offset, tok);
    tokens_.push_back(std::move(tok));
  }

  // {% raw %}...{% endraw %}: the content is text, tags inside are not interpreted.
  bool try_raw(size_t tag_start, size_t p, size_t& pos) {
    size_t q = p;
    while (q < src_.size() && is_expr_space(src_[q])) ++q;
    if (src_.compare(q, 3, "raw") != 0 || (q + 3 < src_.size() && (is_name_start(src_[q + 3]) || is_digit(src_[q + 3]))))
      return false;
    q += 3;
    while (q < src_.size() && is_expr_space(src_[q])) ++q;
    if (src_.compare(q, 3, "-%}") == 0) q = skip_space(q + 3);
    else if (src_.compare(q, 2, "%}") == 0) q += 2;
    else return false;
    for (size_t s = src_.find("{%", q); s != std::string::npos; s = src_.find("{%", s + 2)) {
      size_t r = s + 2;
      char sign = 0;
      if (r < src_.size() && (src_[r] == '-' || src_[r] == '+')) sign = src_[r++];
      while (r < src_.size() && is_expr_space(src_[r])) ++r;
      if (src_.compare(r, 6, "endraw") != 0) continue;
      r += 6;
      while (r < src_.size() && is_expr_space(src_[r])) ++r;
      std::string text = src_.substr(q, s - q);
      if (sign == '-') text = std::string(py_strip(text, false, true));
      if (src_.compare(r, 3, "-%}") == 0) {
        pos = skip_space(r + 3);
      } else if (src_.compare(r, 3, "+%}") == 0) {
        pos = r + 3;
      } else if (src_.compare(r, 2, "%}") == 0) {
        pos = r + 2;
        if (pos < src_.size() && src_[pos] == '\n') ++pos;
      } else {
        continue;
      }
      emit_text(q, std::move(text));
      return true;
    }
    fail(tag_start, "unterminated raw block: missing '{% endraw %}'");
  }

  // Lexes the expression tokens of one {{ }} or {% %} tag; returns the offset after it.
  size_t lex_tag(size_t tag_start, size_t p, bool variable) {
    const size_t n = src_.size();
    const char close = variable ? '}' : '%';
    emit(variable ? Token::Type::VarBegin : Token::Type::BlockBegin, tag_start);
    std::vector<char> brackets;
    while (true) {
      while (p < n && is_expr_space(src_[p])) ++p;
      if (p >= n) fail(tag_start, variable ? "unterminated '{{': missing '}}'" : "unterminated '{%': missing '%}'");
      if (brackets.empty()) {
        size_t q = p;
        char sign = 0;
        if ((src_[q] == '-' || (!variable && src_[q] == '+')) && q + 2 < n && src_[q + 1] == close && src_[q + 2] == '}')
          sign = src_[q++];
        if (src_[q] == close && q + 1 < n && src_[q + 1] == '}') {
          emit(variable ? Token::Type::VarEnd : Token::Type::BlockEnd, q);
          size_t after = q + 2;
          if (sign == '-') after = skip_space(after);
          else if (!variable && sign != '+' && after < n && src_[after] == '\n') ++after;
          return after;
        }
      }
      const char c = src_[p];
      if (is_name_start(c)) {
        size_t q = p;
        while (q < n && (is_name_start(src_[q]) || is_digit(src_[q]))) ++q;
        emit(Token::Type::Name, p, src_.substr(p, q - p));
        p = q;
      } else if (is_digit(c)) {
        p = lex_number(p);
      } else if (c == '\'' || c == '"') {
        p = lex_string(p);
      } else {
        static const char* const kOps[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[", "]", "(",
                                           ")",  "{",  "}",  ">",  "<",  "=",  ".", ":", "|", ",", ";"};
        std::string op;
        for (const char* o : kOps)
          if (src_.compare(p, std::char_traits<char>::length(o), o) == 0) {
            op = o;
            break;
          }
        if (op.empty()) fail(p, std::string("unexpected character '") + c + "'");
        if (op == "(" || op == "[" || op == "{") brackets.push_back(op[0]);
        if (op == ")" || op == "]" || op == "}") {
          const char want = op == ")" ? '(' : op == "]" ? '[' : '{';
          if (brackets.empty() || brackets.back() != want) fail(p, "unexpected '" + op + "'");
          brackets.pop_back();
        }
        emit(Token::Type::Op, p, op);
        p += op.size();
      }
    }
  }

  size_t lex_number(size_t p) {
    const size_t n = src_.size();
    size_t q = p;
    auto digits = [&](size_t& r) {
      const size_t s = r;
      while (r < n && (is_digit(src_[r]) || (src_[r] == '_' && r > s && r + 1 < n && is_digit(src_[r + 1])))) ++r;
      return r > s;
    };
    digits(q);
    bool is_float = false;
    // "x.0.1" is attribute access, not a float: a number right after '.' stays an integer.
    const bool after_dot = p > 0 && src_[p - 1] == '.';
    if (!after_dot && q + 1 < n && src_[q] == '.' && is_digit(src_[q + 1])) {
      ++q;
      digits(q);
      is_float = true;
    }
    if (!after_dot && q < n && (src_[q] == 'e' || src_[q] == 'E')) {
      size_t r = q + 1;
      if (r < n && (src_[r] == '+' || src_[r] == '-')) ++r;
      if (digits(r)) {
        q = r;
        is_float = true;
      }
    }
    std::string num;
    for (size_t i = p; i < q; ++i)
      if (src_[i] != '_') num += src_[i];
    if (is_float) {
      double d = 0;
      std::from_chars(num.data(), num.data() + num.size(), d);
      emit(Token::Type::Float, p, num, Value(d));
    } else {
      int64_t v = 0;
      auto r = std::from_chars(num.data(), num.data() + num.size(), v);
      if (r.ec != std::errc()) fail(p, "integer literal " + num + " does not fit in 64 bits");
      emit(Token::Type::Int, p, num, Value(v));
    }
    return q;
  }

  // A string literal with Python's escapes (as Jinja2 decodes them with "unicode-escape").
  size_t lex_string(size_t p) {
    const size_t n = src_.size();
    const char quote = src_[p];
    std::string out;
    size_t q = p + 1;
    while (true) {
      if (q >= n) fail(p, "unterminated string literal");
      const char c = src_[q++];
      if (c == quote) break;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (q >= n) fail(p, "unterminated string literal");
      const char e = src_[q++];
      switch (e) {
        case '\n': break;  // line continuation
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'v': out += '\v'; break;
        case 'x':
        case 'u':
        case 'U': {
          const int len = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          uint32_t cp = 0;
          for (int k = 0; k < len; ++k) {
            const char h = q < n ? src_[q] : '\0';
            int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
            if (d < 0) fail(q, std::string("truncated \\") + e + " escape in string literal");
            cp = cp * 16 + static_cast<uint32_t>(d);
            ++q;
          }
          if (cp > 0x10ffff) fail(q, "escape in string literal is not a Unicode code point");
          append_utf8(out, cp);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = static_cast<uint32_t>(e - '0');
            for (int k = 0; k < 2 && q < n && src_[q] >= '0' && src_[q] <= '7'; ++k) cp = cp * 8 + static_cast<uint32_t>(src_[q++] - '0');
            append_utf8(out, cp);
          } else {
            out += '\\';  // unknown escapes stay as written
            out += e;
          }
      }
    }
    emit(Token::Type::String, p, std::move(out));
    return q;
  }
};

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
  Lexer lexer(source);
  Parser parser(lexer.run());
  return parser.parse_all();
}

}  // namespace chorus::jinja
