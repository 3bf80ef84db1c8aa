// libFuzzer harness for the tokenizers on arbitrary text, over the vocabularies in
// ../shared/models/vocab (or $CHORUS_FUZZ_VOCAB_DIR). Input: byte 0 picks the vocabulary,
// byte 1 the options (bit 0 add_special, bit 1 parse_special), the rest is the text.
// Properties: encoding never throws and gives ids inside the vocabulary; on byte-level BPE
// without special tokens, decoding gives back the text with each byte that is not UTF-8
// replaced by U+FFFD (nothing vanishes); streaming detokenisation equals whole decoding.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "engine/unicode.h"
#include "engine/vocab.h"

namespace {

const std::vector<std::unique_ptr<chorus::Tokenizer>>& tokenizers() {
  static const auto all = [] {
    const char* env = std::getenv("CHORUS_FUZZ_VOCAB_DIR");
    const std::string dir = env ? env : CHORUS_SOURCE_DIR "/../shared/models/vocab";
    std::vector<std::unique_ptr<chorus::Tokenizer>> t;
    for (const char* name : {"ggml-vocab-gpt-2.gguf", "ggml-vocab-llama-bpe.gguf", "ggml-vocab-llama-spm.gguf",
                             "ggml-vocab-phi-3.gguf"}) {
      try {
        t.push_back(std::make_unique<chorus::Tokenizer>(chorus::load_vocab(chorus::gguf::File::open(dir + "/" + name))));
      } catch (const std::exception& e) {
        std::fprintf(stderr, "fuzz_tokenizer: %s (set CHORUS_FUZZ_VOCAB_DIR)\n", e.what());
        std::abort();
      }
    }
    return t;
  }();
  return all;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const auto& all = tokenizers();
  const chorus::Tokenizer& tok = *all[data[0] % all.size()];
  const bool add_special = data[1] & 1, parse_special = data[1] & 2;
  const std::string text(reinterpret_cast<const char*>(data) + 2, size - 2);
  const std::vector<chorus::TokenId> ids = tok.encode(text, chorus::EncodeOptions{add_special, parse_special});
  for (const chorus::TokenId id : ids)
    if (id < 0 || static_cast<uint32_t>(id) >= tok.vocab().n_tokens()) __builtin_trap();
  const std::string whole = tok.decode(ids);
  if (tok.vocab().kind() == chorus::VocabKind::Bpe && !add_special && !parse_special) {
    std::string replaced;
    const std::string& want = chorus::unicode::replace_invalid_utf8_bytes(text, replaced) ? replaced : text;
    if (whole != want) {
      std::fprintf(stderr, "round trip differs: %zu bytes in, %zu bytes out\n", want.size(), whole.size());
      __builtin_trap();
    }
  }
  chorus::Detokenizer detok(tok);
  std::string streamed;
  for (const chorus::TokenId id : ids) streamed += detok.push(id);
  streamed += detok.flush();
  if (streamed != chorus::unicode::sanitize_utf8(whole)) {
    std::fprintf(stderr, "streamed detokenisation differs from decode\n");
    __builtin_trap();
  }
  return 0;
}
