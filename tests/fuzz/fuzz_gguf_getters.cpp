// libFuzzer harness for the GGUF reader's typed metadata getters: for every key of every file
// that loads, each getter (get_*, require_*, array_*) either returns a value or nothing, or
// throws gguf::Error; so does every Value accessor. Anything else is a bug. See README.md.
#include <cstdint>
#include <string>

#include "engine/gguf.h"
#include "tests/fuzz/memory_file.h"

namespace {

template <typename F>
void expect_value_or_error(F&& f, uint64_t& sum) {
  try {
    if (auto v = f()) sum += 1;
  } catch (const chorus::gguf::Error&) {
    // a wrong type or a missing key, reported as an error: fine
  }
}

template <typename F>
void expect_or_error(F&& f, uint64_t& sum) {
  try {
    f();
    sum += 1;
  } catch (const chorus::gguf::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = chorus::fuzz::write_memory_file(data, size);
  try {
    const auto f = chorus::gguf::File::open(path, chorus::gguf::OpenOptions{.allow_unsupported_types = true});
    uint64_t sum = 0;
    for (const auto& kv : f.metadata()) {
      const std::string_view key = kv.key;
      expect_value_or_error([&] { return f.get_u32(key); }, sum);
      expect_value_or_error([&] { return f.get_i32(key); }, sum);
      expect_value_or_error([&] { return f.get_u64(key); }, sum);
      expect_value_or_error([&] { return f.get_f32(key); }, sum);
      expect_value_or_error([&] { return f.get_bool(key); }, sum);
      expect_value_or_error([&] { return f.get_string(key); }, sum);
      expect_value_or_error([&] { return f.array_size(key); }, sum);
      expect_value_or_error([&] { return f.array_strings(key); }, sum);
      expect_value_or_error([&] { return f.array_f32(key); }, sum);
      expect_value_or_error([&] { return f.array_i32(key); }, sum);
      expect_or_error([&] { return f.require_u32(key); }, sum);
      expect_or_error([&] { return f.require_i32(key); }, sum);
      expect_or_error([&] { return f.require_u64(key); }, sum);
      expect_or_error([&] { return f.require_f32(key); }, sum);
      expect_or_error([&] { return f.require_bool(key); }, sum);
      expect_or_error([&] { return f.require_string(key); }, sum);
      expect_or_error([&] { return f.require_array_strings(key); }, sum);
      expect_value_or_error([&] { return kv.value.as_i64(); }, sum);
      expect_value_or_error([&] { return kv.value.as_u64(); }, sum);
      expect_value_or_error([&] { return kv.value.as_f64(); }, sum);
      expect_value_or_error([&] { return kv.value.as_string(); }, sum);
      sum += chorus::gguf::describe_type(kv.value).size() + chorus::gguf::describe_value(kv.value, 3).size();
    }
    // Keys that are absent: nothing, or a "missing key" error.
    expect_value_or_error([&] { return f.get_u32("no.such.key"); }, sum);
    expect_or_error([&] { return f.require_string("no.such.key"); }, sum);
    volatile uint64_t sink = sum;
    (void)sink;
  } catch (const chorus::gguf::Error&) {
    // expected for malformed input
  }
  return 0;
}
