// shaders/glu.glsl — the gated units' activations, shared by glu.comp and the fused epilogue of
// mul_mv_texel.comp (so the fused and the separate kernels compute the same values).
// SwiGLU: silu(g) = g / (1 + exp(-g)).
// GeGLU, tanh approximation of GELU: 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))),
// evaluated as the identical g * sigmoid(2 sqrt(2/pi) (g + 0.044715 g^3)), which cannot form
// inf/inf for large |g|.
float glu_silu(float v) { return v / (1.0 + exp(-v)); }
float glu_gelu_tanh(float v) {
  const float k = 1.5957691216057308;  // 2 * sqrt(2 / pi)
  return v / (1.0 + exp(-k * (v + 0.044715 * v * v * v)));
}
