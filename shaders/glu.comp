// Gated linear units over rows (strided): y[r][i] = act(gate[r][i]) * up[r][i], i < n.
// GLU_ACT 0 = SwiGLU (act = silu), 1 = GeGLU (act = GELU, tanh approximation): glu.glsl.
// One invocation per element; y may alias gate or up.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x_id = 0) in;  // before ops.glsl: its shared arrays are sized by it
#include "ops.glsl"
#include "glu.glsl"

layout(push_constant) uniform Push { GluPush p; };
layout(std430, set = 0, binding = 0) readonly buffer G { float g[]; };
layout(std430, set = 0, binding = 1) readonly buffer U { float u[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Y { float y[]; };

float act(float v) {
#if GLU_ACT == 0
  return glu_silu(v);
#else
  return glu_gelu_tanh(v);
#endif
}

void main() {
  const uint idx = ch_group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (idx >= p.n * p.rows) return;
  const uint r = idx / p.n, i = idx % p.n;
  y[p.y_off + r * p.y_stride + i] = act(g[p.g_off + r * p.g_stride + i]) * u[p.u_off + r * p.u_stride + i];
}
