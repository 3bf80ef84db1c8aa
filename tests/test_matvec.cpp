// Dequantising matrix-vector kernels (engine/ops/matvec.h): every weight format x every
// compiled variant against chorus::dequantize_row + a double-precision dot product, on one
// block, odd shapes, a 4096-wide matrix, windowed (chunked) weight bindings and unaligned
// offsets; the texel-buffer kernels (mul_mv_texel_*) the same way; Q6_K's padded blocks on the
// 16-byte load path.
//
// Tolerances (normalised MSE against the reference):
//   fallback, subgroup, subgroup+fp16: 1e-10 for every format. The weights the reference sees
//     are the dequantised weights and every dequantised value is exact in f32 (fp16 scales
//     read as float16_t are exact too), so only the f32 summation order counts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "engine/ops/matvec.h"
#include "engine/quant.h"
#include "shaders/registry.h"
#include "tests/gpu.h"
#include "tests/reference.h"
#include "tests/reference_attention.h"
#include "tests/reference_ops.h"

namespace chorus {
namespace {

struct Case {
  GgmlType type;
  const shaders::Variant* variant;
};

std::vector<Case> all_cases() {
  std::vector<Case> out;
  for (GgmlType t : weight_types())
    for (const shaders::Variant* v : shaders::variants_of(ops::mul_mv_op(t))) out.push_back({t, v});
  return out;
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string name = ops::mul_mv_op(info.param.type).substr(7);
  const std::string caps = shaders::capability_names(info.param.variant->requires_caps);
  name += "_" + (caps == "none" ? std::string("fallback") : caps);
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
}

uint32_t block_elems(GgmlType t) { return type_traits(t).block_elems; }

// N rows of K random weights quantised to `type`: device-layout bytes (engine/quant.h) placed at `offset` in a buffer
// padded to whole words, and the values they decode to.
struct Weights {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
};

Weights make_weights(GgmlType type, uint32_t K, uint32_t N, uint64_t seed, uint64_t offset, uint64_t pad = 0) {
  const uint64_t rb = *row_bytes(type, K), drb = *device_row_bytes(type, K);
  Weights w;
  w.bytes.assign((offset + drb * N + 3) / 4 * 4 + pad, 0xA5);
  w.values.resize(size_t(K) * N);
  const std::vector<float> src = test::random_floats(size_t(K) * N, seed);
  std::vector<uint8_t> row(rb);
  for (uint32_t n = 0; n < N; ++n) {
    quantize_row(type, src.data() + size_t(n) * K, row.data(), K);
    dequantize_row(type, row.data(), w.values.data() + size_t(n) * K, K);
    blocks_to_device(type, row.data(), K / type_traits(type).block_elems, w.bytes.data() + offset + n * drb);
  }
  return w;
}

struct Layout {
  uint64_t w_offset = 0, x_offset = 0, y_offset = 0;
  uint64_t w_pad = 0;  // bytes after the weights' last word
  ops::MatVecOptions options{};
  Layout() { options.texel = 0; }  // the storage-buffer kernels; MulMvTexel tests the texel ones
};

// Runs mul_mv with kernels k on fresh random data, checks that it ran `kernel` and matches the
// reference; returns y.
std::vector<float> run_and_check(ops::Kernels& k, GgmlType type, const std::string& kernel, uint32_t K, uint32_t N,
                                 uint64_t seed, const Layout& l) {
  vk::Device& dev = test::device(0);
  const std::string op = ops::mul_mv_op(type);
  const Weights w = make_weights(type, K, N, seed, l.w_offset, l.w_pad);
  const std::vector<float> x = test::random_floats(K, seed + 1000);
  std::vector<float> xpad(l.x_offset / 4, 0.0f);
  xpad.insert(xpad.end(), x.begin(), x.end());
  vk::Buffer wb = test::make_buffer(dev, w.bytes, "W");
  vk::Buffer xb = test::make_buffer(dev, xpad, "x");
  vk::Buffer yb = dev.create_buffer(l.y_offset + uint64_t(N) * 4, vk::BufferKind::Device, "y");
  const std::string what = op + " K=" + std::to_string(K) + " N=" + std::to_string(N) + " seed=" + std::to_string(seed) +
                           " w_offset=" + std::to_string(l.w_offset) + " x_offset=" + std::to_string(l.x_offset);
  EXPECT_EQ(ops::mul_mv_kernel_name(k, type, K, wb, l.w_offset, xb, l.x_offset, l.options), kernel) << what;

  test::run_on(dev, [&](vk::CommandBuffer& cb) {
    ops::mul_mv(k, cb, type, wb, l.w_offset, K, N, xb, l.x_offset, yb, l.y_offset, l.options);
    cb.barrier_to_host();  // y is read by the host below
  });
  const std::vector<float> y = dev.download<float>(yb, N, l.y_offset);

  const std::vector<float> ref = ref::matvec(w.values, x, K, N);
  EXPECT_LE(test::nmse(ref, y), 1e-10) << what;
  return y;
}

class MulMv : public test::GpuTestP<Case> {
 protected:
  // Runs the case's variant on fresh random data and checks it against the reference; returns y.
  std::vector<float> check(uint32_t K, uint32_t N, uint64_t seed, const Layout& l = {}) {
    const Case& c = GetParam();
    ops::Kernels k(test::device(0), c.variant->requires_caps);
    EXPECT_EQ(k.variant(ops::mul_mv_op(c.type)).name, c.variant->name) << "the capability mask did not force the variant";
    return run_and_check(k, c.type, std::string(c.variant->name), K, N, seed, l);
  }

  GgmlType type() const { return GetParam().type; }
  bool k_quant() const { return block_elems(type()) == 256; }
  bool plain() const { return block_elems(type()) == 1; }
  uint64_t even_offset(uint64_t base) const {
    const GgmlType t = type();
    return (t == GgmlType::F32 || t == GgmlType::Q4_K || t == GgmlType::Q5_K) ? base : base + 2;
  }
};

TEST_P(MulMv, MatchesTheReferenceOnOneBlockAndOneRow) {
  const uint32_t K = plain() ? 32 : block_elems(type());
  for (uint64_t seed : {1u, 2u, 3u}) check(K, 1, seed);
}

TEST_P(MulMv, MatchesTheReferenceOnOddShapes) {
  // K = 288 (9 blocks of 32) or 3 super-blocks; plain formats also take K not a multiple of 4.
  const uint32_t K = k_quant() ? 768 : 288;
  for (uint64_t seed : {11u, 12u, 13u}) check(K, 37, seed);
  check(K, 5, 14);
  if (plain()) {
    check(291, 37, 15);
    check(3, 9, 16);
  }
}

TEST_P(MulMv, MatchesTheReferenceOnA4096WideMatrix) { check(4096, 70, 21); }

TEST_P(MulMv, MatchesTheReferenceWithUnalignedOffsets) {
  Layout l;
  l.w_offset = even_offset(36);
  l.x_offset = 12;
  l.y_offset = 20;
  check(k_quant() ? 512 : 96, 13, 31, l);
}

TEST_P(MulMv, MatchesTheReferenceOnTheSuperblockPathForEveryAlignmentAndRowCount) {
  // K a multiple of 256 takes the superblock path in row-per-invocation mode: uvec4 weight
  // loads when rows start 16-aligned, word loads otherwise; vec4 x loads when x is
  // 16-aligned, float loads otherwise; 1..8 rows per invocation, rows not a multiple of them.
  // Every alignment with one row per invocation; 8 rows with both loads aligned and with
  // neither, which covers each load path once with 8 rows (each such pipeline unrolls 8 rows,
  // the slowest of this suite to build: Q6_K's took 54-76 s each on lavapipe, shader cache off).
  const uint32_t K = 512;
  uint64_t seed = 80;
  for (uint64_t w_offset : {uint64_t(0), uint64_t(16), even_offset(36)}) {
    for (uint64_t x_offset : {0u, 12u}) {
      for (uint32_t rows : {1u, 8u}) {
        const bool both_aligned = w_offset == 16 && x_offset == 0, neither = w_offset != 0 && w_offset != 16 && x_offset == 12;
        if (rows == 8 && !both_aligned && !neither) continue;
        Layout l;
        l.w_offset = w_offset;
        l.x_offset = x_offset;
        l.y_offset = 4;
        l.options.row_per_invocation = 1;
        l.options.rows = rows;
        check(K, 8 * rows + 5, ++seed, l);
      }
    }
  }
  // rows of 768 elements: Q4_0/Q8_0/Q4_K rows are 16-aligned, Q6_K's (630 bytes) are not
  Layout l;
  l.options.row_per_invocation = 1;
  check(768, 29, 99, l);
}

TEST_P(MulMv, MatchesTheReferenceWhenWeightsAreBoundInWindows) {
  const uint32_t K = k_quant() ? 512 : 96;
  for (uint32_t rows : {0u, 1u, 3u, 4u}) {
    Layout l;
    l.options.row_per_invocation = rows == 0 ? 1 : 0;
    l.w_offset = even_offset(20);
    l.options.rows = rows;
    // room for 5 rows per window: the 37 rows take several dispatches
    l.options.max_window = 256 + 4 + 5 * *device_row_bytes(type(), K);
    check(K, 37, 41 + rows, l);
  }
}

TEST_P(MulMv, MatchesTheReferenceForEveryWorkgroupShape) {
  // Both work splits: rows shared by a workgroup (GPUs) and one row per invocation (CPUs).
  const uint32_t K = k_quant() ? 512 : 160;
  for (uint32_t wg : {8u, 64u, 256u}) {
    for (uint32_t rows : {1u, 2u, 8u}) {
      Layout l;
      l.options.workgroup = wg;
      l.options.rows = rows;
      l.options.row_per_invocation = 0;
      check(K, 19, 50 + wg + rows, l);
    }
    Layout l;
    l.options.workgroup = wg;
    l.options.row_per_invocation = 1;
    l.options.rows = wg == 8 ? 0 : 1;  // a pipeline with 8 unrolled rows takes seconds to build
    check(K, wg + 3, 70 + wg, l);
  }
}

TEST_P(MulMv, GivesBitwiseIdenticalResultsWhenRepeated) {
  const std::vector<float> a = check(1024, 33, 61);
  const std::vector<float> b = check(1024, 33, 61);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

INSTANTIATE_TEST_SUITE_P(AllFormatsAndVariants, MulMv, ::testing::ValuesIn(all_cases()), case_name);

// The texel-buffer kernels (mul_mv_texel_<fmt>, shaders/mul_mv_texel.comp): F16, BF16, Q4_0,
// Q8_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K with K a multiple of 256 (of 32 for F16,
// BF16, Q4_0, Q8_0, Q4_1, Q5_0, Q5_1), x at a 16-byte multiple. Q2_K's and Q3_K's superblocks (84 and 110 bytes) are
// realigned even where rows start 16-aligned.
// Same tolerance as the other f32-x kernels (1e-10). W is read as 16-byte texels when rows start 16-aligned, as 16-byte texels
// realigned per superblock when the buffer's end is padded to 16 bytes, else as 4-byte texels.
std::string texel_kernel(GgmlType t) { return "mul_mv_texel_" + ops::mul_mv_op(t).substr(7) + "+cpu"; }

class MulMvTexel : public test::GpuTestP<GgmlType> {
 protected:
  static Layout tl() {  // a layout that asks for the texel kernels
    Layout l;
    l.options.texel = 1;
    return l;
  }
  std::vector<float> check(uint32_t K, uint32_t N, uint64_t seed, const Layout& l = tl(), bool expect_texel = true) {
    const GgmlType t = GetParam();
    ops::Kernels k(test::device(0));
    const std::string kernel = expect_texel ? texel_kernel(t) : std::string(k.variant(ops::mul_mv_op(t)).name);
    return run_and_check(k, t, kernel, K, N, seed, l);
  }
  // An even offset that is 2 mod 4 (4 mod 16 for Q4_K and Q5_K, whose blocks must be 4-aligned).
  uint64_t odd_offset() const { return GetParam() == GgmlType::Q4_K || GetParam() == GgmlType::Q5_K ? 36 : 34; }
};

TEST_P(MulMvTexel, MatchesTheReferenceForEveryWeightAlignmentAndRowCount) {
  // w_offset 0 and 16: 16-aligned rows (Q4_1: 320-byte rows); an odd offset: realigned superblocks with w_pad (the buffer's end padded to 16 bytes), 4-byte
  // texels without; 1 or 8 rows per invocation, rows not a multiple of them.
  // K from the push constants (fixed_k 0) and as a specialisation constant (1: its loops unrolled).
  uint64_t seed = 200;
  for (int fixed_k : {0, 1}) {
    for (uint64_t w_offset : {uint64_t(0), uint64_t(16), odd_offset()}) {
      for (uint64_t w_pad : {0u, 16u}) {
        for (uint32_t rows : {1u, 8u}) {
          if (fixed_k == 0 && w_pad == 0) continue;  // K read at run time: half the layouts are enough
          Layout l = tl();
          l.w_offset = w_offset;
          l.w_pad = w_pad;
          l.x_offset = 16;
          l.y_offset = 4;
          l.options.rows = rows;
          l.options.fixed_k = fixed_k;
          check(512, 8 * rows + 5, ++seed, l);
        }
      }
    }
  }
}

TEST_P(MulMvTexel, MatchesTheReferenceWithThreeSuperblocksOrOnePerRow) {
  // 768 elements (rows of every format here are then 16-byte multiples: at an odd offset all
  // lanes realign by the same amount), then one superblock per row. Rows whose lanes realign
  // by different amounts (Q4_0, Q8_0, Q4_1 with K = 288 or 576) are in MulMvTexelTail; since
  // Q6_K blocks are padded to 224 bytes no K-quant row can start at another alignment.
  Layout l = tl();
  check(768, 29, 231, l);
  l.w_pad = 16;
  check(768, 29, 232, l);
  l.w_offset = odd_offset();
  check(768, 29, 233, l);
  check(256, 11, 234, l);
}

TEST_P(MulMvTexel, MatchesTheReferenceOnA4096WideMatrix) { check(4096, 70, 241); }

TEST_P(MulMvTexel, MatchesTheReferenceWithRowsOf2048Elements) {
  // Rows of 2048, 16-aligned (w_offset 0, 16) and not; also in windows.
  Layout l = tl();
  check(2048, 19, 242, l);
  l.w_offset = 16;
  check(2048, 19, 243, l);
  l.w_offset = odd_offset();
  l.w_pad = 16;
  check(2048, 19, 244, l);
  l.w_offset = 16;
  l.options.rows = 1;
  l.options.max_window = 256 + 32 + 5 * *device_row_bytes(GetParam(), 2048);
  check(2048, 19, 245, l);
}

TEST_P(MulMvTexel, MatchesTheReferenceWhenWeightsAreBoundInWindows) {
  const uint32_t K = 512;
  for (uint32_t rows : {0u, 1u}) {
    for (uint64_t w_pad : {0u, 16u}) {
      Layout l = tl();
      l.w_offset = odd_offset();
      l.w_pad = w_pad;
      l.options.rows = rows;
      // room for about 5 rows per view: the 37 rows take several dispatches
      l.options.max_window = 256 + 32 + 5 * *device_row_bytes(GetParam(), K);
      check(K, 37, 251 + rows + w_pad, l);
    }
  }
}

TEST_P(MulMvTexel, MatchesTheReferenceForEveryWorkgroupSize) {
  for (uint32_t wg : {8u, 64u, 256u}) {
    Layout l = tl();
    l.options.workgroup = wg;
    l.options.rows = 1;
    check(512, wg + 3, 260 + wg, l);
  }
}

TEST_P(MulMvTexel, FallsBackToStorageBuffersWhereItDoesNotApply) {
  Layout l = tl();
  l.x_offset = 12;  // x not at a 16-byte multiple
  check(512, 9, 271, l, false);
  l.x_offset = 0;
  l.options.texel = 0;
  check(512, 9, 272, l, false);
}

// K as a specialisation constant (the kernel's loops unrolled when the pipeline is built) or from
// the push constants: the same arithmetic in the same order, so the same bits (K past
// kMaxFixedK too, fixed here because the test asks).
TEST_P(MulMvTexel, GivesTheSameBitsWithKFixedOrReadAtRunTime) {
  const bool blocks32 = type_traits(GetParam()).block_elems != 256;  // F16 and BF16 as 32-element blocks
  uint64_t seed = 290;
  for (uint32_t K : {256u, 768u, blocks32 ? 576u : 512u, ops::kMaxFixedK + 256u}) {
    Layout l = tl();
    l.w_offset = odd_offset();
    l.w_pad = 16;
    ++seed;
    l.options.fixed_k = 0;
    const std::vector<float> a = check(K, 21, seed, l);
    l.options.fixed_k = 1;
    const std::vector<float> b = check(K, 21, seed, l);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << "K " << K;
  }
}

TEST_P(MulMvTexel, GivesBitwiseIdenticalResultsWhenRepeated) {
  Layout l = tl();
  l.w_offset = odd_offset();
  l.w_pad = 16;
  const std::vector<float> a = check(1024, 33, 281, l);
  const std::vector<float> b = check(1024, 33, 281, l);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

INSTANTIATE_TEST_SUITE_P(TexelFormats, MulMvTexel,
                         ::testing::Values(GgmlType::F16, GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q8_0,
                                           GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q2_K,
                                           GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K),
                         [](const ::testing::TestParamInfo<GgmlType>& p) { return ops::mul_mv_op(p.param).substr(7); });

// F16, BF16, Q4_0, Q8_0, Q4_1, Q5_0, Q5_1 (32-element blocks): K not a multiple of 256 ends each row in a partial
// superblock of 1 to 7 blocks, taken one block at a time (blk_step: each block realigned on its
// own, at 2, 4 or 8 mod 16 bytes, differently in each lane when rows are not 16-aligned).
// SmolLM2's K = 576 is one of these.
class MulMvTexelTail : public MulMvTexel {};

TEST_P(MulMvTexelTail, MatchesTheReferenceWhenRowsEndInAPartialSuperblock) {
  // Each W layout: 16-byte texels on 16-aligned rows or realigned (w_pad), 4-byte texels.
  struct WLayout {
    uint64_t w_offset, w_pad;
    uint32_t rows;
  };
  uint64_t seed = 300;
  for (uint32_t K : {32u, 224u, 288u, 416u, 576u, 1536u + 224u}) {  // tails of 1, 7, 1, 5, 2, 7 blocks
    for (const WLayout w : {WLayout{0, 0, 8}, WLayout{0, 16, 1}, WLayout{odd_offset(), 16, 8}, WLayout{odd_offset(), 0, 1}}) {
      for (int fixed_k : {0, 1}) {
        if (fixed_k == 0 && w.rows == 1) continue;  // K read at run time: two layouts are enough
        Layout l = tl();
        l.options.fixed_k = fixed_k;
        l.w_offset = w.w_offset;
        l.w_pad = w.w_pad;
        l.x_offset = 16;
        l.options.rows = w.rows;
        SCOPED_TRACE("K " + std::to_string(K) + " w_offset " + std::to_string(w.w_offset) + " w_pad " +
                     std::to_string(w.w_pad) + " rows " + std::to_string(w.rows) + " fixed_k " + std::to_string(fixed_k));
        check(K, 8 * w.rows + 3, ++seed, l);
      }
    }
  }
}

TEST_P(MulMvTexelTail, MatchesTheReferenceInWindowsAndGivesBitwiseIdenticalRepeats) {
  Layout l = tl();
  l.w_offset = odd_offset();
  l.w_pad = 16;
  l.options.max_window = 256 + 32 + 5 * *device_row_bytes(GetParam(), 576);
  const std::vector<float> a = check(576, 37, 321, l);
  const std::vector<float> b = check(576, 37, 321, l);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

INSTANTIATE_TEST_SUITE_P(TexelBlockFormats, MulMvTexelTail,
                         ::testing::Values(GgmlType::F16, GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_1,
                                           GgmlType::Q5_0, GgmlType::Q5_1),
                         [](const ::testing::TestParamInfo<GgmlType>& p) { return ops::mul_mv_op(p.param).substr(7); });

// Fused forms (ops::MatVecFusion, texel kernels only): RMSNorm of x before the product, and an
// epilogue after (add into y, SwiGLU / GeGLU of [gate | up] rows), against the separate CPU
// references (ref::rms_norm, ref::matvec, ref::swiglu / geglu). K of 576 (a partial last
// superblock for the 32-element formats) and 512 / 768; rows not a multiple of the invocation's.
// The fused norm sums x^2 in another order than rms_norm.comp: tolerance 1e-10 as above.
// y (+)= the fused product over N output rows on kernels k, checked against the separate
// references; returns y.
std::vector<float> run_fused(ops::Kernels& k, GgmlType t, uint32_t K, uint32_t N, bool with_norm,
                             ops::MatVecFusion::Out out, uint64_t seed, const ops::MatVecOptions& o,
                             const std::string& kernel) {
  vk::Device& dev = test::device(0);
  const bool glu = out == ops::MatVecFusion::Out::swiglu || out == ops::MatVecFusion::Out::geglu;
  const uint32_t w_rows = glu ? 2 * N : N;
  const Weights w = make_weights(t, K, w_rows, seed, 0, 16);
  const std::vector<float> x = test::random_floats(K, seed + 1), g = test::random_floats(K, seed + 2),
                           y0 = test::random_floats(N, seed + 3);
  vk::Buffer wb = test::make_buffer(dev, w.bytes, "W");
  vk::Buffer xb = test::make_buffer(dev, x, "x");
  vk::Buffer gb = test::make_buffer(dev, g, "norm");
  vk::Buffer yb = test::make_buffer(dev, y0, "y");
  ops::MatVecFusion f;
  f.out = out;
  if (with_norm) {
    f.norm = &gb;
    f.eps = 1e-5f;
  }
  const std::string what = std::string(type_traits(t).name) + " K=" + std::to_string(K) + " N=" + std::to_string(N) +
                           " norm=" + std::to_string(with_norm) + " out=" + std::to_string(static_cast<int>(out)) +
                           " kernel=" + ops::mul_mv_kernel_name(k, t, K, wb, 0, xb, 0, o);
  EXPECT_EQ(ops::mul_mv_kernel_name(k, t, K, wb, 0, xb, 0, o), kernel) << what;
  EXPECT_TRUE(ops::mul_mv_fuses(k, t, K, N, wb, 0, xb, 0, f, o)) << what;
  test::run_on(dev, [&](vk::CommandBuffer& cb) {
    ops::mul_mv(k, cb, t, wb, 0, K, N, xb, 0, yb, 0, f, o);
    cb.barrier_to_host();  // y is read by the host below
  });
  const std::vector<float> y = dev.download<float>(yb, N);
  const std::vector<float> in = with_norm ? ref::rms_norm(x, g, K, 1, 1e-5f) : x;
  const std::vector<float> prod = ref::matvec(w.values, in, K, w_rows);
  std::vector<float> want(prod.begin(), prod.begin() + N);
  if (out == ops::MatVecFusion::Out::add)
    for (uint32_t n = 0; n < N; ++n) want[n] += y0[n];
  if (glu) {
    const std::span<const float> gate(prod.data(), N), up(prod.data() + N, N);
    want = out == ops::MatVecFusion::Out::swiglu ? ref::swiglu(gate, up) : ref::geglu(gate, up);
  }
  EXPECT_LE(test::nmse(want, y), 1e-10) << what;
  return y;
}

// The fused forms on the storage kernels, every format, in both work splits (a workgroup
// sharing rows, as on GPUs, and rows per invocation): the device's widest variant for every
// format, and the fallback (shared-memory sums) for one plain and one block format. The fusion
// code is common to the variants; what differs (the workgroup sum of the norm) is covered by
// those two. Pipelines are the cost of this test on lavapipe, hence not every variant.
class MulMvFusedStorage : public test::GpuTestP<GgmlType> {};

TEST_P(MulMvFusedStorage, NormAndEpiloguesMatchTheSeparateReferencesInBothWorkSplits) {
  using Out = ops::MatVecFusion::Out;
  const GgmlType t = GetParam();
  const uint32_t qk = block_elems(t), K = qk == 256 ? 512 : (qk == 1 ? 98 : 96);
  std::vector<uint32_t> masks{shaders::kAllCapabilities};
  if (t == GgmlType::F32 || t == GgmlType::Q4_0) masks.push_back(0);  // the fallback variant
  for (uint32_t mask : masks) {
    ops::Kernels k(test::device(0), mask);
    const std::string kernel(k.variant(ops::mul_mv_op(t)).name);
    for (int per_inv : {0, 1}) {
      SCOPED_TRACE(kernel + (per_inv ? " rows per invocation" : " rows per workgroup"));
      ops::MatVecOptions o;
      o.texel = 0;
      o.row_per_invocation = per_inv;
      run_fused(k, t, K, 13, true, Out::store, 501 + per_inv, o, kernel);
      run_fused(k, t, K, 13, false, Out::add, 503 + per_inv, o, kernel);
      run_fused(k, t, K, 13, true, Out::swiglu, 505 + per_inv, o, kernel);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(EveryFormat, MulMvFusedStorage, ::testing::ValuesIn(weight_types()),
                         [](const ::testing::TestParamInfo<GgmlType>& p) { return ops::mul_mv_op(p.param).substr(7); });

// Fused forms (ops::MatVecFusion) on the texel kernels: RMSNorm of x before the product, and an
// epilogue after (add into y, SwiGLU / GeGLU of [gate | up] rows), against the separate CPU
// references (ref::rms_norm, ref::matvec, ref::swiglu / geglu). K of 576 (a partial last
// superblock for the 32-element formats) and 512 / 768; rows not a multiple of the invocation's.
// The fused norm sums x^2 in another order than rms_norm.comp: tolerance 1e-10 as above.
class MulMvFused : public MulMvTexel {
 protected:
  std::vector<float> fused(uint32_t K, uint32_t N, bool with_norm, ops::MatVecFusion::Out out, uint64_t seed,
                           uint32_t rows = 0) {
    ops::Kernels k(test::device(0));
    ops::MatVecOptions o;
    o.rows = rows;
    return run_fused(k, GetParam(), K, N, with_norm, out, seed, o, texel_kernel(GetParam()));
  }
};

TEST_P(MulMvFused, NormThenProductMatchesRmsNormAndMatvec) {
  // K = 576: a partial last superblock for the 32-element formats; 768 for the K-quants.
  const uint32_t K = type_traits(GetParam()).block_elems == 256 ? 768 : 576;
  fused(K, 61, true, ops::MatVecFusion::Out::store, K);
}

TEST_P(MulMvFused, AddEpilogueAddsTheNormedProductIntoY) {
  fused(512, 45, true, ops::MatVecFusion::Out::add, 402, 1);  // one row per invocation
}

TEST_P(MulMvFused, GatedEpiloguesMatchSwigluAndGegluOfTheGateAndUpRows) {
  using Out = ops::MatVecFusion::Out;
  const uint32_t K = type_traits(GetParam()).block_elems == 256 ? 512 : 576;
  fused(K, 67, true, Out::swiglu, 411);      // 8 rows per invocation: 4 gate rows and their up rows
  fused(K, 67, false, Out::geglu, 412, 2);   // 1 gate row and its up row
}

TEST_P(MulMvFused, IsRefusedWhereOnlyTheSeparateOpsApply) {
  vk::Device& dev = test::device(0);
  const GgmlType t = GetParam();
  const Weights w = make_weights(t, 512, 8, 5, 0, 16);
  vk::Buffer wb = test::make_buffer(dev, w.bytes, "W");
  vk::Buffer xb = test::make_buffer(dev, test::random_floats(512, 6), "x");
  vk::Buffer yb = dev.create_buffer(64, vk::BufferKind::Device, "y");
  ops::MatVecFusion f;
  f.out = ops::MatVecFusion::Out::swiglu;
  ops::Kernels k(dev);
  EXPECT_TRUE(ops::mul_mv_fuses(k, t, 512, 4, wb, 0, xb, 0, f));
  EXPECT_FALSE(ops::mul_mv_fuses(k, t, 512, 5, wb, 0, xb, 0, f)) << "10 rows of W do not exist";
  ops::MatVecOptions odd;
  odd.rows = 3;  // gate and up rows pair up only with an even number of rows per invocation
  EXPECT_FALSE(ops::mul_mv_fuses(k, t, 512, 4, wb, 0, xb, 0, f, odd));
  ops::MatVecOptions windows;
  windows.max_window = 256 + 32 + 3 * *device_row_bytes(t, 512);  // W bound in several windows
  EXPECT_FALSE(ops::mul_mv_fuses(k, t, 512, 4, wb, 0, xb, 0, f, windows));
  ops::MatVecFusion norm;
  norm.norm = &xb;
  norm.norm_offset = 4;  // not a multiple of 16
  EXPECT_FALSE(ops::mul_mv_fuses(k, t, 512, 4, wb, 0, xb, 0, norm));
  EXPECT_THROW(test::run_on(dev, [&](vk::CommandBuffer& cb) { ops::mul_mv(k, cb, t, wb, 0, 512, 5, xb, 0, yb, 0, f); }),
               vk::Error);
}

// The RoPE epilogue (ops::MatVecRope: the decode Q/K/V product doing rope_store's work): the
// normed product of 3 Q heads, 2 K and 2 V heads of head_dim 16, against the same product
// unfused followed by ops::rope_store on the device — y and both caches bit for bit (the same
// arithmetic, rope_angle.glsl's angle) — and against the CPU references (ref::rms_norm,
// ref::matvec, ref::rope, ref::kv_store; f16 caches within one rounding). Every rotation
// width (n_dims 16 and 8), 8 and 2 rows per invocation, a position read at an offset, and a
// position past the context (no cache word written).
TEST_P(MulMvFused, RopeEpilogueDoesRopeStoresWorkBitForBit) {
  vk::Device& dev = test::device(0);
  const GgmlType t = GetParam();
  const uint32_t K = type_traits(t).block_elems == 256 ? 512 : 576, D = 16, n_q = 3 * D, n_kv_heads = 2, n_ctx = 12;
  const uint32_t kv = n_kv_heads * D, N = n_q + 2 * kv;
  const Weights w = make_weights(t, K, N, 900, 0, 16);
  const std::vector<float> x = test::random_floats(K, 901), g = test::random_floats(K, 902);
  vk::Buffer wb = test::make_buffer(dev, w.bytes, "W");
  vk::Buffer xb = test::make_buffer(dev, x, "x");
  vk::Buffer gb = test::make_buffer(dev, g, "norm");
  const std::vector<float> prod = ref::matvec(w.values, ref::rms_norm(x, g, K, 1, 1e-5f), K, N);
  const ref::KvShape shape{n_kv_heads, n_ctx, D};
  ops::Kernels k(dev);
  for (const auto& [n_dims, rows, position] : std::vector<std::tuple<uint32_t, uint32_t, int32_t>>{
           {D, 0, 7}, {8, 2, 3}, {D, 8, 12}}) {
    SCOPED_TRACE("n_dims " + std::to_string(n_dims) + ", rows " + std::to_string(rows) + ", position " +
                 std::to_string(position));
    const std::vector<int32_t> pos{-5, position};
    vk::Buffer pb = test::make_buffer(dev, pos, "positions");
    const std::vector<uint16_t> blank(size_t(n_kv_heads) * n_ctx * D, 0xABCD);
    vk::Buffer kc = test::make_buffer(dev, blank, "K cache"), vc = test::make_buffer(dev, blank, "V cache");
    vk::Buffer kc2 = test::make_buffer(dev, blank, "K cache 2"), vc2 = test::make_buffer(dev, blank, "V cache 2");
    vk::Buffer yb = dev.create_buffer(4ull * N, vk::BufferKind::Device, "y"), yb2 = dev.create_buffer(4ull * N, vk::BufferKind::Device, "y2");
    const ops::KvCache cache{n_kv_heads, n_ctx, D, &kc, 0, &vc, 0}, cache2{n_kv_heads, n_ctx, D, &kc2, 0, &vc2, 0};
    ops::MatVecOptions o;
    o.rows = rows;
    ops::MatVecRope r;
    r.cache = &cache;
    r.positions = &pb;
    r.positions_offset = 4;
    r.n_q = n_q;
    r.n_dims = n_dims;
    r.freq_base = 10000.0f;
    ops::MatVecFusion f;
    f.norm = &gb;
    f.eps = 1e-5f;
    f.rope = &r;
    ASSERT_TRUE(ops::mul_mv_fuses(k, t, K, N, wb, 0, xb, 0, f, o));
    ops::MatVecFusion norm_only = f;
    norm_only.rope = nullptr;
    ops::RopeStoreShape rs;
    rs.n_q_heads = n_q / D;
    rs.n_dims = n_dims;
    test::run_on(dev, [&](vk::CommandBuffer& cb) {
      ops::mul_mv(k, cb, t, wb, 0, K, N, xb, 0, yb, 0, f, o);
      ops::mul_mv(k, cb, t, wb, 0, K, N, xb, 0, yb2, 0, norm_only, o);
      cb.barrier();
      ops::rope_store(k, cb, cache2, yb2, 0, 4ull * n_q, 4ull * (n_q + kv), pb, 4, rs);
      cb.barrier_to_host();
    });
    const std::vector<float> y = dev.download<float>(yb, N);
    EXPECT_EQ(y, dev.download<float>(yb2, N)) << "y: Q rotated, K and V as the product made them";
    const std::vector<uint16_t> kgot = dev.download<uint16_t>(kc, blank.size()), vgot = dev.download<uint16_t>(vc, blank.size());
    EXPECT_EQ(kgot, dev.download<uint16_t>(kc2, blank.size()));
    EXPECT_EQ(vgot, dev.download<uint16_t>(vc2, blank.size()));
    // Against the CPU references.
    const std::vector<int32_t> one{position};
    const std::span<const float> q(prod.data(), n_q), kk(prod.data() + n_q, kv), vv(prod.data() + n_q + kv, kv);
    std::vector<float> want = ref::rope(q, one, n_q / D, D, n_dims, false, 10000.0f, 1.0f);
    want.insert(want.end(), kk.begin(), kk.end());
    want.insert(want.end(), vv.begin(), vv.end());
    EXPECT_LE(test::nmse(want, y), 1e-8);
    std::vector<uint16_t> kwant = blank, vwant = blank;
    if (position < static_cast<int32_t>(n_ctx)) {
      ref::kv_store(ref::rope(kk, one, n_kv_heads, D, n_dims, false, 10000.0f, 1.0f), 1, position, shape, kwant);
      ref::kv_store(vv, 1, position, shape, vwant);
    }
    std::vector<float> kw, kg, vw, vg;
    for (size_t i = 0; i < blank.size(); ++i) {
      ASSERT_EQ(kwant[i] == 0xABCD, kgot[i] == 0xABCD) << "K cache word " << i;
      ASSERT_EQ(vwant[i] == 0xABCD, vgot[i] == 0xABCD) << "V cache word " << i;
      if (kwant[i] == 0xABCD) continue;
      kw.push_back(fp16_to_fp32(kwant[i]));
      kg.push_back(fp16_to_fp32(kgot[i]));
      vw.push_back(fp16_to_fp32(vwant[i]));
      vg.push_back(fp16_to_fp32(vgot[i]));
    }
    EXPECT_EQ(kw.size(), position < static_cast<int32_t>(n_ctx) ? size_t(kv) : 0u);
    if (!kw.empty()) {
      EXPECT_LE(test::nmse(kw, kg), 1e-6);
      EXPECT_LE(test::nmse(vw, vg), 1e-6);
    }
  }
}

// x * g carried between products (MatVecFusion::next_norm, raw_x): a residual-add product that
// also writes its new x times the next norm's weight, then a normed product reading that
// (x * g) and x itself for the sum of squares, against the separate references: the first
// product's y within 1e-10, its x * g bit for bit the float products of that y and g, the second
// product within 1e-10 of rms_norm then matvec. K and N of every texel format's shapes (a
// partial superblock at 576), 8 and 2 rows per invocation, 8 and 4 invocations per workgroup
// (the sum of squares is summed across the workgroup).
TEST_P(MulMvFused, NextNormOutputFeedsARawXNormedProduct) {
  vk::Device& dev = test::device(0);
  const GgmlType t = GetParam();
  const uint32_t K1 = type_traits(t).block_elems == 256 ? 512 : 576;  // the first product's rows: x's length
  const uint32_t K0 = 256, N2 = 37;
  const Weights w1 = make_weights(t, K0, K1, 950, 0, 16), w2 = make_weights(t, K1, N2, 951, 0, 16);
  const std::vector<float> in = test::random_floats(K0, 952), x0 = test::random_floats(K1, 953),
                           g = test::random_floats(K1, 954);
  vk::Buffer w1b = test::make_buffer(dev, w1.bytes, "W1"), w2b = test::make_buffer(dev, w2.bytes, "W2");
  vk::Buffer inb = test::make_buffer(dev, in, "in"), gb = test::make_buffer(dev, g, "norm");
  ops::Kernels k(dev);
  std::vector<float> x_want = ref::matvec(w1.values, in, K0, K1);
  for (uint32_t n = 0; n < K1; ++n) x_want[n] += x0[n];
  for (const auto& [rows, wg, fixed_k] : std::vector<std::tuple<uint32_t, uint32_t, int>>{{8, 0, 1}, {2, 4, 1}, {8, 0, 0}, {2, 4, 0}}) {
    SCOPED_TRACE("rows " + std::to_string(rows) + ", workgroup " + std::to_string(wg) + ", fixed_k " + std::to_string(fixed_k));
    vk::Buffer xb = test::make_buffer(dev, x0, "x");
    vk::Buffer xgb = dev.create_buffer(4ull * K1 + 16, vk::BufferKind::Device, "x * g");
    vk::Buffer yb = dev.create_buffer(4ull * N2, vk::BufferKind::Device, "y");
    ops::MatVecOptions o;
    o.rows = rows;
    o.workgroup = wg;
    o.fixed_k = fixed_k;
    ops::MatVecFusion first;
    first.out = ops::MatVecFusion::Out::add;
    first.next_norm = &gb;
    first.next_out = &xgb;
    first.next_out_offset = 16;
    ops::MatVecFusion second;
    second.norm = &gb;
    second.eps = 1e-5f;
    second.raw_x = &xb;
    ASSERT_TRUE(ops::mul_mv_fuses(k, t, K0, K1, w1b, 0, inb, 0, first, o));
    ASSERT_TRUE(ops::mul_mv_fuses(k, t, K1, N2, w2b, 0, xgb, 16, second, o));
    test::run_on(dev, [&](vk::CommandBuffer& cb) {
      ops::mul_mv(k, cb, t, w1b, 0, K0, K1, inb, 0, xb, 0, first, o);
      cb.barrier();
      ops::mul_mv(k, cb, t, w2b, 0, K1, N2, xgb, 16, yb, 0, second, o);
      cb.barrier_to_host();
    });
    const std::vector<float> x = dev.download<float>(xb, K1), xg = dev.download<float>(xgb, K1, 16);
    EXPECT_LE(test::nmse(x_want, x), 1e-10);
    for (uint32_t n = 0; n < K1; ++n) ASSERT_EQ(xg[n], x[n] * g[n]) << "x * g of row " << n;
    const std::vector<float> y_want = ref::matvec(w2.values, ref::rms_norm(x, g, K1, 1, 1e-5f), K1, N2);
    EXPECT_LE(test::nmse(y_want, dev.download<float>(yb, N2)), 1e-10);
  }
}

TEST_P(MulMvFused, XTimesGFormsAreRefusedWhereTheyCannotRun) {
  vk::Device& dev = test::device(0);
  const GgmlType t = GetParam();
  const Weights w = make_weights(t, 512, 8, 5, 0, 16);
  vk::Buffer wb = test::make_buffer(dev, w.bytes, "W");
  vk::Buffer xb = test::make_buffer(dev, test::random_floats(512, 6), "x");
  ops::Kernels k(dev);
  ops::MatVecFusion raw;
  raw.raw_x = &xb;
  EXPECT_FALSE(ops::mul_mv_fuses(k, t, 512, 8, wb, 0, xb, 0, raw)) << "raw_x without a norm";
  raw.norm = &xb;
  EXPECT_TRUE(ops::mul_mv_fuses(k, t, 512, 8, wb, 0, xb, 0, raw));
  raw.raw_x_offset = 4;
  EXPECT_FALSE(ops::mul_mv_fuses(k, t, 512, 8, wb, 0, xb, 0, raw)) << "raw_x not 16-aligned";
  raw.raw_x_offset = 0;
  ops::MatVecOptions storage;
  storage.texel = 0;
  EXPECT_FALSE(ops::mul_mv_fuses(k, t, 512, 8, wb, 0, xb, 0, raw, storage)) << "the storage kernels have no raw_x";
  ops::MatVecFusion next;
  next.next_norm = &xb;
  next.next_out = &xb;
  EXPECT_FALSE(ops::mul_mv_fuses(k, t, 512, 8, wb, 0, xb, 0, next)) << "next_norm needs the residual add";
  next.out = ops::MatVecFusion::Out::add;
  EXPECT_TRUE(ops::mul_mv_fuses(k, t, 512, 8, wb, 0, xb, 0, next));
  next.next_out_offset = 2048 - 16;  // N floats past the buffer's end
  EXPECT_FALSE(ops::mul_mv_fuses(k, t, 512, 8, wb, 0, xb, 0, next));
  next.next_out_offset = 0;
  next.next_norm_offset = 8;
  EXPECT_FALSE(ops::mul_mv_fuses(k, t, 512, 8, wb, 0, xb, 0, next)) << "next_norm not 16-aligned";
  next.next_norm_offset = 0;
  EXPECT_FALSE(ops::mul_mv_fuses(k, t, 512, 8, wb, 0, xb, 0, next, storage)) << "the storage kernels have no next_norm";
}

TEST_P(MulMvFused, RopeEpilogueIsRefusedWhereRopeStoreMustFollow) {
  vk::Device& dev = test::device(0);
  const GgmlType t = GetParam();
  const uint32_t K = 512, D = 8, n_q = 2 * D, N = n_q + 2 * D;
  const Weights w = make_weights(t, K, N, 5, 0, 16);
  vk::Buffer wb = test::make_buffer(dev, w.bytes, "W");
  vk::Buffer xb = test::make_buffer(dev, test::random_floats(K, 6), "x");
  vk::Buffer pb = test::make_buffer(dev, std::vector<int32_t>{0}, "positions");
  vk::Buffer cb_k = dev.create_buffer(2ull * 4 * D, vk::BufferKind::Device, "K cache");
  vk::Buffer cb_v = dev.create_buffer(2ull * 4 * D, vk::BufferKind::Device, "V cache");
  const ops::KvCache cache{1, 4, D, &cb_k, 0, &cb_v, 0};
  ops::Kernels k(dev);
  ops::MatVecRope r;
  r.cache = &cache;
  r.positions = &pb;
  r.n_q = n_q;
  ops::MatVecFusion f;
  f.rope = &r;
  EXPECT_TRUE(ops::mul_mv_fuses(k, t, K, N, wb, 0, xb, 0, f));
  EXPECT_FALSE(ops::mul_mv_fuses(k, t, K, N - 2, wb, 0, xb, 0, f)) << "K and V rows do not match the cache";
  ops::MatVecOptions odd;
  odd.rows = 3;  // a rotated pair must lie in one invocation
  EXPECT_FALSE(ops::mul_mv_fuses(k, t, K, N, wb, 0, xb, 0, f, odd));
  ops::MatVecOptions storage;
  storage.texel = 0;
  EXPECT_FALSE(ops::mul_mv_fuses(k, t, K, N, wb, 0, xb, 0, f, storage)) << "the storage kernels have no RoPE epilogue";
  r.positions_offset = 4;  // past the positions buffer
  EXPECT_FALSE(ops::mul_mv_fuses(k, t, K, N, wb, 0, xb, 0, f));
  r.positions_offset = 0;
  r.n_dims = D + 2;  // more than head_dim
  EXPECT_FALSE(ops::mul_mv_fuses(k, t, K, N, wb, 0, xb, 0, f));
  r.n_dims = 0;
  f.out = ops::MatVecFusion::Out::add;
  EXPECT_FALSE(ops::mul_mv_fuses(k, t, K, N, wb, 0, xb, 0, f)) << "the RoPE epilogue stores";
}

INSTANTIATE_TEST_SUITE_P(TexelFormats, MulMvFused,
                         ::testing::Values(GgmlType::F16, GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q8_0,
                                           GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q2_K,
                                           GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K),
                         [](const ::testing::TestParamInfo<GgmlType>& p) { return ops::mul_mv_op(p.param).substr(7); });

class MulMvQ6K : public test::GpuTest {};

// Q6_K's device blocks are 224 bytes (engine/quant.h), so every row of a whole number of blocks
// starts 16-aligned and the storage kernel's rows-per-invocation path reads it as 16-byte words.
TEST_F(MulMvQ6K, PaddedBlocksTakeTheSixteenByteLoadPathAndMatchTheReference) {
  ops::Kernels k(test::device(0));
  Layout l;
  l.options.row_per_invocation = 1;
  for (uint32_t K : {256u, 768u, 2048u}) {
    const Weights w = make_weights(GgmlType::Q6_K, K, 37, K, 0, 0);
    vk::Buffer wb = test::make_buffer(test::device(0), w.bytes, "W");
    vk::Buffer xb = test::make_buffer(test::device(0), test::random_floats(K, 5), "x");
    EXPECT_TRUE(ops::mul_mv_loads_w16(k, GgmlType::Q6_K, K, wb, 0, xb, 0, l.options)) << "K=" << K;
    // At a 16-aligned offset the rows stay aligned; at an offset of 2 they do not.
    EXPECT_FALSE(ops::mul_mv_loads_w16(k, GgmlType::Q6_K, K, wb, 2, xb, 0, l.options)) << "K=" << K;
    run_and_check(k, GgmlType::Q6_K, std::string(k.variant(ops::mul_mv_op(GgmlType::Q6_K)).name), K, 37, K, l);
  }
}

}  // namespace
}  // namespace chorus
