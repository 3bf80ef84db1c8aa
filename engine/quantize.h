// engine/quantize.h — which format each tensor of a model gets when it is quantised
// (`chorus quantize`), and the row-by-row conversion.
//
// Owns: the named targets (plain formats and llama.cpp's mixes such as Q4_K_M, with their
// llama.cpp file-type numbers), the per-tensor type rules, the block-size fallback, and the
// conversion of one tensor (dequantise each row to f32, quantise it with quantize_row). The rules
// restate llama.cpp's llama_tensor_get_type (src/llama-quant.cpp) for dense, non-Falcon models
// without an importance matrix; docs/models.md ("Quantising") lists them. Pure functions: no
// files, no printing.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/quant.h"

namespace chorus {

// llama.cpp's mixes; None = every quantised tensor gets the target's base type.
enum class QuantMix { None, Q2_K, Q2_K_S, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K };

struct QuantTarget {
  const char* name;     // as typed on the command line: "Q4_K_M", "Q8_0", "F16"
  GgmlType base;        // the type most tensors get
  uint32_t file_type;   // llama.cpp's llama_ftype number, written as general.file_type
  QuantMix mix;
  const char* alias_of; // non-null: llama-quantize's alias (Q4_K means Q4_K_M)
};

// Every target in a fixed order (plain formats, then the mixes, then the aliases).
std::span<const QuantTarget> quant_targets();
// Case-insensitive lookup; nullptr when unknown. An alias returns its target.
const QuantTarget* find_quant_target(std::string_view name);

// One input tensor as the rules see it.
struct TensorDesc {
  std::string_view name;
  uint32_t n_dims;
  uint64_t ne0;         // elements per row
  GgmlType type;        // the input's type
};

struct TensorChoice {
  GgmlType type;        // the output type
  bool quantised;       // false: copied unchanged (1-D, norms, names not ending in .weight ...)
  bool fallback;        // the rule's type did not fit the row length; `wanted` is what it was
  GgmlType wanted;
};

struct QuantOptions {
  bool pure = false;    // llama-quantize --pure: no mix, output/token_embd get the base type too
  uint32_t n_gqa = 1;   // head_count / head_count_kv (the Q2_K mixes look at it)
};

// The output type of every tensor, in input order.
std::vector<TensorChoice> plan_quantisation(const QuantTarget& target, std::span<const TensorDesc> tensors,
                                            const QuantOptions& options);

// The type used when rows of ne0 elements are not a whole number of `t`'s blocks:
// Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0 (llama.cpp's), Q2_K and Q3_K -> Q4_0 (llama.cpp uses
// IQ4_NL, which chorus does not have), any other -> F16 (llama.cpp stops with "Unsupported tensor
// size"); and F16 again if the fallback does not fit either.
GgmlType fallback_type(GgmlType t, uint64_t ne0);

// Converts n_rows rows of ne0 elements from `from` (bytes in GGUF layout) to `to`. Throws
// std::invalid_argument naming the row if an input value is not finite and `to` is quantised.
std::vector<uint8_t> convert_rows(GgmlType from, std::span<const uint8_t> src, GgmlType to, uint64_t ne0, uint64_t n_rows);

}  // namespace chorus
