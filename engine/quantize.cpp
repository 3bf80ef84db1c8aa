#include "engine/quantize.h"

#include <cctype>
#include <cmath>
#include <stdexcept>

namespace chorus {

namespace {

using G = GgmlType;
using M = QuantMix;

// llama.cpp's llama_ftype numbers: F32 0, F16 1, Q4_0 2, Q4_1 3, Q8_0 7, Q5_0 8, Q5_1 9, Q2_K 10,
// Q3_K_S 11, Q3_K_M 12, Q3_K_L 13, Q4_K_S 14, Q4_K_M 15, Q5_K_S 16, Q5_K_M 17, Q6_K 18,
// Q2_K_S 21, BF16 32.
constexpr QuantTarget kTargets[] = {
    {"F32", G::F32, 0, M::None, nullptr},         {"F16", G::F16, 1, M::None, nullptr},
    {"BF16", G::BF16, 32, M::None, nullptr},      {"Q8_0", G::Q8_0, 7, M::None, nullptr},
    {"Q4_0", G::Q4_0, 2, M::None, nullptr},       {"Q4_1", G::Q4_1, 3, M::None, nullptr},
    {"Q5_0", G::Q5_0, 8, M::None, nullptr},       {"Q5_1", G::Q5_1, 9, M::None, nullptr},
    {"Q2_K", G::Q2_K, 10, M::Q2_K, nullptr},      {"Q2_K_S", G::Q2_K, 21, M::Q2_K_S, nullptr},
    {"Q3_K_S", G::Q3_K, 11, M::Q3_K_S, nullptr},  {"Q3_K_M", G::Q3_K, 12, M::Q3_K_M, nullptr},
    {"Q3_K_L", G::Q3_K, 13, M::Q3_K_L, nullptr},  {"Q4_K_S", G::Q4_K, 14, M::Q4_K_S, nullptr},
    {"Q4_K_M", G::Q4_K, 15, M::Q4_K_M, nullptr},  {"Q5_K_S", G::Q5_K, 16, M::Q5_K_S, nullptr},
    {"Q5_K_M", G::Q5_K, 17, M::Q5_K_M, nullptr},  {"Q6_K", G::Q6_K, 18, M::Q6_K, nullptr},
    {"Q3_K", G::Q3_K, 12, M::Q3_K_M, "Q3_K_M"},   {"Q4_K", G::Q4_K, 15, M::Q4_K_M, "Q4_K_M"},
    {"Q5_K", G::Q5_K, 17, M::Q5_K_M, "Q5_K_M"},
};

bool is_block_type(G t) { return t != G::F32 && t != G::F16 && t != G::BF16; }

bool contains(std::string_view s, std::string_view part) { return s.find(part) != std::string_view::npos; }
bool ends_with(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

bool fits(G t, uint64_t ne0) { return ne0 % type_traits(t).block_elems == 0; }

// llama.cpp's "use more bits" layers: the first and last eighth, and every third in between.
bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

// Whether llama.cpp quantises the tensor at all (otherwise it is copied unchanged).
bool is_quantisable(const TensorDesc& t) {
  return ends_with(t.name, "weight") && t.n_dims >= 2 && !contains(t.name, "_norm.weight") &&
         !contains(t.name, "ffn_gate_inp.weight") && t.name != "position_embd.weight" &&
         t.name != "token_types.weight";
}

struct MixState {
  int n_attn_v = 0, i_attn_v = 0;
  int n_ffn_down = 0, i_ffn_down = 0;
  bool has_output = false;
};

G mixed_type(const QuantTarget& target, const TensorDesc& t, const QuantOptions& opt, MixState& s) {
  G type = target.base;
  const M mix = target.mix;
  if (t.name == "output.weight" || (!s.has_output && t.name == "token_embd.weight")) {
    if (!fits(type, t.ne0)) type = G::Q8_0;
    else if (type != G::Q8_0) type = G::Q6_K;
  } else if (t.name == "token_embd.weight") {
    // the base type
  } else if (contains(t.name, "attn_v.weight")) {
    const int i = s.i_attn_v++, n = s.n_attn_v;
    if (mix == M::Q2_K) type = opt.n_gqa >= 4 ? G::Q4_K : G::Q3_K;
    else if (mix == M::Q2_K_S && opt.n_gqa >= 4) type = G::Q4_K;
    else if (mix == M::Q3_K_M) type = i < 2 ? G::Q5_K : G::Q4_K;
    else if (mix == M::Q3_K_L) type = G::Q5_K;
    else if ((mix == M::Q4_K_M || mix == M::Q5_K_M) && use_more_bits(i, n)) type = G::Q6_K;
    else if (mix == M::Q4_K_S && i < 4) type = G::Q5_K;
  } else if (contains(t.name, "ffn_down")) {
    const int i = s.i_ffn_down++, n = s.n_ffn_down;
    if (mix == M::Q2_K) type = G::Q3_K;
    else if (mix == M::Q2_K_S && i < n / 8) type = G::Q4_K;
    else if (mix == M::Q3_K_M) type = i < n / 16 ? G::Q5_K : G::Q4_K;
    else if (mix == M::Q3_K_L) type = G::Q5_K;
    else if ((mix == M::Q4_K_M || mix == M::Q5_K_M) && use_more_bits(i, n)) type = G::Q6_K;
    else if (mix == M::Q4_K_S && i < n / 8) type = G::Q5_K;
  } else if (contains(t.name, "attn_output.weight")) {
    if (mix == M::Q2_K) type = G::Q3_K;
    else if (mix == M::Q3_K_M) type = G::Q4_K;
    else if (mix == M::Q3_K_L) type = G::Q5_K;
  } else if (contains(t.name, "attn_qkv.weight")) {
    if (mix == M::Q3_K_M || mix == M::Q3_K_L) type = G::Q4_K;
    else if (mix == M::Q4_K_M) type = G::Q5_K;
    else if (mix == M::Q5_K_M) type = G::Q6_K;
  }
  return type;
}

}  // namespace

std::span<const QuantTarget> quant_targets() { return kTargets; }

const QuantTarget* find_quant_target(std::string_view name) {
  for (const QuantTarget& t : kTargets) {
    const std::string_view n = t.name;
    if (n.size() != name.size()) continue;
    bool same = true;
    for (size_t i = 0; i < n.size() && same; ++i)
      same = std::toupper(static_cast<unsigned char>(name[i])) == static_cast<unsigned char>(n[i]);
    if (same) return &t;
  }
  return nullptr;
}

GgmlType fallback_type(GgmlType t, uint64_t ne0) {
  G f = G::F16;
  switch (t) {
    case G::Q2_K:
    case G::Q3_K: f = G::Q4_0; break;
    case G::Q4_K: f = G::Q5_0; break;
    case G::Q5_K: f = G::Q5_1; break;
    case G::Q6_K: f = G::Q8_0; break;
    default: break;
  }
  return fits(f, ne0) ? f : G::F16;
}

std::vector<TensorChoice> plan_quantisation(const QuantTarget& target, std::span<const TensorDesc> tensors,
                                            const QuantOptions& options) {
  MixState s;
  for (const TensorDesc& t : tensors) {
    if (contains(t.name, "attn_v.weight") || contains(t.name, "attn_qkv.weight")) ++s.n_attn_v;
    if (contains(t.name, "ffn_down") && is_quantisable(t)) ++s.n_ffn_down;
    if (t.name == "output.weight") s.has_output = true;
  }
  std::vector<TensorChoice> out;
  out.reserve(tensors.size());
  for (const TensorDesc& t : tensors) {
    if (!is_quantisable(t)) {
      out.push_back({t.type, false, false, t.type});
      continue;
    }
    G wanted = target.base;
    if (is_block_type(target.base) && !options.pure) wanted = mixed_type(target, t, options, s);
    const bool fallback = !fits(wanted, t.ne0);
    out.push_back({fallback ? fallback_type(wanted, t.ne0) : wanted, true, fallback, wanted});
  }
  return out;
}

std::vector<uint8_t> convert_rows(GgmlType from, std::span<const uint8_t> src, GgmlType to, uint64_t ne0, uint64_t n_rows) {
  const auto in_rb = row_bytes(from, ne0), out_rb = row_bytes(to, ne0);
  if (!in_rb || !out_rb || src.size() != *in_rb * n_rows)
    throw std::invalid_argument("convert_rows: " + std::to_string(n_rows) + " rows of " + std::to_string(ne0) + " " +
                                type_traits(from).name + " elements do not match " + std::to_string(src.size()) +
                                " bytes, or do not convert to " + type_traits(to).name);
  std::vector<uint8_t> out(*out_rb * n_rows);
  std::vector<float> row(ne0);
  const auto n = static_cast<int64_t>(ne0);
  for (uint64_t r = 0; r < n_rows; ++r) {
    dequantize_row(from, src.data() + r * *in_rb, row.data(), n);
    if (is_block_type(to))
      for (uint64_t i = 0; i < ne0; ++i)
        if (!std::isfinite(row[i]))
          throw std::invalid_argument("row " + std::to_string(r) + ", element " + std::to_string(i) + " is " +
                                      std::to_string(row[i]) + ": " + type_traits(to).name +
                                      " can only encode finite values");
    quantize_row(to, row.data(), out.data() + r * *out_rb, n);
  }
  return out;
}

}  // namespace chorus
