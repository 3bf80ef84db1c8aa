// split/plan.h — the split planner: pure functions, no Vulkan, no engine headers.
//
// Owns: deciding which part of every weight tensor each device holds, for the three split
// modes (DESIGN.md §3–4):
//   none   — everything on the main device;
//   layer  — contiguous whole layers per device by ratio; the embedding lives with layer 0,
//            output_norm and the LM head with the last layer; the hidden state moves at
//            each device boundary (`Plan::transfers`);
//   tensor — Megatron style, every device runs every layer on its shard: attn_q/k/v split
//            by output rows (ne1) on whole heads, attn_output by its input (ne0/K) on the
//            same heads; ffn_gate/up by output rows and ffn_down by K on one n_ff range;
//            the LM head by vocabulary rows; norms and the embedding replicated.
// Also: each device's weight bytes from a plan (`weight_bytes`), its KV-cache bytes, and a
// human-readable description (`describe`).
//
// Alignment. Output-row (column) splits need no quantisation alignment: GGUF rows are
// independent. K (input) splits of attn_output and ffn_down cut every row, so their
// boundaries must fall on whole quantisation blocks. The attention unit is therefore the
// smallest number of heads whose width is a whole number of attn_output blocks; when that
// is more than one head the boundaries move in steps of that many heads, to the nearest
// allowed multiple of the requested share, and the plan says so in `warnings`. Every
// dimension is divided by split::partition: shards tile it exactly once, boundaries are
// multiples of the unit (the last shard absorbs a remainder that is not a whole unit), and
// each shard is within one unit of its exact share.
//
// KV heads. With whole KV heads (the default when there are at least as many attention
// units as devices) each device gets a contiguous range of KV heads and the Q heads that
// use them (q head h uses kv head h / (n_head / n_head_kv)); nothing is duplicated. When
// there are fewer KV-head units than devices, the Q heads are divided instead and a KV head
// whose Q heads land on several devices is shared: each of those devices holds a full copy
// of that KV head's K/V weight rows (and bias) and its own KV-cache copy, and computes K/V
// for it redundantly (`Plan::kv_replicas`, reported in `warnings`).
//
// A device whose share of some dimension rounds to nothing keeps an empty range for it (it
// skips that op and adds nothing to that reduce); devices holding nothing at all are listed
// in `Plan::empty_devices`. Nothing is silently dropped.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "split/partition.h"

namespace chorus::split {

enum class SplitMode { none, layer, tensor, hybrid };

// "none" | "layer" | "tensor" | "hybrid"; throws std::invalid_argument naming the accepted values.
SplitMode parse_split_mode(const std::string& s);
const char* to_string(SplitMode m);

// How one weight matrix is stored: ne0 = K (input width, contiguous), ne1 = output rows.
struct MatrixFormat {
  uint32_t block = 1;        // elements per quantisation block along K: 1 (F32/F16/BF16), 32, 256
  uint32_t block_bytes = 4;  // bytes per block (F32: 4, F16: 2, Q4_0: 18, Q4_1: 20, Q4_K: 144, ...)
  uint32_t row_align = 1;    // output-row splits cut ne1 only at multiples of this (repacked layouts)
  uint32_t row_bytes_align = 1;  // a row (or a K slice's row) on the device is padded to a multiple of this
};

// The formats of one layer's matrices (they may differ per layer, e.g. Q4_K_M's Q6_K layers).
struct LayerFormats {
  MatrixFormat attn_q;       // [n_embd -> n_head * head_dim]
  MatrixFormat attn_k;       // [n_embd -> n_head_kv * head_dim]
  MatrixFormat attn_v;       // [n_embd -> n_head_kv * head_dim]
  MatrixFormat attn_output;  // [n_head * head_dim -> n_embd]
  MatrixFormat ffn_gate;     // [n_embd -> n_ff]
  MatrixFormat ffn_up;       // [n_embd -> n_ff]
  MatrixFormat ffn_down;     // [n_ff -> n_embd]
  MatrixFormat ffn_gate_inp; // [n_embd -> n_expert], the router of a mixture of experts (replicated)
};

// A model's shape: everything the planner needs, nothing else.
struct ModelShape {
  uint32_t n_layer = 0;
  uint32_t n_embd = 0;
  uint32_t n_head = 0;
  uint32_t n_head_kv = 0;  // divides n_head
  uint32_t head_dim = 0;
  uint32_t n_ff = 0;         // with experts: each expert's FFN width
  uint32_t n_vocab = 0;
  uint32_t n_expert = 0;     // a mixture of experts (0: dense): ffn_gate/up/down are n_expert
                             // matrices each, every one cut by the one ffn range; the router is
                             // held whole by every device with an ffn range
  uint32_t n_expert_used = 0;  // experts run per token
  bool qkv_bias = false;     // F32 biases on attn_q/k/v (qwen2), split with their rows
  bool qk_norm = false;      // F32 [head_dim] RMSNorm weights of Q and K heads (qwen3), replicated
  bool post_norms = false;   // F32 [n_embd] RMSNorms of both reduced block outputs (gemma3), on
                             // every device running the layer
  bool tied_output = false;  // no output.weight: the LM head is token_embd
  MatrixFormat token_embd;   // [n_embd -> n_vocab] (get_rows; the LM head when tied)
  MatrixFormat output;       // [n_embd -> n_vocab]; ignored when tied_output
  std::vector<LayerFormats> layers;  // n_layer entries

  uint32_t group() const { return n_head / n_head_kv; }  // Q heads per KV head
  // Sets every layer's formats to `f` (n_layer must be set).
  void set_all_layers(const LayerFormats& f) { layers.assign(n_layer, f); }
};

// How KV heads are assigned in tensor mode (see the header comment).
enum class KvSharing {
  automatic,  // whole KV heads unless there are fewer KV-head units than devices
  never,      // always whole KV heads (devices beyond the units get no attention)
  always,     // always divide Q heads, sharing KV heads where a group is cut
};

struct SplitRequest {
  SplitMode mode = SplitMode::none;
  std::vector<double> ratios;  // one positive finite number per device (normalised here)
  uint32_t main_device = 0;    // `none` puts everything here
  KvSharing kv_sharing = KvSharing::automatic;
  // Hybrid: each device's group (0, 1, 2 ... in device order, a group's devices together): a
  // tensor split inside each group, the groups one after another over the layers.
  std::vector<uint32_t> groups;
};

// One device's part. Ranges are half-open; an empty range means "none of it".
struct DeviceShard {
  double ratio = 0;    // requested share, normalised (sums to 1 over the devices)
  Range layers;        // layers it runs
  // Within each of its layers:
  Range q_heads;       // Q heads it computes attention for
  Range kv_heads;      // KV heads it holds (K/V rows, KV cache); [q0 / g, ceil(q1 / g))
  Range q_rows;        // rows of attn_q (+ bias) = K range of attn_output = q_heads × head_dim
  Range kv_rows;       // rows of attn_k/attn_v (+ bias) = KV-cache columns = kv_heads × head_dim
  Range ffn;           // rows of ffn_gate/ffn_up = K range of ffn_down
  // Outside the layers:
  Range vocab;         // rows of the LM head it computes logits for
  bool embedding = false;    // holds the whole token_embd for the lookup
  bool output_norm = false;  // holds output_norm (whenever it has vocab rows)

  // Offset of its first Q head within its first KV head's group: local q head j uses local
  // kv head (j + q_skew) / group. Non-zero only when a shared KV head's group is cut.
  uint32_t q_skew(uint32_t group) const { return static_cast<uint32_t>(q_heads.begin - kv_heads.begin * group); }
  bool empty() const { return layers.size() == 0 && vocab.size() == 0 && !embedding; }
};

// Where the hidden state moves between devices in layer mode (before layer `layer`).
struct LayerTransfer {
  uint32_t layer = 0;        // first layer on `to`
  uint32_t from = 0;
  uint32_t to = 0;
};

struct Plan {
  SplitMode mode = SplitMode::none;
  uint32_t main_device = 0;
  ModelShape model;
  std::vector<DeviceShard> devices;
  // Tensor mode: the units every dimension was divided in.
  bool kv_shared = false;         // Q heads divided (KV heads may be shared) instead of KV heads
  uint32_t head_unit = 1;         // in KV heads (whole-KV mode) or Q heads (shared mode)
  uint32_t ffn_unit = 1;          // in n_ff elements
  uint32_t vocab_unit = 1;        // in vocabulary rows
  std::vector<uint32_t> kv_replicas;      // per KV head: how many devices hold it (tensor mode)
  std::vector<LayerTransfer> transfers;   // layer mode: hidden-state moves, in layer order
  uint32_t embedding_device = 0;          // layer/none: the device holding token_embd
  uint32_t lm_head_device = 0;            // layer/none: the device holding output_norm + LM head
  std::vector<uint32_t> empty_devices;    // devices holding nothing (rounded to nothing, or unused)
  std::vector<std::string> warnings;      // every fallback and rounding-to-nothing, in sentences
  std::vector<uint32_t> groups;           // hybrid: each device's group
};

// Plans a split. Throws std::invalid_argument naming the defect: inconsistent shape (n_head
// not a multiple of n_head_kv, a K width that is not whole blocks, a row_align of Q/K/V that
// does not divide head_dim, layers.size() != n_layer), bad ratios, main device out of range.
Plan plan_split(const ModelShape& model, const SplitRequest& request);

// Weight bytes one device holds, by family.
struct DeviceBytes {
  uint64_t attention = 0;  // attn_q/k/v rows (+ F32 bias), attn_output K slice, over its layers
  uint64_t ffn = 0;        // ffn_gate/up rows and ffn_down K slice (of every expert), over its layers
  uint64_t router = 0;     // the whole MoE router (ffn_gate_inp) of its layers with an ffn range
  uint64_t lm_head = 0;    // output rows; 0 when tied and the whole token_embd is already held
  uint64_t embedding = 0;  // whole token_embd
  uint64_t norms = 0;      // F32 RMSNorm weights (attn/ffn norm and post-norms of its layers, output_norm)
  uint64_t split() const { return attention + ffn + lm_head; }  // the parts divided between devices
  uint64_t total() const { return split() + embedding + norms + router; }
  bool operator==(const DeviceBytes&) const = default;
};

// Bytes of each device's shard (index = device), computed from the plan's ranges.
std::vector<DeviceBytes> weight_bytes(const Plan& plan);
// Bytes of one whole copy of the model, by the same families.
DeviceBytes model_bytes(const ModelShape& model);
// KV-cache bytes of one device for `n_ctx` positions of one sequence (K and V, its layers,
// its KV rows), `elem_bytes` per element (2 for F16).
uint64_t kv_cache_bytes(const Plan& plan, uint32_t device, uint64_t n_ctx, uint32_t elem_bytes);

// One line for the mode, one per device (layers, heads, kv heads, ffn range, vocab range,
// bytes), then the warnings, each on its own line.
std::string describe(const Plan& plan);

}  // namespace chorus::split
