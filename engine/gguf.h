// engine/gguf.h — the GGUF reader: a memory-mapped, validated, read-only view of a model file.
//
// Owns: mapping the file (read-only, MAP_PRIVATE, for the File's whole life; tensor data is
// never copied), parsing and validating the header, the metadata key/value table and the
// tensor-info table, and typed access to both. Everything returned (keys, strings, tensor
// names, tensor bytes) is a view into the mapping and lives as long as the File.
//
// File layout (GGUF v2 and v3; every integer little-endian, nothing padded except the data):
//   magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv times:      string key | u32 value_type | value
//   n_tensors times: string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset
//   zero padding up to a multiple of general.alignment (default 32)  -> data_offset()
//   tensor data: tensor t occupies [data_offset() + t.offset, ... + t.size)
// where string = u64 length + bytes (no NUL), and value = the scalar, a string, or an array:
// u32 element_type | u64 count | count elements. Version 1 (u32 counts and lengths, before
// Aug 2023) is rejected. Arrays of arrays are rejected (ggml never writes them).
//
// Validation: every size and offset is overflow-checked; counts and lengths are checked
// against the bytes left in the file before anything is reserved, so a hostile file cannot
// make the reader allocate more than its own size justifies. Any defect throws gguf::Error
// whose message names the file, the field and what was expected. A file with no tensors
// (vocab-only) loads even if its aligned data offset lies past the end of the file.
// Not defended against: another process truncating the file while it is mapped (reads past
// the new end raise SIGBUS, as with any mapped file).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/quant.h"

namespace chorus::gguf {

// Tensor data alignment when the file has no general.alignment key.
inline constexpr uint32_t kDefaultAlignment = 32;

// A file that is not a valid (or not a supported) GGUF file, or a metadata lookup that found
// the wrong type. The message starts with the file's path: "stories.gguf: tensor 'x': ...".
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Metadata value types, as stored in the file.
enum class ValueType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};

// "u8", "i32", "f32", "bool", "string", "array", ...
const char* value_type_name(ValueType t);

// One metadata value: a view into the mapping (the bytes are not aligned; read them with the
// accessors below or memcpy).
struct Value {
  ValueType type;                  // the value's type
  ValueType elem_type;             // arrays: the element type (never Array); otherwise == type
  uint64_t count;                  // arrays: the number of elements; otherwise 1
  std::span<const uint8_t> bytes;  // scalar: its bytes; string: its characters;
                                   // array: the encoded elements (strings keep their u64 lengths)

  bool is_array() const { return type == ValueType::Array; }
  // Scalars of an integer type (u8..i64 and bool excluded) as int64 / uint64 when they fit.
  std::optional<int64_t> as_i64() const;
  std::optional<uint64_t> as_u64() const;
  // f32 or f64 scalars; nullopt otherwise.
  std::optional<double> as_f64() const;
  // String scalars: the characters; nullopt otherwise.
  std::optional<std::string_view> as_string() const;
};

struct KeyValue {
  std::string_view key;
  Value value;
};

// "u32", "string", "[string; 512]", "[f32; 0]".
std::string describe_type(const Value& v);
// The value for printing: numbers in full, strings quoted and escaped (long ones shortened),
// arrays as "[1, 2, 3, ...]" with at most max_elems elements shown.
std::string describe_value(const Value& v, size_t max_elems = 8);

// One tensor-info record, validated: 1..4 non-zero dimensions whose product fits int64, a
// ggml type chorus knows, a row length that is a whole number of blocks, an aligned offset and
// data that lie inside the file.
struct TensorInfo {
  std::string_view name;
  uint32_t n_dims = 0;                // 1..4
  std::array<uint64_t, 4> ne{1, 1, 1, 1};  // ggml order: ne[0] = elements per row; unused dims = 1
  GgmlType type = GgmlType::F32;      // may be a known-but-unsupported id only with
                                      // OpenOptions::allow_unsupported_types; use traits
  const TypeTraits* traits = nullptr; // never null: type_traits(raw id) of the tensor's type
  uint64_t offset = 0;                // relative to File::data_offset(); a multiple of alignment()
  uint64_t size = 0;                  // bytes: row bytes(type, ne[0]) * ne[1] * ne[2] * ne[3]
  std::span<const uint8_t> data;      // the tensor's bytes inside the mapping

  std::span<const uint64_t> dims() const { return {ne.data(), n_dims}; }
  uint64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  uint64_t n_rows() const { return ne[1] * ne[2] * ne[3]; }
  uint64_t row_bytes() const { return size / n_rows(); }
};

// "F32 [64, 512]"
std::string describe_tensor(const TensorInfo& t);

struct OpenOptions {
  // Accept tensors whose type ggml knows but chorus cannot run (IQ*, TQ*, I8 ...); their
  // sizes are still checked. For `chorus inspect`; a model loader keeps this false.
  bool allow_unsupported_types = false;
};

class File {
 public:
  // Maps and validates path; throws Error on any defect (including "cannot open").
  static File open(const std::string& path, const OpenOptions& options = {});

  File(File&& other) noexcept;
  File& operator=(File&& other) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File();

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t file_size() const { return size_; }
  uint32_t alignment() const { return alignment_; }
  // Absolute offset of the tensor data section (may be past the end when there are no tensors).
  uint64_t data_offset() const { return data_offset_; }
  // The whole mapping.
  std::span<const uint8_t> bytes() const { return {base_, static_cast<size_t>(size_)}; }

  // Tells the kernel the tensor data will not be read again soon (after upload to a device),
  // so the pages of the mapping can be dropped: no second copy of the weights stays in RAM.
  // Reading the data afterwards still works (the pages are read from the file again).
  void drop_tensor_pages() const noexcept;

  // --- metadata -------------------------------------------------------------------------------
  // In file order.
  std::span<const KeyValue> metadata() const { return kvs_; }
  // nullptr when the key is absent.
  const Value* find(std::string_view key) const;
  bool has(std::string_view key) const { return find(key) != nullptr; }

  // Typed scalars: nullopt when the key is absent; Error (naming the key, its type and the
  // expected type) when present with a type that does not convert. Integer getters accept any
  // integer type whose value fits; get_f32 accepts f32 and f64 (and integers, converted).
  std::optional<uint32_t> get_u32(std::string_view key) const;
  std::optional<int32_t> get_i32(std::string_view key) const;
  std::optional<uint64_t> get_u64(std::string_view key) const;
  std::optional<float> get_f32(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<std::string_view> get_string(std::string_view key) const;

  // As get_*, but an absent key throws "path: missing required key 'k' (expected u32)".
  uint32_t require_u32(std::string_view key) const;
  int32_t require_i32(std::string_view key) const;
  uint64_t require_u64(std::string_view key) const;
  float require_f32(std::string_view key) const;
  bool require_bool(std::string_view key) const;
  std::string_view require_string(std::string_view key) const;

  // Arrays: nullopt when absent; Error when the key is not an array or the elements do not
  // convert (array_i32: any integer element type whose values fit; array_f32: f32 or f64).
  std::optional<uint64_t> array_size(std::string_view key) const;
  std::optional<std::vector<std::string_view>> array_strings(std::string_view key) const;
  std::optional<std::vector<float>> array_f32(std::string_view key) const;
  std::optional<std::vector<int32_t>> array_i32(std::string_view key) const;
  // As above, absent key -> Error "missing required key 'k' (expected array of string)".
  std::vector<std::string_view> require_array_strings(std::string_view key) const;

  // --- tensors --------------------------------------------------------------------------------
  // In file order.
  std::span<const TensorInfo> tensors() const { return tensors_; }
  // nullptr when absent.
  const TensorInfo* find_tensor(std::string_view name) const;
  // Absent -> Error "path: missing required tensor 'name'".
  const TensorInfo& require_tensor(std::string_view name) const;

  // Throws Error("path: " + what): for callers (model loaders) reporting a defect of this file.
  [[noreturn]] void fail(const std::string& what) const;

 private:
  File() = default;
  void release() noexcept;

  std::string path_;
  const uint8_t* base_ = nullptr;  // the mapping (nullptr for an empty mapping)
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint32_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<KeyValue> kvs_;
  std::unordered_map<std::string_view, size_t> kv_index_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string_view, size_t> tensor_index_;

  friend class Parser;
};

}  // namespace chorus::gguf
