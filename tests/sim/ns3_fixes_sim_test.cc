// The fast NextSeg and the indexed scoreboard of sim/ns3_fixes.h through the
// whole simulator: the same runs as ns-3.37's scoreboard walks (C++20;
// tests/sim/ns3_fixes_test.cc has the packet-level checks).
#include <gtest/gtest.h>

#include <optional>

#include "sim/ns3_fixes.h"
#include "sim/simulation.h"
#include "tests/sim/sim_test_util.h"

namespace kvs::sim {
namespace {

using PinFixes = PinNs3TcpFixes;

// The whole simulator (requests, policy, cross traffic on a varying link,
// a default and a 20-packet queue; SACK off is in ns3_fixes_test.cc): identical event logs
// and results with ns-3.37's walks, NextSeg's fast path alone and the index
// (checked against the sent list after every call).
TEST(Ns3Fixes, FastPathAndIndexGiveIdenticalRunsWithCrossTraffic) {
  const auto profile = testing::make_profile(6, 256, {400'000, 150'000}, 0.002, 2);
  struct Case {
    const char* name;
    uint32_t queue_packets;
  };
  for (const Case& c : {Case{"default queue", 0}, Case{"20-packet queue", 20}}) {
    SCOPED_TRACE(c.name);
    auto config = testing::base_config(60, 30);
    traces::Trace trace;
    trace.name = "on-off";
    trace.segments = {{0.0, 60e6}, {0.2, 15e6}, {0.3, 60e6}};
    trace.duration_s = 0.4;
    config.link.trace = trace;
    config.link.loss_rate = 0.002;
    config.link.queue_packets = c.queue_packets;
    config.arrivals.mode = "poisson";
    config.arrivals.count = 3;
    config.arrivals.rate_per_s = 4;
    config.cross.bulk_tcp_flows = 1;
    config.cross.onoff_udp_flows = 1;
    config.cross.udp_rate_mbps = 10;
    config.policy_params["level"] = "0";
    SimOutput walk, fast, indexed, checked;
    {
      PinFixes pin(Ns3TcpFixes::walk());
      walk = simulate(config, profile);
    }
    {
      PinFixes pin(Ns3TcpFixes::fast_path_only());
      fast = simulate(config, profile);
    }
    {
      PinFixes pin(Ns3TcpFixes{});  // as the simulator runs it
      indexed = simulate(config, profile);
    }
    Ns3FixCounters n;
    {
      Ns3TcpFixes verified;
      verified.verify_scoreboard = true;
      PinFixes pin(verified);
      reset_ns3_fix_counters();
      checked = simulate(config, profile);
      n = ns3_fix_counters();
    }
    EXPECT_EQ(fast.events_jsonl, walk.events_jsonl);
    EXPECT_EQ(fast.result_json, walk.result_json);
    EXPECT_EQ(indexed.events_jsonl, walk.events_jsonl);
    EXPECT_EQ(indexed.result_json, walk.result_json);
    EXPECT_EQ(checked.events_jsonl, walk.events_jsonl);
    for (const auto& r : walk.result.requests) EXPECT_TRUE(r.finished);
    EXPECT_GT(n.next_seg_indexed, 0u);
    EXPECT_GT(n.retransmissions_indexed, 0u);
    EXPECT_EQ(n.scoreboard_mismatches, 0u);
  }
}

}  // namespace
}  // namespace kvs::sim
