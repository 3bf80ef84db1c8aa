// `chorus bench kernels`: kernel throughput against this machine's memory bandwidth.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <sstream>

#include <sys/resource.h>

#include "engine/ops/kernels.h"
#include "engine/ops/matmul.h"
#include "engine/ops/matvec.h"
#include "engine/ops/ops.h"
#include "engine/quant.h"
#include "shaders/registry.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "vkdevice/device.h"
#include "vkdevice/instance.h"
#include "vkdevice/memory.h"

namespace chorus::tools {

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }


std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::vector<GgmlType> parse_formats(const std::string& text) {
  std::map<std::string, GgmlType> by_name;
  for (GgmlType t : weight_types()) by_name[lower(type_traits(t).name)] = t;
  std::vector<GgmlType> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    auto it = by_name.find(lower(item));
    if (it == by_name.end()) throw UsageError("--formats: unknown weight format '" + item + "'");
    out.push_back(it->second);
  }
  if (out.empty()) throw UsageError("--formats expects a list such as q4_0,q8_0");
  return out;
}

// N rows of K weights of `type` in the device layout: 64 distinct quantised random rows, repeated.
std::vector<uint8_t> bench_weights(GgmlType type, uint32_t K, uint32_t N) {
  const uint64_t rb = *row_bytes(type, K);
  const uint32_t distinct = std::min<uint32_t>(N, 64);
  std::vector<uint8_t> bytes((rb * N + 3) / 4 * 4, 0);
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> row(K);
  for (uint32_t n = 0; n < distinct; ++n) {
    for (float& v : row) v = dist(rng);
    quantize_row(type, row.data(), bytes.data() + n * rb, K);
  }
  for (uint32_t n = distinct; n < N; ++n) std::memcpy(bytes.data() + n * rb, bytes.data() + (n % distinct) * rb, rb);
  std::vector<uint8_t> dev = rows_to_device(type, bytes, K, N);
  dev.resize((dev.size() + 3) / 4 * 4, 0);
  return dev;
}

bool whole_blocks(GgmlType t, uint32_t K) { return K % type_traits(t).block_elems == 0; }

// Whether rows of K elements are whole blocks of t; if not, says so in the table (the format is
// skipped at this K).
bool fits_blocks(GgmlType t, uint32_t K) {
  const uint32_t qk = type_traits(t).block_elems;
  if (whole_blocks(t, K)) return true;
  std::printf("  %-6s skipped: K = %u is not a whole number of its %u-element blocks\n", type_traits(t).name, K, qk);
  return false;
}

std::vector<float> random_vector(size_t n) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// CPU seconds (user + system) this process has used so far, all threads (lavapipe's workers
// included).
double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto sec = [](const timeval& t) { return double(t.tv_sec) + 1e-6 * double(t.tv_usec); };
  return sec(u.ru_utime) + sec(u.ru_stime);
}

struct Timing {
  double wall = 0;  // median wall seconds per submission
  double cpu = 0;   // median CPU seconds per submission (all threads): less sensitive to other
                    // processes on a shared machine than wall time
};

// Timing of one submission of cb over reps runs (after one warm-up run).
Timing time_runs(vk::Device& dev, const vk::CommandBuffer& cb, uint32_t reps) {
  dev.run(cb);
  std::vector<double> s, c;
  for (uint32_t r = 0; r < reps; ++r) {
    const double c0 = process_cpu_seconds();
    const auto t0 = Clock::now();
    dev.run(cb);
    s.push_back(seconds_since(t0));
    c.push_back(process_cpu_seconds() - c0);
  }
  return {median(s), median(c)};
}

struct BenchOptions {
  uint32_t device = 0;
  uint32_t reps = 5;
  uint32_t K = 4096, N = 4096, M = 64;
  uint32_t repeat = 10;  // dispatches per command buffer
  std::vector<GgmlType> formats;
  ops::MatVecOptions mv;
  bool matmul = true;
  bool row_ops = true;
};

// Refuses shapes whose buffers the device cannot hold, before any host memory is filled for
// them (an N x K weight matrix of --k 4096 --m 16777216 would need 256 GiB of host memory).
void check_shapes(const vk::Device& dev, const BenchOptions& o) {
  const uint64_t m = std::max(o.M, 1u);
  dev.check_buffer_size(uint64_t(o.K) * m * 4, "bench x (--k x --m floats)");
  dev.check_buffer_size(uint64_t(o.N) * m * 4, "bench y (--n x --m floats)");
  for (GgmlType t : o.formats)
    if (whole_blocks(t, o.K))
      dev.check_buffer_size(*row_bytes(t, o.K) * uint64_t(o.N), std::string("bench W (") + type_traits(t).name + ", --n x --k)");
}

int bench_kernels(const BenchOptions& o) {
  // The device first: a bad --device or shape is refused before the memcpy benchmark runs.
  vk::Instance inst;
  if (o.device >= inst.devices().size())
    throw UsageError("--device " + std::to_string(o.device) + " is not a device index: this machine has " +
                     std::to_string(inst.devices().size()) + " Vulkan device(s), numbered from 0 (see `chorus devices`)");
  vk::DeviceOptions dopt;
  dopt.physical_index = o.device;
  vk::Device dev(inst, dopt);
  check_shapes(dev, o);
  install_interrupt_handler();

  std::printf("host memcpy (256 MiB, median of %u): ", std::max(o.reps, 3u));
  flush_stdout();
  const double memcpy_bps = memcpy_bandwidth(o.reps);
  std::printf("%.2f GB/s\n", memcpy_bps / 1e9);

  ops::Kernels k(dev);
  std::printf("%s, kernels {%s}\n", dev.label().c_str(), shaders::capability_names(dev.capabilities()).c_str());
  std::printf("matvec %u x %u (y = W x), %u dispatches per submit, median of %u submits\n", o.N, o.K, o.repeat, o.reps);
  std::printf("  %-6s %-34s %8s %10s %8s %9s %12s\n", "format", "variant", "MiB", "us/call", "GB/s", "roofline",
              "cpu-us/call");

  const std::vector<float> xh = random_vector(std::max(o.K, 1u) * size_t(std::max(o.M, 1u)));
  vk::Buffer x = dev.create_buffer(xh.size() * 4, vk::BufferKind::Device, "bench x");
  dev.upload(x, std::span<const float>(xh));
  vk::Buffer y = dev.create_buffer(uint64_t(o.N) * std::max(o.M, 1u) * 4, vk::BufferKind::Device, "bench y");

  for (GgmlType t : o.formats) {
    if (interrupted()) break;
    if (!fits_blocks(t, o.K)) continue;
    const std::vector<uint8_t> wh = bench_weights(t, o.K, o.N);
    vk::Buffer w = dev.create_buffer(wh.size(), vk::BufferKind::Device, "bench W");
    dev.upload(w, std::span<const uint8_t>(wh));
    // Default: the storage-buffer kernel and, where one applies, the texel-buffer kernel, in
    // the same run (the machine's load moves between runs).
    std::vector<ops::MatVecOptions> runs{o.mv};
    if (o.mv.texel < 0) {
      ops::MatVecOptions storage = o.mv, texel = o.mv;
      storage.texel = 0;
      texel.texel = 1;
      runs = {storage};
      if (ops::mul_mv_kernel_name(k, t, o.K, w, 0, x, 0, texel) != ops::mul_mv_kernel_name(k, t, o.K, w, 0, x, 0, storage))
        runs.push_back(texel);
    }
    for (const ops::MatVecOptions& mv : runs) {
      vk::CommandBuffer cb(dev);
      cb.begin();
      // No barriers between the repeats: each writes the same y from the same inputs.
      for (uint32_t r = 0; r < o.repeat; ++r) ops::mul_mv(k, cb, t, w, 0, o.K, o.N, x, 0, y, 0, mv);
      cb.end();
      const Timing tm = time_runs(dev, cb, o.reps);
      const double s = tm.wall / o.repeat;
      const double wbytes = double(*row_bytes(t, o.K)) * o.N;
      std::printf("  %-6s %-34s %8.1f %10.1f %8.2f %8.0f%% %12.1f\n", type_traits(t).name,
                  ops::mul_mv_kernel_name(k, t, o.K, w, 0, x, 0, mv).c_str(), wbytes / (1 << 20), s * 1e6,
                  wbytes / s / 1e9, 100.0 * wbytes / s / memcpy_bps, tm.cpu / o.repeat * 1e6);
      flush_stdout();
    }
  }

  if (o.matmul && o.M > 0 && !interrupted()) {
    std::printf("matmul %u x %u x M=%u (Y = X W^T), median of %u submits\n", o.N, o.K, o.M, o.reps);
    std::printf("  %-6s %-28s %10s %10s\n", "format", "variant", "ms/call", "GFLOP/s");
    for (GgmlType t : o.formats) {
      if (interrupted()) break;
      if (!fits_blocks(t, o.K)) continue;
      const std::vector<uint8_t> wh = bench_weights(t, o.K, o.N);
      vk::Buffer w = dev.create_buffer(wh.size(), vk::BufferKind::Device, "bench W");
      dev.upload(w, std::span<const uint8_t>(wh));
      vk::CommandBuffer cb(dev);
      cb.begin();
      ops::mul_mm(k, cb, t, w, 0, o.K, o.N, x, 0, o.M, y, 0);
      cb.end();
      const double s = time_runs(dev, cb, o.reps).wall;
      std::printf("  %-6s %-28s %10.2f %10.2f\n", type_traits(t).name,
                  ops::mul_mm_kernel_name(k, t).c_str(), s * 1e3,
                  2.0 * o.M * o.N * double(o.K) / s / 1e9);
      flush_stdout();
    }
  }
  if (o.row_ops && o.M > 0 && !interrupted()) {
    // The row kernels a prefill runs on every token between the products (x through rms_norm;
    // after a split's reduce, the sum added into x inside the norm; the gated unit, here over K
    // elements per row).
    std::printf("row kernels, M=%u rows of K=%u, %u dispatches per submit, median of %u submits\n", o.M, o.K, o.repeat,
                o.reps);
    std::printf("  %-28s %10s %8s %12s\n", "kernel", "us/call", "GB/s", "cpu-us/call");
    const uint64_t bytes = uint64_t(o.K) * o.M * 4;
    vk::Buffer s = dev.create_buffer(bytes, vk::BufferKind::Device, "bench sum");
    dev.upload(s, std::span<const float>(xh));
    vk::Buffer g = dev.create_buffer(uint64_t(o.K) * 4, vk::BufferKind::Device, "bench norm weight");
    dev.upload(g, std::span<const float>(xh.data(), o.K));
    vk::Buffer h = dev.create_buffer(bytes, vk::BufferKind::Device, "bench h");
    const ops::RmsNormShape shape{.n = o.K, .rows = o.M};
    const char* names[] = {"rms_norm", "add_rms_norm", "swiglu"};
    for (int op = 0; op < 3; ++op) {
      vk::CommandBuffer cb(dev);
      cb.begin();
      for (uint32_t r = 0; r < o.repeat; ++r) {
        if (op == 0) ops::rms_norm(k, cb, x, 0, &g, 0, h, 0, shape);
        else if (op == 1) ops::add_rms_norm(k, cb, x, 0, s, 0, &g, 0, h, 0, shape);
        else ops::swiglu(k, cb, x, 0, s, 0, h, 0, ops::GluShape{.n = o.K, .rows = o.M});
        cb.barrier();  // add_rms_norm updates x: the repeats run in order
      }
      cb.end();
      const Timing tm = time_runs(dev, cb, o.reps);
      // Bytes moved: rms_norm reads x and writes h; add_rms_norm also reads the sum and writes x;
      // swiglu reads x (the gate) and the sum (up) and writes h.
      const double moved = double(bytes) * (op == 0 ? 2 : op == 1 ? 4 : 3);
      std::printf("  %-28s %10.1f %8.2f %12.1f\n", names[op], tm.wall / o.repeat * 1e6,
                  moved / (tm.wall / o.repeat) / 1e9, tm.cpu / o.repeat * 1e6);
      flush_stdout();
    }
  }
  if (interrupted()) {
    std::fprintf(stderr, "bench kernels: interrupted (Ctrl-C); the lines above were measured before it\n");
    return kInterruptedExit;
  }
  return 0;
}

}  // namespace

// Host memcpy bandwidth in bytes copied per second (median of reps over a 256 MiB buffer).
double memcpy_bandwidth(uint32_t reps) {
  const size_t bytes = size_t(256) << 20;
  std::vector<char> a(bytes, 1), b(bytes, 2);
  std::vector<double> rates;
  for (uint32_t r = 0; r < std::max(reps, 3u); ++r) {
    const auto t0 = Clock::now();
    std::memcpy(b.data(), a.data(), bytes);
    const double s = seconds_since(t0);
    rates.push_back(double(bytes) / s);
    a[r % bytes] = b[(r * 7919) % bytes];  // keep the copies observable
  }
  return median(rates);
}

int cmd_bench(const std::vector<std::string>& args) {
  if (!args.empty() && args[0] == "collective") return bench_collective(args);
  if (args.empty() || args[0] != "kernels") return bench_model(args);  // `chorus bench -m MODEL`
  BenchOptions o;
  o.formats = weight_types();
  auto u32 = [](const std::string& flag, const std::string& v) {
    const uint64_t n = parse_uint(flag, v);
    if (n > 1u << 24) throw UsageError(flag + " value " + v + " is too large");
    return static_cast<uint32_t>(n);
  };
  auto positive = [&](const std::string& flag, const std::string& v) {
    const uint32_t n = u32(flag, v);
    if (n == 0) throw UsageError(flag + " expects a positive count, got 0");
    return n;
  };
  const auto set = [](uint32_t& target, auto parse) {
    return [&target, parse](const std::string& flag, const std::string& v) { target = parse(flag, v); };
  };
  const auto zero_one = [](int& target) {
    return [&target](const std::string& flag, const std::string& v) { target = static_cast<int>(parse_int(flag, v, 0, 1)); };
  };
  cli::Parser p("usage: chorus bench kernels [--device N] [-r REPS] [--formats LIST] [options]",
                "Measures the host's memcpy bandwidth, then for each weight format the matrix-vector\n"
                "kernel (decode) at N x K: GB/s of weight bytes read and the fraction of memcpy bandwidth\n"
                "(the roofline; memcpy counts bytes copied; weight bytes are the format's GGUF bytes,\n"
                "without the padding chorus adds to Q6_K blocks on the device), then the matrix-matrix kernel\n"
                "(prefill) in GFLOP/s at N x K x M. Timings are host wall time around a submit and its wait;\n"
                "the matvec command buffer holds several dispatches so the submit cost is amortised.");
  p.option({"--device", "-dev"}, "N", "physical device index from `chorus devices` (default 0)", set(o.device, u32))
      .option({"-r", "--reps"}, "REPS", "submits per measurement; the median is reported (default 5)", set(o.reps, positive))
      .option({"--formats"}, "LIST", "e.g. q4_0,q8_0,q4_k,q6_k (default: every weight format)",
              [&](const std::string&, const std::string& v) { o.formats = parse_formats(v); })
      .option({"--k"}, "K",
              "matrix columns (default 4096), a multiple of 32 (formats of 256-element blocks are skipped when K is not "
              "a multiple of 256)",
              set(o.K, u32))
      .option({"--n"}, "N", "matrix rows (default 4096)", set(o.N, u32))
      .option({"--m"}, "M", "matmul batch rows (default 64; 0 skips the matmul)", set(o.M, u32))
      .option({"--repeat"}, "R", "matvec dispatches per command buffer (default 10)", set(o.repeat, positive))
      .option({"--workgroup"}, "W", "matvec invocations per workgroup (tuning; default: the op's)", set(o.mv.workgroup, u32))
      .option({"--rows"}, "R", "matvec rows per workgroup or per invocation (tuning; default: the op's)", set(o.mv.rows, u32))
      .option({"--row-per-invocation"}, "0|1", "matvec work split (tuning; default: 1 on CPU devices)",
              zero_one(o.mv.row_per_invocation))
      .option({"--texel"}, "0|1",
              "matvec through texel buffers (mul_mv_texel_*) or storage buffers only; default: both, one line each, "
              "where a texel kernel applies",
              zero_one(o.mv.texel))
      .option({"--fixed-k"}, "0|1",
              "texel kernels specialised for K, their loops unrolled (1), or K read at run time (0); default: 1 for K "
              "up to " + std::to_string(ops::kMaxFixedK),
              zero_one(o.mv.fixed_k))
      .option({"--row-ops"}, "0|1", "also the row kernels (rms_norm, add_rms_norm, swiglu) over M rows of K (default 1)",
              [&](const std::string& flag, const std::string& v) { o.row_ops = parse_int(flag, v, 0, 1) != 0; })
      .epilog("environment: CHORUS_DISABLE_CAPS=fp16,subgroup,cpu benchmarks narrower variants;\n"
              "LP_NUM_THREADS sets lavapipe's worker threads.");
  if (!p.parse(std::vector<std::string>(args.begin() + 1, args.end()))) return 0;
  if (o.K == 0 || o.K % 32 != 0 || o.N == 0) throw UsageError("--k must be a positive multiple of 32 and --n positive");
  return bench_kernels(o);
}

}  // namespace chorus::tools
