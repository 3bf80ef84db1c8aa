// engine/arch.h — the model architectures chorus runs, as data.
//
// Owns: one table per architecture naming every per-layer tensor, its shape in terms of the
// model's dimensions, how it is divided between devices, and whether it may be absent; and
// the architecture's fixed features (RoPE layout). Shape validation (model_config.cpp), the
// uploads (model.cpp), the planner's byte counts (model_shape) and the forward pass's
// optional steps (a bias add, a QK-norm) all derive from these tables. A new family of the
// llama kind is a table here plus the ops it needs (docs/architecture.md, "Adding an
// architecture"); the forward pass reads which optional tensors a model has, never its name.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace chorus {

// The per-layer tensors the forward pass knows by name. GGUF names: "blk.N." + TensorSpec::name.
enum class LayerTensor : uint8_t {
  attn_norm,    // [n_embd]            RMSNorm weight before attention
  attn_q,       // [n_embd, n_q]
  attn_k,       // [n_embd, n_kv]
  attn_v,       // [n_embd, n_kv]
  attn_q_bias,  // [n_q]
  attn_k_bias,  // [n_kv]
  attn_v_bias,  // [n_kv]
  attn_q_norm,  // [head_dim]          RMSNorm of every Q head before RoPE (QK-norm)
  attn_k_norm,  // [head_dim]          RMSNorm of every K head before RoPE
  attn_output,  // [n_q, n_embd]
  post_attention_norm,  // [n_embd]    RMSNorm of the reduced attention output (gemma3)
  ffn_norm,     // [n_embd]
  ffn_gate_inp, // [n_embd, n_expert]  the router of a mixture of experts (qwen3moe)
  ffn_gate,     // [n_embd, n_ff]      (an expert family: [n_embd, n_ff, n_expert], every expert's)
  ffn_up,       // [n_embd, n_ff]      (likewise)
  ffn_down,     // [n_ff, n_embd]      (likewise [n_ff, n_embd, n_expert])
  post_ffw_norm,  // [n_embd]          RMSNorm of the reduced FFN output (gemma3)
  count
};
constexpr size_t kLayerTensors = static_cast<size_t>(LayerTensor::count);

// A dimension of a tensor, in the model's terms.
enum class Dim : uint8_t {
  one, embd, q, kv, ff, head_dim,
  expert,  // n_expert: the router's rows, the expert stacks' ne[2]
  qkv,     // q + 2 kv: a fused [Q|K|V] tensor's rows (phi3 attn_qkv)
  ff2,     // 2 ff: a fused [gate|up] tensor's rows (phi3 ffn_up)
};

// How a tensor is divided between the devices of a tensor split (a layer split moves whole
// layers, so every tensor of a layer goes with it).
enum class Cut : uint8_t {
  whole,     // every device with a share of the tensor's block has all of it (norm weights, the
             // MoE router)
  reduced,   // every device running the layer has all of it, even with no share of the
             // block: it applies to the reduced sum (post-norms)
  q_rows,    // output rows (or vector elements) by Q head: attn_q and its bias
  kv_rows,   // output rows by KV head: attn_k, attn_v and their biases
  q_cols,    // input columns by Q head, whole quantisation blocks: attn_output
  ffn_rows,  // output rows by FFN range: ffn_gate, ffn_up
  ffn_cols,  // input columns by FFN range: ffn_down
};

// One part of a fused tensor: the rows of one role, cut between devices as that role is.
struct Segment {
  LayerTensor id;
  Dim rows;
  Cut cut;
};

struct TensorSpec {
  LayerTensor id;
  const char* name;   // "attn_q.weight"
  Dim ne0, ne1;       // GGUF ne[0] (contiguous) and ne[1] (Dim::one for a vector)
  Cut cut;
  bool optional;      // may be absent; then absent in every layer
  // A fused tensor: its rows are these roles' rows one after another ([Q|K|V], [gate|up]).
  // Each device loads its rows of every segment into that role's slot, so the forward pass
  // sees separate tensors; `id` and `cut` are the first segment's.
  std::span<const Segment> segments = {};
  // GGUF ne[2]: Dim::expert for a stack of experts ([ne0, ne1] per expert, one after another),
  // each expert cut by `cut` alike (every device holds its rows or K slice of every expert).
  Dim ne2 = Dim::one;
};

// The FFN's gated activation.
enum class Glu : uint8_t {
  swiglu,  // silu(gate) * up
  geglu,   // gelu_tanh(gate) * up
};

// Sliding-window attention layered with global attention (gemma3): which layers use the
// window and what RoPE base those layers use. The window itself is metadata
// ({arch}.attention.sliding_window).
struct SlidingLayers {
  bool enabled = false;    // the family reads {arch}.attention.sliding_window (else ignores it)
  uint32_t period = 0;     // 0: every layer uses the window when there is one; else layer l is
                           // global when (l + 1) % period == 0 and windowed otherwise
  float rope_base = 0;     // RoPE base of windowed layers, which then use no RoPE scaling
                           // (0: the global layers' base and scaling)
};

// A mixture of experts in place of the FFN (qwen3moe, Mixtral): the router ffn_gate_inp scores
// every expert, a softmax over all of them gives probabilities, the top `expert_used_count` are
// run and their outputs summed weighted by those probabilities (renormalised to sum to 1 when
// `norm_top_k`). Metadata: {arch}.expert_count, {arch}.expert_used_count and the experts' FFN
// width {arch}.expert_feed_forward_length (ModelConfig::n_ff; a family that is not always one
// falls back to feed_forward_length, as Mixtral's files have it).
struct Experts {
  bool always = false;  // every model of the family is one (qwen3moe): Architecture::layer is its table
  // Or: the layer table of the family's models whose file declares {arch}.expert_count > 0
  // (Mixtral in llama); empty: none are.
  std::span<const TensorSpec> layer = {};
  bool norm_top_k = true;
};

struct Architecture {
  const char* name;       // general.architecture
  const char* examples;   // for messages: "Llama 2/3, Mistral, SmolLM2"
  bool rope_neox;         // RoPE rotates pairs (i, i + d/2) instead of (2i, 2i+1)
  std::span<const TensorSpec> layer;
  Glu glu = Glu::swiglu;
  bool embd_scale_sqrt = false;  // the embedding is multiplied by sqrt(n_embd) (gemma)
  SlidingLayers sliding{};
  Experts experts{};
};

// The architecture of that name, or null.
const Architecture* find_architecture(std::string_view name);
// "llama (Llama 2/3, ...), qwen2 (...), ..." for messages.
std::string architecture_list();

}  // namespace chorus
