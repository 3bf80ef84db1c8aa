// `chorus bench collective`: the host-mediated all-reduce alone (split/collective.h).
//
// N logical devices of one physical device; per token each device runs P+1 segments around P
// reduce points in ONE submit; each segment is one small kernel (partial = previous sum + 1)
// so the time is the collective's, not the device's. Reported per proxy wait policy:
// the proxy's reduce latency (last partial seen -> last device signalled) p50/p99, how long
// the proxy waited for the partials, the round trip per reduce (token wall time / P), and
// the counters (submits per token per device, submits per reduce).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "engine/ops/kernels.h"
#include "engine/ops/ops.h"
#include "split/collective.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "vkdevice/commands.h"
#include "vkdevice/device.h"
#include "vkdevice/host_memory.h"
#include "vkdevice/instance.h"

namespace chorus::tools {


namespace {

struct Options {
  uint32_t device = 0;
  uint32_t devices = 2;
  uint32_t floats = 4096;  // 16 KiB
  uint32_t points = 64;
  uint32_t tokens = 20;
  uint32_t runs = 5;
  uint64_t spin_ns = 20'000;  // the "hybrid" row
  split::CollectiveMemory memory = split::CollectiveMemory::Auto;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

struct Member {
  vk::Device* dev;
  std::unique_ptr<ops::Kernels> kernels;
  vk::Buffer one;    // [1] = 1.0
  vk::Buffer state;  // [floats]
  std::vector<std::unique_ptr<vk::CommandBuffer>> cbs;
};

// Records each device's P+1 segments: partial k = (sum k-1, or the state) + 1.
void record(split::Collective& coll, std::vector<Member>& ms, const Options& o) {
  for (size_t d = 0; d < ms.size(); ++d) {
    Member& m = ms[d];
    m.cbs.clear();
    for (uint32_t j = 0; j <= o.points; ++j) {
      auto cb = std::make_unique<vk::CommandBuffer>(*m.dev);
      cb->begin();
      if (j > 0) split::Collective::record_acquire(*cb);  // reads the sum of point j - 1
      if (j < o.points) {
        const vk::Buffer& x = j == 0 ? m.state : coll.results(d);
        const uint64_t x_off = j == 0 ? 0 : coll.result_offset(d, j - 1);
        ops::add(*m.kernels, *cb, x, x_off, m.one, 0, coll.partials(d), coll.partial_offset(d, j), o.floats, 1);
        split::Collective::record_publish(*cb);  // the proxy reads the partial
      }
      cb->end();
      m.cbs.push_back(std::move(cb));
    }
  }
}

struct Row {
  std::string policy;
  double p50 = 0, p99 = 0, wait_p50 = 0, sum_p50 = 0, round_trip = 0, submits_per_token = 0, submits_per_reduce = 0, blocks = 0;
};

double device_only_us_per_segment(std::vector<Member>& ms, const Options& o);

// Runs o.runs x o.tokens tokens with the proxy polling for spin_ns before blocking. If
// device_only is set, also times the same segments without the collective (while its buffers,
// which the segments bind, still exist).
Row run_policy(std::vector<vk::Device*> devs, std::vector<Member>& ms, const Options& o, uint64_t spin_ns,
               const std::string& name, bool& imported, double* device_only) {
  split::CollectiveOptions co;
  co.max_points = o.points;
  co.max_floats = o.floats;
  co.memory = o.memory;
  co.spin_ns = spin_ns;
  split::Collective coll(devs, co);
  imported = coll.imported();
  record(coll, ms, o);
  std::vector<std::vector<split::Collective::Segment>> segs(ms.size());
  for (size_t d = 0; d < ms.size(); ++d)
    for (auto& cb : ms[d].cbs) segs[d].push_back({cb.get()});
  const std::vector<uint32_t> sizes(o.points, o.floats);

  for (int w = 0; w < 2; ++w) coll.wait(coll.submit(segs, sizes));  // warm-up (pipelines, page faults)
  std::vector<double> p50, p99, wait50, sum50, rt, spt, spr, blocks;
  for (uint32_t r = 0; r < o.runs; ++r) {
    coll.reset_stats();
    std::vector<uint64_t> submits0;
    for (auto* d : devs) submits0.push_back(d->counters().submits.load());
    std::vector<double> token_s;
    for (uint32_t t = 0; t < o.tokens; ++t) {
      const auto t0 = std::chrono::steady_clock::now();
      coll.wait(coll.submit(segs, sizes));
      token_s.push_back(seconds_since(t0));
    }
    const split::CollectiveStats st = coll.stats();
    p50.push_back(st.latency_us(0.5));
    p99.push_back(st.latency_us(0.99));
    wait50.push_back(split::CollectiveStats::quantile_us(st.wait_ns, 0.5));
    sum50.push_back(split::CollectiveStats::quantile_us(st.sum_ns, 0.5));
    rt.push_back(median(token_s) / o.points * 1e6);
    uint64_t submits = 0;
    for (size_t d = 0; d < devs.size(); ++d) submits += devs[d]->counters().submits.load() - submits0[d];
    spt.push_back(double(submits) / o.tokens / double(devs.size()));
    spr.push_back(double(st.reduce_submits) / double(std::max<uint64_t>(st.reduces, 1)));
    blocks.push_back(double(st.proxy_blocks) / double(std::max<uint64_t>(st.reduces, 1)));
  }
  if (device_only) *device_only = device_only_us_per_segment(ms, o);
  Row row;
  row.policy = name;
  row.p50 = median(p50);
  row.p99 = median(p99);
  row.wait_p50 = median(wait50);
  row.sum_p50 = median(sum50);
  row.round_trip = median(rt);
  row.submits_per_token = median(spt);
  row.submits_per_reduce = median(spr);
  row.blocks = median(blocks);
  return row;
}

// The same segments with no collective: one submit per device, no waits between segments.
double device_only_us_per_segment(std::vector<Member>& ms, const Options& o) {
  std::vector<std::unique_ptr<vk::Timeline>> done;
  for (auto& m : ms) done.push_back(std::make_unique<vk::Timeline>(*m.dev, "bench done"));
  uint64_t value = 0;
  std::vector<double> token_s;
  for (uint32_t t = 0; t < o.tokens + 2; ++t) {
    ++value;
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t d = 0; d < ms.size(); ++d) {
      std::vector<vk::Device::Batch> batches;
      const vk::Device::TimelinePoint signal{done[d].get(), value};
      for (size_t j = 0; j < ms[d].cbs.size(); ++j)
        batches.push_back({ms[d].cbs[j].get(), {}, j + 1 == ms[d].cbs.size() ? std::span(&signal, 1) : std::span<const vk::Device::TimelinePoint>()});
      ms[d].dev->submit(batches);
    }
    for (size_t d = 0; d < ms.size(); ++d) done[d]->wait(value, "the bench's segments");
    if (t >= 2) token_s.push_back(seconds_since(t0));
  }
  return median(token_s) / (o.points + 1) * 1e6;
}

}  // namespace

int bench_collective(const std::vector<std::string>& args) {
  Options o;
  auto u32 = [](const std::string& flag, const std::string& v, uint32_t lo, uint32_t hi) {
    const uint64_t n = parse_uint(flag, v);
    if (n < lo || n > hi) throw UsageError(flag + " must be in " + std::to_string(lo) + ".." + std::to_string(hi));
    return static_cast<uint32_t>(n);
  };
  const auto range = [&u32](uint32_t& target, uint32_t lo, uint32_t hi) {
    return [&target, &u32, lo, hi](const std::string& flag, const std::string& v) { target = u32(flag, v, lo, hi); };
  };
  cli::Parser p(
      "usage: chorus bench collective [--device N] [--devices D] [--floats F] [--points P] [--tokens T] [--runs R]\n"
      "                               [--memory auto|imported|per-device] [--spin-us US]",
      "Benchmarks the host-mediated all-reduce alone: D logical devices of physical device N\n"
      "(default 2 of device 0), partials of F floats (default 4096 = 16 KiB), P reduce points per\n"
      "token in one submit per device (default 64), T tokens per run (default 20), R runs (default\n"
      "5; medians are printed). Each segment between reduce points is one small kernel.\n"
      "\n"
      "Columns: reduce p50/p99 = proxy time from seeing the last device's partial to its last\n"
      "`reduced` signal (sum + signals); wait p50 = proxy time waiting for the partials; round trip =\n"
      "token wall time / P (device segment + both hand-overs); counters per token and per reduce.\n"
      "Rows: the proxy polls the timeline counters (poll), polls for --spin-us (default 20;\n"
      "the collective's default on a GPU) and then blocks (hybrid), or blocks in vkWaitSemaphores at once (block).");
  p.option({"--device", "-dev"}, "N", "physical device index (default 0)", range(o.device, 0, 1024))
      .option({"--devices"}, "D", "logical devices opened on it (default 2)", range(o.devices, 1, 16))
      .option({"--floats"}, "F", "floats per partial (default 4096)", range(o.floats, 1, 1u << 22))
      .option({"--points"}, "P", "reduce points per token (default 64)", range(o.points, 1, 4096))
      .option({"--tokens"}, "T", "tokens per run (default 20)", range(o.tokens, 1, 100000))
      .option({"--runs"}, "R", "runs (default 5)", range(o.runs, 1, 1000))
      .option({"--spin-us"}, "US", "the hybrid row's polling time before it blocks (default 20)",
              [&](const std::string& flag, const std::string& v) { o.spin_ns = uint64_t(u32(flag, v, 0, 1000000)) * 1000; })
      .option({"--memory"}, "M", "auto | imported | per-device: where the partials live (default auto)",
              [&](const std::string& flag, const std::string& m) {
                if (m == "auto") o.memory = split::CollectiveMemory::Auto;
                else if (m == "imported") o.memory = split::CollectiveMemory::Imported;
                else if (m == "per-device") o.memory = split::CollectiveMemory::PerDevice;
                else throw UsageError(flag + " is auto, imported or per-device, not '" + m + "'");
              });
  // `chorus bench collective ...` passes its own name first.
  if (!p.parse(std::vector<std::string>(args.begin() + (!args.empty() && args[0] == "collective"), args.end()))) return 0;

  // As a tensor split opens them: on lavapipe, each logical device in an instance of its own.
  vk::Instance inst;
  std::vector<std::unique_ptr<vk::Instance>> own;
  std::vector<std::unique_ptr<vk::Device>> owned;
  std::vector<vk::Device*> devs;
  for (uint32_t d = 0; d < o.devices; ++d) {
    vk::DeviceOptions dopt;
    dopt.physical_index = o.device;
    dopt.opening = d;
    if (auto mine = vk::own_instance_for(inst, o.device, o.devices, false)) own.push_back(std::move(mine));
    owned.push_back(std::make_unique<vk::Device>(own.empty() ? inst : *own.back(), dopt));
    devs.push_back(owned.back().get());
  }
  std::vector<Member> ms(o.devices);
  for (uint32_t d = 0; d < o.devices; ++d) {
    ms[d].dev = devs[d];
    ms[d].kernels = std::make_unique<ops::Kernels>(*devs[d]);
    const std::vector<float> one = {1.0f};
    ms[d].one = devs[d]->create_buffer(4, vk::BufferKind::Device, "bench one");
    devs[d]->upload(ms[d].one, std::span<const float>(one));
    const std::vector<float> zeros(o.floats, 0.0f);
    ms[d].state = devs[d]->create_buffer(uint64_t(o.floats) * 4, vk::BufferKind::Device, "bench state");
    devs[d]->upload(ms[d].state, std::span<const float>(zeros));
  }

  std::printf("collective: %u logical devices of %s, %s partials, %u reduce points per submit, %u tokens x %u runs (medians)\n",
              o.devices, devs[0]->label().c_str(), vk::format_bytes(uint64_t(o.floats) * 4).c_str(), o.points, o.tokens,
              o.runs);
  if (!own.empty() && own.back()->cpu_threads())
    std::printf("devices: each in a Vulkan instance of its own, as a tensor split opens them (lavapipe: %u worker threads "
                "each; 0: the submitting thread runs the dispatch)\n", *own.back()->cpu_threads());
  std::fflush(stdout);
  bool imported = false;
  std::vector<Row> rows;
  double device_only = 0;
  rows.push_back(run_policy(devs, ms, o, 2'000'000, "poll", imported, &device_only));
  rows.push_back(run_policy(devs, ms, o, o.spin_ns, "hybrid", imported, nullptr));
  rows.push_back(run_policy(devs, ms, o, 0, "block", imported, nullptr));
  std::printf("memory: %s\n", imported ? "host memory imported into every device (VK_EXT_external_memory_host)"
                                       : "a host-visible buffer per device");
  std::printf("  %-6s %11s %11s %9s %9s %17s %14s %15s %14s\n", "proxy", "reduce p50", "reduce p99", "sum p50",
              "wait p50", "round trip/reduce", "submits/token", "submits/reduce", "blocks/reduce");
  for (const Row& r : rows)
    std::printf("  %-6s %8.1f us %8.1f us %6.1f us %6.1f us %14.1f us %14.2f %15.2f %14.2f\n", r.policy.c_str(), r.p50,
                r.p99, r.sum_p50, r.wait_p50, r.round_trip, r.submits_per_token, r.submits_per_reduce, r.blocks);
  std::printf("  device work alone (the same segments in one submit, no reduce): %.1f us per segment\n", device_only);
  return 0;
}

}  // namespace chorus::tools
