// Multi-device smoke: three logical devices on one physical device, working at the same time.
#include <gtest/gtest.h>

#include <random>

#include "engine/ops/kernels.h"
#include "engine/ops/matmul.h"
#include "engine/quant.h"
#include "split/partition.h"
#include "tests/gpu.h"

namespace chorus {
namespace {

using test::GpuTest;

struct Weights {
  std::vector<uint8_t> bytes;
  uint64_t row_bytes;
};

Weights random_weights(GgmlType type, uint32_t K, uint32_t N, uint64_t seed) {
  Weights w{{}, *row_bytes(type, K)};  // GGUF rows, then converted to the device layout
  w.bytes.resize(w.row_bytes * N);
  const auto src = test::random_floats(size_t(K) * N, seed);
  for (uint32_t n = 0; n < N; ++n) quantize_row(type, src.data() + size_t(K) * n, w.bytes.data() + w.row_bytes * n, K);
  w.bytes = rows_to_device(type, w.bytes, K, N);
  w.row_bytes = *device_row_bytes(type, K);
  return w;
}

// Records mul_mm for rows [rows.begin, rows.end) of W on dev and submits it without waiting.
struct Job {
  vk::Device* dev;
  std::unique_ptr<ops::Kernels> kernels;
  std::unique_ptr<vk::CommandBuffer> cb;
  std::unique_ptr<vk::Timeline> done;
  vk::Buffer w, x, y;
  split::Range rows;
};

Job start(vk::Device& dev, GgmlType type, const Weights& wts, uint32_t K, const std::vector<float>& x, uint32_t M,
          split::Range rows) {
  Job j;
  j.dev = &dev;
  j.rows = rows;
  j.kernels = std::make_unique<ops::Kernels>(dev);
  const std::span<const uint8_t> shard(wts.bytes.data() + wts.row_bytes * rows.begin, wts.row_bytes * rows.size());
  j.w = test::make_buffer(dev, shard, "weights shard");
  j.x = test::make_buffer(dev, x, "x");
  j.y = dev.create_buffer(size_t(M) * rows.size() * 4, vk::BufferKind::Device, "y");
  j.cb = std::make_unique<vk::CommandBuffer>(dev);
  j.done = std::make_unique<vk::Timeline>(dev, "done");
  j.cb->begin();
  ops::mul_mm(*j.kernels, *j.cb, type, j.w, 0, K, static_cast<uint32_t>(rows.size()), j.x, 0, M, j.y, 0);
  j.cb->barrier_to_host();  // the host reads y after the timeline says done
  j.cb->end();
  const vk::Device::TimelinePoint signal{j.done.get(), 1};
  dev.submit(*j.cb, {}, std::span(&signal, 1));
  return j;
}

std::vector<float> finish(Job& j, uint32_t M) {
  j.done->wait(1, "the multi-device smoke product");
  return j.dev->download<float>(j.y, size_t(M) * j.rows.size());
}

TEST_F(GpuTest, SameProductOnThreeLogicalDevicesAtOnceEqualsOneDeviceBitForBit) {
  constexpr uint32_t K = 512, N = 70, M = 3;
  const GgmlType type = GgmlType::Q4_K;
  const Weights wts = random_weights(type, K, N, 11);
  const auto x = test::random_floats(size_t(K) * M, 12);
  Job solo = start(test::device(0), type, wts, K, x, M, {0, N});
  const auto want = finish(solo, M);
  std::vector<Job> jobs;
  for (int d = 0; d < 3; ++d) jobs.push_back(start(test::device(d), type, wts, K, x, M, {0, N}));
  for (int d = 0; d < 3; ++d) EXPECT_EQ(finish(jobs[d], M), want) << "logical device " << d;
}

TEST_F(GpuTest, RowsSplitFiveThreeOneAcrossThreeDevicesReassembleTheOneDeviceResult) {
  constexpr uint32_t K = 256, N = 91, M = 4;
  const GgmlType type = GgmlType::Q8_0;
  const Weights wts = random_weights(type, K, N, 21);
  const auto x = test::random_floats(size_t(K) * M, 22);
  Job solo = start(test::device(0), type, wts, K, x, M, {0, N});
  const auto want = finish(solo, M);

  const auto shards = split::partition(N, {5, 3, 1});
  std::vector<Job> jobs;
  for (int d = 0; d < 3; ++d) jobs.push_back(start(test::device(d), type, wts, K, x, M, shards[d]));
  std::vector<float> got(size_t(M) * N);
  for (int d = 0; d < 3; ++d) {
    const auto part = finish(jobs[d], M);
    const uint64_t n_rows = shards[d].size();
    for (uint32_t m = 0; m < M; ++m)
      for (uint64_t r = 0; r < n_rows; ++r) got[size_t(m) * N + shards[d].begin + r] = part[m * n_rows + r];
  }
  EXPECT_LE(test::nmse(want, got), 1e-12);
}

}  // namespace
}  // namespace chorus
