// The fast NextSeg of sim/ns3_fixes.h through the whole simulator: the same
// runs as ns-3.37's scoreboard walk (C++20; tests/sim/ns3_fixes_test.cc has
// the packet-level checks).
#include <gtest/gtest.h>

#include <optional>

#include "sim/ns3_fixes.h"
#include "sim/simulation.h"
#include "tests/sim/sim_test_util.h"

namespace kvs::sim {
namespace {

using PinFixes = PinNs3TcpFixes;

// The whole simulator (requests, policy, cross traffic on a varying link):
// identical event logs and results.
TEST(Ns3Fixes, FastPathGivesIdenticalRunsWithCrossTraffic) {
  const auto profile = testing::make_profile(6, 256, {400'000, 150'000}, 0.002, 2);
  auto config = testing::base_config(60, 30);
  traces::Trace trace;
  trace.name = "on-off";
  trace.segments = {{0.0, 60e6}, {0.2, 15e6}, {0.3, 60e6}};
  trace.duration_s = 0.4;
  config.link.trace = trace;
  config.link.loss_rate = 0.002;
  config.arrivals.mode = "poisson";
  config.arrivals.count = 3;
  config.arrivals.rate_per_s = 4;
  config.cross.bulk_tcp_flows = 1;
  config.cross.onoff_udp_flows = 1;
  config.cross.udp_rate_mbps = 10;
  config.policy_params["level"] = "0";
  SimOutput walk, fast;
  {
    PinFixes pin({true, false});
    walk = simulate(config, profile);
  }
  {
    PinFixes pin({true, true});
    fast = simulate(config, profile);
  }
  EXPECT_EQ(fast.events_jsonl, walk.events_jsonl);
  EXPECT_EQ(fast.result_json, walk.result_json);
  for (const auto& r : walk.result.requests) EXPECT_TRUE(r.finished);
}

}  // namespace
}  // namespace kvs::sim
