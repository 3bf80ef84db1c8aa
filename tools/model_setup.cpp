#include "tools/model_setup.h"

#include <unistd.h>

#include <cstdio>
#include <stdexcept>

#include "tools/commands.h"

namespace chorus::tools {
namespace {

// "loading weights [#####.....]  50%  0.6 / 1.2 MiB": redrawn in place on a terminal, once at
// the end otherwise.
void upload_progress(uint64_t done, uint64_t total) {
  static int last = -1;
  const bool tty = isatty(STDERR_FILENO);
  const int pct = total ? static_cast<int>(done * 100 / total) : 100;
  if (pct == last || (!tty && done < total)) return;
  last = pct;
  char bar[31];
  for (int i = 0; i < 30; ++i) bar[i] = i < pct * 30 / 100 ? '#' : '.';
  bar[30] = 0;
  std::fprintf(stderr, "%sloading weights [%s] %3d%%  %.1f / %.1f MiB%s", tty ? "\r" : "", bar, pct,
               static_cast<double>(done) / (1 << 20), static_cast<double>(total) / (1 << 20), done >= total ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace

LoadedModel load_model(const std::string& path, std::optional<uint32_t> device_index, bool validation) {
  LoadedModel m;
  m.instance = std::make_unique<vk::Instance>(vk::InstanceOptions{validation});
  if (!device_index)
    for (const auto& d : m.instance->devices())
      if (d.usable()) {
        device_index = d.index;
        break;
      }
  if (!device_index) throw std::runtime_error("no usable Vulkan device (see `chorus devices`)");
  vk::DeviceOptions o;
  o.physical_index = *device_index;
  m.device = std::make_unique<vk::Device>(*m.instance, o);
  std::fprintf(stderr, "model: %s\ndevice: %s\n", path.c_str(), m.device->label().c_str());
  const auto t0 = std::chrono::steady_clock::now();
  m.model = Model::load(path, *m.device, LoadProgress{upload_progress});
  const ModelConfig& c = m.model->config();
  std::fprintf(stderr, "loaded %s (%s, %u layers, n_embd %u, n_vocab %u) in %.0f ms\n", c.name.empty() ? "model" : c.name.c_str(),
               c.arch.c_str(), c.n_layer, c.n_embd, c.n_vocab, ms_since(t0));
  return m;
}

void print_memory_use(const Context& ctx) {
  for (const DeviceMemoryUse& u : ctx.memory_use())
    std::fprintf(stderr, "%s: weights %.2f MiB, KV cache %.2f MiB, scratch %.2f MiB\n", u.device.c_str(),
                 static_cast<double>(u.weights) / (1 << 20), static_cast<double>(u.kv_cache) / (1 << 20),
                 static_cast<double>(u.scratch) / (1 << 20));
}

uint32_t parse_positive(const std::string& flag, const std::string& text) {
  const uint64_t v = parse_uint(flag, text);
  if (v == 0 || v > (1u << 24)) throw UsageError(flag + " expects a positive count up to 16777216, got '" + text + "'");
  return static_cast<uint32_t>(v);
}

}  // namespace chorus::tools
