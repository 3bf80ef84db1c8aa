// engine/selftest.h — a quick check of the kernels a device will run, against the CPU
// reference (engine/quant.h), for `chorus selftest`.
//
// Owns: the list of checks (matrix-vector and matrix-matrix products for every weight
// format, through the variant the device's capabilities select), their data and tolerances.
// The GoogleTest suites go much further; this answers "does this machine compute right?".
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "vkdevice/device.h"

namespace chorus {

struct SelftestResult {
  std::string check;    // "mul_mv q4_k 4096x64"
  std::string variant;  // "mul_mv_q4_k+subgroup"
  double nmse = 0;      // normalised mean squared error vs the CPU reference
  double tolerance = 0;
  std::string error;    // non-empty if the check could not run
  bool passed() const { return error.empty() && nmse <= tolerance; }
};

// Runs every check on `device`; on_result is called after each one (for progress output).
std::vector<SelftestResult> run_selftest(vk::Device& device,
                                         const std::function<void(const SelftestResult&)>& on_result = {});

}  // namespace chorus
