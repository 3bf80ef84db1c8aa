#include "tests/reference_ops.h"

#include <cmath>
#include <limits>

namespace chorus::ref {

std::vector<float> rms_norm(std::span<const float> x, std::span<const float> weight, uint32_t n, uint32_t rows,
                            float eps) {
  std::vector<float> y(size_t{n} * rows);
  for (size_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (size_t i = 0; i < n; ++i) ss += double(x[r * n + i]) * x[r * n + i];
    const double inv = 1.0 / std::sqrt(ss / n + eps);
    for (size_t i = 0; i < n; ++i)
      y[r * n + i] = static_cast<float>(x[r * n + i] * inv * (weight.empty() ? 1.0 : double(weight[i])));
  }
  return y;
}

std::vector<float> rope(std::span<const float> x, std::span<const int32_t> positions, uint32_t n_heads,
                        uint32_t head_dim, uint32_t n_dims, bool neox, float freq_base, float freq_scale) {
  std::vector<float> y(x.begin(), x.end());
  for (size_t t = 0; t < positions.size(); ++t)
    for (size_t h = 0; h < n_heads; ++h) {
      const size_t b = (t * n_heads + h) * head_dim;
      for (size_t i = 0; i < n_dims / 2; ++i) {
        const double theta =
            double(positions[t]) * freq_scale * std::pow(double(freq_base), -2.0 * double(i) / n_dims);
        const size_t i0 = neox ? i : 2 * i, i1 = neox ? i + n_dims / 2 : 2 * i + 1;
        const double a = x[b + i0], c = x[b + i1];
        y[b + i0] = static_cast<float>(a * std::cos(theta) - c * std::sin(theta));
        y[b + i1] = static_cast<float>(a * std::sin(theta) + c * std::cos(theta));
      }
    }
  return y;
}

std::vector<float> add(std::span<const float> x, std::span<const float> y) {
  std::vector<float> z(x.size());
  for (size_t i = 0; i < x.size(); ++i) z[i] = x[i] + y[i % y.size()];
  return z;
}

std::vector<float> swiglu(std::span<const float> gate, std::span<const float> up) {
  std::vector<float> z(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) {
    const double g = gate[i];
    z[i] = static_cast<float>(g / (1.0 + std::exp(-g)) * up[i]);
  }
  return z;
}

std::vector<float> geglu(std::span<const float> gate, std::span<const float> up) {
  const double k = std::sqrt(2.0 / 3.14159265358979323846);
  std::vector<float> z(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) {
    const double g = gate[i];
    z[i] = static_cast<float>(0.5 * g * (1.0 + std::tanh(k * (g + 0.044715 * g * g * g))) * up[i]);
  }
  return z;
}

std::vector<float> get_rows(GgmlType type, std::span<const uint8_t> w, uint32_t n, std::span<const uint32_t> ids) {
  const uint64_t rb = *row_bytes(type, n);
  std::vector<float> out(size_t{n} * ids.size());
  for (size_t i = 0; i < ids.size(); ++i) dequantize_row(type, w.data() + ids[i] * rb, out.data() + i * n, n);
  return out;
}

}  // namespace chorus::ref
