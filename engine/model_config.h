// engine/model_config.h — a model's hyper-parameters, read from GGUF metadata.
//
// Owns: the metadata keys every architecture needs (engine/arch.h has the tables), their
// defaults, and the checks that the values are sane and that the tensor shapes agree with
// them. Every size derived from metadata is computed in 64 bits and must equal what the
// file's tensors hold, so nothing is allocated from a number only the metadata claims.
#pragma once

#include <cstdint>
#include <string>

#include "engine/arch.h"
#include "engine/gguf.h"

namespace chorus {

struct ModelConfig {
  std::string arch;            // general.architecture (a name engine/arch.h knows)
  const Architecture* spec = nullptr;  // its table
  std::span<const TensorSpec> layer_table;  // the layer table of this model: spec->layer, or
                                            // spec->experts.layer for a family's MoE models
  std::string name;            // general.name, if present
  uint32_t n_vocab = 0;        // rows of token_embd.weight
  uint32_t n_embd = 0;         // {arch}.embedding_length
  uint32_t n_layer = 0;        // {arch}.block_count
  uint32_t n_head = 0;         // {arch}.attention.head_count
  uint32_t n_head_kv = 0;      // {arch}.attention.head_count_kv (default n_head)
  uint32_t head_dim = 0;       // {arch}.attention.key_length (default n_embd / n_head)
  uint32_t n_ff = 0;           // {arch}.feed_forward_length; an expert family's
                               // {arch}.expert_feed_forward_length (each expert's FFN width)
  uint32_t n_expert = 0;       // {arch}.expert_count (0: a dense FFN)
  uint32_t n_expert_used = 0;  // {arch}.expert_used_count: experts run per token (k)
  bool expert_norm_top_k = false;  // the k routing weights are renormalised to sum to 1
  uint32_t n_ctx_train = 0;    // {arch}.context_length
  float rms_eps = 1e-5f;       // {arch}.attention.layer_norm_rms_epsilon
  float rope_base = 10000.0f;  // {arch}.rope.freq_base
  float rope_freq_scale = 1;   // 1 / {arch}.rope.scaling.factor for linear scaling
  uint32_t rope_dims = 0;      // {arch}.rope.dimension_count (default head_dim)
  bool rope_neox = false;      // the architecture's RoPE layout: (i, i + d/2) pairs, else (2i, 2i+1)
  bool qkv_bias = false;       // blk.N.attn_{q,k,v}.bias present (qwen2)
  bool qk_norm = false;        // blk.N.attn_{q,k}_norm.weight present (qwen3)
  bool tied_output = false;    // no output.weight: the LM head is token_embd.weight
  bool post_norms = false;     // blk.N.post_attention_norm / post_ffw_norm present (gemma3)
  Glu glu = Glu::swiglu;       // the FFN's activation (the architecture's)
  float embd_scale = 1;        // the embedding row is multiplied by this (gemma: sqrt(n_embd))
  uint32_t sliding_window = 0; // {arch}.attention.sliding_window where the family reads it: a
                               // windowed layer's query at p attends to positions > p - window
                               // (0: none)
  SlidingLayers sliding{};     // the architecture's windowed/global layer pattern
  bool present[kLayerTensors] = {};  // which of the table's tensors the file has (every layer alike)

  bool has(LayerTensor t) const { return present[static_cast<size_t>(t)]; }

  // The attention window of layer l (0: the whole context).
  uint32_t window(uint32_t l) const {
    return sliding_window != 0 && (sliding.period == 0 || (l + 1) % sliding.period != 0) ? sliding_window : 0;
  }
  // RoPE base and scale of layer l: windowed layers of a family with their own base use it unscaled.
  float rope_base_of(uint32_t l) const { return window(l) && sliding.rope_base ? sliding.rope_base : rope_base; }
  float rope_freq_scale_of(uint32_t l) const { return window(l) && sliding.rope_base ? 1.0f : rope_freq_scale; }

  uint32_t n_q() const { return n_head * head_dim; }      // width of Q
  uint32_t n_kv() const { return n_head_kv * head_dim; }  // width of K and of V

  // Reads and validates; throws gguf::Error naming the file, key or tensor and the expectation.
  static ModelConfig from_gguf(const gguf::File& file);
};

// "blk.3.attn_q.weight"
std::string layer_tensor(uint32_t layer, const char* name);
// The GGUF name of a table tensor in a layer.
std::string layer_tensor(const ModelConfig& c, uint32_t layer, LayerTensor t);
// Its spec in the model's table.
const TensorSpec& tensor_spec(const ModelConfig& c, LayerTensor t);
// A dimension's value for this model.
uint64_t dim(const ModelConfig& c, Dim d);

}  // namespace chorus
