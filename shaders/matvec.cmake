# Dequantising matrix-vector kernels (decode): one source per weight format.
# mul_mv_<fmt> (mul_mv.comp, format from quant.glsl's FMT_<TYPE>): fallback (shared-memory
# reduction) and subgroup (subgroupAdd) for every format; subgroup+fp16 (fp16 fields read as
# float16_t) for the formats where it measured faster on lavapipe.
foreach(fmt IN ITEMS f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k)
  string(TOUPPER ${fmt} up)
  chorus_shader(OP mul_mv_${fmt} SOURCE mul_mv.comp DEFINES FMT_${up}=1)
  chorus_shader(OP mul_mv_${fmt} SOURCE mul_mv.comp REQUIRES subgroup DEFINES FMT_${up}=1)
endforeach()
foreach(fmt IN ITEMS f16 q8_0 q4_0 q4_k q6_k)
  string(TOUPPER ${fmt} up)
  chorus_shader(OP mul_mv_${fmt} SOURCE mul_mv.comp REQUIRES subgroup fp16 DEFINES FMT_${up}=1)
endforeach()
# mul_mv_texel_<fmt> (mul_mv_texel.comp): the superblock path reading W and x through uniform
# texel buffers (core Vulkan); registered for CPU devices only, where texel fetches are gathers
# and storage-buffer loads are per-lane loops.
foreach(fmt IN ITEMS f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k)
  string(TOUPPER ${fmt} up)
  chorus_shader(OP mul_mv_texel_${fmt} SOURCE mul_mv_texel.comp REQUIRES cpu DEFINES FMT_${up}=1)
  # mul_mv_texel_rope_<fmt>: the decode Q/K/V product with RoPE and the KV-cache store in its
  # epilogue (matvec.glsl, MatVecRopePush).
  chorus_shader(OP mul_mv_texel_rope_${fmt} SOURCE mul_mv_texel.comp REQUIRES cpu DEFINES FMT_${up}=1 MV_ROPE=1)
endforeach()
