// Strict numbers from the environment (vkdevice/env.h): digits only, in range, no wrap; a bad
// value is an error naming the variable and the accepted range.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "vkdevice/device.h"
#include "vkdevice/env.h"
#include "vkdevice/vk.h"

namespace chorus {
namespace {

TEST(ParseDecimal, AcceptsDigitsWithinTheRangeAndNothingElse) {
  EXPECT_EQ(vk::parse_decimal("5", 1, 10), 5u);
  EXPECT_EQ(vk::parse_decimal("0010", 1, 10), 10u);
  EXPECT_EQ(vk::parse_decimal("18446744073709551615", 0, UINT64_MAX), UINT64_MAX);
  for (const char* bad : {"", "-5", "+5", " 5", "5 ", "5ms", "0x10", "1e3", "5.0", "abc", "11", "0"})
    EXPECT_FALSE(vk::parse_decimal(bad, 1, 10).has_value()) << "'" << bad << "'";
}

TEST(ParseDecimal, RefusesValuesThatWouldWrapSixtyFourBits) {
  EXPECT_FALSE(vk::parse_decimal("18446744073709551616", 0, UINT64_MAX).has_value());
  EXPECT_FALSE(vk::parse_decimal("99999999999999999999", 0, UINT64_MAX).has_value());
  EXPECT_FALSE(vk::parse_decimal("184467440737095516150", 0, UINT64_MAX).has_value());
}

// Sets a variable for one test and restores the earlier state after it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_) ::setenv(name_, old_.c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(EnvUint, UnsetIsNulloptAndAGoodValueIsReturned) {
  {
    ScopedEnv e("CHORUS_TEST_ENV_NUMBER", nullptr);
    EXPECT_FALSE(vk::env_uint("CHORUS_TEST_ENV_NUMBER", 1, 10).has_value());
  }
  ScopedEnv e("CHORUS_TEST_ENV_NUMBER", "7");
  EXPECT_EQ(vk::env_uint("CHORUS_TEST_ENV_NUMBER", 1, 10), 7u);
}

TEST(EnvUint, TimeoutValuesThatOnceMeantInfiniteOrWrappedAreRefusedWithTheNameAndRange) {
  // -5 and 99999999999999999999 were taken as "no timeout"; 18446744073710 ms wrapped to
  // 0.45 ms when multiplied into nanoseconds.
  for (const char* bad : {"-5", "99999999999999999999", "18446744073710", "abc", "", "0", "10s"}) {
    ScopedEnv e("CHORUS_TIMEOUT_MS", bad);
    try {
      vk::env_uint("CHORUS_TIMEOUT_MS", 1, vk::kMaxTimeoutMs, "milliseconds");
      ADD_FAILURE() << "CHORUS_TIMEOUT_MS='" << bad << "' was accepted";
    } catch (const vk::Error& err) {
      const std::string m = err.what();
      EXPECT_NE(m.find("CHORUS_TIMEOUT_MS is '" + std::string(bad) + "'"), std::string::npos) << m;
      EXPECT_NE(m.find("expected an integer from 1 to 604800000 (milliseconds)"), std::string::npos) << m;
    }
  }
}

}  // namespace
}  // namespace chorus
