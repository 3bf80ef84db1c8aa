#include "tests/reference_matmul.h"

namespace chorus::ref {

std::vector<float> matmul(std::span<const float> w, std::span<const float> x, uint32_t K, uint32_t N, uint32_t M) {
  std::vector<float> y(size_t(M) * N);
  for (uint32_t m = 0; m < M; ++m)
    for (uint32_t n = 0; n < N; ++n) {
      double acc = 0;
      for (uint32_t k = 0; k < K; ++k) acc += static_cast<double>(w[size_t(n) * K + k]) * x[size_t(m) * K + k];
      y[size_t(m) * N + n] = static_cast<float>(acc);
    }
  return y;
}

}  // namespace chorus::ref
