// engine/ops/moe.h — the kernels of a mixture-of-experts FFN (qwen3moe), recorded on the device
// so that a decode token stays one submit: the host never reads which experts were chosen.
//
// Owns: recording moe_route (softmax over the router logits, top-k, renormalisation), moe_group
// (each expert's list of the batch's slots that chose it), mul_mm_id_<fmt> (the product of an
// expert stack with the slots' inputs, the expert of each slot read from the routing buffers:
// one product per expert over its tokens in a batch, one per slot for a decode token) and
// moe_combine (a token's k expert outputs summed with their weights); binding expert stacks
// larger than maxStorageBufferRange in windows of whole experts. Push constants mirror
// shaders/moe.glsl. Like ops.h: every buffer is (buffer, byte offset), F32 unless stated, and
// no barrier is recorded: the caller orders producers and consumers.
//
// Slots: token t's j-th chosen expert is slot s = t * k + j (ids[s], weights[s]).
#pragma once

#include <cstdint>
#include <string>

#include "engine/ops/kernels.h"
#include "engine/quant.h"
#include "vkdevice/commands.h"
#include "vkdevice/memory.h"

namespace chorus::ops {

struct MoeRouteShape {
  uint32_t n_expert = 0;
  uint32_t k = 0;         // experts per token, 1..kMoeMaxK
  uint32_t n_tokens = 0;
  bool norm = true;       // the k weights divided by their sum
};
constexpr uint32_t kMoeMaxK = 64;  // shaders/moe_route.comp's MOE_MAX_K

// logits [n_tokens][n_expert] -> ids [n_tokens][k] (u32, most probable first, ties to the lower
// index) and weights [n_tokens][k]: softmax over all experts, the k largest, renormalised if asked.
void moe_route(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& logits, uint64_t logits_offset,
               const vk::Buffer& ids, uint64_t ids_offset, const vk::Buffer& weights, uint64_t weights_offset,
               const MoeRouteShape& s);

// Bytes of moe_group's output for n_expert experts with lists of up to `cap` slots each.
inline uint64_t moe_groups_bytes(uint32_t n_expert, uint32_t cap) { return uint64_t(n_expert) * (uint64_t(cap) + 1) * 4; }

// ids [n_slots] -> groups: count[e] (u32 [n_expert]), then each expert's list of slots in slot
// order (u32 [n_expert][cap]). A token chooses an expert at most once, so cap = n_tokens holds all.
void moe_group(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& ids, uint64_t ids_offset,
               const vk::Buffer& groups, uint64_t groups_offset, uint32_t n_expert, uint32_t n_slots, uint32_t cap);

// Where mul_mm_id finds each slot's expert.
struct ExpertRouting {
  const vk::Buffer* ids = nullptr;      // u32 [n_slots] (moe_route's)
  uint64_t ids_offset = 0;
  const vk::Buffer* groups = nullptr;   // moe_group's output; null: one product per slot (decode)
  uint64_t groups_offset = 0;
  uint32_t n_expert = 0;                // experts in the stack (and in the lists)
  uint32_t n_slots = 0;
  uint32_t cap = 0;                     // list capacity per expert (groups only)
};

// Rows of the slots' inputs and outputs.
struct ExpertRows {
  uint32_t x_stride = 0;  // floats between rows of x
  uint32_t x_div = 1;     // slot s reads row s / x_div of x (k: one row per token; 1: per slot)
  uint32_t y_stride = 0;  // floats between rows of y (one row per slot)
};

// y[s][r] = sum_c W_e[r][c] * x[s / x_div][c] for every slot s and r < N, e the slot's expert.
// W: n_expert matrices of N rows of K elements of `type` in the device block layout, one after
// another from byte 0 of w (engine/model.cpp's expert stacks). Throws vk::Error for unsupported
// types, bad shapes, or an expert larger than one binding.
void mul_mm_id(Kernels& k, vk::CommandBuffer& cb, GgmlType type, const vk::Buffer& w, uint32_t K, uint32_t N,
               const vk::Buffer& x, uint64_t x_offset, const vk::Buffer& y, uint64_t y_offset, const ExpertRows& rows,
               const ExpertRouting& routing, uint64_t max_window = 0);

// out[t][i] = sum_j weights[t k + j] * y[t k + j][i] for i < n, j in order.
void moe_combine(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& y, uint64_t y_offset, const vk::Buffer& weights,
                 uint64_t weights_offset, const vk::Buffer& out, uint64_t out_offset, uint32_t n, uint32_t n_tokens,
                 uint32_t k_used);

}  // namespace chorus::ops
