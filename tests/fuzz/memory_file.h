// tests/fuzz/memory_file.h — what the file-based harnesses share: one in-memory file
// (memfd) reused across inputs, so the reader's real open/fstat/mmap path runs and nothing
// touches the disk.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace chorus::fuzz {

// Writes the input to the memory file and returns a path that opens it (/proc/self/fd/N).
inline std::string write_memory_file(const uint8_t* data, size_t size) {
  static const int fd = memfd_create("chorus-fuzz", 0);
  if (fd < 0) {
    std::perror("memfd_create");
    std::abort();
  }
  if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) std::abort();
  return "/proc/self/fd/" + std::to_string(fd);
}

}  // namespace chorus::fuzz
