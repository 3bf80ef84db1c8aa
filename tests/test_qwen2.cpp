// The qwen2 architecture (QKV biases, NeoX RoPE) on a small random model written by the test:
// the GPU forward pass against the C++ reference, on one device and split over two.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <unistd.h>

#include "engine/model.h"
#include "engine/quant.h"
#include "tests/gpu.h"
#include "tests/reference_model.h"

namespace chorus {
namespace {

// Writes a GGUF v3 file: metadata then 32-byte-aligned tensor data.
class ModelWriter {
 public:
  void kv_u32(const std::string& k, uint32_t v) { key(k, 4), pod(meta_, v); }
  void kv_f32(const std::string& k, float v) { key(k, 6), pod(meta_, v); }
  void kv_str(const std::string& k, const std::string& v) { key(k, 8), str(meta_, v); }

  // A tensor of `type` (F32, F16 or Q8_0) with shape [ne0, ne1] filled from N(0, scale^2).
  void tensor(const std::string& name, uint64_t ne0, uint64_t ne1, GgmlType type, float scale, std::mt19937& rng) {
    std::normal_distribution<float> normal(0.0f, scale);
    std::vector<float> v(ne0 * ne1);
    for (auto& x : v) x = normal(rng);
    const uint64_t rb = *row_bytes(type, ne0);
    std::vector<uint8_t> bytes(rb * ne1);
    for (uint64_t r = 0; r < ne1; ++r) quantize_row(type, v.data() + r * ne0, bytes.data() + r * rb, static_cast<int64_t>(ne0));
    while (data_.size() % 32) data_.push_back(0);
    ++n_tensors_;
    str(infos_, name);
    const uint32_t n_dims = ne1 > 1 ? 2 : 1;
    pod(infos_, n_dims);
    pod(infos_, ne0);
    if (n_dims == 2) pod(infos_, ne1);
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

// 2 layers, n_embd 64, 4 heads of 16 over 2 KV heads, n_ff 96, 100 tokens, untied Q8_0 head.
std::string write_tiny_qwen2() {
  constexpr uint32_t E = 64, H = 4, KV = 2, D = 16, F = 96, V = 100, L = 2;
  std::mt19937 rng(7);
  ModelWriter w;
  w.kv_str("general.architecture", "qwen2");
  w.kv_str("general.name", "tiny random qwen2 (chorus test)");
  w.kv_u32("qwen2.context_length", 256);
  w.kv_u32("qwen2.embedding_length", E);
  w.kv_u32("qwen2.block_count", L);
  w.kv_u32("qwen2.feed_forward_length", F);
  w.kv_u32("qwen2.attention.head_count", H);
  w.kv_u32("qwen2.attention.head_count_kv", KV);
  w.kv_f32("qwen2.attention.layer_norm_rms_epsilon", 1e-6f);
  w.kv_f32("qwen2.rope.freq_base", 1000000.0f);
  w.tensor("token_embd.weight", E, V, GgmlType::F32, 1.0f, rng);
  w.tensor("output_norm.weight", E, 1, GgmlType::F32, 1.0f, rng);
  w.tensor("output.weight", E, V, GgmlType::Q8_0, 0.2f, rng);
  for (uint32_t l = 0; l < L; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    w.tensor(b + "attn_norm.weight", E, 1, GgmlType::F32, 1.0f, rng);
    w.tensor(b + "attn_q.weight", E, H * D, GgmlType::Q8_0, 0.2f, rng);
    w.tensor(b + "attn_k.weight", E, KV * D, GgmlType::F16, 0.2f, rng);
    w.tensor(b + "attn_v.weight", E, KV * D, GgmlType::F32, 0.2f, rng);
    w.tensor(b + "attn_q.bias", H * D, 1, GgmlType::F32, 0.5f, rng);
    w.tensor(b + "attn_k.bias", KV * D, 1, GgmlType::F32, 0.5f, rng);
    w.tensor(b + "attn_v.bias", KV * D, 1, GgmlType::F32, 0.5f, rng);
    w.tensor(b + "attn_output.weight", H * D, E, GgmlType::Q8_0, 0.2f, rng);
    w.tensor(b + "ffn_norm.weight", E, 1, GgmlType::F32, 1.0f, rng);
    w.tensor(b + "ffn_gate.weight", E, F, GgmlType::Q8_0, 0.2f, rng);
    w.tensor(b + "ffn_up.weight", E, F, GgmlType::F16, 0.2f, rng);
    w.tensor(b + "ffn_down.weight", F, E, GgmlType::Q8_0, 0.2f, rng);
  }
  const auto dir = std::filesystem::temp_directory_path() / ("chorus-qwen2-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return w.write((dir / "tiny-qwen2.gguf").string());
}

class Qwen2 : public test::GpuTestP<int> {};

TEST_P(Qwen2, LogitsMatchTheCppReferenceWithBiasesAndNeoxRope) {
  const int n_devices = GetParam();
  const std::string path = write_tiny_qwen2();
  const std::vector<int32_t> prompt{3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26};
  ref::ReferenceModel reference(path, {.f16_kv_cache = true});
  ASSERT_TRUE(reference.config().qkv_bias);
  ASSERT_TRUE(reference.config().rope_neox);
  const auto want = reference.forward(prompt);
  std::vector<vk::Device*> devices;
  for (int i = 0; i < n_devices; ++i) devices.push_back(&test::device(i));
  auto model = Model::load(path, devices,
                           split::SplitRequest{n_devices == 1 ? split::SplitMode::none : split::SplitMode::tensor,
                                               std::vector<double>(static_cast<size_t>(n_devices), 1.0), 0});
  Context ctx(*model, ContextOptions{64, 1, 512});
  const auto got = ctx.decode(0, prompt, true);
  // Prefill stages activations in f16 tiles where the device has fp16 matmul kernels.
  EXPECT_LE(test::nmse(want, got), 1e-6);
  // Decode continues from the cache.
  const std::vector<int32_t> next{42};
  EXPECT_LE(test::nmse(reference.forward(next), ctx.decode(0, next)), 1e-6);
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
}

INSTANTIATE_TEST_SUITE_P(OneAndTwoDevices, Qwen2, ::testing::Values(1, 2));

}  // namespace
}  // namespace chorus
