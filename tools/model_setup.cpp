#include "tools/model_setup.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <stdexcept>

#include "engine/calibration.h"
#include "tools/commands.h"
#include "vkdevice/host_memory.h"

namespace chorus::tools {
namespace {

// --verbose: the weights' upload speed beside the file's own read speed (read(2) of the file's
// first GiB right after the load, so from the page cache when it fits there, as the upload read
// it; a sample, so that a large model does not wait for a second full read).
void report_upload(const std::string& path, const std::vector<split::DeviceMemory>& planned, double upload_ms,
                   double load_ms) {
  uint64_t weights = 0;
  for (const split::DeviceMemory& d : planned) weights += d.weights;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  std::vector<char> buf(size_t(16) << 20);
  uint64_t read_bytes = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (ssize_t n; read_bytes < (uint64_t(1) << 30) && (n = ::read(fd, buf.data(), buf.size())) > 0;)
    read_bytes += static_cast<uint64_t>(n);
  const double read_ms = ms_since(t0);
  ::close(fd);
  const double upload_bps = upload_ms > 0 ? static_cast<double>(weights) / (upload_ms / 1e3) : 0;
  const double read_bps = read_ms > 0 ? static_cast<double>(read_bytes) / (read_ms / 1e3) : 0;
  std::fprintf(stderr,
               "start-up: %.1f MiB of weights on the device(s) in %.0f ms (%.2f GB/s; the whole load took %.0f ms); the "
               "file alone reads at %.2f GB/s (%.1f MiB in %.0f ms): the upload runs at %.0f%% of the file's read speed\n",
               static_cast<double>(weights) / (1 << 20), upload_ms, upload_bps / 1e9, load_ms, read_bps / 1e9,
               static_cast<double>(read_bytes) / (1 << 20), read_ms, read_bps > 0 ? 100.0 * upload_bps / read_bps : 0.0);
}

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

split::SplitMode parse_split_mode_flag(const std::string& v) {
  if (v == "row")
    throw UsageError("-sm row is llama.cpp's row split, which its Vulkan backend never had; chorus's equivalent "
                     "(every device works on every matrix, any ratio, any device count) is -sm tensor, the default "
                     "with several devices");
  try {
    return split::parse_split_mode(v);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
}

std::vector<double> parse_ratios(const std::string& flag, std::string v) {
  std::replace(v.begin(), v.end(), '/', ',');  // llama.cpp writes 3/1 as well as 3,1
  const std::vector<std::string> items = split_list(flag, v, "3,1");
  std::vector<double> ratios;
  for (const std::string& item : items) {
    const double r = parse_number(flag, item);
    if (!(r > 0)) throw UsageError(flag + " expects positive ratios, got '" + item + "' in '" + v + "'");
    ratios.push_back(r);
  }
  // Only proportions matter: scale so the largest is 1, so a sum such as 1e308 + 1e308 cannot
  // overflow to infinity downstream. A ratio that vanishes next to the largest is refused.
  const auto largest = std::max_element(ratios.begin(), ratios.end());
  const std::string largest_item = items[static_cast<size_t>(largest - ratios.begin())];
  const double scale = *largest;
  for (size_t k = 0; k < ratios.size(); ++k) {
    ratios[k] /= scale;
    if (!(ratios[k] > 0))
      throw UsageError(flag + " ratio '" + items[k] + "' is too small next to '" + largest_item + "' in '" + v + "'");
  }
  return ratios;
}

void add_placement_options(cli::Parser& p, Placement& placement, bool with_layout) {
  p.section("devices and split:");
  if (with_layout) {
  p.option({"--device", "-dev"}, "LIST",
           "physical device indices from `chorus devices`, e.g. 0 or 0,1 or 0,0,1; repeating an index opens that "
           "device again as another logical device (default: every usable device)",
           [&placement](const std::string& flag, const std::string& v) { placement.devices = parse_index_list(flag, v); });
  p.option({"-sm", "--split-mode"}, "MODE",
           "none | layer | tensor | hybrid (default: tensor with several devices; llama.cpp's row is tensor; hybrid: "
           "a tensor split inside groups of similar devices, the groups one after another over the layers)",
           [&placement](const std::string&, const std::string& v) { placement.mode = parse_split_mode_flag(v); placement.mode_given = true; });
  p.option({"-ts", "--tensor-split"}, "RATIOS",
           "ratios, e.g. 3,1 or 3/1 (any positive numbers; default: each device's free memory)",
           [&placement](const std::string& flag, const std::string& v) { placement.ratios = parse_ratios(flag, v); });
  }
  p.option({"--groups"}, "LIST",
           "-sm hybrid: each device's group, e.g. 0,0,1 (default: consecutive devices of equal calibrated speed, "
           "within 10%, form a group)",
           [&placement](const std::string& flag, const std::string& v) { placement.groups = parse_index_list(flag, v); });
  p.option({"-mg", "--main-gpu"}, "I", "the device (position in --device) that holds everything with -sm none",
           [&placement](const std::string& flag, const std::string& v) {
             const uint64_t n = parse_uint(flag, v);
             if (n > 1024) throw UsageError(flag + " value is out of range");
             placement.main_device = static_cast<uint32_t>(n);
           });
  p.flag({"--force-staging"}, "use the discrete-GPU memory path (staging copies) even on unified memory",
         placement.force_staging);
  p.option({"--fit"}, "on|off",
           "on (default): check every device's bytes before loading, rebalance ratios not given and shrink the "
           "context to fit, else refuse with what is missing; off: load exactly what was asked",
           [&placement](const std::string& flag, const std::string& v) {
             if (v != "on" && v != "off") throw UsageError(flag + " is on or off, not '" + v + "'");
             placement.fit = v == "on";
           });
  p.option({"--fit-ctx-min"}, "N", "the smallest context fitting may shrink to (default 4096, or the model's own if smaller)",
           [&placement](const std::string& flag, const std::string& v) { placement.fit_ctx_min = parse_positive(flag, v); });
  p.option({"--device-speed"}, "LIST",
           "multiply each device's calibrated speed, e.g. 1,0.5 (one per device; to simulate a slower GPU)",
           [&placement](const std::string& flag, const std::string& v) {
             placement.speed_factors.clear();
             for (const std::string& item : split_list(flag, v, "1,0.5")) {
               const double f = parse_number(flag, item);
               if (!(f > 0) || f > 1e6) throw UsageError(flag + " expects positive factors, got '" + item + "'");
               placement.speed_factors.push_back(f);
             }
           });
  p.flag({"--show-devices"}, "after the work, print each device's memory in use, busy fraction and wait times over the last tokens",
         placement.show_devices);
  p.flag({"--recalibrate"}, "measure each device's weight-reading speed again (it is cached per device and driver)",
         placement.recalibrate);
  p.option({"--memory-budget"}, "LIST",
           "pretend each device has this much memory, e.g. 384M,128M (one per device; to simulate unequal GPUs)",
           [&placement](const std::string& flag, const std::string& v) {
             placement.budgets.clear();
             for (const std::string& item : split_list(flag, v, "384M,128M")) placement.budgets.push_back(parse_bytes(flag, item));
           });
  p.option({"-ngl", "--n-gpu-layers", "--gpu-layers"}, "N",
           "accepted when N covers every layer (chorus keeps all layers on the GPUs)",
           [&placement](const std::string& flag, const std::string& v) {
             placement.gpu_layers = parse_int(flag, v, -1, std::numeric_limits<int32_t>::max());
           });
  p.option({"-t", "--threads", "-tb", "--threads-batch"}, "N",
           "accepted and ignored (lavapipe's threads: LP_NUM_THREADS)", [](const std::string& flag, const std::string& v) {
             (void)parse_int(flag, v, -1, 1 << 16);
             std::fprintf(stderr, "note: %s is accepted and ignored: chorus runs on the GPUs (lavapipe, the CPU driver, takes "
                          "its thread count from LP_NUM_THREADS)\n", flag.c_str());
           });
  const auto ignored = [](const char* why) {
    return [why](const std::string& flag) {
      std::fprintf(stderr, "note: %s is accepted and ignored (%s)\n", flag.c_str(), why);
    };
  };
  const char* const fused = "chorus's attention kernel is always fused";
  const char* const once = "chorus reads the file once into device memory";
  p.flag({"--profile"},
         "time every dispatch by GPU timestamps and print, after the work, the time per kernel (bench: per "
         "test; serve: when it stops); the timestamps slow the work themselves (lavapipe's decode by about a "
         "quarter)",
         placement.profile);
  p.flag({"--verbose", "-v"},
         "the start-up report: weight upload speed beside the file's read speed, pipelines built and "
         "the pipeline cache, time to the first token",
         placement.verbose)
      .flag({"-fa", "--flash-attn"}, std::string("accepted and ignored: ") + fused, [f = ignored(fused)] { f("-fa"); })
      .flag({"--no-mmap", "--mlock"}, std::string("accepted and ignored: ") + once, [f = ignored(once)] { f("--no-mmap/--mlock"); });
}

GgmlType main_weight_type(const gguf::File& file) {
  std::map<GgmlType, uint64_t> bytes;
  for (const auto& t : file.tensors())
    if (t.n_dims >= 2 && t.name != "token_embd.weight") bytes[t.type] += t.size;
  const auto best = std::max_element(bytes.begin(), bytes.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
  return best == bytes.end() ? GgmlType::F32 : best->first;
}

split::FitRequest fit_request(const ModelConfig& config, const gguf::File& file, const Placement& placement,
                              const ContextRequest& context, const std::vector<uint64_t>& free_bytes,
                              bool collective_per_device) {
  const size_t n = free_bytes.size();
  split::FitRequest fr;
  fr.model = model_shape(config, file);
  fr.free_bytes = free_bytes;
  fr.split.mode = n == 1 ? split::SplitMode::none : placement.mode;
  if (placement.mode_given) fr.split.mode = placement.mode;
  fr.mode_given = placement.mode_given;
  fr.split.main_device = placement.main_device;
  if (fr.split.main_device >= n)
    throw UsageError("-mg " + std::to_string(fr.split.main_device) + " is not one of the " + std::to_string(n) + " devices");
  fr.split.ratios = placement.ratios;
  if (!fr.split.ratios.empty() && fr.split.ratios.size() != n)
    throw UsageError("-ts gives " + std::to_string(fr.split.ratios.size()) + " ratios for " + std::to_string(n) + " devices");
  fr.ctx.collective_per_device = collective_per_device;
  const uint32_t trained = config.n_ctx_train;
  fr.ctx.n_ctx = context.n_ctx ? context.n_ctx : std::min<uint32_t>(trained, 4096);
  if (context.n_ctx > trained)
    std::fprintf(stderr, "warning: a context of %u tokens is longer than the %u the model was trained on; "
                 "quality past %u is not what the model learnt\n", context.n_ctx, trained, trained);
  fr.ctx.n_seq = context.n_seq;
  fr.ctx.n_ubatch = context.n_ubatch;
  fr.ctx.logit_rows = context.logit_rows;
  fr.fit = placement.fit;
  fr.n_ctx_min = context.shrinkable ? placement.fit_ctx_min.value_or(std::min<uint32_t>(4096, trained)) : fr.ctx.n_ctx;
  return fr;
}

LoadedModel open_devices(const std::string& path, const Placement& placement, bool validation) {
  // The header first: a bad file fails before any device is opened, and the plan needs its shape.
  const gguf::File header = gguf::File::open(path);
  const ModelConfig config = ModelConfig::from_gguf(header);
  if (placement.gpu_layers && *placement.gpu_layers >= 0 && *placement.gpu_layers < int64_t{config.n_layer})
    throw UsageError("-ngl " + std::to_string(*placement.gpu_layers) + " would leave layers on the CPU; chorus keeps all " +
                     std::to_string(config.n_layer) + " layers on the GPUs (omit -ngl, or give " +
                     std::to_string(config.n_layer) + " or more; -sm layer -ts spreads layers over several GPUs)");
  LoadedModel m;
  m.instance = std::make_unique<vk::Instance>(vk::InstanceOptions{validation});
  std::vector<uint32_t> indices = placement.devices;
  if (indices.empty())
    for (const auto& d : m.instance->devices())
      if (d.usable()) indices.push_back(d.index);
  if (indices.empty()) throw std::runtime_error("no usable Vulkan device (see `chorus devices`)");
  if (!placement.budgets.empty() && placement.budgets.size() != indices.size())
    throw UsageError("--memory-budget gives " + std::to_string(placement.budgets.size()) + " sizes for " +
                     std::to_string(indices.size()) + " devices");
  // Devices of one instance of lavapipe share one pool of worker threads, and a lock around
  // every dispatch: logical devices of the CPU that work at the same time (a tensor or hybrid
  // split) get an instance each, with the host's cores shared out between them.
  const split::SplitMode mode = indices.size() == 1 ? split::SplitMode::none : placement.mode;
  const bool concurrent = mode == split::SplitMode::tensor || mode == split::SplitMode::hybrid;
  std::vector<vk::Device*> devices;
  for (size_t i = 0; i < indices.size(); ++i) {
    const vk::Instance* instance = m.instance.get();
    const auto openings = static_cast<uint32_t>(std::count(indices.begin(), indices.end(), indices[i]));
    if (auto own = concurrent ? vk::own_instance_for(*m.instance, indices[i], openings, validation) : nullptr) {
      m.own_instances.push_back(std::move(own));
      instance = m.own_instances.back().get();
    }
    vk::DeviceOptions o;
    o.physical_index = indices[i];
    o.opening = static_cast<uint32_t>(std::count(indices.begin(), indices.begin() + static_cast<std::ptrdiff_t>(i), indices[i]));
    o.force_staging = placement.force_staging;
    o.profile = placement.profile;
    if (!placement.budgets.empty()) o.memory_budget = placement.budgets[i];
    m.devices.push_back(std::make_unique<vk::Device>(*instance, o));
    devices.push_back(m.devices.back().get());
    std::string threads;
    if (const std::optional<uint32_t> t = instance->cpu_threads())
      threads = *t ? ", an instance of its own with " + std::to_string(*t) + " worker threads"
                   : ", an instance of its own running dispatches on its submitting thread";
    std::fprintf(stderr, "device: %s%s%s\n", devices.back()->label().c_str(),
                 devices.back()->uses_staging() ? " (staging copies)" : "", threads.c_str());
  }
  m.physical = std::move(indices);
  return m;
}

void load_into(LoadedModel& m, const std::string& path, const Placement& placement, const ContextRequest& context) {
  const gguf::File header = gguf::File::open(path);
  const ModelConfig config = ModelConfig::from_gguf(header);
  const std::vector<uint32_t>& indices = m.physical;
  std::vector<vk::Device*> devices;
  for (const auto& d : m.devices) devices.push_back(d.get());
  std::vector<uint64_t> free_bytes;
  bool per_device = false;
  for (vk::Device* d : devices) {
    const vk::Allocator& a = d->allocator();
    free_bytes.push_back(a.budget() > a.reserved() ? a.budget() - a.reserved() : 0);
    per_device = per_device || !vk::host_import_unavailable(*d).empty();
  }
  split::FitRequest fr = fit_request(config, header, placement, context, free_bytes, per_device);
  if (!placement.speed_factors.empty() && placement.speed_factors.size() != devices.size())
    throw UsageError("--device-speed gives " + std::to_string(placement.speed_factors.size()) + " factors for " +
                     std::to_string(devices.size()) + " devices");
  const GgmlType main_type = main_weight_type(header);
  std::vector<uint32_t> recalibrated;  // logical devices of one GPU share its calibration
  for (size_t i = 0; i < devices.size(); ++i) {
    const bool again = placement.recalibrate &&
                       std::find(recalibrated.begin(), recalibrated.end(), indices[i]) == recalibrated.end();
    if (again) recalibrated.push_back(indices[i]);
    const DeviceSpeed sp = device_speed(*devices[i], main_type, again);
    const double factor = placement.speed_factors.empty() ? 1.0 : placement.speed_factors[i];
    fr.speed.push_back(sp.weight_bytes_per_second * factor);
    std::fprintf(stderr, "speed: %s reads %s weights at %.2f GB/s (%s%s)\n", devices[i]->label().c_str(),
                 type_traits(main_type).name, fr.speed.back() / 1e9, sp.source.c_str(),
                 factor != 1.0 ? (", x" + format_default(factor) + " by --device-speed").c_str() : "");
  }
  if (devices.size() > 1 && fr.split.mode != split::SplitMode::layer) {
    fr.reduce_seconds = reduce_round_trip_seconds(devices);
    std::fprintf(stderr, "speed: a reduce point's round trip through the collective takes %.1f us\n", fr.reduce_seconds * 1e6);
  }
  if (fr.split.mode == split::SplitMode::hybrid) {
    fr.split.groups = placement.groups.empty() ? split::speed_groups(fr.speed) : placement.groups;
    if (fr.split.groups.size() != devices.size())
      throw UsageError("--groups gives " + std::to_string(fr.split.groups.size()) + " groups for " +
                       std::to_string(devices.size()) + " devices");
  }
  const split::FitResult fitted = split::fit(fr);
  for (const std::string& note : fitted.notes) std::fprintf(stderr, "fit: %s\n", note.c_str());
  if (fitted.plan.mode == split::SplitMode::hybrid && placement.groups.empty()) {
    std::string g;
    for (uint32_t x : fitted.plan.groups) g += (g.empty() ? "" : ",") + std::to_string(x);
    std::fprintf(stderr, "fit: hybrid groups %s: consecutive devices of equal calibrated speed (within 10%%) share one\n",
                 g.c_str());
  }
  if (fitted.predicted_token_seconds > 0)
    std::fprintf(stderr, "predicted generation: %.2f ms per token (%.1f t/s): the weight reads at the calibrated speeds and the "
                 "reduce round trips; dispatch costs not included\n",
                 fitted.predicted_token_seconds * 1e3, 1.0 / fitted.predicted_token_seconds);
  std::fprintf(stderr, "%s", describe_memory(fitted, devices).c_str());
  if (!fitted.fits && placement.fit) throw std::runtime_error(fitted.refusal);
  if (!fitted.fits) std::fprintf(stderr, "fit: --fit off: loading as asked although %s\n", fitted.refusal.c_str());

  split::SplitRequest req = fr.split;
  req.ratios.clear();
  for (const split::DeviceShard& s : fitted.plan.devices) req.ratios.push_back(std::max(s.ratio, 1e-9));
  if (!fr.split.ratios.empty()) req.ratios = fr.split.ratios;
  std::fprintf(stderr, "model: %s\n", path.c_str());
  const auto t0 = std::chrono::steady_clock::now();
  m.model = Model::load(path, devices, req, LoadProgress{upload_progress});
  const ModelConfig& c = m.model->config();
  const double load_ms = ms_since(t0);
  std::fprintf(stderr, "loaded %s (%s, %u layers, n_embd %u, n_vocab %u) in %.0f ms\n", c.name.empty() ? "model" : c.name.c_str(),
               c.arch.c_str(), c.n_layer, c.n_embd, c.n_vocab, load_ms);
  if (placement.verbose) report_upload(path, fitted.memory, m.model->upload_ms(), load_ms);
  if (devices.size() > 1) std::fprintf(stderr, "%s", split::describe(m.model->plan()).c_str());
  m.context = ContextOptions{fitted.ctx.n_ctx, context.n_seq, context.n_ubatch};
  m.planned = fitted.memory;
  m.predicted_token_seconds = fitted.predicted_token_seconds;
}

LoadedModel load_model(const std::string& path, const Placement& placement, bool validation, const ContextRequest& context) {
  LoadedModel m = open_devices(path, placement, validation);
  load_into(m, path, placement, context);
  return m;
}

uint64_t LoadedModel::validation_errors() const {
  uint64_t n = instance ? instance->validation_errors() : 0;
  for (const auto& i : own_instances) n += i->validation_errors();
  return n;
}

void print_startup(const LoadedModel& m, double load_ms, double first_token_ms) {
  uint64_t built = 0, ns = 0, cache = 0;
  for (const auto& d : m.devices) {
    built += d->counters().pipelines.load();
    ns += d->counters().pipeline_ns.load();
    cache += d->pipeline_cache_loaded_bytes();
  }
  const size_t queued = m.model->pipelines_queued();
  char ahead[200] = "none ahead of time: no list from an earlier run, or CHORUS_NO_PIPELINE_CACHE";
  if (queued)
    std::snprintf(ahead, sizeof ahead,
                  "%zu of them on %u threads from the load's start, from the %zu the last run built",
                  m.model->pipelines_prepared(), std::max(1u, std::thread::hardware_concurrency()), queued);
  std::fprintf(stderr,
               "start-up: first token %.0f ms after the start: load %.0f ms, %" PRIu64 " pipelines created (%.0f ms of "
               "compiling; %s; pipeline cache: %s)\n",
               first_token_ms, load_ms, built, static_cast<double>(ns) / 1e6, ahead,
               cache ? (std::to_string(cache) + " bytes read from disk").c_str()
                     : "empty: a first run, or CHORUS_NO_PIPELINE_CACHE");
}

std::string describe_memory(const split::FitResult& f, const std::vector<vk::Device*>& devices) {
  std::string out;
  char line[512];
  const auto mib = [](uint64_t b) { return static_cast<double>(b) / (1 << 20); };
  std::snprintf(line, sizeof line, "plan: %s split, context %u x %u sequence(s); per device (MiB):\n",
                split::to_string(f.plan.mode), f.ctx.n_ctx, f.ctx.n_seq);
  out += line;
  std::snprintf(line, sizeof line, "  %-44s %9s %9s %9s %9s %9s %9s\n", "device", "weights", "KV", "scratch", "total", "usable",
                "left");
  out += line;
  for (size_t d = 0; d < f.memory.size(); ++d) {
    const split::DeviceMemory& dm = f.memory[d];
    const double left = mib(f.usable[d]) - mib(dm.total());
    std::snprintf(line, sizeof line, "  %-44.44s %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f\n",
                  d < devices.size() ? devices[d]->label().c_str() : "?", mib(dm.weights), mib(dm.kv_cache),
                  mib(dm.scratch + dm.collective), mib(dm.total()), mib(f.usable[d]), left);
    out += line;
  }
  return out;
}

std::string device_view(const LoadedModel& loaded, const Context& ctx) {
  const std::optional<split::CollectiveStats> cs = ctx.collective_stats();
  const std::vector<DeviceMemoryUse> use = ctx.memory_use();
  // Which of the devices holding anything (memory_use's order) reduce through a collective: all
  // of a tensor split's, and on a hybrid split those whose group has several devices.
  std::vector<bool> reduces(use.size(), cs.has_value());
  if (const split::Plan& plan = loaded.model->plan(); cs && plan.mode == split::SplitMode::hybrid) {
    std::vector<uint32_t> groups;
    for (size_t d = 0; d < plan.devices.size(); ++d)
      if (!plan.devices[d].empty()) groups.push_back(plan.groups.at(d));
    for (size_t d = 0; d < reduces.size() && d < groups.size(); ++d)
      reduces[d] = std::count(groups.begin(), groups.end(), groups[d]) > 1;
  }
  std::vector<vk::ActivitySummary> activity(use.size());
  for (size_t d = 0; d < use.size(); ++d)
    for (const auto& dev : loaded.devices)
      if (dev->label() == use[d].device) activity[d] = dev->activity();
  std::string out = "devices: memory in use";
  char line[640];
  if (!activity.empty() && activity[0].steps > 0) {
    const vk::ActivitySummary& a = activity[0];
    std::snprintf(line, sizeof line,
                  "; over the last %zu step(s) (%llu token(s), %.2f ms per token): busy = the share of the wall time the "
                  "device ran its work (GPU timestamps), waiting = the rest (for the other devices, the reduces or the host)",
                  a.steps, static_cast<unsigned long long>(a.tokens),
                  a.tokens ? static_cast<double>(a.wall_ns) / 1e6 / static_cast<double>(a.tokens) : 0.0);
    out += line;
    if (cs) out += "; and at what share of the reduce points so far each was the last the reduces waited for";
  }
  out += "\n";
  for (size_t d = 0; d < use.size(); ++d) {
    const DeviceMemoryUse& u = use[d];
    std::snprintf(line, sizeof line, "  %-46.46s %8.1f MiB (weights %.1f, KV %.1f, scratch %.1f)", u.device.c_str(),
                  static_cast<double>(u.weights + u.kv_cache + u.scratch) / (1 << 20), static_cast<double>(u.weights) / (1 << 20),
                  static_cast<double>(u.kv_cache) / (1 << 20), static_cast<double>(u.scratch) / (1 << 20));
    out += line;
    const vk::ActivitySummary& a = activity[d];
    if (a.timed()) {
      std::snprintf(line, sizeof line, "; busy %.0f%% (%.2f ms per token), waiting %.2f ms per token", 100.0 * a.busy_fraction(),
                    a.busy_ms_per_token(), a.wait_ms_per_token());
      out += line;
    } else if (a.steps > 0) {
      out += "; busy: n/a (device has no timestamps)";
    }
    if (cs && reduces[d] && d < cs->device_last.size() && cs->reduces > 0) {
      std::snprintf(line, sizeof line, "; last to deliver at %.0f%% of reduce points",
                    100.0 * static_cast<double>(cs->device_last[d]) / static_cast<double>(cs->reduces));
      out += line;
    }
    out += "\n";
  }
  // On a CPU device the devices' memory is this process's: its peak follows the plan plus the
  // fixed overhead docs/memory.md measures (libraries, the driver, its kernel compiler).
  uint64_t planned = 0;
  for (const split::DeviceMemory& m : loaded.planned) planned += m.total();
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  std::snprintf(line, sizeof line, "process: peak resident memory %.1f MiB; the plan's device bytes %.1f MiB%s\n",
                static_cast<double>(ru.ru_maxrss) / 1024.0, static_cast<double>(planned) / (1 << 20),
                !loaded.devices.empty() && loaded.devices[0]->info().type == vk::DeviceType::cpu
                    ? " (a CPU device's memory is this process's memory)"
                    : "");
  out += line;
  return out;
}

std::string profile_table(const std::string& device, const std::string& what, const std::vector<vk::KernelTime>& kernels,
                          uint64_t untimed, double tokens) {
  if (kernels.empty() && untimed == 0) return "";
  uint64_t total_ns = 0, calls = 0;
  for (const vk::KernelTime& k : kernels) {
    total_ns += k.ns;
    calls += k.calls;
  }
  const double per = tokens > 0 ? 1.0 / tokens : 0.0;
  std::string out;
  char line[1024];
  std::snprintf(line, sizeof line,
                "profile of %s, %s: %.3f ms of dispatches per token over %.0f token(s), %.1f dispatches per token "
                "(GPU timestamps: each dispatch from the end of the work before it to its own end)\n",
                what.c_str(), device.c_str(), static_cast<double>(total_ns) / 1e6 * per, tokens,
                static_cast<double>(calls) * per);
  out += line;
  out += "  ms/token   share  calls/token    us/call  kernel [specialisation constants] (workgroups)\n";
  for (const vk::KernelTime& k : kernels) {
    std::snprintf(line, sizeof line, "  %8.3f  %5.1f%%  %11.2f  %9.1f  %s (%s)\n", static_cast<double>(k.ns) / 1e6 * per,
                  total_ns ? 100.0 * static_cast<double>(k.ns) / static_cast<double>(total_ns) : 0.0,
                  static_cast<double>(k.calls) * per, static_cast<double>(k.ns) / 1e3 / static_cast<double>(k.calls),
                  k.kernel.c_str(), k.groups.c_str());
    out += line;
  }
  if (untimed) {
    std::snprintf(line, sizeof line, "  (%" PRIu64 " dispatch(es) not timed: a recording with more than its timestamps had room for)\n", untimed);
    out += line;
  }
  return out;
}

int finish_command(const char* name, const LoadedModel& loaded, const Context& ctx, const Placement& placement,
                   bool was_interrupted) {
  if (placement.show_devices) std::fprintf(stderr, "%s", device_view(loaded, ctx).c_str());
  bool profiled = false;  // --profile, or CHORUS_PROFILE=1
  for (const auto& dev : loaded.devices)
    if (vk::DispatchProfile* prof = dev->profile()) {
      const std::string t = profile_table(dev->label(), std::string("chorus ") + name, prof->kernels(), prof->untimed(),
                                          static_cast<double>(ctx.counters().tokens));
      std::fputs(t.c_str(), stderr);
      profiled = profiled || !t.empty();
    }
  if (placement.profile && !profiled) std::fputs(kProfileNothingTimed, stderr);
  if (const uint64_t errors = loaded.validation_errors(); errors > 0) {
    std::fprintf(stderr, "chorus %s: the validation layer reported %llu error(s)\n", name,
                 static_cast<unsigned long long>(errors));
    return 1;
  }
  return was_interrupted ? kInterruptedExit : 0;
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

void add_sampling_options(cli::Parser& p, SamplerParams& sp, std::optional<uint64_t>& seed) {
  p.section("sampling:");
  p.option({"--temp"}, "T", "temperature; 0 or less is greedy (default " + format_default(sp.temp) + ")",
           [&sp](const std::string& flag, const std::string& v) { sp.temp = static_cast<float>(parse_number(flag, v)); });
  p.option({"--top-k"}, "K", "keep the K most likely tokens; 0 disables (default " + std::to_string(sp.top_k) + ")",
           [&sp](const std::string& flag, const std::string& v) {
             sp.top_k = static_cast<int32_t>(parse_int(flag, v, 0, std::numeric_limits<int32_t>::max()));
           });
  const auto unit = [](float& target) {
    return [&target](const std::string& flag, const std::string& v) {
      const double x = parse_number(flag, v);
      if (x < 0 || x > 1) throw UsageError(flag + " expects a value between 0 and 1, got " + v);
      target = static_cast<float>(x);
    };
  };
  p.option({"--top-p"}, "P", "keep the smallest set with probability mass P; 1 disables (default " + format_default(sp.top_p) + ")",
           unit(sp.top_p));
  p.option({"--min-p"}, "M", "drop tokens below M times the best probability; 0 disables (default " + format_default(sp.min_p) + ")",
           unit(sp.min_p));
  p.option({"--repeat-penalty"}, "R", "penalise the last tokens' logits by R; 1 disables (default " + format_default(sp.repeat_penalty) + ")",
           [&sp](const std::string& flag, const std::string& v) {
             const double x = parse_number(flag, v);
             if (x <= 0) throw UsageError(flag + " expects a positive number, got " + v);
             sp.repeat_penalty = static_cast<float>(x);
           });
  p.option({"--repeat-last-n"}, "N",
           "tokens the penalty looks back over; 0 disables, -1 all (default " + std::to_string(sp.repeat_last_n) + ")",
           [&sp](const std::string& flag, const std::string& v) {
             sp.repeat_last_n = static_cast<int32_t>(parse_int(flag, v, -1, std::numeric_limits<int32_t>::max()));
           });
  p.option({"--seed", "-s"}, "S", "random seed; the same seed gives the same text (default: random, printed)",
           [&seed](const std::string& flag, const std::string& v) { seed = parse_uint(flag, v); });
}

std::string format_default(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace chorus::tools
