// engine/gguf.cpp — mapping and validating GGUF files (see gguf.h for the layout).
#include "engine/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <type_traits>
#include <utility>

#include "vkdevice/file_type.h"

namespace chorus::gguf {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kMaxDims = 4;
constexpr uint64_t kHeaderBytes = 4 + 4 + 8 + 8;
// The smallest possible records: a key (u64 length, empty) + u32 type + a one-byte value, and
// a tensor info with an empty name, one dimension, a type and an offset.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorBytes = 8 + 4 + 8 + 4 + 8;
constexpr uint32_t kMaxValueType = static_cast<uint32_t>(ValueType::F64);

// Bytes of one scalar of type t; 0 for String and Array (variable size).
uint64_t scalar_bytes(ValueType t) {
  switch (t) {
    case ValueType::U8: case ValueType::I8: case ValueType::Bool: return 1;
    case ValueType::U16: case ValueType::I16: return 2;
    case ValueType::U32: case ValueType::I32: case ValueType::F32: return 4;
    case ValueType::U64: case ValueType::I64: case ValueType::F64: return 8;
    case ValueType::String: case ValueType::Array: return 0;
  }
  return 0;
}

bool is_integer(ValueType t) {
  switch (t) {
    case ValueType::U8: case ValueType::I8: case ValueType::U16: case ValueType::I16:
    case ValueType::U32: case ValueType::I32: case ValueType::U64: case ValueType::I64: return true;
    default: return false;
  }
}

template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// An integer scalar at p as (value, is_negative) widened to 64 bits.
struct Wide {
  uint64_t magnitude_bits;  // the value as uint64 when non-negative; the int64 bits otherwise
  bool negative;
};

Wide load_integer(ValueType t, const uint8_t* p) {
  switch (t) {
    case ValueType::U8: return {load<uint8_t>(p), false};
    case ValueType::U16: return {load<uint16_t>(p), false};
    case ValueType::U32: return {load<uint32_t>(p), false};
    case ValueType::U64: return {load<uint64_t>(p), false};
    case ValueType::I8: { const int64_t v = load<int8_t>(p); return {static_cast<uint64_t>(v), v < 0}; }
    case ValueType::I16: { const int64_t v = load<int16_t>(p); return {static_cast<uint64_t>(v), v < 0}; }
    case ValueType::I32: { const int64_t v = load<int32_t>(p); return {static_cast<uint64_t>(v), v < 0}; }
    case ValueType::I64: { const int64_t v = load<int64_t>(p); return {static_cast<uint64_t>(v), v < 0}; }
    default: return {0, false};
  }
}

double load_float(ValueType t, const uint8_t* p) {
  return t == ValueType::F32 ? static_cast<double>(load<float>(p)) : load<double>(p);
}

std::string integer_text(ValueType t, const uint8_t* p) {
  const Wide w = load_integer(t, p);
  return w.negative ? std::to_string(static_cast<int64_t>(w.magnitude_bits)) : std::to_string(w.magnitude_bits);
}

// Shortest text that reads back as the same value (f32 values as floats: 1e-05, not 9.99999975e-06).
std::string float_text(ValueType t, const uint8_t* p) {
  char buf[64];
  const auto r = t == ValueType::F32 ? std::to_chars(buf, buf + sizeof buf, load<float>(p))
                                     : std::to_chars(buf, buf + sizeof buf, load<double>(p));
  return std::string(buf, r.ptr);
}

// A name from the file, quoted for a message: non-printable bytes escaped, long ones cut.
std::string quoted(std::string_view s, size_t max_chars = 80) {
  std::string out = "'";
  for (size_t i = 0; i < s.size(); ++i) {
    if (out.size() > max_chars) {
      out += "...";
      break;
    }
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\\' || c == '\'') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else if (c >= 0x80) {
      out += static_cast<char>(c);  // UTF-8 passes through (token pieces); terminals cope
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out + "'";
}

bool add_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_add_overflow(a, b, out); }
bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

std::string range_text(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

std::string dims_text(const TensorInfo& t) {
  std::string s = "[";
  for (uint32_t d = 0; d < t.n_dims; ++d) s += (d ? ", " : "") + std::to_string(t.ne[d]);
  return s + "]";
}

}  // namespace

// --- Value -----------------------------------------------------------------------------------

const char* value_type_name(ValueType t) {
  switch (t) {
    case ValueType::U8: return "u8";
    case ValueType::I8: return "i8";
    case ValueType::U16: return "u16";
    case ValueType::I16: return "i16";
    case ValueType::U32: return "u32";
    case ValueType::I32: return "i32";
    case ValueType::F32: return "f32";
    case ValueType::Bool: return "bool";
    case ValueType::String: return "string";
    case ValueType::Array: return "array";
    case ValueType::U64: return "u64";
    case ValueType::I64: return "i64";
    case ValueType::F64: return "f64";
  }
  return "unknown";
}

std::optional<int64_t> Value::as_i64() const {
  if (!is_integer(type)) return std::nullopt;
  const Wide w = load_integer(type, bytes.data());
  if (!w.negative && w.magnitude_bits > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
  return static_cast<int64_t>(w.magnitude_bits);
}

std::optional<uint64_t> Value::as_u64() const {
  if (!is_integer(type)) return std::nullopt;
  const Wide w = load_integer(type, bytes.data());
  if (w.negative) return std::nullopt;
  return w.magnitude_bits;
}

std::optional<double> Value::as_f64() const {
  if (type != ValueType::F32 && type != ValueType::F64) return std::nullopt;
  return load_float(type, bytes.data());
}

std::optional<std::string_view> Value::as_string() const {
  if (type != ValueType::String) return std::nullopt;
  return std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

namespace {

// Calls fn(element_bytes) for each element of a validated array value.
template <class Fn>
void for_each_element(const Value& v, Fn&& fn) {
  const uint8_t* p = v.bytes.data();
  if (v.elem_type == ValueType::String) {
    for (uint64_t i = 0; i < v.count; ++i) {
      const uint64_t len = load<uint64_t>(p);
      fn(std::span<const uint8_t>(p + 8, static_cast<size_t>(len)));
      p += 8 + len;
    }
    return;
  }
  const uint64_t esz = scalar_bytes(v.elem_type);
  for (uint64_t i = 0; i < v.count; ++i, p += esz) fn(std::span<const uint8_t>(p, static_cast<size_t>(esz)));
}

std::string scalar_text(ValueType t, std::span<const uint8_t> b) {
  if (is_integer(t)) return integer_text(t, b.data());
  if (t == ValueType::F32 || t == ValueType::F64) return float_text(t, b.data());
  if (t == ValueType::Bool) return b[0] ? "true" : "false";
  if (t == ValueType::String) return quoted(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()), 60);
  return "?";
}

}  // namespace

std::string describe_type(const Value& v) {
  if (!v.is_array()) return value_type_name(v.type);
  return std::string("[") + value_type_name(v.elem_type) + "; " + std::to_string(v.count) + "]";
}

std::string describe_value(const Value& v, size_t max_elems) {
  if (!v.is_array()) return scalar_text(v.type, v.bytes);
  std::string s = "[";
  uint64_t shown = 0;
  for_each_element(v, [&](std::span<const uint8_t> e) {
    if (shown > max_elems) return;
    if (shown == max_elems) {
      s += ", ...";
    } else {
      if (shown) s += ", ";
      s += scalar_text(v.elem_type, e);
    }
    ++shown;
  });
  return s + "]";
}

std::string describe_tensor(const TensorInfo& t) {
  return std::string(t.traits ? t.traits->name : "?") + " " + dims_text(t);
}

// --- the parser --------------------------------------------------------------------------------

class Parser {
 public:
  Parser(File& f, const OpenOptions& options) : f_(f), options_(options) {}

  void run() {
    read_header();
    read_metadata();
    read_alignment();
    read_tensor_infos();
    place_tensors();
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(f_.path_ + ": " + (where_.empty() ? "" : where_ + ": ") + what);
  }

  const uint8_t* at(uint64_t pos) const { return f_.base_ + pos; }
  uint64_t left() const { return f_.size_ - pos_; }

  void need(uint64_t n, const char* field) const {
    if (n > left()) {
      fail(std::string(field) + " needs " + std::to_string(n) + " bytes at offset " + std::to_string(pos_) +
           " but only " + std::to_string(left()) + " are left (truncated file?)");
    }
  }

  template <class T>
  T read(const char* field) {
    need(sizeof(T), field);
    const T v = load<T>(at(pos_));
    pos_ += sizeof(T);
    return v;
  }

  std::string_view read_string(const char* field) {
    const uint64_t len = read<uint64_t>(field);
    if (len > left()) {
      fail(std::string(field) + " has length " + std::to_string(len) + " at offset " + std::to_string(pos_ - 8) +
           ", more than the " + std::to_string(left()) + " bytes left in the file");
    }
    const std::string_view s(reinterpret_cast<const char*>(at(pos_)), static_cast<size_t>(len));
    pos_ += len;
    return s;
  }

  ValueType read_value_type(const char* field) {
    const uint64_t type_pos = pos_;
    const uint32_t raw = read<uint32_t>(field);
    if (raw > kMaxValueType) {
      fail(std::string(field) + " " + std::to_string(raw) + " at offset " + std::to_string(type_pos) +
           " is unknown (expected 0..12: u8, i8, u16, i16, u32, i32, f32, bool, string, array, u64, i64, f64)");
    }
    return static_cast<ValueType>(raw);
  }

  void read_header() {
    if (f_.size_ < 4) fail("file of " + std::to_string(f_.size_) + " bytes is too short for the GGUF magic");
    const uint32_t magic = load<uint32_t>(at(0));
    if (magic != kMagic) {
      char shown[64];
      const uint8_t* m = at(0);
      std::snprintf(shown, sizeof shown, "%02x %02x %02x %02x", m[0], m[1], m[2], m[3]);
      std::string hint;
      // ggml's pre-GGUF formats ("ggml", "ggmf", "ggjt" written as u32, so reversed on disk).
      if (magic == 0x67676d6c || magic == 0x67676d66 || magic == 0x67676a74)
        hint = " (a pre-GGUF GGML/GGJT file: re-convert the model)";
      fail("not a GGUF file: magic bytes are " + std::string(shown) + ", expected 47 47 55 46 (\"GGUF\")" + hint);
    }
    pos_ = 4;
    f_.version_ = read<uint32_t>("version");
    if (f_.version_ == 1)
      fail("GGUF version 1 is not supported (files from before Aug 2023); re-convert the model");
    if (f_.version_ != 2 && f_.version_ != 3) {
      const uint32_t swapped = __builtin_bswap32(f_.version_);
      if (swapped >= 1 && swapped <= 3)
        fail("big-endian GGUF file (version " + std::to_string(swapped) + " byte-swapped); only little-endian files are supported");
      fail("GGUF version " + std::to_string(f_.version_) + " is not supported (expected 2 or 3)");
    }
    n_tensors_ = read<uint64_t>("tensor count");
    n_kv_ = read<uint64_t>("key/value count");
    // Each record needs a minimum number of bytes: counts the file cannot hold are rejected
    // before anything is reserved for them.
    if (n_kv_ > left() / kMinKvBytes) {
      fail("key/value count " + std::to_string(n_kv_) + " is impossible: each needs at least " +
           std::to_string(kMinKvBytes) + " bytes and only " + std::to_string(left()) + " bytes follow the header (truncated file?)");
    }
    if (n_tensors_ > (left() - n_kv_ * kMinKvBytes) / kMinTensorBytes) {
      fail("tensor count " + std::to_string(n_tensors_) + " is impossible: each tensor info needs at least " +
           std::to_string(kMinTensorBytes) + " bytes and only " + std::to_string(left()) +
           " bytes follow the header (with " + std::to_string(n_kv_) + " key/value pairs; truncated file?)");
    }
  }

  void read_metadata() {
    f_.kvs_.reserve(static_cast<size_t>(n_kv_));
    f_.kv_index_.reserve(static_cast<size_t>(n_kv_));
    for (uint64_t i = 0; i < n_kv_; ++i) {
      where_ = "key #" + std::to_string(i);
      const std::string_view key = read_string("key name");
      where_ = "key " + quoted(key);
      const ValueType type = read_value_type("value type");
      const Value value = read_value(type);
      const auto [it, inserted] = f_.kv_index_.emplace(key, f_.kvs_.size());
      if (!inserted) fail("duplicate key (first defined as key #" + std::to_string(it->second) + ")");
      f_.kvs_.push_back(KeyValue{key, value});
    }
    where_.clear();
  }

  Value read_value(ValueType type) {
    const uint64_t start = pos_;
    if (type == ValueType::String) {
      const std::string_view s = read_string("string value");
      return Value{type, type, 1, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size())};
    }
    if (type != ValueType::Array) {
      const uint64_t n = scalar_bytes(type);
      need(n, value_type_name(type));
      pos_ += n;
      return Value{type, type, 1, std::span<const uint8_t>(at(start), static_cast<size_t>(n))};
    }
    const ValueType elem = read_value_type("array element type");
    if (elem == ValueType::Array) fail("arrays of arrays are not supported");
    const uint64_t count = read<uint64_t>("array length");
    const uint64_t elems_start = pos_;
    if (elem == ValueType::String) {
      if (count > left() / 8) {
        fail("array of " + std::to_string(count) + " strings cannot fit in the " + std::to_string(left()) +
             " bytes left in the file (each needs at least 8)");
      }
      for (uint64_t e = 0; e < count; ++e) {
        const uint64_t len = read<uint64_t>("array string length");
        if (len > left()) {
          fail("string #" + std::to_string(e) + " of the array has length " + std::to_string(len) +
               ", more than the " + std::to_string(left()) + " bytes left in the file");
        }
        pos_ += len;
      }
    } else {
      const uint64_t esz = scalar_bytes(elem);
      if (count > left() / esz) {
        fail("array of " + std::to_string(count) + " " + value_type_name(elem) + " needs " +
             (count > std::numeric_limits<uint64_t>::max() / esz ? std::string("more than 2^64") : std::to_string(count * esz)) +
             " bytes, more than the " + std::to_string(left()) + " bytes left in the file");
      }
      pos_ += count * esz;
    }
    return Value{ValueType::Array, elem, count,
                 std::span<const uint8_t>(at(elems_start), static_cast<size_t>(pos_ - elems_start))};
  }

  void read_alignment() {
    const Value* v = f_.find("general.alignment");
    if (!v) return;
    where_ = "key 'general.alignment'";
    const std::optional<uint64_t> a = v->as_u64();
    if (!a) fail("has type " + describe_type(*v) + " value " + describe_value(*v, 2) + ", expected a u32");
    if (*a == 0 || *a > (1u << 30) || !std::has_single_bit(*a))
      fail("= " + std::to_string(*a) + ", expected a power of two (at most 2^30)");
    f_.alignment_ = static_cast<uint32_t>(*a);
    where_.clear();
  }

  void read_tensor_infos() {
    f_.tensors_.reserve(static_cast<size_t>(n_tensors_));
    f_.tensor_index_.reserve(static_cast<size_t>(n_tensors_));
    for (uint64_t i = 0; i < n_tensors_; ++i) {
      where_ = "tensor #" + std::to_string(i);
      TensorInfo t;
      t.name = read_string("tensor name");
      where_ = "tensor " + quoted(t.name);
      t.n_dims = read<uint32_t>("dimension count");
      if (t.n_dims == 0 || t.n_dims > kMaxDims)
        fail("has " + std::to_string(t.n_dims) + " dimensions, expected 1 to " + std::to_string(kMaxDims));
      uint64_t elems = 1;
      for (uint32_t d = 0; d < t.n_dims; ++d) {
        t.ne[d] = read<uint64_t>("dimension");
        if (t.ne[d] == 0) fail("dimension " + std::to_string(d) + " is 0, expected at least 1");
        if (mul_overflows(elems, t.ne[d], &elems) || elems > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          std::string dims = "[";
          for (uint32_t k = 0; k <= d; ++k) dims += (k ? ", " : "") + std::to_string(t.ne[k]);
          fail("dimensions " + dims + (d + 1 < t.n_dims ? ", ...]" : "]") +
               " have a product beyond the int64 range (expected a realistic element count)");
        }
      }
      const uint64_t type_pos = pos_;
      const uint32_t raw_type = read<uint32_t>("ggml type");
      t.traits = type_traits(raw_type);
      if (!t.traits)
        fail("unknown ggml type id " + std::to_string(raw_type) + " at offset " + std::to_string(type_pos) +
             " (expected a type ggml defines, e.g. 0 = F32, 1 = F16, 8 = Q8_0)");
      if (!t.traits->supported && !options_.allow_unsupported_types)
        fail("ggml type " + std::string(t.traits->name) + " (id " + std::to_string(raw_type) +
             ") is not supported by chorus (expected one of F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K)");
      t.type = static_cast<GgmlType>(raw_type);
      if (t.ne[0] % t.traits->block_elems != 0)
        fail("row of " + std::to_string(t.ne[0]) + " elements is not a multiple of the " + t.traits->name +
             " block size " + std::to_string(t.traits->block_elems));
      // elems fits int64 and block_bytes is small, yet a file can still make the byte count
      // overflow for wide blocks: check every product.
      uint64_t row = 0;
      uint64_t size = 0;
      if (mul_overflows(t.ne[0] / t.traits->block_elems, t.traits->block_bytes, &row) ||
          mul_overflows(row, t.ne[1] * t.ne[2] * t.ne[3], &size)) {
        fail("byte size of " + std::string(t.traits->name) + " " + dims_text(t) + " overflows 64 bits");
      }
      t.size = size;
      t.offset = read<uint64_t>("data offset");
      const auto [it, inserted] = f_.tensor_index_.emplace(t.name, f_.tensors_.size());
      if (!inserted) fail("duplicate tensor name (first defined as tensor #" + std::to_string(it->second) + ")");
      f_.tensors_.push_back(t);
    }
    where_.clear();
  }

  void place_tensors() {
    const uint64_t a = f_.alignment_;
    uint64_t padded = 0;
    if (add_overflows(pos_, a - 1, &padded)) fail("data offset overflows");
    f_.data_offset_ = padded / a * a;
    // A vocab-only file (no tensors) may end before its aligned data offset: nothing to place.
    std::vector<size_t> order(f_.tensors_.size());
    std::iota(order.begin(), order.end(), size_t{0});
    for (TensorInfo& t : f_.tensors_) {
      where_ = "tensor " + quoted(t.name);
      if (t.offset % a != 0)
        fail("data offset " + std::to_string(t.offset) + " is not a multiple of the alignment " + std::to_string(a));
      uint64_t begin = 0;
      uint64_t end = 0;
      if (add_overflows(f_.data_offset_, t.offset, &begin) || add_overflows(begin, t.size, &end))
        fail("data offset " + std::to_string(t.offset) + " + size " + std::to_string(t.size) + " overflows 64 bits");
      if (end > f_.size_)
        fail("data " + range_text(begin, end) + " lies outside the file (size " + std::to_string(f_.size_) + ")");
      t.data = std::span<const uint8_t>(at(begin), static_cast<size_t>(t.size));
    }
    std::sort(order.begin(), order.end(),
              [&](size_t x, size_t y) { return f_.tensors_[x].offset < f_.tensors_[y].offset; });
    for (size_t k = 1; k < order.size(); ++k) {
      const TensorInfo& prev = f_.tensors_[order[k - 1]];
      const TensorInfo& cur = f_.tensors_[order[k]];
      if (prev.offset + prev.size > cur.offset) {
        where_ = "tensor " + quoted(cur.name);
        fail("data " + range_text(cur.offset, cur.offset + cur.size) + " overlaps tensor " + quoted(prev.name) +
             " " + range_text(prev.offset, prev.offset + prev.size) + " (offsets relative to the data section)");
      }
    }
    where_.clear();
  }

  File& f_;
  const OpenOptions& options_;
  uint64_t pos_ = 0;
  uint64_t n_tensors_ = 0;
  uint64_t n_kv_ = 0;
  std::string where_;  // the record being read, for messages: "key 'general.name'"
};

// --- File ------------------------------------------------------------------------------------

File File::open(const std::string& path, const OpenOptions& options) {
  File f;
  f.path_ = path;
  // O_NONBLOCK: a FIFO (or a device) must be refused below, not block open(2) waiting for a
  // writer. It does not affect regular files, which are all this reader accepts.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(path + ": cannot stat: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": " + describe_file_type(st.st_mode) + ", not a regular file (expected a .gguf file)");
  }
  f.size_ = static_cast<uint64_t>(st.st_size);
  if (f.size_ < kHeaderBytes) {
    ::close(fd);
    throw Error(path + ": file of " + std::to_string(f.size_) + " bytes is too short for a GGUF header (" +
                std::to_string(kHeaderBytes) + " bytes)");
  }
  void* m = ::mmap(nullptr, static_cast<size_t>(f.size_), PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);  // the mapping keeps the file open
  if (m == MAP_FAILED) throw Error(path + ": cannot map " + std::to_string(f.size_) + " bytes: " + std::strerror(err));
  f.base_ = static_cast<const uint8_t*>(m);
  Parser(f, options).run();  // on a throw, f's destructor unmaps
  return f;
}

File::File(File&& other) noexcept { *this = std::move(other); }

File& File::operator=(File&& other) noexcept {
  if (this == &other) return *this;
  release();
  path_ = std::move(other.path_);
  base_ = std::exchange(other.base_, nullptr);
  size_ = std::exchange(other.size_, 0);
  version_ = other.version_;
  alignment_ = other.alignment_;
  data_offset_ = other.data_offset_;
  kvs_ = std::move(other.kvs_);
  kv_index_ = std::move(other.kv_index_);
  tensors_ = std::move(other.tensors_);
  tensor_index_ = std::move(other.tensor_index_);
  return *this;
}

File::~File() { release(); }

void File::drop_tensor_pages() const noexcept {
  if (base_ == nullptr || data_offset_ >= size_) return;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t begin = (data_offset_ + page - 1) / page * page;
  if (begin >= size_) return;
  // MADV_DONTNEED on a private read-only file mapping drops the pages; later reads fault them in again.
  ::madvise(const_cast<uint8_t*>(base_) + begin, static_cast<size_t>(size_ - begin), MADV_DONTNEED);
}

void File::release() noexcept {
  if (base_) ::munmap(const_cast<uint8_t*>(base_), static_cast<size_t>(size_));
  base_ = nullptr;
}

void File::fail(const std::string& what) const { throw Error(path_ + ": " + what); }

const Value* File::find(std::string_view key) const {
  const auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kvs_[it->second].value;
}

namespace {

[[noreturn]] void wrong_type(const File& f, std::string_view key, const Value& v, const char* expected) {
  f.fail("key " + quoted(key) + " has type " + describe_type(v) + (v.is_array() ? "" : " (value " + describe_value(v) + ")") +
         ", expected " + expected);
}

template <class T>
std::optional<T> get_integer(const File& f, std::string_view key, const char* expected) {
  const Value* v = f.find(key);
  if (!v) return std::nullopt;
  if (!is_integer(v->type)) wrong_type(f, key, *v, expected);
  if constexpr (std::is_signed_v<T>) {
    const std::optional<int64_t> x = v->as_i64();
    if (x && *x >= std::numeric_limits<T>::min() && *x <= std::numeric_limits<T>::max()) return static_cast<T>(*x);
  } else {
    const std::optional<uint64_t> x = v->as_u64();
    if (x && *x <= std::numeric_limits<T>::max()) return static_cast<T>(*x);
  }
  f.fail("key " + quoted(key) + " = " + describe_value(*v) + " (" + value_type_name(v->type) + ") does not fit " + expected);
}

template <class T>
T required(const File& f, std::string_view key, std::optional<T> v, const char* expected) {
  if (!v) f.fail("missing required key " + quoted(key) + " (expected " + expected + ")");
  return *v;
}

const Value* find_array(const File& f, std::string_view key, const char* expected) {
  const Value* v = f.find(key);
  if (v && !v->is_array()) wrong_type(f, key, *v, expected);
  return v;
}

}  // namespace

std::optional<uint32_t> File::get_u32(std::string_view key) const { return get_integer<uint32_t>(*this, key, "u32"); }
std::optional<int32_t> File::get_i32(std::string_view key) const { return get_integer<int32_t>(*this, key, "i32"); }
std::optional<uint64_t> File::get_u64(std::string_view key) const { return get_integer<uint64_t>(*this, key, "u64"); }

std::optional<float> File::get_f32(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (const auto d = v->as_f64()) return static_cast<float>(*d);
  if (const auto i = v->as_i64()) return static_cast<float>(*i);
  if (const auto u = v->as_u64()) return static_cast<float>(*u);
  wrong_type(*this, key, *v, "f32");
}

std::optional<bool> File::get_bool(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::Bool) wrong_type(*this, key, *v, "bool");
  return v->bytes[0] != 0;
}

std::optional<std::string_view> File::get_string(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::String) wrong_type(*this, key, *v, "string");
  return v->as_string();
}

uint32_t File::require_u32(std::string_view key) const { return required(*this, key, get_u32(key), "u32"); }
int32_t File::require_i32(std::string_view key) const { return required(*this, key, get_i32(key), "i32"); }
uint64_t File::require_u64(std::string_view key) const { return required(*this, key, get_u64(key), "u64"); }
float File::require_f32(std::string_view key) const { return required(*this, key, get_f32(key), "f32"); }
bool File::require_bool(std::string_view key) const { return required(*this, key, get_bool(key), "bool"); }
std::string_view File::require_string(std::string_view key) const {
  return required(*this, key, get_string(key), "string");
}

std::optional<uint64_t> File::array_size(std::string_view key) const {
  const Value* v = find_array(*this, key, "an array");
  if (!v) return std::nullopt;
  return v->count;
}

std::optional<std::vector<std::string_view>> File::array_strings(std::string_view key) const {
  const Value* v = find_array(*this, key, "array of string");
  if (!v) return std::nullopt;
  if (v->elem_type != ValueType::String) wrong_type(*this, key, *v, "array of string");
  std::vector<std::string_view> out;
  out.reserve(static_cast<size_t>(v->count));  // count was checked against the file's size
  for_each_element(*v, [&](std::span<const uint8_t> e) {
    out.emplace_back(reinterpret_cast<const char*>(e.data()), e.size());
  });
  return out;
}

std::optional<std::vector<float>> File::array_f32(std::string_view key) const {
  const Value* v = find_array(*this, key, "array of f32");
  if (!v) return std::nullopt;
  if (v->elem_type != ValueType::F32 && v->elem_type != ValueType::F64) wrong_type(*this, key, *v, "array of f32");
  std::vector<float> out;
  out.reserve(static_cast<size_t>(v->count));
  for_each_element(*v, [&](std::span<const uint8_t> e) {
    out.push_back(static_cast<float>(load_float(v->elem_type, e.data())));
  });
  return out;
}

std::optional<std::vector<int32_t>> File::array_i32(std::string_view key) const {
  const Value* v = find_array(*this, key, "array of i32");
  if (!v) return std::nullopt;
  if (!is_integer(v->elem_type)) wrong_type(*this, key, *v, "array of i32");
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(v->count));
  for_each_element(*v, [&](std::span<const uint8_t> e) {
    const Wide w = load_integer(v->elem_type, e.data());
    const int64_t x = static_cast<int64_t>(w.magnitude_bits);
    const bool fits = w.negative ? x >= std::numeric_limits<int32_t>::min()
                                 : w.magnitude_bits <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max());
    if (!fits) {
      fail("key " + quoted(key) + ": element #" + std::to_string(out.size()) + " = " +
           integer_text(v->elem_type, e.data()) + " does not fit i32");
    }
    out.push_back(static_cast<int32_t>(x));
  });
  return out;
}

std::vector<std::string_view> File::require_array_strings(std::string_view key) const {
  auto v = array_strings(key);
  if (!v) fail("missing required key " + quoted(key) + " (expected array of string)");
  return std::move(*v);
}

const TensorInfo* File::find_tensor(std::string_view name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& File::require_tensor(std::string_view name) const {
  const TensorInfo* t = find_tensor(name);
  if (!t) fail("missing required tensor " + quoted(name));
  return *t;
}

}  // namespace chorus::gguf
