#include "sim/topology.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "ns3/core-module.h"
#include "ns3/internet-module.h"
#include "ns3/network-module.h"
#include "ns3/point-to-point-module.h"
#include "ns3/traffic-control-module.h"

#include "base/error.h"
#include "sim/tcp_cubic.h"

namespace kvs::sim {

namespace {

// IP 20 + TCP 20 + timestamp option 12 (see DESIGN.md).
constexpr uint32_t kTcpIpOverheadBytes = 52;

std::string tcp_type(const std::string& name) {
  if (name == "cubic") return "ns3::TcpCubic";
  if (name == "cubic-hystart-fix") return TcpCubicHystartFix::GetTypeId().GetName();  // see sim/tcp_cubic.h
  if (name == "newreno") return "ns3::TcpNewReno";
  if (name == "bbr") return "ns3::TcpBbr";
  throw Error(fmt::format("link tcp: unknown TCP variant '{}' (known: cubic, cubic-hystart-fix, newreno, bbr)", name));
}

std::string rate_text(double bps) { return fmt::format("{}bps", uint64_t(std::llround(bps))); }

// ns-3 fixes a packet's serialization time when it starts, so a packet that
// starts during a (near-)zero segment would hold the link long after the
// rate comes back. A segment's rate is therefore raised so that one MTU-sized
// packet fits in it: at most one packet crosses during an outage, and the
// link is free again when the outage ends.
void set_rate(ns3::Ptr<ns3::PointToPointNetDevice> dev, double bps, double segment_s) {
  const double mtu_bits = 8.0 * dev->GetMtu();
  const double floor_bps = segment_s > 0 ? mtu_bits / segment_s : 1000.0;
  dev->SetDataRate(ns3::DataRate(uint64_t(std::llround(std::max({bps, floor_bps, 1000.0})))));
}

// Applies segment `i` of the trace and schedules the next boundary.
void trace_step(ns3::Ptr<ns3::PointToPointNetDevice> dev, const traces::Trace* trace, size_t i, double period_start_s,
                double stop_s) {
  const double now = ns3::Simulator::Now().GetSeconds();
  double next_start;
  size_t next = i + 1;
  if (next < trace->segments.size()) {
    next_start = period_start_s + trace->segments[next].start_s;
  } else if (trace->loops && trace->duration_s > 0) {
    period_start_s += trace->duration_s;
    next = 0;
    next_start = period_start_s;
  } else {
    const double end = period_start_s + trace->duration_s;
    set_rate(dev, trace->segments[i].rate_bps, end - now);
    if (end < stop_s)  // the trace is over: the link stops
      ns3::Simulator::Schedule(ns3::Seconds(end) - ns3::Simulator::Now(), &set_rate, dev, 0.0, 0.0);
    return;
  }
  set_rate(dev, trace->segments[i].rate_bps, next_start - now);
  if (next_start >= stop_s) return;
  ns3::Simulator::Schedule(ns3::Seconds(next_start) - ns3::Simulator::Now(), &trace_step, dev, trace, next,
                           period_start_s, stop_s);
}

}  // namespace

double peak_rate_bps(const LinkSpec& link) {
  if (!link.trace) return link.rate_mbps * 1e6;
  double peak = 0;
  for (const auto& s : link.trace->segments) peak = std::max(peak, s.rate_bps);
  return peak;
}

Topology build_topology(const LinkSpec& link, uint32_t cross_pairs) {
  using namespace ns3;
  if (!(link.rtt_ms >= 0)) throw Error("link rtt_ms: expected a number >= 0");
  if (!link.trace && !(link.rate_mbps > 0)) throw Error("link rate_mbps: expected a positive number");
  if (!(link.loss_rate >= 0 && link.loss_rate < 1)) throw Error("link loss_rate: expected a number in [0, 1)");
  if (link.mtu_bytes < 576 || link.mtu_bytes > 65535) throw Error("link mtu_bytes: expected 576..65535");

  const double peak_bps = peak_rate_bps(link);
  const double bdp_bytes = peak_bps / 8 * link.rtt_ms / 1000;
  const uint32_t queue = link.queue_packets
                             ? link.queue_packets
                             : std::max<uint32_t>(100, uint32_t(std::ceil(bdp_bytes / link.mtu_bytes)));
  const uint32_t buffer = link.tcp_buffer_bytes
                              ? link.tcp_buffer_bytes
                              : std::max<uint32_t>(1u << 20, uint32_t(std::min(4 * bdp_bytes, 1e9)));
  const uint32_t segment = link.mtu_bytes - kTcpIpOverheadBytes;

  Config::SetDefault("ns3::TcpL4Protocol::SocketType", StringValue(tcp_type(link.tcp)));
  Config::SetDefault("ns3::TcpSocket::SegmentSize", UintegerValue(segment));
  Config::SetDefault("ns3::TcpSocket::SndBufSize", UintegerValue(buffer));
  Config::SetDefault("ns3::TcpSocket::RcvBufSize", UintegerValue(buffer));
  Config::SetDefault("ns3::TcpSocket::InitialCwnd", UintegerValue(10));
  Config::SetDefault("ns3::TcpSocket::DelAckCount", UintegerValue(2));
  Config::SetDefault("ns3::TcpSocketBase::Sack", BooleanValue(true));
  // Linux's minimum retransmission timeout (ns-3's default is 1 s): a tail
  // loss at the end of a chunk, with no duplicate ACKs to trigger fast
  // retransmit, otherwise stalls a request for over a second.
  Config::SetDefault("ns3::TcpSocketBase::MinRto", TimeValue(MilliSeconds(200)));

  Topology t;
  NodeContainer nodes;
  nodes.Create(4 + 2 * cross_pairs);
  t.server = nodes.Get(0);
  t.left_router = nodes.Get(1);
  t.right_router = nodes.Get(2);
  t.client = nodes.Get(3);
  InternetStackHelper internet;
  internet.Install(nodes);

  const std::string access_rate = rate_text(link.access_rate_mbps * 1e6);
  PointToPointHelper access;
  access.SetDeviceAttribute("DataRate", StringValue(access_rate));
  access.SetDeviceAttribute("Mtu", UintegerValue(link.mtu_bytes));
  access.SetChannelAttribute("Delay", TimeValue(Seconds(0)));
  access.SetQueue("ns3::DropTailQueue", "MaxSize", QueueSizeValue(QueueSize(QueueSizeUnit::PACKETS, 10000)));

  PointToPointHelper neck;
  neck.SetDeviceAttribute("DataRate", StringValue(rate_text(link.trace ? link.trace->segments.at(0).rate_bps
                                                                       : link.rate_mbps * 1e6)));
  neck.SetDeviceAttribute("Mtu", UintegerValue(link.mtu_bytes));
  neck.SetChannelAttribute("Delay", TimeValue(Seconds(link.rtt_ms / 2000)));
  neck.SetQueue("ns3::DropTailQueue", "MaxSize", QueueSizeValue(QueueSize(QueueSizeUnit::PACKETS, queue)));

  Ipv4AddressHelper addr;
  TrafficControlHelper tc;
  int subnet = 0;
  auto link_pair = [&](PointToPointHelper& helper, Ptr<Node> a, Ptr<Node> b) {
    NetDeviceContainer devs = helper.Install(a, b);
    addr.SetBase(Ipv4Address((10u << 24) | (uint32_t(subnet++) << 8)), "255.255.255.0");
    Ipv4InterfaceContainer ifs = addr.Assign(devs);
    tc.Uninstall(devs);
    return std::make_pair(devs, ifs);
  };
  auto [server_devs, server_ifs] = link_pair(access, t.server, t.left_router);
  t.server_address = server_ifs.GetAddress(0);
  auto [neck_devs, neck_ifs] = link_pair(neck, t.left_router, t.right_router);
  t.bottleneck = DynamicCast<PointToPointNetDevice>(neck_devs.Get(0));
  link_pair(access, t.right_router, t.client);
  for (uint32_t i = 0; i < cross_pairs; ++i) {
    Ptr<Node> snd = nodes.Get(4 + 2 * i), rcv = nodes.Get(5 + 2 * i);
    link_pair(access, snd, t.left_router);
    auto [devs, ifs] = link_pair(access, t.right_router, rcv);
    t.cross_senders.push_back(snd);
    t.cross_receivers.push_back(rcv);
    t.cross_receiver_addresses.push_back(ifs.GetAddress(1));
  }
  Ptr<RateErrorModel> em;
  if (link.loss_rate > 0) {
    em = CreateObject<RateErrorModel>();
    em->SetAttribute("ErrorUnit", EnumValue(RateErrorModel::ERROR_UNIT_PACKET));
    em->SetAttribute("ErrorRate", DoubleValue(link.loss_rate));
    neck_devs.Get(1)->SetAttribute("ReceiveErrorModel", PointerValue(em));
  }
  Ipv4GlobalRoutingHelper::PopulateRoutingTables();
  // Fixed random streams: ns-3 numbers streams from a process-wide counter, so
  // without this a second run in the same process would draw other numbers.
  int64_t stream = internet.AssignStreams(nodes, 0);
  if (em) stream += em->AssignStreams(stream);
  t.next_stream = stream;

  t.description = fmt::format(
      "dumbbell: bottleneck {} ({}), one-way delay {} ms (RTT {} ms), drop-tail queue {} packets, loss {}, "
      "MTU {} B; access links {} Mbit/s, no delay, no queue discs; TCP {} (SACK, initial cwnd 10, delayed ACK 2, min RTO 200 ms), "
      "segment {} B, socket buffers {} B; {} cross-traffic pairs",
      link.trace ? "trace " + link.trace->name : fmt::format("{} Mbit/s", link.rate_mbps),
      link.trace ? fmt::format("peak {} Mbit/s", peak_bps / 1e6) : "constant", link.rtt_ms / 2, link.rtt_ms, queue,
      link.loss_rate, link.mtu_bytes, link.access_rate_mbps, link.tcp, segment, buffer, cross_pairs);
  return t;
}

void schedule_trace(const Topology& topo, const traces::Trace& trace, double stop_s) {
  if (trace.segments.empty()) throw Error(fmt::format("trace {}: no segments", trace.name));
  trace_step(topo.bottleneck, &trace, 0, 0.0, stop_s);
}

}  // namespace kvs::sim
