#include "engine/ops/select.h"

#include <algorithm>
#include <string>
#include <vector>

namespace chorus::ops {
namespace {

constexpr uint32_t kArgmaxWg = 256;
constexpr uint32_t kArgmaxChunk = kArgmaxWg * 16;  // inputs per workgroup of argmax's first pass
constexpr uint32_t kTopKWg = 256;
constexpr uint32_t kTopKPerInvocation = 16;        // E in topk.comp
constexpr uint32_t kTopKChunk = kTopKWg * kTopKPerInvocation;
constexpr uint32_t kMaxGroups = 65535;

// Entries written by each top_k pass for n inputs: groups * k per pass, the last pass 1 group.
std::vector<uint64_t> top_k_pass_groups(uint32_t n, uint32_t top) {
  std::vector<uint64_t> g;
  uint64_t inputs = std::max<uint32_t>(n, 1);
  for (;;) {
    const uint64_t groups = (inputs + kTopKChunk - 1) / kTopKChunk;
    g.push_back(groups);
    if (groups == 1) return g;
    inputs = groups * top;
  }
}

void check_buffers(const std::string& what, const vk::Buffer& x, uint64_t x_offset, uint64_t x_bytes,
                   const vk::Buffer& scratch, uint64_t scratch_offset, uint64_t scratch_bytes, const vk::Buffer& out,
                   uint64_t out_offset, uint64_t out_bytes) {
  if (x_offset % 4 != 0 || scratch_offset % 4 != 0 || out_offset % 4 != 0)
    throw vk::Error(what + ": x, scratch and out must start at a multiple of 4 bytes");
  if (x_offset + x_bytes > x.size() || out_offset + out_bytes > out.size() ||
      (scratch_bytes != 0 && scratch_offset + scratch_bytes > scratch.size()))
    throw vk::Error(what + ": a tensor overruns its buffer ('" + x.tag() + "', '" + scratch.tag() + "', '" +
                    out.tag() + "')");
}

}  // namespace

uint64_t argmax_scratch_bytes(uint32_t n) {
  const uint64_t groups = (uint64_t(n) + kArgmaxChunk - 1) / kArgmaxChunk;
  return groups > 1 ? groups * sizeof(Selected) : 0;
}

uint64_t top_k_scratch_bytes(uint32_t n, uint32_t top) {
  const std::vector<uint64_t> g = top_k_pass_groups(n, top);
  uint64_t even = 0, odd = 0;  // passes alternate between two regions; the last writes out
  for (size_t p = 0; p + 1 < g.size(); ++p) (p % 2 == 0 ? even : odd) = std::max(p % 2 == 0 ? even : odd, g[p] * top * 8);
  return even + odd;
}

void argmax(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& x, uint64_t x_offset, uint32_t n,
            const vk::Buffer& scratch, uint64_t scratch_offset, const vk::Buffer& out, uint64_t out_offset,
            const SelectOptions& options) {
  const std::string what = "argmax(n=" + std::to_string(n) + ")";
  const uint64_t scratch_bytes = argmax_scratch_bytes(n);
  check_buffers(what, x, x_offset, 4ull * n, scratch, scratch_offset, scratch_bytes, out, out_offset, 8);
  const vk::BufferWindow ow = out.window(out_offset, 8);
  const vk::BufferWindow xw = x.window(x_offset, std::max<uint64_t>(4ull * n, 4));
  const std::vector<uint32_t> spec = {kArgmaxWg};
  if (scratch_bytes == 0) {
    SelectPush push{n, skip_elems(xw, 4), skip_elems(ow, 4), 0, options.index_base, 1, kArgmaxChunk};
    k.dispatch(cb, "argmax", {xw, ow}, push, spec, 1);
    return;
  }
  const uint32_t g = groups(n, kArgmaxChunk);
  if (g > kMaxGroups) throw vk::Error(what + ": more inputs than one dispatch covers");
  const vk::BufferWindow sw = scratch.window(scratch_offset, scratch_bytes);
  SelectPush first{n, skip_elems(xw, 4), skip_elems(sw, 4), 0, options.index_base, 1, kArgmaxChunk};
  k.dispatch(cb, "argmax", {xw, sw}, first, spec, g);
  cb.barrier();  // the second pass reads the first pass's per-workgroup bests
  SelectPush second{g, skip_elems(sw, 4), skip_elems(ow, 4), 1, 0, 1, g};
  k.dispatch(cb, "argmax", {sw, ow}, second, spec, 1);
}

void top_k(Kernels& k, vk::CommandBuffer& cb, const vk::Buffer& x, uint64_t x_offset, uint32_t n, uint32_t top,
           const vk::Buffer& scratch, uint64_t scratch_offset, const vk::Buffer& out, uint64_t out_offset,
           const SelectOptions& options) {
  const std::string what = "top_k(n=" + std::to_string(n) + ", k=" + std::to_string(top) + ")";
  if (top == 0 || top > kMaxTopK) throw vk::Error(what + ": k must be 1.." + std::to_string(kMaxTopK));
  const uint64_t scratch_bytes = top_k_scratch_bytes(n, top);
  check_buffers(what, x, x_offset, 4ull * n, scratch, scratch_offset, scratch_bytes, out, out_offset, 8ull * top);
  const std::vector<uint64_t> g = top_k_pass_groups(n, top);
  if (g.front() > kMaxGroups) throw vk::Error(what + ": more inputs than one dispatch covers");
  const std::vector<uint32_t> spec = {kTopKWg, kTopKPerInvocation};

  // Region 0 of the scratch at its start, region 1 after region 0's largest use.
  uint64_t region1 = 0;
  for (size_t p = 0; p + 1 < g.size(); p += 2) region1 = std::max(region1, g[p] * top * 8);
  const vk::BufferWindow ow = out.window(out_offset, 8ull * top);
  const vk::BufferWindow xw = x.window(x_offset, std::max<uint64_t>(4ull * n, 4));
  vk::BufferWindow in = xw;
  uint32_t inputs = n;
  for (size_t p = 0; p < g.size(); ++p) {
    const bool last = p + 1 == g.size();
    const vk::BufferWindow dst =
        last ? ow : scratch.window(scratch_offset + (p % 2 == 0 ? 0 : region1), g[p] * top * 8);
    SelectPush push{inputs, skip_elems(in, 4), skip_elems(dst, 4), p == 0 ? 0u : 1u,
                    p == 0 ? options.index_base : 0u, top, kTopKChunk};
    k.dispatch(cb, "top_k", {in, dst}, push, spec, static_cast<uint32_t>(g[p]));
    if (!last) cb.barrier();  // the next pass reads this pass's per-workgroup candidates
    in = dst;
    inputs = static_cast<uint32_t>(g[p] * top);
  }
}

}  // namespace chorus::ops
