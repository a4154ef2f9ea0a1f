#include <gtest/gtest.h>

#include "base/error.h"
#include "policies/policy.h"

namespace kvs::policies {
namespace {

TEST(Registry, FixedReturnsItsLevel) {
  auto p = make_policy("fixed", {{"level", "2"}});
  StreamState s;
  s.levels = 4;
  EXPECT_EQ(p->decide(s).level, 2);
  EXPECT_FALSE(p->decide(s).recompute());
}

TEST(Registry, FixedRejectsLevelBeyondCodec) {
  auto p = make_policy("fixed", {{"level", "5"}});
  StreamState s;
  s.levels = 3;
  EXPECT_THROW(p->decide(s), Error);
}

TEST(Registry, RecomputeAlwaysRecomputes) {
  auto p = make_policy("recompute", {});
  EXPECT_TRUE(p->decide(StreamState{}).recompute());
}

TEST(Registry, UnknownPolicyAndParameterAreErrors) {
  EXPECT_THROW(make_policy("nope", {}), Error);
  EXPECT_THROW(make_policy("fixed", {{"lvl", "1"}}), Error);
  EXPECT_THROW(make_policy("fixed", {{"level", "x"}}), Error);
  EXPECT_THROW(make_policy("fixed", {{"level", "-1"}}), Error);
}

TEST(ThroughputSample, Rate) {
  ThroughputSample s{1.0, 2.0, 1000};
  EXPECT_DOUBLE_EQ(s.rate_bps(), 8000.0);
}

}  // namespace
}  // namespace kvs::policies
