#include "tests/reference_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "engine/quant.h"

namespace chorus::ref {

void kv_store(std::span<const float> src, uint32_t n_tokens, uint32_t p0, const KvShape& s, std::span<uint16_t> cache) {
  for (uint32_t i = 0; i < n_tokens; ++i)
    for (uint32_t h = 0; h < s.n_kv_heads; ++h)
      for (uint32_t d = 0; d < s.head_dim; ++d)
        cache[(size_t(h) * s.n_ctx + p0 + i) * s.head_dim + d] =
            fp32_to_fp16(src[(size_t(i) * s.n_kv_heads + h) * s.head_dim + d]);
}

std::vector<float> attention(std::span<const float> q, std::span<const float> k, std::span<const float> v,
                             const KvShape& s, uint32_t n_tokens, uint32_t n_q_heads, uint32_t p0, float scale,
                             uint32_t window) {
  const uint32_t D = s.head_dim;
  const uint32_t ratio = n_q_heads / s.n_kv_heads;
  std::vector<float> out(size_t(n_tokens) * n_q_heads * D);
  std::vector<double> score;
  for (uint32_t i = 0; i < n_tokens; ++i) {
    const uint32_t len = p0 + i + 1;
    const uint32_t first = window != 0 && len > window ? len - window : 0;  // first position attended
    score.assign(len, 0);
    for (uint32_t h = 0; h < n_q_heads; ++h) {
      const uint32_t g = h / ratio;
      const float* qr = &q[(size_t(i) * n_q_heads + h) * D];
      double mx = -std::numeric_limits<double>::infinity();
      for (uint32_t j = first; j < len; ++j) {
        const float* kr = &k[(size_t(g) * s.n_ctx + j) * D];
        double dot = 0;
        for (uint32_t d = 0; d < D; ++d) dot += double(qr[d]) * kr[d];
        score[j] = dot * scale;
        mx = std::max(mx, score[j]);
      }
      double sum = 0;
      for (uint32_t j = first; j < len; ++j) sum += score[j] = std::exp(score[j] - mx);
      for (uint32_t d = 0; d < D; ++d) {
        double acc = 0;
        for (uint32_t j = first; j < len; ++j) acc += score[j] * v[(size_t(g) * s.n_ctx + j) * D + d];
        out[(size_t(i) * n_q_heads + h) * D + d] = static_cast<float>(acc / sum);
      }
    }
  }
  return out;
}

}  // namespace chorus::ref
