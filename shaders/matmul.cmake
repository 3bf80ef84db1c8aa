# Tiled matrix-matrix kernels (prefill): one source per weight format.
# mul_mm_<fmt>: Y = X * W^T with tiles staged in shared memory (mul_mm.comp, matmul.glsl); the
# format comes from quant.glsl through its FMT_<TYPE> define. Two variants per format: the
# fallback (f32 tiles) and fp16 (f16 tiles, fp16 fields read as float16_t, f32 accumulation).
foreach(fmt IN ITEMS f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k)
  string(TOUPPER ${fmt} up)
  chorus_shader(OP mul_mm_${fmt} SOURCE mul_mm.comp DEFINES FMT_${up}=1)
  chorus_shader(OP mul_mm_${fmt} SOURCE mul_mm.comp REQUIRES fp16 DEFINES FMT_${up}=1)
endforeach()
# mul_mm_cpu_<fmt>: the same product for CPU devices only (mul_mm_cpu.comp): register tiles, no
# shared memory or barriers; X through a texel buffer.
foreach(fmt IN ITEMS f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k)
  string(TOUPPER ${fmt} up)
  chorus_shader(OP mul_mm_cpu_${fmt} SOURCE mul_mm_cpu.comp REQUIRES cpu DEFINES FMT_${up}=1)
endforeach()
