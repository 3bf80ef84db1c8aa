// engine/calibration.h — how fast each device reads weights, for speed-aware split ratios.
//
// Every reduce of a tensor split waits for the slowest device, so a device's share should follow
// its speed as well as its memory. A calibration times the matrix-vector kernel of the model's
// main weight format on the device (a few dispatches of a 2048 x 2048 matrix, about a tenth of
// a second on lavapipe) and keeps weight bytes read per second. It runs on first use and is
// cached per device identity (name, vendor, driver version), format and build of the kernels
// (shaders::fingerprint: a speed measured with another chorus's kernels is measured again, and
// replaces that line) in $XDG_CACHE_HOME/chorus/calibration.tsv (else ~/.cache/chorus); logical
// devices of one GPU therefore share one value. Timing is only ever used to choose ratios and
// predict speed, never to decide a result.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/quant.h"
#include "vkdevice/device.h"

namespace chorus {

struct DeviceSpeed {
  double weight_bytes_per_second = 0;
  std::string source;  // "measured", "cached"
};

// The device's matrix-vector throughput for `type`; measured (and cached) unless the cache
// holds it and `recalibrate` is false.
DeviceSpeed device_speed(vk::Device& device, GgmlType type, bool recalibrate = false);

// The cached throughput of a device not opened (`chorus fit`), if it was ever calibrated.
std::optional<double> cached_device_speed(const vk::DeviceInfo& device, GgmlType type);

// Seconds of one reduce point's round trip through the collective on `devices` (median over a
// few tokens of 32 points with empty segments: the signals, waits and the proxy's sum alone).
// Measured each time (tens of milliseconds); 0 for fewer than two devices.
double reduce_round_trip_seconds(const std::vector<vk::Device*>& devices);

// The cache file's path.
std::string calibration_cache_path();

}  // namespace chorus
