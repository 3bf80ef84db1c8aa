// The watchdog every host wait on a device uses (vkdevice/watchdog.h): a device is reported
// as stopped only after the limit passes without progress. Pure: the clock is passed in.
#include <gtest/gtest.h>

#include "vkdevice/watchdog.h"

namespace chorus::vk {
namespace {

constexpr uint64_t kMs = 1'000'000;

TEST(ProgressWatch, ASlowDeviceThatKeepsProgressingIsNeverReportedWhateverTheStepTakes) {
  ProgressWatch w(100 * kMs, 0, 10);
  // One segment every 90 ms for 100 segments: 9 s in all, 90 times the limit.
  for (uint64_t i = 1; i <= 100; ++i) EXPECT_FALSE(w.stalled(10 + i, i * 90 * kMs)) << "segment " << i;
}

TEST(ProgressWatch, ADeviceWhoseCounterStandsStillForTheLimitIsReported) {
  ProgressWatch w(100 * kMs, 0, 10);
  EXPECT_FALSE(w.stalled(11, 50 * kMs));
  EXPECT_FALSE(w.stalled(11, 149 * kMs));  // 99 ms since the last progress
  EXPECT_TRUE(w.stalled(11, 150 * kMs));   // 100 ms
  EXPECT_EQ(w.idle_ns(150 * kMs), 100 * kMs);
}

TEST(ProgressWatch, NoProgressAtAllFromTheStartIsReportedAfterTheLimit) {
  ProgressWatch w(100 * kMs, 5 * kMs, 3);
  EXPECT_FALSE(w.stalled(3, 104 * kMs));
  EXPECT_TRUE(w.stalled(3, 105 * kMs));
}

TEST(ProgressWatch, ProgressAfterAQuietSpellRestartsTheClock) {
  ProgressWatch w(100 * kMs, 0, 0);
  EXPECT_FALSE(w.stalled(0, 99 * kMs));
  EXPECT_FALSE(w.stalled(1, 180 * kMs));
  EXPECT_FALSE(w.stalled(1, 279 * kMs));
  EXPECT_TRUE(w.stalled(1, 280 * kMs));
}

}  // namespace
}  // namespace chorus::vk
