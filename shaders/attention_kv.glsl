// shaders/attention_kv.glsl — the KV cache as the CPU attention kernels read it
// (attention_row.comp, attention_lanes.comp): K and V through uniform texel buffers, views of
// R32G32B32A32_UINT texels (VEC4: rows and offsets in whole 16-byte words) or R32_UINT, with
// AttentionPush's k_off, v_off counting 32-bit words from each view's start. The including
// kernel declares the push block `p`, the specialisation constant VEC4 and DW (cache words per
// position) first.
//
// Why texel buffers: both kernels read K/V at addresses that differ between lanes (rows of
// different kv heads, or lanes on different positions); on llvmpipe a storage load of that kind
// is a loop over the lanes with a branch per component, a texel fetch a gather. A SmolLM2
// decode step after 460 positions ran at about half the speed of one after a few, the storage
// loads of attention_row taking the difference.
layout(set = 0, binding = 1) uniform usamplerBuffer ktex;
layout(set = 0, binding = 2) uniform usamplerBuffer vtex;

// Cache words w..w+3 of a row starting at word b (VEC4: b and w multiples of 4); words at or
// past DW (a head_dim that is not a multiple of 8) are 0 and not read.
uvec4 kv_words(usamplerBuffer t, uint b, uint w) {
  if (VEC4) return texelFetch(t, int((b + w) / 4u));
  uvec4 r = uvec4(0u);
  [[unroll]] for (uint c = 0u; c < 4u; ++c)
    if (w + c < DW) r[c] = texelFetch(t, int(b + w + c)).x;
  return r;
}
uvec4 k_words(uint b, uint w) { return kv_words(ktex, b, w); }
uvec4 v_words(uint b, uint w) { return kv_words(vtex, b, w); }

// The first position a row whose last is `last` attends to (a sliding window of p.window, or 0).
uint window_start(uint last) { return p.window != 0u && last >= p.window ? last + 1u - p.window : 0u; }
