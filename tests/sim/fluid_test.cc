// The network models beside ns-3 (sim/fluid_network.h): `pensieve` has
// Pensieve's semantics exactly; `fluid` agrees with the packet-level
// simulation on constant links and on a shipped trace; every output names its
// model; the minimal topology (access links emulated without cross traffic)
// gives the dumbbell's packets.
#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "base/error.h"
#include "scenarios/scenario.h"
#include "sim/simulation.h"
#include "tests/sim/sim_test_util.h"
#include "traces/formats.h"

namespace kvs::sim {
namespace {

using testing::base_config;
using testing::make_profile;

double ttft(const SimOutput& o) { return o.result.requests.at(0).ttft_s; }

TEST(Pensieve, OneMegabyteAtEightMbpsWithEightyMsRttTakes1132_63Ms) {
  // Pensieve's env: 1e6 B / (8 Mbit/s / 8 x 0.95) + 80 ms = 1132.63 ms.
  const auto profile = make_profile(1, 256, {1'000'000});
  SimConfig c = base_config(8, 80);
  c.network = "pensieve";
  const auto out = simulate(c, profile);
  const auto& ch = out.result.requests.at(0).chunks.at(0);
  const double ms = (ch.last_byte_s - ch.request_sent_s) * 1000;
  std::printf("pensieve: 1 MB at 8 Mbit/s, 80 ms: %.4f ms\n", ms);
  EXPECT_NEAR(ms, 1132.63, 0.005);
  EXPECT_NEAR(ch.request_sent_s, 0, 1e-9);  // no handshake
}

TEST(Pensieve, ChunksQueueOnTheLinkAndTheTraceWraps) {
  // A 1 s trace that does not loop: 8 Mbit/s for 0.5 s, then 0. Pensieve
  // wraps it: 2 MB at 0.95 x 8 Mbit/s needs 2.105 s of the 8 Mbit/s half-seconds.
  traces::Trace t;
  t.name = "half";
  t.segments = {{0, 8e6}, {0.5, 0}};
  t.duration_s = 1;
  t.loops = false;
  const auto profile = make_profile(2, 256, {1'000'000});
  SimConfig c = base_config(0, 80);
  c.link.trace = t;
  c.network = "pensieve";
  c.in_flight = 2;
  const auto out = simulate(c, profile);
  const auto& chunks = out.result.requests.at(0).chunks;
  const double per_chunk = 1e6 / (1e6 * 0.95);  // seconds of 8 Mbit/s per chunk
  // The first chunk: 2 whole half-seconds and 0.0526 s of the third, + RTT.
  EXPECT_NEAR(chunks[0].last_byte_s, 2.0 + (per_chunk - 1.0) + 0.08, 1e-6);
  // The second follows on the link (pipelined), the RTT added once.
  const double link_end = 2 * per_chunk;  // 2.105 s of rate: 4 half-seconds (ends at 3.5) + 0.105 s
  EXPECT_NEAR(chunks[1].last_byte_s, 4.0 + (link_end - 2.0) + 0.08, 1e-6);
}

TEST(Pensieve, TheOraclesOwnPredictionHasNoHandshake) {
  // Pensieve's model has no handshake: the oracle, which reads the link's
  // future, predicts the simulated TTFT exactly (it added one RTT before).
  const auto profile = make_profile(3, 256, {1'000'000, 400'000}, 0.01);
  SimConfig c = base_config(8, 80);
  c.network = "pensieve";
  c.policy = "oracle";
  c.slo_s = 5;
  c.gpu.peak_flops = 1e9;  // recomputing a chunk takes longer than fetching it
  const auto out = simulate(c, profile);
  const auto& r = out.result.requests.at(0);
  ASSERT_TRUE(r.finished);
  for (const auto& ch : r.chunks) EXPECT_GE(ch.level, 0);
  EXPECT_NEAR(r.predicted_ttft_s, r.ttft_s, 1e-6);
}

// Fluid against ns-3 on constant links: one request, several chunks fetched
// one at a time (a handshake, then one RTT per chunk and slow start). With a
// queue that holds slow start's overshoot, TCP loses nothing and the fluid
// model is what ns-3 does; with the default queue (one BDP) ns-3's slow start
// overflows it, and the loss recovery the fluid model leaves out costs ns-3
// up to 8 % more on this grid.
struct GridCase {
  double rate_mbps, rtt_ms;
  uint32_t chunks;
  uint64_t bytes;
};
const GridCase kGrid[] = {
    {10, 20, 4, 250'000},    {10, 80, 2, 1'000'000},  {100, 2, 8, 1'000'000},   {100, 20, 4, 2'000'000},
    {100, 80, 2, 2'000'000}, {1000, 2, 8, 2'000'000}, {1000, 20, 4, 5'000'000}, {1000, 80, 2, 10'000'000},
};

// (ns-3, fluid) TTFT of each grid case.
std::vector<std::pair<double, double>> run_grid(uint32_t queue_packets) {
  std::vector<std::pair<double, double>> out;
  for (const auto& g : kGrid) {
    const auto profile = make_profile(g.chunks, 256, {g.bytes});
    SimConfig c = base_config(g.rate_mbps, g.rtt_ms);
    c.link.queue_packets = queue_packets;
    const double ns3 = ttft(simulate(c, profile));
    c.network = "fluid";
    const auto fluid_out = simulate(c, profile);
    const double fluid = ttft(fluid_out);
    std::printf("queue %s: %6g Mbit/s %3g ms %u x %llu B: ns-3 %.6f s, fluid %.6f s (%+.3f %%), fluid events %llu\n",
                queue_packets ? std::to_string(queue_packets).c_str() : "1 BDP", g.rate_mbps, g.rtt_ms, g.chunks,
                (unsigned long long)g.bytes, ns3, fluid, 100 * (fluid - ns3) / ns3,
                (unsigned long long)fluid_out.result.events);
    out.emplace_back(ns3, fluid);
  }
  return out;
}

TEST(Fluid, MatchesNs3WithinOnePercentOnConstantLinksWhereTcpLosesNothing) {
  const auto r = run_grid(100'000);
  double worst = 0;
  for (size_t i = 0; i < r.size(); ++i) {
    const double err = std::abs(r[i].second - r[i].first) / r[i].first;
    worst = std::max(worst, err);
    EXPECT_LT(err, 0.01) << kGrid[i].rate_mbps << " Mbit/s, " << kGrid[i].rtt_ms << " ms";
  }
  std::printf("largest difference: %.4f %%\n", 100 * worst);
}

TEST(Fluid, IsALowerBoundOfNs3WithTheDefaultQueue) {
  const auto r = run_grid(0);
  for (size_t i = 0; i < r.size(); ++i) {
    // Overflow losses only add time, up to the fluid model's own error on
    // loss-free paths (0.02 % on this grid: with NextSeg's SACK rule ns-3
    // recovers the 100 Mbit/s x 2 ms case in 0.683043 s, its loss-free time
    // 0.683034 s, fluid 0.683164 s).
    EXPECT_LE(r[i].second, r[i].first * 1.0005) << i;
    EXPECT_LT(r[i].first - r[i].second, 0.10 * r[i].first) << i;
  }
}

TEST(Fluid, AgreesWithNs3OnAShippedTrace) {
  const auto trace = traces::load_trace(std::string(KVSTREAM_SOURCE_DIR) + "/traces/data/pensieve-hsdpa/norway_bus_1");
  const auto profile = make_profile(4, 256, {500'000});
  SimConfig c = base_config(0, 40);
  c.link.trace = trace;
  const double ns3 = ttft(simulate(c, profile));
  c.network = "fluid";
  const double fluid = ttft(simulate(c, profile));
  std::printf("norway_bus_1, 4 x 500 kB: ns-3 %.4f s, fluid %.4f s (%+.2f %%)\n", ns3, fluid, 100 * (fluid - ns3) / ns3);
  EXPECT_LT(std::abs(fluid - ns3) / ns3, 0.05);
}

TEST(Fluid, PipelinedRequestsSaveRoundTripsAsInNs3) {
  // 8 chunks of 1 MB at 100 Mbit/s, 40 ms, three requests outstanding: the
  // responses follow each other on one connection, so the chunks' RTTs
  // overlap; fluid and ns-3 (with a queue TCP cannot overflow) agree.
  const auto profile = make_profile(8, 256, {1'000'000});
  SimConfig c = base_config(100, 40);
  c.link.queue_packets = 100'000;
  c.in_flight = 3;
  const double ns3 = ttft(simulate(c, profile));
  c.network = "fluid";
  const double pipelined = ttft(simulate(c, profile));
  c.in_flight = 1;
  const double one = ttft(simulate(c, profile));
  std::printf("8 x 1 MB, in_flight 3: ns-3 %.5f s, fluid %.5f s (in_flight 1: %.5f s)\n", ns3, pipelined, one);
  EXPECT_LT(pipelined, one - 5 * 0.04);
  EXPECT_LT(std::abs(pipelined - ns3) / ns3, 0.01);
}

TEST(Fluid, ARequestReachingTheServerMidRoundIsSentAtOnceAsInNs3) {
  // Two requests outstanding: the next chunk's request reaches the server
  // while the previous response is still being sent, and TCP sends it at
  // once when the window has room. The fluid model used to hold it for the
  // next ACK-clocked round, idling the link for up to an RTT per chunk:
  // 4.7 %, 5.7 % and 3.0 % slower than ns-3 on these three cases (and up to
  // 18 % at 1 Gbit/s; what is left there is below, docs/simulator.md).
  struct Case {
    double rate_mbps, rtt_ms;
    uint32_t chunks;
    uint64_t bytes;
  };
  for (const Case& g : {Case{100, 40, 4, 1'000'000}, Case{100, 40, 8, 500'000}, Case{100, 20, 8, 500'000}}) {
    const auto profile = make_profile(g.chunks, 256, {g.bytes});
    SimConfig c = base_config(g.rate_mbps, g.rtt_ms);
    c.link.queue_packets = 100'000;
    c.in_flight = 2;
    const double ns3 = ttft(simulate(c, profile));
    c.network = "fluid";
    const double fluid = ttft(simulate(c, profile));
    std::printf("in_flight 2, %g Mbit/s, %g ms, %u x %llu B: ns-3 %.6f s, fluid %.6f s (%+.3f %%)\n", g.rate_mbps,
                g.rtt_ms, g.chunks, (unsigned long long)g.bytes, ns3, fluid, 100 * (fluid - ns3) / ns3);
    EXPECT_LT(std::abs(fluid - ns3) / ns3, 0.001) << g.rate_mbps << " Mbit/s, " << g.rtt_ms << " ms";
  }
}

TEST(Fluid, EveryOutputNamesTheModel) {
  const auto profile = make_profile(2, 256, {100'000});
  for (const char* model : {"ns3", "fluid", "pensieve"}) {
    SimConfig c = base_config(100, 20);
    c.network = model;
    const auto out = simulate(c, profile);
    EXPECT_EQ(out.result.network_model, model);
    EXPECT_NE(out.result_json.find(std::string("\"network_model\": \"") + model + "\""), std::string::npos) << model;
    EXPECT_NE(out.summary.find(std::string("network (") + model + ")"), std::string::npos) << out.summary;
    EXPECT_NE(out.events_jsonl.find(std::string("\"network\":\"") + model + "\""), std::string::npos) << model;
  }
}

TEST(Fluid, ModelsNeitherLossNorCrossTrafficAndNamesTheClosestModel) {
  const auto profile = make_profile(1, 256, {100'000});
  SimConfig c = base_config(100, 20);
  c.network = "fluid";
  c.link.loss_rate = 0.01;
  EXPECT_THROW(simulate(c, profile), Error);
  c.link.loss_rate = 0;
  c.cross.bulk_tcp_flows = 1;
  EXPECT_THROW(simulate(c, profile), Error);
  c.cross.bulk_tcp_flows = 0;
  c.network = "fluidd";
  try {
    simulate(c, profile);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("did you mean 'fluid'"), std::string::npos) << e.what();
  }
}

TEST(Fluid, ScenarioKeysNameTheModelAndStockNs3) {
  const std::string head = "profile: p.json\ncodec: c\n";
  auto s = scenarios::parse_scenario(head + "network: fluid\nlink: {ns3_stock: false, fold_access_links: false}\n",
                                     "s.yaml", "");
  EXPECT_EQ(s.sim.network, "fluid");
  EXPECT_FALSE(s.sim.link.fold_access_links);
  s = scenarios::parse_scenario(head + "link: {ns3_stock: true}\n", "s.yaml", "");
  EXPECT_TRUE(s.sim.link.fold_access_links);  // the default
  EXPECT_EQ(s.sim.network, "ns3");  // the default
  EXPECT_TRUE(s.sim.link.ns3_stock);
  auto error_of = [&](const std::string& yaml) {
    try {
      scenarios::parse_scenario(head + yaml, "s.yaml", "");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error_of("network: pensive\n"),
            "s.yaml:3: network: expected one of ns3, fluid, pensieve, got 'pensive' (did you mean 'pensieve'?)");
  EXPECT_NE(error_of("network: fluid\nlink: {loss_rate: 0.01}\n").find("s.yaml:4: link.loss_rate: network: fluid does "
                                                                       "not model loss"),
            std::string::npos)
      << error_of("network: fluid\nlink: {loss_rate: 0.01}\n");
  EXPECT_NE(error_of("network: fluid\nlink: {ns3_stock: true}\n").find("link.ns3_stock"), std::string::npos);
}

TEST(Fluid, SharesTheLinkBetweenConcurrentRequests) {
  // Two requests at once for 2 MB each at 100 Mbit/s: the last finishes no
  // earlier than the link can carry both (0.32 s of payload), and the two
  // share it (both finish within one round of each other). ns-3's figures are
  // printed, not compared: two slow starts overflow the queue together and
  // its losses, which the fluid model leaves out, decide who finishes when.
  const auto profile = make_profile(4, 256, {500'000}, 0.0, 2);
  SimConfig c = base_config(100, 20);
  c.arrivals.times_s = {0, 0};
  c.network = "fluid";
  const auto out = simulate(c, profile);
  const double t0 = out.result.requests.at(0).ttft_s, t1 = out.result.requests.at(1).ttft_s;
  c.network = "ns3";
  const auto ref = simulate(c, profile);
  std::printf("two concurrent 2 MB requests: fluid %.4f / %.4f s, ns-3 %.4f / %.4f s\n", t0, t1,
              ref.result.requests[0].ttft_s, ref.result.requests[1].ttft_s);
  EXPECT_GT(std::max(t0, t1), 4e6 * 8 / 100e6);
  EXPECT_LT(std::abs(t0 - t1), 0.03);
}

// Part 3 of issue 21: without cross traffic the minimal topology emulates the
// access links (sim/access_links.h) instead of simulating them: about half
// the events, and the same packets: every chunk's first and last byte within
// a microsecond of the dumbbell's (ties between an arrival and a departure
// on the same nanosecond may be ordered differently, nothing else), under
// slow start's overflow of a one-BDP queue, random loss, CoDel, FqCoDel, both
// kinds of trace, jumbo frames, access delay and concurrent requests.
TEST(MinimalTopology, GivesTheDumbbellsPacketsWithHalfTheEvents) {
  struct Case {
    std::string name;
    double rate_mbps, rtt_ms;
    uint32_t chunks;
    uint64_t bytes;
    std::function<void(SimConfig&)> setup;
  };
  const std::string data = std::string(KVSTREAM_SOURCE_DIR) + "/traces/data/";
  const auto norway = traces::load_trace(data + "pensieve-hsdpa/norway_bus_1");
  const auto att = traces::load_trace(data + "mahimahi/ATT-LTE-driving.down");
  const std::vector<Case> grid = {
      {"100 Mbit/s, large queue", 100, 20, 4, 2'000'000, [](SimConfig& c) { c.link.queue_packets = 100'000; }},
      {"1 Gbit/s, access RTT 4 ms", 1000, 20, 4, 5'000'000, [](SimConfig& c) { c.link.access_rtt_ms = 4; }},
      {"10 Mbit/s, 2 ms", 10, 2, 4, 250'000, [](SimConfig&) {}},
      {"100 Mbit/s, 1 BDP", 100, 20, 4, 2'000'000, [](SimConfig&) {}},
      // bench/sim_run_bench.cc's BM_Simulate4kContext1Gbps: slow start overflows the queue.
      {"1 Gbit/s, 16 chunks, 1 BDP", 1000, 20, 16, 4'194'304, [](SimConfig&) {}},
      {"1 Gbit/s, MTU 9000", 1000, 20, 4, 5'000'000, [](SimConfig& c) { c.link.mtu_bytes = 9000; }},
      {"100 Mbit/s, loss 0.3 %", 100, 20, 4, 2'000'000, [](SimConfig& c) { c.link.loss_rate = 0.003; }},
      {"20 Mbit/s, loss 1 %, newreno", 20, 40, 4, 500'000,
       [](SimConfig& c) { c.link.loss_rate = 0.01, c.link.tcp = "newreno"; }},
      {"100 Mbit/s, CoDel, 30 packets", 100, 20, 4, 2'000'000,
       [](SimConfig& c) { c.link.queue = "codel", c.link.queue_packets = 30; }},
      {"100 Mbit/s, FqCoDel", 100, 20, 4, 2'000'000, [](SimConfig& c) { c.link.queue = "fqcodel"; }},
      {"norway_bus_1 (rate)", 0, 40, 4, 500'000, [&](SimConfig& c) { c.link.trace = norway; }},
      {"ATT LTE (mahimahi), 2 in flight", 0, 40, 4, 1'000'000,
       [&](SimConfig& c) { c.link.trace = att, c.link.queue_packets = 60, c.in_flight = 2; }},
      {"3 requests, 2 in flight", 100, 20, 4, 1'000'000,
       [](SimConfig& c) { c.arrivals.times_s = {0, 0.05, 0.1}, c.in_flight = 2; }},
  };
  for (const auto& g : grid) {
    SCOPED_TRACE(g.name);
    const auto profile = make_profile(g.chunks, 256, {g.bytes});
    SimConfig c = base_config(g.rate_mbps, g.rtt_ms);
    g.setup(c);
    c.link.fold_access_links = false;
    const auto dumbbell = simulate(c, profile);
    c.link.fold_access_links = true;
    const auto minimal = simulate(c, profile);
    ASSERT_NE(minimal.result.network.find("access links emulated"), std::string::npos);
    ASSERT_EQ(dumbbell.result.network.find("access links emulated"), std::string::npos);
    double worst_s = 0;
    ASSERT_EQ(minimal.result.requests.size(), dumbbell.result.requests.size());
    for (size_t r = 0; r < dumbbell.result.requests.size(); ++r) {
      const auto& a = dumbbell.result.requests[r];
      const auto& b = minimal.result.requests[r];
      ASSERT_EQ(a.chunks.size(), b.chunks.size());
      for (size_t i = 0; i < a.chunks.size(); ++i) {
        worst_s = std::max({worst_s, std::abs(a.chunks[i].first_byte_s - b.chunks[i].first_byte_s),
                            std::abs(a.chunks[i].last_byte_s - b.chunks[i].last_byte_s)});
      }
      EXPECT_LT(std::abs(b.ttft_s - a.ttft_s), 1e-3 * a.ttft_s);
    }
    std::printf("%-34s dumbbell %.6f s (%7llu events), minimal %.6f s (%7llu events, %.2fx fewer), worst chunk time %+.3g s\n",
                g.name.c_str(), ttft(dumbbell), (unsigned long long)dumbbell.result.events, ttft(minimal),
                (unsigned long long)minimal.result.events,
                double(dumbbell.result.events) / double(minimal.result.events), worst_s);
    EXPECT_LT(worst_s, 1e-6);
    EXPECT_LT(double(minimal.result.events), 0.65 * double(dumbbell.result.events));
  }
}

}  // namespace
}  // namespace kvs::sim
