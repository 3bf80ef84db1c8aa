// vkdevice/env.h — strict numbers from text and from the environment.
//
// Owns: the one rule every number chorus reads from an environment variable (and every
// command-line count) follows: decimal digits only — no sign, no spaces, no suffix, no
// "0x" — within a stated [min, max], checked for overflow before it can wrap. A variable
// that is set but is not such a number is an error naming the variable and the range, never
// silently "infinite" or "default".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace chorus::vk {

// `text` as a decimal integer in [min, max], or nullopt (empty, a sign, any non-digit,
// overflow, or out of range).
std::optional<uint64_t> parse_decimal(std::string_view text, uint64_t min, uint64_t max);

// The environment variable `name` as a decimal integer in [min, max]; nullopt when it is not
// set. Throws vk::Error "CHORUS_TIMEOUT_MS is '-5'; expected an integer from 1 to 604800000
// (milliseconds)" when it is set to anything else (the empty string included). `unit` ends
// the message in parentheses when not empty.
std::optional<uint64_t> env_uint(const char* name, uint64_t min, uint64_t max, std::string_view unit = {});

// The message env_uint throws (exposed so callers that parse a composite variable such as
// "D:P" word it the same way).
std::string env_range_message(const char* name, std::string_view value, uint64_t min, uint64_t max,
                              std::string_view unit = {});

}  // namespace chorus::vk
