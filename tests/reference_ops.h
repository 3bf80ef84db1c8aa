// tests/reference_ops.h — plain C++ references of the non-matrix kernels (engine/ops/ops.h),
// written for clarity and accumulated in double. Tensors are packed F32 unless stated.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/quant.h"

namespace chorus::ref {

// x: [rows][n]; weight: [n] or empty (no scaling).
std::vector<float> rms_norm(std::span<const float> x, std::span<const float> weight, uint32_t n, uint32_t rows,
                            float eps);

// x: [n_tokens][n_heads][head_dim]; positions: [n_tokens].
// theta_i = pos * freq_scale * freq_base^(-2i / n_dims); normal style rotates (2i, 2i+1),
// NeoX style (i, i + n_dims/2); dimensions past n_dims are copied.
std::vector<float> rope(std::span<const float> x, std::span<const int32_t> positions, uint32_t n_heads,
                        uint32_t head_dim, uint32_t n_dims, bool neox, float freq_base, float freq_scale);

// x: [rows][n]; mask: [tokens][n] or empty; row r is token r % tokens; causal masks j > n_past + t.
// A row with every value -inf gives zeros.
std::vector<float> softmax(std::span<const float> x, std::span<const float> mask, uint32_t n, uint32_t rows,
                           float scale, uint32_t tokens, bool causal, uint32_t n_past);

// z[i] = x[i] op y[i % y.size()]
std::vector<float> add(std::span<const float> x, std::span<const float> y);
std::vector<float> mul(std::span<const float> x, std::span<const float> y);
std::vector<float> scale(std::span<const float> x, float s);

// silu(g) * u and gelu_tanh(g) * u, element-wise.
std::vector<float> swiglu(std::span<const float> gate, std::span<const float> up);
std::vector<float> geglu(std::span<const float> gate, std::span<const float> up);

// out[i][:] = dequantize_row(W row ids[i]); W: n_rows rows of row_bytes(type, n) bytes.
std::vector<float> get_rows(GgmlType type, std::span<const uint8_t> w, uint32_t n, std::span<const uint32_t> ids);

}  // namespace chorus::ref
