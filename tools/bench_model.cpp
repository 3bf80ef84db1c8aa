// `chorus bench -m MODEL`: llama-bench style prompt-processing and generation speed, with the
// synchronisation counters of a decode token.
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <optional>
#include <random>

#include "engine/model.h"
#include "tools/commands.h"
#include "tools/model_setup.h"

namespace chorus::tools {
namespace {

constexpr const char* kHelp =
    "usage: chorus bench -m MODEL [-p N[,N..]] [-n N[,N..]] [-r REPS] [-ub N] [--device LIST] [-sm M] [-ts R]\n"
    "       chorus bench kernels [...]   (kernel throughput; see `chorus bench kernels --help`)\n"
    "\n"
    "Measures prompt processing (ppN: N tokens in one decode call, in micro-batches of -ub) and\n"
    "generation (tgN: N tokens one at a time) like llama-bench, printing t/s as mean +/- standard\n"
    "deviation over REPS runs after one warm-up run, and the per-token synchronisation counters\n"
    "of generation (vkQueueSubmit calls and host waits per token; with a tensor split, reduce points\n"
    "per token, submits per reduce and the reduce latency p50/p99).\n"
    "\n"
    "  -m, --model FILE        a GGUF model\n"
    "  -p, --n-prompt LIST     prompt lengths (default 512; 0 skips)\n"
    "  -n, --n-gen LIST        generation lengths (default 128; 0 skips)\n"
    "  -r, --repetitions N     runs per test (default 5)\n"
    "  -ub, --ubatch-size N    tokens per forward pass (default 512)\n"
    "%s";

struct Stat {
  double mean = 0, sd = 0;
};

Stat stat(const std::vector<double>& v) {
  Stat s;
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

}  // namespace

int bench_model(const std::vector<std::string>& args) {
  std::string model_path;
  std::vector<uint32_t> pp{512}, tg{128};
  uint32_t reps = 5, n_ubatch = 512;
  Placement placement;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::printf(kHelp, kPlacementHelp);
      return 0;
    }
    if (a == "-m" || a == "--model") model_path = take_value(args, i);
    else if (a == "-p" || a == "--n-prompt") pp = parse_counts(a, take_value(args, i));
    else if (a == "-n" || a == "--n-gen") tg = parse_counts(a, take_value(args, i));
    else if (a == "-r" || a == "--repetitions") reps = parse_positive(a, take_value(args, i));
    else if (a == "-ub" || a == "--ubatch-size") n_ubatch = parse_positive(a, take_value(args, i));
    else if (parse_placement_flag(args, i, placement)) continue;
    else throw UsageError("unknown option '" + a + "'");
  }
  if (model_path.empty()) throw UsageError("-m MODEL is required (or `chorus bench kernels`)");
  install_interrupt_handler();

  const LoadedModel loaded = load_model(model_path, placement, false);
  Model& model = *loaded.model;
  std::vector<vk::Device*> devs;
  for (const auto& d : loaded.devices) devs.push_back(d.get());
  const ModelConfig& c = model.config();
  const uint32_t longest = std::max(*std::max_element(pp.begin(), pp.end()), *std::max_element(tg.begin(), tg.end()) + 1);
  Context ctx(model, ContextOptions{std::max(longest, 16u), 1, n_ubatch});
  print_memory_use(ctx);

  uint64_t file_bytes = 0, params = 0;
  for (const auto& t : model.file().tensors()) {
    file_bytes += t.size;
    params += t.n_elements();
  }
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(c.n_vocab) - 1);
  std::string model_name = c.name.empty() ? c.arch : c.name;
  std::printf("| %-28s | %10s | %9s | %-8s | %7s | %20s |\n", "model", "size", "params", "backend", "test", "t/s");
  std::printf("| %.28s | %.10s | %.9s | %.8s | %.7s | %.20s |\n", "------------------------------", "------------",
              "-----------", "----------", "---------", "----------------------");
  const auto row = [&](const std::string& test, const Stat& s) {
    std::printf("| %-28.28s | %6.2f MiB | %7.2f M | %-8s | %7s | %11.2f ± %6.2f |\n", model_name.c_str(),
                static_cast<double>(file_bytes) / (1 << 20), static_cast<double>(params) / 1e6, "Vulkan", test.c_str(),
                s.mean, s.sd);
    flush_stdout();
  };

  // Ctrl-C stops between runs: a test's row then averages the runs measured so far.
  for (uint32_t n : pp) {
    if (n == 0 || interrupted()) continue;
    std::vector<double> tps;
    for (uint32_t r = 0; r <= reps && !interrupted(); ++r) {
      std::vector<int32_t> tokens(n);
      for (auto& t : tokens) t = token(rng);
      ctx.clear(0);
      const auto t0 = std::chrono::steady_clock::now();
      ctx.decode(0, tokens);
      const double ms = ms_since(t0);
      if (r > 0) tps.push_back(1000.0 * n / ms);  // run 0 warms up
    }
    if (!tps.empty()) row("pp" + std::to_string(n), stat(tps));
  }
  double submits_per_token = 0, waits_per_token = 0;
  // The collective's reduce points during the last generation run (tensor split only).
  std::optional<split::CollectiveStats> reduce_stats;
  uint32_t reduce_tokens = 0;
  for (uint32_t n : tg) {
    if (n == 0 || interrupted()) continue;
    std::vector<double> tps;
    for (uint32_t r = 0; r <= reps && !interrupted(); ++r) {
      ctx.clear(0);
      int32_t t = token(rng);
      ctx.decode(0, std::span(&t, 1));
      std::vector<uint64_t> submits0;
      for (vk::Device* d : devs) submits0.push_back(d->counters().submits.load());
      const uint64_t waits0 = ctx.counters().host_waits;
      const std::optional<split::CollectiveStats> cs0 = ctx.collective_stats();
      const auto t0 = std::chrono::steady_clock::now();
      for (uint32_t i = 0; i < n; ++i) {
        t = token(rng);
        ctx.decode(0, std::span(&t, 1));
      }
      const double ms = ms_since(t0);
      // Submits per device (the most of any device); waits of this (the main) thread.
      submits_per_token = 0;
      for (size_t k = 0; k < devs.size(); ++k)
        submits_per_token = std::max(submits_per_token, static_cast<double>(devs[k]->counters().submits.load() - submits0[k]) / n);
      waits_per_token = static_cast<double>(ctx.counters().host_waits - waits0) / n;
      if (const auto cs1 = ctx.collective_stats(); cs0 && cs1) {
        split::CollectiveStats d;
        d.reduces = cs1->reduces - cs0->reduces;
        d.reduce_submits = cs1->reduce_submits - cs0->reduce_submits;
        const size_t skip = std::min(cs0->latency_ns.size(), cs1->latency_ns.size());
        d.latency_ns.assign(cs1->latency_ns.begin() + static_cast<std::ptrdiff_t>(skip), cs1->latency_ns.end());
        reduce_stats = std::move(d);
        reduce_tokens = n;
      }
      if (r > 0) tps.push_back(1000.0 * n / ms);
    }
    if (!tps.empty()) row("tg" + std::to_string(n), stat(tps));
  }
  std::printf("\n%zu device(s), split %s, %u run(s) per test after a warm-up\n", devs.size(),
              split::to_string(model.plan().mode), reps);
  if (submits_per_token > 0)
    std::printf("generation: %.2f vkQueueSubmit per device per token, %.2f host waits per token (main thread)\n", submits_per_token,
                waits_per_token);
  if (reduce_stats && reduce_stats->reduces > 0)
    std::printf("reduces: %.2f per token, %.2f submits per reduce, reduce latency p50 %.1f us, p99 %.1f us "
                "(the proxy's sum and signals, last tg run)\n",
                static_cast<double>(reduce_stats->reduces) / reduce_tokens,
                static_cast<double>(reduce_stats->reduce_submits) / static_cast<double>(reduce_stats->reduces),
                reduce_stats->latency_us(0.5), reduce_stats->latency_us(0.99));
  if (interrupted()) {
    std::fprintf(stderr, "bench: interrupted (Ctrl-C); the rows above average the runs finished before it\n");
    return kInterruptedExit;
  }
  return 0;
}

}  // namespace chorus::tools
