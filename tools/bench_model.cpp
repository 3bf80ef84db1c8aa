// `chorus bench -m MODEL`: llama-bench style prompt-processing and generation speed over the
// cross product of models, device lists, split modes and ratios, with chorus's synchronisation
// counters per test, printed as a Markdown table, JSON, JSON lines or CSV.
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <random>

#include <nlohmann/json.hpp>

#include "engine/model.h"
#include "engine/quant.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/model_setup.h"

namespace chorus::tools {
namespace {

struct Stat {
  double mean = 0, sd = 0;
};

Stat stat(const std::vector<double>& v) {
  Stat s;
  if (v.empty()) return s;
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  if (v.size() > 1) {
    for (double x : v) s.sd += (x - s.mean) * (x - s.mean);
    s.sd = std::sqrt(s.sd / static_cast<double>(v.size() - 1));
  }
  return s;
}

// "512,1024": token counts of 0 (skip) .. 2^24, the limit of every count flag.
std::vector<uint32_t> parse_counts(const std::string& flag, const std::string& text) {
  std::vector<uint32_t> out;
  for (uint32_t v : parse_index_list(flag, text)) {
    if (v > (1u << 24)) throw UsageError(flag + " expects token counts up to 16777216, got " + std::to_string(v));
    out.push_back(v);
  }
  return out;
}

// llama-bench writes alternatives as "a/b,c/d" (',' between configurations, '/' inside one);
// chorus run writes one configuration as "a,b". A value with a '/' is read llama-bench's way,
// any other value is one configuration.
std::vector<std::string> alternatives(const std::string& flag, const std::string& text) {
  if (text.find('/') == std::string::npos) return {text};
  std::vector<std::string> out = split_list(flag, text, "1/1,3/1");
  for (std::string& s : out) std::replace(s.begin(), s.end(), '/', ',');
  return out;
}

// The model's quantisation as llama-bench names it: general.file_type when it is one of
// llama.cpp's named mixes, else the weight type holding the most bytes.
std::string quant_name(const gguf::File& f) {
  static const std::map<uint32_t, const char*> kFileTypes = {
      {0, "F32"},     {1, "F16"},     {2, "Q4_0"},    {3, "Q4_1"},    {7, "Q8_0"},    {8, "Q5_0"},
      {9, "Q5_1"},    {10, "Q2_K"},   {11, "Q3_K_S"}, {12, "Q3_K_M"}, {13, "Q3_K_L"}, {14, "Q4_K_S"},
      {15, "Q4_K_M"}, {16, "Q5_K_S"}, {17, "Q5_K_M"}, {18, "Q6_K"},   {32, "BF16"}};
  if (const auto ft = f.get_u32("general.file_type"))
    if (const auto it = kFileTypes.find(*ft); it != kFileTypes.end()) return it->second;
  std::map<std::string, uint64_t> bytes;
  for (const auto& t : f.tensors())
    if (t.n_dims >= 2) bytes[t.traits->name] += t.size;
  const auto best = std::max_element(bytes.begin(), bytes.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
  return best == bytes.end() ? "?" : best->first;
}

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : sep) + s;
  return out;
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// One configuration of the cross product.
struct Config {
  std::string model;
  Placement placement;
  std::string devices_text = "all";  // as given
};

// One measured row.
struct Row {
  std::string model, type, arch, backend = "Vulkan", devices, device_names, split, ratios, test;
  uint64_t size = 0, params = 0;
  uint32_t n_prompt = 0, n_gen = 0, n_ubatch = 0, reps = 0;
  Stat tps;
  std::vector<double> samples;
  double submits_per_token = 0, waits_per_token = 0;
  double dispatches_per_token = 0, barriers_per_token = 0;  // the busiest device's
  std::optional<double> reduce_p50_us;
  // Generation: the model's weight bytes read per second (bytes x t/s) and that as a share of
  // the host's memcpy bandwidth measured in the same run (the roofline on a CPU device).
  std::optional<double> weight_gbps, memcpy_share;
};

nlohmann::ordered_json to_json(const Row& r) {
  nlohmann::ordered_json j;
  j["model"] = r.model;
  j["arch"] = r.arch;
  j["type"] = r.type;
  j["size_bytes"] = r.size;
  j["params"] = r.params;
  j["backend"] = r.backend;
  j["devices"] = r.devices;
  j["device_names"] = r.device_names;
  j["split_mode"] = r.split;
  j["ratios"] = r.ratios;
  j["n_ubatch"] = r.n_ubatch;
  j["n_prompt"] = r.n_prompt;
  j["n_gen"] = r.n_gen;
  j["test"] = r.test;
  j["repetitions"] = r.reps;
  j["avg_ts"] = r.tps.mean;
  j["stddev_ts"] = r.tps.sd;
  j["samples_ts"] = r.samples;
  j["submits_per_token"] = r.submits_per_token;
  j["host_waits_per_token"] = r.waits_per_token;
  j["dispatches_per_token"] = r.dispatches_per_token;
  j["barriers_per_token"] = r.barriers_per_token;
  j["reduce_p50_us"] = r.reduce_p50_us ? nlohmann::ordered_json(*r.reduce_p50_us) : nlohmann::ordered_json(nullptr);
  j["weight_gbps"] = r.weight_gbps ? nlohmann::ordered_json(*r.weight_gbps) : nlohmann::ordered_json(nullptr);
  j["memcpy_fraction"] = r.memcpy_share ? nlohmann::ordered_json(*r.memcpy_share) : nlohmann::ordered_json(nullptr);
  return j;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

enum class Format { md, json, jsonl, csv };

// Prints rows as they are measured (md, jsonl, csv) or all at the end (json).
class Printer {
 public:
  explicit Printer(Format f) : f_(f) {}
  void row(const Row& r) {
    rows_.push_back(r);
    if (f_ == Format::md) {
      if (rows_.size() == 1) {
        std::printf("| %-24s | %-6s | %10s | %8s | %-7s | %-6s | %-14s | %4s | %7s | %18s | %7s | %8s | %8s | %8s | %10s | %7s | %6s |\n",
                    "model", "type", "size", "params", "devices", "split", "ratios", "ub", "test", "t/s", "sub/tok", "wait/tok",
                    "disp/tok", "barr/tok", "reduce p50", "wt GB/s", "memcpy");
        std::printf("| %.24s | %.6s | %.9s: | %.7s: | %.7s | %.6s | %.14s | %.3s: | %.6s: | %.17s: | %.6s: | %.7s: | %.7s: | %.7s: | %.9s: | %.6s: | %.5s: |\n",
                    kDash, kDash, kDash, kDash, kDash, kDash, kDash, kDash, kDash, kDash, kDash, kDash, kDash, kDash, kDash, kDash,
                    kDash);
      }
      std::printf("| %-24.24s | %-6s | %6.2f MiB | %6.2f M | %-7s | %-6s | %-14s | %4u | %7s | %8.2f ± %7.2f | %7.2f | %8.2f | %8.1f | %8.1f | %10s | %7s | %6s |\n",
                  r.model.c_str(), r.type.c_str(), static_cast<double>(r.size) / (1 << 20), static_cast<double>(r.params) / 1e6,
                  r.devices.c_str(), r.split.c_str(), r.ratios.c_str(), r.n_ubatch,
                  r.test.c_str(), r.tps.mean, r.tps.sd, r.submits_per_token, r.waits_per_token, r.dispatches_per_token,
                  r.barriers_per_token, r.reduce_p50_us ? (fixed(*r.reduce_p50_us, 1) + " us").c_str() : "-",
                  r.weight_gbps ? fixed(*r.weight_gbps, 2).c_str() : "-",
                  r.memcpy_share ? (fixed(100.0 * *r.memcpy_share, 1) + "%").c_str() : "-");
    } else if (f_ == Format::jsonl) {
      std::printf("%s\n", to_json(r).dump().c_str());
    } else if (f_ == Format::csv) {
      if (rows_.size() == 1)
        std::printf("model,arch,type,size_bytes,params,backend,devices,device_names,split_mode,ratios,n_ubatch,n_prompt,n_gen,"
                    "test,repetitions,avg_ts,stddev_ts,submits_per_token,host_waits_per_token,dispatches_per_token,barriers_per_token,"
                    "reduce_p50_us,weight_gbps,memcpy_fraction\n");
      std::printf("%s,%s,%s,%" PRIu64 ",%" PRIu64 ",%s,%s,%s,%s,%s,%u,%u,%u,%s,%u,%.6f,%.6f,%.4f,%.4f,%.2f,%.2f,%s,%s,%s\n",
                  csv_field(r.model).c_str(), csv_field(r.arch).c_str(), r.type.c_str(), r.size, r.params, r.backend.c_str(),
                  csv_field(r.devices).c_str(), csv_field(r.device_names).c_str(), r.split.c_str(), csv_field(r.ratios).c_str(),
                  r.n_ubatch, r.n_prompt, r.n_gen, r.test.c_str(), r.reps, r.tps.mean, r.tps.sd, r.submits_per_token,
                  r.waits_per_token, r.dispatches_per_token, r.barriers_per_token,
                  r.reduce_p50_us ? fixed(*r.reduce_p50_us, 3).c_str() : "", r.weight_gbps ? fixed(*r.weight_gbps, 4).c_str() : "",
                  r.memcpy_share ? fixed(*r.memcpy_share, 4).c_str() : "");
    }
    flush_stdout();
  }
  void finish() {
    if (f_ == Format::json) {
      nlohmann::ordered_json all = nlohmann::ordered_json::array();
      for (const Row& r : rows_) all.push_back(to_json(r));
      std::printf("%s\n", all.dump(2).c_str());
    }
    flush_stdout();
  }

 private:
  static constexpr const char* kDash = "------------------------------";
  Format f_;
  std::vector<Row> rows_;
};

// Runs one configuration's tests, printing a row per test.
void bench_config(const Config& cfg, const std::vector<uint32_t>& pp, const std::vector<uint32_t>& tg, uint32_t reps,
                  uint32_t n_ubatch, double memcpy_bps, Printer& out) {
  const uint32_t longest = std::max(*std::max_element(pp.begin(), pp.end()), *std::max_element(tg.begin(), tg.end()) + 1);
  const LoadedModel loaded =
      load_model(cfg.model, cfg.placement, false, ContextRequest{std::max(longest, 16u), 1, n_ubatch, 1, false});
  Model& model = *loaded.model;
  std::vector<vk::Device*> devs;
  std::vector<std::string> names;
  for (const auto& d : loaded.devices) {
    devs.push_back(d.get());
    names.push_back(d->label());
  }
  const ModelConfig& c = model.config();
  Context ctx(model, loaded.context);
  print_memory_use(ctx);

  Row base;
  base.model = c.name.empty() ? c.arch : c.name;
  base.arch = c.arch;
  base.type = quant_name(model.file());
  for (const auto& t : model.file().tensors()) {
    base.size += t.size;
    base.params += t.n_elements();
  }
  base.devices = cfg.devices_text;
  base.device_names = join(names, " + ");
  const split::Plan& plan = model.plan();
  base.split = split::to_string(plan.mode);
  // Each device's share of the weights it holds, as the plan made it (not the requested ratio).
  std::vector<std::string> shares;
  uint64_t total = 0;
  const std::vector<DeviceMemoryUse> use = ctx.memory_use();
  for (const DeviceMemoryUse& u : use) total += u.weights;
  for (const DeviceMemoryUse& u : use) shares.push_back(fixed(total ? static_cast<double>(u.weights) / static_cast<double>(total) : 1.0, 2));
  base.ratios = join(shares, "/");
  base.n_ubatch = n_ubatch;
  base.reps = reps;

  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(c.n_vocab) - 1);

  // Times `reps` runs after one warm-up; each run's work is `run` over `n` tokens. The counters
  // cover the timed runs.
  const auto measure = [&](Row row, uint32_t n, const std::function<void()>& prepare, const std::function<void()>& run) {
    std::vector<uint64_t> submits(devs.size(), 0), dispatches(devs.size(), 0), barriers(devs.size(), 0);
    uint64_t waits = 0;
    std::vector<std::map<std::pair<std::string, std::string>, vk::KernelTime>> profile(devs.size());
    std::vector<uint64_t> untimed(devs.size(), 0);
    std::vector<uint32_t> latency_ns;
    for (uint32_t r = 0; r <= reps && !interrupted(); ++r) {
      prepare();
      std::vector<uint64_t> submits0, dispatches0, barriers0;
      for (vk::Device* d : devs) {
        submits0.push_back(d->counters().submits.load());
        dispatches0.push_back(d->counters().dispatches.load());
        barriers0.push_back(d->counters().barriers.load());
      }
      const uint64_t waits0 = ctx.counters().host_waits;
      const std::optional<split::CollectiveStats> cs0 = ctx.collective_stats();
      for (vk::Device* d : devs)
        if (vk::DispatchProfile* prof = d->profile()) prof->clear();
      const auto t0 = std::chrono::steady_clock::now();
      run();
      const double ms = ms_since(t0);
      if (r == 0) continue;  // run 0 warms up
      for (size_t k = 0; k < devs.size(); ++k)  // --profile: the timed runs' dispatches, not the warm-up's or prepare's
        if (vk::DispatchProfile* prof = devs[k]->profile()) {
          for (const vk::KernelTime& t : prof->kernels()) {
            vk::KernelTime& sum = profile[k][{t.kernel, t.groups}];
            sum.kernel = t.kernel;
            sum.groups = t.groups;
            sum.calls += t.calls;
            sum.ns += t.ns;
          }
          untimed[k] += prof->untimed();
        }
      row.samples.push_back(1000.0 * n / ms);
      for (size_t k = 0; k < devs.size(); ++k) {
        submits[k] += devs[k]->counters().submits.load() - submits0[k];
        dispatches[k] += devs[k]->counters().dispatches.load() - dispatches0[k];
        barriers[k] += devs[k]->counters().barriers.load() - barriers0[k];
      }
      waits += ctx.counters().host_waits - waits0;
      if (const auto cs1 = ctx.collective_stats(); cs0 && cs1 && cs1->latency_ns.size() > cs0->latency_ns.size())
        latency_ns.insert(latency_ns.end(), cs1->latency_ns.begin() + static_cast<std::ptrdiff_t>(cs0->latency_ns.size()),
                          cs1->latency_ns.end());
    }
    if (row.samples.empty()) return;
    const double tokens = static_cast<double>(n) * static_cast<double>(row.samples.size());
    for (uint64_t k : submits)  // the busiest device's submits
      row.submits_per_token = std::max(row.submits_per_token, static_cast<double>(k) / tokens);
    row.waits_per_token = static_cast<double>(waits) / tokens;
    for (size_t k = 0; k < devs.size(); ++k) {
      row.dispatches_per_token = std::max(row.dispatches_per_token, static_cast<double>(dispatches[k]) / tokens);
      row.barriers_per_token = std::max(row.barriers_per_token, static_cast<double>(barriers[k]) / tokens);
    }
    if (!latency_ns.empty()) {
      split::CollectiveStats d;
      d.latency_ns = std::move(latency_ns);
      row.reduce_p50_us = d.latency_us(0.5);
    }
    row.tps = stat(row.samples);
    for (size_t k = 0; k < devs.size(); ++k) {
      if (!devs[k]->profile()) continue;
      std::vector<vk::KernelTime> kernels;
      for (const auto& [key, t] : profile[k]) kernels.push_back(t);
      std::stable_sort(kernels.begin(), kernels.end(), [](const vk::KernelTime& a, const vk::KernelTime& b) { return a.ns > b.ns; });
      std::fputs(profile_table(devs[k]->label(), row.model + " " + row.split + " " + row.test, kernels, untimed[k], tokens).c_str(),
                 stderr);
    }
    if (row.n_gen > 0 && memcpy_bps > 0) {
      row.weight_gbps = static_cast<double>(row.size) * row.tps.mean / 1e9;
      row.memcpy_share = *row.weight_gbps * 1e9 / memcpy_bps;
    }
    out.row(row);
  };

  std::vector<int32_t> tokens;
  for (uint32_t n : pp) {
    if (n == 0 || interrupted()) continue;
    Row row = base;
    row.test = "pp" + std::to_string(n);
    row.n_prompt = n;
    measure(
        row, n,
        [&] {
          tokens.resize(n);
          for (auto& t : tokens) t = token(rng);
          ctx.clear(0);
        },
        [&] { ctx.decode(0, tokens); });
  }
  for (uint32_t n : tg) {
    if (n == 0 || interrupted()) continue;
    Row row = base;
    row.test = "tg" + std::to_string(n);
    row.n_gen = n;
    measure(
        row, n,
        [&] {
          ctx.clear(0);
          int32_t t = token(rng);
          ctx.decode(0, std::span(&t, 1));  // the first token, outside the timing
          tokens.resize(n);
          for (auto& x : tokens) x = token(rng);
        },
        [&] {
          for (uint32_t i = 0; i < n; ++i) ctx.decode(0, std::span(&tokens[i], 1));
        });
  }
  if (cfg.placement.show_devices) std::fprintf(stderr, "%s", device_view(loaded, ctx).c_str());
  if (cfg.placement.profile && std::none_of(devs.begin(), devs.end(), [](vk::Device* d) { return d->profile() != nullptr; }))
    std::fputs(kProfileNothingTimed, stderr);
}

}  // namespace

int bench_model(const std::vector<std::string>& args) {
  std::vector<std::string> models, device_lists, modes, ratio_lists;
  std::vector<uint32_t> pp{512}, tg{128};
  uint32_t reps = 5, n_ubatch = 512;
  Format format = Format::md;
  Placement common;  // everything but --device, -sm and -ts, which may take several values
  cli::Parser p(
      "usage: chorus bench -m MODEL [-m MODEL..] [-p N,..] [-n N,..] [--device LIST].. [-sm M,..] [-ts R].. [-o FORMAT]\n"
      "       chorus bench kernels [...]      (kernel throughput; see `chorus bench kernels --help`)\n"
      "       chorus bench collective [...]   (the all-reduce alone; see `chorus bench collective --help`)",
      "Measures prompt processing (ppN: N tokens in one decode call, in micro-batches of -ub) and\n"
      "generation (tgN: N tokens one at a time) like llama-bench: t/s as mean +/- standard deviation\n"
      "over REPS runs after one warm-up run. Every model, device list, split mode and ratio given\n"
      "forms the cross product; each configuration is loaded once and runs every test.\n"
      "\n"
      "Columns beyond llama-bench's: devices and split as loaded, ratios = each device's share of\n"
      "the weights it holds (as planned, not as requested), sub/tok = vkQueueSubmit calls per token\n"
      "on the busiest device, wait/tok = host waits per token of the calling thread, disp/tok and\n"
      "barr/tok = compute dispatches and barriers executed per token on the busiest device, reduce p50 =\n"
      "the collective's reduce latency (tensor split; the proxy's sum and signals), wt GB/s = the\n"
      "model's weight bytes x t/s of a generation test, memcpy = that as a share of the host's memcpy\n"
      "bandwidth measured at the start of the run (the roofline where device memory is host memory).");
  p.option({"-m", "--model"}, "FILE", "a GGUF model (repeat for several)",
           [&](const std::string&, const std::string& v) { models.push_back(v); })
      .option({"-p", "--n-prompt"}, "LIST", "prompt lengths (default 512; 0 skips)",
              [&](const std::string& flag, const std::string& v) { pp = parse_counts(flag, v); })
      .option({"-n", "--n-gen"}, "LIST", "generation lengths (default 128; 0 skips)",
              [&](const std::string& flag, const std::string& v) { tg = parse_counts(flag, v); })
      .option({"-r", "--repetitions"}, "N", "runs per test (default 5)",
              store_positive(reps))
      .option({"-ub", "--ubatch-size"}, "N", "tokens per forward pass (default 512)",
              store_positive(n_ubatch))
      .option({"-o", "--output"}, "FORMAT", "md | json | jsonl | csv (default md)",
              [&](const std::string& flag, const std::string& v) {
                if (v == "md") format = Format::md;
                else if (v == "json") format = Format::json;
                else if (v == "jsonl") format = Format::jsonl;
                else if (v == "csv") format = Format::csv;
                else throw UsageError(flag + " is md, json, jsonl or csv, not '" + v + "'");
              })
      .section("configurations (each may be repeated; the cross product is measured):")
      .option({"--device", "-dev"}, "LIST",
              "physical device indices, e.g. 0 or 0,0 (two logical devices of GPU 0); llama-bench's 0/1,0 is two "
              "configurations (default: every usable device)",
              [&](const std::string& flag, const std::string& v) {
                for (const std::string& a : alternatives(flag, v)) {
                  (void)parse_index_list(flag, a);  // refuse a bad list now, not after other configurations ran
                  device_lists.push_back(a);
                }
              })
      .option({"-sm", "--split-mode"}, "LIST", "split modes, e.g. tensor or none,layer,tensor (default: as `chorus run`)",
              [&](const std::string& flag, const std::string& v) {
                for (const std::string& m : split_list(flag, v, "layer,tensor")) {
                  (void)parse_split_mode_flag(m);  // the same checks and messages as run's -sm
                  modes.push_back(m);
                }
              })
      .option({"-ts", "--tensor-split"}, "RATIOS",
              "ratios of one configuration, e.g. 3,1; llama-bench's 1/1,3/1 is two configurations (default: each "
              "device's free memory)",
              [&](const std::string& flag, const std::string& v) {
                for (const std::string& r : alternatives(flag, v)) {
                  (void)parse_ratios(flag, r);
                  ratio_lists.push_back(r);
                }
              });
  // The other placement options (-mg, --force-staging, -ngl ...) apply to every configuration.
  add_placement_options(p, common, false);
  if (!p.parse(args)) return 0;
  if (models.empty()) throw UsageError("-m MODEL is required (or `chorus bench kernels`)");
  if (std::all_of(pp.begin(), pp.end(), [](uint32_t n) { return n == 0; }) &&
      std::all_of(tg.begin(), tg.end(), [](uint32_t n) { return n == 0; }))
    throw UsageError("nothing to measure: every -p and -n length is 0");

  std::vector<Config> configs;
  const std::vector<std::string> dev_alts = device_lists.empty() ? std::vector<std::string>{""} : device_lists;
  const std::vector<std::string> mode_alts = modes.empty() ? std::vector<std::string>{""} : modes;
  const std::vector<std::string> ratio_alts = ratio_lists.empty() ? std::vector<std::string>{""} : ratio_lists;
  for (const std::string& m : models)
    for (const std::string& d : dev_alts)
      for (const std::string& sm : mode_alts)
        for (const std::string& ts : ratio_alts) {
          Config cfg{m, common, d.empty() ? "all" : d};
          if (!d.empty()) cfg.placement.devices = parse_index_list("--device", d);
          if (!sm.empty()) {
            cfg.placement.mode = parse_split_mode_flag(sm);
            cfg.placement.mode_given = true;
          }
          if (!ts.empty()) cfg.placement.ratios = parse_ratios("-ts", ts);
          if (!ts.empty() && !d.empty() && cfg.placement.ratios.size() != cfg.placement.devices.size()) {
            std::fprintf(stderr, "bench: skipping --device %s with -ts %s: %zu ratios for %zu devices\n", d.c_str(), ts.c_str(),
                         cfg.placement.ratios.size(), cfg.placement.devices.size());
            continue;
          }
          configs.push_back(std::move(cfg));
        }
  if (configs.empty()) throw UsageError("no configuration left: every -ts has a different count than its --device list");
  install_interrupt_handler();
  std::fprintf(stderr, "bench: %zu configuration(s) x %zu test(s), %u run(s) each after a warm-up\n", configs.size(),
               static_cast<size_t>(std::count_if(pp.begin(), pp.end(), [](uint32_t n) { return n > 0; }) +
                                   std::count_if(tg.begin(), tg.end(), [](uint32_t n) { return n > 0; })),
               reps);
  // The roofline of generation on a CPU device: measured once, in the same run as the rows.
  double memcpy_bps = 0;
  if (std::any_of(tg.begin(), tg.end(), [](uint32_t n) { return n > 0; })) {
    memcpy_bps = memcpy_bandwidth(reps);
    std::fprintf(stderr, "bench: host memcpy %.2f GB/s (median of %u copies of 256 MiB): the memcpy column's base\n",
                 memcpy_bps / 1e9, std::max(reps, 3u));
  }
  Printer out(format);
  for (size_t k = 0; k < configs.size() && !interrupted(); ++k) {
    std::fprintf(stderr, "bench: configuration %zu/%zu: %s, devices %s\n", k + 1, configs.size(), configs[k].model.c_str(),
                 configs[k].devices_text.c_str());
    bench_config(configs[k], pp, tg, reps, n_ubatch, memcpy_bps, out);
  }
  out.finish();
  if (interrupted()) {
    std::fprintf(stderr, "bench: interrupted (Ctrl-C); the rows above average the runs finished before it\n");
    return kInterruptedExit;
  }
  return 0;
}

}  // namespace chorus::tools
