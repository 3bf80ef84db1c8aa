#include "engine/gguf_writer.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace chorus::gguf {

namespace {

template <class T>
void append_pod(std::vector<uint8_t>& b, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  b.insert(b.end(), p, p + sizeof v);
}

void append_string(std::vector<uint8_t>& b, std::string_view s) {
  append_pod(b, static_cast<uint64_t>(s.size()));
  b.insert(b.end(), s.begin(), s.end());
}

uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace

Writer::Writer(std::string path, uint32_t alignment)
    : path_(std::move(path)), tmp_path_(path_ + ".tmp" + std::to_string(::getpid())), alignment_(alignment) {
  if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0)
    fail("alignment " + std::to_string(alignment_) + " is not a power of two");
}

Writer::~Writer() {
  const bool created = out_ != nullptr || written_ > 0;
  if (out_) std::fclose(out_);
  if (!finished_ && created) std::remove(tmp_path_.c_str());
}

void Writer::fail(const std::string& what) const { throw Error(path_ + ": " + what); }

void Writer::add_kv(std::string_view key, const Value& value) {
  if (out_) fail("metadata key '" + std::string(key) + "' added after the data began");
  ++n_kv_;
  append_string(meta_, key);
  append_pod(meta_, static_cast<uint32_t>(value.type));
  if (value.type == ValueType::Array) {
    append_pod(meta_, static_cast<uint32_t>(value.elem_type));
    append_pod(meta_, value.count);
  } else if (value.type == ValueType::String) {
    append_pod(meta_, static_cast<uint64_t>(value.bytes.size()));
  }
  meta_.insert(meta_.end(), value.bytes.begin(), value.bytes.end());
}

void Writer::add_kv_u32(std::string_view key, uint32_t value) {
  uint8_t bytes[4];
  std::memcpy(bytes, &value, 4);
  add_kv(key, Value{ValueType::U32, ValueType::U32, 1, std::span<const uint8_t>(bytes, 4)});
}

uint64_t Writer::add_tensor(std::string_view name, std::span<const uint64_t> ne, GgmlType type) {
  const std::string what = "tensor '" + std::string(name) + "'";
  if (out_) fail(what + " declared after the data began");
  if (ne.empty() || ne.size() > 4) fail(what + ": " + std::to_string(ne.size()) + " dimensions, expected 1 to 4");
  const auto rb = row_bytes(type, ne[0]);
  if (!rb)
    fail(what + ": a row of " + std::to_string(ne[0]) + " elements is not a whole number of " + type_traits(type).name +
         " blocks");
  uint64_t size = *rb;
  for (size_t i = 1; i < ne.size(); ++i) size *= ne[i];  // the input's sizes were overflow-checked by the reader
  append_string(infos_, name);
  append_pod(infos_, static_cast<uint32_t>(ne.size()));
  for (const uint64_t d : ne) append_pod(infos_, d);
  append_pod(infos_, static_cast<uint32_t>(type));
  append_pod(infos_, data_bytes_);
  data_bytes_ = round_up(data_bytes_ + size, alignment_);
  tensors_.push_back({size});
  return size;
}

uint64_t Writer::file_size() const {
  const uint64_t header = 4 + 4 + 8 + 8 + meta_.size() + infos_.size();
  return round_up(header, alignment_) + data_bytes_;
}

void Writer::put(const void* data, size_t n) {
  if (n == 0) return;
  if (std::fwrite(data, 1, n, out_) != n) fail(std::string("cannot write ") + tmp_path_ + ": " + std::strerror(errno));
  written_ += n;
}

void Writer::pad_to_alignment() {
  static const uint8_t zeros[64] = {};
  uint64_t pad = round_up(written_, alignment_) - written_;
  while (pad > 0) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(pad, sizeof zeros));
    put(zeros, n);
    pad -= n;
  }
}

void Writer::begin_data() {
  if (out_) fail("begin_data called twice");
  out_ = std::fopen(tmp_path_.c_str(), "wbx");
  if (!out_) fail("cannot create the temporary file " + tmp_path_ + ": " + std::strerror(errno));
  put("GGUF", 4);
  const uint32_t version = 3;
  const uint64_t n_tensors = tensors_.size();
  put(&version, 4);
  put(&n_tensors, 8);
  put(&n_kv_, 8);
  put(meta_.data(), meta_.size());
  put(infos_.data(), infos_.size());
  pad_to_alignment();
}

void Writer::write_tensor(std::span<const uint8_t> bytes) {
  if (!out_) fail("tensor data written before begin_data");
  if (next_tensor_ >= tensors_.size()) fail("more tensor data than the " + std::to_string(tensors_.size()) + " tensors declared");
  if (bytes.size() != tensors_[next_tensor_].size)
    fail("tensor " + std::to_string(next_tensor_) + ": " + std::to_string(bytes.size()) + " bytes given, " +
         std::to_string(tensors_[next_tensor_].size) + " declared");
  put(bytes.data(), bytes.size());
  pad_to_alignment();
  ++next_tensor_;
}

void Writer::finish() {
  if (!out_) fail("finish called before begin_data");
  if (next_tensor_ != tensors_.size())
    fail(std::to_string(tensors_.size() - next_tensor_) + " declared tensors were never written");
  const bool flushed = std::fflush(out_) == 0 && ::fsync(::fileno(out_)) == 0;
  const int err = errno;
  const bool closed = std::fclose(out_) == 0;
  out_ = nullptr;
  if (!flushed || !closed) {
    std::remove(tmp_path_.c_str());
    fail("cannot write " + tmp_path_ + ": " + std::strerror(flushed ? errno : err));
  }
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    const int rerr = errno;
    std::remove(tmp_path_.c_str());
    fail("cannot rename " + tmp_path_ + " to it: " + std::strerror(rerr));
  }
  finished_ = true;
}

}  // namespace chorus::gguf
