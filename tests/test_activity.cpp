// A device's recent activity (vkdevice/activity.h): the sums the per-device view prints, from
// steps given here (no GPU, no clock: every number is chosen by the test).
#include <gtest/gtest.h>

#include <vector>

#include "vkdevice/activity.h"

namespace chorus {
namespace {

using vk::ActivityStep;
using vk::ActivityWindow;

constexpr uint64_t kMs = 1'000'000;

TEST(Activity, TheSlowDeviceIsBusiestAndWaitsLeastWhileTheFastOneWaitsForIt) {
  // Two devices of a tensor split, 10 ms per token: the slow one computes for 9 ms of each
  // token, the fast one for 3 ms and waits at the reduces for the rest.
  ActivityWindow slow, fast;
  for (int i = 0; i < 10; ++i) {
    slow.add(ActivityStep{10 * kMs, 1, 9 * kMs});
    fast.add(ActivityStep{10 * kMs, 1, 3 * kMs});
  }
  const vk::ActivitySummary s = slow.summary(), f = fast.summary();
  EXPECT_DOUBLE_EQ(s.busy_fraction(), 0.9);
  EXPECT_DOUBLE_EQ(f.busy_fraction(), 0.3);
  EXPECT_DOUBLE_EQ(s.busy_ms_per_token(), 9.0);
  EXPECT_DOUBLE_EQ(s.wait_ms_per_token(), 1.0);
  EXPECT_DOUBLE_EQ(f.wait_ms_per_token(), 7.0);
  EXPECT_EQ(s.tokens, 10u);
}

TEST(Activity, OnlyTheLastStepsCount) {
  ActivityWindow w;
  for (size_t i = 0; i < vk::kActivitySteps; ++i) w.add(ActivityStep{10 * kMs, 1, 10 * kMs});  // busy all the time
  for (size_t i = 0; i < vk::kActivitySteps; ++i) w.add(ActivityStep{10 * kMs, 1, 5 * kMs});   // then half of it
  const vk::ActivitySummary a = w.summary();
  EXPECT_EQ(a.steps, vk::kActivitySteps);
  EXPECT_DOUBLE_EQ(a.busy_fraction(), 0.5);
}

TEST(Activity, PrefillStepsCountTheirTokensAndTheFractionWeighsStepsByTheirWallTime) {
  ActivityWindow w;
  w.add(ActivityStep{90 * kMs, 64, 90 * kMs});  // a micro-batch of 64 tokens, busy throughout
  w.add(ActivityStep{10 * kMs, 1, 0});          // a token in which the device did nothing
  const vk::ActivitySummary a = w.summary();
  EXPECT_EQ(a.tokens, 65u);
  EXPECT_DOUBLE_EQ(a.busy_fraction(), 0.9);
  EXPECT_DOUBLE_EQ(a.busy_ms_per_token(), 90.0 / 65);
}

TEST(Activity, ADeviceWithoutTimestampsHasStepsButNoBusyTime) {
  ActivityWindow w;
  w.add(ActivityStep{10 * kMs, 1, std::nullopt});
  const vk::ActivitySummary a = w.summary();
  EXPECT_EQ(a.steps, 1u);
  EXPECT_FALSE(a.timed());
  EXPECT_EQ(a.busy_fraction(), 0.0);
  EXPECT_EQ(a.wait_ms_per_token(), 0.0);
}

TEST(Activity, StepsWithoutTimestampsAreLeftOutOfTheFraction) {
  ActivityWindow w;
  w.add(ActivityStep{10 * kMs, 1, 4 * kMs});
  w.add(ActivityStep{30 * kMs, 1, std::nullopt});  // e.g. its timestamps were not all written
  const vk::ActivitySummary a = w.summary();
  EXPECT_EQ(a.timed_steps, 1u);
  EXPECT_DOUBLE_EQ(a.busy_fraction(), 0.4);
  EXPECT_EQ(a.wall_ns, 40 * kMs);
}

TEST(Activity, ABusyTimeOverItsStepsWallTimeCountsAsTheWallTime) {
  // Timer rounding (or a device clock a hair fast) never gives a fraction above 1.
  ActivityWindow w;
  w.add(ActivityStep{10 * kMs, 1, 10 * kMs + 3});
  const vk::ActivitySummary a = w.summary();
  EXPECT_EQ(a.busy_ns, 10 * kMs);
  EXPECT_DOUBLE_EQ(a.busy_fraction(), 1.0);
  EXPECT_DOUBLE_EQ(a.wait_ms_per_token(), 0.0);
}

TEST(Activity, AnEmptyWindowHasNothing) {
  const vk::ActivitySummary a = ActivityWindow().summary();
  EXPECT_EQ(a.steps, 0u);
  EXPECT_EQ(a.busy_fraction(), 0.0);
  EXPECT_EQ(a.busy_ms_per_token(), 0.0);
}

}  // namespace
}  // namespace chorus
