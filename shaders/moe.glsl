// shaders/moe.glsl — push constants of the mixture-of-experts kernels (engine/ops/moe.h).
//
// Mirrored field for field by the C++ structs in engine/ops/moe.cpp (sizes static_asserted
// there). A token's k chosen experts are its k "slots": slot s = t * k + j is token t's j-th
// expert, ids[s] its expert index, weights[s] its routing weight. Offsets named *_off are in
// elements of the binding's declared type and include the binding's alignment skip.

// moe_route: per token, softmax over the n_expert router logits, the k most probable experts
// (ties to the lower index), their probabilities renormalised to sum to 1 when `norm`.
struct MoeRoutePush {
  uint logits_off;  // floats: [n_tokens][n_expert]
  uint ids_off;     // uints: [n_tokens][k]
  uint weights_off; // floats: [n_tokens][k]
  uint n_expert, k, n_tokens;
  uint norm;
};

// moe_group: per expert e, the slots that chose it in slot order: count[e] at groups[off + e],
// the list at groups[off + n_expert + e * cap ...].
struct MoeGroupPush {
  uint ids_off;     // uints: [n_slots]
  uint groups_off;  // uints
  uint n_expert, n_slots, cap;
};

// moe_combine: out[t][i] = sum_j weights[t * k + j] * y[(t * k + j) * n + i], j in slot order.
struct MoeCombinePush {
  uint y_off, weights_off, out_off;
  uint n, n_tokens, k;
};

// mul_mm_id_<fmt>: Y[s][r] = sum_c W_e[r][c] * X[s / x_div][c] for the slots s of expert e, where
// W_e (N rows of K elements) starts at byte w_base + (e - e_base) * expert_bytes of binding 0.
// Slot mode (GROUPED false): workgroup y is the slot, e = ids[s]; grouped mode: workgroup z is
// e - e_base, workgroup y a tile of the slots in e's list (moe_group). Experts outside
// [e_base, e_base + n_experts) belong to another dispatch (another window of W).
struct MulMatIdPush {
  uint K, N;
  uint row_bytes, w_base, expert_bytes;
  uint e_base, n_experts;
  uint x_off, x_stride, x_div;
  uint y_off, y_stride;
  uint ids_off;     // slot mode: uints [n_slots]
  uint groups_off;  // grouped mode: uints (moe_group's layout)
  uint n_expert, cap, n_slots;
};
