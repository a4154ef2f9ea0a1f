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

TEST(ThroughputSample, Rate) {
  ThroughputSample s{1.0, 2.0, 1000};
  EXPECT_DOUBLE_EQ(s.rate_bps(), 8000.0);
}

}  // namespace
}  // namespace kvs::policies
