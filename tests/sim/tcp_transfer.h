// One TCP transfer over the simulator's dumbbell (sim/topology.h), observed
// through ns-3's trace sources on the sending socket (C++17: ns-3 headers).
//
// Two patterns: a bulk transfer (the client sends one 16-byte request and the
// server answers with `total_bytes`), and the simulator's chunked pattern
// (one persistent connection; the client asks for the next `chunk_bytes`
// with a 16-byte request when the previous chunk's last byte has arrived, as
// sim/streaming_app.cc does with in_flight 1). What is measured: completion
// time, retransmission timeouts (and the longest run of back-to-back ones
// without an ACK of new data in between), the longest time the sender sent
// nothing while it had data that was not yet acknowledged, and optionally a
// trace of cwnd, ssthresh, RTO, congestion state and the scoreboard (bytes in
// flight, lost, SACKed, retransmitted) at every change.
//
// Used by tests/sim/tcp_loss_test.cc and by the kvstream_tcp_trace tool.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "ns3/core-module.h"
#include "ns3/internet-module.h"
#include "ns3/network-module.h"

#include "sim/topology.h"

namespace kvs::sim::testing {

struct TransferSpec {
  uint64_t total_bytes = 10'000'000;
  uint64_t chunk_bytes = 0;  // 0: one bulk response of total_bytes
  double stop_s = 600;
  uint32_t seed = 1, run = 1;
  FILE* trace = nullptr;     // CSV rows at every change, when set
  double trace_from_s = 0, trace_to_s = 1e18;
  double delack_timeout_ms = -1;  // >= 0: ns3::TcpSocket::DelAckTimeout for this run (experiments)
  double clock_granularity_ms = -1;  // >= 0: ns3::TcpSocketBase::ClockGranularity (experiments)
  bool sack = true;                  // ns3::TcpSocketBase::Sack
};

struct TransferResult {
  bool finished = false;
  double completion_s = 0;           // connect request to the last byte (or stop_s)
  uint64_t received = 0;
  uint32_t timeouts = 0;             // retransmission timeouts
  uint32_t max_backoff = 0;          // longest run of RTOs with no new data acknowledged between them
  double max_stall_s = 0;            // longest time between two data segments sent
  double rto_wait_s = 0;             // time from the last segment sent before each timeout to the timeout
  double tenth_s = 0;                // when a tenth of the bytes had arrived (steady-state throughput from here)
  uint64_t data_segments = 0, retransmissions = 0;
  std::vector<double> chunk_done_s;  // per chunk, when its last byte arrived
  std::string tcp_type;              // the congestion-control TypeId the socket ran
  // FNV-1a over every data segment sent: time (ns), sequence number, size.
  // Equal hashes mean the same packets at the same times.
  uint64_t tx_hash = 14695981039346656037ull;
};

namespace transfer_detail {

inline constexpr uint16_t kPort = 9100;
inline constexpr uint32_t kRequestBytes = 16;

struct State {
  TransferSpec spec;
  TransferResult result;
  ns3::Ptr<ns3::TcpSocketBase> sender;
  uint64_t response_left = 0;   // server: bytes of the current response not yet handed to the socket
  uint32_t request_have = 0;    // server: bytes of the current request read
  uint64_t chunk_left = 0;      // client: bytes of the current chunk still to come
  uint64_t requested = 0;       // client: bytes asked for so far
  ns3::Ptr<ns3::Socket> client;
  double start_s = 0;
  double last_tx_s = 0;
  ns3::SequenceNumber32 high_ack{0}, high_sent{0};
  uint32_t backoff_run = 0;
  std::string state = "OPEN";
};

inline void row(State& s, const char* what, double value) {
  if (!s.spec.trace || !s.sender) return;
  const double now = ns3::Simulator::Now().GetSeconds();
  if (now < s.spec.trace_from_s || now > s.spec.trace_to_s) return;
  ns3::Ptr<ns3::TcpTxBuffer> tx = s.sender->GetTxBuffer();
  std::fprintf(s.spec.trace, "%.6f,%s,%.6g,%s,%u,%u,%u,%u,%u,%u\n", now, what, value, s.state.c_str(),
               tx->BytesInFlight(), tx->GetLost(), tx->GetSacked(), tx->GetRetransmitsCount(),
               tx->HeadSequence().GetValue(), tx->Size());
}

inline void timeout(State& s) {
  ++s.result.timeouts;
  s.result.rto_wait_s += ns3::Simulator::Now().GetSeconds() - s.last_tx_s;
  s.result.max_backoff = std::max(s.result.max_backoff, ++s.backoff_run);
  row(s, "timeout", s.last_tx_s);
}

inline void server_pump(State* s, ns3::Ptr<ns3::Socket> socket, uint32_t) {
  while (s->response_left > 0) {
    const uint32_t room = socket->GetTxAvailable();
    if (room == 0) return;
    const uint32_t n = uint32_t(std::min<uint64_t>(room, s->response_left));
    const int sent = socket->Send(ns3::Create<ns3::Packet>(n));
    if (sent <= 0) return;
    s->response_left -= uint64_t(sent);
  }
}

inline void server_read(State* s, ns3::Ptr<ns3::Socket> socket) {
  while (ns3::Ptr<ns3::Packet> p = socket->Recv()) {
    if (p->GetSize() == 0) break;
    s->request_have += p->GetSize();
    while (s->request_have >= kRequestBytes) {
      s->request_have -= kRequestBytes;
      const uint64_t left = s->spec.total_bytes - (s->result.received + s->response_left);
      const uint64_t chunk = s->spec.chunk_bytes ? s->spec.chunk_bytes : s->spec.total_bytes;
      s->response_left += std::min(chunk, left);
    }
  }
  server_pump(s, socket, 0);
}

inline void on_tx(State* s, ns3::Ptr<const ns3::Packet> p, const ns3::TcpHeader& h, ns3::Ptr<const ns3::TcpSocketBase>) {
  if (p->GetSize() == 0) return;
  const double now = ns3::Simulator::Now().GetSeconds();
  ++s->result.data_segments;
  for (uint64_t v : {uint64_t(ns3::Simulator::Now().GetNanoSeconds()), uint64_t(h.GetSequenceNumber().GetValue()),
                     uint64_t(p->GetSize())})
    for (int b = 0; b < 8; ++b) s->result.tx_hash = (s->result.tx_hash ^ ((v >> (8 * b)) & 0xff)) * 1099511628211ull;
  // A segment below the highest sequence sent so far is a retransmission.
  const ns3::SequenceNumber32 end = h.GetSequenceNumber() + p->GetSize();
  if (end <= s->high_sent) {
    ++s->result.retransmissions;
    row(*s, "retransmit", h.GetSequenceNumber().GetValue());
  } else {
    s->high_sent = end;
  }
  if (now - s->last_tx_s > s->result.max_stall_s) s->result.max_stall_s = now - s->last_tx_s;
  s->last_tx_s = now;
}

inline void on_rx(State* s, ns3::Ptr<ns3::Socket> socket);

inline void send_request(State* s) {
  const uint64_t chunk = s->spec.chunk_bytes ? s->spec.chunk_bytes : s->spec.total_bytes;
  s->chunk_left = std::min(chunk, s->spec.total_bytes - s->requested);
  s->requested += s->chunk_left;
  s->client->Send(ns3::Create<ns3::Packet>(kRequestBytes));
}

// The most the client takes from its socket per Recv. ns-3.37's
// TcpRxBuffer::Extract joins the in-order segments it returns with
// Packet::AddAtEnd, which copies the packet built so far whenever the next
// segment holds real bytes (segments cut across two of the server's writes
// do: ns-3's TcpTxBuffer::MergeItems writes out the zero bytes of the second
// write): taking megabytes at once (after a loss is repaired) cost one
// copy of megabytes per segment, 10 million page faults for 300 MB at
// 10 Gbit/s. 64 KiB (the largest segment) bounds each copy.
inline constexpr uint32_t kMaxReadBytes = 65536;

inline void on_rx(State* s, ns3::Ptr<ns3::Socket> socket) {
  while (ns3::Ptr<ns3::Packet> p = socket->Recv(kMaxReadBytes, 0)) {
    uint64_t n = p->GetSize();
    if (n == 0) break;
    while (n > 0) {
      const uint64_t take = std::min(n, s->chunk_left);
      n -= take;
      s->chunk_left -= take;
      s->result.received += take;
      if (s->result.tenth_s == 0 && s->result.received * 10 >= s->spec.total_bytes)
        s->result.tenth_s = ns3::Simulator::Now().GetSeconds() - s->start_s;
      if (s->chunk_left == 0) {
        const double now = ns3::Simulator::Now().GetSeconds();
        s->result.chunk_done_s.push_back(now - s->start_s);
        if (s->result.received >= s->spec.total_bytes) {
          s->result.finished = true;
          s->result.completion_s = now - s->start_s;
          ns3::Simulator::Stop();
          return;
        }
        send_request(s);
      }
      if (take == 0) break;
    }
  }
}

}  // namespace transfer_detail

// Runs one transfer on a fresh simulator (destroyed before returning).
inline TransferResult run_transfer(const LinkSpec& link, const TransferSpec& spec) {
  using namespace ns3;
  using transfer_detail::State;
  RngSeedManager::SetSeed(spec.seed);
  RngSeedManager::SetRun(spec.run);
  State s;
  s.spec = spec;
  {
    Topology t = build_topology(link, 0);
    if (spec.clock_granularity_ms >= 0)
      Config::SetDefault("ns3::TcpSocketBase::ClockGranularity",
                         TimeValue(MicroSeconds(int64_t(spec.clock_granularity_ms * 1000))));
    Config::SetDefault("ns3::TcpSocketBase::Sack", BooleanValue(spec.sack));
    if (spec.delack_timeout_ms >= 0)
      Config::SetDefault("ns3::TcpSocket::DelAckTimeout", TimeValue(MicroSeconds(int64_t(spec.delack_timeout_ms * 1000))));
    Ptr<Socket> listener = Socket::CreateSocket(t.server, TcpSocketFactory::GetTypeId());
    listener->Bind(InetSocketAddress(Ipv4Address::GetAny(), transfer_detail::kPort));
    listener->Listen();
    listener->SetAcceptCallback(
        MakeNullCallback<bool, Ptr<Socket>, const Address&>(),
        MakeBoundCallback(+[](State* s, Ptr<Socket> sock, const Address&) {
          s->sender = DynamicCast<TcpSocketBase>(sock);
          ObjectBase* ops = nullptr;
          PointerValue cc;
          s->sender->GetAttribute("CongestionOps", cc);
          ops = cc.Get<TcpCongestionOps>() ? PeekPointer(cc.Get<TcpCongestionOps>()) : nullptr;
          s->result.tcp_type = ops ? ops->GetInstanceTypeId().GetName() : "?";
          sock->SetRecvCallback(MakeBoundCallback(&transfer_detail::server_read, s));
          sock->SetSendCallback(MakeBoundCallback(&transfer_detail::server_pump, s));
          sock->TraceConnectWithoutContext("Tx", MakeBoundCallback(&transfer_detail::on_tx, s));
          sock->TraceConnectWithoutContext(
              "CongestionWindow", MakeBoundCallback(+[](State* s, uint32_t, uint32_t v) {
                transfer_detail::row(*s, "cwnd", v);
              }, s));
          sock->TraceConnectWithoutContext(
              "SlowStartThreshold", MakeBoundCallback(+[](State* s, uint32_t, uint32_t v) {
                transfer_detail::row(*s, "ssthresh", v);
              }, s));
          sock->TraceConnectWithoutContext(
              "HighestRxAck", MakeBoundCallback(+[](State* s, SequenceNumber32, SequenceNumber32 v) {
                if (v > s->high_ack) {
                  s->high_ack = v;
                  s->backoff_run = 0;
                }
              }, s));
          sock->TraceConnectWithoutContext(
              "RTO", MakeBoundCallback(+[](State* s, Time old_rto, Time v) {
                // ReTxTimeout doubles the RTO (capped at 60 s) before it
                // enters the loss state; a timeout in that state shows only
                // here. NewAck recomputes the RTO from the estimator.
                if (s->state == "LOSS" && (v == old_rto + old_rto || v == Seconds(60)))
                  transfer_detail::timeout(*s);
                transfer_detail::row(*s, "rto", v.GetSeconds());
              }, s));
          sock->TraceConnectWithoutContext(
              "CongState", MakeBoundCallback(+[](State* s, TcpSocketState::TcpCongState_t,
                                                 TcpSocketState::TcpCongState_t v) {
                static const char* const names[] = {"OPEN", "DISORDER", "CWR", "RECOVERY", "LOSS", "LAST"};
                s->state = names[std::min<int>(v, 5)];
                if (v == TcpSocketState::CA_LOSS) transfer_detail::timeout(*s);  // only ReTxTimeout enters it
                transfer_detail::row(*s, "state", 0);
              }, s));
        }, &s));

    s.client = Socket::CreateSocket(t.client, TcpSocketFactory::GetTypeId());
    s.client->Bind();
    s.client->SetRecvCallback(MakeBoundCallback(&transfer_detail::on_rx, &s));
    s.client->SetConnectCallback(MakeBoundCallback(+[](State* s, Ptr<Socket>) { transfer_detail::send_request(s); }, &s),
                                 MakeNullCallback<void, Ptr<Socket>>());
    s.client->Connect(InetSocketAddress(t.server_address, transfer_detail::kPort));
    if (spec.trace) std::fprintf(spec.trace, "t_s,event,value,state,in_flight,lost,sacked,retrans,head,buffered\n");
    Simulator::Stop(Seconds(spec.stop_s));
    Simulator::Run();
    if (!s.result.finished) s.result.completion_s = Simulator::Now().GetSeconds() - s.start_s;
  }
  Simulator::Destroy();
  return s.result;
}

}  // namespace kvs::sim::testing
