#include <limits>

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

TEST(Trace, TimeToDeliverInvertsBitsBetween) {
  const Trace t = two_steps(true);  // 1 Mbps on [0, 2), 4 Mbps on [2, 3), loops
  EXPECT_EQ(t.time_to_deliver(0.7, 0), 0.7);
  EXPECT_DOUBLE_EQ(t.time_to_deliver(0, 1e6), 1.0);
  EXPECT_DOUBLE_EQ(t.time_to_deliver(1, 3e6), 2.5);                // 1e6 then 2e6 at 4 Mbps
  EXPECT_DOUBLE_EQ(t.time_to_deliver(2.5, 2e6 + 6e6 * 3 + 1e6), 13);  // rest, 3 periods, 1 s
  EXPECT_DOUBLE_EQ(t.time_to_deliver(2.5, 2e6 + 6e6), 5.5 + 0.5);   // ends exactly where a period's 4 Mbps part ends
  EXPECT_DOUBLE_EQ(t.time_to_deliver(-1, 1e6), 1.0);                // nothing flows before 0
  EXPECT_EQ(two_steps(false).time_to_deliver(2.5, 3e6), std::numeric_limits<double>::infinity());
  EXPECT_DOUBLE_EQ(two_steps(false).time_to_deliver(2.5, 2e6), 3.0);
  // Against bits_between on a grid of starts and sizes.
  for (double t0 = 0; t0 < 7; t0 += 0.37)
    for (double bits = 1e5; bits < 3e7; bits *= 2.3) {
      const double t1 = t.time_to_deliver(t0, bits);
      EXPECT_NEAR(t.bits_between(t0, t1), bits, 1e-6 * bits) << t0 << " " << bits;
      EXPECT_LT(t.bits_between(t0, t1 - 1e-6), bits) << t0 << " " << bits;
    }
}

TEST(Trace, TimeToDeliverSkipsIdleSegments) {
  Trace t;
  t.segments = {{0.0, 0.0}, {1.0, 2e6}, {2.0, 0.0}};  // off, 2 Mbps, off; period 3 s
  t.duration_s = 3.0;
  EXPECT_DOUBLE_EQ(t.time_to_deliver(0, 1e6), 1.5);
  EXPECT_DOUBLE_EQ(t.time_to_deliver(1.5, 2e6), 4.5);  // 1e6 by 2.0, the rest from 4.0
  EXPECT_DOUBLE_EQ(t.time_to_deliver(0, 4e6), 5.0);    // ends where a period's data ends, not later
  Trace off;
  off.segments = {{0.0, 0.0}};
  off.duration_s = 1.0;
  EXPECT_EQ(off.time_to_deliver(0, 1), std::numeric_limits<double>::infinity());
}

}  // namespace
}  // namespace kvs::traces
