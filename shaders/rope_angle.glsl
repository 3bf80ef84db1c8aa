// shaders/rope_angle.glsl — the RoPE angle every rotating kernel uses (rope.comp, rope_store.comp,
// mul_mv_texel.comp's rope epilogue), one expression so that they rotate bit for bit alike.

// cos and sin of pair i's angle at `position`: theta = position * freq_scale * base^(-2i/n_dims).
vec2 rope_angle(uint i, int position, uint n_dims, float freq_base, float freq_scale) {
  const float inv_freq = exp2(-2.0 * float(i) / float(n_dims) * log2(freq_base));
  const float theta = float(position) * freq_scale * inv_freq;
  return vec2(cos(theta), sin(theta));
}
