#version 450
// fill_f32: y[y_base + i] = value for i < n. The device layer's own smoke kernel (pipeline
// cache and dispatch tests) and a way to clear accumulators.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(set = 0, binding = 0, std430) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Push {
  uint n;
  uint y_base;
  float value;
} pc;

void main() {
  const uint i = gl_GlobalInvocationID.x;
  if (i < pc.n) y[pc.y_base + i] = pc.value;
}
