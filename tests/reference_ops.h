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

// z[i] = x[i] + y[i % y.size()]
std::vector<float> add(std::span<const float> x, std::span<const float> y);

// silu(g) * u and gelu_tanh(g) * u, element-wise.
std::vector<float> swiglu(std::span<const float> gate, std::span<const float> up);
std::vector<float> geglu(std::span<const float> gate, std::span<const float> up);

// out[i][:] = dequantize_row(W row ids[i]); W: n_rows rows of row_bytes(type, n) bytes.
std::vector<float> get_rows(GgmlType type, std::span<const uint8_t> w, uint32_t n, std::span<const uint32_t> ids);

}  // namespace chorus::ref
