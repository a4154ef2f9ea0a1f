#include "policies/bola.h"

#include <memory>
#include <set>

#include <gtest/gtest.h>

#include "tests/policies/policy_test_util.h"

namespace kvs::policies {
namespace {

using testing::LevelSpec;
using testing::make_chunks;
using testing::make_state;

// At 100 Mbit/s the levels take 0.32, 0.16 and 0.08 s on the network.
const std::vector<LevelSpec> kLadder = {{4000000, 0.005, 0.0}, {2000000, 0.005, 0.01}, {1000000, 0.005, 0.03}};

TEST(Bola, FastLinkPicksFinest) {
  const auto chunks = make_chunks(10, kLadder, 1.0);
  auto p = make_policy("bola", {});
  for (uint32_t k = 2; k < 10; ++k) {
    const Action a = p->decide(make_state(chunks, k, 2.0, 0.05 * k, {1000, 1000, 1000, 1000, 1000}));
    EXPECT_EQ(a.level, 0) << k << ": " << a.reason;
  }
}

TEST(Bola, WithoutSloPicksTheLeastLoss) {
  const auto chunks = make_chunks(10, kLadder, 0.01);
  EXPECT_EQ(make_policy("bola", {})->decide(make_state(chunks, 2, 0.0, 0.1, {1, 1})).level, 0);
  // The least loss is not at level 0 here.
  const auto swapped = make_chunks(10, {{2000000, 0.005, 0.01}, {3000000, 0.005, 0.0}}, 0.01);
  EXPECT_EQ(make_policy("bola", {})->decide(make_state(swapped, 2, 0.0, 0.1, {1, 1})).level, 1);
}

// Decisions of fresh policies for chunk 2 of 10 over 100 Mbit/s, as the time left shrinks.
std::vector<int> sweep(const PolicyParams& params, const std::vector<ChunkInfo>& chunks) {
  std::vector<int> levels;
  for (int i = 0; i <= 30; ++i) {
    auto p = make_policy("bola", params);
    const Action a = p->decide(make_state(chunks, 2, 2.0, 0.05 * i, {100, 100, 100}));
    levels.push_back(a.level);
  }
  return levels;
}

TEST(Bola, CoarserLevelsAsTheSlackShrinks) {
  const auto chunks = make_chunks(10, kLadder, 100.0);
  // The buffer rule alone (first decision without BOLA-E's startup): all three levels.
  const std::vector<int> plain = sweep({{"placeholder", "false"}}, chunks);
  for (size_t i = 1; i < plain.size(); ++i)
    EXPECT_GE(plain[i], plain[i - 1]) << "elapsed " << 0.05 * double(i);  // here: higher level = fewer bytes
  EXPECT_EQ(plain.front(), 0);
  EXPECT_EQ(plain.back(), 2);
  EXPECT_EQ(std::set<int>(plain.begin(), plain.end()).size(), 3u);
  // BOLA-E's startup decision (throughput rule: 0.32 s per chunk never fits the
  // 0.25 s share of 8 chunks in 2 s) is monotone too.
  const std::vector<int> startup = sweep({}, chunks);
  for (size_t i = 1; i < startup.size(); ++i) EXPECT_GE(startup[i], startup[i - 1]) << "elapsed " << 0.05 * double(i);
  EXPECT_EQ(startup.front(), 1);
  EXPECT_EQ(startup.back(), 2);
  // Over one request (the same object, time advancing by each chosen fetch),
  // after the startup decision the level only steps down as the slack is spent.
  auto p = make_policy("bola", {});
  std::vector<int> run;
  double elapsed = 0;
  for (uint32_t k = 0; k < 10; ++k) {
    const Action a = p->decide(make_state(chunks, k, 2.0, elapsed, {100, 100, 100}));
    ASSERT_FALSE(a.recompute()) << a.reason;
    run.push_back(a.level);
    elapsed += 8.0 * double(chunks[k].bytes[size_t(a.level)]) / 100e6;
  }
  for (size_t i = 2; i < run.size(); ++i) EXPECT_GE(run[i], run[i - 1]) << "chunk " << i;
  EXPECT_EQ(run[1], 0);  // plenty of slack after startup: the finest
  EXPECT_EQ(run.back(), 2);
  EXPECT_LE(elapsed + 0.005 + 0.02, 2.0);  // and the spending kept the SLO
}

TEST(Bola, PlaceholderKeepsTheThroughputRulesChoice) {
  // 2 chunks left, slack 0.2 s: the buffer rule alone keeps the coarsest level
  // (below ~0.27 s); the throughput rule finds level 1 sustainable (0.16 s
  // per chunk within a 0.18 s share), and the placeholder lets BOLA take it.
  const auto chunks = make_chunks(10, kLadder, 100.0);
  const StreamState s = make_state(chunks, 8, 2.0, 1.615, {100, 100, 100});
  const Action plain = make_policy("bola", {{"placeholder", "false"}})->decide(s);
  EXPECT_EQ(plain.level, 2) << plain.reason;
  auto p = make_policy("bola", {});
  const Action first = p->decide(s);
  EXPECT_EQ(first.level, 1) << first.reason;
  EXPECT_EQ(first.reason.find("placeholder 0.000"), std::string::npos) << first.reason;
  // The last chunk: its slack (0.12 s) plus the placeholder is still below the rule's threshold.
  EXPECT_EQ(p->decide(make_state(chunks, 9, 2.0, 1.775, {100, 100, 100, 100})).level, 2);
}

TEST(Bola, InsufficientSlackRuleCapsTheExtraTime) {
  // A small target makes the rule want the finest level at 0.2 s of slack, but
  // that level takes 0.24 s more than the coarsest: the rule steps down to
  // level 1 (0.08 s more <= 0.9 x 0.2 s).
  const auto chunks = make_chunks(10, kLadder, 100.0);
  const StreamState s = make_state(chunks, 8, 2.0, 1.615, {100, 100, 100});
  const PolicyParams small = {{"placeholder", "false"}, {"min_slack", "0.01"}, {"target_slack", "0.02"}};
  PolicyParams no_ibr = small;
  no_ibr["ibr"] = "false";
  EXPECT_EQ(make_policy("bola", no_ibr)->decide(s).level, 0);
  const Action a = make_policy("bola", small)->decide(s);
  EXPECT_EQ(a.level, 1) << a.reason;
  EXPECT_NE(a.reason.find("insufficient slack"), std::string::npos) << a.reason;
}

TEST(Bola, RecomputesOnlyWhenLateAndFaster) {
  // 1 Mbit/s: 8 s for the fewest bytes, far past a 0.5 s SLO.
  const auto fast_gpu = make_chunks(10, kLadder, 0.05);
  const Action a = make_policy("bola", {})->decide(make_state(fast_gpu, 2, 0.5, 0.1, {1, 1, 1}));
  EXPECT_TRUE(a.recompute()) << a.reason;
  const auto slow_gpu = make_chunks(10, kLadder, 100.0);
  EXPECT_EQ(make_policy("bola", {})->decide(make_state(slow_gpu, 2, 0.5, 0.1, {1, 1, 1})).level, 2);
  // With slack to spare, recompute is not taken even though it is exact.
  const auto quick = make_chunks(10, kLadder, 0.001);
  EXPECT_FALSE(make_policy("bola", {})->decide(make_state(quick, 2, 2.0, 0.1, {100, 100})).recompute());
}

TEST(Bola, LadderSkipsDominatedLevels) {
  ChunkInfo c;
  c.bytes = {2000000, 3000000, 500000};
  c.quality_cost = {0.0, 0.02, 0.04};
  c.decode_s = {0.005, 0.005, 0.005};
  EXPECT_EQ(bola_ladder(c, 3), (std::vector<int>{2, 0}));
  c.bytes = {1000000, 1000000, 2000000, 4000000};
  c.quality_cost = {0.01, 0.005, 0.0, 0.0};
  c.decode_s = {0.005, 0.005, 0.005, 0.005};
  EXPECT_EQ(bola_ladder(c, 4), (std::vector<int>{1, 2}));
  EXPECT_EQ(bola_ladder(c, 1), (std::vector<int>{0}));
}

TEST(Bola, DominatedLevelIsNeverChosen) {
  const auto chunks = make_chunks(10, {{2000000, 0.005, 0.0}, {3000000, 0.005, 0.02}, {500000, 0.005, 0.04}}, 100.0);
  const std::vector<int> levels = sweep({}, chunks);
  const std::set<int> seen(levels.begin(), levels.end());
  EXPECT_EQ(seen, (std::set<int>{0, 2}));
}

TEST(Bola, NameShowsParameters) {
  EXPECT_EQ(make_policy("bola", {})->name(),
            "bola(min_slack=0.1,target_slack=0.25,window=5,initial_mbps=100,placeholder=true,ibr=true)");
}

}  // namespace
}  // namespace kvs::policies
