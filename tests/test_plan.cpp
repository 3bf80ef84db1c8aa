// The split planner: exact plans for the cases, and properties over many
// (shape, ratios, KV-sharing) combinations — every dimension tiled exactly once, K splits on
// whole quantisation blocks, each share within one unit of the ratio, every Q head beside its
// KV head, byte accounting that adds up, and nothing silently dropped.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "split/memory.h"
#include "split/plan.h"

namespace chorus::split {
namespace {

constexpr MatrixFormat F32{1, 4, 1};
constexpr MatrixFormat F16{1, 2, 1};
constexpr MatrixFormat Q4_1{32, 20, 1};
constexpr MatrixFormat Q5_0{32, 22, 1};
constexpr MatrixFormat Q8_0{32, 34, 1};
constexpr MatrixFormat Q4_K{256, 144, 1};
constexpr MatrixFormat Q6_K{256, 210, 1};

LayerFormats uniform(MatrixFormat f) { return {f, f, f, f, f, f, f}; }

ModelShape shape(uint32_t n_layer, uint32_t n_embd, uint32_t n_head, uint32_t n_head_kv, uint32_t head_dim,
                 uint32_t n_ff, uint32_t n_vocab, MatrixFormat f, bool tied) {
  ModelShape m;
  m.n_layer = n_layer;
  m.n_embd = n_embd;
  m.n_head = n_head;
  m.n_head_kv = n_head_kv;
  m.head_dim = head_dim;
  m.n_ff = n_ff;
  m.n_vocab = n_vocab;
  m.tied_output = tied;
  m.token_embd = f;
  m.output = f;
  m.set_all_layers(uniform(f));
  return m;
}

ModelShape stories260k() { return shape(5, 64, 8, 4, 8, 172, 512, F32, true); }
ModelShape smollm2_q4_1() { return shape(30, 576, 9, 3, 64, 1536, 49152, Q4_1, true); }
// Q4_K_M style: K = 576 is not whole 256-blocks, so those matrices fall back to Q5_0; ffn_down
// (K = 1536) is Q4_K, every other layer Q6_K; an untied F16 LM head.
ModelShape smollm2_q4_k_m() {
  ModelShape m = shape(6, 576, 9, 3, 64, 1536, 49152, Q5_0, false);
  m.output = F16;
  for (uint32_t l = 0; l < m.n_layer; ++l) m.layers[l].ffn_down = l % 2 ? Q4_K : Q6_K;
  return m;
}
// attn_output in 256-blocks over 128-wide heads in groups of 3: one block spans 2 heads.
ModelShape k_quant_wide_groups() { return shape(2, 1536, 12, 4, 128, 4096, 1000, Q4_K, false); }
// MHA with 96-wide heads in 256-blocks (Phi-3-like): one block boundary every 8 heads.
ModelShape mha_k_quant_hd96() { return shape(2, 3072, 32, 32, 96, 8192, 32064, Q4_K, false); }
ModelShape four_devices_two_kv() { return shape(3, 512, 8, 2, 64, 1408, 1000, Q8_0, false); }
ModelShape llama_gqa_k_quant() { return shape(2, 4096, 32, 8, 128, 14336, 128256, Q4_K, false); }
ModelShape qwen2_bias() {
  ModelShape m = shape(3, 896, 14, 2, 64, 4864, 151936, Q8_0, true);
  m.qkv_bias = true;
  return m;
}
ModelShape mha_f16() { return shape(2, 384, 6, 6, 64, 1000, 777, F16, false); }

struct NamedShape {
  const char* name;
  ModelShape model;
};

std::vector<NamedShape> shapes() {
  return {{"stories260K", stories260k()},   {"SmolLM2 Q4_1", smollm2_q4_1()},
          {"SmolLM2 Q4_K_M", smollm2_q4_k_m()}, {"8 heads / 2 KV heads Q8_0", four_devices_two_kv()},
          {"Llama GQA Q4_K", llama_gqa_k_quant()}, {"qwen2 with bias", qwen2_bias()},
          {"MHA F16", mha_f16()}, {"K-quant, 2 heads per block", k_quant_wide_groups()},
          {"MHA head_dim 96 K-quant", mha_k_quant_hd96()}};
}

std::vector<std::vector<double>> ratio_sets() {
  return {{1},       {1, 1},          {3, 1},       {1, 1, 1},    {5, 3, 1},          {2, 1},
          {1, 1, 1, 1}, {1000, 1},    {1, 1000},    {100000, 1},  {0.24, 0.12},       {7, 1, 1, 1, 3},
          {1, 2, 3, 4, 5, 6, 7, 8},   {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}};
}

Plan tensor_plan(const ModelShape& m, const std::vector<double>& r, KvSharing kv = KvSharing::automatic) {
  return plan_split(m, {SplitMode::tensor, r, 0, kv});
}

template <class Get>
void expect_tiles(const Plan& p, uint64_t total, Get get, const char* what) {
  uint64_t at = 0;
  for (size_t d = 0; d < p.devices.size(); ++d) {
    const Range r = get(p.devices[d]);
    EXPECT_EQ(r.begin, at) << what << ": gap or overlap before device " << d;
    EXPECT_LE(r.begin, r.end) << what << " of device " << d;
    at = r.end;
  }
  EXPECT_EQ(at, total) << what << " not covered to the end";
}

// Each shard within one unit of its exact share of the whole units; the last shard also
// absorbs the remainder that is not a whole unit.
void expect_ratio(const Plan& p, uint64_t total, uint64_t unit, Range (*get)(const DeviceShard&), const char* what) {
  const double whole = double(total - total % unit);
  for (size_t d = 0; d < p.devices.size(); ++d) {
    const double exact = p.devices[d].ratio * whole;
    const double slack = double(unit) + (d + 1 == p.devices.size() ? double(total % unit) : 0.0);
    EXPECT_LE(std::abs(double(get(p.devices[d]).size()) - exact), slack + 1e-9)
        << what << " of device " << d << " is " << get(p.devices[d]).size() << ", exact share " << exact;
  }
}

// Some warning contains `text` (and `also`, when given).
bool mentions(const Plan& p, const std::string& text, const std::string& also = "") {
  for (const std::string& w : p.warnings)
    if (w.find(text) != std::string::npos && w.find(also) != std::string::npos) return true;
  return false;
}

// Every property the issue states for a tensor plan.
void expect_tensor_properties(const Plan& p) {
  const ModelShape& m = p.model;
  const uint64_t g = m.group();
  ASSERT_EQ(p.mode, SplitMode::tensor);

  // Tiling exactly once.
  expect_tiles(p, m.n_head, [](const DeviceShard& s) { return s.q_heads; }, "Q heads");
  expect_tiles(p, m.n_ff, [](const DeviceShard& s) { return s.ffn; }, "ffn");
  expect_tiles(p, m.n_vocab, [](const DeviceShard& s) { return s.vocab; }, "vocab");
  if (!p.kv_shared) expect_tiles(p, m.n_head_kv, [](const DeviceShard& s) { return s.kv_heads; }, "KV heads");
  ASSERT_EQ(p.kv_replicas.size(), m.n_head_kv);
  for (uint32_t h = 0; h < m.n_head_kv; ++h) {
    uint32_t holders = 0;
    for (const DeviceShard& s : p.devices) holders += h >= s.kv_heads.begin && h < s.kv_heads.end;
    EXPECT_EQ(p.kv_replicas[h], holders) << "KV head " << h;
    EXPECT_GE(holders, 1u) << "KV head " << h << " is held by no device";
    if (!p.kv_shared) {
      EXPECT_EQ(holders, 1u) << "KV head " << h << " duplicated without sharing";
    }
  }

  for (size_t d = 0; d < p.devices.size(); ++d) {
    const DeviceShard& s = p.devices[d];
    // GQA consistency: every Q head's KV head is on its device, and no KV head is held idly.
    for (uint64_t h = s.q_heads.begin; h < s.q_heads.end; ++h) {
      EXPECT_GE(h / g, s.kv_heads.begin) << "device " << d << " Q head " << h;
      EXPECT_LT(h / g, s.kv_heads.end) << "device " << d << " Q head " << h;
      const uint64_t local = h - s.q_heads.begin;
      EXPECT_EQ(s.kv_heads.begin + (local + s.q_skew(static_cast<uint32_t>(g))) / g, h / g);
    }
    if (s.q_heads.size()) {
      EXPECT_EQ(s.kv_heads.begin, s.q_heads.begin / g);
      EXPECT_EQ(s.kv_heads.end, (s.q_heads.end + g - 1) / g);
    } else {
      EXPECT_EQ(s.kv_heads.size(), 0u);
    }
    EXPECT_EQ(s.q_rows, (Range{s.q_heads.begin * m.head_dim, s.q_heads.end * m.head_dim}));
    EXPECT_EQ(s.kv_rows, (Range{s.kv_heads.begin * m.head_dim, s.kv_heads.end * m.head_dim}));

    // Alignment: K splits on whole blocks of every layer; row splits on row_align.
    for (const LayerFormats& f : m.layers) {
      EXPECT_EQ(s.q_rows.begin % f.attn_output.block, 0u) << "device " << d;
      EXPECT_EQ(s.q_rows.end % f.attn_output.block, 0u) << "device " << d;
      EXPECT_EQ(s.ffn.begin % f.ffn_down.block, 0u) << "device " << d;
      EXPECT_EQ(s.ffn.end % f.ffn_down.block, 0u) << "device " << d;
    }
    if (d + 1 < p.devices.size()) {
      EXPECT_EQ(s.ffn.end % p.ffn_unit, 0u);
      EXPECT_EQ(s.vocab.end % p.vocab_unit, 0u);
      EXPECT_EQ((p.kv_shared ? s.q_heads.end : s.kv_heads.end) % p.head_unit, 0u);
    }

    // Nothing silently dropped.
    const std::string who = "device " + std::to_string(d) + " ";
    if (s.empty()) {
      EXPECT_NE(std::find(p.empty_devices.begin(), p.empty_devices.end(), d), p.empty_devices.end());
      EXPECT_TRUE(mentions(p, who + "(")) << who << "is empty but not reported";
    } else {
      EXPECT_EQ(std::find(p.empty_devices.begin(), p.empty_devices.end(), d), p.empty_devices.end());
      if (!s.q_heads.size()) {
        EXPECT_TRUE(mentions(p, who + "(", "gets no attention heads")) << who;
      }
      if (!s.ffn.size()) {
        EXPECT_TRUE(mentions(p, who + "(", "gets no FFN rows")) << who;
      }
      if (!s.vocab.size()) {
        EXPECT_TRUE(mentions(p, who + "(", "gets no vocabulary rows")) << who;
      }
    }
  }
  if (p.head_unit > 1) {
    EXPECT_TRUE(mentions(p, "head shards move in steps of"));
  }

  // Ratio within one unit per dimension.
  if (p.kv_shared)
    expect_ratio(p, m.n_head, p.head_unit, [](const DeviceShard& s) { return s.q_heads; }, "Q heads");
  else
    expect_ratio(p, m.n_head_kv, p.head_unit, [](const DeviceShard& s) { return s.kv_heads; }, "KV heads");
  expect_ratio(p, m.n_ff, p.ffn_unit, [](const DeviceShard& s) { return s.ffn; }, "ffn");
  expect_ratio(p, m.n_vocab, p.vocab_unit, [](const DeviceShard& s) { return s.vocab; }, "vocab");

  // Bytes: the split parts add up to one copy when nothing is shared, and follow the ratio
  // within one unit (plus remainder) of each dimension.
  const std::vector<DeviceBytes> bytes = weight_bytes(p);
  const DeviceBytes whole = model_bytes(m);
  DeviceBytes sum;
  for (const DeviceBytes& b : bytes) {
    sum.attention += b.attention;
    sum.ffn += b.ffn;
    sum.lm_head += b.lm_head;
  }
  bool any_shared = false;
  for (uint32_t r : p.kv_replicas) any_shared |= r > 1;
  if (!any_shared) {
    EXPECT_EQ(sum.attention, whole.attention);
    EXPECT_EQ(sum.ffn, whole.ffn);
    EXPECT_EQ(sum.lm_head, whole.lm_head);
    EXPECT_EQ(sum.split(), whole.split());
    const uint64_t n_head_dim = p.kv_shared ? m.n_head : m.n_head_kv;
    const double attn_per_head = double(whole.attention) / double(n_head_dim);
    const double slack = attn_per_head * double(p.head_unit + n_head_dim % p.head_unit) +
                         double(whole.ffn) / double(m.n_ff) * double(p.ffn_unit + m.n_ff % p.ffn_unit) +
                         double(whole.lm_head) / double(m.n_vocab) * double(p.vocab_unit + m.n_vocab % p.vocab_unit);
    for (size_t d = 0; d < bytes.size(); ++d)
      EXPECT_LE(std::abs(double(bytes[d].split()) - p.devices[d].ratio * double(whole.split())), slack + 1)
          << "device " << d << " holds " << bytes[d].split() << " of " << whole.split() << " split bytes";
  } else {
    EXPECT_GT(sum.attention, whole.attention);
    EXPECT_EQ(sum.ffn, whole.ffn);
    EXPECT_EQ(sum.lm_head, whole.lm_head);
  }
  for (size_t d = 0; d < bytes.size(); ++d) {
    EXPECT_EQ(bytes[d].embedding, p.devices[d].empty() ? 0 : whole.embedding);
    EXPECT_LE(bytes[d].total(), whole.total()) << "device " << d << " holds a full copy";
  }
}

TEST(SplitPlan, TensorPlansHoldEveryPropertyOverManyShapesAndRatios) {
  for (const NamedShape& s : shapes())
    for (const std::vector<double>& r : ratio_sets())
      for (KvSharing kv : {KvSharing::automatic, KvSharing::never, KvSharing::always}) {
        const Plan p = tensor_plan(s.model, r, kv);
        SCOPED_TRACE(std::string(s.name) + ", sharing " + std::to_string(int(kv)) + "\n" + describe(p));
        expect_tensor_properties(p);
        if (HasFailure()) return;
      }
}

TEST(SplitPlan, ThreeToOneOnStoriesGivesThreeKvHeadsAndThreeQuartersOfEachDimensionToTheFirstDevice) {
  const Plan p = tensor_plan(stories260k(), {3, 1});
  EXPECT_FALSE(p.kv_shared);
  EXPECT_EQ(p.devices[0].kv_heads, (Range{0, 3}));
  EXPECT_EQ(p.devices[0].q_heads, (Range{0, 6}));
  EXPECT_EQ(p.devices[1].q_heads, (Range{6, 8}));
  EXPECT_EQ(p.devices[1].q_rows, (Range{48, 64}));
  EXPECT_EQ(p.devices[0].ffn, (Range{0, 129}));
  EXPECT_EQ(p.devices[1].ffn, (Range{129, 172}));
  EXPECT_EQ(p.devices[0].vocab, (Range{0, 384}));
  EXPECT_TRUE(p.warnings.empty()) << describe(p);
}

TEST(SplitPlan, EvenSplitOfStoriesHoldsHalfOfEveryF32MatrixPerDevice) {
  const Plan p = tensor_plan(stories260k(), {1, 1});
  const std::vector<DeviceBytes> b = weight_bytes(p);
  // Per layer: attn_q 32 rows + attn_k/v 16 rows each of 64 F32, attn_output 64 rows x 32 K.
  const uint64_t attention = 5 * (32 * 64 * 4 + 2 * 16 * 64 * 4 + 64 * 32 * 4);
  // Per layer: ffn_gate/up 86 rows of 64, ffn_down 64 rows x 86 K.
  const uint64_t ffn = 5 * (2 * 86 * 64 * 4 + 64 * 86 * 4);
  for (int d = 0; d < 2; ++d) {
    EXPECT_EQ(b[d].attention, attention);
    EXPECT_EQ(b[d].ffn, ffn);
    EXPECT_EQ(b[d].lm_head, 0u) << "tied: the LM head slice is part of the embedding every device holds";
    EXPECT_EQ(b[d].embedding, 512u * 64 * 4);
    EXPECT_EQ(b[d].norms, (5 * 2 + 1) * 64u * 4);
  }
}

TEST(SplitPlan, TwoToOneOnSmolLm2SplitsNineHeadsSixAndThreeOnWholeKvHeads) {
  const Plan p = tensor_plan(smollm2_q4_1(), {2, 1});
  EXPECT_FALSE(p.kv_shared);
  EXPECT_EQ(p.devices[0].kv_heads, (Range{0, 2}));
  EXPECT_EQ(p.devices[0].q_heads, (Range{0, 6}));
  EXPECT_EQ(p.devices[1].kv_heads, (Range{2, 3}));
  EXPECT_EQ(p.devices[1].q_heads, (Range{6, 9}));
  EXPECT_EQ(p.ffn_unit, 32u);
  EXPECT_EQ(p.devices[0].ffn, (Range{0, 1024}));
  EXPECT_EQ(p.devices[0].vocab, (Range{0, 32768}));
}

// Whole KV heads would give two equal devices 6 and 3 Q heads (2 and 1 KV heads): 16 units of
// attention weights against 8, and every layer's reduce waits for the 16. Dividing Q heads 5 and
// 4, KV head 1 on both, gives 14 and 12: the automatic choice shares.
TEST(SplitPlan, EvenSplitOfSmolLm2SharesAKvHeadSoTheAttentionIsNearlyEven) {
  const Plan p = tensor_plan(smollm2_q4_1(), {1, 1});
  EXPECT_TRUE(p.kv_shared) << describe(p);
  EXPECT_EQ(p.devices[0].q_heads, (Range{0, 5}));
  EXPECT_EQ(p.devices[1].q_heads, (Range{5, 9}));
  EXPECT_EQ(p.devices[0].kv_heads, (Range{0, 2}));
  EXPECT_EQ(p.devices[1].kv_heads, (Range{1, 3}));
  EXPECT_EQ(p.kv_replicas, (std::vector<uint32_t>{1, 2, 1}));
  EXPECT_EQ(p.devices[0].ffn, (Range{0, 768}));
  // Asked for whole heads, the plan gives them.
  const Plan whole = tensor_plan(smollm2_q4_1(), {1, 1}, KvSharing::never);
  EXPECT_FALSE(whole.kv_shared);
  EXPECT_EQ(whole.devices[0].q_heads, (Range{0, 6}));
  // Where whole heads already divide evenly (stories260K: 4 KV heads), nothing is shared.
  EXPECT_FALSE(tensor_plan(stories260k(), {1, 1}).kv_shared);
}

TEST(SplitPlan, FiveThreeOneOnThreeKvHeadsLeavesTheSmallestDeviceWithoutHeadsAndSaysSo) {
  const Plan p = tensor_plan(smollm2_q4_1(), {5, 3, 1});
  EXPECT_FALSE(p.kv_shared);
  EXPECT_EQ(p.devices[0].kv_heads, (Range{0, 2}));
  EXPECT_EQ(p.devices[1].kv_heads, (Range{2, 3}));
  EXPECT_EQ(p.devices[2].q_heads.size(), 0u);
  EXPECT_EQ(p.devices[0].ffn, (Range{0, 864}));
  EXPECT_EQ(p.devices[1].ffn, (Range{864, 1376}));
  EXPECT_EQ(p.devices[2].ffn, (Range{1376, 1536}));
  EXPECT_TRUE(p.empty_devices.empty());
  EXPECT_TRUE(mentions(p, "device 2 (11.1%) gets no attention heads")) << describe(p);
}

TEST(SplitPlan, FiveThreeOneWithKvSharingDividesQHeadsExactlyAndSharesTheCutKvHeads) {
  const Plan p = tensor_plan(smollm2_q4_1(), {5, 3, 1}, KvSharing::always);
  EXPECT_TRUE(p.kv_shared);
  EXPECT_EQ(p.devices[0].q_heads, (Range{0, 5}));
  EXPECT_EQ(p.devices[1].q_heads, (Range{5, 8}));
  EXPECT_EQ(p.devices[2].q_heads, (Range{8, 9}));
  EXPECT_EQ(p.devices[0].kv_heads, (Range{0, 2}));
  EXPECT_EQ(p.devices[1].kv_heads, (Range{1, 3}));
  EXPECT_EQ(p.devices[2].kv_heads, (Range{2, 3}));
  EXPECT_EQ(p.kv_replicas, (std::vector<uint32_t>{1, 2, 2}));
  EXPECT_EQ(p.devices[1].q_skew(3), 2u);  // local Q heads 0..2 are global 5..7: kv 1, 2, 2
  EXPECT_TRUE(mentions(p, "KV head 1 is held by devices 0, 1")) << describe(p);
  EXPECT_TRUE(mentions(p, "KV head 2 is held by devices 1, 2")) << describe(p);
}

TEST(SplitPlan, FourDevicesOnTwoKvHeadsShareEachKvHeadBetweenTwoDevices) {
  const Plan p = tensor_plan(four_devices_two_kv(), {1, 1, 1, 1});
  EXPECT_TRUE(p.kv_shared);
  for (uint32_t d = 0; d < 4; ++d) {
    EXPECT_EQ(p.devices[d].q_heads, (Range{2 * d, 2 * d + 2}));
    EXPECT_EQ(p.devices[d].kv_heads, (Range{d / 2, d / 2 + 1}));
  }
  EXPECT_EQ(p.kv_replicas, (std::vector<uint32_t>{2, 2}));
  EXPECT_EQ(p.devices[1].q_skew(4), 2u);
  EXPECT_TRUE(mentions(p, "Q heads are divided instead")) << describe(p);
  // Each device holds a full copy of its KV head's cache: the cache sums to twice one copy.
  uint64_t cache = 0;
  for (uint32_t d = 0; d < 4; ++d) cache += kv_cache_bytes(p, d, 100, 2);
  EXPECT_EQ(cache, 2 * kv_cache_bytes(plan_split(four_devices_two_kv(), {SplitMode::none, {1}}), 0, 100, 2));
}

TEST(SplitPlan, WholeKvHeadsShardTheKvCacheWithoutDuplication) {
  const ModelShape m = llama_gqa_k_quant();
  const Plan p = tensor_plan(m, {5, 3, 1});
  EXPECT_FALSE(p.kv_shared);
  uint64_t cache = 0;
  for (uint32_t d = 0; d < 3; ++d) cache += kv_cache_bytes(p, d, 64, 2);
  EXPECT_EQ(cache, uint64_t(m.n_layer) * 2 * m.n_head_kv * m.head_dim * 64 * 2);
}

TEST(SplitPlan, KQuantAttentionOutputMovesHeadBoundariesInStepsOfWholeBlocksAndSaysSo) {
  // attn_output K = 12 x 128 in 256-element blocks; a KV group is 3 x 128 = 384 wide, so KV-head
  // boundaries fall on blocks every 2 KV heads, Q-head boundaries every 2 Q heads.
  const Plan two = tensor_plan(k_quant_wide_groups(), {1, 1});
  EXPECT_FALSE(two.kv_shared);
  EXPECT_EQ(two.head_unit, 2u);
  EXPECT_EQ(two.devices[0].kv_heads, (Range{0, 2}));
  EXPECT_EQ(two.devices[0].q_rows, (Range{0, 768}));
  EXPECT_TRUE(mentions(two, "head shards move in steps of 2")) << describe(two);
  // Three devices: two KV-head units are too few, so Q heads are divided (in steps of 2).
  const Plan three = tensor_plan(k_quant_wide_groups(), {1, 1, 1});
  EXPECT_TRUE(three.kv_shared);
  EXPECT_EQ(three.devices[0].q_heads, (Range{0, 4}));
  EXPECT_EQ(three.devices[1].q_heads, (Range{4, 8}));
  EXPECT_EQ(three.devices[1].kv_heads, (Range{1, 3}));
  EXPECT_EQ(three.kv_replicas, (std::vector<uint32_t>{1, 2, 2, 1}));
  // Forced whole KV heads: the middle device's share rounds to nothing and it is told so.
  const Plan whole = tensor_plan(k_quant_wide_groups(), {1, 1, 1}, KvSharing::never);
  EXPECT_EQ(whole.devices[1].q_heads.size(), 0u);
  EXPECT_TRUE(mentions(whole, "device 1 (33.3%) gets no attention heads")) << describe(whole);
}

TEST(SplitPlan, KQuantFfnDownAlignsTheCommonFfnRangeToItsBlocksInEveryLayer) {
  const Plan p = tensor_plan(smollm2_q4_k_m(), {2, 1});
  EXPECT_EQ(p.ffn_unit, 256u);
  EXPECT_EQ(p.devices[0].ffn, (Range{0, 1024}));
  EXPECT_EQ(p.devices[1].ffn, (Range{1024, 1536}));
}

TEST(SplitPlan, ThousandToOneGivesTheSmallDeviceNoHeadsNorFfnAndReportsEachDimension) {
  const Plan p = tensor_plan(stories260k(), {1000, 1});
  const DeviceShard& s = p.devices[1];
  EXPECT_EQ(s.q_heads.size(), 0u);
  EXPECT_EQ(s.ffn.size(), 0u);
  EXPECT_EQ(s.vocab.size(), 1u);  // 512 / 1001 of the vocabulary rounds to one row
  EXPECT_TRUE(mentions(p, "device 1 (0.1%) gets no attention heads")) << describe(p);
  EXPECT_TRUE(mentions(p, "device 1 (0.1%) gets no FFN rows")) << describe(p);
}

TEST(SplitPlan, PostNormsAreCountedOnEveryDeviceRunningTheLayerEvenWithoutAShareOfItsBlocks) {
  ModelShape m = stories260k();
  m.post_norms = true;  // gemma3: the reduced sums are normed on every device that adds them
  const Plan p = tensor_plan(m, {1000, 1});
  ASSERT_EQ(p.devices[1].q_heads.size(), 0u);
  ASSERT_EQ(p.devices[1].ffn.size(), 0u);
  ASSERT_EQ(p.devices[1].layers.size(), 5u);
  const std::vector<DeviceBytes> b = weight_bytes(p);
  // Device 0: attn_norm, ffn_norm and both post-norms per layer, output_norm.
  EXPECT_EQ(b[0].norms, (5 * 4 + 1) * 64u * 4);
  // Device 1: both post-norms per layer, output_norm (it has vocabulary rows).
  EXPECT_EQ(b[1].norms, (5 * 2 + 1) * 64u * 4);
  EXPECT_EQ(weight_bytes(tensor_plan(stories260k(), {1000, 1}))[1].norms, 64u * 4) << "without post-norms";
}

TEST(SplitPlan, ExpertsHoldTheirFfnSliceOfEveryExpertAndTheWholeRouterOnEveryDeviceWithAnFfnRange) {
  // Qwen3-30B-A3B's shape (Q4_K everywhere for the arithmetic): 128 experts of n_ff 768, k 8.
  ModelShape m = shape(48, 2048, 32, 4, 128, 768, 151936, Q4_K, false);
  m.n_expert = 128;
  m.n_expert_used = 8;
  for (LayerFormats& f : m.layers) f.ffn_gate_inp = F32;
  const Plan p = tensor_plan(m, {2, 1});
  ASSERT_EQ(p.ffn_unit, 256u);  // ffn_down's K blocks
  const std::vector<DeviceBytes> b = weight_bytes(p);
  const uint64_t router = 48ull * 2048 * 128 * 4;
  uint64_t ffn = 0;
  for (size_t d = 0; d < 2; ++d) {
    const uint64_t rows = p.devices[d].ffn.size();
    ASSERT_GT(rows, 0u);
    // gate and up: `rows` rows of 2048 (8 Q4_K blocks); down: 2048 rows of rows / 256 blocks; per expert.
    EXPECT_EQ(b[d].ffn, 48ull * 128 * (2 * rows * 8 * 144 + 2048 * (rows / 256) * 144)) << "device " << d;
    EXPECT_EQ(b[d].router, router) << "device " << d << " holds the whole router";
    ffn += b[d].ffn;
  }
  const DeviceBytes one = model_bytes(m);
  EXPECT_EQ(ffn, one.ffn) << "the slices add up to one copy of every expert";
  EXPECT_EQ(one.router, router);
  EXPECT_EQ(one.total() - one.split(), one.embedding + one.norms + router);
  EXPECT_TRUE(describe(p).find("of each of 128 experts") != std::string::npos) << describe(p);
}

TEST(SplitPlan, ADeviceWhoseShareRoundsToNothingEverywhereIsListedAsEmpty) {
  const Plan p = tensor_plan(stories260k(), {100000, 1});
  EXPECT_EQ(p.empty_devices, (std::vector<uint32_t>{1}));
  EXPECT_TRUE(p.devices[1].empty());
  EXPECT_EQ(weight_bytes(p)[1].total(), 0u);
  EXPECT_TRUE(mentions(p, "device 1 (0.0%) holds nothing")) << describe(p);
  const Plan first = tensor_plan(stories260k(), {1, 100000});
  EXPECT_EQ(first.empty_devices, (std::vector<uint32_t>{0}));
}

TEST(SplitPlan, QwenBiasesFollowTheirRowsAndUntiedLmHeadsAreSplitByVocabulary) {
  const ModelShape m = qwen2_bias();
  const Plan p = tensor_plan(m, {1, 1});
  const std::vector<DeviceBytes> b = weight_bytes(p);
  const DeviceBytes whole = model_bytes(m);
  EXPECT_EQ(b[0].attention + b[1].attention, whole.attention);
  ModelShape no_bias = m;
  no_bias.qkv_bias = false;
  EXPECT_EQ(whole.attention - model_bytes(no_bias).attention, uint64_t(m.n_layer) * (14 + 2 * 2) * 64 * 4);

  const ModelShape untied = mha_f16();
  const Plan q = tensor_plan(untied, {3, 1});
  const std::vector<DeviceBytes> c = weight_bytes(q);
  EXPECT_EQ(q.devices[0].vocab, (Range{0, 583}));
  EXPECT_EQ(c[0].lm_head, 583u * 384 * 2);
  EXPECT_EQ(c[1].lm_head, (777u - 583) * 384 * 2);
}

TEST(SplitPlan, LayerModeGivesContiguousLayersByRatioWithTheEmbeddingFirstAndTheLmHeadLast) {
  const Plan p = plan_split(stories260k(), {SplitMode::layer, {3, 1}});
  EXPECT_EQ(p.devices[0].layers, (Range{0, 4}));
  EXPECT_EQ(p.devices[1].layers, (Range{4, 5}));
  EXPECT_EQ(p.embedding_device, 0u);
  EXPECT_EQ(p.lm_head_device, 1u);
  EXPECT_TRUE(p.devices[0].embedding);
  EXPECT_EQ(p.devices[1].vocab, (Range{0, 512}));
  EXPECT_EQ(p.devices[0].vocab.size(), 0u);
  ASSERT_EQ(p.transfers.size(), 1u);
  EXPECT_EQ(p.transfers[0].layer, 4u);
  EXPECT_EQ(p.transfers[0].from, 0u);
  EXPECT_EQ(p.transfers[0].to, 1u);
  EXPECT_TRUE(mentions(p, "tied to token_embd: devices 0 and 1 both hold")) << describe(p);
}

TEST(SplitPlan, LayerModeSkipsADeviceWithNoLayersAndReportsIt) {
  ModelShape m = four_devices_two_kv();  // 3 layers on 4 devices
  const Plan p = plan_split(m, {SplitMode::layer, {1, 1, 1, 1}});
  EXPECT_EQ(p.empty_devices.size(), 1u);
  EXPECT_TRUE(mentions(p, "gets no layers")) << describe(p);
  EXPECT_EQ(p.transfers.size(), 2u);
}

TEST(SplitPlan, LayerPlansTileLayersAndTheirBytesAddUpToOneCopy) {
  for (const NamedShape& s : shapes())
    for (const std::vector<double>& r : ratio_sets()) {
      const Plan p = plan_split(s.model, {SplitMode::layer, r});
      SCOPED_TRACE(std::string(s.name) + "\n" + describe(p));
      const ModelShape& m = s.model;
      expect_tiles(p, m.n_layer, [](const DeviceShard& d) { return d.layers; }, "layers");
      expect_ratio(p, m.n_layer, 1, [](const DeviceShard& d) { return d.layers; }, "layers");
      std::vector<uint32_t> held;
      for (uint32_t d = 0; d < p.devices.size(); ++d) {
        const DeviceShard& sh = p.devices[d];
        if (sh.layers.size() == 0) {
          EXPECT_TRUE(sh.empty());
          continue;
        }
        held.push_back(d);
        EXPECT_EQ(sh.q_heads, (Range{0, m.n_head}));
        EXPECT_EQ(sh.kv_heads, (Range{0, m.n_head_kv}));
        EXPECT_EQ(sh.ffn, (Range{0, m.n_ff}));
      }
      ASSERT_FALSE(held.empty());
      EXPECT_EQ(p.embedding_device, held.front());
      EXPECT_EQ(p.lm_head_device, held.back());
      ASSERT_EQ(p.transfers.size(), held.size() - 1);
      for (size_t i = 0; i < p.transfers.size(); ++i) {
        EXPECT_EQ(p.transfers[i].from, held[i]);
        EXPECT_EQ(p.transfers[i].to, held[i + 1]);
        EXPECT_EQ(p.transfers[i].layer, p.devices[held[i + 1]].layers.begin);
      }
      const std::vector<DeviceBytes> b = weight_bytes(p);
      const DeviceBytes whole = model_bytes(m);
      DeviceBytes sum;
      for (const DeviceBytes& x : b) {
        sum.attention += x.attention;
        sum.ffn += x.ffn;
        sum.norms += x.norms;
        sum.embedding += x.embedding;
        sum.lm_head += x.lm_head;
      }
      EXPECT_EQ(sum.attention, whole.attention);
      EXPECT_EQ(sum.ffn, whole.ffn);
      EXPECT_EQ(sum.norms, whole.norms);
      EXPECT_EQ(sum.embedding, whole.embedding);
      const bool tied_apart = m.tied_output && held.size() > 1;
      EXPECT_EQ(sum.lm_head, tied_apart ? whole.embedding : whole.lm_head);
      if (HasFailure()) return;
    }
}

TEST(SplitPlan, NoneModePutsEverythingOnTheMainDeviceAndLeavesTheOthersUnused) {
  const ModelShape m = smollm2_q4_1();
  const Plan p = plan_split(m, {SplitMode::none, {1, 1, 1}, 1});
  EXPECT_EQ(p.empty_devices, (std::vector<uint32_t>{0, 2}));
  EXPECT_TRUE(p.warnings.empty());
  EXPECT_EQ(weight_bytes(p)[1], model_bytes(m));
  EXPECT_EQ(weight_bytes(p)[0].total(), 0u);
  EXPECT_EQ(p.devices[1].vocab, (Range{0, m.n_vocab}));
}

TEST(SplitPlan, DescriptionHasOneLinePerDeviceWithItsRangesAndBytesThenTheWarnings) {
  const Plan p = tensor_plan(smollm2_q4_1(), {5, 3, 1});
  const std::string text = describe(p);
  EXPECT_NE(text.find("tensor split over 3 devices"), std::string::npos) << text;
  EXPECT_NE(text.find("device 0 (55.6%): layers [0,30), q heads [0,6) 6/9, kv heads [0,2) 2/3, ffn [0,864) 864/1536"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("device 2 (11.1%): layers [0,30), q heads [9,9) 0/9"), std::string::npos) << text;
  EXPECT_NE(text.find("warning: device 2 (11.1%) gets no attention heads"), std::string::npos) << text;
  size_t lines = 0;
  for (char c : text) lines += c == '\n';
  EXPECT_EQ(lines, 1 + 3 + p.warnings.size());
}

TEST(SplitPlan, InconsistentShapesAndBadRequestsAreRejectedNamingTheDefect) {
  const auto message = [](ModelShape m, SplitRequest r) -> std::string {
    try {
      plan_split(m, r);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "(no exception)";
  };
  const SplitRequest two{SplitMode::tensor, {1, 1}};
  ModelShape m = stories260k();
  m.n_head_kv = 3;
  EXPECT_NE(message(m, two).find("not a multiple of n_head_kv"), std::string::npos);
  m = stories260k();
  for (LayerFormats& f : m.layers) f.ffn_down = Q4_K;  // n_ff 172 is not whole 256-blocks
  EXPECT_NE(message(m, two).find("blk.0.ffn_down has K = 172"), std::string::npos) << message(m, two);
  m = stories260k();
  m.layers.pop_back();
  EXPECT_NE(message(m, two).find("4 layer formats for 5 layers"), std::string::npos);
  m = stories260k();
  m.layers[2].attn_k.row_align = 16;
  EXPECT_NE(message(m, two).find("blk.2.attn_k row alignment 16 does not divide head_dim 8"), std::string::npos);
  EXPECT_NE(message(stories260k(), {SplitMode::tensor, {1, -1}}).find("ratio 1"), std::string::npos);
  EXPECT_NE(message(stories260k(), {SplitMode::tensor, {}}).find("no devices"), std::string::npos);
  EXPECT_NE(message(stories260k(), {SplitMode::none, {1, 1}, 2}).find("main device 2"), std::string::npos);
}

TEST(SplitPlan, SplitModesParseFromTheirNamesOnly) {
  EXPECT_EQ(parse_split_mode("none"), SplitMode::none);
  EXPECT_EQ(parse_split_mode("layer"), SplitMode::layer);
  EXPECT_EQ(parse_split_mode("tensor"), SplitMode::tensor);
  EXPECT_STREQ(to_string(SplitMode::tensor), "tensor");
  EXPECT_THROW(parse_split_mode("row"), std::invalid_argument);
}

// ---- fitting into the devices' memory (split/memory.h) ----------------------------------------

uint64_t total_at(const ModelShape& m, const SplitRequest& r, uint32_t n_ctx) {
  return plan_memory(plan_split(m, r), ContextShape{n_ctx, 1, 512, 1})[0].total();
}

std::string describe(const FitResult& r) {
  std::string s = std::string(to_string(r.plan.mode)) + " n_ctx " + std::to_string(r.ctx.n_ctx);
  for (size_t d = 0; d < r.memory.size(); ++d)
    s += "; device " + std::to_string(d) + " ratio " + std::to_string(r.plan.devices[d].ratio) + " total " +
         std::to_string(r.memory[d].total()) + " of " + std::to_string(r.usable[d]);
  return s;
}

TEST(Fit, WhatFitsIsKeptAsAsked) {
  FitRequest fr;
  fr.model = smollm2_q4_1();
  fr.free_bytes = {8ull << 30};
  fr.ctx.n_ctx = 8192;
  const FitResult r = fit(fr);
  EXPECT_TRUE(r.fits);
  EXPECT_EQ(r.ctx.n_ctx, 8192u);
  EXPECT_TRUE(r.notes.empty());
}

TEST(Fit, AContextThatDoesNotFitShrinksToTheLargestThatDoesButNotBelowTheFloor) {
  FitRequest fr;
  fr.model = smollm2_q4_1();
  fr.ctx.n_ctx = 8192;
  fr.n_ctx_min = 1024;
  // Room for about 3000 positions (and the margin usable_bytes keeps).
  const uint64_t need = total_at(fr.model, SplitRequest{SplitMode::none, {1}, 0}, 3000);
  fr.free_bytes = {need + std::max<uint64_t>(kMarginMin, static_cast<uint64_t>(static_cast<double>(need) * 0.06))};
  const FitResult r = fit(fr);
  ASSERT_TRUE(r.fits) << r.refusal;
  EXPECT_GE(r.ctx.n_ctx, 1024u);
  EXPECT_LT(r.ctx.n_ctx, 8192u);
  EXPECT_LE(r.memory[0].total(), r.usable[0]);
  EXPECT_GT(total_at(fr.model, SplitRequest{SplitMode::none, {1}, 0}, r.ctx.n_ctx + 32), r.usable[0])
      << "not the largest that fits";
  ASSERT_EQ(r.notes.size(), 1u);
  EXPECT_NE(r.notes[0].find("context shrunk from 8192 to"), std::string::npos) << r.notes[0];

  fr.n_ctx_min = 8192;  // the floor forbids it: refused, naming the largest context that would fit
  const FitResult refused = fit(fr);
  EXPECT_FALSE(refused.fits);
  EXPECT_NE(refused.refusal.find("device 0 needs"), std::string::npos) << refused.refusal;
  EXPECT_NE(refused.refusal.find("missing"), std::string::npos) << refused.refusal;
  EXPECT_NE(refused.refusal.find("the largest context that fits is"), std::string::npos) << refused.refusal;

  fr.n_ctx_min = 1024;
  fr.fit = false;  // --fit off keeps the request and says what is missing
  const FitResult kept = fit(fr);
  EXPECT_FALSE(kept.fits);
  EXPECT_EQ(kept.ctx.n_ctx, 8192u);
}

TEST(Fit, WeightsThatCannotFitAreRefusedWithTheMissingBytesPerDevice) {
  FitRequest fr;
  fr.model = smollm2_q4_1();
  fr.split.mode = SplitMode::tensor;
  fr.free_bytes = {40ull << 20, 40ull << 20};
  const FitResult r = fit(fr);
  EXPECT_FALSE(r.fits);
  EXPECT_NE(r.refusal.find("device 0 needs"), std::string::npos) << r.refusal;
  EXPECT_NE(r.refusal.find("device 1 needs"), std::string::npos) << r.refusal;
  EXPECT_NE(r.refusal.find("the weights alone do not fit"), std::string::npos) << r.refusal;
}

TEST(Fit, RatiosFollowFreeMemoryAndAreRebalancedWhenTheReplicatedPartsWouldOverflowTheSmallDevice) {
  FitRequest fr;
  fr.model = smollm2_q4_1();
  fr.split.mode = SplitMode::tensor;
  fr.ctx.n_ctx = 1024;
  fr.free_bytes = {400ull << 20, 110ull << 20};
  const FitResult r = fit(fr);
  ASSERT_TRUE(r.fits) << r.refusal;
  for (size_t d = 0; d < 2; ++d) EXPECT_LE(r.memory[d].total(), r.usable[d]) << d;
  EXPECT_GT(r.plan.devices[0].ratio, 0.7);
  // Given ratios are kept: 1:1 overflows the small device, so it is refused rather than changed.
  fr.split.ratios = {1, 1};
  fr.free_bytes = {400ull << 20, 60ull << 20};
  const FitResult kept = fit(fr);
  EXPECT_FALSE(kept.fits) << describe(kept);
  EXPECT_NE(kept.refusal.find("device 1 needs"), std::string::npos) << kept.refusal;
}

TEST(Fit, RatiosFollowSpeedWithinMemoryAndTheTokenTimeIsPredicted) {
  FitRequest fr;
  fr.model = smollm2_q4_1();
  fr.split.mode = SplitMode::tensor;
  fr.ctx.n_ctx = 1024;
  fr.free_bytes = {1ull << 30, 1ull << 30};
  fr.speed = {2e9, 1e9};  // the second device reads weights at half the speed
  FitResult r = fit(fr);
  ASSERT_TRUE(r.fits) << r.refusal;
  EXPECT_NEAR(r.plan.devices[0].ratio, 2.0 / 3, 1e-9);
  EXPECT_NEAR(r.plan.devices[1].ratio, 1.0 / 3, 1e-9);
  EXPECT_DOUBLE_EQ(r.predicted_token_seconds, predict_token_seconds(r.plan, fr.speed));
  // The slower device's share takes about as long as the faster one's: neither waits much.
  const std::vector<DeviceBytes> wb = weight_bytes(r.plan);
  EXPECT_NEAR(static_cast<double>(wb[0].split()) / 2e9, static_cast<double>(wb[1].split()) / 1e9,
              0.25 * static_cast<double>(wb[0].split()) / 2e9);
  EXPECT_GT(r.predicted_token_seconds, static_cast<double>(wb[1].split()) / 1e9 * 0.99);

  // A layer split runs its devices one after another: the prediction is the sum.
  fr.split.mode = SplitMode::layer;
  r = fit(fr);
  const std::vector<DeviceBytes> lb = weight_bytes(r.plan);
  EXPECT_GT(r.predicted_token_seconds, static_cast<double>(lb[0].split()) / 2e9 + static_cast<double>(lb[1].split()) / 1e9 * 0.99);

  // Speed never overrides memory: a fast device too small for its share gets what fits.
  fr.split.mode = SplitMode::tensor;
  fr.free_bytes = {1ull << 30, 90ull << 20};
  fr.speed = {1e9, 4e9};
  r = fit(fr);
  ASSERT_TRUE(r.fits) << r.refusal;
  for (size_t d = 0; d < 2; ++d) EXPECT_LE(r.memory[d].total(), r.usable[d]) << d;
  EXPECT_LT(r.plan.devices[1].ratio, 0.8);
}

TEST(Fit, WhenATensorSplitCannotFitWholeLayersAreTriedUnlessTheUserChoseTheMode) {
  FitRequest fr;
  fr.model = llama_gqa_k_quant();  // an untied head: a layer split holds the embedding once
  fr.split.mode = SplitMode::tensor;
  fr.ctx.n_ctx = 512;
  fr.n_ctx_min = 512;
  // Each device holds the whole embedding (128k rows) in a tensor split; layer shares hold it once.
  FitRequest single = fr;
  single.split.mode = SplitMode::none;
  single.free_bytes = {4ull << 30};
  const uint64_t one = fit(single).memory[0].total();
  fr.free_bytes = {one * 6 / 10 + (8ull << 20), one * 6 / 10 + (8ull << 20)};
  const FitResult r = fit(fr);
  ASSERT_TRUE(r.fits) << r.refusal << "\none device: " << one;
  EXPECT_EQ(r.plan.mode, SplitMode::layer);
  ASSERT_FALSE(r.notes.empty());
  EXPECT_NE(r.notes.back().find("-sm layer"), std::string::npos) << r.notes.back();
  for (size_t d = 0; d < 2; ++d) EXPECT_LE(r.memory[d].total(), r.usable[d]) << d;

  fr.mode_given = true;  // -sm tensor on the command line: refused, describing the tensor split
  const FitResult refused = fit(fr);
  EXPECT_FALSE(refused.fits);
  EXPECT_EQ(refused.plan.mode, SplitMode::tensor);
  EXPECT_NE(refused.refusal.find("missing"), std::string::npos) << refused.refusal;
}

TEST(Fit, AbsurdContextsSaturateInsteadOfWrappingToSomethingThatFits) {
  // 2^24 positions x 2^24 sequences of 2 MiB of KV cache each: 2^69 bytes, more than 64 bits count.
  FitRequest fr;
  fr.model = shape(64, 8192, 64, 64, 128, 1024, 1000, Q8_0, false);
  fr.free_bytes = {UINT64_MAX / 2};
  fr.ctx.n_ctx = 1u << 24;
  fr.ctx.n_seq = 1u << 24;
  fr.n_ctx_min = 1u << 24;
  const FitResult r = fit(fr);
  EXPECT_FALSE(r.fits);
  EXPECT_EQ(r.memory[0].kv_cache, UINT64_MAX);
  EXPECT_EQ(r.memory[0].total(), UINT64_MAX);
}

TEST(Hybrid, GroupsSplitTheLayersAndATensorSplitInsideEachGroup) {
  SplitRequest r{SplitMode::hybrid, {2, 2, 1}, 0};
  r.groups = {0, 0, 1};
  const Plan p = plan_split(stories260k(), r);  // 5 layers: 4 for the pair, 1 for the third
  EXPECT_EQ(p.devices[0].layers, (Range{0, 4}));
  EXPECT_EQ(p.devices[1].layers, (Range{0, 4}));
  EXPECT_EQ(p.devices[2].layers, (Range{4, 5}));
  // Inside the pair, a tensor split of the heads and FFN rows; the third holds its layer whole.
  EXPECT_EQ(p.devices[0].kv_heads.size() + p.devices[1].kv_heads.size(), 4u);
  EXPECT_EQ(p.devices[0].ffn.size() + p.devices[1].ffn.size(), 172u);
  EXPECT_EQ(p.devices[2].kv_heads, (Range{0, 4}));
  // The first group embeds, the last computes every logit.
  EXPECT_TRUE(p.devices[0].embedding && p.devices[1].embedding);
  EXPECT_FALSE(p.devices[2].embedding);
  EXPECT_EQ(p.devices[0].vocab.size() + p.devices[1].vocab.size(), 0u);
  EXPECT_EQ(p.devices[2].vocab, (Range{0, 512}));
  ASSERT_EQ(p.transfers.size(), 1u);
  EXPECT_EQ(p.transfers[0].layer, 4u);
  EXPECT_NE(describe(p).find("groups 0,0,1"), std::string::npos) << describe(p);

  r.groups = {0, 1, 0};
  EXPECT_THROW(plan_split(stories260k(), r), std::invalid_argument);
  r.groups = {0, 0};
  EXPECT_THROW(plan_split(stories260k(), r), std::invalid_argument);
  r.groups = {1, 1, 2};
  EXPECT_THROW(plan_split(stories260k(), r), std::invalid_argument);
}

TEST(Fit, HybridIsChosenOnlyWhenPredictedFasterAndTheNoteSaysWhy) {
  FitRequest fr;
  fr.model = smollm2_q4_1();
  fr.split.mode = SplitMode::tensor;
  fr.ctx.n_ctx = 512;
  fr.free_bytes = {1ull << 30, 1ull << 30, 1ull << 30};
  fr.speed = {2e9, 2e9, 0.2e9};  // two alike, one ten times slower
  // Cheap reduces: a tensor split over all three (shares by speed) is predicted faster.
  fr.reduce_seconds = 10e-6;
  FitResult r = fit(fr);
  ASSERT_TRUE(r.fits) << r.refusal;
  EXPECT_EQ(r.plan.mode, SplitMode::tensor);
  ASSERT_FALSE(r.notes.empty());
  EXPECT_NE(r.notes.back().find("as a hybrid split (groups 0,0,1): tensor kept"), std::string::npos) << r.notes.back();
  // Costly reduces: the lone slow device takes its layers with no reduce at all; the hybrid
  // split saves more than its pipeline costs.
  fr.reduce_seconds = 0.1;
  r = fit(fr);
  ASSERT_TRUE(r.fits) << r.refusal;
  EXPECT_EQ(r.plan.mode, SplitMode::hybrid);
  EXPECT_NE(r.notes.back().find("hybrid chosen"), std::string::npos) << r.notes.back();
  EXPECT_LT(r.predicted_token_seconds, predict_token_seconds(plan_split(fr.model, {SplitMode::tensor, fr.speed, 0}), fr.speed,
                                                             fr.reduce_seconds));
  // The user's mode is kept whatever the prediction.
  fr.mode_given = true;
  r = fit(fr);
  EXPECT_EQ(r.plan.mode, SplitMode::tensor);
}

}  // namespace
}  // namespace chorus::split
