// add / mul (BINARY_OP 0 / 1): z[i] = x[i] op y[i % ny] for i < n, so y of n elements is
// element-wise, y of one row broadcasts over rows, y of 1 element is a scalar. One invocation
// per element; z may alias x or y.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x_id = 0) in;  // before ops.glsl: its shared arrays are sized by it
#include "ops.glsl"

layout(push_constant) uniform Push { BinaryPush p; };
layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Yb { float y[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Z { float z[]; };

void main() {
  const uint i = ch_group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (i >= p.n) return;
  const float a = x[p.x_off + i];
  const float b = y[p.y_off + (i % p.ny)];
#if BINARY_OP == 0
  z[p.z_off + i] = a + b;
#else
  z[p.z_off + i] = a * b;  // (the collective's tests use it as a stand-in kernel)
#endif
}
