#include "tests/reference_model.h"

#include <cmath>
#include <fstream>
#include <stdexcept>

#include "engine/quant.h"

namespace chorus::ref {
namespace {

// y[r] = sum_c w[r][c] * x[c] (+ b[r]); w: [rows][cols].
std::vector<float> matvec(const std::vector<float>& w, const std::vector<float>& x, const std::vector<float>& b = {}) {
  const size_t cols = x.size(), rows = w.size() / cols;
  std::vector<float> y(rows);
  for (size_t r = 0; r < rows; ++r) {
    const float* wr = w.data() + r * cols;
    double acc = b.empty() ? 0.0 : double(b[r]);
    for (size_t c = 0; c < cols; ++c) acc += double(wr[c]) * double(x[c]);
    y[r] = static_cast<float>(acc);
  }
  return y;
}

// x / sqrt(mean(x^2) + eps) * weight
std::vector<float> rms_norm(const std::vector<float>& x, const std::vector<float>& weight, float eps) {
  double ss = 0;
  for (float v : x) ss += double(v) * double(v);
  const double inv = 1.0 / std::sqrt(ss / double(x.size()) + double(eps));
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = static_cast<float>(double(x[i]) * inv * double(weight[i]));
  return y;
}

// Rotates each head of x ([n_heads][head_dim]) by position pos with layer l's base and scale;
// dimensions past rope_dims stay.
void rope(std::vector<float>& x, uint32_t n_heads, const ModelConfig& c, uint32_t l, uint32_t pos) {
  const double base = c.rope_base_of(l), freq_scale = c.rope_freq_scale_of(l);
  const uint32_t d = c.rope_dims;
  for (uint32_t h = 0; h < n_heads; ++h) {
    float* v = x.data() + size_t{h} * c.head_dim;
    for (uint32_t i = 0; i < d / 2; ++i) {
      const double theta = double(pos) * freq_scale * std::pow(base, -2.0 * i / d);
      const uint32_t i0 = c.rope_neox ? i : 2 * i;
      const uint32_t i1 = c.rope_neox ? i + d / 2 : 2 * i + 1;
      const double a = v[i0], b = v[i1];
      v[i0] = static_cast<float>(a * std::cos(theta) - b * std::sin(theta));
      v[i1] = static_cast<float>(a * std::sin(theta) + b * std::cos(theta));
    }
  }
}

double silu(double x) { return x / (1.0 + std::exp(-x)); }

// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
double gelu_tanh(double x) {
  const double sqrt_2_over_pi = 0.79788456080286535588;
  return 0.5 * x * (1.0 + std::tanh(sqrt_2_over_pi * (x + 0.044715 * x * x * x)));
}

float round_f16(float x) { return fp16_to_fp32(fp32_to_fp16(x)); }

// Head `h` of x ([heads][D], D = weight.size()) replaced by its RMSNorm.
void head_norm(std::vector<float>& x, uint32_t h, const std::vector<float>& weight, float eps) {
  const size_t D = weight.size();
  const std::vector<float> head(x.begin() + h * D, x.begin() + (h + 1) * D);
  const std::vector<float> normed = rms_norm(head, weight, eps);
  std::copy(normed.begin(), normed.end(), x.begin() + h * D);
}

}  // namespace

std::vector<float> dequantize_tensor(const gguf::TensorInfo& t) {
  const uint64_t n0 = t.ne[0], rows = t.n_rows();
  std::vector<float> out(n0 * rows);
  for (uint64_t r = 0; r < rows; ++r)
    dequantize_row(t.type, t.data.data() + r * t.row_bytes(), out.data() + r * n0, static_cast<int64_t>(n0));
  return out;
}

ReferenceModel::ReferenceModel(const std::string& gguf_path, const ReferenceOptions& options) : options_(options) {
  const gguf::File f = gguf::File::open(gguf_path);
  config_ = ModelConfig::from_gguf(f);
  auto load = [&f](const std::string& name) { return dequantize_tensor(f.require_tensor(name)); };
  token_embd_ = load("token_embd.weight");
  if (!config_.tied_output) output_ = load("output.weight");
  output_norm_ = load("output_norm.weight");
  layers_.resize(config_.n_layer);
  for (uint32_t l = 0; l < config_.n_layer; ++l) {
    Layer& L = layers_[l];
    auto layer = [&](const char* name) { return load(layer_tensor(l, name)); };
    L.attn_norm = layer("attn_norm.weight");
    // Rows [r0, r0 + n) of a dequantised [rows][n_embd] matrix.
    auto rows = [E = size_t{config_.n_embd}](const std::vector<float>& m, size_t r0, size_t n) {
      return std::vector<float>(m.begin() + std::ptrdiff_t(r0 * E), m.begin() + std::ptrdiff_t((r0 + n) * E));
    };
    const size_t n_q = config_.n_q(), n_kv = config_.n_kv(), n_ff = config_.n_ff;
    if (f.find_tensor(layer_tensor(l, "attn_qkv.weight"))) {  // phi3: Q, K and V rows in one tensor
      const std::vector<float> qkv = layer("attn_qkv.weight");
      L.wq = rows(qkv, 0, n_q);
      L.wk = rows(qkv, n_q, n_kv);
      L.wv = rows(qkv, n_q + n_kv, n_kv);
    } else {
      L.wq = layer("attn_q.weight");
      L.wk = layer("attn_k.weight");
      L.wv = layer("attn_v.weight");
    }
    if (config_.qkv_bias) {
      L.bq = layer("attn_q.bias");
      L.bk = layer("attn_k.bias");
      L.bv = layer("attn_v.bias");
    }
    if (config_.qk_norm) {
      L.q_norm = layer("attn_q_norm.weight");
      L.k_norm = layer("attn_k_norm.weight");
    }
    L.wo = layer("attn_output.weight");
    L.ffn_norm = layer("ffn_norm.weight");
    if (f.find_tensor(layer_tensor(l, "ffn_gate.weight"))) {
      L.w_gate = layer("ffn_gate.weight");
      L.w_up = layer("ffn_up.weight");
    } else {  // phi3: ffn_up holds the gate rows, then the up rows
      const std::vector<float> gate_up = layer("ffn_up.weight");
      L.w_gate = rows(gate_up, 0, n_ff);
      L.w_up = rows(gate_up, n_ff, n_ff);
    }
    L.w_down = layer("ffn_down.weight");
    if (config_.post_norms) {
      L.post_attn_norm = layer("post_attention_norm.weight");
      L.post_ffw_norm = layer("post_ffw_norm.weight");
    }
  }
}

std::vector<float> ReferenceModel::forward(std::span<const int32_t> tokens) {
  std::vector<float> logits;
  logits.reserve(tokens.size() * config_.n_vocab);
  for (int32_t t : tokens) {
    const std::vector<float> l = forward_one(t, n_past_);
    logits.insert(logits.end(), l.begin(), l.end());
    ++n_past_;
  }
  return logits;
}

std::vector<float> ReferenceModel::forward_one(int32_t token, uint32_t pos) {
  const ModelConfig& c = config_;
  if (token < 0 || uint32_t(token) >= c.n_vocab)
    throw std::out_of_range("ReferenceModel: token id " + std::to_string(token) + " outside the vocabulary of " +
                            std::to_string(c.n_vocab));
  const size_t E = c.n_embd, D = c.head_dim, n_kv = c.n_kv();
  const uint32_t group = c.n_head / c.n_head_kv;  // query heads per KV head
  const double scale = 1.0 / std::sqrt(double(D));

  // x = token_embd[token]
  const float* row = token_embd_.data() + size_t(token) * E;
  std::vector<float> x(row, row + E);
  for (float& v : x) v *= c.embd_scale;

  for (uint32_t l = 0; l < c.n_layer; ++l) {
    Layer& L = layers_[l];
    // Attention block.
    const std::vector<float> h = rms_norm(x, L.attn_norm, c.rms_eps);
    std::vector<float> q = matvec(L.wq, h, L.bq);  // [n_head][D]
    std::vector<float> k = matvec(L.wk, h, L.bk);  // [n_head_kv][D]
    std::vector<float> v = matvec(L.wv, h, L.bv);  // [n_head_kv][D]
    if (c.qk_norm) {  // each head normed over its D dimensions with a shared weight
      for (uint32_t hh = 0; hh < c.n_head; ++hh) head_norm(q, hh, L.q_norm, c.rms_eps);
      for (uint32_t hh = 0; hh < c.n_head_kv; ++hh) head_norm(k, hh, L.k_norm, c.rms_eps);
    }
    rope(q, c.n_head, c, l, pos);
    rope(k, c.n_head_kv, c, l, pos);
    if (options_.f16_kv_cache)
      for (size_t i = 0; i < n_kv; ++i) k[i] = round_f16(k[i]), v[i] = round_f16(v[i]);
    L.k_cache.resize(size_t{pos} * n_kv);  // forget anything past pos (after reset())
    L.v_cache.resize(size_t{pos} * n_kv);
    L.k_cache.insert(L.k_cache.end(), k.begin(), k.end());
    L.v_cache.insert(L.v_cache.end(), v.begin(), v.end());

    std::vector<float> attn(c.n_q());  // [n_head][D]
    std::vector<double> score(pos + 1);
    const uint32_t window = c.window(l);
    const uint32_t first = window != 0 && pos + 1 > window ? pos + 1 - window : 0;  // first position attended
    for (uint32_t hq = 0; hq < c.n_head; ++hq) {
      const size_t hk = hq / group;
      const float* qh = q.data() + hq * D;
      double mx = -INFINITY;
      for (uint32_t p = first; p <= pos; ++p) {
        const float* kp = L.k_cache.data() + p * n_kv + hk * D;
        double dot = 0;
        for (size_t d = 0; d < D; ++d) dot += double(qh[d]) * double(kp[d]);
        score[p] = dot * scale;
        mx = std::max(mx, score[p]);
      }
      double sum = 0;
      for (uint32_t p = first; p <= pos; ++p) sum += (score[p] = std::exp(score[p] - mx));
      for (size_t d = 0; d < D; ++d) {
        double acc = 0;
        for (uint32_t p = first; p <= pos; ++p) acc += score[p] * double(L.v_cache[p * n_kv + hk * D + d]);
        attn[hq * D + d] = static_cast<float>(acc / sum);
      }
    }
    std::vector<float> o = matvec(L.wo, attn);
    if (c.post_norms) o = rms_norm(o, L.post_attn_norm, c.rms_eps);
    for (size_t i = 0; i < E; ++i) x[i] += o[i];

    // Feed-forward block.
    const std::vector<float> hf = rms_norm(x, L.ffn_norm, c.rms_eps);
    std::vector<float> gate = matvec(L.w_gate, hf);
    const std::vector<float> up = matvec(L.w_up, hf);
    const auto act = c.glu == Glu::geglu ? gelu_tanh : silu;
    for (size_t i = 0; i < gate.size(); ++i) gate[i] = static_cast<float>(act(gate[i]) * double(up[i]));
    std::vector<float> down = matvec(L.w_down, gate);
    if (c.post_norms) down = rms_norm(down, L.post_ffw_norm, c.rms_eps);
    for (size_t i = 0; i < E; ++i) x[i] += down[i];
  }

  const std::vector<float> xn = rms_norm(x, output_norm_, c.rms_eps);
  return matvec(c.tied_output ? token_embd_ : output_, xn);
}

std::vector<int32_t> ReferenceModel::greedy(const std::vector<int32_t>& prompt, uint32_t n) {
  reset();
  std::vector<float> logits = forward(prompt);
  std::vector<int32_t> picks;
  const size_t V = config_.n_vocab;
  for (uint32_t i = 0; i < n; ++i) {
    const float* last = logits.data() + logits.size() - V;
    int32_t best = 0;
    for (size_t j = 1; j < V; ++j)
      if (last[j] > last[best]) best = int32_t(j);
    picks.push_back(best);
    if (i + 1 < n) logits = forward(std::vector<int32_t>{best});
  }
  return picks;
}

namespace {
const std::string kSmolData = std::string(CHORUS_SOURCE_DIR) + "/tests/data/smollm2/";
}  // namespace


// Format of logits.bin (little-endian, written by make_reference.py):
//   "CHRL" | u32 n_vocab | u32 n_positions | i32 positions[n_positions] | f32 logits[n_positions][n_vocab]
SmolExpected read_smol_expected(uint32_t n_vocab) { return read_expected_logits(kSmolData, n_vocab); }

ExpectedLogits read_expected_logits(const std::string& dir, uint32_t n_vocab) {
  ExpectedLogits e;
  {
    std::ifstream ids(dir + "/prompt.ids.txt");
    int32_t v = 0;
    while (ids >> v) e.ids.push_back(v);
  }
  std::ifstream in(dir + "/logits.bin", std::ios::binary);
  char magic[4] = {};
  uint32_t nv = 0, np = 0;
  in.read(magic, 4);
  in.read(reinterpret_cast<char*>(&nv), 4);
  in.read(reinterpret_cast<char*>(&np), 4);
  if (!in || std::string(magic, 4) != "CHRL" || nv != n_vocab || np == 0 || np > 64) return {};
  e.positions.resize(np);
  in.read(reinterpret_cast<char*>(e.positions.data()), std::streamsize(np * 4));
  e.logits.resize(size_t{np} * nv);
  in.read(reinterpret_cast<char*>(e.logits.data()), std::streamsize(e.logits.size() * 4));
  if (!in) return {};
  return e;
}


}  // namespace chorus::ref
