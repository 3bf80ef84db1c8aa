# Dequantising matrix-vector kernels (decode): one source per weight format.
# mul_mv_<fmt> (mul_mv.comp, format from quant.glsl's FMT_<TYPE>): fallback (shared-memory
# reduction) and subgroup (subgroupAdd) for every format; subgroup+fp16 (fp16 fields read as
# float16_t) for the formats where it measured faster on lavapipe. int8 variants (q8_0, q4_0;
# mul_mv_int8.comp) take x as q8_1 blocks made by quantize_q8_1 (quantize_q8_1.comp).
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
# texel buffers (core Vulkan, no capability needed); engine/ops/matvec.cpp uses it on CPU
# devices, where texel fetches are gathers and storage-buffer loads are per-lane loops.
foreach(fmt IN ITEMS q8_0 q4_0 q4_1 q4_k q6_k)
  string(TOUPPER ${fmt} up)
  chorus_shader(OP mul_mv_texel_${fmt} SOURCE mul_mv_texel.comp DEFINES FMT_${up}=1)
endforeach()
# int8 variants (mul_mv_int8.comp, x quantised to q8_1 by quantize_q8_1) are not registered:
# on lavapipe they measured slower than the f32 superblock path, and the variant table would
# pick them first on any int8 device (docs/performance.md). Re-add them here, for GPUs only,
# once they are measured faster on one.
# foreach(fmt IN ITEMS q8_0 q4_0)
#   string(TOUPPER ${fmt} up)
#   chorus_shader(OP mul_mv_${fmt} SOURCE mul_mv_int8.comp REQUIRES int8 DEFINES FMT_${up}=1)
#   chorus_shader(OP mul_mv_${fmt} SOURCE mul_mv_int8.comp REQUIRES subgroup fp16 int8 DEFINES FMT_${up}=1)
# endforeach()
chorus_shader(OP quantize_q8_1 SOURCE quantize_q8_1.comp)
