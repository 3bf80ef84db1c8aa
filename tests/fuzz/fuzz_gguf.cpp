// libFuzzer harness for the GGUF reader: every input must either load or throw gguf::Error.
// Any other exception, a crash, a sanitizer report or a timeout is a bug. See README.md.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/gguf.h"

namespace {

// One in-memory file reused across inputs: File::open takes a path, /proc/self/fd/N is one.
int memory_file() {
  static const int fd = memfd_create("gguf-fuzz", 0);
  if (fd < 0) {
    std::perror("memfd_create");
    std::abort();
  }
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = memory_file();
  if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) std::abort();
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
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
