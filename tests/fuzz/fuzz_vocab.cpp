// libFuzzer harness for vocabulary loading (engine/vocab.cpp) and the tokenizer built on it:
// a GGUF file either gives a Vocab or fails with gguf::Error / VocabError; a Vocab that loads
// must build a Tokenizer that encodes and decodes a fixed text without any other failure.
#include <cstdint>
#include <string>

#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "engine/vocab.h"
#include "tests/fuzz/memory_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = chorus::fuzz::write_memory_file(data, size);
  try {
    const auto f = chorus::gguf::File::open(path);
    const chorus::Tokenizer tok(chorus::load_vocab(f));
    static const std::string text = "Hello world! <s> 123 4567 I'm \xe2\x96\x81 caf\xc3\xa9 \xff\xc0 <|endoftext|>\n\t ";
    for (const bool special : {false, true}) {
      const auto ids = tok.encode(text, chorus::EncodeOptions{special, special});
      for (const chorus::TokenId id : ids)
        if (id < 0 || static_cast<uint32_t>(id) >= tok.vocab().n_tokens()) __builtin_trap();
      chorus::Detokenizer detok(tok);
      std::string streamed;
      for (const chorus::TokenId id : ids) streamed += detok.push(id);
      streamed += detok.flush();
      volatile size_t sink = streamed.size() + tok.decode(ids, chorus::DecodeOptions{special, special, special}).size();
      (void)sink;
    }
  } catch (const chorus::gguf::Error&) {
  } catch (const chorus::VocabError&) {
  }
  return 0;
}
