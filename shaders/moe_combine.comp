// moe_combine: a token's expert outputs summed with their routing weights, in slot order
// (moe.glsl, MoeCombinePush): out[t][i] = sum_j weights[t k + j] * y[t k + j][i]. One invocation
// per output element; this device's partial of the layer's FFN output, reduced once after.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x_id = 0) in;
#include "ops.glsl"
#include "moe.glsl"

layout(push_constant) uniform Push { MoeCombinePush p; };
layout(std430, set = 0, binding = 0) readonly buffer Yb { float y[]; };
layout(std430, set = 0, binding = 1) readonly buffer W { float weights[]; };
layout(std430, set = 0, binding = 2) writeonly buffer O { float outv[]; };

void main() {
  const uint idx = ch_group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (idx >= p.n * p.n_tokens) return;
  const uint t = idx / p.n, i = idx % p.n;
  float s = 0.0;
  for (uint j = 0u; j < p.k; ++j) {
    const uint slot = t * p.k + j;
    s += weights[p.weights_off + slot] * y[p.y_off + slot * p.n + i];
  }
  outv[p.out_off + t * p.n + i] = s;
}
