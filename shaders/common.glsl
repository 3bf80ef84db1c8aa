// shaders/common.glsl — included first by every kernel.
//
// Conventions every kernel follows (engine/ops relies on them):
// - Bindings: set 0 (a push-descriptor set), bindings 0..n-1, std430 storage buffers (except
//   mul_mv_texel.comp, which reads W and x through uniform texel buffers; see there).
//   Quantised or 16-bit data is declared as `uint` words and read with the CH_* macros
//   below, so the fallback variant needs neither 8- nor 16-bit storage.
// - Binding offsets are rounded down by the host to minStorageBufferOffsetAlignment; every
//   buffer therefore has a base offset in the op's push constants (bytes for raw data,
//   elements for float arrays) that the kernel adds itself.
// - Specialisation constant 0 is the workgroup size in x (`layout(local_size_x_id = 0)`);
//   ids 1.. are op-specific. Declare `layout(local_size_x_id = 0) in;` before including any
//   file that sizes shared arrays with gl_WorkGroupSize.x: glslang otherwise sizes them as 1. Push constants are at most 128 bytes, declared in the op
//   family's include (matvec.glsl, ops.glsl, ...) next to the C++ struct that mirrors them.
// - Variant defines (set by shaders/CMakeLists.txt from REQUIRES): CHORUS_SUBGROUP,
//   CHORUS_FP16, CHORUS_CPU (a kernel written for CPU devices; it needs no extension).
//   Without them a kernel must run on any Vulkan 1.2 device.
#extension GL_EXT_control_flow_attributes : enable

#ifndef CHORUS_SUBGROUP
#define CHORUS_SUBGROUP 0
#endif
#ifndef CHORUS_FP16
#define CHORUS_FP16 0
#endif
#ifndef CHORUS_CPU
#define CHORUS_CPU 0
#endif

#if CHORUS_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif
#if CHORUS_FP16
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#endif

// Q5_0 / Q5_1 quants as whole bytes: four nibbles (bits 0..3 of each byte) with the four
// elements' high bits (bits 0..3 of h) put at bit 4 of each byte. h * 0x00204081 places shifted
// copies of h's 4 bits in disjoint ranges (bits 0-3, 7-10, 14-17, 21-24), so the product is their
// OR; the mask keeps bits 0, 8, 16 and 24 (h's bits 0, 1, 2, 3).
uint q5_bytes(uint nibbles, uint h) { return nibbles | ((((h & 0xFu) * 0x00204081u) & 0x01010101u) << 4); }

// Byte-addressed reads from a `uint` array. `b` is a byte offset; CH_U16/CH_F16/CH_U32 need
// an even offset (every field of every GGUF block sits at an even offset).
#define CH_U8(buf, b) ((buf[(b) >> 2] >> (((b) & 3u) * 8u)) & 0xFFu)
#define CH_I8(buf, b) (int(CH_U8(buf, b) << 24) >> 24)
#define CH_U16(buf, b) ((buf[(b) >> 2] >> (((b) & 2u) * 8u)) & 0xFFFFu)
#define CH_F16(buf, b) unpackHalf2x16(CH_U16(buf, b)).x
#define CH_U32(buf, b) (CH_U16(buf, b) | (CH_U16(buf, (b) + 2u) << 16))

float ch_bf16_to_f32(uint h) { return uintBitsToFloat(h << 16); }
