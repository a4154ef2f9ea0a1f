// kvstream's reference bulk transfer for upstream ns-3 (issue 21): one
// response of --bytes over the dumbbell that kvstream's simulator builds
// (sim/topology.cc), with the same TCP settings, on an unmodified ns-3.
// Equivalent to `kvstream_tcp_trace --tcp TCP --loss P --seed S` (one bulk
// response, tests/sim/tcp_transfer.h): the client connects, sends a 16-byte
// request, the server answers with --bytes; the time is from connect() to the
// last byte. Not built by kvstream's CMake: compile it against any ns-3, e.g.
//   g++ -std=c++20 -O2 -I NS3/build/include bulk.cc -L NS3/build/lib -lns3.48-core -lns3.48-network \
//       -lns3.48-internet -lns3.48-point-to-point -lns3.48-traffic-control -Wl,-rpath,NS3/build/lib
// (Debian's ns-3.37: -std=c++17 and -lns3-core ... without the version), or
// copy it to an ns-3 tree's scratch/. Checked on Debian's ns-3.37: the same
// completion time, segments and retransmissions as
// `kvstream_tcp_trace --ns3-stock 1 --delack-ms 40 --granularity-ms 200`
// (unmodified ns-3 with kvstream's timers), e.g. 20.347294 s and 37
// retransmissions for `--tcp=cubic --loss=0.01 --bytes=5000000`.
// Prints one JSON line. BENCHMARKS.md, "TCP under loss (issue 21)".
//
// Topology: server -- access (10 Gbit/s, no delay) -- router -- bottleneck
// (--rate-mbps, --rtt-ms / 2 each way, drop-tail device queue of one BDP, at
// least 100 packets, no queue disc) -- router -- access -- client; random
// per-packet loss on the bottleneck's receiving device (the data direction).
// TCP: MSS = MTU - 52, initial window 10, an ACK per 2 segments, SACK, socket
// buffers 4 BDP (at least 1 MiB), minimum RTO 200 ms; with --kvs-timers 1
// (default) kvstream's RTO rule and ACK timer (ClockGranularity = the minimum
// RTO, i.e. RTO >= SRTT + 200 ms; a 40 ms delayed-ACK timer), with 0 ns-3's
// (1 ms granularity, 200 ms ACK timer).
#include "ns3/core-module.h"
#include "ns3/internet-module.h"
#include "ns3/network-module.h"
#include "ns3/point-to-point-module.h"
#include "ns3/traffic-control-module.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

using namespace ns3;

namespace
{

struct State
{
    uint64_t totalBytes = 0;
    uint64_t responseLeft = 0;
    uint32_t requestHave = 0;
    uint64_t received = 0;
    bool finished = false;
    double doneS = 0;
    uint64_t segments = 0;
    uint64_t retransmissions = 0;
    uint32_t timeouts = 0;
    SequenceNumber32 highSent{0};
};

void
Pump(State* s, Ptr<Socket> socket, uint32_t)
{
    while (s->responseLeft > 0)
    {
        const uint32_t room = socket->GetTxAvailable();
        if (room == 0)
        {
            return;
        }
        const uint32_t n = uint32_t(std::min<uint64_t>(room, s->responseLeft));
        const int sent = socket->Send(Create<Packet>(n));
        if (sent <= 0)
        {
            return;
        }
        s->responseLeft -= uint64_t(sent);
    }
}

void
ServerRead(State* s, Ptr<Socket> socket)
{
    while (Ptr<Packet> p = socket->Recv())
    {
        if (p->GetSize() == 0)
        {
            break;
        }
        s->requestHave += p->GetSize();
        if (s->requestHave >= 16 && s->responseLeft == 0 && s->received == 0)
        {
            s->responseLeft = s->totalBytes;
        }
    }
    Pump(s, socket, 0);
}

void
ClientRead(State* s, Ptr<Socket> socket)
{
    while (Ptr<Packet> p = socket->Recv())
    {
        if (p->GetSize() == 0)
        {
            break;
        }
        s->received += p->GetSize();
        if (s->received >= s->totalBytes && !s->finished)
        {
            s->finished = true;
            s->doneS = Simulator::Now().GetSeconds();
            Simulator::Stop();
        }
    }
}

void
OnTx(State* s, Ptr<const Packet> p, const TcpHeader& h, Ptr<const TcpSocketBase>)
{
    if (p->GetSize() == 0)
    {
        return;
    }
    ++s->segments;
    const SequenceNumber32 end = h.GetSequenceNumber() + p->GetSize();
    if (end <= s->highSent)
    {
        ++s->retransmissions;
    }
    else
    {
        s->highSent = end;
    }
}

} // namespace

int
main(int argc, char** argv)
{
    std::string tcp = "cubic";
    double loss = 0;
    double rateMbps = 1000;
    double rttMs = 20;
    double bytes = 80.8e6;
    double stopS = 3600;
    uint32_t seed = 1;
    uint32_t run = 1;
    uint32_t mtu = 1500;
    double minRtoMs = 200;
    bool kvsTimers = true;
    CommandLine cmd(__FILE__);
    cmd.AddValue("tcp", "newreno or cubic (ns-3's TcpNewReno, TcpCubic)", tcp);
    cmd.AddValue("loss", "random per-packet loss on the bottleneck", loss);
    cmd.AddValue("rate-mbps", "bottleneck rate", rateMbps);
    cmd.AddValue("rtt-ms", "bottleneck round-trip propagation delay", rttMs);
    cmd.AddValue("bytes", "response bytes", bytes);
    cmd.AddValue("stop-s", "simulated time limit", stopS);
    cmd.AddValue("seed", "RngSeedManager seed", seed);
    cmd.AddValue("run", "RngSeedManager run", run);
    cmd.AddValue("mtu", "IP MTU", mtu);
    cmd.AddValue("min-rto-ms", "minimum RTO", minRtoMs);
    cmd.AddValue("kvs-timers", "1: kvstream's RTO rule and 40 ms ACK timer; 0: ns-3's", kvsTimers);
    cmd.Parse(argc, argv);

    RngSeedManager::SetSeed(seed);
    RngSeedManager::SetRun(run);
    const double bdpBytes = rateMbps * 1e6 / 8 * rttMs / 1000;
    const uint32_t queue = std::max<uint32_t>(100, uint32_t(std::ceil(bdpBytes / mtu)));
    const uint32_t buffer = std::max<uint32_t>(1u << 20, uint32_t(std::min(4 * bdpBytes, 1e9)));
    const TypeId tcpType = tcp == "newreno" ? TcpNewReno::GetTypeId() : TcpCubic::GetTypeId();
    if (tcp != "newreno" && tcp != "cubic")
    {
        std::fprintf(stderr, "--tcp: newreno or cubic, not %s\n", tcp.c_str());
        return 2;
    }
    Config::SetDefault("ns3::TcpL4Protocol::SocketType", TypeIdValue(tcpType));
    Config::SetDefault("ns3::TcpSocket::SegmentSize", UintegerValue(mtu - 52));
    Config::SetDefault("ns3::TcpSocket::SndBufSize", UintegerValue(buffer));
    Config::SetDefault("ns3::TcpSocket::RcvBufSize", UintegerValue(buffer));
    Config::SetDefault("ns3::TcpSocket::InitialCwnd", UintegerValue(10));
    Config::SetDefault("ns3::TcpSocket::DelAckCount", UintegerValue(2));
    Config::SetDefault("ns3::TcpSocketBase::Sack", BooleanValue(true));
    const Time minRto = MicroSeconds(int64_t(minRtoMs * 1000));
    Config::SetDefault("ns3::TcpSocketBase::MinRto", TimeValue(minRto));
    Config::SetDefault("ns3::TcpSocketBase::ClockGranularity",
                       TimeValue(kvsTimers ? minRto : MilliSeconds(1)));
    Config::SetDefault("ns3::TcpSocket::DelAckTimeout",
                       TimeValue(kvsTimers ? MilliSeconds(40) : MilliSeconds(200)));

    NodeContainer nodes;
    nodes.Create(4);
    InternetStackHelper internet;
    internet.Install(nodes);
    PointToPointHelper access;
    access.SetDeviceAttribute("DataRate", StringValue("10000000000bps"));
    access.SetDeviceAttribute("Mtu", UintegerValue(mtu));
    access.SetChannelAttribute("Delay", TimeValue(Seconds(0)));
    access.SetQueue("ns3::DropTailQueue", "MaxSize", QueueSizeValue(QueueSize("10000p")));
    PointToPointHelper neck;
    neck.SetDeviceAttribute("DataRate",
                            StringValue(std::to_string(uint64_t(std::llround(rateMbps * 1e6))) + "bps"));
    neck.SetDeviceAttribute("Mtu", UintegerValue(mtu));
    neck.SetChannelAttribute("Delay", TimeValue(Seconds(rttMs / 2000)));
    neck.SetQueue("ns3::DropTailQueue",
                  "MaxSize",
                  QueueSizeValue(QueueSize(QueueSizeUnit::PACKETS, queue)));
    Ipv4AddressHelper addr;
    TrafficControlHelper tc;
    int subnet = 0;
    auto pair = [&](PointToPointHelper& helper, Ptr<Node> a, Ptr<Node> b) {
        NetDeviceContainer devs = helper.Install(a, b);
        addr.SetBase(Ipv4Address((10u << 24) | (uint32_t(subnet++) << 8)), "255.255.255.0");
        Ipv4InterfaceContainer ifs = addr.Assign(devs);
        tc.Uninstall(devs);
        return std::make_pair(devs, ifs);
    };
    const Ipv4Address serverAddress = pair(access, nodes.Get(0), nodes.Get(1)).second.GetAddress(0);
    NetDeviceContainer neckDevs = pair(neck, nodes.Get(1), nodes.Get(2)).first;
    pair(access, nodes.Get(2), nodes.Get(3));
    Ptr<RateErrorModel> em;
    if (loss > 0)
    {
        em = CreateObject<RateErrorModel>();
        em->SetAttribute("ErrorUnit", EnumValue(RateErrorModel::ERROR_UNIT_PACKET));
        em->SetAttribute("ErrorRate", DoubleValue(loss));
        neckDevs.Get(1)->SetAttribute("ReceiveErrorModel", PointerValue(em));
    }
    Ipv4GlobalRoutingHelper::PopulateRoutingTables();
    int64_t stream = internet.AssignStreams(nodes, 0);
    if (em)
    {
        em->AssignStreams(stream);
    }

    State s;
    s.totalBytes = uint64_t(bytes);
    Ptr<Socket> listener = Socket::CreateSocket(nodes.Get(0), TcpSocketFactory::GetTypeId());
    listener->Bind(InetSocketAddress(Ipv4Address::GetAny(), 9100));
    listener->Listen();
    listener->SetAcceptCallback(MakeNullCallback<bool, Ptr<Socket>, const Address&>(),
                                MakeBoundCallback(
                                    +[](State* s, Ptr<Socket> sock, const Address&) {
                                        sock->SetRecvCallback(MakeBoundCallback(&ServerRead, s));
                                        sock->SetSendCallback(MakeBoundCallback(&Pump, s));
                                        sock->TraceConnectWithoutContext("Tx", MakeBoundCallback(&OnTx, s));
                                        sock->TraceConnectWithoutContext(
                                            "CongState",
                                            MakeBoundCallback(
                                                +[](State* s,
                                                    TcpSocketState::TcpCongState_t,
                                                    TcpSocketState::TcpCongState_t v) {
                                                    if (v == TcpSocketState::CA_LOSS)
                                                    {
                                                        ++s->timeouts;
                                                    }
                                                },
                                                s));
                                    },
                                    &s));
    Ptr<Socket> client = Socket::CreateSocket(nodes.Get(3), TcpSocketFactory::GetTypeId());
    client->Bind();
    client->SetRecvCallback(MakeBoundCallback(&ClientRead, &s));
    client->SetConnectCallback(MakeBoundCallback(
                                   +[](State*, Ptr<Socket> c) { c->Send(Create<Packet>(16)); },
                                   &s),
                               MakeNullCallback<void, Ptr<Socket>>());
    client->Connect(InetSocketAddress(serverAddress, 9100));
    Simulator::Stop(Seconds(stopS));
    Simulator::Run();
    const double end = s.finished ? s.doneS : Simulator::Now().GetSeconds();
    std::printf("{\"tcp\": \"%s\", \"loss\": %g, \"rate_mbps\": %g, \"rtt_ms\": %g, "
                "\"bytes\": %llu, \"seed\": %u, \"run\": %u, \"kvs_timers\": %s, \"finished\": %s, "
                "\"completion_s\": %.6f, \"received\": %llu, \"segments\": %llu, \"retransmissions\": %llu, "
                "\"loss_state_entries\": %u}\n",
                tcpType.GetName().c_str(), loss, rateMbps, rttMs,
                (unsigned long long)s.totalBytes, seed, run, kvsTimers ? "true" : "false",
                s.finished ? "true" : "false", end, (unsigned long long)s.received,
                (unsigned long long)s.segments, (unsigned long long)s.retransmissions, s.timeouts);
    Simulator::Destroy();
    return s.finished ? 0 : 1;
}
