#include "sim/cross_traffic.h"

#include <fmt/format.h>

#include "ns3/applications-module.h"
#include "ns3/core-module.h"
#include "ns3/internet-module.h"

#include "base/error.h"

namespace kvs::sim {

uint32_t cross_traffic_pairs(const CrossTrafficSpec& spec) { return spec.bulk_tcp_flows + spec.onoff_udp_flows; }

void install_cross_traffic(const CrossTrafficSpec& spec, const Topology& topo, double stop_s) {
  using namespace ns3;
  if (topo.cross_senders.size() < cross_traffic_pairs(spec))
    throw Error("cross traffic: the topology has too few sender/receiver pairs");
  if (!(spec.udp_on_s > 0 && spec.udp_off_s > 0 && spec.udp_rate_mbps > 0))
    throw Error("cross traffic: udp_on_s, udp_off_s and udp_rate_mbps must be positive");
  const uint16_t port = 9000;
  uint32_t pair = 0;
  for (uint32_t i = 0; i < spec.bulk_tcp_flows; ++i, ++pair) {
    const Address sink_addr(InetSocketAddress(topo.cross_receiver_addresses[pair], port));
    PacketSinkHelper sink("ns3::TcpSocketFactory", InetSocketAddress(Ipv4Address::GetAny(), port));
    sink.Install(topo.cross_receivers[pair]).Start(Seconds(0));
    BulkSendHelper bulk("ns3::TcpSocketFactory", sink_addr);
    bulk.SetAttribute("MaxBytes", UintegerValue(0));
    ApplicationContainer apps = bulk.Install(topo.cross_senders[pair]);
    apps.Start(Seconds(spec.start_s));
    apps.Stop(Seconds(stop_s));
  }
  for (uint32_t i = 0; i < spec.onoff_udp_flows; ++i, ++pair) {
    const Address sink_addr(InetSocketAddress(topo.cross_receiver_addresses[pair], port));
    PacketSinkHelper sink("ns3::UdpSocketFactory", InetSocketAddress(Ipv4Address::GetAny(), port));
    sink.Install(topo.cross_receivers[pair]).Start(Seconds(0));
    OnOffHelper onoff("ns3::UdpSocketFactory", sink_addr);
    onoff.SetConstantRate(DataRate(uint64_t(spec.udp_rate_mbps * 1e6)), 1400);
    onoff.SetAttribute("OnTime", StringValue(fmt::format("ns3::ExponentialRandomVariable[Mean={}]", spec.udp_on_s)));
    onoff.SetAttribute("OffTime", StringValue(fmt::format("ns3::ExponentialRandomVariable[Mean={}]", spec.udp_off_s)));
    ApplicationContainer apps = onoff.Install(topo.cross_senders[pair]);
    onoff.AssignStreams(NodeContainer(topo.cross_senders[pair]), topo.next_stream + 2 * i);
    apps.Start(Seconds(spec.start_s));
    apps.Stop(Seconds(stop_s));
  }
}

}  // namespace kvs::sim
