// Matrix-matrix kernels (engine/ops/matmul.h): every weight format x both kernels (mul_mm, the
// shared-memory tiling; mul_mm_cpu, the register tiling) x every compiled variant against
// chorus::dequantize_row + a double-precision product, on awkward shapes (any K for the plain
// formats), with chunked bindings, strides and unaligned offsets.
//
// Tolerance: normalised MSE <= 1e-8 for every format and variant. The reference sees exactly
// the values the kernel multiplies — the dequantised weights, and for the fp16 variant (f16
// shared tiles) X and the dequantised W rounded to binary16 — so only the f32 accumulation
// order differs (measured: <= 4e-13, and 2e-10 for a single 256-term output with cancellation).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "engine/ops/matmul.h"
#include "engine/ops/ops.h"
#include "engine/quant.h"
#include "shaders/registry.h"
#include "tests/gpu.h"
#include "tests/reference_matmul.h"

namespace chorus {
namespace {

struct Case {
  GgmlType type;
  ops::MatmulTiling tiling;  // Grid runs mul_mm_<fmt>, Registers mul_mm_cpu_<fmt>
  const shaders::Variant* variant;
};

std::string op_of(GgmlType t, ops::MatmulTiling tiling) {
  return tiling == ops::MatmulTiling::Registers ? ops::mul_mm_cpu_op(t) : ops::mul_mm_op(t);
}

std::vector<Case> all_cases() {
  std::vector<Case> out;
  for (GgmlType t : weight_types())
    for (ops::MatmulTiling tiling : {ops::MatmulTiling::Grid, ops::MatmulTiling::Registers})
      for (const shaders::Variant* v : shaders::variants_of(op_of(t, tiling))) out.push_back({t, tiling, v});
  return out;
}

bool is_plain(GgmlType t) { return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16; }

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string name = op_of(info.param.type, info.param.tiling).substr(7);
  const std::string caps = shaders::capability_names(info.param.variant->requires_caps);
  name += "_" + (caps == "none" ? std::string("fallback") : caps);
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
}

constexpr double kTolerance = 1e-8;

// What the variant's tiles hold: the fp16 variant rounds every staged value to binary16.
std::vector<float> as_staged(const Case& c, std::vector<float> v) {
  if (c.variant->requires_caps & shaders::kFp16)
    for (float& f : v) f = fp16_to_fp32(fp32_to_fp16(f));
  return v;
}

// N rows of K random weights quantised to `type`: their bytes in the device layout
// (engine/quant.h; placed at `offset`, buffer padded to whole words) and the values they decode to.
struct Weights {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
  uint64_t row_bytes = 0;
};

Weights make_weights(GgmlType type, uint32_t K, uint32_t N, uint64_t seed, uint64_t offset = 0) {
  Weights w;
  w.row_bytes = *device_row_bytes(type, K);
  w.bytes.assign((offset + w.row_bytes * N + 3) / 4 * 4, 0xA5);
  w.values.resize(size_t(N) * K);
  const std::vector<float> src = test::random_floats(size_t(N) * K, seed);
  std::vector<uint8_t> row(*row_bytes(type, K));
  for (uint32_t n = 0; n < N; ++n) {
    quantize_row(type, src.data() + size_t(n) * K, row.data(), K);
    dequantize_row(type, row.data(), w.values.data() + size_t(n) * K, K);
    blocks_to_device(type, row.data(), K / type_traits(type).block_elems, w.bytes.data() + offset + n * w.row_bytes);
  }
  return w;
}

uint64_t fnv1a(std::span<const float> v, uint64_t h) {
  for (std::byte b : std::as_bytes(v)) h = (h ^ static_cast<uint8_t>(b)) * 1099511628211ull;
  return h;
}

uint32_t block_k(GgmlType t) { return std::max<uint32_t>(type_traits(t).block_elems, 32); }

class MulMm : public test::GpuTestP<Case> {
 protected:
  void SetUp() override {
    test::GpuTestP<Case>::SetUp();
    const uint32_t missing = GetParam().variant->requires_caps & ~test::device().capabilities();
    if (missing != 0)
      GTEST_SKIP() << "the test device lacks {" << shaders::capability_names(missing) << "} for "
                   << GetParam().variant->name;
  }
};

TEST_P(MulMm, MatchesTheDoublePrecisionReferenceOnAwkwardShapes) {
  const Case& c = GetParam();
  vk::Device& dev = test::device();
  ops::Kernels k(dev, c.variant->requires_caps);
  ASSERT_EQ(k.variant(op_of(c.type, c.tiling)).name, c.variant->name);
  const uint32_t bk = block_k(c.type);
  struct Shape {
    uint32_t K, N, M;
  };
  // One block and one row; K not a power of two (288 = 9 blocks of 32, 768 = 3 super-blocks)
  // with N and M below one tile; M just past one tile; long K. Plain formats also take any K:
  // 1, 7 (F16/BF16 rows then start at 2 mod 4 bytes), 172 (stories260K's feed-forward), 290.
  uint64_t hash = 14695981039346656037ull;
  std::vector<Shape> shapes = {{bk, 1, 1}, {bk == 32 ? 288u : 768u, 37, 5}, {512, 70, 33}, {4096, 64, 17}};
  if (is_plain(c.type)) shapes.insert(shapes.end(), {{1, 3, 2}, {7, 37, 9}, {172, 70, 33}, {290, 21, 3}});
  const ops::MatmulTiling tiling = c.tiling;
  for (const Shape& s : shapes)
    for (uint64_t seed : {1u, 2u}) {
      SCOPED_TRACE("K=" + std::to_string(s.K) + " N=" + std::to_string(s.N) + " M=" + std::to_string(s.M) +
                   " seed=" + std::to_string(seed));
      const Weights w = make_weights(c.type, s.K, s.N, seed);
      const std::vector<float> x = test::random_floats(size_t(s.M) * s.K, seed + 100);
      const std::vector<float> want = ref::matmul(as_staged(c, w.values), as_staged(c, x), s.K, s.N, s.M);

      vk::Buffer wb = test::make_buffer(dev, w.bytes, "W");
      vk::Buffer xb = test::make_buffer(dev, x, "X");
      vk::Buffer yb = dev.create_buffer(4ull * s.M * s.N, vk::BufferKind::Device, "Y");
      ops::MatmulOptions opt;
      opt.tiling = tiling;
      test::run_on(dev, [&](vk::CommandBuffer& cb) {
        ops::mul_mm(k, cb, c.type, wb, 0, s.K, s.N, xb, 0, s.M, yb, 0, opt);
      });
      std::vector<float> got(want.size());
      dev.download(yb, 0, std::as_writable_bytes(std::span<float>(got)));
      EXPECT_LE(test::nmse(want, got), kTolerance);
      hash = fnv1a(got, hash);
    }
  // Bit-exact fingerprint of every output: compare runs with LP_NUM_THREADS=1 and the default
  // (--gtest_output=xml) — any difference is a race.
  RecordProperty("y_fnv1a", std::to_string(hash));
}

TEST_P(MulMm, ChunkedBindingsStridesAndUnalignedOffsetsGiveTheSameProduct) {
  const Case& c = GetParam();
  vk::Device& dev = test::device();
  ops::Kernels k(dev, c.variant->requires_caps);
  const uint32_t K = 256, N = 70, M = 33;
  const uint32_t x_stride = K + 12, y_stride = N + 7;
  // Not a multiple of the 16-byte binding alignment; 2 mod 4 where the format allows it.
  const bool word_aligned = c.type == GgmlType::F32 || c.type == GgmlType::Q4_K || c.type == GgmlType::Q5_K;
  const uint64_t w_offset = word_aligned ? 20 : 18, x_offset = 4 * 3, y_offset = 4 * 5;
  const Weights w = make_weights(c.type, K, N, 7, w_offset);
  const std::vector<float> x = test::random_floats(size_t(M) * K, 8);
  const std::vector<float> want = ref::matmul(as_staged(c, w.values), as_staged(c, x), K, N, M);

  std::vector<float> x_strided(x_offset / 4 + size_t(M) * x_stride, 0.0f);
  for (uint32_t m = 0; m < M; ++m)
    std::copy_n(x.begin() + size_t(m) * K, K, x_strided.begin() + x_offset / 4 + size_t(m) * x_stride);
  const float sentinel = 12345.0f;
  std::vector<float> y_init(y_offset / 4 + size_t(M) * y_stride, sentinel);

  vk::Buffer wb = test::make_buffer(dev, w.bytes, "W");
  vk::Buffer xb = test::make_buffer(dev, x_strided, "X");
  vk::Buffer yb = test::make_buffer(dev, y_init, "Y");
  ops::MatmulOptions opt;
  opt.tiling = c.tiling;
  opt.x_stride = x_stride;
  opt.y_stride = y_stride;
  opt.max_window = 4096;  // a few rows of each tensor per binding: many dispatches
  test::run_on(dev, [&](vk::CommandBuffer& cb) {
    ops::mul_mm(k, cb, c.type, wb, w_offset, K, N, xb, x_offset, M, yb, y_offset, opt);
    EXPECT_GT(cb.dispatches(), 4u) << "the small window should split the product";
  });
  std::vector<float> y_all(y_init.size());
  dev.download(yb, 0, std::as_writable_bytes(std::span<float>(y_all)));
  std::vector<float> got(want.size());
  size_t untouched_changed = 0;
  for (size_t i = 0; i < y_all.size(); ++i) {
    const bool inside = i >= y_offset / 4 && (i - y_offset / 4) % y_stride < N;
    if (inside)
      got[(i - y_offset / 4) / y_stride * N + (i - y_offset / 4) % y_stride] = y_all[i];
    else if (y_all[i] != sentinel)
      ++untouched_changed;
  }
  EXPECT_EQ(untouched_changed, 0u) << "the kernel wrote outside Y";
  RecordProperty("y_fnv1a", std::to_string(fnv1a(y_all, 14695981039346656037ull)));
  EXPECT_LE(test::nmse(want, got), kTolerance);
}

INSTANTIATE_TEST_SUITE_P(EveryFormatAndVariant, MulMm, ::testing::ValuesIn(all_cases()), case_name);

using MulMmApi = test::GpuTest;

// MatmulOptions::accumulate (Y_ADD, matmul.glsl's mm_store, one line shared by every format):
// Y += the product, with the bits of the product stored into a scratch tensor and then added
// into Y (what the forward pass did before, and still does for one token). Both kernels and
// every variant, for a format of 32-element blocks, one of 256 and a plain one; chunked bindings,
// strides and unaligned offsets as above; nothing outside Y written.
TEST_F(MulMmApi, AccumulateAddsTheProductIntoYWithTheBitsOfAStoreThenAnAdd) {
  vk::Device& dev = test::device();
  const uint32_t K = 256, N = 70, M = 33, x_stride = K + 12, y_stride = N + 7;
  const uint64_t x_offset = 4 * 3, y_offset = 4 * 5;
  size_t ran = 0;
  for (const Case& c : all_cases()) {
    if (c.type != GgmlType::Q4_1 && c.type != GgmlType::Q4_K && c.type != GgmlType::F32) continue;
    if ((c.variant->requires_caps & ~dev.capabilities()) != 0) continue;  // counted below
    SCOPED_TRACE(c.variant->name);
    ops::Kernels k(dev, c.variant->requires_caps);
    const uint64_t w_offset = c.type == GgmlType::Q4_1 ? 18 : 20;
    const Weights w = make_weights(c.type, K, N, 11, w_offset);
    std::vector<float> x(x_offset / 4 + size_t(M) * x_stride, 0.0f);
    const std::vector<float> xv = test::random_floats(size_t(M) * K, 12);
    for (uint32_t m = 0; m < M; ++m) std::copy_n(xv.begin() + size_t(m) * K, K, x.begin() + x_offset / 4 + size_t(m) * x_stride);
    std::vector<float> y_old = test::random_floats(y_offset / 4 + size_t(M) * y_stride + 8, 13, 4.0f);

    vk::Buffer wb = test::make_buffer(dev, w.bytes, "W");
    vk::Buffer xb = test::make_buffer(dev, x, "X");
    vk::Buffer product = test::make_buffer(dev, std::vector<float>(y_old.size(), 0.0f), "product");
    vk::Buffer yb = test::make_buffer(dev, y_old, "Y");
    ops::MatmulOptions opt;
    opt.tiling = c.tiling;
    opt.x_stride = x_stride;
    opt.y_stride = y_stride;
    opt.max_window = 4096;  // several dispatches, as above
    test::run_on(dev, [&](vk::CommandBuffer& cb) {
      ops::mul_mm(k, cb, c.type, wb, w_offset, K, N, xb, x_offset, M, product, y_offset, opt);
      ops::MatmulOptions acc = opt;
      acc.accumulate = true;
      ops::mul_mm(k, cb, c.type, wb, w_offset, K, N, xb, x_offset, M, yb, y_offset, acc);
    });
    std::vector<float> p(y_old.size()), got(y_old.size());
    dev.download(product, 0, std::as_writable_bytes(std::span<float>(p)));
    dev.download(yb, 0, std::as_writable_bytes(std::span<float>(got)));
    size_t differ = 0, outside = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const bool inside = i >= y_offset / 4 && (i - y_offset / 4) / y_stride < M && (i - y_offset / 4) % y_stride < N;
      const float want = inside ? y_old[i] + p[i] : y_old[i];
      if (std::memcmp(&want, &got[i], 4) != 0) ++(inside ? differ : outside);
    }
    EXPECT_EQ(differ, 0u) << "elements of Y whose bits are not Y + the stored product";
    EXPECT_EQ(outside, 0u) << "elements outside Y changed";
    ++ran;
  }
  EXPECT_GE(ran, 3u) << "too few kernel variants ran on this device";
}

// MatmulOptions::glu (mul_mm_cpu's GLU epilogue): act(X W^T) * (X U^T) in one product, with the
// bits of the gate and up products stored and then ops::swiglu / ops::geglu. Formats of 32- and
// 256-element blocks (TN 8 and 4) and a plain one; the up rows right after the gate rows and
// further on; M and N not multiples of the tile; every register variant the device runs.
TEST_F(MulMmApi, GluEpilogueGivesTheBitsOfTwoProductsThenTheGatedUnit) {
  vk::Device& dev = test::device();
  const uint32_t K = 256, N = 70, M = 33;
  size_t ran = 0;
  for (const Case& c : all_cases()) {
    if (c.tiling != ops::MatmulTiling::Registers) continue;
    if (c.type != GgmlType::Q4_1 && c.type != GgmlType::Q4_K && c.type != GgmlType::F32) continue;
    if ((c.variant->requires_caps & ~dev.capabilities()) != 0) continue;  // counted below
    ops::Kernels k(dev, c.variant->requires_caps);
    for (const uint32_t gap : {0u, 3u})  // rows between the last gate row and the first up row
      for (const auto glu : {ops::MatmulOptions::Glu::swiglu, ops::MatmulOptions::Glu::geglu}) {
        SCOPED_TRACE(std::string(c.variant->name) + " gap=" + std::to_string(gap) +
                     (glu == ops::MatmulOptions::Glu::swiglu ? " swiglu" : " geglu"));
        const Weights w = make_weights(c.type, K, 2 * N + gap, 21);
        const std::vector<float> x = test::random_floats(size_t(M) * K, 22, 2.0f);
        vk::Buffer wb = test::make_buffer(dev, w.bytes, "W");
        vk::Buffer xb = test::make_buffer(dev, x, "X");
        const size_t out = size_t(M) * N;
        vk::Buffer gate = test::make_buffer(dev, std::vector<float>(out, 0.0f), "gate");
        vk::Buffer up = test::make_buffer(dev, std::vector<float>(out, 0.0f), "up");
        vk::Buffer sep = test::make_buffer(dev, std::vector<float>(out + 16, 7.0f), "separate");
        vk::Buffer fused = test::make_buffer(dev, std::vector<float>(out + 16, 7.0f), "fused");
        ops::MatmulOptions plain;
        plain.tiling = ops::MatmulTiling::Registers;
        ops::MatmulOptions g = plain;
        g.glu = glu;
        g.glu_up_offset = uint64_t(N + gap) * w.row_bytes;
        ASSERT_TRUE(ops::mul_mm_glu_fuses(k, c.type, K, N, wb, 0, xb, g));
        test::run_on(dev, [&](vk::CommandBuffer& cb) {
          ops::mul_mm(k, cb, c.type, wb, 0, K, N, xb, 0, M, gate, 0, plain);
          ops::mul_mm(k, cb, c.type, wb, g.glu_up_offset, K, N, xb, 0, M, up, 0, plain);
          cb.barrier();
          (glu == ops::MatmulOptions::Glu::swiglu ? ops::swiglu : ops::geglu)(k, cb, gate, 0, up, 0, sep, 0,
                                                                             ops::GluShape{N, M});
          ops::mul_mm(k, cb, c.type, wb, 0, K, N, xb, 0, M, fused, 0, g);
        });
        std::vector<float> want(out + 16), got(out + 16);
        dev.download(sep, 0, std::as_writable_bytes(std::span<float>(want)));
        dev.download(fused, 0, std::as_writable_bytes(std::span<float>(got)));
        EXPECT_EQ(std::memcmp(want.data(), got.data(), got.size() * 4), 0)
            << "the fused gated unit differs in its bits from the separate products and " << (glu == ops::MatmulOptions::Glu::swiglu ? "swiglu" : "geglu");
        // And against the CPU: act(gate) * up from the double-precision products.
        const std::vector<float> g_ref = ref::matmul(w.values, x, K, N, M);
        const std::vector<float> u_ref(
            ref::matmul(std::vector<float>(w.values.begin() + size_t(N + gap) * K, w.values.end()), x, K, N, M));
        std::vector<float> act(out);
        for (size_t i = 0; i < out; ++i) {
          const double v = g_ref[i], a = glu == ops::MatmulOptions::Glu::swiglu
                                              ? v / (1 + std::exp(-v))
                                              : 0.5 * v * (1 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
          act[i] = static_cast<float>(a * u_ref[i]);
        }
        EXPECT_LE(test::nmse(act, std::vector<float>(got.begin(), got.begin() + out)), 1e-8);
        ++ran;
      }
  }
  if (ran == 0) {  // no register-tiled kernel on this device (a GPU): the forward pass must not ask
    ops::Kernels k(dev);
    const Weights w = make_weights(GgmlType::Q4_1, K, 2 * N, 21);
    vk::Buffer wb = test::make_buffer(dev, w.bytes, "W");
    vk::Buffer xb = test::make_buffer(dev, test::random_floats(size_t(M) * K, 22), "X");
    ops::MatmulOptions g;
    g.glu = ops::MatmulOptions::Glu::swiglu;
    g.glu_up_offset = uint64_t(N) * w.row_bytes;
    EXPECT_FALSE(ops::mul_mm_glu_fuses(k, GgmlType::Q4_1, K, N, wb, 0, xb, g));
    GTEST_SKIP() << "the GLU epilogue is mul_mm_cpu's (CPU devices), which this device does not run; "
                    "mul_mm_glu_fuses says so, and the forward pass keeps two products and the gated unit";
  }
  EXPECT_GE(ran, 12u) << "too few kernel variants ran on this device";
}

TEST_F(MulMmApi, GluEpilogueIsTheRegisterKernelsAndNeedsTheUpRowsAfterTheGateRows) {
  vk::Device& dev = test::device();
  ops::Kernels k(dev);
  const uint32_t K = 256, N = 64;
  const Weights w = make_weights(GgmlType::Q4_1, K, 2 * N, 3);
  vk::Buffer wb = test::make_buffer(dev, w.bytes, "W");
  vk::Buffer xb = test::make_buffer(dev, test::random_floats(size_t(4) * K, 4), "X");
  vk::Buffer yb = test::make_buffer(dev, std::vector<float>(size_t(4) * N, 0.0f), "Y");
  ops::MatmulOptions g;
  g.glu = ops::MatmulOptions::Glu::swiglu;
  g.glu_up_offset = uint64_t(N) * w.row_bytes;
  g.tiling = ops::MatmulTiling::Grid;
  EXPECT_FALSE(ops::mul_mm_glu_fuses(k, GgmlType::Q4_1, K, N, wb, 0, xb, g));
  g.tiling = ops::MatmulTiling::Registers;
  g.glu_up_offset = uint64_t(N - 1) * w.row_bytes;  // up rows overlapping the gate rows
  EXPECT_FALSE(ops::mul_mm_glu_fuses(k, GgmlType::Q4_1, K, N, wb, 0, xb, g));
  g.glu_up_offset = uint64_t(N + 1) * w.row_bytes;  // past W's end
  EXPECT_FALSE(ops::mul_mm_glu_fuses(k, GgmlType::Q4_1, K, N, wb, 0, xb, g));
  vk::CommandBuffer cb(dev);
  cb.begin();
  EXPECT_THROW(ops::mul_mm(k, cb, GgmlType::Q4_1, wb, 0, K, N, xb, 0, 4, yb, 0, g), vk::Error);
}

TEST_F(MulMmApi, EveryWeightFormatHasAFallbackGridKernelAndAPlainRegisterKernelForCpuDevices) {
  for (GgmlType t : weight_types()) {
    const auto has = [](const std::string& op, uint32_t caps) {
      for (const shaders::Variant* v : shaders::variants_of(op))
        if (v->requires_caps == caps) return true;
      return false;
    };
    EXPECT_TRUE(has(ops::mul_mm_op(t), 0)) << ops::mul_mm_op(t);
    EXPECT_TRUE(has(ops::mul_mm_cpu_op(t), shaders::kCpu)) << ops::mul_mm_cpu_op(t);
    EXPECT_EQ(shaders::select(ops::mul_mm_cpu_op(t), shaders::kSubgroup | shaders::kFp16), nullptr)
        << "a device without the CPU capability must not get " << ops::mul_mm_cpu_op(t);
  }
}

TEST_F(MulMmApi, RejectsKThatIsNotAWholeNumberOfBlocksOfAQuantisedFormat) {
  vk::Device& dev = test::device();
  ops::Kernels k(dev);
  vk::Buffer b = dev.create_buffer(1 << 16, vk::BufferKind::Device, "any");
  vk::CommandBuffer cb(dev);
  cb.begin();
  EXPECT_THROW(ops::mul_mm(k, cb, GgmlType::Q4_K, b, 0, 288, 4, b, 0, 2, b, 0), vk::Error);
  EXPECT_THROW(ops::mul_mm(k, cb, GgmlType::Q4_0, b, 0, 48, 4, b, 0, 2, b, 0), vk::Error);
  EXPECT_THROW(ops::mul_mm(k, cb, GgmlType::F32, b, 0, 0, 4, b, 0, 2, b, 0), vk::Error);
  EXPECT_NO_THROW(ops::mul_mm(k, cb, GgmlType::F16, b, 0, 7, 4, b, 4096, 2, b, 8192));
  EXPECT_THROW(ops::mul_mm(k, cb, GgmlType::Q4_K, b, 2, 256, 4, b, 0, 2, b, 0), vk::Error);
  cb.end();
}

// Throughput at a prefill shape (not part of the suite: run with
// --gtest_also_run_disabled_tests --gtest_filter='*Speed*'). Prints the median GFLOP/s of
// CHORUS_MM_REPS (default 3) runs per format for the device's default kernel (Auto) and for the
// shared-memory kernel (Grid). CHORUS_MM_M sets M (default 128).
TEST_F(MulMmApi, DISABLED_SpeedAtPrefillShape) {
  vk::Device& dev = test::device();
  const uint32_t K = 4096, N = 4096;
  const auto env = [](const char* name, uint32_t fallback) {
    const char* v = std::getenv(name);
    return v ? static_cast<uint32_t>(std::atoi(v)) : fallback;
  };
  const uint32_t M = env("CHORUS_MM_M", 128), reps = std::max(env("CHORUS_MM_REPS", 3), 1u);
  const std::vector<float> x = test::random_floats(size_t(M) * K, 1);
  vk::Buffer xb = test::make_buffer(dev, x, "X");
  vk::Buffer yb = dev.create_buffer(4ull * M * N, vk::BufferKind::Device, "Y");
  ops::Kernels k(dev);
  for (GgmlType t : {GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4_K, GgmlType::Q6_K}) {
    const Weights w = make_weights(t, K, N, 3);
    vk::Buffer wb = test::make_buffer(dev, w.bytes, "W");
    for (ops::MatmulTiling tiling : {ops::MatmulTiling::Auto, ops::MatmulTiling::Grid}) {
      if (tiling == ops::MatmulTiling::Grid && std::getenv("CHORUS_MM_GRID") == nullptr) continue;
      ops::MatmulOptions opt;
      opt.tiling = tiling;
      vk::CommandBuffer cb(dev);
      cb.begin();
      ops::mul_mm(k, cb, t, wb, 0, K, N, xb, 0, M, yb, 0, opt);
      cb.end();
      dev.run(cb);  // warm-up (pipeline build)
      std::vector<double> secs;
      for (uint32_t r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        dev.run(cb);
        secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(secs.begin(), secs.end());
      const double s = secs[secs.size() / 2];
      std::printf("%-6s %-5s K=%u N=%u M=%u: median %.1f ms, %.2f GFLOP/s (min %.1f ms)\n", type_traits(t).name,
                  tiling == ops::MatmulTiling::Grid ? "grid" : "auto", K, N, M, s * 1e3, 2.0 * K * N * M / s * 1e-9,
                  secs.front() * 1e3);
    }
  }
}

}  // namespace
}  // namespace chorus
