// Gated linear units over rows (strided): y[r][i] = act(gate[r][i]) * up[r][i], i < n.
// GLU_ACT 0 = SwiGLU: act(g) = silu(g) = g / (1 + exp(-g)).
// GLU_ACT 1 = GeGLU with the tanh approximation of GELU:
//   gelu(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))), evaluated as the identical
//   g * sigmoid(2 sqrt(2/pi) (g + 0.044715 g^3)), which cannot form inf/inf for large |g|.
// One invocation per element; y may alias gate or up.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x_id = 0) in;  // before ops.glsl: its shared arrays are sized by it
#include "ops.glsl"

layout(push_constant) uniform Push { GluPush p; };
layout(std430, set = 0, binding = 0) readonly buffer G { float g[]; };
layout(std430, set = 0, binding = 1) readonly buffer U { float u[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Y { float y[]; };

float act(float v) {
#if GLU_ACT == 0
  return v / (1.0 + exp(-v));
#else
  const float k = 1.5957691216057308;  // 2 * sqrt(2 / pi)
  return v / (1.0 + exp(-k * (v + 0.044715 * v * v * v)));
#endif
}

void main() {
  const uint idx = ch_group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (idx >= p.n * p.rows) return;
  const uint r = idx / p.n, i = idx % p.n;
  y[p.y_off + r * p.y_stride + i] = act(g[p.g_off + r * p.g_stride + i]) * u[p.u_off + r * p.u_stride + i];
}
