#include "policies/rate.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/policies/policy_test_util.h"

#include "policies/policy.h"

namespace kvs::policies {
namespace {

using testing::three_level_chunks;  // 1, 0.5, 0.25 MB (policy_test_util.h)

// Chunk 1 of 5 at 1 s (four chunks left), the request started at 0, with
// `samples` chunk throughputs (Mbit/s, 1 MB each, one per second).
StreamState make_state(const std::vector<ChunkInfo>& chunks, double slo_s, const std::vector<double>& mbps) {
  StreamState s;
  s.now_s = s.elapsed_s = 1.0;
  s.slo_s = slo_s;
  s.next_chunk = 1;
  s.total_chunks = uint32_t(chunks.size());
  s.levels = 3;
  s.chunks = &chunks;
  double t = 0;
  for (double r : mbps) {
    s.chunk_samples.push_back({t, t + 8.0 / r, 1000000});
    t += 8.0 / r;
  }
  return s;
}

std::unique_ptr<Policy> rate(PolicyParams p = {}) { return make_policy("rate", p); }

TEST(Rate, NameAndDefaults) {
  EXPECT_FALSE(policy_info("rate").reads_future);
  EXPECT_EQ(rate()->name(), "rate(k=5,safety=0.9,recompute=true)");
}

TEST(Rate, FewestBytesBeforeAnyMeasurement) {
  auto chunks = three_level_chunks(5);
  EXPECT_EQ(rate()->decide(make_state(chunks, 5, {})).level, 2);
  for (auto& c : chunks) c.bytes = {1000000, 200000, 500000};  // not monotone
  EXPECT_EQ(rate()->decide(make_state(chunks, 5, {})).level, 1);
}

TEST(Rate, SafetyTimesEstimateAgainstTheShareOfTheBudget) {
  const auto chunks = three_level_chunks(5);
  // 10 Mbit/s x 0.9: level 0 takes 0.889 s; the share is (5 - 1) / 4 = 1 s.
  const StreamState s = make_state(chunks, 5, {10, 10, 10, 10, 10});
  const Action a = rate()->decide(s);
  EXPECT_EQ(a.level, 0);
  EXPECT_NE(a.reason.find("est 9.0 Mbit/s"), std::string::npos) << a.reason;
  // x 0.7: level 0 takes 1.14 s, level 1 0.57 s.
  EXPECT_EQ(rate({{"safety", "0.7"}})->decide(s).level, 1);
  // The first token comes out of the budget too: (5 - 1 - 0.6) / 4 < 0.889.
  StreamState t = s;
  t.first_token_s = 0.6;
  EXPECT_EQ(rate()->decide(t).level, 1);
}

TEST(Rate, HarmonicMeanOfTheLastKSamplesSkippingZeros) {
  const auto chunks = three_level_chunks(5);
  StreamState s = make_state(chunks, 5, {0.5, 10, 10, 10, 10, 10});
  EXPECT_EQ(rate()->decide(s).level, 0);  // the slow first sample is beyond k = 5
  // k = 6: 6 / (2 + 0.5) = 2.4 Mbit/s x 0.9: only level 2 (0.93 s) fits.
  EXPECT_EQ(rate({{"k", "6"}})->decide(s).level, 2);
  // A sample with no bytes is skipped.
  s.chunk_samples.push_back({20, 21, 0});
  EXPECT_EQ(rate({{"k", "1"}})->decide(s).level, 0);
}

TEST(Rate, DecodeLongerThanTheTransferIsTheChunksTime) {
  auto chunks = three_level_chunks(5);
  for (auto& c : chunks) c.decode_s[0] = 2.0;
  EXPECT_EQ(rate()->decide(make_state(chunks, 5, {10, 10, 10, 10, 10})).level, 1);
}

TEST(Rate, NothingFitsQuickestLevelOrRecompute) {
  // Share 0.4 / 4 = 0.1 s; the quickest level (2) takes 0.222 s.
  const std::vector<double> mbps = {10, 10, 10, 10, 10};
  const auto fast = three_level_chunks(5, /*recompute_s=*/0.1);
  EXPECT_TRUE(rate()->decide(make_state(fast, 1.4, mbps)).recompute());
  EXPECT_EQ(rate({{"recompute", "false"}})->decide(make_state(fast, 1.4, mbps)).level, 2);
  // A windowed target whose recompute must first fetch 0.25 MB (0.2 s at the
  // estimate, more than the quickest level's 0.222 s with the 0.1 s prefill).
  StreamState windowed = make_state(fast, 1.4, mbps);
  windowed.recompute_fetch_bytes = 250'000;
  EXPECT_EQ(rate()->decide(windowed).level, 2);
  windowed.recompute_fetch_bytes = 100'000;  // 0.08 s + 0.1 s < 0.222 s
  EXPECT_TRUE(rate()->decide(windowed).recompute());
  const auto slow = three_level_chunks(5, /*recompute_s=*/0.3);
  const Action a = rate()->decide(make_state(slow, 1.4, mbps));
  EXPECT_EQ(a.level, 2);
  EXPECT_NE(a.reason.find("quickest"), std::string::npos) << a.reason;
  // Past the SLO: nothing fits either.
  EXPECT_EQ(rate()->decide(make_state(slow, 0.5, mbps)).level, 2);
}

TEST(Rate, NoSloBestLevel) {
  const auto chunks = three_level_chunks(5);
  EXPECT_EQ(rate()->decide(make_state(chunks, 0, {0.1})).level, 0);
}

TEST(Rate, ChunksInFlightShareTheBudget) {
  const auto chunks = three_level_chunks(5);
  StreamState s = make_state(chunks, 5, {10, 10, 10, 10, 10});
  s.decisions = {{0, 0, 0.0, -1}};  // chunk 0 requested, not arrived: the share is 4 / 5 = 0.8 s
  EXPECT_EQ(rate()->decide(s).level, 1);
  s.decisions[0].arrived_s = 0.9;
  EXPECT_EQ(rate()->decide(s).level, 0);
  s.decisions[0] = {0, Action::kRecompute, 0.0, -1};  // recomputed chunks never arrive
  EXPECT_EQ(rate()->decide(s).level, 0);
}

}  // namespace
}  // namespace kvs::policies
