#include "vkdevice/env.h"

#include <cstdlib>

#include "vkdevice/vk.h"

namespace chorus::vk {

std::optional<uint64_t> parse_decimal(std::string_view text, uint64_t min, uint64_t max) {
  if (text.empty()) return std::nullopt;
  uint64_t v = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - digit) / 10) return std::nullopt;  // v * 10 + digit would wrap
    v = v * 10 + digit;
  }
  if (v < min || v > max) return std::nullopt;
  return v;
}

std::string env_range_message(const char* name, std::string_view value, uint64_t min, uint64_t max,
                              std::string_view unit) {
  std::string m = std::string(name) + " is '" + std::string(value) + "'; expected an integer from " +
                  std::to_string(min) + " to " + std::to_string(max);
  if (!unit.empty()) m += " (" + std::string(unit) + ")";
  return m;
}

std::optional<uint64_t> env_uint(const char* name, uint64_t min, uint64_t max, std::string_view unit) {
  const char* value = std::getenv(name);
  if (!value) return std::nullopt;
  if (auto v = parse_decimal(value, min, max)) return v;
  throw Error(env_range_message(name, value, min, max, unit));
}

}  // namespace chorus::vk
