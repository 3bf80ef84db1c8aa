// The Jinja lexer. See jinja_lexer.h.
// The lexer follows Jinja2's rules with trim_blocks and lstrip_blocks on:
//  - "{%-", "{{-", "{#-" remove all whitespace before the tag; "-%}", "-}}", "-#}" all after it;
//  - lstrip_blocks: spaces and tabs between the start of a line and a "{%" or "{#" are removed
//    (not before "{{", and not with "{%+");
//  - trim_blocks: the first newline after "%}" or "#}" is removed (not after "+%}").
#include "engine/jinja_lexer.h"

#include <algorithm>
#include <charconv>

namespace chorus::jinja {
namespace {

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

}  // namespace

std::vector<Token> lex_template(std::string_view source) { return Lexer(source).run(); }

}  // namespace chorus::jinja
