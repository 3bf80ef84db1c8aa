// engine/tokenizer.h — text <-> token ids for a Vocab.
//
// Owns the algorithms (facts from llama.cpp's tokenizer, reimplemented):
//   * special-token matching: control / user-defined / unknown token texts found in the input
//     become those tokens before anything else (control and unknown only with parse_special;
//     user-defined always), honouring lstrip / rstrip;
//   * SentencePiece-style (Spm): spaces -> U+2581, a leading U+2581 when add_space_prefix and
//     the fragment starts the text or follows a special token, then repeatedly merge the
//     adjacent pair whose concatenation is the highest-scoring token (ties: leftmost);
//     characters that never became a token fall back to <0xXX> byte tokens;
//   * byte-level BPE (Bpe): the pre-tokenizer regex (PreTokenizer) splits words, each word's
//     bytes map to GPT-2's printable code points, then the adjacent pair with the lowest merge
//     rank merges until none applies (ties: leftmost);
//   * detokenisation: pieces per token, and Detokenizer, which streams only complete UTF-8.
// The pre-tokenizer regexes are hand-written matchers over code point classes (unicode.h).
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/vocab.h"

namespace chorus {

struct EncodeOptions {
  bool add_special = true;     // add BOS / EOS as the vocabulary's add_bos / add_eos say
  bool parse_special = false;  // control tokens' texts in the input become those tokens
};

struct DecodeOptions {
  bool remove_special = false;  // drop a leading BOS / trailing EOS the vocabulary adds
  bool render_special = false;  // control and unknown tokens show their text
  // llama.cpp's clean_up_tokenization_spaces (" ," -> "," ...). Whole-text decode only.
  bool clean_spaces = false;
};

class Tokenizer {
 public:
  explicit Tokenizer(Vocab vocab);

  const Vocab& vocab() const { return vocab_; }

  std::vector<TokenId> encode(std::string_view text, const EncodeOptions& options = {}) const;

  // The bytes one token stands for (a byte token is one byte, maybe part of a character).
  // Control and unknown tokens are empty unless render_special. Throws std::out_of_range for
  // an id outside the vocabulary.
  std::string piece(TokenId id, bool render_special = false) const;

  // All pieces concatenated, as llama.cpp's llama_detokenize: with add_space_prefix, one
  // leading space of the first piece is dropped (the one encode added), unless the first
  // token is a BOS removed by remove_special. Returns raw bytes (may be invalid UTF-8 if the
  // ids end inside a character).
  std::string decode(std::span<const TokenId> ids, const DecodeOptions& options = {}) const;

 private:
  void encode_spm(std::string_view text, std::vector<TokenId>& out) const;
  void encode_bpe(std::string_view text, std::vector<TokenId>& out) const;

  Vocab vocab_;
  std::vector<std::string> pieces_;  // [n_tokens] piece(id, true)
};

// Streaming detokenisation: push ids one at a time, get back only complete UTF-8 (a character
// split across byte tokens is held until its last byte arrives; bytes that can never form a
// character come out as U+FFFD). The first token follows decode()'s leading-space rule.
class Detokenizer {
 public:
  explicit Detokenizer(const Tokenizer& tokenizer, const DecodeOptions& options = {});

  std::string push(TokenId id);
  // Whatever is still held, as U+FFFD; the stream then starts over (first-token rule again).
  std::string flush();
  // Bytes held back waiting for the rest of a character.
  size_t held_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tokenizer_;
  DecodeOptions options_;
  std::string pending_;
  bool first_ = true;
};

// The pre-tokenizer alone: the words `text` splits into (views into text), for tests.
std::vector<std::string_view> pre_tokenize(PreTokenizer pre, std::string_view text);

}  // namespace chorus
