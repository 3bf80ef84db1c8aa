#include "tools/model_setup.h"

#include <limits>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
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

const char* const kPlacementHelp =
    "  --device, -dev LIST     physical device indices from `chorus devices`, e.g. 0 or 0,1 or 0,0,1;\n"
    "                          repeating an index opens that device again as another logical device\n"
    "                          (default: every usable device)\n"
    "  -sm, --split-mode M     none | layer | tensor (default: tensor with several devices; llama.cpp's row is tensor)\n"
    "  -ts, --tensor-split R   ratios, e.g. 3,1 or 3/1 (any positive numbers; default: each device's free memory)\n"
    "  -mg, --main-gpu I       the device (position in --device) that holds everything with -sm none\n"
    "  --force-staging         use the discrete-GPU memory path (staging copies) even on unified memory\n"
    "  -ngl N                  accepted when N covers every layer (chorus keeps all layers on the GPUs)\n"
    "  -t N, -tb N             accepted and ignored (lavapipe's threads: LP_NUM_THREADS)\n";

bool parse_placement_flag(const std::vector<std::string>& args, size_t& i, Placement& p) {
  const std::string& a = args[i];
  if (a == "--device" || a == "-dev") {
    p.devices = parse_index_list(a, take_value(args, i));
  } else if (a == "-sm" || a == "--split-mode") {
    const std::string v = take_value(args, i);
    if (v == "row")
      throw UsageError("-sm row is llama.cpp's row split, which its Vulkan backend never had; chorus's equivalent "
                       "(every device works on every matrix, any ratio, any device count) is -sm tensor, the default "
                       "with several devices");
    try {
      p.mode = split::parse_split_mode(v);
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
    p.mode_given = true;
  } else if (a == "-ts" || a == "--tensor-split") {
    std::string v = take_value(args, i);
    std::replace(v.begin(), v.end(), '/', ',');  // llama.cpp writes 3/1 as well as 3,1
    const std::vector<std::string> items = split_list(a, v, "3,1");
    p.ratios.clear();
    for (const std::string& item : items) {
      const double r = parse_number(a, item);
      if (!(r > 0)) throw UsageError(a + " expects positive ratios, got '" + item + "' in '" + v + "'");
      p.ratios.push_back(r);
    }
    // Only proportions matter: scale so the largest is 1, so a sum such as 1e308 + 1e308 cannot
    // overflow to infinity downstream. A ratio that vanishes next to the largest is refused.
    const auto largest = std::max_element(p.ratios.begin(), p.ratios.end());
    const std::string largest_item = items[static_cast<size_t>(largest - p.ratios.begin())];
    const double scale = *largest;
    for (size_t k = 0; k < p.ratios.size(); ++k) {
      p.ratios[k] /= scale;
      if (!(p.ratios[k] > 0))
        throw UsageError(a + " ratio '" + items[k] + "' is too small next to '" + largest_item + "' in '" + v + "'");
    }
  } else if (a == "-mg" || a == "--main-gpu") {
    const uint64_t v = parse_uint(a, take_value(args, i));
    if (v > 1024) throw UsageError(a + " value is out of range");
    p.main_device = static_cast<uint32_t>(v);
  } else if (a == "--force-staging") {
    p.force_staging = true;
  } else if (a == "-ngl" || a == "--n-gpu-layers" || a == "--gpu-layers") {
    p.gpu_layers = parse_int(a, take_value(args, i), -1, std::numeric_limits<int32_t>::max());
  } else if (a == "-t" || a == "--threads" || a == "-tb" || a == "--threads-batch") {
    (void)parse_int(a, take_value(args, i), -1, 1 << 16);
    std::fprintf(stderr, "note: %s is accepted and ignored: chorus runs on the GPUs (lavapipe, the CPU driver, takes its "
                 "thread count from LP_NUM_THREADS)\n", a.c_str());
  } else if (a == "--verbose" || a == "-v" || a == "--no-mmap" || a == "--mlock" || a == "-fa" || a == "--flash-attn") {
    std::fprintf(stderr, "note: %s is accepted and ignored (%s)\n", a.c_str(),
                 a == "--verbose" || a == "-v" ? "the load log and timings are always on stderr"
                 : a == "-fa" || a == "--flash-attn" ? "chorus's attention kernel is always fused"
                                                     : "chorus reads the file once into device memory");
  } else {
    return false;
  }
  return true;
}

LoadedModel load_model(const std::string& path, const Placement& placement, bool validation) {
  if (placement.gpu_layers && *placement.gpu_layers >= 0) {
    const gguf::File f = gguf::File::open(path);
    const ModelConfig c = ModelConfig::from_gguf(f);
    if (*placement.gpu_layers < int64_t{c.n_layer})
      throw UsageError("-ngl " + std::to_string(*placement.gpu_layers) + " would leave layers on the CPU; chorus keeps all " +
                       std::to_string(c.n_layer) + " layers on the GPUs (omit -ngl, or give " + std::to_string(c.n_layer) +
                       " or more; -sm layer -ts spreads layers over several GPUs)");
  }
  LoadedModel m;
  m.instance = std::make_unique<vk::Instance>(vk::InstanceOptions{validation});
  std::vector<uint32_t> indices = placement.devices;
  if (indices.empty())
    for (const auto& d : m.instance->devices())
      if (d.usable()) indices.push_back(d.index);
  if (indices.empty()) throw std::runtime_error("no usable Vulkan device (see `chorus devices`)");
  std::vector<vk::Device*> devices;
  for (size_t i = 0; i < indices.size(); ++i) {
    vk::DeviceOptions o;
    o.physical_index = indices[i];
    o.opening = static_cast<uint32_t>(std::count(indices.begin(), indices.begin() + static_cast<std::ptrdiff_t>(i), indices[i]));
    o.force_staging = placement.force_staging;
    m.devices.push_back(std::make_unique<vk::Device>(*m.instance, o));
    devices.push_back(m.devices.back().get());
    std::fprintf(stderr, "device: %s%s\n", devices.back()->label().c_str(),
                 devices.back()->uses_staging() ? " (staging copies)" : "");
  }
  split::SplitRequest req;
  req.mode = devices.size() == 1 ? split::SplitMode::none : placement.mode;
  if (placement.mode_given) req.mode = placement.mode;
  req.main_device = placement.main_device;
  if (req.main_device >= devices.size())
    throw UsageError("-mg " + std::to_string(req.main_device) + " is not one of the " + std::to_string(devices.size()) +
                     " devices");
  req.ratios = placement.ratios;
  if (req.ratios.empty())  // each device's free memory
    for (vk::Device* d : devices)
      req.ratios.push_back(static_cast<double>(std::max<uint64_t>(1, d->allocator().budget() - d->allocator().reserved())));
  if (req.ratios.size() != devices.size())
    throw UsageError("-ts gives " + std::to_string(req.ratios.size()) + " ratios for " + std::to_string(devices.size()) +
                     " devices");
  std::fprintf(stderr, "model: %s\n", path.c_str());
  const auto t0 = std::chrono::steady_clock::now();
  m.model = Model::load(path, devices, req, LoadProgress{upload_progress});
  const ModelConfig& c = m.model->config();
  std::fprintf(stderr, "loaded %s (%s, %u layers, n_embd %u, n_vocab %u) in %.0f ms\n", c.name.empty() ? "model" : c.name.c_str(),
               c.arch.c_str(), c.n_layer, c.n_embd, c.n_vocab, ms_since(t0));
  if (devices.size() > 1) std::fprintf(stderr, "%s", split::describe(m.model->plan()).c_str());
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

bool parse_sampling_flag(const std::vector<std::string>& args, size_t& i, SamplerParams& sp,
                         std::optional<uint64_t>& seed) {
  const std::string& a = args[i];
  if (a == "--temp") {
    sp.temp = static_cast<float>(parse_number(a, take_value(args, i)));
  } else if (a == "--top-k") {
    sp.top_k = static_cast<int32_t>(parse_int(a, take_value(args, i), 0, std::numeric_limits<int32_t>::max()));
  } else if (a == "--top-p" || a == "--min-p") {
    const double v = parse_number(a, take_value(args, i));
    if (v < 0 || v > 1) throw UsageError(a + " expects a value between 0 and 1, got " + args[i]);
    (a == "--top-p" ? sp.top_p : sp.min_p) = static_cast<float>(v);
  } else if (a == "--repeat-penalty") {
    const double v = parse_number(a, take_value(args, i));
    if (v <= 0) throw UsageError("--repeat-penalty expects a positive number, got " + args[i]);
    sp.repeat_penalty = static_cast<float>(v);
  } else if (a == "--repeat-last-n") {
    sp.repeat_last_n = static_cast<int32_t>(parse_int(a, take_value(args, i), -1, std::numeric_limits<int32_t>::max()));
  } else if (a == "--seed") {
    seed = parse_uint(a, take_value(args, i));
  } else {
    return false;
  }
  return true;
}

}  // namespace chorus::tools
