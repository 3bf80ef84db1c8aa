// engine/unicode.cpp — UTF-8, code point classes, White_Space, GPT-2 byte mapping.
#include "engine/unicode.h"

#include <algorithm>
#include <array>

namespace chorus::unicode {

CpClass cp_class(uint32_t cp) {
  using detail::kCpRangeCount;
  using detail::kCpRanges;
  const auto* end = kCpRanges + kCpRangeCount;
  // First range whose last >= cp; ranges are sorted, contiguous and cover 0..0x10FFFF.
  const auto* it = std::lower_bound(kCpRanges, end, cp,
                                    [](const detail::CpRange& r, uint32_t c) { return r.last < c; });
  if (it == end || cp < it->first) return CpClass::Other;
  return static_cast<CpClass>(it->cls);
}

bool is_whitespace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

const char* table_version() { return detail::kUnicodeVersion; }

size_t utf8_sequence_length(uint8_t lead) {
  if (lead < 0xC0) return 1;  // ASCII, or a stray continuation byte
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  if (lead < 0xF8) return 4;
  return 1;
}

namespace {

// Valid range of the second byte for a lead byte (RFC 3629 table); {0,0} for an invalid lead.
struct SecondRange {
  uint8_t lo, hi;
};
SecondRange second_range(uint8_t lead) {
  if (lead >= 0xC2 && lead <= 0xDF) return {0x80, 0xBF};
  if (lead == 0xE0) return {0xA0, 0xBF};
  if ((lead >= 0xE1 && lead <= 0xEC) || lead == 0xEE || lead == 0xEF) return {0x80, 0xBF};
  if (lead == 0xED) return {0x80, 0x9F};
  if (lead == 0xF0) return {0x90, 0xBF};
  if (lead >= 0xF1 && lead <= 0xF3) return {0x80, 0xBF};
  if (lead == 0xF4) return {0x80, 0x8F};
  return {0, 0};
}

// How many bytes of s[pos..] form a valid (possibly unfinished) sequence prefix, and whether it
// is finished. Returns {0,false} when s[pos] cannot start a sequence.
struct Prefix {
  size_t valid_bytes;
  size_t needed;
};
Prefix valid_prefix(std::string_view s, size_t pos) {
  const auto lead = static_cast<uint8_t>(s[pos]);
  if (lead < 0x80) return {1, 1};
  const SecondRange r = second_range(lead);
  if (r.hi == 0) return {0, 1};
  const size_t need = utf8_sequence_length(lead);
  size_t n = 1;
  while (n < need && pos + n < s.size()) {
    const auto c = static_cast<uint8_t>(s[pos + n]);
    const bool ok = n == 1 ? (c >= r.lo && c <= r.hi) : (c >= 0x80 && c <= 0xBF);
    if (!ok) break;
    ++n;
  }
  return {n, need};
}

}  // namespace

Decoded decode_utf8(std::string_view s, size_t pos) {
  const Prefix p = valid_prefix(s, pos);
  if (p.valid_bytes == 0 || p.valid_bytes < p.needed) return {0xFFFD, 1, false};
  const auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(s[pos + i])); };
  switch (p.needed) {
    case 1: return {b(0), 1, true};
    case 2: return {((b(0) & 0x1F) << 6) | (b(1) & 0x3F), 2, true};
    case 3: return {((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F), 3, true};
    default: return {((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F), 4, true};
  }
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string to_utf8(uint32_t cp) {
  std::string s;
  append_utf8(s, cp);
  return s;
}

Utf8Split split_complete_utf8(std::string_view bytes) {
  Utf8Split r{{}, 0};
  r.complete.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    const Prefix p = valid_prefix(bytes, pos);
    if (p.valid_bytes == 0) {  // cannot start a sequence
      append_utf8(r.complete, 0xFFFD);
      ++pos;
    } else if (p.valid_bytes == p.needed) {
      r.complete.append(bytes.substr(pos, p.valid_bytes));
      pos += p.valid_bytes;
    } else if (pos + p.valid_bytes == bytes.size()) {  // unfinished at the end: hold it
      r.held = p.valid_bytes;
      break;
    } else {  // broken by a byte that cannot continue it: the prefix is one error
      append_utf8(r.complete, 0xFFFD);
      pos += p.valid_bytes;
    }
  }
  return r;
}

bool replace_invalid_utf8_bytes(std::string_view bytes, std::string& out) {
  bool changed = false;
  for (size_t pos = 0; pos < bytes.size();) {
    const Decoded d = decode_utf8(bytes, pos);
    if (!d.valid && !changed) {
      changed = true;
      out.assign(bytes.substr(0, pos));
    }
    if (changed) {
      if (d.valid) out.append(bytes.substr(pos, d.len));
      else append_utf8(out, 0xFFFD);
    }
    pos += d.len;
  }
  return changed;
}

std::string sanitize_utf8(std::string_view bytes) {
  Utf8Split s = split_complete_utf8(bytes);
  if (s.held) append_utf8(s.complete, 0xFFFD);
  return std::move(s.complete);
}

namespace {

struct ByteMap {
  std::array<uint32_t, 256> to_cp{};
  std::array<std::string, 256> to_utf8;
};

const ByteMap& byte_map() {
  static const ByteMap m = [] {
    ByteMap b;
    uint32_t next = 256;
    for (uint32_t i = 0; i < 256; ++i) {
      const bool printable = (i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE);
      b.to_cp[i] = printable ? i : next++;
      b.to_utf8[i] = to_utf8(b.to_cp[i]);
    }
    return b;
  }();
  return m;
}

}  // namespace

uint32_t byte_to_bpe_cp(uint8_t b) { return byte_map().to_cp[b]; }
const std::string& byte_to_bpe_utf8(uint8_t b) { return byte_map().to_utf8[b]; }

int bpe_cp_to_byte(uint32_t cp) {
  if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF)) return static_cast<int>(cp);
  if (cp < 256 || cp >= 256 + 68) return -1;
  const auto& m = byte_map().to_cp;
  for (int b = 0; b < 256; ++b)
    if (m[static_cast<size_t>(b)] == cp) return b;
  return -1;
}

}  // namespace chorus::unicode
