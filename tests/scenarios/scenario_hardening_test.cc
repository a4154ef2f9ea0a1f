// Issue 25: scenario values a real run cannot have, semantic errors with the
// file, line and key, duplicate keys, second documents, non-scalar values.
#include <gtest/gtest.h>

#include "base/error.h"
#include "codec/profile.h"
#include "scenarios/scenario.h"

namespace kvs::scenarios {
namespace {

const std::string kHead = "profile: p.json\ncodec: c\n";

std::string error_of(const std::string& yaml) {
  try {
    parse_scenario(yaml, "s.yaml", "");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(ScenarioLimits, ValuesNoRealRunHasAreErrors) {
  const std::pair<const char*, const char*> cases[] = {
      {"request_header_bytes: 4294967295\n",
       "s.yaml:3: request_header_bytes: expected at most 1048576 (1 MiB), got 4294967295"},
      {"response_header_bytes: 4294967295\n",
       "s.yaml:3: response_header_bytes: expected at most 1048576 (1 MiB), got 4294967295"},
      {"arrivals: {mode: poisson, count: 4294967295}\n", "s.yaml:3: arrivals.count: expected at most 100000, got 4294967295"},
      {"cross_traffic: {bulk_tcp_flows: 5000}\n", "s.yaml:3: cross_traffic.bulk_tcp_flows: expected at most 100, got 5000"},
      {"cross_traffic: {onoff_udp_flows: 101}\n", "s.yaml:3: cross_traffic.onoff_udp_flows: expected at most 100, got 101"},
      {"cross_traffic: {udp_rate_mbps: 1e9}\n",
       "s.yaml:3: cross_traffic.udp_rate_mbps: expected at most 1e+06 (1 Tbit/s), got 1e9"},
      {"cross_traffic: {onoff_udp_flows: 1, udp_rate_mbps: 20000}\n",
       "s.yaml:3: cross_traffic.udp_rate_mbps: 20000 Mbit/s is faster than the access link (link.access_rate_mbps = "
       "10000)"},
      {"cross_traffic: {udp_on_s: 0.00001}\n",
       "s.yaml:3: cross_traffic.udp_on_s: expected at least 0.001 s (a millisecond), got 0.00001"},
      {"link: {rate_mbps: 1e12}\n", "s.yaml:3: link.rate_mbps: expected at most 1e+06 (1 Tbit/s), got 1e12"},
      {"link: {rtt_ms: 1e9}\n", "s.yaml:3: link.rtt_ms: expected at most 60000 (a minute), got 1e9"},
      {"link: {queue_packets: 4000000000}\n", "s.yaml:3: link.queue_packets: expected at most 1000000, got 4000000000"},
      {"link: {tcp_buffer_bytes: 4000000000}\n",
       "s.yaml:3: link.tcp_buffer_bytes: expected at most 1073741824 (1 GiB), got 4000000000"},
      {"in_flight: 100000\n", "s.yaml:3: in_flight: expected at most 1024, got 100000"},
      {"max_sim_s: 1e12\n", "s.yaml:3: max_sim_s: expected at most 86400 (a day), got 1e12"},
      {"sample_interval_ms: 1e9\n", "s.yaml:3: sample_interval_ms: expected at most 60000 (a minute), got 1e9"},
      {"max_sim_s: 10\narrivals:\n  times_s: [0, 20]\n",
       "s.yaml:5: arrivals.times_s[1]: arrival at 20 s is not before max_sim_s (10 s): it would never start"},
      {"arrivals: {times_s: []}\n", "s.yaml:3: arrivals.times_s: expected at least one time"},
  };
  for (const auto& [yaml, expected] : cases) EXPECT_EQ(error_of(kHead + yaml), expected) << yaml;
  // The largest values allowed still parse.
  EXPECT_EQ(error_of(kHead + "request_header_bytes: 1048576\ncross_traffic: {bulk_tcp_flows: 100}\n"), "no error");
  // An empty contexts list keeps its documented meaning (every context in turn).
  EXPECT_EQ(error_of(kHead + "arrivals: {contexts: []}\n"), "no error");
}

TEST(ScenarioErrors, PolicyAndParametersAreCheckedWithFileAndLine) {
  const std::string e1 = error_of(kHead + "policy: fixd\n");
  EXPECT_EQ(e1.rfind("s.yaml:3: policy: ", 0), 0u) << e1;
  EXPECT_NE(e1.find("did you mean 'fixed'?"), std::string::npos) << e1;
  const std::string e2 = error_of(kHead + "policy:\n  name: fixed\n  params:\n    levl: 2\n");
  EXPECT_EQ(e2.rfind("s.yaml:6: policy.params.levl: ", 0), 0u) << e2;
  EXPECT_NE(e2.find("level"), std::string::npos) << e2;
  const std::string e3 = error_of(kHead + "policy:\n  name: fixed\n  params:\n    level: two\n");
  EXPECT_EQ(e3.rfind("s.yaml:6: policy.params.level: ", 0), 0u) << e3;
  const std::string e4 = error_of(kHead + "policy:\n  name: nosuch\n");
  EXPECT_EQ(e4.rfind("s.yaml:4: policy.name: ", 0), 0u) << e4;
  EXPECT_EQ(error_of(kHead + "policy:\n  name: fixed\n  params:\n    level: [1]\n"),
            "s.yaml:6: policy.params.level: expected a scalar value");
}

TEST(ScenarioErrors, DuplicateKeysAndSecondDocumentsAreRejected) {
  EXPECT_EQ(error_of(kHead + "slo_s: 1\nslo_s: 2\n"), "s.yaml:4: slo_s: duplicate key (first given on line 3)");
  EXPECT_EQ(error_of(kHead + "link:\n  rtt_ms: 5\n  rtt_ms: 6\n"),
            "s.yaml:5: link.rtt_ms: duplicate key (first given on line 4)");
  EXPECT_EQ(error_of(kHead + "policy: {name: fixed, params: {level: 1, level: 2}}\n"),
            "s.yaml:3: policy.params.level: duplicate key (first given on line 3)");
  EXPECT_EQ(error_of(kHead + "---\nprofile: q.json\ncodec: d\n"),
            "s.yaml:3: a second YAML document: a scenario file holds one (remove the '---')");
  EXPECT_EQ(error_of("---\n" + kHead + "---\n"),
            "s.yaml:4: a second YAML document: a scenario file holds one (remove the '---')");
  EXPECT_EQ(error_of("---\n" + kHead), "no error");
  // yaml-cpp 0.7's LoadAll never returns on "," (found by scenario_fuzz): the
  // parser counts two documents at most.
  EXPECT_EQ(error_of(","), "s.yaml:1: a second YAML document: a scenario file holds one (remove the '---')");
  EXPECT_EQ(error_of(kHead + ","), "s.yaml:3: YAML syntax: end of map not found");
}

TEST(ScenarioErrors, NonScalarValuesAndKeysGiveClearMessages) {
  EXPECT_EQ(error_of(kHead + "? [a, b]\n: 1\n"), "s.yaml:3: document: expected plain names as keys, found a list or mapping");
  EXPECT_EQ(error_of(kHead + "link:\n  ? {x: 1}\n  : 2\n"),
            "s.yaml:4: link: expected plain names as keys, found a list or mapping");
  EXPECT_EQ(error_of(kHead + "slo_s: {a: 1}\n"), "s.yaml:3: slo_s: expected a number >= 0");
  EXPECT_EQ(error_of(kHead + "seed: [1]\n"), "s.yaml:3: seed: expected an integer >= 0");
  EXPECT_EQ(error_of(kHead + "output: {a: b}\n"), "s.yaml:3: output: expected a string");
  EXPECT_EQ(error_of(kHead + "arrivals: {contexts: [[0]]}\n"), "s.yaml:3: arrivals.contexts: expected a list of context indices");
  EXPECT_EQ(error_of(kHead + "arrivals: {contexts: [-1]}\n"), "s.yaml:3: arrivals.contexts: expected a list of context indices");
  EXPECT_EQ(error_of(""), "s.yaml: document: expected a mapping of keys to values");
  EXPECT_EQ(error_of("- a\n- b\n").rfind("s.yaml:1: document: expected a mapping", 0), 0u);
}

codec::Profile two_context_profile() {
  codec::Profile p;
  codec::CodecProfile c;
  c.codec = "cachegen";
  c.level_names = {"L0", "L1", "L2"};
  for (int i = 0; i < 2; ++i) {
    codec::ContextProfile ctx;
    ctx.id = "c" + std::to_string(i);
    ctx.tokens = 10;
    ctx.chunks.push_back({0, 10, std::vector<codec::ChunkLevel>(3)});
    c.contexts.push_back(ctx);
  }
  p.codecs.push_back(c);
  return p;
}

TEST(ScenarioErrors, ProfileChecksNameTheScenarioLineAndKey) {
  const auto p = two_context_profile();
  auto error_with_profile = [&](const std::string& yaml) {
    try {
      check_against_profile(parse_scenario(yaml, "s.yaml", ""), p);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error_with_profile("profile: p.json\ncodec: cachegn\n"),
            "s.yaml:2: codec: 'cachegn' is not in the profile p.json (did you mean 'cachegen'?) (it has: cachegen)");
  EXPECT_EQ(error_with_profile("profile: p.json\ncodec: cachegen\narrivals:\n  contexts: [0, 1,\n    2]\n"),
            "s.yaml:5: arrivals.contexts[2]: context 2 but the profile's cachegen has 2 (0..1)");
  EXPECT_EQ(error_with_profile("profile: p.json\ncodec: cachegen\npolicy:\n  name: fixed\n  params: {level: 3}\n"),
            "s.yaml:5: policy.params.level: level 3 but the profile's cachegen has 3 levels (0..2)");
  EXPECT_EQ(error_with_profile("profile: p.json\ncodec: cachegen\npolicy: {name: fixed, params: {level: 2}}\n"),
            "no error");
  // A key overridden elsewhere (a command-line option) is named without the file.
  auto s = parse_scenario("profile: p.json\ncodec: cachegen\n", "s.yaml", "");
  s.sim.codec = "zstd";
  s.lines.erase("codec");
  try {
    check_against_profile(s, p);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("codec: 'zstd' is not in the profile", 0), 0u) << e.what();
  }
}

TEST(ScenarioErrors, LinesOfKeysAreKept) {
  const auto s = parse_scenario(kHead + "link:\n  rtt_ms: 5\ngpu: {preset: h100}\ntarget: llama-7b\n", "s.yaml", "");
  EXPECT_EQ(s.lines.at("codec"), 2u);
  EXPECT_EQ(s.lines.at("link.rtt_ms"), 4u);
  EXPECT_EQ(s.lines.at("gpu.preset"), 5u);
  EXPECT_EQ(s.at("target", "unknown"), "s.yaml:6: target: unknown");
  EXPECT_EQ(s.at("slo_s", "x"), "slo_s: x");
}

}  // namespace
}  // namespace kvs::scenarios
