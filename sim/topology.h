// The dumbbell the simulator runs on (C++17; internal to sim/):
//
//   server ──access── left router ══bottleneck══ right router ──access── GPU node
//   cross senders ──┘                                       └── cross receivers
//
// The bottleneck (left -> right) has the configured rate, or follows a trace
// (trace_mode "rate": packets are serialized at the trace's rate as it
// changes, see rate_queue_disc.h; "mahimahi": packets leave at the trace's
// delivery opportunities, see opportunity_queue_disc.h), a queue of
// `queue_packets` (drop-tail, CoDel or FqCoDel), optional random loss, and the
// bottleneck's propagation delay (RTT / 2 each way); access links are fast and
// add `access_rtt_ms` to every path (a quarter on each access link, each
// way). ns-3's default FqCoDel on the other devices is removed.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "ns3/ipv4-address.h"
#include "ns3/node.h"
#include "ns3/point-to-point-net-device.h"
#include "ns3/ptr.h"
#include "ns3/queue-disc.h"

#include "sim/specs.h"

namespace kvs::sim {

struct Topology {
  ns3::Ptr<ns3::Node> server, client, left_router, right_router;
  ns3::Ipv4Address server_address;
  std::vector<ns3::Ptr<ns3::Node>> cross_senders, cross_receivers;
  std::vector<ns3::Ipv4Address> cross_receiver_addresses;
  ns3::Ptr<ns3::PointToPointNetDevice> bottleneck;  // the left router's device
  // The bottleneck's root queue disc: with a trace, the gate (rate or
  // mahimahi) whose child holds the queue; with a constant rate, CoDel or
  // FqCoDel, or null for drop-tail (then the device's own queue holds the
  // packets).
  ns3::Ptr<ns3::QueueDisc> queue_disc;
  ns3::Ptr<ns3::QueueDisc> queue;                   // the queue disc holding the waiting packets, or null
  bool mahimahi = false;                            // the bottleneck replays delivery opportunities
  // No cross traffic and access links faster than the bottleneck: the server
  // is the left router and the GPU node the right one (no access links; the
  // bottleneck's delay includes theirs).
  bool minimal = false;
  std::string description;                          // one sentence for the run log
  // Every setting used (link, queue, TCP: each ns-3 attribute value a socket
  // and the queue discs were created with), as (name, value), for results.json.
  std::vector<std::pair<std::string, std::string>> settings;
  int64_t next_stream = 0;                          // first ns-3 random stream not yet assigned
};

// Sets ns-3 TCP defaults (variant, segment size, buffers) and builds the
// dumbbell with `cross_pairs` extra sender/receiver pairs (or, without any
// and with fast access links, the minimal topology: Topology::minimal). Call once per run,
// before any socket exists; Simulator::Destroy() tears it down.
Topology build_topology(const LinkSpec& link, uint32_t cross_pairs);

// Checks the trace; nothing needs scheduling (the gates are driven by
// packets). Kept so that callers need not know how a trace is replayed.
void schedule_trace(const Topology& topo, const traces::Trace& trace, double stop_s);

// "rate" or "mahimahi": how the bottleneck replays `link.trace` (rate when
// there is no trace). Throws kvs::Error for an unknown mode, or mahimahi
// without delivery opportunities.
std::string resolved_trace_mode(const LinkSpec& link);

// The highest rate the bottleneck will have (bits per second).
double peak_rate_bps(const LinkSpec& link);

}  // namespace kvs::sim
