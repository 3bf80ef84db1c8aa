// scale: y[i] = x[i] * s for i < n. One invocation per element; y may alias x.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x_id = 0) in;  // before ops.glsl: its shared arrays are sized by it
#include "ops.glsl"

layout(push_constant) uniform Push { ScalePush p; };
layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Y { float y[]; };

void main() {
  const uint i = ch_group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (i >= p.n) return;
  y[p.y_off + i] = x[p.x_off + i] * p.s;
}
