// tests/reference_model.h — a plain C++ forward pass of the llama family on the host: the
// reference the GPU forward pass (engine/model.h) is tested against.
//
// Owns: nothing but clarity. Weights are dequantised once with dequantize_row (engine/quant.h)
// into F32; every dot product, norm and softmax accumulates in double. The steps, in order:
//   x = token_embd[token] * embd_scale                  (gemma: sqrt(n_embd), else 1)
//   per layer l:
//     h = RMSNorm(x, eps) * attn_norm
//     q, k, v = Wq h (+bq), Wk h (+bk), Wv h (+bv)         (biases: qwen2; phi3: the rows of
//       the fused attn_qkv, and Wgate / Wup the two halves of the fused ffn_up)
//     q, k = RMSNorm of each head * attn_q_norm / attn_k_norm (QK-norm: qwen3, gemma3)
//     RoPE on q and k (llama: pairs (2i, 2i+1); qwen2/NeoX: (i, i + d/2)),
//       theta_i = pos * freq_scale * base^(-2i / rope_dims), base and scale of the layer
//       (gemma3's windowed layers: their own base, unscaled)
//     append k, v to the KV cache (values rounded through fp16 when f16_kv_cache)
//     a = causal GQA attention, softmax(q.k / sqrt(head_dim)) over positions 0..pos (a
//       windowed layer: pos - window + 1..pos)
//     x = x + Wo a                      (gemma3: x + RMSNorm(Wo a) * post_attention_norm)
//     h = RMSNorm(x, eps) * ffn_norm
//     x = x + Wdown (act(Wgate h) * Wup h)   act = silu, or gelu_tanh (gemma3);
//                                       (gemma3: the sum RMSNormed * post_ffw_norm first)
//   logits = Wout RMSNorm(x, eps) * output_norm      (Wout = output.weight or token_embd.weight)
// The KV cache is incremental: forward() appends its tokens after the ones already seen, so
// greedy decoding costs one token per step. Nothing here is fast.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/gguf.h"
#include "engine/model_config.h"

namespace chorus::ref {

struct ReferenceOptions {
  // Round K and V through fp16 before they enter the cache, as the GPU's F16 KV cache does.
  bool f16_kv_cache = true;
};

class ReferenceModel {
 public:
  // Opens path (throws gguf::Error naming the path on any defect) and dequantises every weight.
  explicit ReferenceModel(const std::string& gguf_path, const ReferenceOptions& options = {});

  const ModelConfig& config() const { return config_; }
  // Positions already in the KV cache.
  uint32_t n_past() const { return n_past_; }
  // Empties the KV cache; the next forward() starts at position 0.
  void reset() { n_past_ = 0; }
  // Changes the options (without reloading the weights) and empties the KV cache.
  void set_options(const ReferenceOptions& options) {
    options_ = options;
    reset();
  }

  // Evaluates tokens at positions n_past() .. n_past() + n - 1 and appends them to the KV cache.
  // Returns the logits of every one of them: [n_tokens][n_vocab].
  std::vector<float> forward(std::span<const int32_t> tokens);
  std::vector<float> forward(const std::vector<int32_t>& tokens) { return forward(std::span<const int32_t>(tokens)); }

  // From an empty cache: evaluates prompt, then picks the argmax (lowest id on ties) n times,
  // feeding each pick back. Returns the n picks.
  std::vector<int32_t> greedy(const std::vector<int32_t>& prompt, uint32_t n);

 private:
  struct Layer {
    std::vector<float> attn_norm;           // [n_embd]
    std::vector<float> wq, wk, wv;          // [n_q][n_embd], [n_kv][n_embd], [n_kv][n_embd]
    std::vector<float> bq, bk, bv;          // [n_q], [n_kv], [n_kv] (empty without qkv_bias)
    std::vector<float> q_norm, k_norm;      // [head_dim] each (empty without qk_norm)
    std::vector<float> wo;                  // [n_embd][n_q]
    std::vector<float> ffn_norm;            // [n_embd]
    std::vector<float> w_gate, w_up;        // [n_ff][n_embd]
    std::vector<float> w_down;              // [n_embd][n_ff]
    std::vector<float> post_attn_norm, post_ffw_norm;  // [n_embd] each (empty without post_norms)
    std::vector<float> k_cache, v_cache;    // [n_ctx][n_kv], grown as positions arrive
  };

  std::vector<float> forward_one(int32_t token, uint32_t pos);

  ModelConfig config_;
  ReferenceOptions options_;
  std::vector<float> token_embd_;  // [n_vocab][n_embd]
  std::vector<float> output_;      // [n_vocab][n_embd] (empty when tied: token_embd_ is used)
  std::vector<float> output_norm_; // [n_embd]
  std::vector<Layer> layers_;      // [n_layer]
  uint32_t n_past_ = 0;
};

// Reads a whole tensor as F32 rows (dequantised): [n_rows][ne0].
std::vector<float> dequantize_tensor(const gguf::TensorInfo& t);

// An independent NumPy reference's output (tests/data/<model>/, written by make_reference.py or
// scripts/numpy_reference.py): the prompt ids and the logits of a few positions.
struct ExpectedLogits {
  std::vector<int32_t> ids;        // the prompt
  std::vector<int32_t> positions;  // positions whose logits were stored
  std::vector<float> logits;       // [positions][n_vocab]
};
using SmolExpected = ExpectedLogits;
// Reads dir/prompt.ids.txt and dir/logits.bin; empty ids when missing or malformed.
ExpectedLogits read_expected_logits(const std::string& dir, uint32_t n_vocab);
// SmolLM2-135M-Instruct Q4_1 (tests/data/smollm2/).
SmolExpected read_smol_expected(uint32_t n_vocab);

}  // namespace chorus::ref
