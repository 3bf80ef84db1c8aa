#version 450
#extension GL_GOOGLE_include_directive : require
// top_k: one pass. Workgroup g takes inputs [g * chunk, (g+1) * chunk) (chunk = E per
// invocation, floats or (index, value) pairs from an earlier pass), and writes its best k as
// (index, value bits) pairs, best first, at out_off + 2 (g k + rank). Each round is a
// workgroup argmax of the invocations' current bests; the winner's owner drops it and rescans
// its E entries. Missing entries (a short last chunk) are sentinels that lose to everything.
// Order: attention.glsl (larger value, then lower index; NaN never wins over a number).
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint E = 8u;  // entries per invocation
#define CH_SELECT_REDUCE 1
#include "attention.glsl"

layout(std430, set = 0, binding = 0) readonly buffer In { uint x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out { uint y[]; };

layout(push_constant) uniform Push { SelectPush p; };

void main() {
  const uint t = gl_LocalInvocationID.x;
  const uint g = gl_WorkGroupID.x;
  const uint start = g * p.chunk;
  const uint end = min(p.n, start + p.chunk);
  uint ek[E], ei[E], ev[E];
  [[unroll]] for (uint e = 0u; e < E; ++e) {
    const uint i = start + t + e * gl_WorkGroupSize.x;
    ek[e] = 0u;
    ei[e] = CH_NO_INDEX;
    ev[e] = CH_NAN_BITS;
    if (i < end) {
      if (p.pairs != 0u) {
        ei[e] = x[p.in_off + 2u * i];
        ev[e] = x[p.in_off + 2u * i + 1u];
      } else {
        ei[e] = p.index_base + i;
        ev[e] = x[p.in_off + i];
      }
      ek[e] = ch_select_key(ev[e]);
    }
  }
  uint bk = 0u, bi = CH_NO_INDEX, bv = CH_NAN_BITS;
  [[unroll]] for (uint e = 0u; e < E; ++e) {
    if (ch_select_better(ek[e], ei[e], bk, bi)) {
      bk = ek[e];
      bi = ei[e];
      bv = ev[e];
    }
  }
  for (uint round = 0u; round < p.k; ++round) {
    uint wk = bk, wi = bi, wv = bv;
    ch_select_reduce(wk, wi, wv, round & 1u);
    if (t == 0u) {
      y[p.out_off + 2u * (g * p.k + round)] = wi;
      y[p.out_off + 2u * (g * p.k + round) + 1u] = wv;
    }
    if (bk == wk && bi == wi) {  // this invocation held the winner: drop it, find the next
      bk = 0u;
      bi = CH_NO_INDEX;
      bv = CH_NAN_BITS;
      [[unroll]] for (uint e = 0u; e < E; ++e) {
        if (ek[e] == wk && ei[e] == wi) {
          ek[e] = 0u;
          ei[e] = CH_NO_INDEX;
          ev[e] = CH_NAN_BITS;
        }
        if (ch_select_better(ek[e], ei[e], bk, bi)) {
          bk = ek[e];
          bi = ei[e];
          bv = ev[e];
        }
      }
    }
  }
}
