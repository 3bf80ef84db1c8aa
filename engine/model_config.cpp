#include "engine/model_config.h"

#include <cmath>
#include <limits>

namespace chorus {
namespace {

[[noreturn]] void fail(const gguf::File& f, const std::string& what) { throw gguf::Error(f.path() + ": " + what); }

// Checks a weight's shape [ne0, ne1, ne2] against the configuration.
void expect_shape(const gguf::File& f, const std::string& name, uint64_t ne0, uint64_t ne1, uint64_t ne2 = 1) {
  const gguf::TensorInfo& t = f.require_tensor(name);
  if (t.ne[0] != ne0 || t.ne[1] != ne1 || t.ne[2] != ne2 || t.ne[3] != 1)
    fail(f, "tensor '" + name + "' has shape " + gguf::describe_tensor(t) + ", expected [" + std::to_string(ne0) +
                (ne1 > 1 || ne2 > 1 ? ", " + std::to_string(ne1) : std::string()) +
                (ne2 > 1 ? ", " + std::to_string(ne2) : std::string()) + "] from the model's metadata");
}

// A positive count no larger than `max` (bounds keep every product far from overflow).
uint32_t require_count(const gguf::File& f, const std::string& key, uint32_t max) {
  const uint32_t v = f.require_u32(key);
  if (v == 0 || v > max)
    fail(f, key + " is " + std::to_string(v) + "; expected 1.." + std::to_string(max));
  return v;
}

float require_positive_finite(const gguf::File& f, const std::string& key, float v) {
  if (!std::isfinite(v) || !(v > 0)) fail(f, key + " is " + std::to_string(v) + "; expected a positive finite number");
  return v;
}

}  // namespace

std::string layer_tensor(uint32_t layer, const char* name) { return "blk." + std::to_string(layer) + "." + name; }

const TensorSpec& tensor_spec(const ModelConfig& c, LayerTensor t) {
  for (const TensorSpec& s : c.layer_table) {
    if (s.id == t) return s;
    for (const Segment& g : s.segments)
      if (g.id == t) return s;
  }
  throw std::logic_error("architecture " + c.arch + " has no tensor of that role");
}

std::string layer_tensor(const ModelConfig& c, uint32_t layer, LayerTensor t) {
  return layer_tensor(layer, tensor_spec(c, t).name);
}

uint64_t dim(const ModelConfig& c, Dim d) {
  switch (d) {
    case Dim::one: return 1;
    case Dim::embd: return c.n_embd;
    case Dim::q: return c.n_q();
    case Dim::kv: return c.n_kv();
    case Dim::ff: return c.n_ff;
    case Dim::head_dim: return c.head_dim;
    case Dim::expert: return c.n_expert;
    case Dim::qkv: return uint64_t(c.n_q()) + 2 * uint64_t(c.n_kv());
    case Dim::ff2: return 2 * uint64_t(c.n_ff);
  }
  return 0;
}

ModelConfig ModelConfig::from_gguf(const gguf::File& f) {
  ModelConfig c;
  c.arch = std::string(f.require_string("general.architecture"));
  c.spec = find_architecture(c.arch);
  if (!c.spec) fail(f, "general.architecture is '" + c.arch + "'; chorus runs " + architecture_list());
  if (auto n = f.get_string("general.name")) c.name = std::string(*n);
  const std::string a = c.arch + ".";
  // Bounds far above any real model, low enough that no product of two overflows 64 bits and
  // n_head * head_dim fits 32 bits.
  c.n_embd = require_count(f, a + "embedding_length", 1u << 20);
  c.n_layer = require_count(f, a + "block_count", 4096);
  c.n_head = require_count(f, a + "attention.head_count", 1u << 16);
  c.n_head_kv = f.get_u32(a + "attention.head_count_kv").value_or(c.n_head);
  if (c.n_head_kv == 0 || c.n_head % c.n_head_kv != 0)
    fail(f, a + "attention.head_count_kv is " + std::to_string(c.n_head_kv) + "; expected a divisor of head_count (" +
                std::to_string(c.n_head) + ")");
  c.layer_table = c.spec->layer;
  const Experts& ex = c.spec->experts;
  const bool counted = !ex.layer.empty() && f.get_u32(a + "expert_count").value_or(0) > 0;
  if (ex.always || counted) {  // a mixture of experts: n_ff is each expert's FFN width
    if (counted) c.layer_table = ex.layer;
    c.n_expert = require_count(f, a + "expert_count", 4096);
    c.n_expert_used = require_count(f, a + "expert_used_count", 64);
    if (c.n_expert_used > c.n_expert)
      fail(f, a + "expert_used_count (" + std::to_string(c.n_expert_used) + ") is more than expert_count (" +
                  std::to_string(c.n_expert) + ")");
    c.n_ff = ex.always || f.get_u32(a + "expert_feed_forward_length")
                 ? require_count(f, a + "expert_feed_forward_length", 1u << 24)
                 : require_count(f, a + "feed_forward_length", 1u << 24);
    c.expert_norm_top_k = ex.norm_top_k;
  } else {
    c.n_ff = require_count(f, a + "feed_forward_length", 1u << 24);
  }
  c.n_ctx_train = f.require_u32(a + "context_length");
  if (c.n_ctx_train == 0) fail(f, a + "context_length is 0; expected the trained context length (at least 1)");
  c.rms_eps = require_positive_finite(f, a + "attention.layer_norm_rms_epsilon",
                                      f.require_f32(a + "attention.layer_norm_rms_epsilon"));
  c.rope_base = require_positive_finite(f, a + "rope.freq_base", f.get_f32(a + "rope.freq_base").value_or(10000.0f));
  c.head_dim = f.get_u32(a + "attention.key_length").value_or(c.n_embd / c.n_head);
  if (c.head_dim == 0 || c.head_dim % 2 != 0 || c.head_dim > 256)
    fail(f, "attention head size " + std::to_string(c.head_dim) + " is not an even number in 2..256");
  if (auto v = f.get_u32(a + "attention.value_length"); v && *v != c.head_dim)
    fail(f, a + "attention.value_length (" + std::to_string(*v) + ") differs from key_length; chorus needs them equal");
  c.rope_dims = f.get_u32(a + "rope.dimension_count").value_or(c.head_dim);
  if (c.rope_dims == 0 || c.rope_dims > c.head_dim || c.rope_dims % 2 != 0)
    fail(f, a + "rope.dimension_count (" + std::to_string(c.rope_dims) + ") must be even and at most the head size " +
                std::to_string(c.head_dim));
  const std::string scaling = std::string(f.get_string(a + "rope.scaling.type").value_or("none"));
  if (scaling == "linear") {
    const float factor = require_positive_finite(f, a + "rope.scaling.factor", f.require_f32(a + "rope.scaling.factor"));
    c.rope_freq_scale = 1.0f / factor;
  } else if (scaling != "none") {
    fail(f, a + "rope.scaling.type '" + scaling + "' is not supported (chorus supports none and linear)");
  }
  c.rope_neox = c.spec->rope_neox;
  c.glu = c.spec->glu;
  c.sliding = c.spec->sliding;
  if (c.spec->embd_scale_sqrt) c.embd_scale = std::sqrt(static_cast<float>(c.n_embd));
  if (c.sliding.enabled) c.sliding_window = f.get_u32(a + "attention.sliding_window").value_or(0);
  if (f.get_f32(a + "final_logit_softcapping") || f.get_f32(a + "attn_logit_softcapping"))
    fail(f, a + "final_logit_softcapping / attn_logit_softcapping is set; chorus does not apply logit soft-capping");

  const gguf::TensorInfo& embd = f.require_tensor("token_embd.weight");
  if (embd.n_dims != 2 || embd.ne[0] != c.n_embd || embd.ne[1] == 0 || embd.ne[1] > (1u << 24))
    fail(f, "tensor 'token_embd.weight' has shape " + gguf::describe_tensor(embd) + ", expected [" +
                std::to_string(c.n_embd) + ", n_vocab] with 1 <= n_vocab <= 16777216");
  c.n_vocab = static_cast<uint32_t>(embd.ne[1]);
  if (auto n = f.array_size("tokenizer.ggml.tokens"); n && *n != c.n_vocab)
    fail(f, "tokenizer.ggml.tokens has " + std::to_string(*n) + " tokens but tensor 'token_embd.weight' has " +
                std::to_string(c.n_vocab) + " rows; expected one row per token");
  c.tied_output = f.find_tensor("output.weight") == nullptr;
  if (!c.tied_output) expect_shape(f, "output.weight", c.n_embd, c.n_vocab);
  expect_shape(f, "output_norm.weight", c.n_embd, 1);
  for (const TensorSpec& s : c.layer_table) {
    const bool here = f.find_tensor(layer_tensor(0, s.name)) != nullptr;
    if (!here && !s.optional) f.require_tensor(layer_tensor(0, s.name));  // throws naming it
    c.present[static_cast<size_t>(s.id)] = here;
    for (const Segment& g : s.segments) c.present[static_cast<size_t>(g.id)] = here;
  }
  for (const char* name : {"rope_factors_long.weight", "rope_factors_short.weight", "rope_freqs.weight"})
    if (f.find_tensor(name))
      fail(f, "tensor '" + std::string(name) + "' asks for per-dimension RoPE factors (LongRoPE / Llama 3.1 scaling), "
              "which chorus does not apply");
  c.qkv_bias = c.has(LayerTensor::attn_q_bias);
  c.qk_norm = c.has(LayerTensor::attn_q_norm);
  c.post_norms = c.has(LayerTensor::post_attention_norm);
  if (c.has(LayerTensor::post_ffw_norm) != c.post_norms)
    fail(f, "blk.0 has one of post_attention_norm.weight and post_ffw_norm.weight but not both");
  if (c.has(LayerTensor::attn_k_bias) != c.qkv_bias || c.has(LayerTensor::attn_v_bias) != c.qkv_bias)
    fail(f, "blk.0 has some of attn_q.bias, attn_k.bias, attn_v.bias but not all three");
  if (c.has(LayerTensor::attn_k_norm) != c.qk_norm)
    fail(f, "blk.0 has one of attn_q_norm.weight and attn_k_norm.weight but not both");
  for (uint32_t l = 0; l < c.n_layer; ++l)
    for (const TensorSpec& s : c.layer_table) {
      const std::string name = layer_tensor(l, s.name);
      if (!c.has(s.id)) {
        if (f.find_tensor(name)) fail(f, "tensor '" + name + "' is present but absent from blk.0; expected every layer alike");
        continue;
      }
      expect_shape(f, name, dim(c, s.ne0), dim(c, s.ne1), dim(c, s.ne2));
    }
  return c;
}

}  // namespace chorus
