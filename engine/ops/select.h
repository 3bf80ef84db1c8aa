// engine/ops/select.h — picking the largest entries of a f32 vector on the device: argmax
// (greedy decoding) and top_k (sampling candidates; with a vocabulary split over devices each
// device returns its slice's top k and the host merges them).
//
// Owns: recording argmax and top_k dispatches (shaders/argmax.comp, shaders/topk.comp), the
// passes of their reductions and the scratch they need. Push constants: SelectPush in
// shaders/attention.glsl, mirrored here.
//
// Order (both ops): a larger value ranks first; equal values (-0 == +0) rank by lower index;
// NaN ranks below every number, -inf included. Results are (index, value) pairs: a uint32
// index (index_base + position in x) followed by the f32 value, 8 bytes per entry.
#pragma once

#include <cstdint>

#include "engine/ops/kernels.h"
#include "vkdevice/commands.h"
#include "vkdevice/memory.h"

namespace chorus::ops {

// Mirrors `SelectPush` in shaders/attention.glsl.
struct SelectPush {
  uint32_t n;           // inputs
  uint32_t in_off;      // floats (pairs == 0) or words (pairs == 1)
  uint32_t out_off;     // words
  uint32_t pairs;       // 0: inputs are floats; 1: (index, value) pairs of an earlier pass
  uint32_t index_base;  // added to positions in x (first pass)
  uint32_t k;
  uint32_t chunk;       // inputs per workgroup
};
static_assert(sizeof(SelectPush) == 28, "SelectPush must match shaders/attention.glsl");

// One result entry as the device writes it.
struct Selected {
  uint32_t index;
  float value;
};
static_assert(sizeof(Selected) == 8);

inline constexpr uint32_t kMaxTopK = 256;

struct SelectOptions {
  uint32_t index_base = 0;  // added to every index (the first vocabulary row of a slice)
};

// Bytes of scratch argmax / top_k need for n inputs (0 when one pass suffices).
uint64_t argmax_scratch_bytes(uint32_t n);
uint64_t top_k_scratch_bytes(uint32_t n, uint32_t k);

// Records out = the best entry of x[0..n) as one Selected. x: n floats at byte x_offset of x
// (a multiple of 4); out: 8 bytes at out_offset (multiple of 4); scratch:
// argmax_scratch_bytes(n) bytes at scratch_offset (multiple of 4; unused when 0). Two passes
// with a barrier between them when n needs several workgroups. n == 0 writes (0xFFFFFFFF, NaN).
// Records no barrier before or after: the caller orders it against x's producer and out's consumers.
void argmax(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& x, uint64_t x_offset, uint32_t n,
            const vk::Buffer& scratch, uint64_t scratch_offset, const vk::Buffer& out, uint64_t out_offset,
            const SelectOptions& options = {});

// Records out = the best k entries of x[0..n) as k Selected, best first (1 <= k <= kMaxTopK).
// When k > n the last k - n entries are (0xFFFFFFFF, NaN). Buffers as for argmax, with
// top_k_scratch_bytes(n, k) bytes of scratch. One pass per 4096-fold reduction (two for a
// 256k vocabulary at k = 64), with barriers between passes; none before or after.
void top_k(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& x, uint64_t x_offset, uint32_t n, uint32_t top,
           const vk::Buffer& scratch, uint64_t scratch_offset, const vk::Buffer& out, uint64_t out_offset,
           const SelectOptions& options = {});

}  // namespace chorus::ops
