// copy / convert of a strided 3-D block (CopyPush): f32 -> f32, f32 -> f16, f16 -> f32,
// f16 -> f16 (SRC_F16, DST_F16). Conversion to f16 rounds to nearest even (packHalf2x16).
// The fallback reads and writes 16-bit data through uint words: when `pairs` is set each
// invocation converts two neighbours and stores one word; otherwise it stores its half-word
// with atomicAnd/atomicOr so that neighbours written by other invocations survive. The fp16
// variant uses float16_t storage directly. One invocation per element (per pair).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x_id = 0) in;  // before ops.glsl: its shared arrays are sized by it
#include "ops.glsl"

layout(push_constant) uniform Push { CopyPush p; };

#if SRC_F16 && CHORUS_FP16
layout(std430, set = 0, binding = 0) readonly buffer S { float16_t src[]; };
float load(uint e) { return float(src[e]); }
#elif SRC_F16
layout(std430, set = 0, binding = 0) readonly buffer S { uint src[]; };
float load(uint e) { return CH_F16(src, 2u * e); }
#else
layout(std430, set = 0, binding = 0) readonly buffer S { float src[]; };
float load(uint e) { return src[e]; }
#endif

#if DST_F16 && CHORUS_FP16
layout(std430, set = 0, binding = 1) writeonly buffer D { float16_t dst[]; };
void store(uint e, float v) { dst[e] = float16_t(v); }
#elif DST_F16
layout(std430, set = 0, binding = 1) buffer D { uint dst[]; };
void store(uint e, float v) {
  const uint shift = (e & 1u) * 16u;
  const uint bits = packHalf2x16(vec2(v, 0.0)) & 0xFFFFu;
  atomicAnd(dst[e >> 1], ~(0xFFFFu << shift));
  atomicOr(dst[e >> 1], bits << shift);
}
#else
layout(std430, set = 0, binding = 1) writeonly buffer D { float dst[]; };
void store(uint e, float v) { dst[e] = v; }
#endif

void main() {
  const bool pairs = DST_F16 != 0 && CHORUS_FP16 == 0 && p.pairs != 0;
  const uint per_row = pairs ? p.ne0 / 2 : p.ne0;
  const uint idx = ch_group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (idx >= per_row * p.ne1 * p.ne2) return;
  const uint u = idx % per_row;
  const uint r = idx / per_row;
  const uint i1 = r % p.ne1, i2 = r / p.ne1;
  const uint s = p.src_off + i1 * p.s1 + i2 * p.s2;
  const uint d = p.dst_off + i1 * p.d1 + i2 * p.d2;
#if DST_F16 && !CHORUS_FP16
  if (pairs) {
    dst[(d >> 1) + u] = packHalf2x16(vec2(load(s + 2 * u), load(s + 2 * u + 1)));
    return;
  }
#endif
  store(d + u, load(s + u));
}
