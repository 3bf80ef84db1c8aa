// The partition planner's properties: shards tile exactly, respect alignment, follow the ratio.
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>

#include "split/partition.h"

namespace chorus::split {
namespace {

void expect_tiles(const std::vector<Range>& r, uint64_t total) {
  ASSERT_FALSE(r.empty());
  EXPECT_EQ(r.front().begin, 0u);
  EXPECT_EQ(r.back().end, total);
  for (size_t i = 1; i < r.size(); ++i) EXPECT_EQ(r[i].begin, r[i - 1].end) << "gap or overlap at shard " << i;
}

TEST(Partition, ThreeToOneRatioGivesFirstDeviceThreeQuarters) {
  const auto r = partition(4096, {3, 1});
  EXPECT_EQ(r[0], (Range{0, 3072}));
  EXPECT_EQ(r[1], (Range{3072, 4096}));
}

TEST(Partition, ShardsTileRespectAlignmentAndStayWithinOneUnitOfTheRatio) {
  for (uint64_t total : {32ull, 172ull, 576ull, 4096ull, 32000ull, 49152ull})
    for (uint64_t align : {1ull, 4ull, 32ull, 256ull})
      for (const std::vector<double>& ratios : std::vector<std::vector<double>>{{1, 1}, {3, 1}, {1, 1, 1}, {5, 3, 1}, {0.24, 0.12}}) {
        if (align > total) continue;
        const auto r = partition(total, ratios, align);
        expect_tiles(r, total);
        double sum = 0;
        for (double x : ratios) sum += x;
        for (size_t i = 0; i + 1 < r.size(); ++i) {
          EXPECT_EQ(r[i].begin % align, 0u);
          EXPECT_EQ(r[i].end % align, 0u);
          const double exact = ratios[i] / sum * double(total - total % align);
          EXPECT_LE(std::abs(double(r[i].size()) - exact), double(align)) << "total " << total << " align " << align;
        }
      }
}

TEST(Partition, TinyShareRoundsToAnEmptyRangeRatherThanDisappearing) {
  const auto r = partition(64, {100, 1}, 32);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[1].size(), 0u);
  expect_tiles(r, 64);
}

TEST(Partition, NonPositiveRatiosAreRejectedWithTheirIndex) {
  EXPECT_THROW(partition(10, {1, 0}), std::invalid_argument);
  EXPECT_THROW(partition(10, {1, -2}), std::invalid_argument);
  EXPECT_THROW(partition(10, {}), std::invalid_argument);
  try {
    partition(10, {1, NAN});
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("ratio 1"), std::string::npos);
  }
}

}  // namespace
}  // namespace chorus::split
