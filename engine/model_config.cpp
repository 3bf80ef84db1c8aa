#include "engine/model_config.h"

#include <cmath>

namespace chorus {
namespace {

[[noreturn]] void fail(const gguf::File& f, const std::string& what) { throw gguf::Error(f.path() + ": " + what); }

// Checks a 2-D weight's shape [ne0, ne1] against the configuration.
void expect_shape(const gguf::File& f, const std::string& name, uint64_t ne0, uint64_t ne1) {
  const gguf::TensorInfo& t = f.require_tensor(name);
  if (t.ne[0] != ne0 || t.ne[1] != ne1 || t.ne[2] != 1 || t.ne[3] != 1)
    fail(f, "tensor '" + name + "' has shape " + gguf::describe_tensor(t) + ", expected [" + std::to_string(ne0) +
                (ne1 > 1 ? ", " + std::to_string(ne1) : std::string()) + "] from the model's metadata");
}

}  // namespace

std::string layer_tensor(uint32_t layer, const char* name) { return "blk." + std::to_string(layer) + "." + name; }

ModelConfig ModelConfig::from_gguf(const gguf::File& f) {
  ModelConfig c;
  c.arch = std::string(f.require_string("general.architecture"));
  if (c.arch != "llama" && c.arch != "qwen2")
    fail(f, "general.architecture is '" + c.arch + "'; chorus runs 'llama' (Llama 2/3, Mistral, TinyLlama, SmolLM2) and 'qwen2'");
  if (auto n = f.get_string("general.name")) c.name = std::string(*n);
  const std::string a = c.arch + ".";
  c.n_embd = f.require_u32(a + "embedding_length");
  c.n_layer = f.require_u32(a + "block_count");
  c.n_head = f.require_u32(a + "attention.head_count");
  c.n_head_kv = f.get_u32(a + "attention.head_count_kv").value_or(c.n_head);
  c.n_ff = f.require_u32(a + "feed_forward_length");
  c.n_ctx_train = f.require_u32(a + "context_length");
  c.rms_eps = f.require_f32(a + "attention.layer_norm_rms_epsilon");
  c.rope_base = f.get_f32(a + "rope.freq_base").value_or(10000.0f);
  if (c.n_embd == 0 || c.n_layer == 0 || c.n_head == 0 || c.n_head_kv == 0 || c.n_ff == 0)
    fail(f, "embedding_length, block_count, head counts and feed_forward_length must be positive");
  if (c.n_head % c.n_head_kv != 0)
    fail(f, a + "attention.head_count (" + std::to_string(c.n_head) + ") is not a multiple of head_count_kv (" +
                std::to_string(c.n_head_kv) + ")");
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
    const float factor = f.require_f32(a + "rope.scaling.factor");
    if (!(factor > 0) || !std::isfinite(factor)) fail(f, a + "rope.scaling.factor must be a positive number");
    c.rope_freq_scale = 1.0f / factor;
  } else if (scaling != "none") {
    fail(f, a + "rope.scaling.type '" + scaling + "' is not supported (chorus supports none and linear)");
  }
  if (!(c.rms_eps > 0) || !(c.rope_base > 0)) fail(f, "rms epsilon and rope.freq_base must be positive");
  c.rope_neox = c.arch == "qwen2";

  const gguf::TensorInfo& embd = f.require_tensor("token_embd.weight");
  if (embd.n_dims != 2 || embd.ne[0] != c.n_embd)
    fail(f, "tensor 'token_embd.weight' has shape " + gguf::describe_tensor(embd) + ", expected [" +
                std::to_string(c.n_embd) + ", n_vocab]");
  c.n_vocab = static_cast<uint32_t>(embd.ne[1]);
  c.tied_output = f.find_tensor("output.weight") == nullptr;
  if (!c.tied_output) expect_shape(f, "output.weight", c.n_embd, c.n_vocab);
  expect_shape(f, "output_norm.weight", c.n_embd, 1);
  c.qkv_bias = f.find_tensor(layer_tensor(0, "attn_q.bias")) != nullptr;
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    expect_shape(f, layer_tensor(l, "attn_norm.weight"), c.n_embd, 1);
    expect_shape(f, layer_tensor(l, "attn_q.weight"), c.n_embd, c.n_q());
    expect_shape(f, layer_tensor(l, "attn_k.weight"), c.n_embd, c.n_kv());
    expect_shape(f, layer_tensor(l, "attn_v.weight"), c.n_embd, c.n_kv());
    expect_shape(f, layer_tensor(l, "attn_output.weight"), c.n_q(), c.n_embd);
    expect_shape(f, layer_tensor(l, "ffn_norm.weight"), c.n_embd, 1);
    expect_shape(f, layer_tensor(l, "ffn_gate.weight"), c.n_embd, c.n_ff);
    expect_shape(f, layer_tensor(l, "ffn_up.weight"), c.n_embd, c.n_ff);
    expect_shape(f, layer_tensor(l, "ffn_down.weight"), c.n_ff, c.n_embd);
    if (c.qkv_bias) {
      expect_shape(f, layer_tensor(l, "attn_q.bias"), c.n_q(), 1);
      expect_shape(f, layer_tensor(l, "attn_k.bias"), c.n_kv(), 1);
      expect_shape(f, layer_tensor(l, "attn_v.bias"), c.n_kv(), 1);
    }
  }
  return c;
}

}  // namespace chorus
