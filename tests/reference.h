// tests/reference.h — plain C++ reference implementations of every kernel, written for
// clarity, used by the GPU tests. Each op family's helper adds its functions here in its own
// section (matvec/matmul use chorus::dequantize_row from engine/quant.h).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace chorus::ref {

// y[n] = sum_k W[n][k] * x[k], W given dequantised as N rows of K floats.
std::vector<float> matvec(std::span<const float> w, std::span<const float> x, uint32_t K, uint32_t N);

}  // namespace chorus::ref
