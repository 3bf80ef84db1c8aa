#include "tests/reference.h"

namespace chorus::ref {

std::vector<float> matvec(std::span<const float> w, std::span<const float> x, uint32_t K, uint32_t N) {
  std::vector<float> y(N);
  for (uint32_t n = 0; n < N; ++n) {
    double acc = 0;
    for (uint32_t k = 0; k < K; ++k) acc += static_cast<double>(w[size_t(n) * K + k]) * x[k];
    y[n] = static_cast<float>(acc);
  }
  return y;
}

}  // namespace chorus::ref
