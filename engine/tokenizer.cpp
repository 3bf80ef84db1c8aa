// engine/tokenizer.cpp — special-token partitioning, SPM and byte-level BPE encoding, the BPE
// pre-tokenizers (hand-written regex matchers over code point classes), detokenisation.
#include "engine/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <queue>
#include <stdexcept>

#include "engine/unicode.h"

namespace chorus {

namespace {

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers. Each regex is a matcher: given a start code point i inside a segment
// [i, end), the length (in code points) of the regex's match starting exactly at i, or 0. A
// split pass finds successive leftmost matches like a regex iterator; text between matches
// stays a word of its own (llama.cpp and HF tokenizers keep it too). Passes chain: each later
// regex splits the words the earlier produced, never looking across their boundaries.

struct Cp {
  uint32_t cp;
  uint32_t off;  // byte offset in the text
  unicode::CpClass cls;
  bool ws;  // \s
};
using Cps = std::vector<Cp>;

Cps decode_all(std::string_view text) {
  Cps out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const unicode::Decoded d = unicode::decode_utf8(text, pos);
    // An invalid byte is its own "character" of class Other: it stays in the text unchanged.
    const auto cls = d.valid ? unicode::cp_class(d.cp) : unicode::CpClass::Other;
    out.push_back({d.valid ? d.cp : 0xFFFFFFFFu, static_cast<uint32_t>(pos), cls, d.valid && unicode::is_whitespace(d.cp)});
    pos += d.len;
  }
  return out;
}

struct Span {
  const Cps& c;
  size_t end;
  bool has(size_t k) const { return k < end; }
  bool L(size_t k) const { return k < end && c[k].cls == unicode::CpClass::Letter; }
  bool N(size_t k) const { return k < end && c[k].cls == unicode::CpClass::Number; }
  bool S(size_t k) const { return k < end && c[k].ws; }
  bool is(size_t k, uint32_t cp) const { return k < end && c[k].cp == cp; }
  bool crlf(size_t k) const { return is(k, '\r') || is(k, '\n'); }
  // [^\s\p{L}\p{N}]
  bool other(size_t k) const { return k < end && !c[k].ws && !L(k) && !N(k); }
  uint32_t lower(size_t k) const {
    const uint32_t x = k < end ? c[k].cp : 0;
    return x >= 'A' && x <= 'Z' ? x + 32 : x;
  }
  template <class Pred>
  size_t run(size_t k, Pred p) const {
    while (k < end && p(k)) ++k;
    return k;
  }
};

// 's|'t|'re|'ve|'m|'ll|'d, case-sensitive or (Llama 3) ASCII case-insensitive.
size_t match_contraction(const Span& s, size_t i, bool any_case) {
  if (!s.is(i, '\'') || !s.has(i + 1)) return 0;
  const auto at = [&](size_t k) { return any_case ? s.lower(k) : (s.has(k) ? s.c[k].cp : 0); };
  const uint32_t x = at(i + 1);
  if (x == 's' || x == 't' || x == 'm' || x == 'd') return 2;
  if (!s.has(i + 2)) return 0;
  const uint32_t y = at(i + 2);
  if ((x == 'r' && y == 'e') || (x == 'v' && y == 'e') || (x == 'l' && y == 'l')) return 3;
  return 0;
}

// \s+(?!\S)|\s+ at i (i is whitespace): the run, minus its last character when a non-space
// follows and the run is longer than one (so that character can lead the next word).
size_t match_trailing_space(const Span& s, size_t i) {
  const size_t k = s.run(i, [&](size_t x) { return s.S(x); });
  if (k == s.end || k - i == 1) return k - i;
  return k - 1 - i;
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t match_gpt2(const Cps& c, size_t i, size_t end) {
  const Span s{c, end};
  if (size_t n = match_contraction(s, i, false)) return n;
  const size_t j = s.is(i, ' ') ? i + 1 : i;
  if (s.L(j)) return s.run(j, [&](size_t k) { return s.L(k); }) - i;
  if (s.N(j)) return s.run(j, [&](size_t k) { return s.N(k); }) - i;
  if (s.other(j)) return s.run(j, [&](size_t k) { return s.other(k); }) - i;
  if (s.S(i)) return match_trailing_space(s, i);
  return 0;
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}
//   | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
size_t match_llama3_family(const Cps& c, size_t i, size_t end, size_t max_digits) {
  const Span s{c, end};
  if (size_t n = match_contraction(s, i, true)) return n;
  if (s.L(i)) return s.run(i, [&](size_t k) { return s.L(k); }) - i;
  if (!s.crlf(i) && !s.N(i) && s.L(i + 1)) return s.run(i + 1, [&](size_t k) { return s.L(k); }) - i;
  if (s.N(i)) {
    size_t k = i;
    while (k - i < max_digits && s.N(k)) ++k;
    return k - i;
  }
  const size_t j = s.is(i, ' ') ? i + 1 : i;
  if (s.other(j)) {
    const size_t k = s.run(j, [&](size_t x) { return s.other(x); });
    return s.run(k, [&](size_t x) { return s.crlf(x); }) - i;
  }
  if (s.S(i)) {
    // \s*[\r\n]+ : the whitespace run up to and including its last CR/LF.
    const size_t k = s.run(i, [&](size_t x) { return s.S(x); });
    for (size_t m = k; m > i; --m)
      if (s.crlf(m - 1)) return m - i;
    return match_trailing_space(s, i);
  }
  return 0;
}
size_t match_llama3(const Cps& c, size_t i, size_t end) { return match_llama3_family(c, i, end, 3); }
size_t match_qwen2(const Cps& c, size_t i, size_t end) { return match_llama3_family(c, i, end, 1); }

// [\p{P}\$\+<=>\^~\|]+
size_t match_punct_run(const Cps& c, size_t i, size_t end) {
  const auto punct = [&](size_t k) {
    const uint32_t x = c[k].cp;
    return c[k].cls == unicode::CpClass::Punctuation || x == '$' || x == '+' || x == '<' || x == '=' || x == '>' ||
           x == '^' || x == '~' || x == '|';
  };
  size_t k = i;
  while (k < end && punct(k)) ++k;
  return k - i;
}
// \p{N}+
size_t match_number_run(const Cps& c, size_t i, size_t end) {
  size_t k = i;
  while (k < end && c[k].cls == unicode::CpClass::Number) ++k;
  return k - i;
}
// \p{N}
size_t match_one_number(const Cps& c, size_t i, size_t end) {
  return i < end && c[i].cls == unicode::CpClass::Number ? 1 : 0;
}
// [0-9][0-9][0-9]
size_t match_three_digits(const Cps& c, size_t i, size_t end) {
  if (i + 3 > end) return 0;
  for (size_t k = i; k < i + 3; ++k)
    if (c[k].cp < '0' || c[k].cp > '9') return 0;
  return 3;
}

using Matcher = size_t (*)(const Cps&, size_t, size_t);

struct Seg {
  size_t begin, end;  // code point indices
};

std::vector<Seg> split_pass(const Cps& c, const std::vector<Seg>& in, Matcher m) {
  std::vector<Seg> out;
  out.reserve(in.size() * 2);
  for (const Seg& seg : in) {
    size_t gap = seg.begin;
    for (size_t i = seg.begin; i < seg.end;) {
      const size_t n = m(c, i, seg.end);
      if (n == 0) {
        ++i;
        continue;
      }
      if (gap < i) out.push_back({gap, i});
      out.push_back({i, i + n});
      i += n;
      gap = i;
    }
    if (gap < seg.end) out.push_back({gap, seg.end});
  }
  return out;
}

std::vector<Seg> split_words(PreTokenizer pre, const Cps& c) {
  std::vector<Seg> segs;
  if (c.empty()) return segs;
  segs.push_back({0, c.size()});
  switch (pre) {
    case PreTokenizer::Default:
      segs = split_pass(c, segs, match_punct_run);
      segs = split_pass(c, segs, match_gpt2);
      segs = split_pass(c, segs, match_number_run);
      segs = split_pass(c, segs, match_three_digits);
      break;
    case PreTokenizer::Gpt2: segs = split_pass(c, segs, match_gpt2); break;
    case PreTokenizer::Llama3: segs = split_pass(c, segs, match_llama3); break;
    case PreTokenizer::Qwen2: segs = split_pass(c, segs, match_qwen2); break;
    case PreTokenizer::Smollm:
      segs = split_pass(c, segs, match_one_number);
      segs = split_pass(c, segs, match_gpt2);
      break;
  }
  return segs;
}

std::vector<std::string_view> words_of(std::string_view text, PreTokenizer pre) {
  const Cps c = decode_all(text);
  const std::vector<Seg> segs = split_words(pre, c);
  std::vector<std::string_view> words;
  words.reserve(segs.size());
  for (const Seg& s : segs) {
    const size_t b = c[s.begin].off;
    const size_t e = s.end < c.size() ? c[s.end].off : text.size();
    words.push_back(text.substr(b, e - b));
  }
  return words;
}

// ---------------------------------------------------------------------------------------------
// Special tokens: the input as raw-text fragments and matched special tokens.

struct Fragment {
  TokenId token;  // kNoToken: raw text [off, off + len)
  size_t off, len;
};

bool ascii_space(char ch) { return std::isspace(static_cast<unsigned char>(ch)) != 0; }

std::vector<Fragment> partition(const Vocab& vocab, std::string_view text, bool parse_special) {
  std::vector<Fragment> frags;
  if (text.empty()) return frags;
  frags.push_back({kNoToken, 0, text.size()});
  std::vector<Fragment> next;
  for (TokenId id : vocab.special_tokens()) {
    const TokenType type = vocab.type(id);
    if (!parse_special && (type == TokenType::Control || type == TokenType::Unknown)) continue;
    const std::string& t = vocab.text(id);
    next.clear();
    for (const Fragment& f : frags) {
      if (f.token != kNoToken) {
        next.push_back(f);
        continue;
      }
      size_t base = f.off, len = f.len;
      while (len > 0) {
        const size_t rel = text.substr(base, len).find(t);
        if (rel == std::string_view::npos) {
          next.push_back({kNoToken, base, len});
          break;
        }
        size_t left = rel;
        if (vocab.lstrip(id))
          while (left > 0 && ascii_space(text[base + left - 1])) --left;
        if (left > 0) next.push_back({kNoToken, base, left});
        next.push_back({id, 0, 0});
        size_t rbase = base + rel + t.size();
        size_t rlen = base + len - rbase;
        if (vocab.rstrip(id))
          while (rlen > 0 && ascii_space(text[rbase])) ++rbase, --rlen;
        base = rbase;
        len = rlen;
      }
    }
    frags.swap(next);
  }
  return frags;
}

// ---------------------------------------------------------------------------------------------
// Merge loops. Symbols are characters of the text, linked left to right; merging folds the
// right symbol into the left one.

struct Sym {
  int prev, next;
  uint32_t off, n;
};

std::vector<Sym> char_symbols(std::string_view text) {
  std::vector<Sym> syms;
  syms.reserve(text.size());
  for (size_t off = 0; off < text.size();) {
    const size_t n = std::min(unicode::utf8_sequence_length(static_cast<uint8_t>(text[off])), text.size() - off);
    const int idx = static_cast<int>(syms.size());
    syms.push_back({idx - 1, off + n == text.size() ? -1 : idx + 1, static_cast<uint32_t>(off), static_cast<uint32_t>(n)});
    off += n;
  }
  return syms;
}

void merge_into_left(std::vector<Sym>& syms, int left, int right) {
  Sym& l = syms[static_cast<size_t>(left)];
  Sym& r = syms[static_cast<size_t>(right)];
  l.n += r.n;
  r.n = 0;
  l.next = r.next;
  if (r.next >= 0) syms[static_cast<size_t>(r.next)].prev = left;
}

struct SpmBigram {
  int left, right;
  float score;
  uint32_t size;
};
struct SpmOrder {  // highest score first; ties: leftmost first
  bool operator()(const SpmBigram& a, const SpmBigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

struct BpeBigram {
  int left, right;
  int32_t rank;
  uint32_t size;
};
struct BpeOrder {  // lowest rank first; ties: leftmost first
  bool operator()(const BpeBigram& a, const BpeBigram& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
};

std::string spm_piece(const std::string& text, TokenType type) {
  switch (type) {
    case TokenType::Control:
    case TokenType::Unknown:
    case TokenType::UserDefined: return text;
    case TokenType::Normal: {
      std::string out;
      out.reserve(text.size());
      for (size_t i = 0; i < text.size();) {
        if (text.compare(i, kSpmSpace.size(), kSpmSpace) == 0) {
          out.push_back(' ');
          i += kSpmSpace.size();
        } else {
          out.push_back(text[i++]);
        }
      }
      return out;
    }
    case TokenType::Byte:
      if (text.size() == 6 && text.compare(0, 3, "<0x") == 0 && text[5] == '>') {
        const auto hex = [](char ch) -> int {
          if (ch >= '0' && ch <= '9') return ch - '0';
          if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
          if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
          return -1;
        };
        const int hi = hex(text[3]), lo = hex(text[4]);
        if (hi >= 0 && lo >= 0) return std::string(1, static_cast<char>(hi * 16 + lo));
      }
      return text;
    default: return {};  // undefined / unused: nothing, as llama.cpp
  }
}

std::string bpe_piece(const std::string& text, TokenType type) {
  switch (type) {
    case TokenType::Control:
    case TokenType::Unknown:
    case TokenType::UserDefined: return text;
    case TokenType::Normal: {
      std::string out;
      out.reserve(text.size());
      for (size_t pos = 0; pos < text.size();) {
        const unicode::Decoded d = unicode::decode_utf8(text, pos);
        const int b = d.valid ? unicode::bpe_cp_to_byte(d.cp) : -1;
        if (b >= 0)
          out.push_back(static_cast<char>(b));
        else
          out.append(text, pos, d.len);  // not a mapped byte: keep the character itself
        pos += d.len;
      }
      return out;
    }
    default: return {};
  }
}

bool hidden_unless_special(TokenType t) { return t == TokenType::Control || t == TokenType::Unknown; }

}  // namespace

std::vector<std::string_view> pre_tokenize(PreTokenizer pre, std::string_view text) { return words_of(text, pre); }

Tokenizer::Tokenizer(Vocab vocab) : vocab_(std::move(vocab)) {
  pieces_.resize(vocab_.n_tokens());
  const bool spm = vocab_.kind() == VocabKind::Spm;
  for (TokenId id = 0; static_cast<uint32_t>(id) < vocab_.n_tokens(); ++id)
    pieces_[static_cast<size_t>(id)] = spm ? spm_piece(vocab_.text(id), vocab_.type(id)) : bpe_piece(vocab_.text(id), vocab_.type(id));
}

void Tokenizer::encode_spm(std::string_view text, std::vector<TokenId>& out) const {
  std::vector<Sym> syms = char_symbols(text);
  if (syms.empty()) return;
  std::priority_queue<SpmBigram, std::vector<SpmBigram>, SpmOrder> queue;
  const auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const Sym& l = syms[static_cast<size_t>(left)];
    const Sym& r = syms[static_cast<size_t>(right)];
    const TokenId id = vocab_.find(text.substr(l.off, l.n + r.n));
    if (id == kNoToken) return;
    queue.push({left, right, vocab_.score(id), l.n + r.n});
  };
  for (int i = 1; i < static_cast<int>(syms.size()); ++i) try_add(i - 1, i);
  while (!queue.empty()) {
    const SpmBigram b = queue.top();
    queue.pop();
    const Sym& l = syms[static_cast<size_t>(b.left)];
    const Sym& r = syms[static_cast<size_t>(b.right)];
    if (l.n == 0 || r.n == 0 || l.n + r.n != b.size) continue;  // stale
    merge_into_left(syms, b.left, b.right);
    try_add(syms[static_cast<size_t>(b.left)].prev, b.left);
    try_add(b.left, syms[static_cast<size_t>(b.left)].next);
  }
  for (int i = 0; i != -1; i = syms[static_cast<size_t>(i)].next) {
    const Sym& s = syms[static_cast<size_t>(i)];
    const std::string_view piece = text.substr(s.off, s.n);
    const TokenId id = vocab_.find(piece);
    if (id != kNoToken) {
      out.push_back(id);
      continue;
    }
    // Byte fallback: every byte of a character the vocabulary lacks.
    for (char ch : piece) {
      const TokenId bt = vocab_.byte_token(static_cast<uint8_t>(ch));
      if (bt != kNoToken)
        out.push_back(bt);
      else if (vocab_.unk() != kNoToken)
        out.push_back(vocab_.unk());
    }
  }
}

void Tokenizer::encode_bpe(std::string_view text, std::vector<TokenId>& out) const {
  // Bytes that are not UTF-8 (0xC0, 0xC1, 0xF5..0xFF, broken sequences) become U+FFFD, one per
  // byte, before pre-tokenization, as in llama.cpp: a vocabulary without single-byte tokens
  // for them would otherwise drop them silently.
  std::string replaced;
  if (unicode::replace_invalid_utf8_bytes(text, replaced)) text = replaced;
  std::string word;
  for (std::string_view raw : words_of(text, vocab_.pre_tokenizer())) {
    word.clear();
    for (char ch : raw) word += unicode::byte_to_bpe_utf8(static_cast<uint8_t>(ch));
    if (vocab_.ignore_merges()) {
      if (const TokenId id = vocab_.find(word); id != kNoToken) {
        out.push_back(id);
        continue;
      }
    }
    const std::string_view w = word;
    std::vector<Sym> syms = char_symbols(w);
    std::priority_queue<BpeBigram, std::vector<BpeBigram>, BpeOrder> queue;
    const auto try_add = [&](int left, int right) {
      if (left < 0 || right < 0) return;
      const Sym& l = syms[static_cast<size_t>(left)];
      const Sym& r = syms[static_cast<size_t>(right)];
      const int32_t rank = vocab_.merge_rank(w.substr(l.off, l.n), w.substr(r.off, r.n));
      if (rank < 0) return;
      queue.push({left, right, rank, l.n + r.n});
    };
    for (int i = 1; i < static_cast<int>(syms.size()); ++i) try_add(i - 1, i);
    while (!queue.empty()) {
      const BpeBigram b = queue.top();
      queue.pop();
      const Sym& l = syms[static_cast<size_t>(b.left)];
      const Sym& r = syms[static_cast<size_t>(b.right)];
      if (l.n == 0 || r.n == 0 || l.n + r.n != b.size) continue;  // stale
      merge_into_left(syms, b.left, b.right);
      try_add(syms[static_cast<size_t>(b.left)].prev, b.left);
      try_add(b.left, syms[static_cast<size_t>(b.left)].next);
    }
    if (syms.empty()) continue;
    for (int i = 0; i != -1; i = syms[static_cast<size_t>(i)].next) {
      const Sym& s = syms[static_cast<size_t>(i)];
      const std::string_view piece = w.substr(s.off, s.n);
      const TokenId id = vocab_.find(piece);
      if (id != kNoToken) {
        out.push_back(id);
        continue;
      }
      // Not a token (a vocabulary without every byte): single bytes that are tokens, as llama.cpp.
      for (char ch : piece)
        if (const TokenId bt = vocab_.find(std::string_view(&ch, 1)); bt != kNoToken) out.push_back(bt);
    }
  }
}

std::vector<TokenId> Tokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  std::vector<TokenId> out;
  const bool add_bos = options.add_special && vocab_.add_bos();
  const bool add_eos = options.add_special && vocab_.add_eos();
  if (add_bos) out.push_back(vocab_.bos());
  const std::vector<Fragment> frags = partition(vocab_, text, options.parse_special);
  if (vocab_.kind() == VocabKind::Spm) {
    bool after_special = true;  // the text start counts as "after a special token"
    std::string escaped;
    for (const Fragment& f : frags) {
      if (f.token != kNoToken) {
        out.push_back(f.token);
        after_special = true;
        continue;
      }
      escaped.clear();
      if (vocab_.add_space_prefix() && after_special) escaped += kSpmSpace;
      for (char ch : text.substr(f.off, f.len)) {
        if (ch == ' ')
          escaped += kSpmSpace;
        else
          escaped.push_back(ch);
      }
      encode_spm(escaped, out);
      after_special = false;
    }
  } else {
    for (const Fragment& f : frags) {
      if (f.token != kNoToken)
        out.push_back(f.token);
      else
        encode_bpe(text.substr(f.off, f.len), out);
    }
  }
  if (add_eos) out.push_back(vocab_.eos());
  return out;
}

std::string Tokenizer::piece(TokenId id, bool render_special) const {
  if (!vocab_.valid(id)) throw std::out_of_range("token id " + std::to_string(id) + " is outside the vocabulary of " +
                                                 std::to_string(vocab_.n_tokens()) + " tokens");
  if (!render_special && hidden_unless_special(vocab_.type(id))) return {};
  return pieces_[static_cast<size_t>(id)];
}

namespace {

// llama.cpp's clean_up_tokenization_spaces, byte-wise.
std::string clean_spaces(const std::string& in) {
  // " ?", " !", " .", " ," lose the space.
  std::string a;
  for (size_t i = 0; i < in.size(); ++i) {
    const char x = in[i];
    if (i > 0 && in[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',') && !a.empty()) a.pop_back();
    a.push_back(x);
  }
  // " ' " becomes "'".
  std::string b;
  for (size_t i = 0; i < a.size(); ++i) {
    const char x = a[i];
    if (i > 0 && x == '\'' && i + 1 < a.size() && a[i - 1] == ' ' && a[i + 1] == ' ') {
      if (!b.empty()) b.pop_back();
      b.push_back(x);
      ++i;  // and the space after
      continue;
    }
    b.push_back(x);
  }
  // " 's", " 'm", " 're", " 've" lose the space.
  std::string c;
  for (size_t i = 0; i < b.size(); ++i) {
    const char x = b[i];
    if (i > 0 && b[i - 1] == ' ' && x == '\'' && i + 1 < b.size()) {
      const char x1 = b[i + 1];
      const char x2 = i + 2 < b.size() ? b[i + 2] : '\0';
      const bool drop = x1 == 's' || x1 == 'm' || (i + 2 < b.size() && ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')));
      if (drop && !c.empty()) c.pop_back();
    }
    c.push_back(x);
  }
  return c;
}

}  // namespace

std::string Tokenizer::decode(std::span<const TokenId> ids, const DecodeOptions& options) const {
  size_t begin = 0, end = ids.size();
  bool remove_space = vocab_.add_space_prefix();
  if (options.remove_special && vocab_.add_bos() && end > 0 && ids[0] == vocab_.bos()) {
    remove_space = false;  // llama.cpp: the text after a removed BOS keeps its space
    begin = 1;
  }
  if (options.remove_special && vocab_.add_eos() && end > begin && ids[end - 1] == vocab_.eos()) --end;
  std::string out;
  for (size_t i = begin; i < end; ++i) {
    std::string p = piece(ids[i], options.render_special);
    if (remove_space && !p.empty() && p[0] == ' ') p.erase(0, 1);
    remove_space = false;
    out += p;
  }
  return options.clean_spaces ? clean_spaces(out) : out;
}

Detokenizer::Detokenizer(const Tokenizer& tokenizer, const DecodeOptions& options)
    : tokenizer_(&tokenizer), options_(options) {}

std::string Detokenizer::push(TokenId id) {
  const Vocab& v = tokenizer_->vocab();
  std::string p = tokenizer_->piece(id, options_.render_special);
  if (first_) {
    first_ = false;
    if (options_.remove_special && v.add_bos() && id == v.bos()) return {};  // and no space removal after it
    if (v.add_space_prefix() && !p.empty() && p[0] == ' ') p.erase(0, 1);
  }
  pending_ += p;
  unicode::Utf8Split s = unicode::split_complete_utf8(pending_);
  pending_.erase(0, pending_.size() - s.held);
  return std::move(s.complete);
}

std::string Detokenizer::flush() {
  std::string out = unicode::sanitize_utf8(pending_);
  pending_.clear();
  first_ = true;
  return out;
}

}  // namespace chorus
