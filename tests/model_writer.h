// tests/model_writer.h — writing small GGUF models with random weights for tests (qwen2/qwen3
// families, qwen3moe's 3-D expert stacks, hostile metadata for the model-config checks).
#pragma once

#include <cstdint>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "engine/quant.h"

namespace chorus::test {

// Writes a GGUF v3 file: metadata then 32-byte-aligned tensor data.
class ModelWriter {
 public:
  void kv_u32(const std::string& k, uint32_t v) { key(k, 4), pod(meta_, v); }
  void kv_f32(const std::string& k, float v) { key(k, 6), pod(meta_, v); }
  void kv_str(const std::string& k, const std::string& v) { key(k, 8), str(meta_, v); }
  void kv_str_array(const std::string& k, const std::vector<std::string>& v) {
    key(k, 9);
    pod(meta_, uint32_t{8});
    pod(meta_, static_cast<uint64_t>(v.size()));
    for (const std::string& e : v) str(meta_, e);
  }

  // A tensor of `type` (any weight format; ne0 a whole number of its blocks) with shape
  // [ne0, ne1] filled from N(0, scale^2).
  void tensor(const std::string& name, uint64_t ne0, uint64_t ne1, GgmlType type, float scale, std::mt19937& rng) {
    tensor(name, ne0, ne1, 1, type, scale, rng);
  }
  // A 3-D tensor [ne0, ne1, ne2] (a mixture of experts' stack: ne2 matrices of ne1 rows).
  void tensor(const std::string& name, uint64_t ne0, uint64_t ne1, uint64_t ne2, GgmlType type, float scale,
              std::mt19937& rng) {
    std::normal_distribution<float> normal(0.0f, scale);
    const uint64_t rows = ne1 * ne2;
    std::vector<float> v(ne0 * rows);
    for (auto& x : v) x = normal(rng);
    const uint64_t rb = *row_bytes(type, ne0);
    std::vector<uint8_t> bytes(rb * rows);
    for (uint64_t r = 0; r < rows; ++r) quantize_row(type, v.data() + r * ne0, bytes.data() + r * rb, static_cast<int64_t>(ne0));
    while (data_.size() % 32) data_.push_back(0);
    ++n_tensors_;
    str(infos_, name);
    const uint32_t n_dims = ne2 > 1 ? 3 : ne1 > 1 ? 2 : 1;
    pod(infos_, n_dims);
    pod(infos_, ne0);
    if (n_dims >= 2) pod(infos_, ne1);
    if (n_dims == 3) pod(infos_, ne2);
    pod(infos_, static_cast<uint32_t>(type));
    pod(infos_, static_cast<uint64_t>(data_.size()));
    data_.insert(data_.end(), bytes.begin(), bytes.end());
  }

  std::string write(const std::string& path) const {
    std::vector<uint8_t> out;
    out.insert(out.end(), {'G', 'G', 'U', 'F'});
    pod(out, uint32_t{3});
    pod(out, n_tensors_);
    pod(out, n_kv_);
    out.insert(out.end(), meta_.begin(), meta_.end());
    out.insert(out.end(), infos_.begin(), infos_.end());
    while (out.size() % 32) out.push_back(0);
    out.insert(out.end(), data_.begin(), data_.end());
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size()));
    return path;
  }

 private:
  template <class T>
  static void pod(std::vector<uint8_t>& b, T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof v);
  }
  static void str(std::vector<uint8_t>& b, const std::string& s) {
    pod(b, static_cast<uint64_t>(s.size()));
    b.insert(b.end(), s.begin(), s.end());
  }
  void key(const std::string& k, uint32_t type) {
    ++n_kv_;
    str(meta_, k);
    pod(meta_, type);
  }

  std::vector<uint8_t> meta_, infos_, data_;
  uint64_t n_kv_ = 0, n_tensors_ = 0;
};

}  // namespace chorus::test
