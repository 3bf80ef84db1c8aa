// GPU tests of engine/ops/attention.h: kv_store writes exact f16 rows into the cache layout,
// and attention (every variant) matches the double-precision reference that reads the same
// f16-rounded cache, for decode and prefill, GQA ratios 1/2/3, head_dim 8/64/80/128, a
// continued cache (p0 > 0), context lengths not a multiple of the 64-position block, up to
// 4096 positions, and caches bound in windows of KV heads. With p0 read from a device buffer:
// one recorded decode step (kv_store + attention) replayed for positions 0..40 and up to the
// context's end, the same bits as the push-constant p0, and positions past the context
// neither written nor read.
//
// Tolerance: NMSE <= 1e-9 against the reference (f32 accumulation and exp against double; the
// cache is compared bit for bit). Positions past p0 + n_tokens hold NaN, so a kernel that
// reads beyond a query's causal limit fails.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "engine/ops/attention.h"
#include "engine/ops/ops.h"
#include "engine/quant.h"
#include "shaders/registry.h"
#include "tests/gpu.h"
#include "tests/reference_attention.h"
#include "tests/reference_ops.h"

namespace chorus {
namespace {

constexpr double kTolerance = 1e-9;
constexpr uint16_t kF16Nan = 0x7E00;
constexpr uint64_t kCacheOffset = 20;  // not a multiple of the binding alignment: exercises the skip

std::string variant_name(const ::testing::TestParamInfo<const shaders::Variant*>& info) {
  const std::string caps = shaders::capability_names(info.param->requires_caps);
  std::string name = caps == "none" ? std::string("fallback") : caps;
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
}

class AttentionVariant : public test::GpuTestP<const shaders::Variant*> {
 protected:
  void SetUp() override {
    test::GpuTestP<const shaders::Variant*>::SetUp();
    const uint32_t missing = GetParam()->requires_caps & ~test::device().capabilities();
    if (missing != 0)
      GTEST_SKIP() << "the test device lacks {" << shaders::capability_names(missing) << "} for " << GetParam()->name;
  }
};
using KvStoreVariant = AttentionVariant;

struct Case {
  uint32_t n_kv_heads, ratio, head_dim, n_ctx, n_tokens, p0;
  uint64_t seed;
  uint32_t window = 0;  // sliding window (0: none); positions no query attends to hold f16 NaN
  float q_amp = 1.0f;   // queries uniform in [-q_amp, q_amp]: 40 gives scores of tens (a peaked softmax)
  std::string text() const {
    return "kv_heads=" + std::to_string(n_kv_heads) + " ratio=" + std::to_string(ratio) + " head_dim=" +
           std::to_string(head_dim) + " n_ctx=" + std::to_string(n_ctx) + " n_tokens=" + std::to_string(n_tokens) +
           " p0=" + std::to_string(p0) + " seed=" + std::to_string(seed) + " window=" + std::to_string(window);
  }
};

struct Result {
  std::vector<float> got, want;
};

// A host-visible buffer holding `words` at byte `offset`, which the host may rewrite between
// submits of a recorded command buffer.
vk::Buffer host_words(vk::Device& dev, std::span<const uint32_t> words, uint64_t offset, const std::string& tag) {
  vk::Buffer b = dev.create_buffer(offset + words.size_bytes(), vk::BufferKind::Host, tag);
  if (b.mapped() == nullptr) throw vk::Error("test: host buffer '" + tag + "' is not mapped");
  std::memcpy(b.mapped() + offset, words.data(), words.size_bytes());
  return b;
}

// Fills the cache's positions < p0 from the host (a previous step), stores n_tokens new K/V
// rows with kv_store, runs attention, and checks the stored rows bit for bit. device_p0: p0
// goes to the kernels in a buffer (the host p0 passed alongside is deliberately invalid).
Result run_case(ops::Kernels& k, const Case& c, const ops::AttentionOptions& opts = {},
                ops::KvStoreOptions store_opts = {}, bool device_p0 = false, uint64_t cache_offset = kCacheOffset) {
  vk::Device& dev = k.device();
  const ref::KvShape s{c.n_kv_heads, c.n_ctx, c.head_dim};
  const uint32_t n_q_heads = c.n_kv_heads * c.ratio;
  const size_t cache_elems = size_t(c.n_kv_heads) * c.n_ctx * c.head_dim;
  const size_t row = size_t(c.n_kv_heads) * c.head_dim;

  std::vector<uint16_t> k_cache(cache_elems, kF16Nan), v_cache(cache_elems, kF16Nan);
  ref::kv_store(test::random_floats(c.p0 * row, c.seed + 1, 2.0f), c.p0, 0, s, k_cache);
  ref::kv_store(test::random_floats(c.p0 * row, c.seed + 2), c.p0, 0, s, v_cache);
  // A sliding window: positions before query 0's window hold NaN, so reading any of them (even
  // with a zero weight) would show in the output.
  const uint32_t unread = c.window != 0 && c.p0 + 1 > c.window ? c.p0 + 1 - c.window : 0;
  for (uint32_t h = 0; h < c.n_kv_heads; ++h)
    for (size_t e = 0; e < size_t(unread) * c.head_dim; ++e)
      k_cache[size_t(h) * c.n_ctx * c.head_dim + e] = v_cache[size_t(h) * c.n_ctx * c.head_dim + e] = kF16Nan;
  const std::vector<float> k_new = test::random_floats(c.n_tokens * row, c.seed + 3, 2.0f);
  const std::vector<float> v_new = test::random_floats(c.n_tokens * row, c.seed + 4);
  const std::vector<float> q = test::random_floats(size_t(c.n_tokens) * n_q_heads * c.head_dim, c.seed + 5, c.q_amp);

  auto padded = [&](const std::vector<uint16_t>& cache) {
    std::vector<uint8_t> bytes(cache_offset + cache.size() * 2 + 4, 0);
    std::memcpy(bytes.data() + cache_offset, cache.data(), cache.size() * 2);
    return bytes;
  };
  vk::Buffer kb = test::make_buffer(dev, padded(k_cache), "K cache");
  vk::Buffer vb = test::make_buffer(dev, padded(v_cache), "V cache");
  vk::Buffer knb = test::make_buffer(dev, k_new, "K new");
  vk::Buffer vnb = test::make_buffer(dev, v_new, "V new");
  vk::Buffer qb = test::make_buffer(dev, q, "Q");
  vk::Buffer ob = dev.create_buffer(4ull * q.size(), vk::BufferKind::Device, "out");
  const ops::KvCache cache{c.n_kv_heads, c.n_ctx, c.head_dim, &kb, cache_offset, &vb, cache_offset};
  ops::AttentionShape shape{c.n_tokens, n_q_heads, c.p0, 1.0f / std::sqrt(float(c.head_dim))};
  shape.window = c.window;
  const uint32_t p0_word[] = {c.p0};
  vk::Buffer p0b = host_words(dev, p0_word, 4, "p0");
  uint32_t host_p0 = c.p0;
  if (device_p0) {
    host_p0 = shape.p0 = c.n_ctx;  // ignored
    shape.p0_buffer = store_opts.p0_buffer = &p0b;
    shape.p0_offset = store_opts.p0_offset = 4;
  }
  test::run_on(dev, [&](vk::CommandBuffer& cb) {
    ops::kv_store(k, cb, cache, knb, 0, vnb, 0, c.n_tokens, host_p0, store_opts);
    cb.barrier();  // attention reads the rows kv_store wrote
    ops::attention(k, cb, cache, shape, qb, 0, ob, 0, opts);
  });

  ref::kv_store(k_new, c.n_tokens, c.p0, s, k_cache);
  ref::kv_store(v_new, c.n_tokens, c.p0, s, v_cache);
  const auto k_got = dev.download<uint16_t>(kb, cache_elems, cache_offset);
  const auto v_got = dev.download<uint16_t>(vb, cache_elems, cache_offset);
  EXPECT_EQ(k_got, k_cache) << "kv_store wrote different K bits";
  EXPECT_EQ(v_got, v_cache) << "kv_store wrote different V bits";

  std::vector<float> kf(cache_elems), vf(cache_elems);
  for (size_t i = 0; i < cache_elems; ++i) {
    kf[i] = fp16_to_fp32(k_cache[i]);
    vf[i] = fp16_to_fp32(v_cache[i]);
  }
  Result r;
  r.want = ref::attention(q, kf, vf, s, c.n_tokens, n_q_heads, c.p0, shape.scale, c.window);
  r.got = dev.download<float>(ob, q.size());
  return r;
}

void expect_close(const Result& r) {
  const double e = test::nmse(r.want, r.got);
  EXPECT_LE(e, kTolerance) << "max |diff| " << test::max_abs_diff(r.want, r.got);
}

TEST_P(AttentionVariant, DecodeMatchesTheReferenceForEveryGqaRatioAndHeadDim) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  ASSERT_EQ(k.variant("attention").name, GetParam()->name);
  uint64_t seed = 10;
  for (uint32_t ratio : {1u, 2u, 3u})
    for (uint32_t head_dim : {8u, 64u, 80u})
      for (uint32_t p0 : {0u, 63u, 64u, 200u}) {
        const Case c{3, ratio, head_dim, 256, 1, p0, ++seed};
        SCOPED_TRACE(c.text());
        expect_close(run_case(k, c));
      }
}

TEST_P(AttentionVariant, PrefillFromAnEmptyCacheMatchesTheReference) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  for (const Case& c : {Case{3, 3, 64, 160, 37, 0, 1}, Case{2, 1, 80, 128, 100, 0, 2}, Case{1, 2, 8, 70, 70, 0, 3},
                        Case{2, 2, 128, 130, 65, 0, 4}}) {
    SCOPED_TRACE(c.text());
    expect_close(run_case(k, c));
  }
}

TEST_P(AttentionVariant, PrefillContinuingACacheMatchesTheReference) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  for (const Case& c : {Case{2, 2, 64, 200, 23, 45, 5}, Case{3, 3, 64, 300, 17, 130, 6}, Case{1, 1, 80, 100, 9, 90, 7}}) {
    SCOPED_TRACE(c.text());
    expect_close(run_case(k, c));
  }
}

TEST_P(AttentionVariant, DecodeAtTheEndOfA4096PositionContextMatchesTheReference) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  for (const Case& c : {Case{2, 2, 64, 4096, 1, 4095, 8}, Case{1, 4, 128, 4096, 1, 4000, 9}}) {
    SCOPED_TRACE(c.text());
    expect_close(run_case(k, c));
  }
}

TEST_P(AttentionVariant, ALongPrefillOf512TokensMatchesTheReference) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  const Case c{1, 3, 64, 600, 512, 40, 11};
  SCOPED_TRACE(c.text());
  expect_close(run_case(k, c));
}

TEST_P(AttentionVariant, ASlidingWindowReadsOnlyTheLastWindowPositionsOfEachQuery) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  // Decode past the window (one or several blocks of positions skipped), decode inside it,
  // prefill rows whose windows start in different blocks, a window of 1, and Gemma 3's shape
  // (head_dim 256, 4 q heads on 1 kv head).
  for (const Case& c : {Case{2, 2, 64, 400, 1, 300, 21, 64}, Case{1, 3, 64, 400, 1, 30, 22, 64},
                        Case{2, 2, 64, 300, 70, 100, 23, 50}, Case{1, 4, 256, 200, 1, 150, 24, 1},
                        Case{1, 4, 256, 700, 40, 600, 25, 512}, Case{3, 1, 80, 200, 100, 0, 26, 17}}) {
    SCOPED_TRACE(c.text());
    const Result r = run_case(k, c);
    for (float v : r.got) ASSERT_TRUE(std::isfinite(v)) << "a position outside every window was read";
    expect_close(r);
  }
}

TEST_P(AttentionVariant, ASlidingWindowWithADeviceP0GivesTheSameBitsAsThePushConstantP0) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  const Case c{2, 2, 64, 400, 1, 333, 27, 100};
  const Result host = run_case(k, c);
  expect_close(host);
  EXPECT_EQ(run_case(k, c, {}, {}, true).got, host.got);
}

TEST_P(AttentionVariant, RowsPerWorkgroupDoNotChangeTheResult) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  const Case c{2, 3, 64, 100, 11, 20, 12};
  const Result base = run_case(k, c);
  expect_close(base);
  for (uint32_t rows : {1u, 3u, 16u}) {
    SCOPED_TRACE("rows_per_group=" + std::to_string(rows));
    ops::AttentionOptions o;
    o.rows_per_group = rows;
    const Result r = run_case(k, c, o);
    EXPECT_EQ(r.got, base.got);
  }
}

TEST_P(AttentionVariant, ACacheBoundInWindowsOfKvHeadsGivesTheSameBits) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  const Case c{5, 2, 64, 96, 7, 30, 13};
  const Result whole = run_case(k, c);
  expect_close(whole);
  ops::AttentionOptions o;
  o.max_window = 2 * 96 * 64 * 2 + 64;  // two KV heads per binding: windows of 2, 2, 1 heads
  ops::KvStoreOptions so;
  so.max_window = 96 * 64 * 2 + 64;     // one KV head per binding
  const Result windowed = run_case(k, c, o, so);
  EXPECT_EQ(windowed.got, whole.got);
}

TEST_P(AttentionVariant, TokenStridesSkipPaddingInQAndOut) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  vk::Device& dev = test::device();
  const uint32_t D = 8, n_kv = 1, n_q = 2, n_tokens = 3, n_ctx = 8;
  const uint32_t q_stride = n_q * D + 5, o_stride = n_q * D + 3;
  std::vector<float> kv = test::random_floats(size_t(n_tokens) * n_kv * D, 21);
  std::vector<float> q_packed = test::random_floats(size_t(n_tokens) * n_q * D, 22);
  std::vector<float> q_strided(size_t(n_tokens) * q_stride, 0.0f);
  for (uint32_t i = 0; i < n_tokens; ++i)
    for (uint32_t e = 0; e < n_q * D; ++e) q_strided[i * q_stride + e] = q_packed[i * n_q * D + e];
  vk::Buffer kb = dev.create_buffer(size_t(n_kv) * n_ctx * D * 2, vk::BufferKind::Device, "K cache");
  vk::Buffer vb = dev.create_buffer(size_t(n_kv) * n_ctx * D * 2, vk::BufferKind::Device, "V cache");
  vk::Buffer srcb = test::make_buffer(dev, kv, "K/V new");
  vk::Buffer qb = test::make_buffer(dev, q_strided, "Q");
  std::vector<float> sentinel(size_t(n_tokens) * o_stride, -7.0f);
  vk::Buffer ob = test::make_buffer(dev, sentinel, "out");
  const ops::KvCache cache{n_kv, n_ctx, D, &kb, 0, &vb, 0};
  ops::AttentionOptions o;
  o.q_stride = q_stride;
  o.o_stride = o_stride;
  test::run_on(dev, [&](vk::CommandBuffer& cb) {
    ops::kv_store(k, cb, cache, srcb, 0, srcb, 0, n_tokens, 0);
    cb.barrier();  // attention reads the stored rows
    ops::attention(k, cb, cache, {n_tokens, n_q, 0, 0.5f}, qb, 0, ob, 0, o);
  });
  std::vector<uint16_t> bits(kv.size());
  ref::kv_store(kv, n_tokens, 0, {n_kv, n_tokens, D}, bits);
  std::vector<float> kf(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) kf[i] = fp16_to_fp32(bits[i]);
  const std::vector<float> want = ref::attention(q_packed, kf, kf, {n_kv, n_tokens, D}, n_tokens, n_q, 0, 0.5f);
  const std::vector<float> got_strided = dev.download<float>(ob, sentinel.size());
  std::vector<float> got(want.size());
  for (uint32_t i = 0; i < n_tokens; ++i) {
    for (uint32_t e = 0; e < n_q * D; ++e) got[i * n_q * D + e] = got_strided[i * o_stride + e];
    for (uint32_t e = n_q * D; e < o_stride; ++e) EXPECT_EQ(got_strided[i * o_stride + e], -7.0f) << "padding written";
  }
  EXPECT_LE(test::nmse(want, got), kTolerance);
}

// One decode step of one layer recorded once with p0 read from a host-visible word: kv_store
// of the new K/V row, a barrier, attention. Each step() rewrites p0, the new row and q from
// the host and replays the same command buffer; the host mirror of the cache follows.
// skip_to() fills positions the steps jumped over from the host (as a prefill would).
class ReplayedDecode {
 public:
  static constexpr uint64_t kP0Offset = 8;  // not a multiple of the binding alignment

  ReplayedDecode(ops::Kernels& k, uint32_t n_kv_heads, uint32_t ratio, uint32_t head_dim, uint32_t n_ctx,
                 const ops::AttentionOptions& opts = {}, ops::KvStoreOptions store_opts = {})
      : k_(k),
        s_{n_kv_heads, n_ctx, head_dim},
        n_q_(n_kv_heads * ratio),
        row_(size_t(n_kv_heads) * head_dim),
        k_cache_(size_t(n_kv_heads) * n_ctx * head_dim, kF16Nan),
        v_cache_(k_cache_.size(), kF16Nan),
        kb_(make_cache("K cache")),
        vb_(make_cache("V cache")),
        p0b_(host_words(dev(), std::vector<uint32_t>{0}, kP0Offset, "p0")),
        knb_(dev().create_buffer(4 * row_, vk::BufferKind::Host, "K new")),
        vnb_(dev().create_buffer(4 * row_, vk::BufferKind::Host, "V new")),
        qb_(dev().create_buffer(4 * size_t(n_q_) * head_dim, vk::BufferKind::Host, "Q")),
        ob_(dev().create_buffer(4 * size_t(n_q_) * head_dim, vk::BufferKind::Device, "out")),
        cb_(dev()) {
    const ops::KvCache cache{n_kv_heads, n_ctx, head_dim, &kb_, kCacheOffset, &vb_, kCacheOffset};
    ops::AttentionShape shape{1, n_q_, 0, 1.0f / std::sqrt(float(head_dim))};
    shape.p0_buffer = store_opts.p0_buffer = &p0b_;
    shape.p0_offset = store_opts.p0_offset = kP0Offset;
    scale_ = shape.scale;
    cb_.begin();
    ops::kv_store(k_, cb_, cache, knb_, 0, vnb_, 0, 1, 0, store_opts);
    cb_.barrier();  // attention reads the row kv_store wrote
    ops::attention(k_, cb_, cache, shape, qb_, 0, ob_, 0, opts);
    cb_.end();
  }

  // Runs the recorded step at position p0 with rows drawn from seed; returns the output and
  // the reference, and checks the cache bit for bit.
  Result step(uint32_t p0, uint64_t seed) {
    const std::vector<float> k_new = test::random_floats(row_, seed + 1, 2.0f);
    const std::vector<float> v_new = test::random_floats(row_, seed + 2);
    const std::vector<float> q = test::random_floats(size_t(n_q_) * s_.head_dim, seed + 3);
    std::memcpy(p0b_.mapped() + kP0Offset, &p0, 4);
    std::memcpy(knb_.mapped(), k_new.data(), 4 * k_new.size());
    std::memcpy(vnb_.mapped(), v_new.data(), 4 * v_new.size());
    std::memcpy(qb_.mapped(), q.data(), 4 * q.size());
    dev().run(cb_);

    ref::kv_store(k_new, 1, p0, s_, k_cache_);
    ref::kv_store(v_new, 1, p0, s_, v_cache_);
    EXPECT_EQ(dev().download<uint16_t>(kb_, k_cache_.size(), kCacheOffset), k_cache_) << "kv_store wrote different K bits";
    EXPECT_EQ(dev().download<uint16_t>(vb_, v_cache_.size(), kCacheOffset), v_cache_) << "kv_store wrote different V bits";
    std::vector<float> kf(k_cache_.size()), vf(v_cache_.size());
    for (size_t i = 0; i < kf.size(); ++i) {
      kf[i] = fp16_to_fp32(k_cache_[i]);
      vf[i] = fp16_to_fp32(v_cache_[i]);
    }
    Result r;
    r.want = ref::attention(q, kf, vf, s_, 1, n_q_, p0, scale_);
    r.got = dev().download<float>(ob_, q.size());
    return r;
  }

  // Stores random rows at positions [from, to) through the host mirror.
  void skip_to(uint32_t from, uint32_t to, uint64_t seed) {
    if (to <= from) return;
    ref::kv_store(test::random_floats((to - from) * row_, seed + 1, 2.0f), to - from, from, s_, k_cache_);
    ref::kv_store(test::random_floats((to - from) * row_, seed + 2), to - from, from, s_, v_cache_);
    dev().upload(kb_, kCacheOffset, std::as_bytes(std::span<const uint16_t>(k_cache_)));
    dev().upload(vb_, kCacheOffset, std::as_bytes(std::span<const uint16_t>(v_cache_)));
  }

  uint32_t dispatches() const { return cb_.dispatches(); }

 private:
  vk::Device& dev() const { return k_.device(); }
  vk::Buffer make_cache(const std::string& tag) {
    std::vector<uint8_t> bytes(kCacheOffset + k_cache_.size() * 2 + 4, 0);
    std::memcpy(bytes.data() + kCacheOffset, k_cache_.data(), k_cache_.size() * 2);
    return test::make_buffer(dev(), bytes, tag);
  }

  ops::Kernels& k_;
  ref::KvShape s_;
  uint32_t n_q_;
  size_t row_;
  float scale_ = 0;
  std::vector<uint16_t> k_cache_;  // host mirror: [n_kv_heads][n_ctx][head_dim], NaN where never stored
  std::vector<uint16_t> v_cache_;
  vk::Buffer kb_, vb_;  // the device cache, at byte kCacheOffset
  vk::Buffer p0b_;      // the p0 word at byte kP0Offset
  vk::Buffer knb_, vnb_, qb_, ob_;
  vk::CommandBuffer cb_;
};

// FNV-1a of the output bits, recorded so runs under different LP_NUM_THREADS can be compared.
uint64_t fnv1a(std::span<const float> x, uint64_t h) {
  const auto* b = reinterpret_cast<const unsigned char*>(x.data());
  for (size_t i = 0; i < x.size_bytes(); ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

TEST_P(AttentionVariant, OneRecordedDecodeStepWithADeviceP0ReplaysForPositions0To40AndTheContextsEnd) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  ReplayedDecode d(k, 3, 3, 64, 100);  // GQA 9 q heads over 3 KV heads
  const uint32_t recorded = d.dispatches();
  uint64_t hash = 14695981039346656037ull;
  std::vector<uint32_t> positions;
  for (uint32_t p0 = 0; p0 <= 40; ++p0) positions.push_back(p0);
  for (uint32_t p0 : {63u, 64u, 65u, 99u}) positions.push_back(p0);  // block edges and the last position
  uint32_t next = 0;
  for (uint32_t p0 : positions) {
    SCOPED_TRACE("p0=" + std::to_string(p0));
    d.skip_to(next, p0, 500 + p0);
    next = p0 + 1;
    const Result r = d.step(p0, 1000 + p0);
    expect_close(r);
    hash = fnv1a(r.got, hash);
  }
  EXPECT_EQ(d.dispatches(), recorded) << "replaying must not record anything";
  RecordProperty("out_fnv1a", std::to_string(hash));
}

TEST_P(AttentionVariant, AReplayedDecodeStepBoundInWindowsOfKvHeadsGivesTheSameBits) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  const uint32_t n_ctx = 96;
  ops::AttentionOptions o;
  o.max_window = 2 * n_ctx * 64 * 2 + 64;  // two KV heads per binding: windows of 2, 2, 1 heads
  ops::KvStoreOptions so;
  so.max_window = n_ctx * 64 * 2 + 64;     // one KV head per binding
  ReplayedDecode whole(k, 5, 2, 64, n_ctx);
  ReplayedDecode windowed(k, 5, 2, 64, n_ctx, o, so);
  for (uint32_t p0 = 0; p0 < n_ctx; p0 += 19) {  // 0, 19, .., 95: each step reads every earlier one
    SCOPED_TRACE("p0=" + std::to_string(p0));
    const uint32_t from = p0 == 0 ? 0 : p0 - 18;
    whole.skip_to(from, p0, 1500 + p0);
    windowed.skip_to(from, p0, 1500 + p0);
    const Result a = whole.step(p0, 2000 + p0);
    const Result b = windowed.step(p0, 2000 + p0);
    expect_close(a);
    EXPECT_EQ(b.got, a.got);
  }
}

TEST_P(AttentionVariant, ADeviceP0GivesTheSameBitsAsThePushConstantP0) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  for (const Case& c : {Case{3, 3, 64, 100, 1, 70, 41}, Case{2, 2, 64, 200, 23, 45, 42}, Case{1, 3, 80, 90, 90, 0, 43}}) {
    SCOPED_TRACE(c.text());
    const Result pushed = run_case(k, c);
    const Result fetched = run_case(k, c, {}, {}, true);
    expect_close(fetched);
    EXPECT_EQ(fetched.got, pushed.got);
  }
}

TEST_P(AttentionVariant, ADeviceP0PastTheContextReadsNoFurtherThanTheCache) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  vk::Device& dev = test::device();
  const uint32_t n_kv = 2, ratio = 2, D = 64, n_ctx = 70;
  const ref::KvShape s{n_kv, n_ctx, D};
  const std::vector<float> kf = test::random_floats(size_t(n_kv) * n_ctx * D, 51), vf = test::random_floats(kf.size(), 52);
  std::vector<uint16_t> kbits(kf.size()), vbits(vf.size());
  ref::kv_store(kf, n_ctx, 0, {n_kv, n_ctx, D}, kbits);  // fills the whole cache (src is [n_ctx][n_kv][D])
  ref::kv_store(vf, n_ctx, 0, {n_kv, n_ctx, D}, vbits);
  // The cache tensors sit between NaN guards: a read past either end would poison the output.
  std::vector<uint16_t> kpad(kbits.size() + 2 * 64, kF16Nan), vpad = kpad;
  std::copy(kbits.begin(), kbits.end(), kpad.begin() + 64);
  std::copy(vbits.begin(), vbits.end(), vpad.begin() + 64);
  vk::Buffer kb = test::make_buffer(dev, kpad, "K cache");
  vk::Buffer vb = test::make_buffer(dev, vpad, "V cache");
  const std::vector<float> q = test::random_floats(size_t(n_kv) * ratio * D, 53);
  vk::Buffer qb = test::make_buffer(dev, q, "Q");
  vk::Buffer ob = dev.create_buffer(4 * q.size(), vk::BufferKind::Device, "out");
  const ops::KvCache cache{n_kv, n_ctx, D, &kb, 128, &vb, 128};
  std::vector<float> kr(kbits.size()), vr(vbits.size());
  for (size_t i = 0; i < kr.size(); ++i) {
    kr[i] = fp16_to_fp32(kbits[i]);
    vr[i] = fp16_to_fp32(vbits[i]);
  }
  const std::vector<float> want = ref::attention(q, kr, vr, s, 1, n_kv * ratio, n_ctx - 1, 0.125f);
  for (uint32_t p0 : {n_ctx, n_ctx + 1000, 0xFFFFFFFFu}) {
    SCOPED_TRACE("p0=" + std::to_string(p0));
    const uint32_t word[] = {p0};
    vk::Buffer p0b = host_words(dev, word, 0, "p0");
    ops::AttentionShape shape{1, n_kv * ratio, 0, 0.125f};
    shape.p0_buffer = &p0b;
    test::run_on(dev, [&](vk::CommandBuffer& cb) { ops::attention(k, cb, cache, shape, qb, 0, ob, 0); });
    const std::vector<float> got = dev.download<float>(ob, q.size());
    EXPECT_LE(test::nmse(want, got), kTolerance) << "the clamped query must attend to the whole cache";
  }
}

TEST_P(KvStoreVariant, StoresHalfRowsAtTheirPositionsAndLeavesTheRestAlone) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  ASSERT_EQ(k.variant("kv_store").name, GetParam()->name);
  vk::Device& dev = test::device();
  const uint32_t n_kv = 3, D = 80, n_ctx = 33, n_tokens = 5, p0 = 7, stride = n_kv * D + 6;
  const ref::KvShape s{n_kv, n_ctx, D};
  std::vector<float> src = test::random_floats(size_t(n_tokens) * stride, 31, 100.0f);
  src[3] = 1e6f;          // beyond f16: inf
  src[4] = 1e-7f;         // subnormal in f16
  src[5] = -0.0f;
  std::vector<float> packed(size_t(n_tokens) * n_kv * D);
  for (uint32_t i = 0; i < n_tokens; ++i)
    for (uint32_t e = 0; e < n_kv * D; ++e) packed[i * n_kv * D + e] = src[i * stride + e];
  std::vector<uint16_t> want(size_t(n_kv) * n_ctx * D, 0xABCD);
  vk::Buffer kb = test::make_buffer(dev, want, "K cache");
  vk::Buffer vb = test::make_buffer(dev, want, "V cache");
  vk::Buffer srcb = test::make_buffer(dev, src, "src");
  ops::KvStoreOptions o;
  o.src_stride = stride;
  const ops::KvCache cache{n_kv, n_ctx, D, &kb, 0, &vb, 0};
  // K and V from the same strided rows: both caches must come out identical.
  test::run_on(dev, [&](vk::CommandBuffer& cb) {
    ops::kv_store(k, cb, cache, srcb, 0, srcb, 0, n_tokens, p0, o);
  });
  ref::kv_store(packed, n_tokens, p0, s, want);
  EXPECT_EQ(dev.download<uint16_t>(kb, want.size()), want);
  EXPECT_EQ(dev.download<uint16_t>(vb, want.size()), want);
}

TEST_P(KvStoreVariant, RejectsPositionsPastTheContext) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  vk::Device& dev = test::device();
  vk::Buffer kb = dev.create_buffer(2 * 8 * 8, vk::BufferKind::Device, "K cache");
  vk::Buffer src = dev.create_buffer(4 * 8 * 4, vk::BufferKind::Device, "src");
  const ops::KvCache cache{1, 8, 8, &kb, 0, &kb, 0};
  vk::CommandBuffer cb(dev);
  cb.begin();
  EXPECT_THROW(ops::kv_store(k, cb, cache, src, 0, src, 0, 4, 5), vk::Error);
  cb.end();
}

TEST_P(KvStoreVariant, DropsRowsWhoseDevicePositionReachesTheContext) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  vk::Device& dev = test::device();
  const uint32_t n_kv = 2, D = 8, n_ctx = 12, n_tokens = 5;
  const ref::KvShape s{n_kv, n_ctx, D};
  const std::vector<float> src = test::random_floats(size_t(n_tokens) * n_kv * D, 61);
  const ops::KvCache cache{n_kv, n_ctx, D, nullptr, 0, nullptr, 0};
  for (uint32_t p0 : {n_ctx - 2, n_ctx, 0xFFFFFFFFu}) {
    SCOPED_TRACE("p0=" + std::to_string(p0));
    // Guard words after the cache catch writes past its end.
    std::vector<uint16_t> want(size_t(n_kv) * n_ctx * D + 64, 0xABCD);
    vk::Buffer kb = test::make_buffer(dev, want, "K cache");
    vk::Buffer vb = test::make_buffer(dev, want, "V cache");
    vk::Buffer srcb = test::make_buffer(dev, src, "src");
    const uint32_t word[] = {p0};
    vk::Buffer p0b = host_words(dev, word, 12, "p0");
    ops::KvStoreOptions o;
    o.p0_buffer = &p0b;
    o.p0_offset = 12;
    ops::KvCache c = cache;
    c.k = &kb;
    c.v = &vb;
    test::run_on(dev, [&](vk::CommandBuffer& cb) { ops::kv_store(k, cb, c, srcb, 0, srcb, 0, n_tokens, 0, o); });
    if (p0 < n_ctx) {
      const uint32_t kept = n_ctx - p0;  // rows that fit
      ref::kv_store(std::span<const float>(src).first(size_t(kept) * n_kv * D), kept, p0, s, want);
    }
    EXPECT_EQ(dev.download<uint16_t>(kb, want.size()), want);
    EXPECT_EQ(dev.download<uint16_t>(vb, want.size()), want);
  }
}

TEST_P(KvStoreVariant, RejectsAMisplacedP0Word) {
  ops::Kernels k(test::device(), GetParam()->requires_caps);
  vk::Device& dev = test::device();
  vk::Buffer kb = dev.create_buffer(2 * 8 * 8, vk::BufferKind::Device, "K cache");
  vk::Buffer src = dev.create_buffer(4 * 8 * 4, vk::BufferKind::Device, "src");
  vk::Buffer p0b = dev.create_buffer(16, vk::BufferKind::Host, "p0");
  const ops::KvCache cache{1, 8, 8, &kb, 0, &kb, 0};
  vk::CommandBuffer cb(dev);
  cb.begin();
  for (uint64_t offset : {2ull, 16ull}) {  // misaligned; past the end
    SCOPED_TRACE("p0_offset=" + std::to_string(offset));
    ops::KvStoreOptions o;
    o.p0_buffer = &p0b;
    o.p0_offset = offset;
    EXPECT_THROW(ops::kv_store(k, cb, cache, src, 0, src, 0, 1, 0, o), vk::Error);
    ops::AttentionShape shape{1, 1, 0, 1.0f};
    shape.p0_buffer = &p0b;
    shape.p0_offset = offset;
    EXPECT_THROW(ops::attention(k, cb, cache, shape, src, 0, src, 0), vk::Error);
  }
  ops::KvStoreOptions o;
  o.p0_buffer = &p0b;
  EXPECT_THROW(ops::kv_store(k, cb, cache, src, 0, src, 0, 9, 0, o), vk::Error) << "more tokens than the context";
  cb.end();
}

// rope_store (the decode step's fused RoPE + cache store): Q rotated in place as ops::rope's
// reference does, K rotated and V stored as f16 at each token's position (ref::rope then
// ref::kv_store), both RoPE styles, a partial rotation (n_dims < head_dim), tokens at
// non-consecutive positions, one position outside the context (stores nothing), and the
// cache words of other positions untouched. Q within the rope tolerance of test_ops (nmse
// 1e-8); the f16 caches within one rounding of the reference (nmse 1e-6 of their values).
class RopeStore : public test::GpuTest {};

TEST_F(RopeStore, RotatesQInPlaceAndStoresRotatedKAndVAtEachTokensPosition) {
  vk::Device& dev = test::device();
  ops::Kernels k(dev);
  const uint32_t n_q = 4, n_kv = 2, D = 16, n_ctx = 40, T = 3;
  const ref::KvShape s{n_kv, n_ctx, D};
  for (bool neox : {false, true}) {
    for (uint32_t n_dims : {D, 8u}) {
      SCOPED_TRACE(std::string(neox ? "neox" : "normal") + " n_dims=" + std::to_string(n_dims));
      const std::vector<int32_t> positions = {5, 45, 17};  // 45: outside the context
      const uint32_t qn = T * n_q * D, kvn = T * n_kv * D;
      const std::vector<float> qkv = test::random_floats(qn + 2 * kvn, 71 + n_dims + (neox ? 1 : 0));
      vk::Buffer xb = test::make_buffer(dev, qkv, "qkv");
      vk::Buffer pb = test::make_buffer(dev, positions, "positions");
      std::vector<uint16_t> kwant(size_t(n_kv) * n_ctx * D, 0xABCD), vwant = kwant;
      vk::Buffer kb = test::make_buffer(dev, kwant, "K cache");
      vk::Buffer vb = test::make_buffer(dev, vwant, "V cache");
      ops::RopeStoreShape shape;
      shape.n_tokens = T;
      shape.n_q_heads = n_q;
      shape.n_dims = n_dims;
      shape.neox = neox;
      shape.freq_base = 10000.0f;
      const ops::KvCache cache{n_kv, n_ctx, D, &kb, 0, &vb, 0};
      test::run_on(dev, [&](vk::CommandBuffer& cb) {
        ops::rope_store(k, cb, cache, xb, 0, 4ull * qn, 4ull * (qn + kvn), pb, 0, shape);
      });
      const std::span<const float> q(qkv.data(), qn), kk(qkv.data() + qn, kvn), vv(qkv.data() + qn + kvn, kvn);
      const std::vector<float> q_want = ref::rope(q, positions, n_q, D, n_dims, neox, 10000.0f, 1.0f);
      const std::vector<float> k_rot = ref::rope(kk, positions, n_kv, D, n_dims, neox, 10000.0f, 1.0f);
      for (uint32_t t = 0; t < T; ++t) {
        if (positions[t] >= static_cast<int32_t>(n_ctx)) continue;  // outside the context: not stored
        ref::kv_store(std::span<const float>(k_rot).subspan(size_t(t) * n_kv * D, n_kv * D), 1, positions[t], s, kwant);
        ref::kv_store(vv.subspan(size_t(t) * n_kv * D, n_kv * D), 1, positions[t], s, vwant);
      }
      EXPECT_LE(test::nmse(q_want, dev.download<float>(xb, qn)), 1e-8);
      EXPECT_EQ(dev.download<float>(xb, 2 * kvn, 4ull * qn), std::vector<float>(qkv.begin() + qn, qkv.end()))
          << "K and V sources must be left as they were";
      const std::vector<uint16_t> kgot = dev.download<uint16_t>(kb, kwant.size()),
                                  vgot = dev.download<uint16_t>(vb, vwant.size());
      EXPECT_EQ(vgot, vwant) << "V is stored unrotated, converted as kv_store converts";
      std::vector<float> kw, kg;  // the written K values
      for (size_t i = 0; i < kwant.size(); ++i)
        if (kwant[i] != 0xABCD) {
          kw.push_back(fp16_to_fp32(kwant[i]));
          kg.push_back(fp16_to_fp32(kgot[i]));
        }
      ASSERT_EQ(kw.size(), size_t(2) * n_kv * D) << "two of the three tokens are inside the context";
      EXPECT_LE(test::nmse(kw, kg), 1e-6);
      for (size_t i = 0; i < kwant.size(); ++i)
        ASSERT_EQ(kwant[i] == 0xABCD, kgot[i] == 0xABCD) << "cache word " << i << " written where it should not be, or not written";
    }
  }
}

// rope_store_bias (qwen2's Q/K/V biases added by rope_store): the bits of ops::add of each
// bias and then rope_store, Q in place and both caches, both RoPE styles, a partial rotation
// (Q's unrotated elements get their bias too), a position outside the context; K and V in qkv
// left as they were; biases at unaligned offsets of their own buffers.
TEST_F(RopeStore, WithBiasesGivesTheBitsOfAddingThemFirst) {
  vk::Device& dev = test::device();
  ops::Kernels k(dev);
  const uint32_t n_q = 4, n_kv = 2, D = 16, n_ctx = 40, T = 3;
  for (bool neox : {false, true}) {
    for (uint32_t n_dims : {D, 8u}) {
      SCOPED_TRACE(std::string(neox ? "neox" : "normal") + " n_dims=" + std::to_string(n_dims));
      const std::vector<int32_t> positions = {5, 45, 17};
      const uint32_t qn = T * n_q * D, kvn = T * n_kv * D;
      const std::vector<float> qkv = test::random_floats(qn + 2 * kvn, 91 + n_dims + (neox ? 1 : 0));
      const std::vector<float> bq = test::random_floats(n_q * D, 7), bk = test::random_floats(n_kv * D, 8),
                               bv = test::random_floats(n_kv * D, 9);
      std::vector<float> padded_bq(3, 0.0f);  // Q's bias 12 bytes into its buffer
      padded_bq.insert(padded_bq.end(), bq.begin(), bq.end());
      vk::Buffer pb = test::make_buffer(dev, positions, "positions");
      vk::Buffer bqb = test::make_buffer(dev, padded_bq, "q bias"), bkb = test::make_buffer(dev, bk, "k bias"),
                 bvb = test::make_buffer(dev, bv, "v bias");
      const std::vector<uint16_t> blank(size_t(n_kv) * n_ctx * D, 0xABCD);
      ops::RopeStoreShape shape;
      shape.n_tokens = T;
      shape.n_q_heads = n_q;
      shape.n_dims = n_dims;
      shape.neox = neox;
      struct Out {
        std::vector<float> qkv;
        std::vector<uint16_t> k, v;
      };
      const auto run = [&](bool fused) {
        vk::Buffer xb = test::make_buffer(dev, qkv, "qkv");
        vk::Buffer kb = test::make_buffer(dev, blank, "K cache"), vb = test::make_buffer(dev, blank, "V cache");
        const ops::KvCache cache{n_kv, n_ctx, D, &kb, 0, &vb, 0};
        ops::RopeStoreShape sh = shape;
        if (fused) {
          sh.q_bias = &bqb;
          sh.q_bias_offset = 12;
          sh.k_bias = &bkb;
          sh.v_bias = &bvb;
        }
        test::run_on(dev, [&](vk::CommandBuffer& cb) {
          if (!fused) {
            ops::add(k, cb, xb, 0, bqb, 12, xb, 0, qn, n_q * D);
            ops::add(k, cb, xb, 4ull * qn, bkb, 0, xb, 4ull * qn, kvn, n_kv * D);
            ops::add(k, cb, xb, 4ull * (qn + kvn), bvb, 0, xb, 4ull * (qn + kvn), kvn, n_kv * D);
            cb.barrier();
          }
          ops::rope_store(k, cb, cache, xb, 0, 4ull * qn, 4ull * (qn + kvn), pb, 0, sh);
        });
        return Out{dev.download<float>(xb, qn + 2 * kvn), dev.download<uint16_t>(kb, blank.size()),
                   dev.download<uint16_t>(vb, blank.size())};
      };
      const Out sep = run(false), fused = run(true);
      EXPECT_EQ(std::memcmp(sep.qkv.data(), fused.qkv.data(), 4ull * qn), 0) << "Q differs from add then rope_store";
      EXPECT_EQ(std::vector<float>(fused.qkv.begin() + qn, fused.qkv.end()), std::vector<float>(qkv.begin() + qn, qkv.end()))
          << "K and V sources must be left as they were";
      EXPECT_EQ(sep.k, fused.k) << "the K cache differs from add then rope_store";
      EXPECT_EQ(sep.v, fused.v) << "the V cache differs from add then rope_store";
      size_t written = 0;
      for (uint16_t w : fused.k) written += w != 0xABCD;
      EXPECT_EQ(written, size_t(2) * n_kv * D) << "two of the three tokens are inside the context";
    }
  }
  // Biases go together: one alone is refused.
  vk::Buffer xb = test::make_buffer(dev, std::vector<float>(64), "qkv"), pb = test::make_buffer(dev, std::vector<int32_t>(1), "p");
  vk::Buffer kb = test::make_buffer(dev, std::vector<uint16_t>(64), "K"), vb = test::make_buffer(dev, std::vector<uint16_t>(64), "V");
  const ops::KvCache cache{1, 2, 16, &kb, 0, &vb, 0};
  ops::RopeStoreShape one;
  one.n_q_heads = 1;
  one.q_bias = &xb;
  vk::CommandBuffer cb(dev);
  cb.begin();
  EXPECT_THROW(ops::rope_store(k, cb, cache, xb, 0, 64, 128, pb, 0, one), vk::Error);
  cb.end();
}

// attention_row: the per-row kernel CPU devices decode with (AttentionOptions::per_row).
class AttentionRow : public test::GpuTest {
 protected:
  void SetUp() override {
    test::GpuTest::SetUp();
    if (shaders::select("attention_row", test::device().capabilities()) == nullptr)
      GTEST_SKIP() << "attention_row is registered for CPU devices only, and the test device is not one";
  }
  static ops::AttentionOptions per_row() {
    ops::AttentionOptions o;
    o.per_row = 1;
    return o;
  }
};

// Offsets 20 (a binding skip of a word: K and V read a word at a time) and 16 (whole 16-byte
// words when head_dim is a multiple of 8); head_dim 6 and 100 have rows of 3 and 50 words.
TEST_F(AttentionRow, DecodeMatchesTheReferenceForEveryGqaRatioHeadDimAndCacheAlignment) {
  ops::Kernels k(test::device());
  uint64_t seed = 300;
  for (uint64_t offset : {uint64_t{20}, uint64_t{16}})
    for (uint32_t ratio : {1u, 2u, 3u})
      for (uint32_t head_dim : {6u, 8u, 64u, 100u, 256u})
        for (uint32_t p0 : {0u, 63u, 64u, 200u}) {
          const Case c{3, ratio, head_dim, 256, 1, p0, ++seed};
          SCOPED_TRACE(c.text() + " cache offset " + std::to_string(offset));
          expect_close(run_case(k, c, per_row(), {}, false, offset));
        }
}

TEST_F(AttentionRow, PrefillRowsAndTheEndOfA4096PositionContextMatchTheReference) {
  ops::Kernels k(test::device());
  for (const Case& c : {Case{3, 3, 64, 160, 37, 0, 1}, Case{2, 2, 64, 200, 23, 45, 5}, Case{1, 1, 80, 100, 9, 90, 7},
                        Case{2, 2, 64, 4096, 1, 4095, 8}, Case{1, 4, 128, 4096, 1, 4000, 9}})
    for (uint64_t offset : {uint64_t{20}, uint64_t{0}}) {
      SCOPED_TRACE(c.text() + " cache offset " + std::to_string(offset));
      expect_close(run_case(k, c, per_row(), {}, false, offset));
    }
}

TEST_F(AttentionRow, ASlidingWindowReadsOnlyTheLastWindowPositionsAndADeviceP0GivesTheSameBits) {
  ops::Kernels k(test::device());
  for (const Case& c : {Case{2, 2, 64, 400, 1, 300, 21, 64}, Case{1, 3, 64, 400, 1, 30, 22, 64},
                        Case{1, 4, 256, 200, 1, 150, 24, 1}, Case{2, 2, 64, 300, 70, 100, 23, 50}}) {
    SCOPED_TRACE(c.text());
    const Result r = run_case(k, c, per_row(), {}, false, 16);
    for (float v : r.got) ASSERT_TRUE(std::isfinite(v)) << "a position outside every window was read";
    expect_close(r);
    EXPECT_EQ(run_case(k, c, per_row(), {}, true, 16).got, r.got);
  }
}

// Counts of the pipelines `k` built for `op`.
size_t built(const ops::Kernels& k, const std::string& op) {
  size_t n = 0;
  for (const ops::PipelineKey& key : k.built()) n += key.op == op;
  return n;
}

// A decode step runs attention_row; a prefill of at least 4096 (token, position) pairs
// attention_lanes (from an empty cache, or a shorter batch deep in one); a shorter one the tiled
// kernel (below that neither measured faster).
TEST_F(AttentionRow, CpuDevicesDecodeWithItAndPrefillWithAttentionLanesOrTheTiledKernel) {
  ops::Kernels k(test::device());
  const Case decode{2, 3, 64, 100, 1, 20, 41}, prefill{2, 3, 64, 100, 11, 20, 42};
  expect_close(run_case(k, decode));
  EXPECT_EQ(built(k, "attention_row"), 1u);
  EXPECT_EQ(built(k, "attention"), 0u);
  expect_close(run_case(k, prefill));  // 11 x 31 pairs
  EXPECT_EQ(built(k, "attention"), 1u);
  EXPECT_EQ(built(k, "attention_lanes"), 0u);
  expect_close(run_case(k, Case{1, 3, 64, 300, 63, 0, 43}));  // 3969 pairs
  EXPECT_EQ(built(k, "attention_lanes"), 0u);
  expect_close(run_case(k, Case{1, 3, 64, 300, 64, 0, 44}));  // 4096
  EXPECT_EQ(built(k, "attention_lanes"), 1u);
  const size_t tiled = built(k, "attention");
  expect_close(run_case(k, Case{1, 3, 64, 800, 10, 400, 45}));  // 4100
  EXPECT_EQ(built(k, "attention"), tiled);
  // Asked for on a device that is not a CPU (its capabilities without `cpu`): a clear error.
  ops::Kernels gpu(test::device(), test::device().capabilities() & ~shaders::kCpu);
  try {
    (void)run_case(gpu, decode, per_row());
    FAIL() << "attention_row ran without the cpu capability";
  } catch (const vk::Error& e) {
    EXPECT_NE(std::string(e.what()).find("CPU devices only"), std::string::npos) << e.what();
  }
  // Without it, both shapes run the tiled kernel.
  expect_close(run_case(gpu, decode));
  expect_close(run_case(gpu, prefill));
  EXPECT_EQ(built(gpu, "attention_row") + built(gpu, "attention_lanes"), 0u);
  EXPECT_EQ(built(gpu, "attention"), 2u);  // the decode tile and the prefill tile
}

// attention_lanes: the kernel CPU devices prefill with (AttentionOptions::lanes): a subgroup's
// lanes take cache positions, R rows per workgroup (4 for head_dim up to 64, else 1), partial softmaxes
// combined with subgroup reductions.
class AttentionLanes : public test::GpuTest {
 protected:
  void SetUp() override {
    test::GpuTest::SetUp();
    if (shaders::select("attention_lanes", test::device().capabilities()) == nullptr)
      GTEST_SKIP() << "attention_lanes is registered for CPU devices only, and the test device is not one";
  }
  static ops::AttentionOptions lanes() {
    ops::AttentionOptions o;
    o.lanes = 1;
    return o;
  }
};

// Row counts that fill the last tile partly (37 tokens x 3 = 111 rows), head_dim 6 and 100
// (rows of 3 and 50 words: read a word at a time), 80 and 256 (1 row per workgroup),
// cache offsets 20 (a word skip) and 16 (whole 16-byte words), decode rows (one token: fewer
// rows than a tile) and positions fewer than the subgroup's lanes.
TEST_F(AttentionLanes, PrefillAndDecodeMatchTheReferenceForEveryGqaRatioHeadDimAndCacheAlignment) {
  ops::Kernels k(test::device());
  uint64_t seed = 500;
  for (uint64_t offset : {uint64_t{20}, uint64_t{16}})
    for (uint32_t ratio : {1u, 2u, 3u})
      for (uint32_t head_dim : {6u, 8u, 64u, 80u, 100u, 256u})
        for (const auto& [n_tokens, p0] : {std::pair{37u, 0u}, std::pair{5u, 2u}, std::pair{1u, 0u}, std::pair{1u, 130u},
                                           std::pair{20u, 64u}}) {
          const Case c{3, ratio, head_dim, 200, n_tokens, p0, ++seed};
          SCOPED_TRACE(c.text() + " cache offset " + std::to_string(offset));
          expect_close(run_case(k, c, lanes(), {}, false, offset));
        }
}

TEST_F(AttentionLanes, A512TokenPrefillAndTheEndOfA4096PositionContextMatchTheReference) {
  ops::Kernels k(test::device());
  for (const Case& c : {Case{1, 3, 64, 600, 512, 40, 11}, Case{2, 2, 64, 4096, 1, 4095, 8},
                        Case{1, 4, 128, 4096, 3, 4000, 9}, Case{3, 3, 64, 300, 17, 130, 6}}) {
    SCOPED_TRACE(c.text());
    expect_close(run_case(k, c, lanes(), {}, false, 16));
  }
}

// Scores of tens, as real models give (attention sinks): each lane's maximum differs from the
// row's by far more than in the uniform cases, so the lanes' rescaling at the end carries weight.
TEST_F(AttentionLanes, APeakedSoftmaxMatchesTheReferenceAsCloselyAsTheTiledKernel) {
  ops::Kernels k(test::device());
  ops::Kernels tiled(test::device(), test::device().capabilities() & ~shaders::kCpu);
  for (float amp : {10.0f, 40.0f}) {
    Case c{1, 3, 64, 600, 512, 0, 31};
    c.q_amp = amp;
    SCOPED_TRACE(c.text() + " q_amp " + std::to_string(amp));
    const Result got = run_case(k, c, lanes(), {}, false, 16);
    const Result base = run_case(tiled, c, {}, {}, false, 16);
    expect_close(got);
    EXPECT_LE(test::nmse(got.want, got.got), 2 * test::nmse(base.want, base.got) + 1e-14);
  }
}

TEST_F(AttentionLanes, ASlidingWindowReadsOnlyTheLastWindowPositionsAndADeviceP0GivesTheSameBits) {
  ops::Kernels k(test::device());
  // Rows whose windows start in different blocks of lanes, a window of 1, Gemma 3's shape.
  for (const Case& c : {Case{2, 2, 64, 300, 70, 100, 23, 50}, Case{3, 1, 80, 200, 100, 0, 26, 17},
                        Case{1, 4, 256, 700, 40, 600, 25, 512}, Case{1, 3, 64, 400, 30, 200, 27, 1},
                        Case{2, 2, 64, 400, 1, 300, 21, 64}}) {
    SCOPED_TRACE(c.text());
    const Result r = run_case(k, c, lanes(), {}, false, 16);
    for (float v : r.got) ASSERT_TRUE(std::isfinite(v)) << "a position outside every window was read";
    expect_close(r);
    EXPECT_EQ(run_case(k, c, lanes(), {}, true, 16).got, r.got);
  }
}

// The variant for CPU devices without subgroup arithmetic: the lanes' partials combined through
// shared memory after a barrier, 8 lanes per workgroup.
TEST_F(AttentionLanes, TheVariantWithoutSubgroupsMatchesTheReference) {
  ops::Kernels k(test::device(), test::device().capabilities() & ~shaders::kSubgroup);
  ASSERT_EQ(k.variant("attention_lanes").requires_caps, uint32_t{shaders::kCpu});
  for (const Case& c : {Case{3, 3, 64, 160, 37, 0, 61}, Case{2, 2, 100, 200, 20, 64, 62}, Case{1, 4, 256, 300, 40, 200, 63},
                        Case{2, 2, 64, 300, 70, 100, 64, 50}, Case{1, 3, 64, 4096, 1, 4000, 65}}) {
    SCOPED_TRACE(c.text());
    const Result r = run_case(k, c, lanes(), {}, false, 20);
    for (float v : r.got) ASSERT_TRUE(std::isfinite(v)) << "a position outside every window was read";
    expect_close(r);
  }
}

TEST_F(AttentionLanes, ACacheBoundInWindowsOfKvHeadsGivesTheSameBits) {
  ops::Kernels k(test::device());
  const Case c{5, 2, 64, 96, 7, 30, 13};
  const Result whole = run_case(k, c, lanes());
  expect_close(whole);
  ops::AttentionOptions o = lanes();
  o.max_window = 2 * 96 * 64 * 2 + 64;  // two KV heads per binding: windows of 2, 2, 1 heads
  ops::KvStoreOptions so;
  so.max_window = 96 * 64 * 2 + 64;     // one KV head per binding
  EXPECT_EQ(run_case(k, c, o, so).got, whole.got);
}

TEST_F(AttentionLanes, AskingForItWithoutTheCapabilitiesOrWithAttentionRowIsAClearError) {
  const Case c{2, 3, 64, 100, 11, 20, 42};
  ops::Kernels gpu(test::device(), test::device().capabilities() & ~shaders::kCpu);
  try {
    (void)run_case(gpu, c, lanes());
    FAIL() << "attention_lanes ran without the cpu capability";
  } catch (const vk::Error& e) {
    EXPECT_NE(std::string(e.what()).find("registered for CPU devices"), std::string::npos) << e.what();
  }
  ops::Kernels k(test::device());
  ops::AttentionOptions both = lanes();
  both.per_row = 1;
  try {
    (void)run_case(k, c, both);
    FAIL() << "attention_row and attention_lanes were both accepted";
  } catch (const vk::Error& e) {
    EXPECT_NE(std::string(e.what()).find("both asked for"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(EveryVariant, AttentionVariant, ::testing::ValuesIn(shaders::variants_of("attention")),
                         variant_name);
INSTANTIATE_TEST_SUITE_P(EveryVariant, KvStoreVariant, ::testing::ValuesIn(shaders::variants_of("kv_store")),
                         variant_name);

}  // namespace
}  // namespace chorus
