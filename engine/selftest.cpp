#include "engine/selftest.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "engine/ops/kernels.h"
#include "engine/ops/matmul.h"
#include "engine/ops/matvec.h"
#include "engine/quant.h"
#include "vkdevice/commands.h"

namespace chorus {
namespace {

struct Problem {
  GgmlType type;
  uint32_t K, N, M;
  std::vector<uint8_t> w;  // N rows in the device layout (engine/quant.h)
  std::vector<float> w_ref;  // the same rows dequantised by the CPU reference
  std::vector<float> x;      // M rows of K
};

Problem make_problem(GgmlType type, uint32_t K, uint32_t N, uint32_t M, uint64_t seed) {
  Problem p{type, K, N, M, {}, {}, {}};
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const uint64_t row = *row_bytes(type, K);
  p.w.resize(row * N);
  p.w_ref.resize(size_t(K) * N);
  std::vector<float> src(K);
  for (uint32_t n = 0; n < N; ++n) {
    for (auto& v : src) v = normal(rng);
    quantize_row(type, src.data(), p.w.data() + row * n, K);
    dequantize_row(type, p.w.data() + row * n, p.w_ref.data() + size_t(K) * n, K);
  }
  p.w = rows_to_device(type, p.w, K, N);
  p.x.resize(size_t(K) * M);
  for (auto& v : p.x) v = normal(rng);
  return p;
}

// Y[m][n] = sum_k W[n][k] X[m][k] in double precision.
std::vector<float> reference(const Problem& p) {
  std::vector<float> y(size_t(p.M) * p.N);
  for (uint32_t m = 0; m < p.M; ++m)
    for (uint32_t n = 0; n < p.N; ++n) {
      double acc = 0;
      for (uint32_t k = 0; k < p.K; ++k) acc += double(p.w_ref[size_t(n) * p.K + k]) * p.x[size_t(m) * p.K + k];
      y[size_t(m) * p.N + n] = static_cast<float>(acc);
    }
  return y;
}

double nmse(const std::vector<float>& ref, const std::vector<float>& got) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    const double d = double(ref[i]) - got[i];
    num += d * d;
    den += double(ref[i]) * ref[i];
  }
  return den > 0 ? num / den : (num > 0 ? INFINITY : 0);
}

}  // namespace

std::vector<SelftestResult> run_selftest(vk::Device& device, const std::function<void(const SelftestResult&)>& on_result) {
  std::vector<SelftestResult> results;
  ops::Kernels kernels(device);
  constexpr uint32_t K = 512, N = 67, M = 5;
  uint64_t seed = 1;
  for (GgmlType type : weight_types()) {
    const Problem p = make_problem(type, K, N, M, seed++);
    const std::string fmt = type_traits(type).name;
    for (const bool matrix : {false, true}) {
      const uint32_t m_rows = matrix ? M : 1;
      Problem q = p;
      q.M = m_rows;
      q.x.resize(size_t(K) * m_rows);
      const std::vector<float> want = reference(q);
      SelftestResult r;
      r.check = std::string(matrix ? "mul_mm " : "mul_mv ") + fmt + " K=" + std::to_string(K) + " N=" + std::to_string(N) +
                (matrix ? " M=" + std::to_string(M) : "");
      // The reference uses the same dequantised weights, so only rounding in the kernel's
      // accumulation (and f16 staging of x in the fp16 matmul variants) separates them.
      try {
        const std::string op = matrix ? ops::mul_mm_op(type) : ops::mul_mv_op(type);
        const shaders::Variant& v = kernels.variant(op);
        r.variant = std::string(v.name);
        r.tolerance = 1e-5;
        vk::Buffer w = device.create_buffer(q.w.size(), vk::BufferKind::Device, "selftest weights");
        vk::Buffer x = device.create_buffer(q.x.size() * 4, vk::BufferKind::Device, "selftest x");
        vk::Buffer y = device.create_buffer(want.size() * 4, vk::BufferKind::Device, "selftest y");
        device.upload(w, 0, std::as_bytes(std::span(q.w)));
        device.upload(x, 0, std::as_bytes(std::span(q.x)));
        // The kernel that will run (mul_mv: a texel-buffer kernel on CPU devices where one
        // applies; mul_mm: the register-tiled mul_mm_cpu kernel on CPU devices).
        r.variant = matrix ? ops::mul_mm_kernel_name(kernels, type) : ops::mul_mv_kernel_name(kernels, type, K, w, 0, x, 0);
        vk::CommandBuffer cb(device);
        cb.begin();
        if (matrix)
          ops::mul_mm(kernels, cb, type, w, 0, K, N, x, 0, M, y, 0);
        else
          ops::mul_mv(kernels, cb, type, w, 0, K, N, x, 0, y, 0);
        cb.barrier_to_host();  // the download reads y on the host
        cb.end();
        device.run(cb);
        r.nmse = nmse(want, device.download<float>(y, want.size()));
      } catch (const std::exception& e) {
        r.error = e.what();
      }
      if (on_result) on_result(r);
      results.push_back(std::move(r));
    }
  }
  return results;
}

}  // namespace chorus
