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
gpu: {preset: a100, efficiency: 0.4, decode: profile, decode_speedup: 8, first_token_s: 0.02}
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
  EXPECT_EQ(s.sim.gpu.decode, "profile");
  EXPECT_EQ(s.sim.arrivals.mode, "poisson");
  EXPECT_EQ(s.sim.arrivals.contexts, (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(s.sim.cross.onoff_udp_flows, 2u);
  EXPECT_EQ(s.sim.slo_s, 1.5);
  EXPECT_EQ(s.sim.in_flight, 2u);
  EXPECT_EQ(s.sim.seed, 7u);
  EXPECT_EQ(s.output_dir, "base/out/run1");
}

// Which levels policies see and in which quality measure: front and KL unless
// the scenario says otherwise; other values name file, line and key.
TEST(Scenario, LevelsAndQualityMeasureKeys) {
  const std::string head = "profile: p.json\ncodec: c\n";
  const auto d = parse_scenario(head, "s.yaml", "");
  EXPECT_FALSE(d.sim.all_levels);
  EXPECT_FALSE(d.sim.quality_loss_increase);
  const auto s = parse_scenario(head + "levels: all\nquality_measure: loss_increase\n", "s.yaml", "");
  EXPECT_TRUE(s.sim.all_levels);
  EXPECT_TRUE(s.sim.quality_loss_increase);
  const auto f = parse_scenario(head + "levels: front\nquality_measure: kl\n", "s.yaml", "");
  EXPECT_FALSE(f.sim.all_levels);
  EXPECT_FALSE(f.sim.quality_loss_increase);
  EXPECT_EQ(error_of(head + "levels: some\n"), "s.yaml:3: levels: expected one of front, all, got 'some'");
  EXPECT_EQ(error_of(head + "quality_measure: mse\n"),
            "s.yaml:3: quality_measure: expected one of kl, loss_increase, got 'mse'");
}

TEST(Scenario, UnknownKeyNamesFileLineAndKey) {
  EXPECT_EQ(error_of("profile: p.json\ncodec: c\nlink:\n  rate_mbps: 5\n  rtt: 20\n"),
            "s.yaml:5: link.rtt: unknown key (known here: access_rate_mbps, access_rtt_ms, delayed_ack_count, "
            "fold_access_links, initial_cwnd_segments, loss_rate, min_rto_ms, mss_bytes, mtu_bytes, ns3_stock, queue, "
            "queue_packets, rate_mbps, rtt_ms, tcp, tcp_buffer_bytes, trace, trace_csv, trace_gen, trace_mode, "
            "trace_scale)");
  EXPECT_NE(error_of("profile: p.json\ncodec: c\nlink:\n  rtt_mss: 20\n")
                .find("s.yaml:4: link.rtt_mss: unknown key (did you mean 'rtt_ms'?)"),
            std::string::npos);
  EXPECT_NE(error_of("profile: p.json\ncodec: c\nslo: 1\n").find("s.yaml:3: slo: unknown key"), std::string::npos);
}

TEST(Scenario, WrongTypeNamesFileLineAndKey) {
  EXPECT_EQ(error_of("profile: p.json\ncodec: c\nlink:\n  rtt_ms: fast\n"),
            "s.yaml:4: link.rtt_ms: expected a number >= 0, got 'fast'");
  EXPECT_EQ(error_of("profile: p.json\ncodec: c\nin_flight: -2\n"),
            "s.yaml:3: in_flight: expected an integer >= 1, got -2");
  EXPECT_EQ(error_of("profile: p.json\ncodec: c\narrivals: {times_s: [0, x]}\n"),
            "s.yaml:3: arrivals.times_s: expected a list of numbers");
  EXPECT_EQ(error_of("profile: p.json\ncodec: c\ngpu: h100\n"),
            "s.yaml:3: gpu: expected a mapping of keys to values");
}

TEST(Scenario, LinkQueueTcpAndTraceModeKeys) {
  const auto s = parse_scenario(R"(
profile: p.json
codec: c
link:
  trace_mode: rate
  queue: fqcodel
  queue_packets: 300
  mss_bytes: 1000
  initial_cwnd_segments: 4
  delayed_ack_count: 1
  min_rto_ms: 50
  access_rtt_ms: 6
)",
                                "s.yaml", "");
  const auto& l = s.sim.link;
  EXPECT_EQ(l.trace_mode, "rate");
  EXPECT_EQ(l.queue, "fqcodel");
  EXPECT_EQ(l.queue_packets, 300u);
  EXPECT_EQ(l.mss_bytes, 1000u);
  EXPECT_EQ(l.initial_cwnd_segments, 4u);
  EXPECT_EQ(l.delayed_ack_count, 1u);
  EXPECT_EQ(l.min_rto_ms, 50);
  EXPECT_EQ(l.access_rtt_ms, 6);
  // Defaults.
  const auto d = parse_scenario("profile: p.json\ncodec: c\n", "s.yaml", "").sim.link;
  EXPECT_EQ(d.trace_mode, "auto");
  EXPECT_EQ(d.queue, "droptail");
  EXPECT_EQ(d.mss_bytes, 0u);
  EXPECT_EQ(d.initial_cwnd_segments, 10u);
  EXPECT_EQ(d.delayed_ack_count, 2u);
  EXPECT_EQ(d.min_rto_ms, 200);
  EXPECT_EQ(d.access_rtt_ms, 0);
}

TEST(Scenario, BadLinkValuesNameFileLineAndKey) {
  const std::string head = "profile: p.json\ncodec: c\nlink:\n";
  EXPECT_EQ(error_of(head + "  queue: red\n"),
            "s.yaml:4: link.queue: expected one of droptail, codel, fqcodel, got 'red'");
  EXPECT_EQ(error_of(head + "  trace_mode: exact\n"),
            "s.yaml:4: link.trace_mode: expected one of auto, rate, mahimahi, got 'exact'");
  EXPECT_EQ(error_of(head + "  tcp: vegas\n"), "s.yaml:4: link.tcp: expected one of cubic, cubic-rfc9438, cubic-ns3, cubic-hystart-fix, newreno, bbr, got 'vegas'");
  EXPECT_EQ(error_of(head + "  mtu_bytes: 9000\n  mss_bytes: 8949\n"),
            "s.yaml:5: link.mss_bytes: expected 64..8948 (mtu_bytes - 52), or 0 for that; got 8949");
  EXPECT_EQ(error_of(head + "  initial_cwnd_segments: 0\n"),
            "s.yaml:4: link.initial_cwnd_segments: expected an integer >= 1, got 0");
  EXPECT_EQ(error_of(head + "  delayed_ack_count: 0\n"), "s.yaml:4: link.delayed_ack_count: expected an integer >= 1, got 0");
  EXPECT_EQ(error_of(head + "  min_rto_ms: 0\n"), "s.yaml:4: link.min_rto_ms: expected a positive number, got 0");
  EXPECT_EQ(error_of(head + "  access_rtt_ms: -1\n"), "s.yaml:4: link.access_rtt_ms: expected a number >= 0, got -1");
  EXPECT_EQ(error_of(head + "  loss_rate: 1\n"), "s.yaml:4: link.loss_rate: expected a number in [0, 1), got 1");
  EXPECT_EQ(error_of(head + "  queue: [codel]\n"), "s.yaml:4: link.queue: expected a string");
}

// Every range the simulator checks is also checked by the parser, so that
// the error names the file and line rather than only the key.
TEST(Scenario, OutOfRangeValuesNameFileLineAndKey) {
  const std::string head = "profile: p.json\ncodec: c\n";
  const std::pair<const char*, const char*> cases[] = {
      {"link:\n  rtt_ms: -5\n", "s.yaml:4: link.rtt_ms: expected a number >= 0, got -5"},
      {"link:\n  rate_mbps: 0\n", "s.yaml:4: link.rate_mbps: expected a positive number, got 0"},
      {"link:\n  rtt_ms: .inf\n", "s.yaml:4: link.rtt_ms: expected a number >= 0, got .inf"},
      {"link:\n  rtt_ms: .nan\n", "s.yaml:4: link.rtt_ms: expected a number >= 0, got .nan"},
      {"link:\n  mtu_bytes: 100\n", "s.yaml:4: link.mtu_bytes: expected an integer in 576..65535, got 100"},
      {"gpu:\n  efficiency: 1.5\n", "s.yaml:4: gpu.efficiency: expected a number in (0, 1], got 1.5"},
      {"gpu:\n  decode_speedup: 0\n", "s.yaml:4: gpu.decode_speedup: expected a positive number, got 0"},
      {"gpu:\n  busy_fraction: 1\n", "s.yaml:4: gpu.busy_fraction: expected a number in [0, 1), got 1"},
      {"link:\n  trace_csv: {interval_s: 1}\n",
       "s.yaml:4: link.trace_csv: says how to read a CSV trace: give trace too"},
      {"link:\n  trace: t.csv\n  trace_csv: {time_colum: seq_num}\n",
       "s.yaml:5: link.trace_csv.time_colum: unknown key (did you mean 'time_column'?) (known here: filter, "
       "interval_s, time_column, value_column)"},
      {"link:\n  trace: t.csv\n  trace_csv: {interval_s: -1}\n",
       "s.yaml:5: link.trace_csv.interval_s: expected a number >= 0, got -1"},
      {"gpu:\n  decode: fast\n", "s.yaml:4: gpu.decode: expected one of auto, assumed, profile, got 'fast'"},
      {"gpu:\n  decode_bytes_per_s: -1\n", "s.yaml:4: gpu.decode_bytes_per_s: expected a number >= 0, got -1"},
      {"link:\n  trace_scale: 2\n", "s.yaml:4: link.trace_scale: scales a trace: give trace or trace_gen too"},
      {"link:\n  trace_gen: const:rate=1mbps,duration=1s\n  trace_scale: 0\n",
       "s.yaml:5: link.trace_scale: expected a positive number, got 0"},
      {"arrivals:\n  times_s:\n    - 0\n    - -2\n",
       "s.yaml:6: arrivals.times_s: expected each item to be a number >= 0, got -2"},
      {"arrivals:\n  mode: poisson\n  rate_per_s: 0\n", "s.yaml:5: arrivals.rate_per_s: expected a positive number, got 0"},
      {"arrivals:\n  count: 0\n", "s.yaml:4: arrivals.count: expected an integer >= 1, got 0"},
      {"cross_traffic:\n  udp_on_s: 0\n", "s.yaml:4: cross_traffic.udp_on_s: expected a positive number, got 0"},
      {"slo_s: -1\n", "s.yaml:3: slo_s: expected a number >= 0, got -1"},
      {"in_flight: 0\n", "s.yaml:3: in_flight: expected an integer >= 1, got 0"},
      {"request_header_bytes: 8\n", "s.yaml:3: request_header_bytes: expected an integer >= 16, got 8"},
      {"max_sim_s: 0\n", "s.yaml:3: max_sim_s: expected a positive number, got 0"},
      {"seed: -1\n", "s.yaml:3: seed: expected an integer >= 0, got -1"},
      // Zero keeps its documented meaning where it has one.
      {"slo_s: 0\ngpu:\n  peak_flops: 0\nlink:\n  queue_packets: 0\n", "no error"},
  };
  for (const auto& [yaml, expected] : cases) EXPECT_EQ(error_of(head + yaml), expected) << yaml;
}

TEST(Scenario, TraceCsvPicksColumnsFiltersAndGpuBusyFraction) {
  const auto s = parse_scenario(R"(
profile: p.json
codec: c
gpu: {preset: a100, busy_fraction: 0.5}
link:
  trace: t.csv
  trace_csv: {time_column: seq_num, interval_s: 1, value_column: throughput_mbps, filter: {carrier: VERIZON, run_num: 2}}
)",
                                "s.yaml", "/base");
  EXPECT_EQ(s.sim.gpu.busy_fraction, 0.5);
  EXPECT_EQ(s.trace_file, "/base/t.csv");
  EXPECT_EQ(s.trace_load.format, traces::Format::kCsv);
  EXPECT_EQ(s.trace_load.csv.time_column, "seq_num");
  EXPECT_EQ(s.trace_load.csv.interval_s, 1.0);
  EXPECT_EQ(s.trace_load.csv.value_column, "throughput_mbps");
  EXPECT_EQ(s.trace_load.csv.filters, (std::map<std::string, std::string>{{"carrier", "VERIZON"}, {"run_num", "2"}}));
  // Without trace_csv the format is detected from the file.
  EXPECT_EQ(parse_scenario("profile: p.json\ncodec: c\nlink: {trace: t}\n", "s.yaml", "").trace_load.format,
            traces::Format::kAuto);
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
