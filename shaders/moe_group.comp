// moe_group: the slots of each expert, for the grouped expert products of a batch (moe.glsl,
// MoeGroupPush). One invocation per expert walks every slot in order and lists those that chose
// it, so each list is in slot order and the result does not depend on scheduling.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "moe.glsl"
layout(local_size_x_id = 0) in;

layout(push_constant) uniform Push { MoeGroupPush p; };
layout(std430, set = 0, binding = 0) readonly buffer I { uint ids[]; };
layout(std430, set = 0, binding = 1) writeonly buffer G { uint groups[]; };

void main() {
  const uint e = gl_WorkGroupID.x * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (e >= p.n_expert) return;
  uint n = 0u;
  const uint list = p.groups_off + p.n_expert + e * p.cap;
  for (uint s = 0u; s < p.n_slots; ++s) {
    if (ids[p.ids_off + s] == e && n < p.cap) {
      groups[list + n] = s;
      ++n;
    }
  }
  groups[p.groups_off + e] = n;
}
