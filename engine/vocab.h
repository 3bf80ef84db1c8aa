// engine/vocab.h — a model's vocabulary: token texts, scores and types, BPE merge ranks, the
// special token ids, and the add-BOS/EOS and space-prefix rules, validated.
//
// Owns: the in-memory vocabulary (Vocab) built from a plain description (VocabSpec) so the core
// does not depend on the file format, and load_vocab(), which reads that description from a
// GGUF file's tokenizer.ggml.* metadata. The algorithms that use it live in tokenizer.h.
//
// Facts followed (llama.cpp's reading of the same keys):
//   tokenizer.ggml.model  "llama" = SentencePiece-style (score-ordered merges, byte fallback),
//                         "gpt2"  = byte-level BPE (rank-ordered merges, GPT-2 byte mapping).
//   tokenizer.ggml.pre    selects the BPE pre-tokenizer (ignored for "llama").
//   token_type            1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
//   Special ids           u32 (or i32); 0xFFFFFFFF / -1 means "none". Absent: SPM bos 1,
//                         eos 2, unk 0; BPE none. An id outside the vocabulary is an error.
//   add_bos / add_eos     defaults: SPM adds BOS, not EOS; BPE adds neither, except the
//                         Llama-3 pre-tokenizers (llama3, llama-v3, llama-bpe, falcon3) add BOS.
//                         tokenizer.ggml.add_bos_token / add_eos_token override.
//   add_space_prefix      SPM true, BPE false; tokenizer.ggml.add_space_prefix overrides.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace chorus {

namespace gguf {
class File;
}

using TokenId = int32_t;
inline constexpr TokenId kNoToken = -1;

// As stored in tokenizer.ggml.token_type.
enum class TokenType : uint8_t {
  Undefined = 0,
  Normal = 1,
  Unknown = 2,
  Control = 3,
  UserDefined = 4,
  Unused = 5,
  Byte = 6,
};

enum class VocabKind : uint8_t {
  Spm,  // tokenizer.ggml.model = "llama"
  Bpe,  // tokenizer.ggml.model = "gpt2"
};

// The BPE pre-tokenizer (word splitting before merges), by regex family.
enum class PreTokenizer : uint8_t {
  Default,  // llama.cpp's fallback: punctuation runs, then the GPT-2 regex, then digit runs
  Gpt2,     // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  Llama3,   // (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  Qwen2,    // as Llama3 with single digits (\p{N})
  Smollm,   // each \p{N} alone, then the GPT-2 regex (also starcoder, refact, command-r, ...)
};
const char* pre_tokenizer_name(PreTokenizer p);

// A vocabulary or its metadata is malformed. The message names the key (and the file when
// loaded from one) and what was expected.
class VocabError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What a file says about its tokenizer, unvalidated. Optional fields are "absent" when empty.
struct VocabSpec {
  std::string model;                    // tokenizer.ggml.model
  std::string pre;                      // tokenizer.ggml.pre ("" = absent)
  std::string name;                     // general.name (phi-3 token attributes)
  std::vector<std::string> tokens;      // tokenizer.ggml.tokens
  std::vector<float> scores;            // tokenizer.ggml.scores (empty = all 0)
  std::vector<int32_t> token_types;     // tokenizer.ggml.token_type (empty = all normal)
  std::vector<std::string> merges;      // tokenizer.ggml.merges ("left right"), gpt2 only
  // Special ids as stored (any integer); nullopt = key absent.
  std::optional<int64_t> bos, eos, unk, sep, pad, eot, eom;
  std::optional<bool> add_bos, add_eos, add_space_prefix;
};

// Metadata keys, for messages and the loader.
namespace vocab_keys {
inline constexpr const char* kModel = "tokenizer.ggml.model";
inline constexpr const char* kPre = "tokenizer.ggml.pre";
inline constexpr const char* kTokens = "tokenizer.ggml.tokens";
inline constexpr const char* kScores = "tokenizer.ggml.scores";
inline constexpr const char* kTokenType = "tokenizer.ggml.token_type";
inline constexpr const char* kMerges = "tokenizer.ggml.merges";
inline constexpr const char* kBos = "tokenizer.ggml.bos_token_id";
inline constexpr const char* kEos = "tokenizer.ggml.eos_token_id";
inline constexpr const char* kUnk = "tokenizer.ggml.unknown_token_id";
inline constexpr const char* kSep = "tokenizer.ggml.seperator_token_id";  // sic: ggml's spelling
inline constexpr const char* kPad = "tokenizer.ggml.padding_token_id";
inline constexpr const char* kEot = "tokenizer.ggml.eot_token_id";
inline constexpr const char* kEom = "tokenizer.ggml.eom_token_id";
inline constexpr const char* kAddBos = "tokenizer.ggml.add_bos_token";
inline constexpr const char* kAddEos = "tokenizer.ggml.add_eos_token";
inline constexpr const char* kAddSpacePrefix = "tokenizer.ggml.add_space_prefix";
}  // namespace vocab_keys

class Vocab {
 public:
  // Validates and indexes; throws VocabError naming the offending key.
  static Vocab build(VocabSpec spec);

  VocabKind kind() const { return kind_; }
  PreTokenizer pre_tokenizer() const { return pre_; }
  const std::string& model_name() const { return model_; }  // "llama" / "gpt2"
  const std::string& pre_name() const { return pre_name_; }  // as stored ("" when absent)
  uint32_t n_tokens() const { return static_cast<uint32_t>(texts_.size()); }
  bool valid(TokenId id) const { return id >= 0 && static_cast<uint32_t>(id) < n_tokens(); }

  const std::string& text(TokenId id) const { return texts_.at(static_cast<size_t>(id)); }
  float score(TokenId id) const { return scores_.at(static_cast<size_t>(id)); }
  TokenType type(TokenId id) const { return types_.at(static_cast<size_t>(id)); }
  bool is_control(TokenId id) const { return type(id) == TokenType::Control; }
  // Whitespace next to this special token is dropped when it is matched in text.
  bool lstrip(TokenId id) const { return strip_.at(static_cast<size_t>(id)) & 1; }
  bool rstrip(TokenId id) const { return strip_.at(static_cast<size_t>(id)) & 2; }

  // Exact text lookup (any token type); kNoToken when absent. Later duplicates win.
  TokenId find(std::string_view text) const;
  // BPE: rank of merging `left` + `right` (lower merges first); -1 when not a merge.
  int32_t merge_rank(std::string_view left, std::string_view right) const;
  size_t n_merges() const { return merge_ranks_.size(); }
  // SPM byte fallback: the <0xXX> token for a byte (or the one-byte token); kNoToken if none.
  TokenId byte_token(uint8_t b) const { return byte_tokens_[b]; }

  TokenId bos() const { return bos_; }
  TokenId eos() const { return eos_; }
  TokenId unk() const { return unk_; }
  TokenId sep() const { return sep_; }
  TokenId pad() const { return pad_; }
  TokenId eot() const { return eot_; }
  TokenId eom() const { return eom_; }
  // Tokens that end generation: eos, eot, eom and end-of-turn tokens recognised by text.
  const std::vector<TokenId>& end_of_generation() const { return eog_; }
  bool is_eog(TokenId id) const;

  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }
  bool add_space_prefix() const { return add_space_prefix_; }
  // Llama-3: a pre-tokenized word that is itself a token is emitted whole, without merges.
  bool ignore_merges() const { return ignore_merges_; }
  // llama.cpp's clean_up_tokenization_spaces default for this vocab (BPE mostly true).
  bool clean_spaces() const { return clean_spaces_; }

  // Control, user-defined and unknown tokens, longest text first: matched in input text
  // before the tokenizer runs (control and unknown only when parsing specials).
  const std::vector<TokenId>& special_tokens() const { return special_tokens_; }

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using TextMap = std::unordered_map<std::string, TokenId, Hash, std::equal_to<>>;
  using RankMap = std::unordered_map<std::string, int32_t, Hash, std::equal_to<>>;
  static std::string merge_key(std::string_view left, std::string_view right);

  VocabKind kind_ = VocabKind::Spm;
  PreTokenizer pre_ = PreTokenizer::Default;
  std::string model_;
  std::string pre_name_;
  std::vector<std::string> texts_;  // [n_tokens]
  std::vector<float> scores_;       // [n_tokens]
  std::vector<TokenType> types_;    // [n_tokens]
  std::vector<uint8_t> strip_;      // [n_tokens] bit 0 lstrip, bit 1 rstrip
  TextMap by_text_;
  RankMap merge_ranks_;
  std::array<TokenId, 256> byte_tokens_{};
  TokenId bos_ = kNoToken, eos_ = kNoToken, unk_ = kNoToken, sep_ = kNoToken, pad_ = kNoToken;
  TokenId eot_ = kNoToken, eom_ = kNoToken;
  std::vector<TokenId> eog_;
  bool add_bos_ = false, add_eos_ = false, add_space_prefix_ = false;
  bool ignore_merges_ = false, clean_spaces_ = false;
  std::vector<TokenId> special_tokens_;
};

// Reads tokenizer.ggml.* (and general.name) from a GGUF file; errors name the file and key.
VocabSpec read_vocab_spec(const gguf::File& file);
Vocab load_vocab(const gguf::File& file);

}  // namespace chorus
