// engine/unicode.h — the Unicode facts the tokenizers need, and nothing else.
//
// Owns: strict UTF-8 decoding and encoding; the general-category class of every code point
// (\p{L}, \p{N}, \p{P}, ... as regexes mean them; table generated into unicode_data.cpp by
// scripts/gen_unicode_tables.py); the White_Space property (regex \s); splitting a byte stream
// into complete UTF-8 and a held incomplete tail (streaming detokenisation); and GPT-2's
// byte-level mapping (every byte <-> one printable code point) used by byte-level BPE vocabs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace chorus::unicode {

// The major general category of a code point (unassigned and private use are Other).
enum class CpClass : uint8_t {
  Other = 0,        // C*: controls, format, surrogates, private use, unassigned
  Letter = 1,       // L*
  Mark = 2,         // M*
  Number = 3,       // N*
  Punctuation = 4,  // P*
  Symbol = 5,       // S*
  Separator = 6,    // Z*
};

CpClass cp_class(uint32_t cp);
inline bool is_letter(uint32_t cp) { return cp_class(cp) == CpClass::Letter; }
inline bool is_number(uint32_t cp) { return cp_class(cp) == CpClass::Number; }
inline bool is_punctuation(uint32_t cp) { return cp_class(cp) == CpClass::Punctuation; }
// The White_Space property: what regex \s matches in Oniguruma / Rust regex / PCRE with UCP.
bool is_whitespace(uint32_t cp);
// The Unicode version of the category table ("14.0.0").
const char* table_version();

// Length of the UTF-8 sequence a lead byte announces; 1 for a continuation or invalid byte
// (so a scanner always advances).
size_t utf8_sequence_length(uint8_t lead);

// One decoded code point. Invalid or truncated sequences decode as U+FFFD of length 1 with
// valid = false, so every byte of the input is covered exactly once.
struct Decoded {
  uint32_t cp;
  uint32_t len;
  bool valid;
};
Decoded decode_utf8(std::string_view s, size_t pos);
void append_utf8(std::string& out, uint32_t cp);
std::string to_utf8(uint32_t cp);

// Streaming: the longest prefix of `bytes` after which no byte can be waiting for a
// continuation. complete = that prefix with every invalid sequence replaced by U+FFFD;
// held = how many trailing bytes form an unfinished (but so far valid) sequence.
struct Utf8Split {
  std::string complete;
  size_t held;
};
Utf8Split split_complete_utf8(std::string_view bytes);
// Replaces every invalid sequence (including a truncated tail) with U+FFFD.
std::string sanitize_utf8(std::string_view bytes);
// Replaces every byte that is not part of a valid sequence with its own U+FFFD (a truncated
// sequence of n bytes gives n of them), as llama.cpp's unicode_cpts_from_utf8 does before
// byte-level BPE: no byte of the text vanishes. Returns false (and leaves `out` alone) when the
// text is already valid, so the common case copies nothing; true with the result in `out`.
bool replace_invalid_utf8_bytes(std::string_view bytes, std::string& out);

// GPT-2 byte-level BPE: byte b <-> code point. Printable bytes ('!'..'~', 0xA1..0xAC,
// 0xAE..0xFF) map to themselves; the other 68 map to U+0100.. in byte order.
uint32_t byte_to_bpe_cp(uint8_t b);
// The UTF-8 of byte_to_bpe_cp(b).
const std::string& byte_to_bpe_utf8(uint8_t b);
// The byte a code point stands for; -1 when the code point is not in the mapping.
int bpe_cp_to_byte(uint32_t cp);

namespace detail {
struct CpRange {
  uint32_t first;
  uint32_t last;
  uint8_t cls;  // CpClass
};
extern const CpRange kCpRanges[];
extern const size_t kCpRangeCount;
extern const char kUnicodeVersion[];
}  // namespace detail

}  // namespace chorus::unicode
