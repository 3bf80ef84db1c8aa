// split/partition.h — partition math: pure functions, no Vulkan.
//
// Owns: dividing a dimension of `total` units among devices in a ratio, in whole alignment
// units (attention heads, quantisation blocks, rows), so the shards tile it exactly once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace chorus::split {

struct Range {
  uint64_t begin = 0;
  uint64_t end = 0;  // exclusive
  uint64_t size() const { return end - begin; }
  bool operator==(const Range&) const = default;
};

// Splits [0, total) into ratios.size() consecutive ranges whose sizes are multiples of
// `align` (except that the last range absorbs a remainder when total is not a multiple)
// and proportional to ratios within one alignment unit. Ratios must be positive and
// finite; throws std::invalid_argument naming the bad ratio otherwise. A device whose
// share rounds to zero gets an empty range (callers report it).
std::vector<Range> partition(uint64_t total, const std::vector<double>& ratios, uint64_t align = 1);

}  // namespace chorus::split
