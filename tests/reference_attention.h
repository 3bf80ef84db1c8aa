// tests/reference_attention.h — plain C++ references of the attention family: the KV-cache
// store (f32 -> f16 rows in the [head][position][dim] layout of engine/ops/attention.h),
// causal grouped-query attention (double accumulation, exact softmax).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace chorus::ref {

struct KvShape {
  uint32_t n_kv_heads, n_ctx, head_dim;
};

// Writes src rows (f32 [n_tokens][n_kv_heads][head_dim]) as f16 bits into cache
// ([n_kv_heads][n_ctx][head_dim]) at positions p0.., rounding to nearest even.
void kv_store(std::span<const float> src, uint32_t n_tokens, uint32_t p0, const KvShape& s, std::span<uint16_t> cache);

// out[i][h][d] for q f32 [n_tokens][n_q_heads][head_dim] against the caches given as f32
// values (already f16-rounded) [n_kv_heads][n_ctx][head_dim]; query i attends to 0..p0+i, or
// with a sliding window (window > 0) to max(0, p0+i-window+1)..p0+i.
std::vector<float> attention(std::span<const float> q, std::span<const float> k, std::span<const float> v,
                             const KvShape& s, uint32_t n_tokens, uint32_t n_q_heads, uint32_t p0, float scale,
                             uint32_t window = 0);

}  // namespace chorus::ref
