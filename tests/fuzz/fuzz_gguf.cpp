// libFuzzer harness for the GGUF reader: every input must either load or throw gguf::Error.
// Any other exception, a crash, a sanitizer report or a timeout is a bug. See README.md.
#include <cstdint>
#include <string>

#include "engine/gguf.h"
#include "tests/fuzz/memory_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = chorus::fuzz::write_memory_file(data, size);
  try {
    const auto f = chorus::gguf::File::open(path, chorus::gguf::OpenOptions{.allow_unsupported_types = true});
    // Touch everything the reader hands out, so a bad span shows up under ASan.
    uint64_t sum = 0;
    for (const auto& kv : f.metadata()) sum += chorus::gguf::describe_value(kv.value, 4).size() + kv.key.size();
    for (const auto& t : f.tensors()) {
      if (!t.data.empty()) sum += t.data.front() + t.data.back();
      sum += t.name.size();
    }
    if (auto tokens = f.array_strings("tokenizer.ggml.tokens")) sum += tokens->size();
    volatile uint64_t sink = sum;
    (void)sink;
  } catch (const chorus::gguf::Error&) {
    // expected for malformed input
  }
  return 0;
}
