// GPU tests of engine/ops/ops.h against tests/reference_ops.h, for every variant of every op.
//
// Tolerances (NMSE = sum (ref - got)^2 / sum ref^2, vs a double-precision reference):
//   rms_norm 1e-10, swiglu / geglu 1e-10, rope 1e-8 (positions < 4096);
//   add: exact (one IEEE operation per element, as the reference does it);
//   get_rows: exact for F32 / F16 / BF16, NMSE 1e-12 for block formats (the GPU may fuse
//   d * q + m into one FMA).
// Every output buffer is filled with a guard pattern first and checked to be untouched
// outside the tensor; inputs sit at offsets that are not multiples of the binding alignment.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/calibration.h"
#include "engine/ops/kernels.h"
#include "engine/ops/ops.h"
#include "engine/quant.h"
#include "shaders/registry.h"
#include "tests/gpu.h"
#include "tests/reference_ops.h"

namespace chorus {
namespace {

constexpr uint8_t kGuard = 0xA5;
constexpr float kInf = std::numeric_limits<float>::infinity();

// Kernels forcing one capability mask, kept for the process (pipelines are built once).
ops::Kernels& kernels(uint32_t caps) {
  static vk::Device& dev = test::device();  // first, so that the device outlives the kernels
  static std::map<uint32_t, std::unique_ptr<ops::Kernels>> all;
  auto& k = all[caps];
  if (!k) k = std::make_unique<ops::Kernels>(dev, caps);
  return *k;
}

// Runs fn(kernels, variant name) once per variant of op the test device can run.
template <typename Fn>
void for_each_variant(const char* op, Fn&& fn) {
  const auto variants = shaders::variants_of(op);
  ASSERT_FALSE(variants.empty()) << "no kernel named " << op;
  for (const shaders::Variant* v : variants) {
    if ((test::device().capabilities() & v->requires_caps) != v->requires_caps) {
      std::cout << "[ note ] " << v->name << " not run: the test device lacks "
                << shaders::capability_names(v->requires_caps) << "\n";
      continue;
    }
    ops::Kernels& k = kernels(v->requires_caps);
    ASSERT_EQ(k.variant(op).name, v->name);
    SCOPED_TRACE(std::string(v->name));
    fn(k);
  }
}

// A buffer of `offset + bytes + tail` bytes: guard pattern everywhere, data at offset.
template <typename T>
vk::Buffer placed(std::span<const T> data, uint64_t offset, uint64_t tail = 64) {
  std::vector<uint8_t> bytes(offset + data.size_bytes() + tail, kGuard);
  if (!data.empty()) std::memcpy(bytes.data() + offset, data.data(), data.size_bytes());
  return test::make_buffer(test::device(), bytes);
}
template <typename T>
vk::Buffer placed(const std::vector<T>& data, uint64_t offset, uint64_t tail = 64) {
  return placed(std::span<const T>(data), offset, tail);
}
// An output buffer of guard pattern only.
vk::Buffer guarded(uint64_t bytes) {
  return test::make_buffer(test::device(), std::vector<uint8_t>(bytes, kGuard));
}

std::vector<uint8_t> all_bytes(const vk::Buffer& b) { return test::device().download<uint8_t>(b, b.size()); }

template <typename T>
std::vector<T> read(const vk::Buffer& b, uint64_t offset, size_t count) {
  return test::device().download<T>(b, count, offset);
}

// Every byte of b outside [begin, end) still holds the guard pattern.
void expect_guards(const vk::Buffer& b, uint64_t begin, uint64_t end) {
  const auto bytes = all_bytes(b);
  size_t bad = 0;
  for (size_t i = 0; i < bytes.size(); ++i)
    if ((i < begin || i >= end) && bytes[i] != kGuard) ++bad;
  EXPECT_EQ(bad, 0u) << "bytes outside [" << begin << ", " << end << ") were written";
}

template <typename Fn>
void record(Fn&& fn) {
  test::run_on(test::device(), [&](vk::CommandBuffer& cb) {
    fn(cb);
    cb.barrier_to_host();  // results are read by the host
  });
}

// ---------------------------------------------------------------------------------------
class OpsTest : public test::GpuTest {};

TEST_F(OpsTest, RmsNormMatchesReferenceForAwkwardSizesWithAndWithoutWeight) {
  for_each_variant("rms_norm", [](ops::Kernels& k) {
    uint64_t seed = 1;
    for (uint32_t n : {1u, 7u, 64u, 129u, 576u, 4097u})
      for (uint32_t rows : {1u, 3u})
        for (bool with_weight : {true, false})
          for (bool aligned : {false, true}) {  // aligned: whole vec4s (rms_norm_vec4 where n % 4 == 0)
            SCOPED_TRACE("n=" + std::to_string(n) + " rows=" + std::to_string(rows) + " weight=" +
                         std::to_string(with_weight) + " aligned=" + std::to_string(aligned));
            const auto x = test::random_floats(size_t{n} * rows, ++seed, 3.0f);
            const auto w = test::random_floats(n, ++seed);
            const uint64_t xo = aligned ? 16 : 12, wo = aligned ? 0 : 4, yo = aligned ? 32 : 8;
            const auto xb = placed(x, xo), wb = placed(w, wo);
            auto yb = guarded(yo + x.size() * 4 + 64);
            ops::RmsNormShape s{n, rows, 1e-5f};
            record([&](vk::CommandBuffer& cb) { ops::rms_norm(k, cb, xb, xo, with_weight ? &wb : nullptr, wo, yb, yo, s); });
            const auto want =
                ref::rms_norm(x, with_weight ? std::span<const float>(w) : std::span<const float>(), n, rows, 1e-5f);
            EXPECT_LE(test::nmse(want, read<float>(yb, yo, x.size())), 1e-10);
            expect_guards(yb, yo, yo + x.size() * 4);
          }
  });
}

TEST_F(OpsTest, RmsNormInPlaceOnStridedRowsLeavesTheGapsAlone) {
  for_each_variant("rms_norm", [](ops::Kernels& k) {
    const uint32_t n = 80, rows = 5, stride = 100;
    auto data = test::random_floats(size_t{stride} * rows, 7);
    const auto w = test::random_floats(n, 8);
    auto xb = placed(data, 20), wb = placed(w, 0);
    record([&](vk::CommandBuffer& cb) {
      ops::rms_norm(k, cb, xb, 20, &wb, 0, xb, 20, {n, rows, 1e-6f, stride, stride});
    });
    std::vector<float> packed;
    for (uint32_t r = 0; r < rows; ++r) packed.insert(packed.end(), data.begin() + r * stride, data.begin() + r * stride + n);
    const auto want = ref::rms_norm(packed, w, n, rows, 1e-6f);
    const auto got = read<float>(xb, 20, data.size());
    std::vector<float> got_packed;
    for (uint32_t r = 0; r < rows; ++r) {
      got_packed.insert(got_packed.end(), got.begin() + r * stride, got.begin() + r * stride + n);
      for (uint32_t i = n; i < stride && r * stride + i < got.size(); ++i)
        ASSERT_EQ(got[r * stride + i], data[r * stride + i]) << "gap element " << i << " of row " << r;
    }
    EXPECT_LE(test::nmse(want, got_packed), 1e-10);
  });
}

// add_rms_norm: x += sum in place, then y = rms_norm(x); the same bits as add then rms_norm
// with the same kernels (so a forward pass that fuses them gives the same answers).
TEST_F(OpsTest, AddRmsNormUpdatesXAndGivesTheBitsOfAddThenRmsNorm) {
  for_each_variant("add_rms_norm", [](ops::Kernels& k) {
    uint64_t seed = 40;
    for (uint32_t n : {1u, 7u, 64u, 129u, 4097u})
      for (uint32_t rows : {1u, 3u})
        for (bool with_weight : {true, false})
          for (uint32_t pad : {0u, 4u, 5u}) {  // rows of x and of the sum `pad` elements apart beyond n
            SCOPED_TRACE("n=" + std::to_string(n) + " rows=" + std::to_string(rows) + " weight=" +
                         std::to_string(with_weight) + " pad=" + std::to_string(pad));
            const uint32_t stride = n + pad;
            const auto x = test::random_floats(size_t{stride} * rows, ++seed, 3.0f);
            const auto sum = test::random_floats(size_t{stride} * rows, ++seed, 2.0f);
            const auto w = test::random_floats(n, ++seed);
            // pad 4: every operand at a multiple of 16 bytes (add_rms_norm_vec4 where n % 4 == 0)
            const bool aligned = pad == 4;
            const uint64_t xo = aligned ? 16 : 12, so = aligned ? 32 : 20, wo = aligned ? 0 : 4, yo = aligned ? 48 : 8;
            auto xb = placed(x, xo), sb = placed(sum, so), wb = placed(w, wo);
            auto yb = guarded(yo + size_t{n} * rows * 4 + 64);
            ops::RmsNormShape shape{n, rows, 1e-5f, stride, 0};
            const vk::Buffer* weight = with_weight ? &wb : nullptr;
            record([&](vk::CommandBuffer& cb) { ops::add_rms_norm(k, cb, xb, xo, sb, so, weight, wo, yb, yo, shape, stride); });

            std::vector<float> new_x = x, packed;
            for (uint32_t r = 0; r < rows; ++r)
              for (uint32_t i = 0; i < n; ++i) {
                new_x[size_t{r} * stride + i] = x[size_t{r} * stride + i] + sum[size_t{r} * stride + i];
                packed.push_back(new_x[size_t{r} * stride + i]);
              }
            const auto got_x = read<float>(xb, xo, x.size());
            ASSERT_EQ(std::memcmp(got_x.data(), new_x.data(), x.size() * 4), 0) << "x is not x + sum (padding untouched)";
            const auto got_y = read<float>(yb, yo, size_t{n} * rows);
            const auto want = ref::rms_norm(packed, with_weight ? std::span<const float>(w) : std::span<const float>(), n,
                                            rows, 1e-5f);
            EXPECT_LE(test::nmse(want, got_y), 1e-10);
            expect_guards(yb, yo, yo + size_t{n} * rows * 4);

            // The separate ops on the same input, with the same kernels.
            auto x2 = placed(x, xo), y2 = guarded(yo + size_t{n} * rows * 4 + 64);
            record([&](vk::CommandBuffer& cb) {
              for (uint32_t r = 0; r < rows; ++r)
                ops::add(k, cb, x2, xo + uint64_t{r} * stride * 4, sb, so + uint64_t{r} * stride * 4, x2,
                         xo + uint64_t{r} * stride * 4, n, n);
              cb.barrier();
              ops::rms_norm(k, cb, x2, xo, weight, wo, y2, yo, shape);
            });
            const auto sep_y = read<float>(y2, yo, size_t{n} * rows);
            EXPECT_EQ(std::memcmp(sep_y.data(), got_y.data(), sep_y.size() * 4), 0)
                << "add_rms_norm's output differs in its bits from add then rms_norm";
          }
  });
}

// rms_norm2 (a layer's QK-norm: Q's rows with one weight, K's with another): the bits of two
// rms_norm calls, in place and into another buffer, its float and vec4 kernels, whichever row
// the second weight starts at (none, some, all).
TEST_F(OpsTest, RmsNorm2GivesTheBitsOfTwoRmsNorms) {
  for_each_variant("rms_norm2", [](ops::Kernels& k) {
    uint64_t seed = 170;
    bool vec4_built = false;
    for (uint32_t n : {7u, 64u, 256u})
      for (uint32_t rows : {1u, 5u})
        for (uint32_t first : {0u, 1u, rows})
          for (bool in_place : {false, true}) {
            SCOPED_TRACE("n=" + std::to_string(n) + " rows=" + std::to_string(rows) + " first=" + std::to_string(first) +
                         " in_place=" + std::to_string(in_place));
            const auto x = test::random_floats(size_t{n} * rows, ++seed, 3.0f);
            const auto wa = test::random_floats(n, ++seed), wb = test::random_floats(n, ++seed);
            const uint64_t xo = 16, ao = 32, bo = 48;
            auto xb = placed(x, xo), ab = placed(wa, ao), bb = placed(wb, bo);
            auto yb = guarded(xo + size_t{n} * rows * 4 + 64);
            const vk::Buffer& out = in_place ? xb : yb;
            const ops::RmsNormShape shape{n, rows, 1e-6f};
            record([&](vk::CommandBuffer& cb) { ops::rms_norm2(k, cb, xb, xo, ab, ao, bb, bo, first, out, xo, shape); });
            const auto got = read<float>(out, xo, x.size());
            if (!in_place) expect_guards(yb, xo, xo + size_t{n} * rows * 4);

            std::vector<float> want = ref::rms_norm(std::span<const float>(x).first(size_t{n} * first), wa, n, first, 1e-6f);
            const auto rest = ref::rms_norm(std::span<const float>(x).subspan(size_t{n} * first), wb, n, rows - first, 1e-6f);
            want.insert(want.end(), rest.begin(), rest.end());
            EXPECT_LE(test::nmse(want, got), 1e-10);

            // Two rms_norm calls with the rms_norm kernels of the same capabilities.
            auto x2 = placed(x, xo);
            record([&](vk::CommandBuffer& cb) {
              ops::rms_norm(k, cb, x2, xo, &ab, ao, x2, xo, ops::RmsNormShape{n, first, 1e-6f});
              ops::rms_norm(k, cb, x2, xo + uint64_t{first} * n * 4, &bb, bo, x2, xo + uint64_t{first} * n * 4,
                            ops::RmsNormShape{n, rows - first, 1e-6f});
            });
            const auto sep = read<float>(x2, xo, x.size());
            EXPECT_EQ(std::memcmp(sep.data(), got.data(), sep.size() * 4), 0)
                << "rms_norm2's output differs in its bits from two rms_norm calls";
          }
    for (const ops::PipelineKey& key : k.built()) vec4_built |= key.op == "rms_norm2_vec4";
    EXPECT_TRUE(vec4_built) << "the aligned runs did not take the vec4 kernel";
  });
}

// rms_norm_add (a post-norm joining the residual): y += rms_norm(x) * w in one dispatch, with the
// bits of rms_norm into a buffer and then add (no multiply-add contraction), its float and vec4
// kernels; the rows' padding of y untouched, x unchanged; overlapping x and y refused.
TEST_F(OpsTest, RmsNormAddGivesTheBitsOfRmsNormThenAdd) {
  for_each_variant("rms_norm_add", [](ops::Kernels& k) {
    uint64_t seed = 140;
    bool vec4_built = false;
    for (uint32_t n : {1u, 7u, 64u, 129u, 640u, 4097u})
      for (uint32_t rows : {1u, 3u})
        for (bool with_weight : {true, false})
          for (uint32_t pad : {0u, 4u, 5u}) {  // rows of x and of y `pad` elements apart beyond n
            SCOPED_TRACE("n=" + std::to_string(n) + " rows=" + std::to_string(rows) + " weight=" +
                         std::to_string(with_weight) + " pad=" + std::to_string(pad));
            const uint32_t stride = n + pad;
            const auto x = test::random_floats(size_t{stride} * rows, ++seed, 3.0f);
            const auto y0 = test::random_floats(size_t{stride} * rows, ++seed, 2.0f);
            const auto w = test::random_floats(n, ++seed);
            const bool aligned = pad == 4;  // every operand at a multiple of 16 bytes: the vec4 kernel where n % 4 == 0
            const uint64_t xo = aligned ? 16 : 12, yo = aligned ? 32 : 20, wo = aligned ? 0 : 4;
            auto xb = placed(x, xo), yb = placed(y0, yo), wb = placed(w, wo);
            const ops::RmsNormShape shape{n, rows, 1e-5f, stride, stride};
            const vk::Buffer* weight = with_weight ? &wb : nullptr;
            record([&](vk::CommandBuffer& cb) { ops::rms_norm_add(k, cb, xb, xo, weight, wo, yb, yo, shape); });
            const auto got = read<float>(yb, yo, y0.size());
            ASSERT_EQ(std::memcmp(read<float>(xb, xo, x.size()).data(), x.data(), x.size() * 4), 0) << "x changed";

            std::vector<float> packed_x, packed_y0;
            for (uint32_t r = 0; r < rows; ++r)
              for (uint32_t i = 0; i < n; ++i) {
                packed_x.push_back(x[size_t{r} * stride + i]);
                packed_y0.push_back(y0[size_t{r} * stride + i]);
              }
            auto want = ref::rms_norm(packed_x, with_weight ? std::span<const float>(w) : std::span<const float>(), n, rows,
                                      1e-5f);
            for (size_t i = 0; i < want.size(); ++i) want[i] += packed_y0[i];
            std::vector<float> packed_got;
            for (uint32_t r = 0; r < rows; ++r) {
              for (uint32_t i = 0; i < n; ++i) packed_got.push_back(got[size_t{r} * stride + i]);
              for (uint32_t i = n; i < stride && r + 1 < rows; ++i)
                ASSERT_EQ(got[size_t{r} * stride + i], y0[size_t{r} * stride + i]) << "y's padding written, row " << r;
            }
            EXPECT_LE(test::nmse(want, packed_got), 1e-10);

            // The separate ops on the same input, with the same kernels.
            auto y2 = placed(y0, yo), h = guarded(yo + size_t{stride} * rows * 4 + 64);
            record([&](vk::CommandBuffer& cb) {
              ops::rms_norm(k, cb, xb, xo, weight, wo, h, yo, shape);
              cb.barrier();
              for (uint32_t r = 0; r < rows; ++r)
                ops::add(k, cb, y2, yo + uint64_t{r} * stride * 4, h, yo + uint64_t{r} * stride * 4, y2,
                         yo + uint64_t{r} * stride * 4, n, n);
            });
            const auto sep = read<float>(y2, yo, y0.size());
            EXPECT_EQ(std::memcmp(sep.data(), got.data(), sep.size() * 4), 0)
                << "rms_norm_add's output differs in its bits from rms_norm then add";
          }
    for (const ops::PipelineKey& key : k.built()) vec4_built |= key.op == "rms_norm_add_vec4";
    EXPECT_TRUE(vec4_built) << "the aligned runs did not take the vec4 kernel";
    // x and y overlapping (64 elements: bytes 0..255 and 128..383) refused; apart, recorded.
    auto b = guarded(1024);
    vk::CommandBuffer cb(test::device());
    cb.begin();
    EXPECT_THROW(ops::rms_norm_add(k, cb, b, 0, nullptr, 0, b, 128, ops::RmsNormShape{64, 1}), vk::Error);
    EXPECT_NO_THROW(ops::rms_norm_add(k, cb, b, 0, nullptr, 0, b, 256, ops::RmsNormShape{64, 1}));
    cb.end();
  });
}

// rms_norm_vec4 / add_rms_norm_vec4 (every operand at a multiple of 16 bytes, rows of whole
// vec4s) do the arithmetic of rms_norm / add_rms_norm in the same order: the same rows placed
// at aligned and at unaligned offsets give the same bits, and the aligned run takes the vec4
// kernels (a pipeline of theirs is built).
TEST_F(OpsTest, RmsNormGivesTheSameBitsThroughVec4LoadsAsThroughFloatLoads) {
  for_each_variant("rms_norm_vec4", [](ops::Kernels& k) {
    uint64_t seed = 90;
    for (uint32_t n : {4u, 64u, 576u, 2048u})
      for (bool add : {false, true}) {
        SCOPED_TRACE("n=" + std::to_string(n) + (add ? " add_rms_norm" : " rms_norm"));
        const uint32_t rows = 3, stride = n + 8;
        const auto x = test::random_floats(size_t{stride} * rows, ++seed, 3.0f);
        const auto sum = test::random_floats(size_t{stride} * rows, ++seed, 2.0f);
        const auto w = test::random_floats(n, ++seed);
        std::vector<float> got_x[2], got_y[2];
        for (int aligned = 0; aligned < 2; ++aligned) {
          const uint64_t xo = aligned ? 64 : 68, so = aligned ? 16 : 4, wo = aligned ? 32 : 36, yo = aligned ? 0 : 8;
          auto xb = placed(x, xo), sb = placed(sum, so), wb = placed(w, wo);
          auto yb = guarded(yo + size_t{stride} * rows * 4 + 64);
          const ops::RmsNormShape shape{n, rows, 1e-5f, stride, stride};
          record([&](vk::CommandBuffer& cb) {
            if (add) ops::add_rms_norm(k, cb, xb, xo, sb, so, &wb, wo, yb, yo, shape, stride);
            else ops::rms_norm(k, cb, xb, xo, &wb, wo, yb, yo, shape);
          });
          got_x[aligned] = read<float>(xb, xo, x.size());
          got_y[aligned] = read<float>(yb, yo, size_t{stride} * (rows - 1) + n);
        }
        EXPECT_EQ(std::memcmp(got_x[0].data(), got_x[1].data(), x.size() * 4), 0) << "x differs";
        for (uint32_t r = 0; r < rows; ++r)
          EXPECT_EQ(std::memcmp(&got_y[0][size_t{r} * stride], &got_y[1][size_t{r} * stride], size_t{n} * 4), 0)
              << "row " << r << " of the output differs between the vec4 and the float kernels";
      }
    bool vec4_built = false, add_vec4_built = false;
    for (const ops::PipelineKey& key : k.built()) {
      vec4_built |= key.op == "rms_norm_vec4";
      add_vec4_built |= key.op == "add_rms_norm_vec4";
    }
    EXPECT_TRUE(vec4_built && add_vec4_built) << "the aligned runs did not take the vec4 kernels";
  });
}

TEST_F(OpsTest, AddRmsNormRefusesAnOutputOrSumThatOverlapsX) {
  ops::Kernels& k = kernels(test::device().capabilities());
  const auto x = test::random_floats(64, 3);
  auto xb = placed(x, 0, 1024), other = placed(x, 0, 1024);  // room for every range below
  const ops::RmsNormShape shape{32, 2, 1e-5f};                // 256 bytes per operand
  vk::CommandBuffer cb(test::device());
  cb.begin();
  const auto refused = [&](const vk::Buffer& s, uint64_t s_off, const vk::Buffer& y, uint64_t y_off) {
    try {
      ops::add_rms_norm(k, cb, xb, 0, s, s_off, nullptr, 0, y, y_off, shape);
    } catch (const vk::Error& e) {
      return std::string(e.what()).find("overlap") != std::string::npos;
    }
    return false;
  };
  EXPECT_TRUE(refused(other, 0, xb, 128));     // y overlaps x
  EXPECT_TRUE(refused(xb, 64, other, 0));      // the sum overlaps x
  EXPECT_TRUE(refused(other, 0, other, 128));  // y overlaps the sum
  EXPECT_FALSE(refused(other, 0, other, 256)); // three separate ranges: recorded
  cb.end();
}

// ---------------------------------------------------------------------------------------
struct RopeCase {
  uint32_t n_tokens, n_heads, head_dim, n_dims;
  bool neox;
  float base, freq_scale;
};

TEST_F(OpsTest, RopeMatchesReferenceInBothStylesForHeadDims8And64And80AndPartialRotation) {
  const RopeCase cases[] = {
      {1, 1, 8, 8, false, 10000.0f, 1.0f},     {3, 4, 64, 64, false, 10000.0f, 1.0f},
      {3, 4, 64, 64, true, 10000.0f, 1.0f},    {2, 3, 80, 80, false, 1000000.0f, 1.0f},
      {2, 3, 80, 80, true, 500000.0f, 0.25f},  {5, 2, 64, 32, false, 10000.0f, 1.0f},
      {5, 2, 64, 32, true, 10000.0f, 0.5f},    {4, 3, 80, 16, true, 10000.0f, 1.0f},
      {7, 1, 8, 4, false, 10000.0f, 1.0f},
  };
  for_each_variant("rope", [&](ops::Kernels& k) {
    uint64_t seed = 100;
    for (const RopeCase& c : cases) {
      SCOPED_TRACE("tokens=" + std::to_string(c.n_tokens) + " heads=" + std::to_string(c.n_heads) + " head_dim=" +
                   std::to_string(c.head_dim) + " n_dims=" + std::to_string(c.n_dims) + " neox=" + std::to_string(c.neox));
      const auto x = test::random_floats(size_t{c.n_tokens} * c.n_heads * c.head_dim, ++seed);
      std::mt19937 rng(static_cast<uint32_t>(seed));
      std::vector<int32_t> pos(c.n_tokens);
      for (auto& p : pos) p = static_cast<int32_t>(rng() % 4096);
      pos[0] = 0;
      const auto xb = placed(x, 4), pb = placed(pos, 8);
      auto yb = guarded(x.size() * 4 + 40);
      ops::RopeShape s{c.n_tokens, c.n_heads, c.head_dim, c.n_dims, c.neox, c.base, c.freq_scale};
      record([&](vk::CommandBuffer& cb) { ops::rope(k, cb, xb, 4, pb, 8, yb, 0, s); });
      const auto want = ref::rope(x, pos, c.n_heads, c.head_dim, c.n_dims, c.neox, c.base, c.freq_scale);
      const auto got = read<float>(yb, 0, x.size());
      EXPECT_LE(test::nmse(want, got), 1e-8);
      // position 0 and the dimensions past n_dims are copied exactly
      for (uint32_t i = 0; i < c.head_dim; ++i) ASSERT_EQ(got[i], x[i]) << "token 0 (position 0), dim " << i;
      for (size_t th = 0; th < size_t{c.n_tokens} * c.n_heads; ++th)
        for (uint32_t i = c.n_dims; i < c.head_dim; ++i) ASSERT_EQ(got[th * c.head_dim + i], x[th * c.head_dim + i]);
      expect_guards(yb, 0, x.size() * 4);
    }
  });
}

TEST_F(OpsTest, RopeInPlaceOnTheQueryPartOfAFusedQkvRow) {
  for_each_variant("rope", [](ops::Kernels& k) {
    // qkv: [tokens][n_head + 2 * n_kv][head_dim]; rotate the K part (heads n_head .. n_head + n_kv) in place.
    const uint32_t tokens = 3, n_head = 4, n_kv = 2, hd = 64, row = (n_head + 2 * n_kv) * hd;
    const auto qkv = test::random_floats(size_t{tokens} * row, 11);
    const std::vector<int32_t> pos = {17, 18, 19};
    auto b = placed(qkv, 0);
    const auto pb = placed(pos, 0);
    const uint64_t k_off = uint64_t{n_head} * hd * 4;
    ops::RopeShape s{tokens, n_kv, hd, hd, true, 10000.0f, 1.0f, row, hd, row, hd};
    record([&](vk::CommandBuffer& cb) { ops::rope(k, cb, b, k_off, pb, 0, b, k_off, s); });
    const auto got = read<float>(b, 0, qkv.size());
    std::vector<float> kpart, got_k;
    for (uint32_t t = 0; t < tokens; ++t) {
      kpart.insert(kpart.end(), qkv.begin() + t * row + n_head * hd, qkv.begin() + t * row + (n_head + n_kv) * hd);
      got_k.insert(got_k.end(), got.begin() + t * row + n_head * hd, got.begin() + t * row + (n_head + n_kv) * hd);
      for (uint32_t i = 0; i < row; ++i)
        if (i < n_head * hd || i >= (n_head + n_kv) * hd) {
          ASSERT_EQ(got[t * row + i], qkv[t * row + i]);
        }
    }
    EXPECT_LE(test::nmse(ref::rope(kpart, pos, n_kv, hd, hd, true, 10000.0f, 1.0f), got_k), 1e-8);
  });
}

// ---------------------------------------------------------------------------------------
// ---------------------------------------------------------------------------------------
TEST_F(OpsTest, AddIsExactElementWiseBroadcastAndScalar) {
  for (const char* op : {"add"}) {
    for_each_variant(op, [&](ops::Kernels& k) {
      uint64_t seed = 300;
      struct Case {
        uint32_t n, ny;
      };
      for (const Case c : {Case{1, 1}, Case{1000, 1000}, Case{4097, 4097}, Case{3 * 4097, 4097}, Case{3 * 80, 80},
                           Case{515, 1}}) {
        SCOPED_TRACE(std::string(op) + " n=" + std::to_string(c.n) + " ny=" + std::to_string(c.ny));
        const auto x = test::random_floats(c.n, ++seed), y = test::random_floats(c.ny, ++seed);
        const auto xb = placed(x, 4), yb = placed(y, 36);
        auto zb = guarded(12 + c.n * 4 + 64);
        record([&](vk::CommandBuffer& cb) { ops::add(k, cb, xb, 4, yb, 36, zb, 12, c.n, c.ny); });
        const auto want = ref::add(x, y);
        EXPECT_EQ(test::max_abs_diff(want, read<float>(zb, 12, c.n)), 0.0);
        expect_guards(zb, 12, 12 + uint64_t{c.n} * 4);
      }
    });
  }
}

TEST_F(OpsTest, AddInPlaceIsTheResidualUpdate) {
  for_each_variant("add", [](ops::Kernels& k) {
    const uint32_t n = 2 * 288;
    const auto x = test::random_floats(n, 1), y = test::random_floats(n, 2);
    auto xb = placed(x, 0);
    const auto yb = placed(y, 0);
    record([&](vk::CommandBuffer& cb) { ops::add(k, cb, xb, 0, yb, 0, xb, 0, n, n); });
    EXPECT_EQ(test::max_abs_diff(ref::add(x, y), read<float>(xb, 0, n)), 0.0);
  });
}

// ---------------------------------------------------------------------------------------
TEST_F(OpsTest, SwigluAndGegluMatchReferenceIncludingLargeMagnitudes) {
  for (const char* op : {"swiglu", "geglu"}) {
    for_each_variant(op, [&](ops::Kernels& k) {
      const bool swi = std::string(op) == "swiglu";
      for (uint32_t n : {1u, 300u, 4097u}) {
        SCOPED_TRACE(std::string(op) + " n=" + std::to_string(n));
        auto g = test::random_floats(n, n + 1, 6.0f);
        const auto u = test::random_floats(n, n + 2, 2.0f);
        if (n > 3) g[1] = -100.0f, g[2] = 100.0f, g[3] = -3000.0f;  // exp overflows: no NaN, no inf
        const auto gb = placed(g, 8), ub = placed(u, 24);
        auto yb = guarded(n * 4 + 64);
        record([&](vk::CommandBuffer& cb) {
          (swi ? ops::swiglu : ops::geglu)(k, cb, gb, 8, ub, 24, yb, 0, ops::GluShape{n});
        });
        const auto want = swi ? ref::swiglu(g, u) : ref::geglu(g, u);
        EXPECT_LE(test::nmse(want, read<float>(yb, 0, n)), 1e-10);
        expect_guards(yb, 0, uint64_t{n} * 4);
      }
    });
  }
}

TEST_F(OpsTest, SwigluReadsGateAndUpFromAFusedRowAndWritesOverTheGate) {
  for_each_variant("swiglu", [](ops::Kernels& k) {
    const uint32_t n = 100, rows = 3;  // fused [rows][gate n | up n]
    const auto fused = test::random_floats(size_t{2} * n * rows, 77, 4.0f);
    auto b = placed(fused, 0);
    record([&](vk::CommandBuffer& cb) {
      ops::swiglu(k, cb, b, 0, b, n * 4, b, 0, ops::GluShape{n, rows, 2 * n, 2 * n, 2 * n});
    });
    std::vector<float> g, u, got;
    const auto all = read<float>(b, 0, fused.size());
    for (uint32_t r = 0; r < rows; ++r) {
      g.insert(g.end(), fused.begin() + 2 * n * r, fused.begin() + 2 * n * r + n);
      u.insert(u.end(), fused.begin() + 2 * n * r + n, fused.begin() + 2 * n * (r + 1));
      got.insert(got.end(), all.begin() + 2 * n * r, all.begin() + 2 * n * r + n);
    }
    EXPECT_LE(test::nmse(ref::swiglu(g, u), got), 1e-10);
  });
}

// ---------------------------------------------------------------------------------------
class GetRowsTest : public test::GpuTestP<GgmlType> {};

TEST_P(GetRowsTest, LooksUpRowsExactlyAsTheReferenceDequantiserIncludingWindowedWeights) {
  const GgmlType t = GetParam();
  const auto& tr = type_traits(t);
  const bool plain = tr.block_elems == 1;
  for_each_variant(ops::get_rows_op(t), [&](ops::Kernels& k) {
    struct Case {
      uint32_t n, n_rows;
    };
    for (const Case c : {Case{tr.block_elems == 1 ? 1u : tr.block_elems, 5}, Case{plain ? 4097u : 3 * tr.block_elems, 37},
                         Case{plain ? 80u : tr.block_elems * 2, 9}}) {
      const uint64_t rb = *row_bytes(t, c.n);
      const auto x = test::random_floats(size_t{c.n} * c.n_rows, c.n * 31 + c.n_rows, 2.0f);
      std::vector<uint8_t> w(rb * c.n_rows);
      for (uint32_t r = 0; r < c.n_rows; ++r) quantize_row(t, x.data() + size_t{r} * c.n, w.data() + r * rb, c.n);
      const std::vector<uint32_t> ids = {c.n_rows - 1, 0, 3, 3, 1, c.n_rows - 2, c.n_rows / 2};
      const uint64_t w_off = 20;
      const auto wb = placed(rows_to_device(t, w, c.n, c.n_rows), w_off), ib = placed(ids, 4);
      const auto want = ref::get_rows(t, w, c.n, ids);
      const uint64_t drb = *device_row_bytes(t, c.n);
      // 0: one window; otherwise windows of a few rows (several dispatches).
      for (uint64_t max_window : {uint64_t{0}, 256 + 2 * drb, 256 + 3 * drb}) {
        SCOPED_TRACE(std::string(tr.name) + " n=" + std::to_string(c.n) + " rows=" + std::to_string(c.n_rows) +
                     " window=" + std::to_string(max_window));
        auto yb = guarded(8 + want.size() * 4 + 64);
        ops::GetRowsShape s{t, c.n, c.n_rows, static_cast<uint32_t>(ids.size()), 0, max_window};
        record([&](vk::CommandBuffer& cb) { ops::get_rows(k, cb, wb, w_off, ib, 4, yb, 8, s); });
        const auto got = read<float>(yb, 8, want.size());
        if (plain)
          EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * 4));
        else
          EXPECT_LE(test::nmse(want, got), 1e-12);
        expect_guards(yb, 8, 8 + want.size() * 4);
      }
    }
  });
}

// The speed calibration (engine/calibration.h) is cached per device, format and build of the
// kernels: a line an older chorus wrote (no fingerprint, or another one) is measured again and
// replaced, never reused; the new line is then what a process that opens no device reads.
TEST_F(OpsTest, ACalibratedSpeedFromOtherKernelsIsMeasuredAgainAndItsLineReplaced) {
  struct PrivateCache {  // XDG_CACHE_HOME set to a fresh folder while the test runs
    std::filesystem::path dir =
        std::filesystem::temp_directory_path() / ("chorus-calibration-test-" + std::to_string(::getpid()));
    std::optional<std::string> saved;
    PrivateCache() {
      if (const char* x = std::getenv("XDG_CACHE_HOME")) saved = x;
      std::filesystem::remove_all(dir);
      std::filesystem::create_directories(dir / "chorus");
      ::setenv("XDG_CACHE_HOME", dir.c_str(), 1);
    }
    ~PrivateCache() {
      if (saved)
        ::setenv("XDG_CACHE_HOME", saved->c_str(), 1);
      else
        ::unsetenv("XDG_CACHE_HOME");
      std::filesystem::remove_all(dir);
    }
  } cache;
  vk::Device& dev = test::device();
  const vk::DeviceInfo& i = dev.info();
  const std::string id = i.name + "|" + i.vendor + "|" + i.driver_name + "|" + i.driver_info + "|" +
                         std::to_string(i.driver_version) + "|Q4_0";
  {
    std::ofstream f(calibration_cache_path());
    f << id << "\t1234\n" << id << "|kernels 0000000000000000\t1234\n" << "another device|Q4_0\t99\n";
  }
  EXPECT_FALSE(cached_device_speed(i, GgmlType::Q4_0).has_value()) << "a line of other kernels was taken";
  const DeviceSpeed s = device_speed(dev, GgmlType::Q4_0);
  EXPECT_EQ(s.source, "measured");
  EXPECT_NE(s.weight_bytes_per_second, 1234.0);
  EXPECT_GT(s.weight_bytes_per_second, 0.0);
  const std::optional<double> cached = cached_device_speed(i, GgmlType::Q4_0);
  ASSERT_TRUE(cached.has_value());
  EXPECT_NEAR(*cached, s.weight_bytes_per_second, 1e-5 * s.weight_bytes_per_second);  // written with 6 digits
  std::ifstream f(calibration_cache_path());
  std::vector<std::string> lines;
  for (std::string line; std::getline(f, line);) lines.push_back(line);
  EXPECT_EQ(lines.size(), 2u) << "the two stale lines of this device were not replaced by one";
  EXPECT_EQ(std::count_if(lines.begin(), lines.end(), [](const std::string& l) { return l.rfind("another device|", 0) == 0; }), 1)
      << "another device's line was lost";
}

INSTANTIATE_TEST_SUITE_P(EveryWeightFormat, GetRowsTest, ::testing::ValuesIn(weight_types()),
                         [](const auto& p) { return std::string(type_traits(p.param).name); });

}  // namespace
}  // namespace chorus
