# Mixture-of-experts kernels (engine/ops/moe.h records them; push constants in moe.glsl):
# routing (softmax, top-k, renormalisation), the per-expert slot lists of a batch, the weighted
# sum of a token's experts, and the expert-indexed product mul_mm_id_<fmt> for every weight format.
chorus_shader(OP moe_route SOURCE moe_route.comp)
chorus_shader(OP moe_group SOURCE moe_group.comp)
chorus_shader(OP moe_combine SOURCE moe_combine.comp)
foreach(fmt IN ITEMS f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k)
  string(TOUPPER ${fmt} up)
  chorus_shader(OP mul_mm_id_${fmt} SOURCE mul_mm_id.comp DEFINES FMT_${up}=1)
endforeach()
