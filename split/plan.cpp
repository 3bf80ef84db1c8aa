#include "split/plan.h"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <stdexcept>

namespace chorus::split {

namespace {

std::string str(uint64_t v) { return std::to_string(v); }

std::string range_str(const Range& r) { return "[" + str(r.begin) + "," + str(r.end) + ")"; }

std::string percent(double ratio) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", ratio * 100);
  return buf;
}

std::string human_bytes(uint64_t b) {
  static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(units)) {
    v /= 1024;
    ++u;
  }
  char buf[48];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
  else
    std::snprintf(buf, sizeof buf, "%.2f %s", v, units[u]);
  return buf;
}

// Bytes of `rows` whole rows of a matrix with K = k.
uint64_t rows_bytes(const MatrixFormat& f, uint64_t k, uint64_t rows) {
  const uint64_t row = (k / f.block) * f.block_bytes;
  return rows * ((row + f.row_bytes_align - 1) / f.row_bytes_align * f.row_bytes_align);
}

// Bytes of the K slice `k` (whole blocks) of every one of `rows` rows.
uint64_t k_slice_bytes(const MatrixFormat& f, const Range& k, uint64_t rows) {
  const uint64_t row = (k.end / f.block - k.begin / f.block) * f.block_bytes;
  if (row == 0) return 0;
  return rows * ((row + f.row_bytes_align - 1) / f.row_bytes_align * f.row_bytes_align);
}

Range scaled(const Range& r, uint64_t by) { return {r.begin * by, r.end * by}; }

void check_format(const MatrixFormat& f, const std::string& name, uint64_t k) {
  if (f.block == 0 || f.block_bytes == 0 || f.row_align == 0 || f.row_bytes_align == 0)
    throw std::invalid_argument("split plan: " + name + " has a zero block size, block bytes or row alignment");
  if (k % f.block != 0)
    throw std::invalid_argument("split plan: " + name + " has K = " + str(k) + ", not a whole number of its " +
                                str(f.block) + "-element quantisation blocks");
}

void check_shape(const ModelShape& m) {
  const auto positive = [](uint32_t v, const char* name) {
    if (v == 0) throw std::invalid_argument(std::string("split plan: model ") + name + " is 0, expected at least 1");
  };
  positive(m.n_layer, "n_layer");
  positive(m.n_embd, "n_embd");
  positive(m.n_head, "n_head");
  positive(m.n_head_kv, "n_head_kv");
  positive(m.head_dim, "head_dim");
  positive(m.n_ff, "n_ff");
  positive(m.n_vocab, "n_vocab");
  if (m.n_head % m.n_head_kv != 0)
    throw std::invalid_argument("split plan: n_head " + str(m.n_head) + " is not a multiple of n_head_kv " +
                                str(m.n_head_kv));
  if (m.layers.size() != m.n_layer)
    throw std::invalid_argument("split plan: " + str(m.layers.size()) + " layer formats for " + str(m.n_layer) +
                                " layers");
  check_format(m.token_embd, "token_embd", m.n_embd);
  if (!m.tied_output) check_format(m.output, "output", m.n_embd);
  const uint64_t n_q = uint64_t(m.n_head) * m.head_dim;
  for (uint32_t l = 0; l < m.n_layer; ++l) {
    const LayerFormats& f = m.layers[l];
    const std::string blk = "blk." + str(l) + ".";
    check_format(f.attn_q, blk + "attn_q", m.n_embd);
    check_format(f.attn_k, blk + "attn_k", m.n_embd);
    check_format(f.attn_v, blk + "attn_v", m.n_embd);
    check_format(f.attn_output, blk + "attn_output", n_q);
    check_format(f.ffn_gate, blk + "ffn_gate", m.n_embd);
    check_format(f.ffn_up, blk + "ffn_up", m.n_embd);
    check_format(f.ffn_down, blk + "ffn_down", m.n_ff);
    if (m.n_expert) check_format(f.ffn_gate_inp, blk + "ffn_gate_inp", m.n_embd);
    for (const auto& [fmt, name] : {std::pair{&f.attn_q, "attn_q"}, {&f.attn_k, "attn_k"}, {&f.attn_v, "attn_v"}})
      if (m.head_dim % fmt->row_align != 0)
        throw std::invalid_argument("split plan: " + blk + name + " row alignment " + str(fmt->row_align) +
                                    " does not divide head_dim " + str(m.head_dim) + " (heads are the split unit)");
  }
}

std::vector<double> normalised(const std::vector<double>& ratios) {
  partition(1, ratios);  // validates: non-empty, positive, finite (throws naming the ratio)
  double sum = 0;
  for (double r : ratios) sum += r;
  std::vector<double> out;
  for (double r : ratios) out.push_back(r / sum);
  return out;
}

Range all(uint64_t n) { return {0, n}; }

// Gives device `d` the whole of every layer in `layers`.
void whole_layers(DeviceShard& s, const ModelShape& m, Range layers) {
  s.layers = layers;
  if (layers.size() == 0) return;
  s.q_heads = all(m.n_head);
  s.kv_heads = all(m.n_head_kv);
  s.q_rows = scaled(s.q_heads, m.head_dim);
  s.kv_rows = scaled(s.kv_heads, m.head_dim);
  s.ffn = all(m.n_ff);
}

void plan_none(Plan& p) {
  const ModelShape& m = p.model;
  DeviceShard& s = p.devices[p.main_device];
  whole_layers(s, m, all(m.n_layer));
  s.vocab = all(m.n_vocab);
  s.embedding = s.output_norm = true;
  p.embedding_device = p.lm_head_device = p.main_device;
  p.kv_replicas.assign(m.n_head_kv, 1);
}

void plan_layer(Plan& p, const std::vector<double>& ratios) {
  const ModelShape& m = p.model;
  const std::vector<Range> layers = partition(m.n_layer, ratios);
  bool first = true;
  uint32_t prev = 0;
  for (uint32_t d = 0; d < layers.size(); ++d) {
    whole_layers(p.devices[d], m, layers[d]);
    if (layers[d].size() == 0) {
      p.warnings.push_back("device " + str(d) + " (" + percent(p.devices[d].ratio) + ") gets no layers: its share of " +
                           str(m.n_layer) + " layers rounds to nothing");
      continue;
    }
    if (first) {
      p.embedding_device = d;
      p.devices[d].embedding = true;
      first = false;
    } else {
      p.transfers.push_back({static_cast<uint32_t>(layers[d].begin), prev, d});
    }
    prev = d;
  }
  p.lm_head_device = prev;
  DeviceShard& last = p.devices[prev];
  last.vocab = all(m.n_vocab);
  last.output_norm = true;
  if (m.tied_output && p.embedding_device != p.lm_head_device)
    p.warnings.push_back("the LM head is tied to token_embd: devices " + str(p.embedding_device) + " and " +
                         str(p.lm_head_device) + " both hold a whole copy of it");
  p.kv_replicas.assign(m.n_head_kv, 1);
}

// Smallest number of heads of width `width` whose total is a whole number of `block`s.
uint64_t heads_per_block(uint64_t block, uint64_t width) { return block / std::gcd(block, width); }

// The most attention weights a member holds per unit of its ratio (the time of the slowest
// member, the ratios being speeds): Q rows and O columns per query head, K and V rows per KV
// head, in head_dim x n_embd elements.
double attention_pace(const ModelShape& m, const std::vector<double>& ratios, const std::vector<Range>& heads, bool shared) {
  const uint64_t g = m.group();
  double sum = 0, pace = 0;
  for (double r : ratios) sum += r;
  for (size_t i = 0; i < ratios.size(); ++i) {
    const Range& h = heads[i];
    const uint64_t q = shared ? h.size() : h.size() * g;
    const uint64_t kv = shared ? (h.size() ? (h.end + g - 1) / g - h.begin / g : 0) : h.size();
    pace = std::max(pace, double(2 * q + 2 * kv) / (ratios[i] / sum));
  }
  return pace;
}

// Whether dividing Q heads (sharing the KV heads a cut group needs) gives the slowest member at
// least 5% less attention than whole KV heads do. Every layer's attention is followed by a
// reduce that waits for the slowest member, so its share must be even on its own: SmolLM2's
// 3 KV heads over two equal devices are 6 and 3 Q heads whole, 5 and 4 shared (one KV head
// on both), 16 against 14 units on the slower device.
bool sharing_evens_attention(const ModelShape& m, const std::vector<double>& ratios, uint64_t unit_kv, uint64_t unit_q) {
  const double whole = attention_pace(m, ratios, partition(m.n_head_kv, ratios, unit_kv), false);
  const double shared = attention_pace(m, ratios, partition(m.n_head, ratios, unit_q), true);
  return shared < 0.95 * whole;
}

// A tensor split of `layers` over the devices `members` (plan indices) by `ratios` (one per
// member): the whole of a tensor split, or one group of a hybrid split. `embed`: the members
// look tokens up (the first group); `head`: they compute the logits (the last group).
void tensor_group(Plan& p, const std::vector<uint32_t>& members, const std::vector<double>& ratios, KvSharing sharing,
                  Range layers, bool embed, bool head) {
  const ModelShape& m = p.model;
  const uint32_t n_dev = static_cast<uint32_t>(ratios.size());
  const uint64_t g = m.group();
  // Units: attn_output's K blocks (per layer; the plan uses one range for all layers).
  uint64_t unit_kv = 1, unit_q = 1, block_o = 1, unit_ff = 1;
  for (const LayerFormats& f : m.layers) {
    block_o = std::lcm(block_o, uint64_t(f.attn_output.block));
    unit_kv = std::lcm(unit_kv, heads_per_block(f.attn_output.block, g * m.head_dim));
    unit_q = std::lcm(unit_q, heads_per_block(f.attn_output.block, m.head_dim));
    unit_ff = std::lcm(unit_ff, std::lcm(uint64_t(f.ffn_down.block), std::lcm(uint64_t(f.ffn_gate.row_align),
                                                                               uint64_t(f.ffn_up.row_align))));
  }
  const uint64_t unit_vocab = m.tied_output ? m.token_embd.row_align : m.output.row_align;
  const bool shared = sharing == KvSharing::always ||
                      (sharing == KvSharing::automatic && g > 1 &&
                       (m.n_head_kv / unit_kv < n_dev || sharing_evens_attention(m, ratios, unit_kv, unit_q)));
  p.kv_shared = shared;
  p.head_unit = static_cast<uint32_t>(shared ? unit_q : unit_kv);
  p.ffn_unit = static_cast<uint32_t>(unit_ff);
  p.vocab_unit = static_cast<uint32_t>(unit_vocab);

  const std::vector<Range> heads = partition(shared ? m.n_head : m.n_head_kv, ratios, p.head_unit);
  const std::vector<Range> ffn = partition(m.n_ff, ratios, unit_ff);
  const std::vector<Range> vocab = head ? partition(m.n_vocab, ratios, unit_vocab) : std::vector<Range>(n_dev);
  p.kv_replicas.resize(m.n_head_kv, 0);
  for (uint32_t i = 0; i < n_dev; ++i) {
    const uint32_t d = members[i];
    DeviceShard& s = p.devices[d];
    if (shared) {
      s.q_heads = heads[i];
      s.kv_heads = s.q_heads.size() == 0 ? Range{s.q_heads.begin / g, s.q_heads.begin / g}
                                         : Range{s.q_heads.begin / g, (s.q_heads.end + g - 1) / g};
    } else {
      s.kv_heads = heads[i];
      s.q_heads = scaled(s.kv_heads, g);
    }
    s.q_rows = scaled(s.q_heads, m.head_dim);
    s.kv_rows = scaled(s.kv_heads, m.head_dim);
    s.ffn = ffn[i];
    s.vocab = vocab[i];
    for (uint64_t h = s.kv_heads.begin; h < s.kv_heads.end; ++h) ++p.kv_replicas[h];
    // A device with any share keeps the residual stream through every layer of the group (it
    // adds the reduced sums), so the first group's need the embedding for the first residual.
    if (s.q_heads.size() || s.ffn.size() || s.vocab.size()) {
      s.layers = layers;
      s.embedding = embed;
      s.output_norm = s.vocab.size() > 0;
    }
  }

  const std::string dev_word = str(n_dev) + " devices";
  if (p.head_unit > 1)
    p.warnings.push_back("attn_output's " + str(block_o) + "-element blocks span " + str(p.head_unit) +
                         (shared ? " Q heads" : " KV heads") + " of " + str(m.head_dim) +
                         ": head shards move in steps of " + str(p.head_unit) +
                         ", to the nearest allowed boundary of the requested share");
  if (shared) {
    p.warnings.push_back((sharing == KvSharing::always ? "KV sharing requested"
                                                        : str(m.n_head_kv) + " KV heads in units of " + str(unit_kv) +
                                                              " are too few for " + dev_word) +
                         ": Q heads are divided instead and a KV head whose group is cut is shared");
    for (uint32_t h = 0; h < m.n_head_kv; ++h) {
      if (p.kv_replicas[h] < 2) continue;
      std::string who;
      for (const uint32_t d : members) {
        const Range& r = p.devices[d].kv_heads;
        if (h >= r.begin && h < r.end) who += (who.empty() ? "" : ", ") + str(d);
      }
      p.warnings.push_back("KV head " + str(h) + " is held by devices " + who +
                           " (each a full copy of its K/V weight rows and KV cache)");
    }
  }
  for (const uint32_t d : members) {
    const DeviceShard& s = p.devices[d];
    const std::string who = "device " + str(d) + " (" + percent(s.ratio) + ")";
    if (s.empty()) continue;  // reported once below
    if (s.q_heads.size() == 0)
      p.warnings.push_back(who + " gets no attention heads: its share of " +
                           str(shared ? m.n_head : m.n_head_kv) + (shared ? " Q heads" : " KV heads") +
                           " in units of " + str(p.head_unit) + " rounds to nothing");
    if (s.ffn.size() == 0)
      p.warnings.push_back(who + " gets no FFN rows: its share of n_ff " + str(m.n_ff) + " in units of " +
                           str(unit_ff) + " rounds to nothing");
    if (head && s.vocab.size() == 0)
      p.warnings.push_back(who + " gets no vocabulary rows: its share of " + str(m.n_vocab) + " rounds to nothing");
  }
}

void plan_tensor(Plan& p, const std::vector<double>& ratios, KvSharing sharing) {
  std::vector<uint32_t> members(ratios.size());
  for (uint32_t d = 0; d < members.size(); ++d) members[d] = d;
  p.kv_replicas.assign(p.model.n_head_kv, 0);
  tensor_group(p, members, ratios, sharing, all(p.model.n_layer), true, true);
}

// Groups (consecutive devices with the same group number) split the layers by their summed
// ratios, one after another like a layer split; inside a group the layers' tensors are split
// like a tensor split.
void plan_hybrid(Plan& p, const std::vector<double>& ratios, const std::vector<uint32_t>& groups, KvSharing sharing) {
  const ModelShape& m = p.model;
  if (groups.size() != ratios.size())
    throw std::invalid_argument("hybrid split: " + str(groups.size()) + " group numbers for " + str(ratios.size()) + " devices");
  std::vector<std::vector<uint32_t>> members;
  std::vector<double> group_ratio;
  for (uint32_t d = 0; d < groups.size(); ++d) {
    if (d > 0 && groups[d] != groups[d - 1] && groups[d] != groups[d - 1] + 1)
      throw std::invalid_argument("hybrid split: the group numbers must list each group's devices together, counting 0, 1, 2 ... "
                                  "in device order (got " + str(groups[d - 1]) + " then " + str(groups[d]) + ")");
    if (d == 0 && groups[0] != 0) throw std::invalid_argument("hybrid split: the first device's group must be 0");
    if (groups[d] == members.size()) {
      members.emplace_back();
      group_ratio.push_back(0);
    }
    members.back().push_back(d);
    group_ratio.back() += ratios[d];
  }
  const std::vector<Range> layers = partition(m.n_layer, group_ratio);
  size_t first = members.size(), last = 0;
  for (size_t g = 0; g < members.size(); ++g)
    if (layers[g].size()) first = std::min(first, g), last = g;
  if (first == members.size()) throw std::invalid_argument("hybrid split: no group gets a layer");
  p.kv_replicas.assign(m.n_head_kv, 0);
  uint32_t prev = 0;
  for (size_t g = 0; g < members.size(); ++g) {
    if (layers[g].size() == 0) {
      p.warnings.push_back("group " + str(g) + " gets no layers: its share of " + str(m.n_layer) + " layers rounds to nothing");
      continue;
    }
    std::vector<double> r;
    for (uint32_t d : members[g]) r.push_back(ratios[d]);
    tensor_group(p, members[g], normalised(r), sharing, layers[g], g == first, g == last);
    // The group's first device with any share hands the hidden state on.
    uint32_t lead = members[g][0];
    for (uint32_t d : members[g])
      if (!p.devices[d].empty()) { lead = d; break; }
    if (g == first) p.embedding_device = lead;
    else p.transfers.push_back({static_cast<uint32_t>(layers[g].begin), prev, lead});
    prev = lead;
    if (g == last) p.lm_head_device = lead;
  }
  p.groups = groups;
}

}  // namespace

SplitMode parse_split_mode(const std::string& s) {
  if (s == "none") return SplitMode::none;
  if (s == "layer") return SplitMode::layer;
  if (s == "tensor") return SplitMode::tensor;
  if (s == "hybrid") return SplitMode::hybrid;
  throw std::invalid_argument("split mode '" + s + "': expected none, layer, tensor or hybrid");
}

const char* to_string(SplitMode m) {
  switch (m) {
    case SplitMode::none: return "none";
    case SplitMode::layer: return "layer";
    case SplitMode::tensor: return "tensor";
    case SplitMode::hybrid: return "hybrid";
  }
  return "?";
}

Plan plan_split(const ModelShape& model, const SplitRequest& request) {
  check_shape(model);
  const std::vector<double> ratios = normalised(request.ratios);
  if (request.main_device >= ratios.size())
    throw std::invalid_argument("split plan: main device " + str(request.main_device) + " is not one of the " +
                                str(ratios.size()) + " devices");
  Plan p;
  p.mode = request.mode;
  p.main_device = request.main_device;
  p.model = model;
  p.devices.resize(ratios.size());
  for (size_t d = 0; d < ratios.size(); ++d) p.devices[d].ratio = ratios[d];
  switch (request.mode) {
    case SplitMode::none: plan_none(p); break;
    case SplitMode::layer: plan_layer(p, ratios); break;
    case SplitMode::tensor: plan_tensor(p, ratios, request.kv_sharing); break;
    case SplitMode::hybrid: plan_hybrid(p, ratios, request.groups, request.kv_sharing); break;
  }
  for (uint32_t d = 0; d < p.devices.size(); ++d) {
    if (!p.devices[d].empty()) continue;
    p.empty_devices.push_back(d);
    if (p.mode == SplitMode::tensor || p.mode == SplitMode::hybrid)
      p.warnings.push_back("device " + str(d) + " (" + percent(p.devices[d].ratio) +
                           ") holds nothing: its share rounds to nothing in every dimension");
  }
  return p;
}

std::vector<DeviceBytes> weight_bytes(const Plan& plan) {
  const ModelShape& m = plan.model;
  std::vector<DeviceBytes> out(plan.devices.size());
  const uint64_t norm_bytes = uint64_t(m.n_embd) * 4;
  for (size_t d = 0; d < plan.devices.size(); ++d) {
    const DeviceShard& s = plan.devices[d];
    DeviceBytes& b = out[d];
    for (uint64_t l = s.layers.begin; l < s.layers.end; ++l) {
      const LayerFormats& f = m.layers[l];
      if (m.post_norms) b.norms += 2 * norm_bytes;  // post_attention_norm, post_ffw_norm
      if (s.q_heads.size()) {
        b.attention += rows_bytes(f.attn_q, m.n_embd, s.q_rows.size()) +
                       rows_bytes(f.attn_k, m.n_embd, s.kv_rows.size()) +
                       rows_bytes(f.attn_v, m.n_embd, s.kv_rows.size()) +
                       k_slice_bytes(f.attn_output, s.q_rows, m.n_embd);
        if (m.qkv_bias) b.attention += (s.q_rows.size() + 2 * s.kv_rows.size()) * 4;
        if (m.qk_norm) b.norms += 2 * uint64_t(m.head_dim) * 4;  // attn_q_norm, attn_k_norm
        b.norms += norm_bytes;  // attn_norm
      }
      if (s.ffn.size()) {
        const uint64_t experts = m.n_expert ? m.n_expert : 1;  // its rows of every expert alike
        b.ffn += experts * (rows_bytes(f.ffn_gate, m.n_embd, s.ffn.size()) + rows_bytes(f.ffn_up, m.n_embd, s.ffn.size()) +
                            k_slice_bytes(f.ffn_down, s.ffn, m.n_embd));
        if (m.n_expert) b.router += rows_bytes(f.ffn_gate_inp, m.n_embd, m.n_expert);
        b.norms += norm_bytes;  // ffn_norm
      }
    }
    if (s.embedding) b.embedding = rows_bytes(m.token_embd, m.n_embd, m.n_vocab);
    if (s.vocab.size()) {
      if (!m.tied_output)
        b.lm_head = rows_bytes(m.output, m.n_embd, s.vocab.size());
      else if (!s.embedding)
        b.lm_head = rows_bytes(m.token_embd, m.n_embd, s.vocab.size());
    }
    if (s.output_norm) b.norms += norm_bytes;
  }
  return out;
}

DeviceBytes model_bytes(const ModelShape& model) {
  return weight_bytes(plan_split(model, {SplitMode::none, {1.0}, 0, KvSharing::automatic}))[0];
}

uint64_t kv_cache_bytes(const Plan& plan, uint32_t device, uint64_t n_ctx, uint32_t elem_bytes) {
  const DeviceShard& s = plan.devices.at(device);
  return s.layers.size() * 2 * s.kv_rows.size() * n_ctx * elem_bytes;
}

std::string describe(const Plan& plan) {
  const ModelShape& m = plan.model;
  const std::vector<DeviceBytes> bytes = weight_bytes(plan);
  std::string out = std::string(to_string(plan.mode)) + " split over " + str(plan.devices.size()) + " device" +
                    (plan.devices.size() == 1 ? "" : "s");
  if (plan.mode == SplitMode::none) out += ", all on device " + str(plan.main_device);
  if (plan.mode == SplitMode::hybrid) {
    out += ", groups";
    for (size_t d = 0; d < plan.groups.size(); ++d) out += (d ? "," : " ") + str(plan.groups[d]);
    out += " (a tensor split inside each group, the groups one after another over the layers)";
  }
  if (plan.mode == SplitMode::tensor)
    out += std::string(", ") + (plan.kv_shared ? "Q heads" : "whole KV heads") + " in units of " +
           str(plan.head_unit) + ", ffn in units of " + str(plan.ffn_unit) + ", vocab in units of " +
           str(plan.vocab_unit);
  out += "\n";
  for (size_t d = 0; d < plan.devices.size(); ++d) {
    const DeviceShard& s = plan.devices[d];
    out += "device " + str(d) + " (" + percent(s.ratio) + "): ";
    if (s.empty()) {
      out += "nothing\n";
      continue;
    }
    out += "layers " + range_str(s.layers);
    if (s.layers.size()) {
      out += ", q heads " + range_str(s.q_heads) + " " + str(s.q_heads.size()) + "/" + str(m.n_head);
      out += ", kv heads " + range_str(s.kv_heads) + " " + str(s.kv_heads.size()) + "/" + str(m.n_head_kv);
      out += ", ffn " + range_str(s.ffn) + " " + str(s.ffn.size()) + "/" + str(m.n_ff);
      if (m.n_expert) out += " of each of " + str(m.n_expert) + " experts";
    }
    out += ", vocab " + range_str(s.vocab) + " " + str(s.vocab.size()) + "/" + str(m.n_vocab);
    if (s.embedding) out += ", embedding";
    const DeviceBytes& b = bytes[d];
    out += ", " + human_bytes(b.total()) + " (" + str(b.total()) + " B: split " + str(b.split()) + ", embedding " +
           str(b.embedding) + ", norms " + str(b.norms) + (m.n_expert ? ", router " + str(b.router) : "") + ")\n";
  }
  for (const LayerTransfer& t : plan.transfers)
    out += "hidden state moves from device " + str(t.from) + " to device " + str(t.to) + " before layer " +
           str(t.layer) + "\n";
  for (const std::string& w : plan.warnings) out += "warning: " + w + "\n";
  return out;
}

}  // namespace chorus::split
