// The scenario YAML: what it accepts, and errors that name file, line and key.
#include <gtest/gtest.h>

#include "base/error.h"
#include "scenarios/scenario.h"

namespace kvs::scenarios {
namespace {

std::string error_of(const std::string& yaml) {
  try {
    parse_scenario(yaml, "s.yaml", "base");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Scenario, ParsesEveryKey) {
  const auto s = parse_scenario(R"(
profile: runs/p.json
codec: cachegen
policy: {name: fixed, params: {level: 2}}
target: llama-7b
link: {rate_mbps: 50, rtt_ms: 30, loss_rate: 0.01, queue_packets: 200, mtu_bytes: 9000, tcp: newreno}
gpu: {preset: a100, efficiency: 0.4, decode_speedup: 8, first_token_s: 0.02}
arrivals: {mode: poisson, count: 4, rate_per_s: 2.5, contexts: [0, 1]}
cross_traffic: {bulk_tcp_flows: 1, onoff_udp_flows: 2, udp_rate_mbps: 5}
slo_s: 1.5
in_flight: 2
seed: 7
output: out/run1
)",
                                "s.yaml", "base");
  EXPECT_EQ(s.sim.profile_path, "base/runs/p.json");
  EXPECT_EQ(s.sim.codec, "cachegen");
  EXPECT_EQ(s.sim.policy, "fixed");
  EXPECT_EQ(s.sim.policy_params.at("level"), "2");
  EXPECT_EQ(s.sim.target, "llama-7b");
  EXPECT_EQ(s.sim.link.rate_mbps, 50);
  EXPECT_EQ(s.sim.link.mtu_bytes, 9000u);
  EXPECT_EQ(s.sim.link.tcp, "newreno");
  EXPECT_EQ(s.sim.gpu.preset, "a100");
  EXPECT_EQ(s.sim.gpu.decode_speedup, 8);
  EXPECT_EQ(s.sim.arrivals.mode, "poisson");
  EXPECT_EQ(s.sim.arrivals.contexts, (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(s.sim.cross.onoff_udp_flows, 2u);
  EXPECT_EQ(s.sim.slo_s, 1.5);
  EXPECT_EQ(s.sim.in_flight, 2u);
  EXPECT_EQ(s.sim.seed, 7u);
  EXPECT_EQ(s.output_dir, "base/out/run1");
}

TEST(Scenario, UnknownKeyNamesFileLineAndKey) {
  EXPECT_EQ(error_of("profile: p.json\ncodec: c\nlink:\n  rate_mbps: 5\n  rtt: 20\n"),
            "s.yaml:5: link.rtt: unknown key (known here: access_rate_mbps, loss_rate, mtu_bytes, queue_packets, "
            "rate_mbps, rtt_ms, tcp, tcp_buffer_bytes, trace, trace_gen)");
  EXPECT_NE(error_of("profile: p.json\ncodec: c\nslo: 1\n").find("s.yaml:3: slo: unknown key"), std::string::npos);
}

TEST(Scenario, WrongTypeNamesFileLineAndKey) {
  EXPECT_EQ(error_of("profile: p.json\ncodec: c\nlink:\n  rtt_ms: fast\n"),
            "s.yaml:4: link.rtt_ms: expected a number, got 'fast'");
  EXPECT_EQ(error_of("profile: p.json\ncodec: c\nin_flight: -2\n"),
            "s.yaml:3: in_flight: expected a non-negative integer, got -2");
  EXPECT_EQ(error_of("profile: p.json\ncodec: c\narrivals: {times_s: [0, x]}\n"),
            "s.yaml:3: arrivals.times_s: expected a list of numbers");
  EXPECT_EQ(error_of("profile: p.json\ncodec: c\ngpu: h100\n"),
            "s.yaml:3: gpu: expected a mapping of keys to values");
}

TEST(Scenario, MissingProfileIsAnError) {
  EXPECT_EQ(error_of("codec: c\n"), "s.yaml:1: profile: missing (required)");
  EXPECT_NE(error_of("profile: [a]\ncodec: c\n").find("s.yaml:1: profile: expected a string"), std::string::npos);
  EXPECT_THROW(load_scenario("/nonexistent/s.yaml"), Error);
}

TEST(Scenario, SyntaxErrorNamesLine) {
  EXPECT_NE(error_of("profile: p.json\ncodec: [c\n").find("s.yaml:"), std::string::npos);
}

TEST(Scenario, ShippedExamplesParse) {
  for (const char* name : {"default.yaml", "lte_trace.yaml", "concurrent.yaml"}) {
    const auto s = load_scenario(std::string(KVSTREAM_SOURCE_DIR) + "/scenarios/" + name);
    EXPECT_FALSE(s.sim.codec.empty()) << name;
  }
}

}  // namespace
}  // namespace kvs::scenarios
