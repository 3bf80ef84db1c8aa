// `chorus fit`: where a model would go and how many bytes each device would hold, from the GGUF
// header and the device survey alone (no device is opened, no weight is read).
#include <cinttypes>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/calibration.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/model_config.h"
#include "split/memory.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/model_setup.h"
#include "vkdevice/instance.h"

namespace chorus::tools {

namespace {

// What a device offers before it is opened: as vk::Device computes its budget (its device-local
// heaps' budgets), and whether it can import host memory (the collective's slots then live in
// host memory, not in the device's).
uint64_t survey_free_bytes(const vk::DeviceInfo& d) {
  uint64_t budget = 0;
  for (const auto& h : d.heaps)
    if (h.device_local) budget += h.budget;
  if (budget == 0 && !d.heaps.empty()) budget = d.heaps[0].budget;
  return budget;
}

double mib(uint64_t b) { return static_cast<double>(b) / (1 << 20); }

}  // namespace

int cmd_fit(const std::vector<std::string>& args) {
  std::string model_path, format = "md";
  uint32_t n_ctx = 0, n_seq = 1, n_ubatch = 512;
  Placement placement;
  cli::Parser p("usage: chorus fit -m MODEL [-c N] [-np N] [--device LIST] [-sm MODE] [-ts RATIOS] [-o md|json]",
                "Plans a model on the devices without loading it: reads the GGUF header and the device survey\n"
                "only, and prints per device its free memory, the share of the model it would get and the\n"
                "bytes it would hold (weights, KV cache for the context and sequences, scratch), the total\n"
                "and what is left, then the split mode and the context chosen. When it does not fit, the\n"
                "ratios and the context are adjusted as `chorus run` would adjust them, or the reason is\n"
                "printed (exit status 1). Free memory is each device's memory budget as the driver reports\n"
                "it; opening one GPU twice (--device 0,0) counts its memory twice, as the tests' logical\n"
                "devices do.");
  p.option({"-m", "--model"}, "FILE", "a GGUF model", model_path)
      .option({"-c", "--ctx-size"}, "N", "context length in tokens (default: the model's, at most 4096)",
              store_positive(n_ctx))
      .option({"-np", "--parallel"}, "N", "sequences, each with its own KV cache (server slots; default 1)",
              store_positive(n_seq))
      .option({"-ub", "--ubatch-size"}, "N", "tokens per forward pass (default 512)",
              store_positive(n_ubatch))
      .option({"-o", "--output"}, "FORMAT", "md (a table, default) or json", [&](const std::string& flag, const std::string& v) {
        if (v != "md" && v != "json") throw UsageError(flag + " is md or json, not '" + v + "'");
        format = v;
      });
  add_placement_options(p, placement);
  if (!p.parse(args)) return 0;
  if (model_path.empty()) throw UsageError("-m MODEL is required");

  const gguf::File header = gguf::File::open(model_path);
  const ModelConfig config = ModelConfig::from_gguf(header);
  const vk::Instance inst;
  std::vector<uint32_t> indices = placement.devices;
  if (indices.empty())
    for (const auto& d : inst.devices())
      if (d.usable()) indices.push_back(d.index);
  if (indices.empty()) throw std::runtime_error("no usable Vulkan device (see `chorus devices`)");
  if (!placement.budgets.empty() && placement.budgets.size() != indices.size())
    throw UsageError("--memory-budget gives " + std::to_string(placement.budgets.size()) + " sizes for " +
                     std::to_string(indices.size()) + " devices");
  std::vector<uint64_t> free_bytes;
  std::vector<const vk::DeviceInfo*> infos;
  bool per_device = false;
  for (size_t i = 0; i < indices.size(); ++i) {
    if (indices[i] >= inst.devices().size())
      throw UsageError("--device " + std::to_string(indices[i]) + " is not a device index: this machine has " +
                       std::to_string(inst.devices().size()) + " (see `chorus devices`)");
    const vk::DeviceInfo& d = inst.devices()[indices[i]];
    if (!d.usable()) throw std::runtime_error("device " + std::to_string(d.index) + " (" + d.name + ") is not usable: " + d.reject_reason);
    infos.push_back(&d);
    free_bytes.push_back(placement.budgets.empty() ? survey_free_bytes(d) : placement.budgets[i]);
    per_device = per_device || !d.external_memory_host;
  }
  split::FitRequest fr =
      fit_request(config, header, placement, ContextRequest{n_ctx, n_seq, n_ubatch, n_seq}, free_bytes, per_device);
  if (!placement.speed_factors.empty() && placement.speed_factors.size() != infos.size())
    throw UsageError("--device-speed gives " + std::to_string(placement.speed_factors.size()) + " factors for " +
                     std::to_string(infos.size()) + " devices");
  // Speeds from earlier calibrations only (fit opens no device); without every one, ratios follow memory.
  const GgmlType main_type = main_weight_type(header);
  for (size_t i = 0; i < infos.size(); ++i) {
    const std::optional<double> v = cached_device_speed(*infos[i], main_type);
    if (!v) {
      fr.speed.clear();
      break;
    }
    fr.speed.push_back(*v * (placement.speed_factors.empty() ? 1.0 : placement.speed_factors[i]));
  }
  if (fr.split.mode == split::SplitMode::hybrid) {
    if (!placement.groups.empty()) fr.split.groups = placement.groups;
    else if (!fr.speed.empty()) fr.split.groups = split::speed_groups(fr.speed);
    else
      throw UsageError("-sm hybrid needs --groups here: the devices have not been calibrated yet (a `chorus run` on "
                       "them does it), so fit cannot group them by speed");
    if (fr.split.groups.size() != infos.size())
      throw UsageError("--groups gives " + std::to_string(fr.split.groups.size()) + " groups for " +
                       std::to_string(infos.size()) + " devices");
  }
  const split::FitResult r = split::fit(fr);

  if (format == "json") {
    nlohmann::ordered_json j;
    j["model"] = model_path;
    j["arch"] = config.arch;
    j["fits"] = r.fits;
    j["split_mode"] = split::to_string(r.plan.mode);
    j["n_ctx"] = r.ctx.n_ctx;
    j["n_seq"] = r.ctx.n_seq;
    j["n_ubatch"] = r.ctx.n_ubatch;
    j["notes"] = r.notes;
    if (r.predicted_token_seconds > 0) j["predicted_tokens_per_second"] = 1.0 / r.predicted_token_seconds;
    if (!r.fits) j["refusal"] = r.refusal;
    j["devices"] = nlohmann::ordered_json::array();
    for (size_t d = 0; d < infos.size(); ++d) {
      const split::DeviceMemory& m = r.memory[d];
      j["devices"].push_back({{"index", infos[d]->index},
                              {"name", infos[d]->name},
                              {"vendor", infos[d]->vendor},
                              {"free_bytes", free_bytes[d]},
                              {"usable_bytes", r.usable[d]},
                              {"ratio", r.plan.devices[d].ratio},
                              {"weights_bytes", m.weights},
                              {"kv_cache_bytes", m.kv_cache},
                              {"scratch_bytes", m.scratch + m.collective},
                              {"total_bytes", m.total()},
                              {"left_bytes", static_cast<int64_t>(r.usable[d]) - static_cast<int64_t>(m.total())}});
    }
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s: %s, %u layers, %u KV heads; %s split, context %u x %u sequence(s), %u tokens per pass\n\n",
                model_path.c_str(), config.arch.c_str(), config.n_layer, config.n_head_kv, split::to_string(r.plan.mode),
                r.ctx.n_ctx, r.ctx.n_seq, r.ctx.n_ubatch);
    std::printf("| %-3s | %-32s | %-10s | %9s | %6s | %9s | %9s | %9s | %9s | %9s |\n", "dev", "name", "vendor", "free MiB",
                "ratio", "weights", "KV", "scratch", "total", "left");
    std::printf("| --: | -------------------------------- | ---------- | --------: | -----: | --------: | --------: | --------: | --------: | --------: |\n");
    for (size_t d = 0; d < infos.size(); ++d) {
      const split::DeviceMemory& m = r.memory[d];
      std::printf("| %3u | %-32.32s | %-10.10s | %9.1f | %6.3f | %9.1f | %9.1f | %9.1f | %9.1f | %9.1f |\n", infos[d]->index,
                  infos[d]->name.c_str(), infos[d]->vendor.c_str(), mib(free_bytes[d]), r.plan.devices[d].ratio, mib(m.weights),
                  mib(m.kv_cache), mib(m.scratch + m.collective), mib(m.total()), mib(r.usable[d]) - mib(m.total()));
    }
    std::printf("\n(MiB; 'left' is after a margin of %.0f%% of free memory, at least %" PRIu64 " MiB, for the driver)\n",
                split::kMarginFraction * 100, split::kMarginMin >> 20);
    for (const std::string& note : r.notes) std::printf("fit: %s\n", note.c_str());
    if (r.predicted_token_seconds > 0)
      std::printf("predicted generation: %.1f t/s (the weight reads at the calibrated speeds; reduce round trips, timed "
                  "only when devices are opened, and dispatch costs not included)\n", 1.0 / r.predicted_token_seconds);
    else
      std::printf("predicted generation: unknown until every device is calibrated (any `chorus run` on it does that)\n");
    for (const std::string& w : r.plan.warnings) std::printf("plan: %s\n", w.c_str());
    if (!r.fits) std::printf("%s\n", r.refusal.c_str());
  }
  return r.fits ? 0 : 1;
}

}  // namespace chorus::tools
