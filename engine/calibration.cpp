#include "engine/calibration.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <vector>

#include "engine/ops/kernels.h"
#include "engine/ops/matvec.h"
#include "shaders/registry.h"
#include "split/collective.h"
#include "vkdevice/cache_file.h"
#include "vkdevice/commands.h"

namespace chorus {
namespace {

constexpr uint32_t kK = 2048, kN = 2048, kDispatches = 8, kRuns = 5;
constexpr uint64_t kMaxCalibrationFile = 1u << 20;

// The device's identity and the format: one line of the cache per pair.
std::string identity(const vk::DeviceInfo& i, GgmlType type) {
  std::string k = i.name + "|" + i.vendor + "|" + i.driver_name + "|" + i.driver_info + "|" + std::to_string(i.driver_version) +
                  "|" + type_traits(type).name;
  for (char& c : k)
    if (c == '\t' || c == '\n') c = ' ';
  return k;
}

// identity() and the build's kernels (shaders::fingerprint): a speed measured with other
// kernels (an older chorus: Q5_0's matvec became 6x faster in one change) is never reused.
std::string key(const vk::DeviceInfo& i, GgmlType type) {
  char fp[32];
  std::snprintf(fp, sizeof fp, "|kernels %016llx", static_cast<unsigned long long>(shaders::fingerprint()));
  return identity(i, type) + fp;
}

// Whether cache line key `k` is of this device and format, whatever the kernels (the line a
// new measurement replaces; lines written before the fingerprint was part of the key too).
bool same_identity(const std::string& k, const vk::DeviceInfo& i, GgmlType type) {
  const std::string id = identity(i, type);
  return k == id || (k.size() > id.size() && k.compare(0, id.size(), id) == 0 && k[id.size()] == '|');
}

// "key\tbytes_per_second" lines.
std::vector<std::pair<std::string, double>> read_cache() {
  std::string warning;
  const std::vector<char> bytes = vk::read_cache_file(calibration_cache_path(), warning, kMaxCalibrationFile);
  if (!warning.empty()) std::fprintf(stderr, "chorus: warning: %s\n", warning.c_str());
  std::vector<std::pair<std::string, double>> out;
  std::istringstream in(std::string(bytes.begin(), bytes.end()));
  for (std::string line; std::getline(in, line);) {
    const size_t tab = line.rfind('\t');
    if (tab == std::string::npos) continue;
    char* end = nullptr;
    const double v = std::strtod(line.c_str() + tab + 1, &end);
    if (end && *end == 0 && v > 0 && v < 1e15) out.emplace_back(line.substr(0, tab), v);  // anything else is ignored
  }
  return out;
}

double measure(vk::Device& dev, GgmlType type) {
  const uint64_t rb = *row_bytes(type, kK);
  std::vector<uint8_t> w(rb * kN);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<float> row(kK);
  for (uint32_t n = 0; n < 16; ++n) {  // 16 distinct rows, repeated
    for (float& v : row) v = dist(rng);
    quantize_row(type, row.data(), w.data() + n * rb, kK);
  }
  for (uint32_t n = 16; n < kN; ++n) std::copy_n(w.data() + (n % 16) * rb, rb, w.data() + n * rb);
  std::vector<uint8_t> dw = rows_to_device(type, w, kK, kN);
  dw.resize((dw.size() + 3) / 4 * 4, 0);
  const uint64_t device_bytes = dw.size();
  vk::Buffer wb = dev.create_buffer(dw.size(), vk::BufferKind::Device, "calibration");
  dev.upload(wb, std::span<const uint8_t>(dw));
  std::vector<float> xh(kK, 0.5f);
  vk::Buffer x = dev.create_buffer(kK * 4, vk::BufferKind::Device, "calibration");
  dev.upload(x, std::span<const float>(xh));
  vk::Buffer y = dev.create_buffer(kN * 4, vk::BufferKind::Device, "calibration");
  ops::Kernels k(dev);
  vk::CommandBuffer cb(dev);
  cb.begin();
  for (uint32_t i = 0; i < kDispatches; ++i) {
    ops::mul_mv(k, cb, type, wb, 0, kK, kN, x, 0, y, 0);
    cb.barrier();
  }
  cb.end();
  dev.run(cb);  // warm-up (and pipeline creation)
  std::vector<double> s;
  for (uint32_t r = 0; r < kRuns; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    dev.run(cb);
    s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(s.begin(), s.end());
  return static_cast<double>(device_bytes) * kDispatches / std::max(s[s.size() / 2], 1e-9);
}

}  // namespace

double reduce_round_trip_seconds(const std::vector<vk::Device*>& devices) {
  if (devices.size() < 2) return 0;
  constexpr uint32_t kPoints = 32, kTokens = 5, kFloats = 64;
  // Declared before the collective: its drain runs while they still exist.
  std::vector<std::vector<std::unique_ptr<vk::CommandBuffer>>> cbs(devices.size());
  std::vector<std::vector<split::Collective::Segment>> segments(devices.size());
  split::CollectiveOptions co;
  co.max_points = kPoints;
  co.max_floats = kFloats;
  co.ring = 2;
  split::Collective coll(devices, co);
  for (size_t d = 0; d < devices.size(); ++d)
    for (uint32_t j = 0; j <= kPoints; ++j) {
      cbs[d].push_back(std::make_unique<vk::CommandBuffer>(*devices[d]));
      vk::CommandBuffer& cb = *cbs[d].back();
      cb.begin();
      if (j > 0) split::Collective::record_acquire(cb);
      if (j < kPoints) {
        cb.fill(coll.partials(d), coll.partial_offset(d, j), kFloats * 4, 0);  // a partial of zeros
        split::Collective::record_publish(cb);
      }
      cb.end();
      segments[d].push_back(split::Collective::Segment{&cb});
    }
  const std::vector<uint32_t> floats(kPoints, kFloats);
  std::vector<double> per_point;
  for (uint32_t t = 0; t <= kTokens; ++t) {
    const auto t0 = std::chrono::steady_clock::now();
    coll.wait(coll.submit(segments, floats));
    if (t > 0) per_point.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / kPoints);
  }
  std::sort(per_point.begin(), per_point.end());
  return per_point[per_point.size() / 2];
}

std::optional<double> cached_device_speed(const vk::DeviceInfo& device, GgmlType type) {
  const std::string k = key(device, type);
  for (const auto& [ck, v] : read_cache())
    if (ck == k) return v;
  return std::nullopt;
}

std::string calibration_cache_path() {
  return (std::filesystem::path(vk::cache_dir()) / "calibration.tsv").string();
}

DeviceSpeed device_speed(vk::Device& device, GgmlType type, bool recalibrate) {
  const std::string k = key(device.info(), type);
  // One value per device identity for the whole process: logical devices of one GPU must get
  // the same speed (so equal shares) even if another process rewrites the file meanwhile.
  static std::mutex mutex;
  static std::map<std::string, double> seen;
  std::lock_guard lock(mutex);
  if (!recalibrate)
    if (const auto it = seen.find(k); it != seen.end()) return DeviceSpeed{it->second, "cached"};
  std::vector<std::pair<std::string, double>> cache = read_cache();
  if (!recalibrate)
    for (const auto& [ck, v] : cache)
      if (ck == k) {
        seen[k] = v;
        return DeviceSpeed{v, "cached"};
      }
  const double v = measure(device, type);
  seen[k] = v;
  std::erase_if(cache, [&](const auto& e) { return same_identity(e.first, device.info(), type); });
  cache.emplace_back(k, v);
  std::string text;
  for (const auto& [ck, cv] : cache) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "\t%.6g\n", cv);
    text += ck + buf;
  }
  std::string warning;
  if (!vk::write_cache_file(calibration_cache_path(), std::span<const char>(text.data(), text.size()),
                            std::to_string(::getpid()), warning))
    std::fprintf(stderr, "chorus: warning: %s\n", warning.c_str());
  return DeviceSpeed{v, "measured"};
}

}  // namespace chorus
