// tests/reference_matmul.h — the plain C++ reference of the tiled matrix-matrix kernels
// (engine/ops/matmul.h), in double precision. Weights come dequantised by
// chorus::dequantize_row, so the only differences a kernel may show are its own rounding.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace chorus::ref {

// Y[m][n] = sum_k W[n][k] * X[m][k]; W is N rows of K floats, X is M rows of K floats, Y is M
// rows of N floats (all packed).
std::vector<float> matmul(std::span<const float> w, std::span<const float> x, uint32_t K, uint32_t N, uint32_t M);

}  // namespace chorus::ref
