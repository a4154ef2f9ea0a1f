#include "policies/cachegen.h"

#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "tests/policies/policy_test_util.h"

#include "base/error.h"
#include "policies/policy.h"
#include "traces/trace.h"

namespace kvs::policies {
namespace {

using testing::three_level_chunks;  // 1, 0.5, 0.25 MB (policy_test_util.h)

StreamState make_state(const std::vector<ChunkInfo>& chunks, uint32_t next, double now_s, double slo_s) {
  StreamState s;
  s.now_s = now_s;
  s.elapsed_s = now_s;  // the request started at 0
  s.slo_s = slo_s;
  s.next_chunk = next;
  s.total_chunks = uint32_t(chunks.size());
  s.levels = 3;
  s.chunks = &chunks;
  return s;
}

// A chunk sample of `mbps` Mbit/s ending at `end_s` (1 MB).
ThroughputSample sample(double mbps, double end_s) {
  const double dur = 8.0 / mbps;
  return {end_s - dur, end_s, 1000000};
}

NetworkFuture constant_link(double bps) {
  NetworkFuture f;
  f.rate_bps = bps;
  return f;
}

traces::Trace step_trace(std::vector<traces::RateSegment> segs, double duration_s, bool loops) {
  traces::Trace t;
  t.name = "test";
  t.segments = std::move(segs);
  t.duration_s = duration_s;
  t.loops = loops;
  return t;
}

// ---- trace_transfer_s -------------------------------------------------------------

TEST(TraceTransfer, ConstantRateAndPayloadShare) {
  NetworkFuture f = constant_link(8e6);
  EXPECT_DOUBLE_EQ(trace_transfer_s(f, 3.0, 1000000), 1.0);
  f.payload_share = 0.5;  // half the wire carries headers: twice as long
  EXPECT_DOUBLE_EQ(trace_transfer_s(f, 3.0, 1000000), 2.0);
  EXPECT_EQ(trace_transfer_s(f, 3.0, 0), 0.0);
  EXPECT_GE(trace_transfer_s(constant_link(0), 0, 1), 1e17);
}

TEST(TraceTransfer, WalksSegmentsOutagesAndWraps) {
  // 8 Mbit/s for 0.5 s, an outage for 0.5 s, 2 Mbit/s for 1 s; loops every 2 s.
  const auto tr = step_trace({{0, 8e6}, {0.5, 0}, {1.0, 2e6}}, 2.0, true);
  NetworkFuture f;
  f.trace = &tr;
  // 8 Mbit from 0: 4 Mbit by 0.5 s, nothing until 1 s, 2 Mbit by 2 s, 2 Mbit more by 2.25 s (wrapped).
  EXPECT_NEAR(trace_transfer_s(f, 0, 1000000), 2.25, 1e-12);
  // From 0.75 s (inside the outage): 2 Mbit by 2 s, 4 more by 2.5 s, the outage again, the last 2 by 4 s.
  EXPECT_NEAR(trace_transfer_s(f, 0.75, 1000000), 3.25, 1e-12);
  // Many periods (each carries 6 Mbit): the answer carries exactly the bits.
  for (double start : {0.0, 0.3, 1.7, 5.2}) {
    const double t = trace_transfer_s(f, start, 10000000);  // 80 Mbit
    EXPECT_NEAR(tr.bits_between(start, start + t), 80e6, 1.0) << start;
    EXPECT_LT(tr.bits_between(start, start + t - 1e-6), 80e6) << start;
  }
}

TEST(TraceTransfer, TraceThatEndsNeverFinishes) {
  const auto tr = step_trace({{0, 8e6}}, 1.0, false);
  NetworkFuture f;
  f.trace = &tr;
  EXPECT_NEAR(trace_transfer_s(f, 0.5, 250000), 0.25, 1e-12);
  EXPECT_GE(trace_transfer_s(f, 0.5, 1000000), 1e17);  // only 4 Mbit left
  EXPECT_GE(trace_transfer_s(f, 2.0, 1), 1e17);
}

// ---- cachegen-code ----------------------------------------------------------------

std::unique_ptr<Policy> code_policy(const NetworkFuture& f, PolicyParams params = {}) {
  auto p = make_policy("cachegen-code", params);
  p->see_future(f);
  return p;
}

TEST(CacheGenCode, IsAnOracleByName) {
  EXPECT_TRUE(policy_info("cachegen-code").reads_future);
  EXPECT_EQ(make_policy("cachegen-code", {})->name(), "cachegen-code(oracle,bw=mean,recompute_charge=0.2)");
}

TEST(CacheGenCode, FirstLevelStrictlyUnderTheFixedBudget) {
  const auto chunks = three_level_chunks(4);
  const NetworkFuture f = constant_link(8e6);  // 1 MB: 1 s, 0.5 MB: 0.5 s
  // SLO 4 s over 4 chunks: 1 s each; level 0 takes exactly 1 s, which is not under it.
  EXPECT_EQ(code_policy(f)->decide(make_state(chunks, 0, 0, 4.0)).level, 1);
  EXPECT_EQ(code_policy(f)->decide(make_state(chunks, 0, 0, 4.4)).level, 0);
  // No SLO: no budget, the best level.
  EXPECT_EQ(code_policy(f)->decide(make_state(chunks, 0, 0, 0)).level, 0);
}

TEST(CacheGenCode, BudgetIgnoresElapsedTime) {
  const auto chunks = three_level_chunks(4);
  auto p = code_policy(constant_link(8e6));
  // Far past the SLO, the budget is still SLO / chunks: unused or overspent time is not carried.
  EXPECT_EQ(p->decide(make_state(chunks, 3, 50.0, 4.4)).level, 0);
}

TEST(CacheGenCode, BudgetDividesByTheCodesRoundedChunkCount) {
  // config_selection: SLO / round(tokens / chunk size) (Python's round, half to
  // even). At 8 Mbit/s the levels take 1, 0.5 and 0.25 s; with a 2.4 s SLO the
  // budget is 1.2 s over 2 chunks (level 0 fits) and 0.8 s over 3 (level 1).
  auto chunks = three_level_chunks(3);
  for (const auto& [last_tokens, level] : std::vector<std::pair<uint32_t, int>>{
           {1000, 1}, {600, 1}, {501, 1}, {500, 0}, {400, 0}, {1, 0}}) {
    chunks[2].tokens = last_tokens;
    auto p = make_policy("cachegen-code", {});
    p->see_future(constant_link(8e6));
    EXPECT_EQ(p->decide(make_state(chunks, 0, 0.0, 2.4)).level, level) << last_tokens << " tokens in the last chunk";
  }
  // 4,500 tokens in five chunks: round(4.5) = 4 (half to even), a budget of 0.6 s
  // (level 1), not 0.48 s (level 2).
  auto five = three_level_chunks(5);
  five[4].tokens = 500;
  auto p = make_policy("cachegen-code", {});
  p->see_future(constant_link(8e6));
  EXPECT_EQ(p->decide(make_state(five, 0, 0.0, 2.4)).level, 1);
}

TEST(CacheGenCode, RecomputesWhenNoLevelFitsAndSumsItsOwnTtft) {
  const auto chunks = three_level_chunks(3, /*recompute_s=*/5.0);
  const NetworkFuture f = constant_link(8e6);
  auto p = code_policy(f);
  // Budget 0.4 s: only level 2 (0.25 s) fits.
  EXPECT_EQ(p->decide(make_state(chunks, 0, 0, 1.2)).level, 2);
  EXPECT_LT(p->predicted_ttft_s(), 0);  // not all chunks decided yet
  auto tight = make_state(chunks, 1, 0.25, 0.6);  // budget 0.2 s: nothing fits
  const Action a = p->decide(tight);
  EXPECT_TRUE(a.recompute());  // whatever the recompute time (5 s): never compared
  EXPECT_NE(a.reason.find("recompute"), std::string::npos);
  EXPECT_EQ(p->decide(make_state(chunks, 2, 0.45, 1.2)).level, 2);
  // 0.25 + 0.2 (charged) + 0.25
  EXPECT_NEAR(p->predicted_ttft_s(), 0.7, 1e-12);
}

TEST(CacheGenCode, BestQualityFirstEvenWhenLevelsAreNotMonotone) {
  auto chunks = three_level_chunks(2);
  for (auto& c : chunks) c.quality_cost = {0.02, 0.03, 0.001};  // level 2 is the best here
  EXPECT_EQ(code_policy(constant_link(8e6))->decide(make_state(chunks, 0, 0, 100)).level, 2);
}

TEST(CacheGenCode, TrueBandwidthFromTheTraceMeanOrStart) {
  const auto chunks = three_level_chunks(4);
  // 8 Mbit/s for 0.5 s, then 2 Mbit/s.
  const auto tr = step_trace({{0, 8e6}, {0.5, 2e6}}, 100, true);
  NetworkFuture f;
  f.trace = &tr;
  const StreamState s = make_state(chunks, 0, 0, 6.0);  // budget 1.5 s
  // mean: level 0 takes 0.5 + 4/2 = 2.5 s; level 1 (4 Mbit) 0.5 s.
  EXPECT_EQ(code_policy(f, {{"bw", "mean"}})->decide(s).level, 1);
  // start: 8 Mbit/s held for the whole chunk, level 0 in 1 s.
  EXPECT_EQ(code_policy(f, {{"bw", "start"}})->decide(s).level, 0);
}

TEST(CacheGenCode, NeedsTheFuture) {
  const auto chunks = three_level_chunks(2);
  auto p = make_policy("cachegen-code", {});
  EXPECT_THROW(p->decide(make_state(chunks, 0, 0, 1)), Error);
}

// ---- cachegen (online) ------------------------------------------------------------

TEST(CacheGenOnline, FirstChunkWithoutMeasurementTakesTheConfiguredLevel) {
  const auto chunks = three_level_chunks(4);
  const StreamState s = make_state(chunks, 0, 0, 4);
  EXPECT_EQ(make_policy("cachegen", {})->decide(s).level, 1);  // medium
  EXPECT_EQ(make_policy("cachegen", {{"first", "finest"}})->decide(s).level, 0);
  EXPECT_EQ(make_policy("cachegen", {{"first", "coarsest"}})->decide(s).level, 2);
}

TEST(CacheGenOnline, BestLevelWhoseRemainingChunksFitTheSlo) {
  const auto chunks = three_level_chunks(5);
  StreamState s = make_state(chunks, 1, 1.0, 4.0);
  s.chunk_samples = {sample(8, 1.0)};  // 8 Mbit/s
  s.decisions = {{0, 0, 0.0, 1.0}};
  auto p = make_policy("cachegen", {});
  // Four chunks left: level 0 ends at 1 + 4 + 0.01 > 4, level 1 at 1 + 2 + 0.01.
  EXPECT_EQ(p->decide(s).level, 1);
  s.slo_s = 5.02;
  EXPECT_EQ(p->decide(s).level, 0);
  // The first token counts: 0.05 s more and level 0 no longer fits.
  s.first_token_s = 0.05;
  EXPECT_EQ(p->decide(s).level, 1);
}

TEST(CacheGenOnline, EstimateIsThePreviousChunkByDefault) {
  const auto chunks = three_level_chunks(5);
  StreamState s = make_state(chunks, 2, 2.0, 5.2);
  s.chunk_samples = {sample(1, 1.0), sample(8, 2.0)};
  // Previous chunk at 8 Mbit/s: three chunks at level 0 end at 2 + 3 + 0.01 <= 5.2.
  EXPECT_EQ(make_policy("cachegen", {})->decide(s).level, 0);
  // Harmonic mean of both (1.78 Mbit/s): even level 2 ends at 2 + 3 x 1.125 + 0.01 > 5.2; none fits, the soonest.
  const Action a = make_policy("cachegen", {{"k", "2"}})->decide(s);
  EXPECT_EQ(a.level, 2);
  EXPECT_NE(a.reason.find("none fits"), std::string::npos) << a.reason;
}

TEST(CacheGenOnline, RecomputesWhenThatFinishesSooner) {
  const auto chunks = three_level_chunks(3, /*recompute_s=*/0.2);
  StreamState s = make_state(chunks, 1, 1.0, 10);
  s.chunk_samples = {sample(8, 1.0)};
  // Sequential: recomputing (0.2 s) beats fetching level 0 (1 s + decode).
  EXPECT_TRUE(make_policy("cachegen", {{"timing", "sequential"}})->decide(s).recompute());
  EXPECT_EQ(make_policy("cachegen", {{"timing", "sequential"}, {"recompute", "false"}})->decide(s).level, 0);
  const auto slow = three_level_chunks(3, /*recompute_s=*/5.0);
  StreamState t = make_state(slow, 1, 1.0, 10);
  t.chunk_samples = s.chunk_samples;
  EXPECT_EQ(make_policy("cachegen", {{"timing", "sequential"}})->decide(t).level, 0);
  // Pipelined: recomputing chunk 1 (1.5 s on the GPU) while chunk 2 arrives (1 s) ends at 2.51 s
  // rather than 3.01 s; but not when the GPU is busy until 3 s (4.51 s against 3.02 s).
  const auto mid = three_level_chunks(3, /*recompute_s=*/1.5);
  StreamState u = make_state(mid, 1, 1.0, 10);
  u.chunk_samples = s.chunk_samples;
  EXPECT_TRUE(make_policy("cachegen", {})->decide(u).recompute());
  u.gpu_busy_until_s = 3.0;
  EXPECT_EQ(make_policy("cachegen", {})->decide(u).level, 0);
  // A windowed target whose recompute must first fetch 1 MB of left-out
  // layers (1 s at 8 Mbit/s): the recompute would end at 3.54 s, level 0 at 3.03 s.
  u.gpu_busy_until_s = 1.0;
  u.recompute_fetch_bytes = 1'000'000;
  u.recompute_fetch_decode_s = 0.01;
  EXPECT_EQ(make_policy("cachegen", {})->decide(u).level, 0);
  u.recompute_fetch_bytes = 100'000;  // 0.1 s: recomputing still ends first (2.61 s)
  EXPECT_TRUE(make_policy("cachegen", {})->decide(u).recompute());
}

TEST(CacheGenOnline, ChunksInFlightDelayThePlan) {
  const auto chunks = three_level_chunks(4);
  StreamState s = make_state(chunks, 2, 1.0, 3.1);
  s.chunk_samples = {sample(8, 1.0)};
  s.decisions = {{0, 0, 0.0, 1.0}, {1, 0, 0.1, -1}};
  // Without chunk 1 still in flight, two chunks at level 0 would end at 3.01; with it, 4.01.
  EXPECT_EQ(make_policy("cachegen", {{"recompute", "false"}})->decide(s).level, 1);
  s.decisions[1].arrived_s = 1.0;
  EXPECT_EQ(make_policy("cachegen", {{"recompute", "false"}})->decide(s).level, 0);
}

TEST(CacheGenOnline, NameListsParameters) {
  EXPECT_FALSE(policy_info("cachegen").reads_future);
  EXPECT_EQ(make_policy("cachegen", {})->name(), "cachegen(k=1,first=medium,timing=pipelined,recompute=true)");
}

}  // namespace
}  // namespace kvs::policies
