#include <functional>

#include <gtest/gtest.h>

#include "base/error.h"
#include "policies/policy.h"
#include "tests/policies/policy_test_util.h"

namespace kvs::policies {
namespace {

using testing::error_of;

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

TEST(Registry, ErrorsNameThePolicyTheParameterAndTheClosestName) {
  EXPECT_EQ(error_of([] { make_policy("fixd", {}); }).find("unknown policy 'fixd' (did you mean 'fixed'?)"), 0u);
  const std::string e = error_of([] { make_policy("fixed", {{"lvl", "1"}}); });
  EXPECT_NE(e.find("policy fixed: unknown parameter 'lvl' (did you mean 'level'?)"), std::string::npos) << e;
  const std::string r = error_of([] { make_policy("fixed", {{"level", "2.5"}}); });
  EXPECT_NE(r.find("policy fixed: parameter level: expected an integer in [0, 1000], got '2.5'"), std::string::npos)
      << r;
}

TEST(Registry, EveryPolicyIsDescribedWithItsParameters) {
  const std::string d = describe_policies();
  for (const auto& info : policy_infos()) {
    EXPECT_FALSE(info.summary.empty()) << info.name;
    EXPECT_NE(d.find(info.name), std::string::npos) << info.name;
    for (const auto& p : info.params) {
      EXPECT_NE(d.find(p.name), std::string::npos) << info.name << "." << p.name;
      EXPECT_FALSE(p.help.empty()) << info.name << "." << p.name;
      // Every default passes its own check, so a policy made with no parameters works.
      EXPECT_NO_THROW(parse_params(info.name, info.params, {{p.name, p.default_value}})) << info.name;
    }
    EXPECT_NO_THROW(make_policy(info.name, {})) << info.name;
    // Oracles say so in their name; the others never read the future.
    EXPECT_EQ(info.reads_future, make_policy(info.name, {})->name().find("oracle") != std::string::npos)
        << info.name;
  }
}

TEST(ParamValues, TypedValuesAndDefaults) {
  const std::vector<ParamSpec> specs = {
      ParamSpec::integer("k", 5, "chunks", "samples", 1, 100),
      ParamSpec::number("safety", 0.9, "", "factor", 0, 1),
      ParamSpec::boolean("on", false, "switch"),
      ParamSpec::choice("mode", "a", {"a", "b"}, "mode"),
  };
  const ParamValues d = parse_params("t", specs, {});
  EXPECT_EQ(d.integer("k"), 5);
  EXPECT_DOUBLE_EQ(d.number("safety"), 0.9);
  EXPECT_FALSE(d.flag("on"));
  EXPECT_EQ(d.text("mode"), "a");
  const ParamValues g = parse_params("t", specs, {{"k", "7"}, {"safety", "0.5"}, {"on", "true"}, {"mode", "b"}});
  EXPECT_EQ(g.integer("k"), 7);
  EXPECT_DOUBLE_EQ(g.number("safety"), 0.5);
  EXPECT_TRUE(g.flag("on"));
  EXPECT_EQ(g.text("mode"), "b");
  EXPECT_THROW(parse_params("t", specs, {{"k", "0"}}), Error);
  EXPECT_THROW(parse_params("t", specs, {{"safety", "1.5"}}), Error);
  EXPECT_THROW(parse_params("t", specs, {{"safety", "nan"}}), Error);
  EXPECT_THROW(parse_params("t", specs, {{"on", "maybe"}}), Error);
  EXPECT_THROW(parse_params("t", specs, {{"mode", "c"}}), Error);
}

// What a recompute fetches first: the reads of the fetched chunks right
// before it, at their levels, up to the nearest recomputed (or undecided) one.
TEST(RecomputeFetch, SumsTheFetchedRunBeforeTheChunkAtItsLevels) {
  ChunkInfo ch;
  // Chunk 5 reads chunks 4, 3 and 2; chunk 3's layers all went with its fetch.
  // Chunk 2: the query reads none of it, so its cost comes with the read.
  ch.window_reads = {{{100, 10}, {0.1, 0.01}, {}, 2}, {{0, 0}, {0, 0}, {}, 0}, {{7000, 700}, {0.7, 0.07}, {0.5, 0.9}, 4}};
  std::vector<int> action = {0, 0, 0, 0, 0};
  auto of = [&](uint32_t j) { return action[j]; };
  RecomputeFetch f = recompute_fetch(ch, 5, of);
  EXPECT_DOUBLE_EQ(f.bytes, 7100);
  EXPECT_DOUBLE_EQ(f.decode_s, 0.8);
  EXPECT_DOUBLE_EQ(f.quality_cost, 0.5);
  EXPECT_EQ(f.layers, 6u);
  EXPECT_EQ(f.chunks, 3u);
  action = {0, 0, 1, 0, 1};  // each chunk's own level
  f = recompute_fetch(ch, 5, of);
  EXPECT_DOUBLE_EQ(f.bytes, 710);
  EXPECT_DOUBLE_EQ(f.decode_s, 0.08);
  EXPECT_DOUBLE_EQ(f.quality_cost, 0.9);
  action = {0, 0, 0, Action::kRecompute, 0};  // chunk 3's recompute fetched what chunk 5 reads of chunk 2
  f = recompute_fetch(ch, 5, of);
  EXPECT_DOUBLE_EQ(f.bytes, 100);
  EXPECT_EQ(f.quality_cost, 0);
  EXPECT_EQ(f.chunks, 1u);
  action = {0, 0, 0, 0, Action::kRecompute};
  EXPECT_EQ(recompute_fetch(ch, 5, of).bytes, 0);
  EXPECT_EQ(recompute_fetch(ch, 5, of).chunks, 0u);
  // Reads beyond the first chunk are not there to fetch.
  EXPECT_DOUBLE_EQ(recompute_fetch(ch, 2, of).bytes, 100);
  EXPECT_EQ(recompute_fetch(ChunkInfo{}, 5, of).chunks, 0u);  // full attention
}

TEST(ThroughputSample, Rate) {
  ThroughputSample s{1.0, 2.0, 1000};
  EXPECT_DOUBLE_EQ(s.rate_bps(), 8000.0);
}

}  // namespace
}  // namespace kvs::policies
