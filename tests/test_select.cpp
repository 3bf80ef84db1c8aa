// GPU tests of engine/ops/select.h: argmax and top_k (every variant) agree exactly — index
// and value bits — with the reference order (larger value, then lower index; NaN below every
// number; -0 == +0) on random data with planted ties, NaN and -inf entries, sizes around the
// workgroup chunks and up to a 256k vocabulary, and with an index base.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstring>
#include <bit>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "engine/ops/select.h"
#include "shaders/registry.h"
#include "tests/gpu.h"
#include "tests/reference_attention.h"

namespace chorus {
namespace {

constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

std::string variant_name(const ::testing::TestParamInfo<const shaders::Variant*>& info) {
  const std::string caps = shaders::capability_names(info.param->requires_caps);
  std::string name = caps == "none" ? std::string("fallback") : caps;
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
}

class SelectVariant : public test::GpuTestP<const shaders::Variant*> {
 protected:
  void SetUp() override {
    test::GpuTestP<const shaders::Variant*>::SetUp();
    const uint32_t missing = GetParam()->requires_caps & ~test::device().capabilities();
    if (missing != 0)
      GTEST_SKIP() << "the test device lacks {" << shaders::capability_names(missing) << "} for " << GetParam()->name;
  }
};
using ArgmaxVariant = SelectVariant;
using TopKVariant = SelectVariant;

// Random values on a coarse grid (many exact ties), with NaN, -inf, -0 and +0 planted, and
// the maximum planted twice (ties at the top).
std::vector<float> planted(uint32_t n, uint64_t seed) {
  std::vector<float> x = test::random_floats(n, seed, 50.0f);
  for (float& v : x) v = std::round(v * 4.0f) / 4.0f;
  std::mt19937_64 rng(seed * 7 + 1);
  auto at = [&] { return static_cast<uint32_t>(rng() % n); };
  for (uint32_t i = 0; i < n / 50 + 1; ++i) x[at()] = kNan;
  for (uint32_t i = 0; i < n / 50 + 1; ++i) x[at()] = -kInf;
  for (uint32_t i = 0; i < n / 100 + 1; ++i) x[at()] = (i % 2 != 0) ? -0.0f : 0.0f;
  const uint32_t a = at(), b = at();
  x[a] = 60.0f;
  x[b] = 60.0f;
  if (n > 1) x[0] = kNan;  // NaN at index 0 must not win
  return x;
}

void expect_same(const std::vector<ref::Ranked>& want, const std::vector<ops::Selected>& got) {
  ASSERT_EQ(want.size(), got.size());
  for (size_t r = 0; r < want.size(); ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    EXPECT_EQ(got[r].index, want[r].index);
    if (std::isnan(want[r].value))
      EXPECT_TRUE(std::isnan(got[r].value)) << got[r].value;
    else
      EXPECT_EQ(std::bit_cast<uint32_t>(got[r].value), std::bit_cast<uint32_t>(want[r].value))
          << got[r].value << " vs " << want[r].value;
  }
}

std::vector<ops::Selected> run_argmax(ops::Kernels& k, const std::vector<float>& x, uint32_t base = 0) {
  vk::Device& dev = k.device();
  vk::Buffer xb = test::make_buffer(dev, x, "x");
  vk::Buffer sb = dev.create_buffer(std::max<uint64_t>(ops::argmax_scratch_bytes(uint32_t(x.size())), 4),
                                    vk::BufferKind::Device, "scratch");
  vk::Buffer ob = dev.create_buffer(12, vk::BufferKind::Device, "out");
  test::run_on(dev, [&](vk::CommandBuffer& cb) {
    ops::argmax(k, cb, xb, 0, uint32_t(x.size()), sb, 0, ob, 4, {base});
  });
  return dev.download<ops::Selected>(ob, 1, 4);
}

std::vector<ops::Selected> run_top_k(ops::Kernels& k, const std::vector<float>& x, uint32_t top, uint32_t base = 0) {
  vk::Device& dev = k.device();
  const uint32_t n = uint32_t(x.size());
  // x at byte 4 of its buffer: the binding's alignment skip is exercised.
  std::vector<float> shifted(x.size() + 1, 0.0f);
  std::copy(x.begin(), x.end(), shifted.begin() + 1);
  vk::Buffer xb = test::make_buffer(dev, shifted, "x");
  vk::Buffer sb = dev.create_buffer(std::max<uint64_t>(ops::top_k_scratch_bytes(n, top) + 8, 4),
                                    vk::BufferKind::Device, "scratch");
  vk::Buffer ob = dev.create_buffer(8ull * top, vk::BufferKind::Device, "out");
  test::run_on(dev, [&](vk::CommandBuffer& cb) { ops::top_k(k, cb, xb, 4, n, top, sb, 8, ob, 0, {base}); });
  return dev.download<ops::Selected>(ob, top);
}

TEST_P(ArgmaxVariant, FindsTheFirstOfTiedMaximaAndNaNNeverWins) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  ASSERT_EQ(k.variant("argmax").name, GetParam()->name);
  for (uint32_t n : {1u, 7u, 255u, 4096u, 4097u, 100003u, 262144u})
    for (uint64_t seed : {1u, 2u}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " seed=" + std::to_string(seed));
      const std::vector<float> x = planted(n, seed * 1000 + n);
      expect_same({ref::argmax(x)}, run_argmax(k, x));
    }
}

TEST_P(ArgmaxVariant, HandlesAllNaNAllMinusInfinityAndSignedZeros) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  const std::vector<std::vector<float>> cases = {
      std::vector<float>(5000, kNan),                 // every entry NaN: index 0
      {kNan, -kInf, -kInf, kNan},                     // -inf beats NaN
      {-1.0f, -0.0f, 0.0f, -0.0f},                    // -0 == +0: the first zero wins
      {kInf, 1.0f, kInf},
  };
  for (size_t c = 0; c < cases.size(); ++c) {
    SCOPED_TRACE("case " + std::to_string(c));
    expect_same({ref::argmax(cases[c])}, run_argmax(k, cases[c]));
  }
}

TEST_P(ArgmaxVariant, AddsTheIndexBaseOfAVocabularySlice) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  const std::vector<float> x = planted(9000, 5);
  expect_same({ref::argmax(x, 32000)}, run_argmax(k, x, 32000));
}

TEST_P(TopKVariant, ReturnsTheBestEntriesSortedWithTiesToTheLowerIndex) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  ASSERT_EQ(k.variant("top_k").name, GetParam()->name);
  for (uint32_t n : {70u, 4096u, 5000u, 262144u})
    for (uint32_t top : {1u, 5u, 64u}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " k=" + std::to_string(top));
      const std::vector<float> x = planted(n, n + top);
      expect_same(ref::top_k(x, top), run_top_k(k, x, top));
    }
}

TEST_P(TopKVariant, RanksNaNLastAndPadsWhenKExceedsN) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  const std::vector<float> x = {kNan, 3.0f, -kInf, kNan, 3.0f, -0.0f, 0.0f};
  expect_same(ref::top_k(x, 7), run_top_k(k, x, 7));
  expect_same(ref::top_k(x, 10), run_top_k(k, x, 10));
}

TEST_P(TopKVariant, AddsTheIndexBaseAndReducesInSeveralPassesForLargeK) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  const std::vector<float> x = planted(100000, 9);
  expect_same(ref::top_k(x, 256, 7), run_top_k(k, x, 256, 7));
}

INSTANTIATE_TEST_SUITE_P(EveryVariant, ArgmaxVariant, ::testing::ValuesIn(shaders::variants_of("argmax")), variant_name);
INSTANTIATE_TEST_SUITE_P(EveryVariant, TopKVariant, ::testing::ValuesIn(shaders::variants_of("top_k")), variant_name);

}  // namespace
}  // namespace chorus
