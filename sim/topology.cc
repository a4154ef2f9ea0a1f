#include "sim/topology.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <optional>
#include <tuple>

#include <fmt/format.h>

#include "ns3/core-module.h"
#include "ns3/internet-module.h"
#include "ns3/network-module.h"
#include "ns3/point-to-point-module.h"
#include "ns3/traffic-control-module.h"

#include "base/error.h"
#include "sim/access_links.h"
#include "sim/ns3_fixes.h"
#include "sim/ns3_version.h"
#include "sim/opportunity_queue_disc.h"
#include "sim/rate_queue_disc.h"
#include "sim/tcp_cubic.h"
#include "sim/tcp_cubic_rfc9438.h"

namespace kvs::sim {

namespace {

using Settings = std::vector<std::pair<std::string, std::string>>;

// IP 20 + TCP 20 + timestamp option 12 (see DESIGN.md).
constexpr uint32_t kTcpIpOverheadBytes = 52;

std::string tcp_type(const std::string& name, bool ns3_stock) {
  if (name == "cubic") return ns3_stock ? "ns3::TcpCubic" : TcpCubicRfc9438::GetTypeId().GetName();
  if (name == "cubic-rfc9438") return TcpCubicRfc9438::GetTypeId().GetName();  // see sim/tcp_cubic_rfc9438.h
  if (name == "cubic-ns3") return "ns3::TcpCubic";
  if (name == "cubic-hystart-fix") return TcpCubicHystartFix::GetTypeId().GetName();  // see sim/tcp_cubic.h
  if (name == "newreno") return "ns3::TcpNewReno";
  if (name == "bbr") return "ns3::TcpBbr";
  throw Error(fmt::format(
      "link tcp: unknown TCP variant '{}' (known: cubic, cubic-rfc9438, cubic-ns3, cubic-hystart-fix, newreno, bbr)",
      name));
}

// The receiver's delayed-ACK timer: Linux's minimum (TCP_ATO_MIN, 40 ms)
// instead of ns-3's 200 ms, which is not below the minimum RTO (docs/simulator.md, "Loss").
constexpr double kDelayedAckTimeoutMs = 40;

std::string rate_text(double bps) { return fmt::format("{}bps", uint64_t(std::llround(bps))); }

// Bottleneck device rate behind a trace gate (rate or mahimahi): the gate
// decides when a packet leaves, the device only adds 12 ns of serialization
// per 1500-byte packet.
constexpr double kGateDeviceRateBps = 1e12;

// Packets an access link's device queue holds (a window never fills it).
constexpr uint32_t kAccessQueuePackets = 10000;

// Attribute value types whose text is a setting (pointers, callbacks and
// object lists are not). ns-3 names some with "ns3::", some without.
bool is_setting(const ns3::TypeId::AttributeInformation& info) {
  static const char* const kTypes[] = {"BooleanValue", "UintegerValue", "IntegerValue", "DoubleValue",
                                       "TimeValue",    "EnumValue",     "StringValue",  "TypeIdValue",
                                       "DataRateValue", "QueueSizeValue"};
  if (info.supportLevel == ns3::TypeId::OBSOLETE) return false;
  std::string type = info.checker->GetValueTypeName();
  if (type.rfind("ns3::", 0) == 0) type = type.substr(5);
  return std::any_of(std::begin(kTypes), std::end(kTypes), [&](const char* t) { return type == t; });
}

// The initial value of every attribute of `tid` and its parents up to (not
// including) `stop`: what an object created now gets (Config::SetDefault
// changes these).
void add_defaults(Settings& out, ns3::TypeId tid, const std::string& stop) {
  for (; tid.GetName() != stop && tid.GetName() != "ns3::Object" && tid.GetName() != "ns3::ObjectBase";
       tid = tid.GetParent()) {
    for (size_t i = 0; i < tid.GetAttributeN(); ++i) {
      const auto info = tid.GetAttribute(i);
      if (is_setting(info))
        out.emplace_back(tid.GetName() + "::" + info.name, info.initialValue->SerializeToString(info.checker));
    }
  }
}

// The current value of every attribute of an object (its type and parents).
void add_attributes(Settings& out, const std::string& prefix, ns3::Ptr<ns3::Object> obj) {
  for (ns3::TypeId tid = obj->GetInstanceTypeId();
       tid.GetName() != "ns3::Object" && tid.GetName() != "ns3::ObjectBase"; tid = tid.GetParent()) {
    for (size_t i = 0; i < tid.GetAttributeN(); ++i) {
      const auto info = tid.GetAttribute(i);
      if (!is_setting(info) || !(info.flags & ns3::TypeId::ATTR_GET)) continue;
      ns3::Ptr<ns3::AttributeValue> v = info.checker->Create();
      obj->GetAttribute(info.name, *v);
      out.emplace_back(prefix + tid.GetName() + "::" + info.name, v->SerializeToString(info.checker));
    }
  }
}

std::string format_number(double x) { return fmt::format("{}", x); }

// A queue disc of the configured discipline holding at most `packets`.
ns3::Ptr<ns3::QueueDisc> make_queue_disc(const std::string& kind, uint32_t packets, uint32_t mtu) {
  using namespace ns3;
  const QueueSizeValue size(QueueSize(QueueSizeUnit::PACKETS, packets));
  if (kind == "droptail") return CreateObjectWithAttributes<FifoQueueDisc>("MaxSize", size);
  if (kind == "codel") return CreateObjectWithAttributes<CoDelQueueDisc>("MaxSize", size);
  auto fq = CreateObjectWithAttributes<FqCoDelQueueDisc>("MaxSize", size);
  // FqCoDel takes its DRR quantum from the device's MTU only as a root queue
  // disc; as the gate's child it would be 0 (no packet ever dequeued).
  fq->SetQuantum(mtu);
  return fq;
}

}  // namespace

double peak_rate_bps(const LinkSpec& link) {
  if (!link.trace) return link.rate_mbps * 1e6;
  double peak = 0;
  for (const auto& s : link.trace->segments) peak = std::max(peak, s.rate_bps);
  return peak;
}

std::string resolved_trace_mode(const LinkSpec& link) {
  const std::string& m = link.trace_mode;
  if (m != "auto" && m != "rate" && m != "mahimahi")
    throw Error(fmt::format("link trace_mode: expected auto, rate or mahimahi, got '{}'", m));
  if (!link.trace) return "rate";
  if (m == "mahimahi" && !link.trace->opportunities)
    throw Error(fmt::format(
        "link trace_mode: mahimahi needs a trace with delivery opportunities (a mahimahi file); trace '{}' has "
        "none (`kvstream trace convert` writes one)",
        link.trace->name));
  if (m == "auto") return link.trace->opportunities ? "mahimahi" : "rate";
  return m;
}

Topology build_topology(const LinkSpec& link, uint32_t cross_pairs) {
  using namespace ns3;
  if (!(link.rtt_ms >= 0)) throw Error("link rtt_ms: expected a number >= 0");
  if (!(link.access_rtt_ms >= 0)) throw Error("link access_rtt_ms: expected a number >= 0");
  if (!link.trace && !(link.rate_mbps > 0)) throw Error("link rate_mbps: expected a positive number");
  if (!(link.loss_rate >= 0 && link.loss_rate < 1)) throw Error("link loss_rate: expected a number in [0, 1)");
  if (link.mtu_bytes < 576 || link.mtu_bytes > 65535) throw Error("link mtu_bytes: expected 576..65535");
  if (!(link.access_rate_mbps > 0)) throw Error("link access_rate_mbps: expected a positive number");
  if (link.queue != "droptail" && link.queue != "codel" && link.queue != "fqcodel")
    throw Error(fmt::format("link queue: expected droptail, codel or fqcodel, got '{}'", link.queue));
  // ns-3.37's TCP with the project's fixes (sim/ns3_fixes.h), or as shipped;
  // the fixes need ns-3.37 itself (sim/ns3_version.h).
  require_ns3_version(link.ns3_stock);
  set_ns3_tcp_fixes(link.ns3_stock ? Ns3TcpFixes::stock() : Ns3TcpFixes{});
  const uint32_t max_mss = link.mtu_bytes - kTcpIpOverheadBytes;
  if (link.mss_bytes != 0 && (link.mss_bytes < 64 || link.mss_bytes > max_mss))
    throw Error(fmt::format("link mss_bytes: expected 64..{} (mtu_bytes - 52), or 0 for that", max_mss));
  if (link.initial_cwnd_segments < 1) throw Error("link initial_cwnd_segments: expected an integer >= 1");
  if (link.delayed_ack_count < 1) throw Error("link delayed_ack_count: expected an integer >= 1");
  if (!(link.min_rto_ms > 0)) throw Error("link min_rto_ms: expected a positive number");
  const std::string mode = resolved_trace_mode(link);
  const bool mahimahi = mode == "mahimahi";

  const double peak_bps = peak_rate_bps(link);
  const double rtt_ms = link.rtt_ms + link.access_rtt_ms;
  const double bdp_bytes = peak_bps / 8 * rtt_ms / 1000;
  const uint32_t queue = link.queue_packets
                             ? link.queue_packets
                             : std::max<uint32_t>(100, uint32_t(std::ceil(bdp_bytes / link.mtu_bytes)));
  const uint32_t buffer = link.tcp_buffer_bytes
                              ? link.tcp_buffer_bytes
                              : std::max<uint32_t>(1u << 20, uint32_t(std::min(4 * bdp_bytes, 1e9)));
  const uint32_t segment = link.mss_bytes ? link.mss_bytes : max_mss;

  Config::SetDefault("ns3::TcpL4Protocol::SocketType", StringValue(tcp_type(link.tcp, link.ns3_stock)));
  Config::SetDefault("ns3::TcpSocket::SegmentSize", UintegerValue(segment));
  Config::SetDefault("ns3::TcpSocket::SndBufSize", UintegerValue(buffer));
  Config::SetDefault("ns3::TcpSocket::RcvBufSize", UintegerValue(buffer));
  Config::SetDefault("ns3::TcpSocket::InitialCwnd", UintegerValue(link.initial_cwnd_segments));
  Config::SetDefault("ns3::TcpSocket::DelAckCount", UintegerValue(link.delayed_ack_count));
  Config::SetDefault("ns3::TcpSocketBase::Sack", BooleanValue(true));
  // Linux's minimum retransmission timeout by default (ns-3's is 1 s): a tail
  // loss at the end of a chunk, with no duplicate ACKs to trigger fast
  // retransmit, otherwise stalls a request for over a second.
  const Time min_rto = NanoSeconds(std::llround(link.min_rto_ms * 1e6));
  Config::SetDefault("ns3::TcpSocketBase::MinRto", TimeValue(min_rto));
  // ns-3 computes RTO = max(SRTT + max(ClockGranularity, 4 RTTVAR), MinRto);
  // Linux keeps RTTVAR at least the minimum RTO, so RTO >= SRTT + 200 ms.
  // With ns-3's 1 ms granularity the RTO of a steady path is about
  // max(SRTT, 200 ms): below the time a lone segment's delayed ACK takes to
  // come back (RTT + the ACK timer), so after any timeout the sender, at one
  // segment, timed out again every time and never grew its window (one
  // segment per 220 ms for the rest of a run at 20 ms; docs/simulator.md).
  // Both settings are restored by ns3_stock.
  const Time granularity = link.ns3_stock ? MilliSeconds(1) : min_rto;
  const Time delack = link.ns3_stock ? MilliSeconds(200) : MicroSeconds(std::llround(kDelayedAckTimeoutMs * 1e3));
  Config::SetDefault("ns3::TcpSocketBase::ClockGranularity", TimeValue(granularity));
  Config::SetDefault("ns3::TcpSocket::DelAckTimeout", TimeValue(delack));
  // Linux gives up on a connection after tcp_retries2 = 15 unanswered
  // retransmissions (minutes); ns-3 after 6, which a client's small request
  // reaches within a 4 s outage of the downlink that carries its ACKs: the
  // connection was dropped and the run waited for max_sim_s. Restored by
  // ns3_stock too.
  Config::SetDefault("ns3::TcpSocket::DataRetries", UintegerValue(link.ns3_stock ? 6 : 15));

  Topology t;
  t.mahimahi = mahimahi;
  // Without cross traffic, the minimal topology puts the server and the GPU
  // node on the bottleneck's two ends and emulates the access links
  // (sim/access_links.h): two events per packet instead of six, the same
  // packets (docs/simulator.md, "Events per segment"). The dumbbell stays
  // with cross traffic, an access link not faster than the bottleneck (it
  // could hold a queue of its own), `fold_access_links: false`, ns3_stock (as
  // built by ns-3's helpers).
  const double access_bps = link.access_rate_mbps * 1e6;
  const bool droptail_device = !link.trace && link.queue == "droptail";
  t.minimal = link.fold_access_links && !link.ns3_stock && cross_pairs == 0 && access_bps > peak_bps;
  NodeContainer nodes;
  nodes.Create(t.minimal ? 2 : 4 + 2 * cross_pairs);
  t.server = nodes.Get(0);
  t.left_router = t.minimal ? nodes.Get(0) : nodes.Get(1);
  t.right_router = t.minimal ? nodes.Get(1) : nodes.Get(2);
  t.client = t.minimal ? nodes.Get(1) : nodes.Get(3);
  InternetStackHelper internet;
  internet.Install(nodes);

  // Two access links on every path, each crossed once each way.
  const double access_delay_s = link.access_rtt_ms / 4 / 1000;
  const Time access_delay = Seconds(access_delay_s);
  PointToPointHelper access;
  access.SetDeviceAttribute("DataRate", StringValue(rate_text(access_bps)));
  access.SetDeviceAttribute("Mtu", UintegerValue(link.mtu_bytes));
  access.SetChannelAttribute("Delay", TimeValue(access_delay));
  access.SetQueue("ns3::DropTailQueue", "MaxSize", QueueSizeValue(QueueSize(QueueSizeUnit::PACKETS, kAccessQueuePackets)));

  // The device queue: the whole queue for a constant rate with drop-tail;
  // otherwise one packet behind a queue disc (so that the queue, and CoDel's
  // sojourn times, are in the queue disc), or, behind a trace gate, room for
  // everything the gate can release at one instant (so it never waits).
  uint32_t device_queue = queue;
  double device_bps = link.rate_mbps * 1e6;
  if (mahimahi) {
    const OpportunitySchedule schedule(*link.trace->opportunities, link.trace->loops);
    const uint64_t bytes_per_instant = uint64_t(schedule.max_count()) *
                                       (link.trace->opportunities->packet_bytes +
                                        DeliveryOpportunityQueueDisc::kTunHeaderBytes);
    device_queue = uint32_t(std::max<uint64_t>(100, bytes_per_instant / 24 + 2));  // 24: IP header + 4
    device_bps = kGateDeviceRateBps;
  } else if (link.trace) {
    device_queue = 100;  // the rate gate releases one packet at a time
    device_bps = kGateDeviceRateBps;
  } else if (link.queue != "droptail") {
    device_queue = 1;
  }
  // The emulated access link decides the drop-tail queue's drops itself and
  // hands the device what it will be busy for (sim/access_links.h): the
  // device's queue never fills.
  const uint32_t forward_device_queue = t.minimal && droptail_device ? (1u << 30) : device_queue;
  // The reverse direction (ACKs, requests) of a trace-driven bottleneck runs
  // at the access rate: a trace describes one direction, and its first
  // segment (possibly an outage) says nothing about the other.
  const double reverse_bps = link.trace ? access_bps : device_bps;
  const Time neck_delay = Seconds(link.rtt_ms / 2000);

  Ipv4AddressHelper addr;
  TrafficControlHelper tc;
  int subnet = 0;
  auto assign = [&](const NetDeviceContainer& devs) {
    addr.SetBase(Ipv4Address((10u << 24) | (uint32_t(subnet++) << 8)), "255.255.255.0");
    Ipv4InterfaceContainer ifs = addr.Assign(devs);
    tc.Uninstall(devs);
    return ifs;
  };
  auto link_pair = [&](PointToPointHelper& helper, Ptr<Node> a, Ptr<Node> b) {
    NetDeviceContainer devs = helper.Install(a, b);
    return std::make_pair(devs, assign(devs));
  };
  NetDeviceContainer neck_devs;
  Ipv4InterfaceContainer neck_ifs;
  if (t.minimal) {
    // As PointToPointHelper::Install does, with the emulating channel.
    // Flow control (ns-3 schedules an event per dequeued packet to wake the
    // queue disc) only where a queue disc pulls: the bottleneck's sending end.
    // Without it a full device queue drops, as a stopped one does without a
    // queue disc.
    auto device = [&](Ptr<Node> node, double bps, uint32_t queue_packets, bool flow_control) {
      auto dev = CreateObject<PointToPointNetDevice>();
      dev->SetAttribute("DataRate", StringValue(rate_text(bps)));
      dev->SetAttribute("Mtu", UintegerValue(link.mtu_bytes));
      dev->SetAddress(Mac48Address::Allocate());
      node->AddDevice(dev);
      Ptr<Queue<Packet>> q = CreateObjectWithAttributes<DropTailQueue<Packet>>(
          "MaxSize", QueueSizeValue(QueueSize(QueueSizeUnit::PACKETS, queue_packets)));
      dev->SetQueue(q);
      auto ndqi = CreateObject<NetDeviceQueueInterface>();  // the traffic control layer needs one
      if (flow_control) ndqi->GetTxQueue(0)->ConnectQueueTraces(q);
      dev->AggregateObject(ndqi);
      return dev;
    };
    auto forward = device(t.left_router, device_bps, forward_device_queue, !droptail_device);
    auto reverse = device(t.right_router, reverse_bps, device_queue, false);
    auto channel = CreateObjectWithAttributes<FoldedAccessChannel>("Delay", TimeValue(neck_delay));
    channel->SetAccessLinks(DataRate(rate_text(access_bps)), access_delay);
    forward->Attach(channel);  // device 0: the sending end
    reverse->Attach(channel);
    neck_devs.Add(forward);
    neck_devs.Add(reverse);
    neck_ifs = assign(neck_devs);
    t.server_address = neck_ifs.GetAddress(0);
  } else {
    t.server_address = link_pair(access, t.server, t.left_router).second.GetAddress(0);
    PointToPointHelper neck;
    neck.SetDeviceAttribute("DataRate", StringValue(rate_text(device_bps)));
    neck.SetDeviceAttribute("Mtu", UintegerValue(link.mtu_bytes));
    neck.SetChannelAttribute("Delay", TimeValue(neck_delay));
    neck.SetQueue("ns3::DropTailQueue", "MaxSize", QueueSizeValue(QueueSize(QueueSizeUnit::PACKETS, device_queue)));
    std::tie(neck_devs, neck_ifs) = link_pair(neck, t.left_router, t.right_router);
    neck_devs.Get(1)->SetAttribute("DataRate", StringValue(rate_text(reverse_bps)));
    link_pair(access, t.right_router, t.client);
  }
  t.bottleneck = DynamicCast<PointToPointNetDevice>(neck_devs.Get(0));
  for (uint32_t i = 0; i < cross_pairs; ++i) {
    Ptr<Node> snd = nodes.Get(4 + 2 * i), rcv = nodes.Get(5 + 2 * i);
    link_pair(access, snd, t.left_router);
    auto [devs, ifs] = link_pair(access, t.right_router, rcv);
    t.cross_senders.push_back(snd);
    t.cross_receivers.push_back(rcv);
    t.cross_receiver_addresses.push_back(ifs.GetAddress(1));
  }

  if (t.minimal && droptail_device) {
    auto hop = CreateObject<AccessHopQueueDisc>();
    hop->SetAccessLink(DataRate(rate_text(access_bps)), access_delay, kAccessQueuePackets);
    hop->SetDropTailDevice(DataRate(rate_text(device_bps)), queue);
    t.queue_disc = hop;
    t.left_router->GetObject<TrafficControlLayer>()->SetRootQueueDiscOnDevice(t.bottleneck, t.queue_disc);
  } else if (link.trace || link.queue != "droptail") {
    t.queue = make_queue_disc(link.queue, queue, link.mtu_bytes);
    Ptr<QueueDisc> gate;
    if (mahimahi) {
      auto g = CreateObject<DeliveryOpportunityQueueDisc>();
      g->SetSchedule(*link.trace->opportunities, link.trace->loops);
      gate = g;
    } else if (link.trace) {
      auto g = CreateObject<TraceRateQueueDisc>();
      g->SetTrace(*link.trace);
      gate = g;
    }
    auto parent_of = [](Ptr<QueueDisc> parent, Ptr<QueueDisc> child) {
      auto cls = CreateObject<QueueDiscClass>();
      cls->SetQueueDisc(child);
      parent->AddQueueDiscClass(cls);
    };
    Ptr<QueueDisc> bottleneck_disc = t.queue;
    if (gate) {
      parent_of(gate, t.queue);
      bottleneck_disc = gate;
    }
    if (t.minimal) {
      auto hop = CreateObject<AccessHopQueueDisc>();
      hop->SetAccessLink(DataRate(rate_text(access_bps)), access_delay, kAccessQueuePackets);
      parent_of(hop, bottleneck_disc);
      // The gates hand packets to the device by running the root.
      AccessHopQueueDisc* root = PeekPointer(hop);
      if (auto g = DynamicCast<TraceRateQueueDisc>(gate)) {
        g->SetWake([root] { root->Run(); });
        hop->SetChildWillAsk([g = PeekPointer(g)] { return g->busy(); });
      }
      if (auto g = DynamicCast<DeliveryOpportunityQueueDisc>(gate)) {
        g->SetWake([root] { root->Run(); });
        hop->SetChildWillAsk([g = PeekPointer(g)] { return g->busy(); });
      }
      t.queue_disc = hop;
    } else {
      t.queue_disc = bottleneck_disc;
    }
    t.left_router->GetObject<TrafficControlLayer>()->SetRootQueueDiscOnDevice(t.bottleneck, t.queue_disc);
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
  // The loss model's stream comes first, so that the dumbbell and the
  // minimal topology (fewer nodes, fewer stack streams) lose the same packets.
  int64_t stream = 0;
  if (em) stream += em->AssignStreams(stream);
  stream += internet.AssignStreams(nodes, stream);
  t.next_stream = stream;

  const std::string bottleneck =
      !link.trace ? fmt::format("{} Mbit/s", link.rate_mbps)
      : mahimahi  ? fmt::format("trace {} (mahimahi delivery opportunities of {} B, {})", link.trace->name,
                                link.trace->opportunities->packet_bytes + DeliveryOpportunityQueueDisc::kTunHeaderBytes,
                                link.trace->loops ? "looping" : "once")
                  : fmt::format("trace {} (rate, peak {} Mbit/s, {})", link.trace->name, peak_bps / 1e6,
                                link.trace->loops ? "looping" : "once");
  const std::string queue_text =
      link.queue == "droptail" ? "drop-tail" : link.queue == "codel" ? "CoDel (ns-3 defaults: target 5 ms, interval 100 ms)"
                                                                     : "FqCoDel (ns-3 defaults: 1024 flows, target 5 ms, interval 100 ms)";
  t.description = fmt::format(
      "{}: bottleneck {}, one-way delay {} ms (RTT {} ms), {} queue {} packets, loss {}, MTU {} B; access links "
      "{} Mbit/s, RTT {} ms, no queue discs; TCP {} ({}; SACK, MSS {} B, initial cwnd {}, delayed ACK {} (timer {} ms), "
      "min RTO {} ms{}), socket buffers {} B; {} cross-traffic pairs",
      t.minimal ? "server and GPU node on the bottleneck's ends (access links emulated)" : "dumbbell",
      bottleneck, link.rtt_ms / 2, link.rtt_ms, queue_text, queue, link.loss_rate, link.mtu_bytes,
      link.access_rate_mbps, link.access_rtt_ms, link.tcp, tcp_type(link.tcp, link.ns3_stock), segment,
      link.initial_cwnd_segments, link.delayed_ack_count, delack.GetMilliSeconds(), link.min_rto_ms,
      link.ns3_stock ? ", ns-3's RTO rule" : ", RTO >= SRTT + min RTO", buffer, cross_pairs);

  Settings& st = t.settings;
  st.emplace_back("link.topology", t.minimal ? "minimal" : "dumbbell");
  st.emplace_back("link.bottleneck", link.trace ? "trace " + link.trace->name : "constant");
  if (!link.trace) st.emplace_back("link.rate_mbps", format_number(link.rate_mbps));
  st.emplace_back("link.trace_mode", mode);
  if (link.trace) st.emplace_back("link.trace_peak_mbps", format_number(peak_bps / 1e6));
  if (mahimahi) {
    st.emplace_back("link.opportunity_bytes",
                    std::to_string(link.trace->opportunities->packet_bytes + DeliveryOpportunityQueueDisc::kTunHeaderBytes));
    st.emplace_back("link.opportunity_period_ms", std::to_string(link.trace->opportunities->period_ms));
  }
  st.emplace_back("link.trace_loops", link.trace ? (link.trace->loops ? "true" : "false") : "n/a");
  st.emplace_back("link.device_rate_bps", format_number(device_bps));
  st.emplace_back("link.reverse_rate_bps", format_number(reverse_bps));
  st.emplace_back("link.rtt_ms", format_number(link.rtt_ms));
  st.emplace_back("link.one_way_delay_ms", format_number(link.rtt_ms / 2));
  st.emplace_back("link.access_rtt_ms", format_number(link.access_rtt_ms));
  st.emplace_back("link.access_one_way_delay_ms", format_number(access_delay_s * 1000));
  st.emplace_back("link.access_rate_mbps", format_number(link.access_rate_mbps));
  st.emplace_back("link.access_queue_packets", std::to_string(kAccessQueuePackets));
  st.emplace_back("link.mtu_bytes", std::to_string(link.mtu_bytes));
  st.emplace_back("link.loss_rate", format_number(link.loss_rate));
  st.emplace_back("link.cross_traffic_pairs", std::to_string(cross_pairs));
  st.emplace_back("queue.discipline", link.queue);
  st.emplace_back("queue.packets", std::to_string(queue));
  st.emplace_back("queue.device_queue_packets", std::to_string(forward_device_queue));
  if (t.queue) add_attributes(st, "queue.", t.queue);
  if (auto fq = DynamicCast<FqCoDelQueueDisc>(t.queue)) st.emplace_back("queue.fqcodel_quantum_bytes", std::to_string(fq->GetQuantum()));
  st.emplace_back("tcp.variant", link.tcp);
  st.emplace_back("tcp.type", tcp_type(link.tcp, link.ns3_stock));
  st.emplace_back("tcp.ns3_stock", link.ns3_stock ? "true" : "false");
  st.emplace_back("tcp.mss_bytes", std::to_string(segment));
  st.emplace_back("tcp.socket_buffer_bytes", std::to_string(buffer));
  add_defaults(st, TypeId::LookupByName("ns3::TcpL4Protocol"), "ns3::IpL4Protocol");
  add_defaults(st, TypeId::LookupByName("ns3::TcpSocketBase"), "ns3::Socket");
  add_defaults(st, TypeId::LookupByName("ns3::TcpSocketState"), "ns3::Object");
  // The variant's attributes, its parents' up to TcpCongestionOps (ns-3.37
  // gives TcpCubic the parent TcpSocketBase, recorded above already).
  add_defaults(st, TypeId::LookupByName(tcp_type(link.tcp, link.ns3_stock)), "ns3::TcpSocketBase");
  // The loss-recovery algorithm's own attributes (PRR by default).
  TypeId::AttributeInformation recovery_info;
  TypeIdValue recovery;
  if (TypeId::LookupByName("ns3::TcpL4Protocol").LookupAttributeByName("RecoveryType", &recovery_info) &&
      recovery.DeserializeFromString(recovery_info.initialValue->SerializeToString(recovery_info.checker),
                                     recovery_info.checker))
    add_defaults(st, recovery.Get(), "ns3::TcpRecoveryOps");
  add_defaults(st, TypeId::LookupByName("ns3::RttMeanDeviation"), "ns3::Object");
  return t;
}

void schedule_trace(const Topology&, const traces::Trace& trace, double) {
  if (trace.segments.empty()) throw Error(fmt::format("trace {}: no segments", trace.name));
}

}  // namespace kvs::sim
