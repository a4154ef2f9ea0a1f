#include "policies/mpc.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <utility>

#include <gtest/gtest.h>

#include "tests/policies/policy_test_util.h"

#include "policies/estimate.h"

namespace kvs::policies {
namespace {

using testing::LevelSpec;
using testing::make_chunks;
using testing::make_state;

const std::vector<LevelSpec> kLadder = {{4000000, 0.005, 0.0}, {2000000, 0.005, 0.01}, {1000000, 0.005, 0.03}};

uint64_t bytes_of(const std::vector<ChunkInfo>& chunks, uint32_t c, int level) {
  return level == Action::kRecompute ? 0 : chunks[c].bytes[size_t(level)];
}

TEST(Mpc, FastLinkPicksFinest) {
  const auto chunks = make_chunks(10, kLadder, 1.0);
  for (const char* name : {"mpc", "robust-mpc"}) {
    auto p = make_policy(name, {});
    const Action a = p->decide(make_state(chunks, 2, 2.0, 0.1, {1000, 1000, 1000, 1000, 1000}));
    EXPECT_EQ(a.level, 0) << name << ": " << a.reason;
  }
}

TEST(Mpc, BandwidthDropStepsToCoarserLevelWithinOneChunk) {
  const auto chunks = make_chunks(10, kLadder, 100.0);
  for (const char* name : {"mpc", "robust-mpc"}) {
    auto p = make_policy(name, {});
    const Action before = p->decide(make_state(chunks, 5, 1.5, 0.5, {1000, 1000, 1000, 1000, 1000}));
    EXPECT_EQ(before.level, 0) << name << ": " << before.reason;
    const Action after = p->decide(make_state(chunks, 6, 1.5, 0.6, {1000, 1000, 1000, 1000, 1000, 20}));
    EXPECT_FALSE(after.recompute()) << name << ": " << after.reason;
    EXPECT_LT(bytes_of(chunks, 6, after.level), bytes_of(chunks, 5, before.level)) << name << ": " << after.reason;
  }
}

TEST(Mpc, RobustIsNeverMoreAggressiveThanMpc) {
  const auto chunks = make_chunks(16, kLadder, 100.0);
  const std::vector<double> rates = {150, 60, 140, 45, 120, 70, 160, 40, 110, 90, 130, 55, 100, 65, 150};
  auto mpc = make_policy("mpc", {});
  auto robust = make_policy("robust-mpc", {});
  int strictly_safer = 0;
  double elapsed = 0.05;
  for (uint32_t k = 1; k < 16; ++k) {
    const std::vector<double> seen(rates.begin(), rates.begin() + k);
    const StreamState s = make_state(chunks, k, 3.0, elapsed, seen);
    const Action a = mpc->decide(s), b = robust->decide(s);
    EXPECT_LE(bytes_of(chunks, k, b.level), bytes_of(chunks, k, a.level)) << "chunk " << k << ": " << b.reason
                                                                            << " vs " << a.reason;
    strictly_safer += bytes_of(chunks, k, b.level) < bytes_of(chunks, k, a.level);
    elapsed += 8.0 * double(bytes_of(chunks, k, a.level)) / (rates[k - 1] * 1e6);
  }
  EXPECT_GT(strictly_safer, 0);  // the errors do make robust-mpc more careful somewhere
}

TEST(Mpc, PredictionErrorsAreKeptAcrossCalls) {
  // Samples seen one decision at a time or all at once give the same errors.
  const auto chunks = make_chunks(16, kLadder, 100.0);
  const std::vector<double> rates = {200, 30, 180, 25, 210, 200, 190, 205, 195, 200, 198, 202, 200, 199};
  auto stepwise = make_policy("robust-mpc", {});
  for (uint32_t k = 1; k <= 14; ++k)
    stepwise->decide(make_state(chunks, k, 3.0, 0.1 * k, std::vector<double>(rates.begin(), rates.begin() + k)));
  auto at_once = make_policy("robust-mpc", {});
  const StreamState last = make_state(chunks, 15, 3.0, 1.5, rates);
  const Action a = stepwise->decide(last), b = at_once->decide(last);
  EXPECT_EQ(a.level, b.level);
  EXPECT_EQ(a.reason, b.reason);
  // The last 5 samples are within 10% of their estimates (made from samples 5-9 on):
  // the errors of 25 (vs ~60) and of 210 (vs ~56) have left the window.
  EXPECT_NE(a.reason.find("/ (1+0.0"), std::string::npos) << a.reason;
}

TEST(Mpc, RecomputesWhenNoLevelMeetsTheSloAndRecomputeIsFaster) {
  const auto fast_gpu = make_chunks(10, kLadder, 0.05);
  for (const char* name : {"mpc", "robust-mpc"}) {
    auto p = make_policy(name, {});
    const Action a = p->decide(make_state(fast_gpu, 2, 0.5, 0.1, {1, 1, 1, 1, 1}));
    EXPECT_TRUE(a.recompute()) << name << ": " << a.reason;
  }
  // Recompute slower than the coarsest fetch: the least late plan fetches the fewest bytes.
  const auto slow_gpu = make_chunks(10, kLadder, 100.0);
  auto p = make_policy("mpc", {});
  EXPECT_EQ(p->decide(make_state(slow_gpu, 2, 0.5, 0.1, {1, 1, 1, 1, 1})).level, 2);
}

TEST(Mpc, DominatedLevelIsNeverChosen) {
  // Level 1 has more bytes and more loss than level 0: a non-monotone ladder.
  const auto chunks = make_chunks(10, {{2000000, 0.005, 0.0}, {3000000, 0.005, 0.02}, {500000, 0.005, 0.04}}, 100.0);
  bool saw_coarse = false, saw_fine = false;
  for (double r : {5.0, 20.0, 50.0, 100.0, 200.0, 1000.0}) {
    auto p = make_policy("mpc", {});
    const Action a = p->decide(make_state(chunks, 2, 1.0, 0.1, {r, r, r}));
    EXPECT_NE(a.level, 1) << r << ": " << a.reason;
    saw_coarse |= a.level == 2;
    saw_fine |= a.level == 0;
  }
  EXPECT_TRUE(saw_coarse);
  EXPECT_TRUE(saw_fine);
}

TEST(Mpc, StartsWithTheInitialRate) {
  const auto chunks = make_chunks(10, kLadder, 100.0);
  auto fast = make_policy("mpc", {{"initial_mbps", "1000"}});
  const Action a = fast->decide(make_state(chunks, 0, 1.0, 0.0, {}));
  EXPECT_EQ(a.level, 0) << a.reason;
  EXPECT_NE(a.reason.find("initial 1000.0 Mbit/s"), std::string::npos) << a.reason;
  auto slow = make_policy("robust-mpc", {{"initial_mbps", "50"}});
  const Action b = slow->decide(make_state(chunks, 0, 1.0, 0.0, {}));
  EXPECT_GT(b.level, 0) << b.reason;
}

TEST(Mpc, WithoutSloQualityDecides) {
  // No deadline: the exact options win; recompute (exact) and level 0 (exact) tie
  // on quality and the earlier predicted TTFT breaks the tie.
  const auto chunks = make_chunks(10, kLadder, 100.0);
  auto p = make_policy("mpc", {});
  EXPECT_EQ(p->decide(make_state(chunks, 2, 0.0, 0.1, {1000, 1000})).level, 0);
  // At 1 Mbit/s the network is the bottleneck (32 s per chunk): recomputing this
  // chunk meanwhile on the GPU (100 s) ends earlier than fetching it.
  EXPECT_TRUE(p->decide(make_state(chunks, 2, 0.0, 0.1, {1, 1})).recompute());
  // Every level lossy: only recompute is exact, however slow.
  const auto lossy = make_chunks(10, {{4000000, 0.005, 0.001}, {1000000, 0.005, 0.03}}, 100.0);
  EXPECT_TRUE(p->decide(make_state(lossy, 2, 0.0, 0.1, {1000, 1000})).recompute());
}

TEST(Mpc, TailCountsTheChunksBeyondTheHorizon) {
  // 20 chunks at 200 Mbit/s: 0.16 s per chunk at the finest level, 0.04 s at the
  // coarsest; 5 finest and 15 coarsest fit a 1.5 s SLO, 20 finest do not.
  const auto chunks = make_chunks(20, kLadder, 100.0);
  const StreamState s = make_state(chunks, 0, 1.5, 0.0, {200, 200, 200});
  const double deadline = deadline_s(s);
  MpcConfig last;
  const MpcPlan p = mpc_plan(s, last, 200e6);
  ASSERT_EQ(p.actions.size(), 5u);
  EXPECT_LE(p.ttft_end_s, deadline + 1e-9);
  EXPECT_NE(p.actions.back(), 0);  // the horizon's last action (= the tail's) is coarser
  // All-finest would be late by about 20 x 0.16 s - 1 s.
  Pipeline all_fine = Pipeline::at(s);
  for (int c = 0; c < 20; ++c) all_fine.fetch(fetch_s(4000000, 200e6, 0), 0.005);
  EXPECT_GT(all_fine.ttft_end_s(s.first_token_s), deadline + 1.0);
  // With the tail at the fewest bytes, the horizon itself can be finest, and the prediction still fits.
  MpcConfig coarsest;
  coarsest.tail_coarsest = true;
  const MpcPlan q = mpc_plan(s, coarsest, 200e6);
  EXPECT_EQ(q.actions, std::vector<int>(5, 0));
  EXPECT_LE(q.ttft_end_s, deadline + 1e-9);
  // Near the end the horizon shrinks to the chunks left.
  EXPECT_EQ(mpc_plan(make_state(chunks, 18, 1.5, 0.5, {200}), last, 200e6).actions.size(), 2u);
}

TEST(Mpc, ChunksStillInFlightDelayThePrediction) {
  // Two requests in flight: chunk 8 (4 MB, 0.32 s at 100 Mbit/s) is still on
  // its way when chunk 9, the last, is decided with 0.45 s left. Behind it the
  // finest level (0.32 s more) is late; only the coarsest (0.08 s) fits.
  const auto chunks = make_chunks(10, kLadder, 100.0);
  StreamState s = make_state(chunks, 9, 1.45, 1.0, {100, 100, 100});
  for (const char* name : {"mpc", "robust-mpc"}) {
    EXPECT_EQ(make_policy(name, {})->decide(s).level, 0) << name;  // all arrived: the finest fits
    StreamState behind = s;
    behind.decisions.back().arrived_s = -1;  // chunk 8 in flight
    const Action a = make_policy(name, {})->decide(behind);
    EXPECT_EQ(a.level, 2) << name << ": " << a.reason;
  }
}

// ---- the enumeration against a brute force of the objective ------------------

// Varied chunks (non-monotone in places): 3 levels + recompute.
std::vector<ChunkInfo> varied_chunks(uint32_t n) {
  std::vector<ChunkInfo> chunks(n);
  for (uint32_t c = 0; c < n; ++c) {
    auto& ch = chunks[c];
    ch.bytes = {3000000 + 100000 * c, 1500000 + 400000 * (c % 3), 800000 + 900000 * (c % 2)};
    ch.decode_s = {0.004 + 0.001 * c, 0.003, 0.002 + 0.0005 * c};
    ch.quality_cost = {0.0005 * (c % 2), 0.004 + 0.001 * c, 0.012 - 0.001 * c};
    ch.recompute_s = 0.05 + 0.02 * c;
  }
  return chunks;
}

// MPC's objective for one sequence, chunk by chunk. A recompute fetches
// first what policies::recompute_fetch says after every action before it
// (the request's decisions, the sequence, the tail's).
double brute_objective(const StreamState& s, const MpcConfig& cfg, double rate, const std::vector<int>& seq) {
  const auto& chunks = *s.chunks;
  std::vector<int> actions(s.total_chunks, Action::kRecompute);
  for (const Decision& d : s.decisions) actions[d.chunk] = d.level;
  double read_quality = 0;  // of the last step's recompute
  auto step = [&](Pipeline& p, uint32_t c, int a) {
    actions[c] = a;
    const RecomputeFetch f = recompute_fetch(chunks[c], c, [&](uint32_t j) { return actions[j]; });
    const uint64_t bytes = uint64_t(std::llround(f.bytes));
    read_quality = a == Action::kRecompute ? f.quality_cost : 0.0;
    if (a != Action::kRecompute)
      p.fetch(fetch_s(chunks[c].bytes[size_t(a)], rate, 0), chunks[c].decode_s[size_t(a)]);
    else if (bytes > 0)
      p.fetch(fetch_s(bytes, rate, 0), f.decode_s + chunks[c].recompute_s);
    else
      p.recompute(chunks[c].recompute_s);
  };
  auto quality = [&](uint32_t c, int a) {
    return a == Action::kRecompute ? read_quality : chunks[c].quality_cost[size_t(a)];
  };
  double range = 0;
  for (uint32_t c = 0; c < s.total_chunks; ++c)
    range += *std::max_element(chunks[c].quality_cost.begin(), chunks[c].quality_cost.end());
  const double lambda = cfg.lambda * range;
  Pipeline p = Pipeline::at(s);
  double qsum = 0, smooth = 0;
  double prev = s.decisions.empty() ? NAN : quality(s.decisions.back().chunk, s.decisions.back().level);
  uint32_t c = s.next_chunk;
  for (int a : seq) {
    step(p, c, a);
    const double q = quality(c, a);
    qsum += q;
    if (!std::isnan(prev)) smooth += std::fabs(q - prev);
    prev = q;
    ++c;
  }
  for (; c < s.total_chunks; ++c) {
    if (cfg.tail_coarsest) {
      const auto& b = chunks[c].bytes;
      step(p, c, int(std::min_element(b.begin(), b.end()) - b.begin()));
    } else {
      step(p, c, seq.back());
      qsum += quality(c, seq.back());
    }
  }
  const double overrun = std::max(0.0, p.ttft_end_s(s.first_token_s) - deadline_s(s));
  return -qsum - lambda * overrun - cfg.mu * smooth;
}

// mpc_plan against every sequence over the horizon; returns the plan and
// whether the best sequence is unique (then the plan must be it).
std::pair<MpcPlan, bool> check_against_brute_force(const StreamState& s, const MpcConfig& cfg, double rate,
                                                   const std::string& what) {
  const MpcPlan plan = mpc_plan(s, cfg, rate);
  const int H = int(std::min<uint32_t>(uint32_t(cfg.horizon), s.total_chunks - s.next_chunk));
  EXPECT_EQ(int(plan.actions.size()), H) << what;
  double best = -std::numeric_limits<double>::infinity(), second = best;
  std::vector<int> best_seq;
  int n = 1;
  for (int h = 0; h < H; ++h) n *= 4;
  for (int code = 0; code < n; ++code) {
    std::vector<int> seq;
    for (int h = 0, x = code; h < H; ++h, x /= 4) seq.push_back(x % 4 == 3 ? Action::kRecompute : x % 4);
    const double obj = brute_objective(s, cfg, rate, seq);
    if (obj > best) {
      second = best, best = obj, best_seq = seq;
    } else {
      second = std::max(second, obj);
    }
  }
  EXPECT_NEAR(plan.objective, best, 1e-9) << what;
  EXPECT_NEAR(brute_objective(s, cfg, rate, plan.actions), best, 1e-9) << what;
  const bool unique = best - second > 1e-9;
  if (unique) {
    EXPECT_EQ(plan.actions, best_seq) << what;
  }
  return {plan, unique};
}

TEST(Mpc, EnumerationEqualsBruteForce) {
  const auto chunks = varied_chunks(6);
  int cases = 0, recomputes = 0, unique = 0;
  for (uint32_t next : {0u, 2u, 3u, 4u})
    for (double rate_mbps : {20.0, 80.0, 300.0, 2000.0})
      for (double slo : {0.3, 0.8, 2.0})
        for (double mu : {0.0, 0.5})
          for (bool tail_coarsest : {false, true}) {
            StreamState s = make_state(chunks, next, slo, 0.1, {rate_mbps});
            s.gpu_busy_until_s = 0.12;
            s.first_token_s = 0.03;
            MpcConfig cfg;
            cfg.horizon = 3;
            cfg.mu = mu;
            cfg.tail_coarsest = tail_coarsest;
            const auto [plan, is_unique] = check_against_brute_force(s, cfg, rate_mbps * 1e6, "");
            unique += is_unique;
            recomputes += plan.actions.front() == Action::kRecompute;
            ++cases;
          }
  EXPECT_EQ(cases, 192);
  EXPECT_GT(unique, 50);
  EXPECT_GT(recomputes, 0);
  EXPECT_LT(recomputes, cases);
}

// The same for a sliding-window target: a recompute's fetch depends on the
// levels (and recomputes) before it, in the request's decisions, the horizon
// and the tail.
TEST(Mpc, EnumerationEqualsBruteForceWithWindowFetches) {
  auto chunks = varied_chunks(7);
  // Chunks 0 to 2: no layer of the query reads them; a recompute that reads them takes on their cost.
  std::vector<std::vector<double>> own_cost(chunks.size());
  for (uint32_t c = 0; c < 3; ++c) {
    own_cost[c] = chunks[c].quality_cost;
    std::fill(chunks[c].quality_cost.begin(), chunks[c].quality_cost.end(), 0.0);
  }
  for (uint32_t c = 1; c < chunks.size(); ++c)  // reads of up to three chunks back, some empty
    for (uint32_t k = 0; k < std::min(c, 3u); ++k) {
      ChunkInfo::WindowRead r;
      const ChunkInfo& earlier = chunks[c - 1 - k];
      const double share = (c + k) % 4 == 0 ? 0.0 : 0.25 + 0.1 * k;
      for (size_t l = 0; l < earlier.bytes.size(); ++l) {
        r.bytes.push_back(share * double(earlier.bytes[l]));
        r.decode_s.push_back(share * earlier.decode_s[l]);
      }
      r.layers = share > 0 ? 3 : 0;
      r.quality_cost = own_cost[c - 1 - k];
      chunks[c].window_reads.push_back(r);
    }
  int cases = 0, fetching = 0, unique = 0;
  for (uint32_t next : {0u, 1u, 2u, 3u, 5u})
    for (double rate_mbps : {20.0, 300.0, 2000.0})
      for (double slo : {0.3, 0.8, 2.0})
        for (bool tail_coarsest : {false, true})
          for (int history : {0, 1}) {
            StreamState s = make_state(chunks, next, slo, 0.1, {rate_mbps});
            for (Decision& d : s.decisions) d.level = history ? int(d.chunk % 3) : (d.chunk == 1 ? Action::kRecompute : 2);
            const RecomputeFetch f = recompute_fetch(chunks[next], next, [&](uint32_t j) { return s.decisions[j].level; });
            s.recompute_fetch_bytes = uint64_t(std::llround(f.bytes));  // as the simulator says
            s.recompute_fetch_decode_s = f.decode_s;
            s.recompute_fetch_quality_cost = f.quality_cost;
            s.gpu_busy_until_s = 0.12;
            s.first_token_s = 0.03;
            MpcConfig cfg;
            cfg.horizon = 3;
            cfg.tail_coarsest = tail_coarsest;
            const std::string what = "next " + std::to_string(next) + " rate " + std::to_string(rate_mbps) + " slo " +
                                     std::to_string(slo) + " history " + std::to_string(history);
            unique += check_against_brute_force(s, cfg, rate_mbps * 1e6, what).second;
            fetching += s.recompute_fetch_bytes > 0;
            ++cases;
          }
  EXPECT_EQ(cases, 180);
  EXPECT_GT(unique, 40);
  EXPECT_GT(fetching, 20);
}

TEST(Mpc, NameShowsParameters) {
  EXPECT_EQ(make_policy("mpc", {})->name(), "mpc(horizon=5,window=5,lambda=10,mu=0,initial_mbps=100,tail=last)");
  EXPECT_EQ(make_policy("robust-mpc", {{"horizon", "3"}, {"tail", "coarsest"}})->name(),
            "robust-mpc(horizon=3,window=5,lambda=10,mu=0,initial_mbps=100,tail=coarsest)");
}

}  // namespace
}  // namespace kvs::policies
