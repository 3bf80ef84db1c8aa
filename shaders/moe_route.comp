// moe_route: a mixture of experts' routing, one invocation per token (moe.glsl, MoeRoutePush).
// p_i = softmax(logits)_i over all n_expert experts (max subtracted first); the k chosen are the
// k largest p_i in the total order (p desc, index asc), picked one after another as the largest
// below the previous pick in that order; their weights are p_i, divided by their sum when
// p.norm (qwen3moe's norm_top_k_prob, Mixtral). k <= MOE_MAX_K.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "moe.glsl"
layout(local_size_x_id = 0) in;

layout(push_constant) uniform Push { MoeRoutePush p; };
layout(std430, set = 0, binding = 0) readonly buffer L { float logits[]; };
layout(std430, set = 0, binding = 1) writeonly buffer I { uint ids[]; };
layout(std430, set = 0, binding = 2) writeonly buffer W { float weights[]; };

#define MOE_MAX_K 64

void main() {
  const uint t = gl_WorkGroupID.x * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (t >= p.n_tokens) return;
  const uint base = p.logits_off + t * p.n_expert;
  float mx = logits[base];
  for (uint e = 1u; e < p.n_expert; ++e) mx = max(mx, logits[base + e]);
  float sum = 0.0;
  for (uint e = 0u; e < p.n_expert; ++e) sum += exp(logits[base + e] - mx);
  float pick_p[MOE_MAX_K];
  float prev_p = 2.0;  // above every probability
  uint prev_e = 0u;
  float chosen = 0.0;
  for (uint j = 0u; j < p.k; ++j) {
    float best_p = -1.0;
    uint best_e = 0u;
    for (uint e = 0u; e < p.n_expert; ++e) {
      const float pe = exp(logits[base + e] - mx) / sum;
      const bool below_prev = pe < prev_p || (pe == prev_p && e > prev_e);
      if (below_prev && pe > best_p) {  // strict: of equal probabilities the lower index is first
        best_p = pe;
        best_e = e;
      }
    }
    ids[p.ids_off + t * p.k + j] = best_e;
    pick_p[j] = best_p;
    chosen += best_p;
    prev_p = best_p;
    prev_e = best_e;
  }
  for (uint j = 0u; j < p.k; ++j) weights[p.weights_off + t * p.k + j] = p.norm != 0u ? pick_p[j] / chosen : pick_p[j];
}
