#include "split/memory.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace chorus::split {
namespace {

uint64_t f32(uint64_t n) { return std::max<uint64_t>(n, 1) * 4; }  // as Context's scratch buffers

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// Saturating arithmetic: sizes from a file's header may be absurd, and must then stay absurd.
uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }
uint64_t sat_mul(uint64_t a, uint64_t b) { return a != 0 && b > UINT64_MAX / a ? UINT64_MAX : a * b; }

std::string mib(uint64_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

// Devices of the plan that hold something (the executor's members).
std::vector<uint32_t> members(const Plan& plan) {
  std::vector<uint32_t> out;
  for (uint32_t d = 0; d < plan.devices.size(); ++d)
    if (!plan.devices[d].empty()) out.push_back(d);
  return out;
}

}  // namespace

uint64_t DeviceMemory::total() const { return sat_add(sat_add(weights, kv_cache), sat_add(scratch, collective)); }

std::vector<DeviceMemory> plan_memory(const Plan& plan, const ContextShape& ctx) {
  const ModelShape& m = plan.model;
  std::vector<DeviceMemory> out(plan.devices.size());
  const std::vector<DeviceBytes> weights = weight_bytes(plan);
  const std::vector<uint32_t> active = members(plan);
  const uint64_t T = ctx.n_ubatch;
  const bool tensor = plan.mode == SplitMode::tensor && active.size() > 1;
  for (uint32_t d : active) {
    const DeviceShard& s = plan.devices[d];
    DeviceMemory& dm = out[d];
    dm.weights = weights[d].total();
    const uint64_t kv_per_position = kv_cache_bytes(plan, d, 1, 2);
    dm.kv_cache = sat_mul(sat_mul(kv_per_position, ctx.n_ctx), ctx.n_seq);
    // The forward pass's buffers (engine/forward.cpp, make_state and grow_logits).
    const uint64_t n_q = s.q_rows.size(), n_kv = s.kv_rows.size(), n_ff = s.ffn.size(), n_vocab = s.vocab.size();
    dm.scratch = 2 * f32(T)                 // ids, pos
                 + 3 * f32(T * m.n_embd)    // x, h, sel
                 + f32(T * (n_q + 2 * n_kv))  // qkv
                 + f32(T * n_q)             // att
                 + f32(T * 2 * n_ff);       // gate and up
    if (m.n_expert) {  // the mixture of experts' (forward.cpp, make_moe_scratch): per token k slots
      const uint64_t slots = T * m.n_expert_used;
      dm.scratch += f32(T * m.n_expert)              // router logits
                    + 2 * f32(slots)                 // expert ids, weights
                    + f32(m.n_expert * (T + 1))      // per-expert counts and slot lists
                    + 2 * f32(slots * n_ff)          // expert gate, up
                    + f32(slots * m.n_embd);         // expert down projections
    }
    if (n_vocab > 0) dm.scratch += 2 * uint64_t(ctx.logit_rows) * n_vocab * 4;  // logits, readback
    // The executor's (split/executor.cpp).
    const uint64_t hidden = T * m.n_embd * 4;
    const auto collective = [&](uint64_t points) {
      // [results: slots][partials: slots] per device (split/collective.cpp); 256-byte slots at least.
      return ctx.collective_per_device ? 2 * std::min<uint64_t>(2, points) * align_up(hidden, 256) : 0;
    };
    if (plan.mode == SplitMode::hybrid) {
      // Its group: the active devices with the same group number, in order.
      std::vector<uint32_t> group;
      size_t group_index = 0, n_groups = 0;
      for (size_t i = 0; i < active.size(); ++i) {
        const uint32_t e = active[i];
        if (i == 0 || plan.groups.at(e) != plan.groups.at(active[i - 1])) ++n_groups;
        if (plan.groups.at(e) == plan.groups.at(d)) {
          group.push_back(e);
          group_index = n_groups - 1;
        }
      }
      if (group.size() > 1) dm.collective = collective(2 * s.layers.size());
      else dm.scratch += hidden;                                               // the one device's partial
      if (group_index > 0) dm.scratch += hidden;                               // inbox
      if (group_index + 1 < n_groups && group.front() == d) dm.scratch += hidden;  // outbox
    } else if (!tensor) {
      dm.scratch += hidden;                                // partial
      if (active.size() > 1) dm.scratch += 2 * hidden;     // inbox, outbox
    } else {
      dm.collective = collective(2ull * m.n_layer);
    }
  }
  return out;
}

uint64_t usable_bytes(uint64_t free_bytes) {
  const uint64_t margin = std::max<uint64_t>(kMarginMin, static_cast<uint64_t>(static_cast<double>(free_bytes) * kMarginFraction));
  return free_bytes > margin ? free_bytes - margin : 0;
}

namespace {

// Which devices are short and by how much; empty when everything fits.
std::vector<std::pair<uint32_t, uint64_t>> shortfalls(const std::vector<DeviceMemory>& mem,
                                                      const std::vector<uint64_t>& usable) {
  std::vector<std::pair<uint32_t, uint64_t>> out;
  for (uint32_t d = 0; d < mem.size(); ++d)
    if (mem[d].total() > usable[d]) out.emplace_back(d, mem[d].total() - usable[d]);
  return out;
}

// Ratios ∝ what each device has left for its share after the costs it pays whatever its share
// (the replicated embedding, norms, fixed scratch): estimated from a plan with `ratios`.
std::vector<double> balanced_ratios(const ModelShape& model, const SplitRequest& split, const ContextShape& ctx,
                                    const std::vector<uint64_t>& usable) {
  SplitRequest probe = split;
  probe.ratios.assign(usable.size(), 1.0);
  const Plan p = plan_split(model, probe);
  const std::vector<DeviceMemory> mem = plan_memory(p, ctx);
  const std::vector<DeviceBytes> wb = weight_bytes(p);
  std::vector<double> r(usable.size());
  double sum = 0;
  for (size_t d = 0; d < usable.size(); ++d) {
    const uint64_t proportional = wb[d].split() + mem[d].kv_cache;
    const uint64_t fixed = mem[d].total() > proportional ? mem[d].total() - proportional : 0;
    r[d] = usable[d] > fixed ? static_cast<double>(usable[d] - fixed) : 0.0;
    sum += r[d];
  }
  if (!(sum > 0)) return std::vector<double>(usable.size(), 1.0);
  for (double& x : r) x = std::max(x / sum, 1e-6);  // a device with no room keeps a token share
  return r;
}

// What is missing on which device, and the largest context this plan would fit.
std::string refusal(const FitRequest& req, const FitResult& r) {
  std::string why;
  for (const auto& [d, missing] : shortfalls(r.memory, r.usable))
    why += (why.empty() ? "" : "; ") + std::string("device ") + std::to_string(d) + " needs " + mib(r.memory[d].total()) +
           " of its usable " + mib(r.usable[d]) + " (" + mib(missing) + " missing)";
  // The largest context that would fit with this plan, if the weights alone fit.
  ContextShape one = r.ctx;
  one.n_ctx = 1;
  std::string largest;
  if (shortfalls(plan_memory(r.plan, one), r.usable).empty()) {
    uint32_t lo = 1, hi = r.ctx.n_ctx;
    while (hi - lo > 1) {
      const uint32_t mid = lo + (hi - lo) / 2;
      ContextShape c = r.ctx;
      c.n_ctx = mid;
      if (shortfalls(plan_memory(r.plan, c), r.usable).empty()) lo = mid;
      else hi = mid;
    }
    largest = "; the largest context that fits is " + std::to_string(lo) + " tokens (-c " + std::to_string(lo) +
              (lo < req.n_ctx_min ? ", with --fit-ctx-min " + std::to_string(lo) : std::string()) + ")";
  } else {
    bool weights_fit = true;
    for (size_t d = 0; d < r.memory.size(); ++d) weights_fit = weights_fit && r.memory[d].weights <= r.usable[d];
    largest = weights_fit ? "; the buffers for " + std::to_string(r.ctx.n_ubatch) +
                                " tokens per forward pass do not fit even with a context of 1: lower -ub"
                          : "; the weights alone do not fit: add a device or free memory";
  }
  return "the model does not fit: " + why + largest;
}

}  // namespace

double predict_token_seconds(const Plan& plan, const std::vector<double>& speed, double reduce_seconds) {
  const std::vector<DeviceBytes> wb = weight_bytes(plan);
  // Per group of devices that run the same layers at once: the slowest one's time, and its
  // reduce points when several share the layers. A tensor split is one group; a layer split,
  // a group per device.
  std::vector<uint32_t> group(plan.devices.size());
  for (uint32_t d = 0; d < group.size(); ++d)
    group[d] = plan.mode == SplitMode::hybrid ? plan.groups.at(d) : plan.mode == SplitMode::tensor ? 0 : d;
  std::vector<double> slowest(plan.devices.size() + 1, 0);
  std::vector<uint32_t> members(plan.devices.size() + 1, 0);
  std::vector<uint64_t> layers(plan.devices.size() + 1, 0);
  for (size_t d = 0; d < plan.devices.size() && d < speed.size(); ++d) {
    if (plan.devices[d].empty() || !(speed[d] > 0)) continue;
    // Per token a device reads its split matrices and norms whole (of a mixture of experts, only
    // the k experts chosen: k / n_expert of its expert bytes, and the router), one embedding row only.
    const ModelShape& ms = plan.model;
    const double ffn_share = ms.n_expert ? static_cast<double>(ms.n_expert_used) / ms.n_expert : 1.0;
    double bytes = static_cast<double>(wb[d].attention + wb[d].lm_head + wb[d].norms + wb[d].router) +
                   static_cast<double>(wb[d].ffn) * ffn_share;
    if (wb[d].lm_head == 0 && plan.model.n_vocab > 0)  // a tied head reads its vocabulary rows of token_embd
      bytes += static_cast<double>(model_bytes(plan.model).embedding) * static_cast<double>(plan.devices[d].vocab.size()) /
               plan.model.n_vocab;
    const uint32_t g = group[d];
    slowest[g] = std::max(slowest[g], bytes / speed[d]);
    ++members[g];
    layers[g] = std::max<uint64_t>(layers[g], plan.devices[d].layers.size());
  }
  double t = 0;
  for (size_t g = 0; g < slowest.size(); ++g)
    t += slowest[g] + (members[g] > 1 ? 2.0 * static_cast<double>(layers[g]) * reduce_seconds : 0.0);
  return t;
}

std::vector<uint32_t> speed_groups(const std::vector<double>& speed) {
  std::vector<uint32_t> g;
  for (size_t i = 0; i < speed.size(); ++i)
    g.push_back(i == 0 ? 0 : g.back() + (std::fabs(speed[i] - speed[i - 1]) > 0.1 * std::max(speed[i], speed[i - 1])));
  return g;
}

FitResult fit(const FitRequest& req) {
  const size_t n = req.free_bytes.size();
  if (n == 0) throw std::invalid_argument("fit: no devices");
  FitResult r;
  r.ctx = req.ctx;
  for (uint64_t f : req.free_bytes) r.usable.push_back(usable_bytes(f));
  SplitRequest split = req.split;
  const bool ratios_given = !split.ratios.empty();
  const bool by_speed = !ratios_given && req.speed.size() == n &&
                        std::all_of(req.speed.begin(), req.speed.end(), [](double v) { return v > 0; });
  if (by_speed) {  // every reduce waits for the slowest device: shares follow speed
    split.ratios = req.speed;
  } else if (!ratios_given) {  // each device's usable memory
    for (uint64_t u : r.usable) split.ratios.push_back(static_cast<double>(std::max<uint64_t>(u, 1)));
  }
  const auto predict = [&] {
    if (req.speed.size() == n) r.predicted_token_seconds = predict_token_seconds(r.plan, req.speed, req.reduce_seconds);
  };
  const auto evaluate = [&] {
    r.plan = plan_split(req.model, split);
    r.memory = plan_memory(r.plan, r.ctx);
    return shortfalls(r.memory, r.usable).empty();
  };
  r.fits = evaluate();
  predict();
  if (r.fits) {
    if (by_speed && n > 1 && split.mode == SplitMode::tensor) r.notes.push_back("ratios follow each device's calibrated speed");
    // Devices of different speeds: would tensor groups of similar devices, one group after
    // another, be faster? Only when the user chose neither the mode nor the ratios.
    const std::vector<uint32_t> groups = by_speed ? speed_groups(req.speed) : std::vector<uint32_t>{};
    if (by_speed && !req.mode_given && split.mode == SplitMode::tensor && n >= 3 && groups.back() > 0 &&
        groups.back() + 1 < n) {
      SplitRequest h = split;
      h.mode = SplitMode::hybrid;
      h.groups = groups;
      const Plan hp = plan_split(req.model, h);
      const std::vector<DeviceMemory> hm = plan_memory(hp, r.ctx);
      const double th = predict_token_seconds(hp, req.speed, req.reduce_seconds);
      char why[256];
      std::snprintf(why, sizeof why, "predicted %.2f ms per token as a tensor split, %.2f ms as a hybrid split (groups",
                    r.predicted_token_seconds * 1e3, th * 1e3);
      std::string g;
      for (uint32_t x : groups) g += (g.empty() ? " " : ",") + std::to_string(x);
      if (th < r.predicted_token_seconds && shortfalls(hm, r.usable).empty()) {
        r.plan = hp;
        r.memory = hm;
        r.predicted_token_seconds = th;
        r.notes.push_back(std::string(why) + g + "): hybrid chosen");
      } else {
        r.notes.push_back(std::string(why) + g + "): tensor kept");
      }
    }
    return r;
  }
  if (!req.fit) {  // --fit off: keep the request; say what is missing
    r.refusal = refusal(req, r);
    return r;
  }
  const uint32_t asked = r.ctx.n_ctx;
  const uint32_t floor = std::min(req.n_ctx_min, asked);
  const Plan asked_plan = r.plan;  // a refusal describes the placement asked for
  const std::vector<DeviceMemory> asked_memory = r.memory;
  // The largest context in [floor, asked] the current plan fits (a multiple of 16 unless it is
  // the floor or the request), or 0. Sets r.ctx and r.memory to it.
  const auto largest_context = [&]() -> uint32_t {
    ContextShape c = r.ctx;
    c.n_ctx = floor;
    if (!shortfalls(plan_memory(r.plan, c), r.usable).empty()) return 0;
    uint32_t lo = floor, hi = asked;
    c.n_ctx = asked;
    if (shortfalls(plan_memory(r.plan, c), r.usable).empty()) lo = asked;
    while (hi - lo > 16) {
      c.n_ctx = lo + (hi - lo) / 2 / 16 * 16;
      if (c.n_ctx == lo) break;
      if (shortfalls(plan_memory(r.plan, c), r.usable).empty()) lo = c.n_ctx;
      else hi = c.n_ctx;
    }
    r.ctx.n_ctx = lo;
    r.memory = plan_memory(r.plan, r.ctx);
    r.fits = true;
    predict();
    return lo;
  };
  const auto shrunk_note = [&] {
    if (r.ctx.n_ctx < asked)
      r.notes.push_back("context shrunk from " + std::to_string(asked) + " to " + std::to_string(r.ctx.n_ctx) +
                        " tokens to fit the devices' memory (--fit-ctx-min sets the floor, --fit off keeps -c)");
  };
  // 1. Shrink the context, not below the floor.
  if (largest_context()) {
    shrunk_note();
    return r;
  }
  // 2. Rebalance the ratios (unless the user gave them) so each device's share fits its memory.
  if (!ratios_given && split.mode != SplitMode::none && n > 1) {
    r.ctx.n_ctx = asked;
    split.ratios = balanced_ratios(req.model, split, r.ctx, r.usable);
    evaluate();
    if (largest_context()) {
      r.notes.push_back(std::string(by_speed ? "ratios by speed do not fit; " : "") +
                        "ratios rebalanced to each device's free memory after the bytes every device holds in full");
      shrunk_note();
      return r;
    }
  }
  // 3. Whole layers instead: a layer split holds the embedding and the head once, not on every
  // device (only when the user did not choose the mode).
  if (!req.mode_given && !ratios_given && split.mode == SplitMode::tensor && n > 1) {
    split.mode = SplitMode::layer;
    split.ratios.clear();
    for (uint64_t u : r.usable) split.ratios.push_back(static_cast<double>(std::max<uint64_t>(u, 1)));
    r.ctx.n_ctx = asked;
    evaluate();
    if (!largest_context()) {  // shares of layers by what is left after the fixed parts
      split.ratios = balanced_ratios(req.model, split, r.ctx, r.usable);
      evaluate();
      largest_context();
    }
    if (r.fits) {
      r.notes.push_back("a tensor split does not fit (every device would hold the embedding); whole layers per device "
                        "(-sm layer) instead");
      shrunk_note();
      return r;
    }
  }
  r.plan = asked_plan;
  r.memory = asked_memory;
  r.ctx.n_ctx = asked;
  r.fits = false;
  r.predicted_token_seconds = 0;
  predict();
  r.refusal = refusal(req, r);
  return r;
}

}  // namespace chorus::split
