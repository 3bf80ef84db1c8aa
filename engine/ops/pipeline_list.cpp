#include "engine/ops/pipeline_list.h"

#include <algorithm>
#include <cctype>
#include <optional>

#include "vkdevice/cache_file.h"

namespace chorus::ops {

std::string format_pipeline_list(std::span<const PipelineKey> keys) {
  std::string out = "chorus pipeline list 1\n";
  for (const PipelineKey& k : keys) {
    out += k.op + ' ' + std::to_string(k.n_bindings) + ' ' + std::to_string(k.push_bytes) + ' ' +
           std::to_string(k.texel_bindings) + ' ';
    if (k.spec.empty()) out += '-';
    for (size_t i = 0; i < k.spec.size(); ++i) out += (i ? "," : "") + std::to_string(k.spec[i]);
    out += '\n';
  }
  return out;
}

namespace {
// A decimal uint32 (digits only, no sign, at most max), or nullopt.
std::optional<uint32_t> parse_u32(std::string_view s, uint64_t max) {
  if (s.empty() || s.size() > 10) return std::nullopt;
  uint64_t v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > max) return std::nullopt;
  return static_cast<uint32_t>(v);
}
}  // namespace

std::vector<PipelineKey> parse_pipeline_list(std::string_view text, std::string& error) {
  std::vector<PipelineKey> keys;
  const auto fail = [&](size_t line, const std::string& what) {
    error = "line " + std::to_string(line) + ": " + what;
    return std::vector<PipelineKey>{};
  };
  size_t line = 0;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    if (nl == std::string_view::npos) return fail(line + 1, "no newline at the end of the file");
    const std::string_view l = text.substr(0, nl);
    text.remove_prefix(nl + 1);
    if (++line == 1) {
      if (l != "chorus pipeline list 1") return fail(line, "not a chorus pipeline list (version 1)");
      continue;
    }
    if (keys.size() == kMaxListedPipelines)
      return fail(line, "more than " + std::to_string(kMaxListedPipelines) + " pipelines");
    std::vector<std::string_view> f;
    for (size_t at = 0; at <= l.size();) {
      const size_t sp = std::min(l.find(' ', at), l.size());
      f.push_back(l.substr(at, sp - at));
      at = sp + 1;
    }
    if (f.size() != 5) return fail(line, "expected 5 fields (op, bindings, push bytes, texel bindings, spec), got " +
                                              std::to_string(f.size()));
    PipelineKey k;
    if (f[0].empty() || f[0].size() > 64 ||
        !std::all_of(f[0].begin(), f[0].end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }))
      return fail(line, "op name is not 1..64 characters of [A-Za-z0-9_]");
    k.op = std::string(f[0]);
    const auto nb = parse_u32(f[1], 32), pb = parse_u32(f[2], 128), tb = parse_u32(f[3], (1u << 16) - 1);
    if (!nb || !pb || !tb || *pb % 4 != 0)
      return fail(line, "bindings (0..32), push bytes (a multiple of 4, at most 128) or texel bindings (0..65535) invalid");
    k.n_bindings = *nb;
    k.push_bytes = *pb;
    k.texel_bindings = *tb;
    if (f[4] != "-") {
      for (size_t at = 0; at <= f[4].size();) {
        const size_t c = std::min(f[4].find(',', at), f[4].size());
        const auto v = parse_u32(f[4].substr(at, c - at), UINT32_MAX);
        if (!v || k.spec.size() == 32) return fail(line, "specialisation constants are not up to 32 comma-separated uint32");
        k.spec.push_back(*v);
        at = c + 1;
      }
    }
    keys.push_back(std::move(k));
  }
  if (line == 0) return fail(1, "empty file");
  return keys;
}

std::vector<PipelineKey> read_pipeline_list(const std::string& path, std::string& warning) {
  const std::vector<char> bytes = vk::read_cache_file(path, warning, 1u << 20);
  if (bytes.empty()) return {};
  std::string error;
  std::vector<PipelineKey> keys = parse_pipeline_list(std::string_view(bytes.data(), bytes.size()), error);
  if (!error.empty()) warning = path + ": ignored, " + error;
  return keys;
}

}  // namespace chorus::ops
