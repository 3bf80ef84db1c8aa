#version 450
#extension GL_GOOGLE_include_directive : require
// quantize_q8_1 — x (f32) to q8_1 blocks {f16 d, f16 s, i8 qs[32]} for the int8 mul_mv
// kernels: d = max|x| / 127, q = round(x / d), s = d * sum(q). One invocation per block.
#include "common.glsl"
#include "matvec.glsl"

layout(local_size_x_id = 0) in;
layout(set = 0, binding = 0, std430) readonly buffer X { float xdata[]; };
layout(set = 0, binding = 1, std430) writeonly buffer Q { uint qdata[]; };
layout(push_constant) uniform PushBlock { QuantizeQ8Push p; };

void main() {
  const uint b = gl_GlobalInvocationID.x;
  if (b >= p.K / 32u) return;
  const uint xb = p.x_base + 32u * b;
  float amax = 0.0;
  for (uint j = 0u; j < 32u; ++j) amax = max(amax, abs(xdata[xb + j]));
  const float d = amax / 127.0;
  const float id = d != 0.0 ? 1.0 / d : 0.0;
  const uint qb = p.q_base / 4u + 9u * b;
  int sum = 0;
  [[unroll]] for (uint w = 0u; w < 8u; ++w) {
    uint word = 0u;
    [[unroll]] for (uint k = 0u; k < 4u; ++k) {
      const int q = int(round(xdata[xb + 4u * w + k] * id));
      sum += q;
      word |= uint(q & 0xFF) << (8u * k);
    }
    qdata[qb + 1u + w] = word;
  }
  qdata[qb] = packHalf2x16(vec2(d, float(sum) * d));
}
