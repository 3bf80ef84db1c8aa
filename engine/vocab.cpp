// engine/vocab.cpp — building and validating a Vocab, and reading one from GGUF metadata.
#include "engine/vocab.h"

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "engine/gguf.h"

namespace chorus {

namespace {

struct PreInfo {
  const char* name;
  PreTokenizer pre;
  bool llama3_rules;  // ignore_merges and add BOS by default
  bool clean_spaces;
};

// tokenizer.ggml.pre values and the regex family llama.cpp uses for each.
constexpr PreInfo kPreTokenizers[] = {
    {"default", PreTokenizer::Default, false, true},
    {"llama3", PreTokenizer::Llama3, true, true},
    {"llama-v3", PreTokenizer::Llama3, true, true},
    {"llama-bpe", PreTokenizer::Llama3, true, true},
    {"falcon3", PreTokenizer::Llama3, true, true},
    {"dbrx", PreTokenizer::Llama3, false, true},
    {"smaug-bpe", PreTokenizer::Llama3, false, true},
    {"gpt-2", PreTokenizer::Gpt2, false, true},
    {"phi-2", PreTokenizer::Gpt2, false, true},
    {"roberta-bpe", PreTokenizer::Gpt2, false, true},
    {"mpt", PreTokenizer::Gpt2, false, true},
    {"olmo", PreTokenizer::Gpt2, false, true},
    {"jais", PreTokenizer::Gpt2, false, true},
    {"gigachat", PreTokenizer::Gpt2, false, true},
    {"qwen2", PreTokenizer::Qwen2, false, false},
    {"deepseek-r1-qwen", PreTokenizer::Qwen2, false, false},
    {"stablelm2", PreTokenizer::Qwen2, false, true},
    {"megrez", PreTokenizer::Qwen2, false, true},
    {"smollm", PreTokenizer::Smollm, false, false},
    {"starcoder", PreTokenizer::Smollm, false, true},
    {"refact", PreTokenizer::Smollm, false, true},
    {"command-r", PreTokenizer::Smollm, false, false},
    {"codeshell", PreTokenizer::Smollm, false, true},
    {"exaone", PreTokenizer::Smollm, false, true},
    {"minerva-7b", PreTokenizer::Smollm, false, true},
};

std::string supported_pre_names() {
  std::string s;
  for (const auto& p : kPreTokenizers) {
    if (!s.empty()) s += ", ";
    s += p.name;
  }
  return s;
}

// Texts llama.cpp treats as end-of-turn / end-of-generation whatever their stored type.
constexpr const char* kEotTexts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>"};
constexpr const char* kEogExtraTexts[] = {"<|eom_id|>"};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

const char* pre_tokenizer_name(PreTokenizer p) {
  switch (p) {
    case PreTokenizer::Default: return "default";
    case PreTokenizer::Gpt2: return "gpt-2";
    case PreTokenizer::Llama3: return "llama3";
    case PreTokenizer::Qwen2: return "qwen2";
    case PreTokenizer::Smollm: return "smollm";
  }
  return "?";
}

std::string Vocab::merge_key(std::string_view left, std::string_view right) {
  // Length-prefixed, so no separator character can be ambiguous.
  std::string key = std::to_string(left.size());
  key.push_back(':');
  key.append(left);
  key.append(right);
  return key;
}

TokenId Vocab::find(std::string_view text) const {
  const auto it = by_text_.find(text);
  return it == by_text_.end() ? kNoToken : it->second;
}

int32_t Vocab::merge_rank(std::string_view left, std::string_view right) const {
  const auto it = merge_ranks_.find(merge_key(left, right));
  return it == merge_ranks_.end() ? -1 : it->second;
}

bool Vocab::is_eog(TokenId id) const { return id != kNoToken && std::find(eog_.begin(), eog_.end(), id) != eog_.end(); }

Vocab Vocab::build(VocabSpec spec) {
  namespace k = vocab_keys;
  Vocab v;
  v.model_ = spec.model;
  v.pre_name_ = spec.pre;
  if (spec.model == "llama") {
    v.kind_ = VocabKind::Spm;
  } else if (spec.model == "gpt2") {
    v.kind_ = VocabKind::Bpe;
  } else {
    throw VocabError(std::string(k::kModel) + " = '" + spec.model +
                     "' is not a supported tokenizer (expected 'llama' for SentencePiece or 'gpt2' for byte-level BPE)");
  }

  const size_t n = spec.tokens.size();
  if (n == 0) throw VocabError(std::string(k::kTokens) + " is empty (expected at least one token)");
  if (n > static_cast<size_t>(INT32_MAX)) throw VocabError(std::string(k::kTokens) + " has too many tokens");
  if (!spec.scores.empty() && spec.scores.size() != n)
    throw VocabError(std::string(k::kScores) + " has " + std::to_string(spec.scores.size()) + " entries (expected " +
                     std::to_string(n) + ", one per token)");
  if (!spec.token_types.empty() && spec.token_types.size() != n)
    throw VocabError(std::string(k::kTokenType) + " has " + std::to_string(spec.token_types.size()) +
                     " entries (expected " + std::to_string(n) + ", one per token)");

  v.texts_ = std::move(spec.tokens);
  v.scores_ = spec.scores.empty() ? std::vector<float>(n, 0.0f) : std::move(spec.scores);
  v.types_.assign(n, TokenType::Normal);
  v.strip_.assign(n, 0);
  for (size_t i = 0; i < spec.token_types.size(); ++i) {
    const int32_t t = spec.token_types[i];
    if (t < 0 || t > 6)
      throw VocabError(std::string(k::kTokenType) + "[" + std::to_string(i) + "] = " + std::to_string(t) +
                       " is not a token type (expected 0..6)");
    v.types_[i] = static_cast<TokenType>(t);
  }
  v.by_text_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (v.texts_[i].empty()) v.texts_[i] = "[EMPTY_" + std::to_string(i) + "]";  // as llama.cpp
    v.by_text_[v.texts_[i]] = static_cast<TokenId>(i);
  }

  // Tokenizer rules.
  if (v.kind_ == VocabKind::Spm) {
    v.pre_ = PreTokenizer::Default;
    v.add_space_prefix_ = true;
    v.add_bos_ = true;
    v.add_eos_ = false;
    v.clean_spaces_ = false;
  } else {
    v.add_space_prefix_ = false;
    v.clean_spaces_ = true;
    if (spec.pre.empty()) {
      v.pre_ = PreTokenizer::Default;  // llama.cpp warns "generation quality will be degraded"
    } else {
      const auto* it = std::find_if(std::begin(kPreTokenizers), std::end(kPreTokenizers),
                                    [&](const PreInfo& p) { return spec.pre == p.name; });
      if (it == std::end(kPreTokenizers))
        throw VocabError(std::string(k::kPre) + " = '" + spec.pre + "' is not a supported pre-tokenizer (expected one of: " +
                         supported_pre_names() + ")");
      v.pre_ = it->pre;
      v.clean_spaces_ = it->clean_spaces;
      if (it->llama3_rules) {
        v.ignore_merges_ = true;
        v.add_bos_ = true;
      }
    }
    if (spec.merges.empty()) throw VocabError(std::string("missing required key ") + k::kMerges + " (expected array of string for a gpt2 tokenizer)");
    v.merge_ranks_.reserve(spec.merges.size());
    for (size_t i = 0; i < spec.merges.size(); ++i) {
      const std::string& m = spec.merges[i];
      const size_t pos = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
      if (pos == std::string::npos)
        throw VocabError(std::string(k::kMerges) + "[" + std::to_string(i) + "] = '" + m +
                         "' is not two parts separated by a space");
      // emplace keeps the first (lowest) rank of a duplicated merge.
      v.merge_ranks_.emplace(merge_key(std::string_view(m).substr(0, pos), std::string_view(m).substr(pos + 1)),
                             static_cast<int32_t>(i));
    }
  }
  if (spec.add_space_prefix) v.add_space_prefix_ = *spec.add_space_prefix;
  if (spec.add_bos) v.add_bos_ = *spec.add_bos;
  if (spec.add_eos) v.add_eos_ = *spec.add_eos;

  // Special ids.
  const auto special = [&](const std::optional<int64_t>& stored, const char* key, TokenId fallback) -> TokenId {
    if (!stored) return v.valid(fallback) ? fallback : kNoToken;
    const int64_t id = *stored;
    if (id == -1 || id == 0xFFFFFFFFll) return kNoToken;
    if (id < 0 || id >= static_cast<int64_t>(n))
      throw VocabError(std::string(key) + " = " + std::to_string(id) + " is outside the vocabulary of " +
                       std::to_string(n) + " tokens (expected 0.." + std::to_string(n - 1) + ", or 4294967295 for none)");
    return static_cast<TokenId>(id);
  };
  const bool spm = v.kind_ == VocabKind::Spm;
  v.bos_ = special(spec.bos, k::kBos, spm ? 1 : kNoToken);
  v.eos_ = special(spec.eos, k::kEos, spm ? 2 : kNoToken);
  v.unk_ = special(spec.unk, k::kUnk, spm ? 0 : kNoToken);
  v.sep_ = special(spec.sep, k::kSep, kNoToken);
  v.pad_ = special(spec.pad, k::kPad, kNoToken);
  v.eot_ = special(spec.eot, k::kEot, kNoToken);
  v.eom_ = special(spec.eom, k::kEom, kNoToken);
  if (v.add_bos_ && v.bos_ == kNoToken)
    throw VocabError(std::string(k::kAddBos) + " is true but there is no BOS token (" + k::kBos + ")");
  if (v.add_eos_ && v.eos_ == kNoToken)
    throw VocabError(std::string(k::kAddEos) + " is true but there is no EOS token (" + k::kEos + ")");

  // End-of-turn tokens recognised by text, forced to control (as llama.cpp does).
  for (const char* t : kEotTexts) {
    const TokenId id = v.find(t);
    if (id == kNoToken) continue;
    if (v.eot_ == kNoToken) v.eot_ = id;
    v.types_[static_cast<size_t>(id)] = TokenType::Control;
    v.eog_.push_back(id);
  }
  for (const char* t : kEogExtraTexts) {
    const TokenId id = v.find(t);
    if (id == kNoToken) continue;
    if (v.eom_ == kNoToken) v.eom_ = id;
    v.types_[static_cast<size_t>(id)] = TokenType::Control;
    v.eog_.push_back(id);
  }
  for (TokenId id : {v.eos_, v.eot_, v.eom_})
    if (id != kNoToken) v.eog_.push_back(id);
  std::sort(v.eog_.begin(), v.eog_.end());
  v.eog_.erase(std::unique(v.eog_.begin(), v.eog_.end()), v.eog_.end());

  // Special tokens matched in text, longest first (ties by id, so the order is deterministic).
  for (size_t i = 0; i < n; ++i) {
    const TokenType t = v.types_[i];
    if (t == TokenType::Control || t == TokenType::UserDefined || t == TokenType::Unknown)
      v.special_tokens_.push_back(static_cast<TokenId>(i));
  }
  std::stable_sort(v.special_tokens_.begin(), v.special_tokens_.end(), [&](TokenId a, TokenId b) {
    return v.texts_[static_cast<size_t>(a)].size() > v.texts_[static_cast<size_t>(b)].size();
  });

  // Phi-3: whitespace after its special tokens is not text (llama.cpp sets rstrip on them).
  const std::string lname = lower(spec.name);
  if (lname.find("phi-3") != std::string::npos || lname.find("phi3") != std::string::npos) {
    for (TokenId id : v.special_tokens_) v.strip_[static_cast<size_t>(id)] |= 2;
    if (TokenId id = v.find("</s>"); id != kNoToken) v.strip_[static_cast<size_t>(id)] |= 2;
    for (const char* t : {"<unk>", "<s>", "<|endoftext|>"})
      if (TokenId id = v.find(t); id != kNoToken) v.strip_[static_cast<size_t>(id)] &= static_cast<uint8_t>(~2u);
  }

  // SPM byte fallback tokens.
  v.byte_tokens_.fill(kNoToken);
  if (spm) {
    static const char* hex = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) {
      const char name[7] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>', 0};
      TokenId id = v.find(name);
      if (id == kNoToken) id = v.find(std::string(1, static_cast<char>(b)));
      v.byte_tokens_[static_cast<size_t>(b)] = id;
    }
  }
  return v;
}

VocabSpec read_vocab_spec(const gguf::File& f) {
  namespace k = vocab_keys;
  VocabSpec s;
  s.model = std::string(f.require_string(k::kModel));
  if (auto pre = f.get_string(k::kPre)) s.pre = std::string(*pre);
  if (auto name = f.get_string("general.name")) s.name = std::string(*name);
  for (std::string_view t : f.require_array_strings(k::kTokens)) s.tokens.emplace_back(t);
  if (auto scores = f.array_f32(k::kScores)) s.scores = std::move(*scores);
  if (auto types = f.array_i32(k::kTokenType)) s.token_types = std::move(*types);
  if (auto merges = f.array_strings(k::kMerges))
    for (std::string_view m : *merges) s.merges.emplace_back(m);
  const auto id = [&](const char* key) -> std::optional<int64_t> {
    const gguf::Value* val = f.find(key);
    if (!val) return std::nullopt;
    if (auto i = val->as_i64()) return *i;
    if (val->as_u64()) return INT64_MAX;  // a u64 beyond int64: certainly outside the vocabulary
    f.fail(std::string("key '") + key + "' has type " + gguf::describe_type(*val) + " (expected u32 token id)");
  };
  s.bos = id(k::kBos);
  s.eos = id(k::kEos);
  s.unk = id(k::kUnk);
  s.sep = id(k::kSep);
  s.pad = id(k::kPad);
  s.eot = id(k::kEot);
  s.eom = id(k::kEom);
  s.add_bos = f.get_bool(k::kAddBos);
  s.add_eos = f.get_bool(k::kAddEos);
  s.add_space_prefix = f.get_bool(k::kAddSpacePrefix);
  return s;
}

Vocab load_vocab(const gguf::File& file) {
  VocabSpec spec = read_vocab_spec(file);
  try {
    return Vocab::build(std::move(spec));
  } catch (const VocabError& e) {
    throw VocabError(file.path() + ": " + e.what());
  }
}

}  // namespace chorus
