// engine/ops/pipeline_list.h — the list of pipelines a run built, kept on disk so that the
// next run of the same model on the same device builds them all at once, ahead of time
// (ops::Kernels::prepare; the file's name: vk::Device::pipeline_list_path).
//
// Owns: the list's text format and the rules for reading it. A list is an optimisation kept
// in the user's cache folder, so reading it is as careful as the pipeline cache's
// (vkdevice/cache_file.h): a missing file is an empty list; a file that is not a list chorus
// wrote (a wrong first line, any malformed line, an op name outside [A-Za-z0-9_], more than
// kMaxListedPipelines lines) is ignored as a whole with a warning naming the file and line.
// No Vulkan here (tests/fuzz/fuzz_pipeline_list.cpp builds it alone).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace chorus::ops {

// A pipeline as Kernels::pipeline is asked for it: enough to build it again in another run.
struct PipelineKey {
  std::string op;
  uint32_t n_bindings = 0, push_bytes = 0, texel_bindings = 0;
  std::vector<uint32_t> spec;
  bool operator==(const PipelineKey&) const = default;
};

// Text format, one pipeline per line after the first ("chorus pipeline list 1"):
//   <op> <bindings> <push bytes> <texel-binding bits> <spec constants, comma-separated, or ->
inline constexpr size_t kMaxListedPipelines = 256;
std::string format_pipeline_list(std::span<const PipelineKey> keys);
// The keys of `text`; on any defect none, and `error` says which line and why.
std::vector<PipelineKey> parse_pipeline_list(std::string_view text, std::string& error);
// The list at `path`: empty when there is none (silently) or when it is not one to use (then
// `warning` says why, naming the path).
std::vector<PipelineKey> read_pipeline_list(const std::string& path, std::string& warning);

}  // namespace chorus::ops
