// engine/gguf_writer.h — writing a GGUF v3 file: the counterpart of the reader (engine/gguf.h),
// which documents the layout.
//
// Owns: encoding the header, the metadata key/value table (any value the reader can return,
// arrays included, copied byte for byte) and the tensor-info table; placing every tensor at an
// offset that is a multiple of the alignment; streaming the tensor data to a temporary file
// beside the output and renaming it over the output only once everything is written and
// flushed. A failed or abandoned write leaves no half-written output: the temporary file is
// removed. Every error is a gguf::Error whose message starts with the output's path.
//
// Use: add every key/value and declare every tensor (name, dims, type) first, then begin_data()
// writes the header, then write_tensor() once per declared tensor in declaration order, then
// finish().
#pragma once

#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/gguf.h"

namespace chorus::gguf {

class Writer {
 public:
  // `path`: the file to produce; `alignment`: tensor data alignment (a power of two; the caller
  // also copies or sets general.alignment when it is not the default 32).
  Writer(std::string path, uint32_t alignment);
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;
  ~Writer();  // removes the temporary file unless finish() succeeded

  const std::string& path() const { return path_; }

  // A key/value pair: a value read by gguf::File (copied as encoded), or a u32.
  void add_kv(std::string_view key, const Value& value);
  void add_kv_u32(std::string_view key, uint32_t value);

  // Declares the next tensor; `ne` in ggml order (ne[0] = elements per row), 1..4 dims, ne[0] a
  // whole number of the type's blocks. Returns its byte size.
  uint64_t add_tensor(std::string_view name, std::span<const uint64_t> ne, GgmlType type);

  // Creates the temporary file and writes header, metadata, tensor infos and padding.
  void begin_data();
  // The bytes of the next declared tensor (exactly its size; checked), then padding.
  void write_tensor(std::span<const uint8_t> bytes);
  // Flushes, closes and renames the temporary file to path(). Every declared tensor must have
  // been written.
  void finish();

  // Bytes of the whole file (known after the last add_tensor).
  uint64_t file_size() const;

 private:
  struct Pending {
    uint64_t size;
  };
  [[noreturn]] void fail(const std::string& what) const;
  void put(const void* data, size_t n);
  void pad_to_alignment();

  std::string path_;
  std::string tmp_path_;
  uint32_t alignment_;
  uint64_t n_kv_ = 0;
  std::vector<uint8_t> meta_;   // encoded key/value pairs
  std::vector<uint8_t> infos_;  // encoded tensor-info records
  std::vector<Pending> tensors_;
  uint64_t data_bytes_ = 0;     // the data section so far, padded
  size_t next_tensor_ = 0;
  uint64_t written_ = 0;        // bytes written to the temporary file
  std::FILE* out_ = nullptr;
  bool finished_ = false;
};

}  // namespace chorus::gguf
