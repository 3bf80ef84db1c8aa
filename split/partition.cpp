#include "split/partition.h"

#include <cmath>
#include <stdexcept>

namespace chorus::split {

std::vector<Range> partition(uint64_t total, const std::vector<double>& ratios, uint64_t align) {
  if (ratios.empty()) throw std::invalid_argument("partition: no devices to split across");
  if (align == 0) throw std::invalid_argument("partition: alignment must be at least 1");
  double sum = 0;
  for (size_t i = 0; i < ratios.size(); ++i) {
    if (!(ratios[i] > 0) || !std::isfinite(ratios[i]))
      throw std::invalid_argument("partition: ratio " + std::to_string(i) + " is " + std::to_string(ratios[i]) +
                                  ", expected a positive finite number");
    sum += ratios[i];
  }
  // Work in whole units; the cumulative boundaries are rounded to the nearest unit, so each
  // shard is within one unit of its exact share and the shards tile [0, total).
  const uint64_t units = total / align;
  std::vector<Range> out(ratios.size());
  double cumulative = 0;
  uint64_t prev = 0;
  for (size_t i = 0; i < ratios.size(); ++i) {
    cumulative += ratios[i];
    uint64_t boundary_units =
        i + 1 == ratios.size() ? units : static_cast<uint64_t>(std::llround(cumulative / sum * static_cast<double>(units)));
    if (boundary_units > units) boundary_units = units;
    if (boundary_units < prev / align) boundary_units = prev / align;
    const uint64_t boundary = i + 1 == ratios.size() ? total : boundary_units * align;
    out[i] = {prev, boundary};
    prev = boundary;
  }
  return out;
}

}  // namespace chorus::split
