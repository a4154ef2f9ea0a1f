// The dumbbell the simulator runs on (C++17; internal to sim/):
//
//   server ──access── left router ══bottleneck══ right router ──access── GPU node
//   cross senders ──┘                                       └── cross receivers
//
// The bottleneck (left -> right) has the configured rate (or a trace of
// rates), a drop-tail queue of `queue_packets`, optional random loss, and all
// of the propagation delay (RTT / 2 each way); access links are fast and have
// no delay. No queue discs (ns-3 installs FqCoDel by default; it is removed).
#pragma once

#include <string>
#include <vector>

#include "ns3/ipv4-address.h"
#include "ns3/node.h"
#include "ns3/point-to-point-net-device.h"
#include "ns3/ptr.h"

#include "sim/specs.h"

namespace kvs::sim {

struct Topology {
  ns3::Ptr<ns3::Node> server, client, left_router, right_router;
  ns3::Ipv4Address server_address;
  std::vector<ns3::Ptr<ns3::Node>> cross_senders, cross_receivers;
  std::vector<ns3::Ipv4Address> cross_receiver_addresses;
  ns3::Ptr<ns3::PointToPointNetDevice> bottleneck;  // the left router's device
  std::string description;                          // every setting used, for the run log
  int64_t next_stream = 0;                          // first ns-3 random stream not yet assigned
};

// Sets ns-3 TCP defaults (variant, segment size, buffers) and builds the
// dumbbell with `cross_pairs` extra sender/receiver pairs. Call once per run,
// before any socket exists; Simulator::Destroy() tears it down.
Topology build_topology(const LinkSpec& link, uint32_t cross_pairs);

// Changes the bottleneck rate at every segment boundary of `trace` until `stop_s`.
void schedule_trace(const Topology& topo, const traces::Trace& trace, double stop_s);

// The highest rate the bottleneck will have (bits per second).
double peak_rate_bps(const LinkSpec& link);

}  // namespace kvs::sim
