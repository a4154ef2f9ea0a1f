#include <gtest/gtest.h>

#include "traces/trace.h"

namespace kvs::traces {
namespace {

Trace two_steps(bool loops) {
  Trace t;
  t.segments = {{0.0, 1e6}, {2.0, 4e6}};
  t.duration_s = 3.0;
  t.loops = loops;
  return t;
}

TEST(Trace, RateAtFollowsSegmentsAndLoops) {
  const Trace t = two_steps(true);
  EXPECT_EQ(t.rate_at(0.0), 1e6);
  EXPECT_EQ(t.rate_at(1.999), 1e6);
  EXPECT_EQ(t.rate_at(2.0), 4e6);
  EXPECT_EQ(t.rate_at(3.5), 1e6);  // wrapped
  EXPECT_EQ(two_steps(false).rate_at(3.5), 0.0);
}

TEST(Trace, BitsBetweenIntegratesAcrossPeriods) {
  const Trace t = two_steps(true);
  EXPECT_DOUBLE_EQ(t.bits_between(0, 3), 2e6 + 4e6);
  EXPECT_DOUBLE_EQ(t.bits_between(1, 2.5), 1e6 + 2e6);
  EXPECT_DOUBLE_EQ(t.bits_between(2.5, 7), 2e6 + 6e6 + 1e6);  // 2.5..3, one period, 6..7
  EXPECT_DOUBLE_EQ(two_steps(false).bits_between(2.5, 7), 2e6);
}

}  // namespace
}  // namespace kvs::traces
