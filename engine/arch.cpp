#include "engine/arch.h"

#include <array>

namespace chorus {
namespace {

using L = LayerTensor;

// Tables built from parts: a constexpr concatenation.
template <size_t A, size_t B>
constexpr std::array<TensorSpec, A + B> join(const std::array<TensorSpec, A>& a, const std::array<TensorSpec, B>& b) {
  std::array<TensorSpec, A + B> out{};
  for (size_t i = 0; i < A; ++i) out[i] = a[i];
  for (size_t i = 0; i < B; ++i) out[A + i] = b[i];
  return out;
}

// The llama layer: pre-norm attention and SwiGLU FFN. Q/K/V biases (qwen2) and QK-norm
// (qwen3) are optional tensors: a model has them or not, in every layer.
constexpr std::array<TensorSpec, 10> kLlamaAttention{{
    {L::attn_norm, "attn_norm.weight", Dim::embd, Dim::one, Cut::whole, false},
    {L::attn_q, "attn_q.weight", Dim::embd, Dim::q, Cut::q_rows, false},
    {L::attn_k, "attn_k.weight", Dim::embd, Dim::kv, Cut::kv_rows, false},
    {L::attn_v, "attn_v.weight", Dim::embd, Dim::kv, Cut::kv_rows, false},
    {L::attn_q_bias, "attn_q.bias", Dim::q, Dim::one, Cut::q_rows, true},
    {L::attn_k_bias, "attn_k.bias", Dim::kv, Dim::one, Cut::kv_rows, true},
    {L::attn_v_bias, "attn_v.bias", Dim::kv, Dim::one, Cut::kv_rows, true},
    {L::attn_q_norm, "attn_q_norm.weight", Dim::head_dim, Dim::one, Cut::whole, true},
    {L::attn_k_norm, "attn_k_norm.weight", Dim::head_dim, Dim::one, Cut::whole, true},
    {L::attn_output, "attn_output.weight", Dim::q, Dim::embd, Cut::q_cols, false},
}};
constexpr auto kLlamaLayer = join(kLlamaAttention, std::array<TensorSpec, 4>{{
    {L::ffn_norm, "ffn_norm.weight", Dim::embd, Dim::one, Cut::whole, false},
    {L::ffn_gate, "ffn_gate.weight", Dim::embd, Dim::ff, Cut::ffn_rows, false},
    {L::ffn_up, "ffn_up.weight", Dim::embd, Dim::ff, Cut::ffn_rows, false},
    {L::ffn_down, "ffn_down.weight", Dim::ff, Dim::embd, Cut::ffn_cols, false},
}});

// A mixture of experts in place of the FFN: the router (held whole by every device that runs the
// FFN, so all choose the same experts) and three expert stacks, each expert cut between devices
// like a dense FFN.
constexpr std::array<TensorSpec, 5> kExpertFfn{{
    {L::ffn_norm, "ffn_norm.weight", Dim::embd, Dim::one, Cut::whole, false},
    {L::ffn_gate_inp, "ffn_gate_inp.weight", Dim::embd, Dim::expert, Cut::whole, false},
    {L::ffn_gate, "ffn_gate_exps.weight", Dim::embd, Dim::ff, Cut::ffn_rows, false, {}, Dim::expert},
    {L::ffn_up, "ffn_up_exps.weight", Dim::embd, Dim::ff, Cut::ffn_rows, false, {}, Dim::expert},
    {L::ffn_down, "ffn_down_exps.weight", Dim::ff, Dim::embd, Cut::ffn_cols, false, {}, Dim::expert},
}};
// Mixtral: llama's attention and the experts (llama.cpp's merged-expert layout).
constexpr auto kLlamaMoeLayer = join(kLlamaAttention, kExpertFfn);

// Pre-norm attention with QK-norm required and no biases (gemma3, qwen3moe).
constexpr std::array<TensorSpec, 7> kQkNormAttention{{
    {L::attn_norm, "attn_norm.weight", Dim::embd, Dim::one, Cut::whole, false},
    {L::attn_q, "attn_q.weight", Dim::embd, Dim::q, Cut::q_rows, false},
    {L::attn_k, "attn_k.weight", Dim::embd, Dim::kv, Cut::kv_rows, false},
    {L::attn_v, "attn_v.weight", Dim::embd, Dim::kv, Cut::kv_rows, false},
    {L::attn_q_norm, "attn_q_norm.weight", Dim::head_dim, Dim::one, Cut::whole, false},
    {L::attn_k_norm, "attn_k_norm.weight", Dim::head_dim, Dim::one, Cut::whole, false},
    {L::attn_output, "attn_output.weight", Dim::q, Dim::embd, Cut::q_cols, false},
}};

// The gemma3 layer: the llama layer with QK-norm, plus an RMSNorm of each block's reduced
// output before it joins the residual (post_attention_norm, post_ffw_norm).
constexpr auto kGemma3Layer = join(kQkNormAttention, std::array<TensorSpec, 6>{{
    {L::post_attention_norm, "post_attention_norm.weight", Dim::embd, Dim::one, Cut::reduced, false},
    {L::ffn_norm, "ffn_norm.weight", Dim::embd, Dim::one, Cut::whole, false},
    {L::ffn_gate, "ffn_gate.weight", Dim::embd, Dim::ff, Cut::ffn_rows, false},
    {L::ffn_up, "ffn_up.weight", Dim::embd, Dim::ff, Cut::ffn_rows, false},
    {L::ffn_down, "ffn_down.weight", Dim::ff, Dim::embd, Cut::ffn_cols, false},
    {L::post_ffw_norm, "post_ffw_norm.weight", Dim::embd, Dim::one, Cut::reduced, false},
}});

// The phi3 layer: attn_qkv holds Q, K and V rows, ffn_up holds gate then up rows; each is cut
// segment by segment (a device's Q heads, KV heads and FFN range of each part).
constexpr Segment kQkv[] = {{L::attn_q, Dim::q, Cut::q_rows}, {L::attn_k, Dim::kv, Cut::kv_rows},
                            {L::attn_v, Dim::kv, Cut::kv_rows}};
constexpr Segment kGateUp[] = {{L::ffn_gate, Dim::ff, Cut::ffn_rows}, {L::ffn_up, Dim::ff, Cut::ffn_rows}};
constexpr std::array<TensorSpec, 6> kPhi3Layer{{
    {L::attn_norm, "attn_norm.weight", Dim::embd, Dim::one, Cut::whole, false},
    {L::attn_q, "attn_qkv.weight", Dim::embd, Dim::qkv, Cut::q_rows, false, kQkv},
    {L::attn_output, "attn_output.weight", Dim::q, Dim::embd, Cut::q_cols, false},
    {L::ffn_norm, "ffn_norm.weight", Dim::embd, Dim::one, Cut::whole, false},
    {L::ffn_gate, "ffn_up.weight", Dim::embd, Dim::ff2, Cut::ffn_rows, false, kGateUp},
    {L::ffn_down, "ffn_down.weight", Dim::ff, Dim::embd, Cut::ffn_cols, false},
}};

// The qwen3moe layer: qwen3's attention (QK-norm, no biases) and a mixture of experts.
constexpr auto kQwen3MoeLayer = join(kQkNormAttention, kExpertFfn);

constexpr Architecture kArchitectures[] = {
    // Mistral's sliding window ({arch}.attention.sliding_window) applies to every layer. Mixtral
    // (llama.expert_count > 0): the experts in place of the FFN, top-k renormalised.
    {"llama", "Llama 2/3, Mistral, Mixtral, TinyLlama, SmolLM2", false, kLlamaLayer, Glu::swiglu, false, {true, 0, 0},
     {false, kLlamaMoeLayer, true}},
    {"qwen2", "Qwen 2/2.5: Q/K/V biases, NeoX RoPE", true, kLlamaLayer},
    {"qwen3", "Qwen 3 dense: QK-norm, NeoX RoPE", true, kLlamaLayer},
    // Gemma 3: GeGLU, embedding scaled by sqrt(n_embd), post-norms, QK-norm, five windowed
    // layers (RoPE base 10000) to each global one (RoPE base from the metadata).
    {"gemma3", "Gemma 3: GeGLU, post-norms, sliding window", true, kGemma3Layer, Glu::geglu, true, {true, 6, 10000.0f}},
    // Phi-3: fused QKV and gate/up, NeoX RoPE. Its sliding_window metadata is ignored, as
    // llama.cpp ignores it for phi3.
    {"phi3", "Phi-3 mini/medium: fused QKV and gate/up", true, kPhi3Layer},
    // Qwen 3 MoE (30B-A3B, 235B-A22B): qwen3 attention, top-k of a softmax over the experts,
    // renormalised (norm_top_k_prob), no shared expert.
    {"qwen3moe", "Qwen 3 MoE: QK-norm, NeoX RoPE, top-k experts", true, kQwen3MoeLayer, Glu::swiglu, false, {}, {true, {}, true}},
};

}  // namespace

const Architecture* find_architecture(std::string_view name) {
  for (const Architecture& a : kArchitectures)
    if (name == a.name) return &a;
  return nullptr;
}

std::string architecture_list() {
  std::string out;
  for (const Architecture& a : kArchitectures) out += (out.empty() ? "" : ", ") + std::string(a.name) + " (" + a.examples + ")";
  return out;
}

}  // namespace chorus
