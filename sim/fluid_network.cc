#include "sim/fluid_network.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "ns3/nstime.h"
#include "ns3/simulator.h"

#include "base/error.h"

namespace kvs::sim {

namespace {

constexpr double kPensievePayloadShare = 0.95;  // Pensieve's PACKET_PAYLOAD_PORTION
constexpr double kSegmentOverheadBytes = 54;    // IP 20 + TCP 20 + timestamps 12 + PPP 2
constexpr double kSynBytes = 58;                // SYN / SYN-ACK with options, + PPP
constexpr double kAckBytes = 54;
constexpr uint32_t kTcpIpOverheadBytes = 52;
constexpr uint32_t kMahimahiTunHeaderBytes = 4;
// ns-3 time is an integer of nanoseconds: nothing is scheduled further out.
constexpr double kNeverS = 1e8;
// Times are compared with a nanosecond's slack (ns-3 rounds them to it).
constexpr double kSlackS = 1e-9;

double now_s() { return ns3::Simulator::Now().GetSeconds(); }
double ser_s(double bytes, double bps) { return 8.0 * bytes / bps; }

}  // namespace

void check_network_model(const std::string& model) {
  static const std::vector<std::string> kModels = {"ns3", "fluid", "pensieve"};
  if (std::find(kModels.begin(), kModels.end(), model) == kModels.end())
    throw Error(fmt::format("network: expected ns3, fluid or pensieve, got '{}'{}", printable(model),
                            did_you_mean(model, kModels)));
}

FluidParams fluid_params(const EngineConfig& c, traces::Trace* looped) {
  const LinkSpec& l = c.link;
  const std::string& model = c.network;
  check_network_model(model);
  if (model == "ns3") throw Error("fluid_params: network ns3 is the packet-level simulation");
  if (l.loss_rate > 0)
    throw Error(fmt::format("network: {} does not model loss (link.loss_rate = {:g}); use network: ns3", model,
                            l.loss_rate));
  if (c.cross.bulk_tcp_flows > 0 || c.cross.onoff_udp_flows > 0)
    throw Error(fmt::format("network: {} does not model cross traffic (cross_traffic has {} bulk and {} UDP flows); "
                            "use network: ns3",
                            model, c.cross.bulk_tcp_flows, c.cross.onoff_udp_flows));
  if (!l.trace && !(l.rate_mbps > 0)) throw Error("link rate_mbps: expected a positive number");
  if (l.trace && l.trace->segments.empty()) throw Error(fmt::format("trace {}: no segments", l.trace->name));
  if (l.mtu_bytes <= kTcpIpOverheadBytes + 64) throw Error("link mtu_bytes: too small for a segment");
  FluidParams p;
  p.pensieve = model == "pensieve";
  p.rate_bps = l.rate_mbps * 1e6;
  p.trace = l.trace ? &*l.trace : nullptr;
  if (p.pensieve && p.trace && !p.trace->loops) {  // Pensieve's simulator wraps every trace
    *looped = *p.trace;
    looped->loops = true;
    p.trace = looped;
  }
  p.access_rate_bps = l.access_rate_mbps * 1e6;
  p.reverse_rate_bps = l.trace ? p.access_rate_bps : p.rate_bps;
  p.one_way_s = (l.rtt_ms + l.access_rtt_ms) / 2000;
  p.mss_bytes = l.mss_bytes ? l.mss_bytes : l.mtu_bytes - kTcpIpOverheadBytes;
  // A mahimahi trace's rate form counts `packet_bytes` per opportunity, which
  // carries 4 + IP bytes of a packet of up to packet_bytes + 4.
  const bool mahimahi = l.trace && l.trace->opportunities && l.trace_mode != "rate";
  if (mahimahi) {
    const double pb = l.trace->opportunities->packet_bytes;
    p.segment_overhead_bytes =
        (p.mss_bytes + kTcpIpOverheadBytes + kMahimahiTunHeaderBytes) * pb / (pb + kMahimahiTunHeaderBytes) -
        p.mss_bytes;
  } else {
    p.segment_overhead_bytes = kSegmentOverheadBytes;
  }
  p.payload_share = p.pensieve ? kPensievePayloadShare : 1.0;
  p.initial_cwnd_segments = l.initial_cwnd_segments;
  p.delayed_ack_count = std::max<uint32_t>(1, l.delayed_ack_count);
  if (l.tcp == "newreno") p.slow_start_growth = 1.0 / p.delayed_ack_count;
  p.app_limited_rule = l.tcp == "cubic-rfc9438" || (l.tcp == "cubic" && !l.ns3_stock);
  // Once a round carries a bandwidth-delay product plus the queue, the path
  // is full (TCP would lose packets beyond it): rounds stay that size.
  double peak = p.rate_bps;
  if (l.trace) {
    peak = 0;
    for (const auto& s : l.trace->segments) peak = std::max(peak, s.rate_bps);
  }
  const double bdp = peak / 8 * 2 * p.one_way_s;
  const double queue = l.queue_packets ? l.queue_packets : std::max(100.0, std::ceil(bdp / l.mtu_bytes));
  p.cwnd_cap_bytes = std::max(bdp + queue * p.mss_bytes, double(p.initial_cwnd_segments) * p.mss_bytes);
  p.request_bytes = c.request_header_bytes;
  p.response_header_bytes = p.pensieve ? 0 : c.response_header_bytes;
  p.sample_interval_s = c.sample_interval_s;
  return p;
}

std::string fluid_description(const FluidParams& p, const EngineConfig& c) {
  const std::string link = p.trace ? fmt::format("trace {} ({})", p.trace->name, p.trace->loops ? "looping" : "once")
                                   : fmt::format("{} Mbit/s", p.rate_bps / 1e6);
  if (p.pensieve)
    return fmt::format(
        "pensieve model (Pensieve's chunk-level simulator, no packets): bottleneck {}, payload at {} of its rate, RTT "
        "{} ms added once per chunk, no handshake, no slow start, one FIFO shared by all requests",
        link, p.payload_share, 2000 * p.one_way_s);
  return fmt::format(
      "fluid model (no packets): bottleneck {} integrated exactly, RTT {} ms (access {} ms), access links {} Mbit/s; "
      "handshake one RTT, requests one propagation delay, slow start from {} segments of {} B (ACK every {}) until a "
      "round carries {} B, {} B per segment on the wire; one FIFO shared by all requests; no loss, no queueing delay "
      "({} TCP not modelled beyond slow start)",
      link, 2000 * p.one_way_s, c.link.access_rtt_ms, p.access_rate_bps / 1e6, p.initial_cwnd_segments, p.mss_bytes,
      p.delayed_ack_count, std::llround(p.cwnd_cap_bytes), p.segment_overhead_bytes, c.link.tcp);
}

std::vector<std::pair<std::string, std::string>> fluid_settings(const FluidParams& p, const EngineConfig& c) {
  std::vector<std::pair<std::string, std::string>> st;
  auto num = [](double x) { return fmt::format("{}", x); };
  st.emplace_back("network.model", p.pensieve ? "pensieve" : "fluid");
  st.emplace_back("link.bottleneck", p.trace ? "trace " + p.trace->name : "constant");
  if (!p.trace) st.emplace_back("link.rate_mbps", num(p.rate_bps / 1e6));
  st.emplace_back("link.trace_loops", p.trace ? (p.trace->loops ? "true" : "false") : "n/a");
  st.emplace_back("link.rtt_ms", num(c.link.rtt_ms));
  st.emplace_back("link.access_rtt_ms", num(c.link.access_rtt_ms));
  st.emplace_back("link.one_way_delay_ms", num(p.one_way_s * 1000));
  st.emplace_back("link.payload_share", num(p.payload_share));
  if (!p.pensieve) {
    st.emplace_back("link.reverse_rate_bps", num(p.reverse_rate_bps));
    st.emplace_back("link.access_rate_mbps", num(p.access_rate_bps / 1e6));
    st.emplace_back("link.segment_overhead_bytes", num(p.segment_overhead_bytes));
    st.emplace_back("tcp.mss_bytes", std::to_string(p.mss_bytes));
    st.emplace_back("tcp.initial_cwnd_segments", std::to_string(p.initial_cwnd_segments));
    st.emplace_back("tcp.delayed_ack_count", std::to_string(p.delayed_ack_count));
    st.emplace_back("tcp.slow_start_growth", num(p.slow_start_growth));
    st.emplace_back("tcp.app_limited_rule", p.app_limited_rule ? "true" : "false");
    st.emplace_back("tcp.full_round_bytes", num(std::round(p.cwnd_cap_bytes)));
  }
  return st;
}

// ---- the bottleneck -------------------------------------------------------------

double FluidLink::through_s(double start_s, double wire_bytes) const {
  if (wire_bytes <= 0) return start_s;
  if (!p_.trace) return start_s + ser_s(wire_bytes, p_.rate_bps);
  return p_.trace->time_to_deliver(start_s, 8 * wire_bytes);
}

double FluidLink::bytes_between(double t0_s, double t1_s) const {
  if (!(t1_s > t0_s)) return 0;
  if (!p_.trace) return (t1_s - t0_s) * p_.rate_bps / 8;
  return p_.trace->bits_between(t0_s, t1_s) / 8;
}

std::pair<double, double> FluidLink::transmit(double ready_s, double wire_bytes) {
  const double start = std::max(ready_s, busy_until_s_);
  const double end = through_s(start, wire_bytes);
  busy_until_s_ = end;
  return {start, end};
}

// ---- a connection ---------------------------------------------------------------

FluidTransport::FluidTransport(FluidLink* link, const FluidParams& p, ErrorSlot* errors)
    : link_(link), p_(p), errors_(errors), cwnd_bytes_(double(p.initial_cwnd_segments) * p.mss_bytes) {}

FluidTransport::~FluidTransport() = default;

double FluidTransport::down_s() const {
  if (p_.pensieve) return 2 * p_.one_way_s;  // the RTT, once per chunk
  return p_.one_way_s + ser_s(p_.mss_bytes + p_.segment_overhead_bytes, p_.access_rate_bps);
}

double FluidTransport::wire_bytes(uint64_t n) const {
  if (p_.pensieve) return double(n) / p_.payload_share;
  const uint64_t segments = (n + p_.mss_bytes - 1) / p_.mss_bytes;
  return double(n) + double(segments) * p_.segment_overhead_bytes;
}

double FluidTransport::arrival_s(const Block& b, uint64_t offset) const {
  const uint64_t len = b.end - b.begin, k = offset - b.begin;
  uint64_t through = k + 1;  // pensieve: bytes are continuous
  if (!p_.pensieve) through = std::min<uint64_t>((k / p_.mss_bytes + 1) * p_.mss_bytes, len);  // its whole segment
  return link_->through_s(b.start_s, wire_bytes(through)) + down_s();
}

uint64_t FluidTransport::received_by(const Block& b, double t) const {
  const double carried = link_->bytes_between(b.start_s, t - down_s() + kSlackS);
  const uint64_t len = b.end - b.begin;
  if (carried <= 0) return 0;
  if (carried + 1e-6 >= wire_bytes(len)) return len;
  if (p_.pensieve) return std::min<uint64_t>(len, uint64_t(carried * p_.payload_share));
  const auto segments = uint64_t((carried + 1e-6) / (p_.mss_bytes + p_.segment_overhead_bytes));
  return std::min<uint64_t>(len, segments * p_.mss_bytes);
}

const FluidTransport::Block* FluidTransport::block_of(uint64_t offset) const {
  for (const auto& b : blocks_)
    if (offset >= b.begin && offset < b.end) return &b;
  return nullptr;
}

void FluidTransport::Open(Receiver* receiver) {
  receiver_ = receiver;
  open_ = true;
  start_s_ = now_s();
  // SYN and SYN-ACK each cross both access links, the bottleneck and the propagation delay.
  const double handshake =
      p_.pensieve ? 0.0
                  : 2 * p_.one_way_s + 4 * ser_s(kSynBytes, p_.access_rate_bps) + 2 * ser_s(kSynBytes, p_.reverse_rate_bps);
  events_.push_back(ns3::Simulator::Schedule(ns3::Seconds(handshake), [this] {
    errors_->guard([&] { Connected(); });
  }));
}

void FluidTransport::Connected() {
  connected_ = true;
  receiver_->TransportConnected(now_s() - start_s_);
  // The requests made while connecting go out together now.
  uint64_t total = 0;
  for (const auto& u : unsent_) total += u.second;
  if (!unsent_.empty()) SendUp(total, unsent_.size());
  unsent_.clear();
}

void FluidTransport::Request(uint32_t chunk, int, uint64_t payload_bytes) {
  const uint64_t bytes = p_.response_header_bytes + payload_bytes;
  responses_.push_back({chunk, responses_made_++, requested_, requested_ + p_.response_header_bytes, requested_ + bytes});
  requested_ += bytes;
  if (connected_)
    SendUp(bytes, 1);
  else
    unsent_.emplace_back(chunk, bytes);
}

// A request crosses the client's access link, the reverse bottleneck, the
// propagation delay and the server's access link (pensieve: no time).
void FluidTransport::SendUp(uint64_t response_bytes, uint64_t responses) {
  const double req = p_.request_bytes + kSegmentOverheadBytes;
  const double up = p_.pensieve ? 0.0
                                : p_.one_way_s + 2 * ser_s(req, p_.access_rate_bps) + ser_s(req, p_.reverse_rate_bps);
  events_.push_back(ns3::Simulator::Schedule(ns3::Seconds(up), [this, response_bytes, responses] {
    errors_->guard([&] { ServerReceives(response_bytes, responses); });
  }));
}

void FluidTransport::ServerReceives(uint64_t bytes, uint64_t responses) {
  available_ += bytes;
  at_server_ += responses;
  if (!round_pending_) {
    StartRound(now_s(), false);
    return;
  }
  if (!open_) return;
  // A round is under way. If it sent less than the window (it ran out of
  // data), TCP sends the new bytes at once, up to the window, behind the
  // round's on the bottleneck; they count as the round's (their ACKs grow
  // the window with the round's). Waiting for the next round instead left
  // the link idle for up to an RTT whenever a request reached the server
  // near the end of a response (in_flight >= 2): up to 18 % slower than ns-3.
  const auto window = uint64_t(cwnd_bytes_);
  const uint64_t room = window > last_round_bytes_ ? window - last_round_bytes_ : 0;
  const uint64_t n = std::min(available_ - sent_, room);
  if (n == 0) return;
  SendBlock(now_s(), n);
  last_round_bytes_ += n;
}

void FluidTransport::Round() {
  round_pending_ = false;
  StartRound(now_s(), true);
}

// Sends one window (pensieve: everything requested) as one block on the
// bottleneck, schedules the arrivals it completes, and (fluid) the next round
// for when the ACK of its first segments is back. `clocked`: started by those
// ACKs (else by a request reaching an idle server).
void FluidTransport::StartRound(double now, bool clocked) {
  if (!open_) return;
  const double frame = p_.mss_bytes + p_.segment_overhead_bytes;
  if (!p_.pensieve && last_round_bytes_ > 0) {
    // Slow start: the last round's ACKs grew the window, by what they
    // acknowledged (byte counting). With RFC 9438's rule only those that
    // found data waiting: each releases twice what it grows the window by.
    double growth = p_.slow_start_growth * double(last_round_bytes_);
    if (p_.app_limited_rule) growth = clocked ? std::min(growth, double(available_ - sent_) / 2) : 0.0;
    cwnd_bytes_ = std::min(p_.cwnd_cap_bytes, cwnd_bytes_ + growth);
    last_round_bytes_ = 0;
  }
  uint64_t n = available_ - sent_;
  if (!p_.pensieve) n = std::min<uint64_t>(n, uint64_t(cwnd_bytes_));
  const double start = SendBlock(now, n);
  if (p_.pensieve || n == 0) return;  // the next request starts the next block
  last_round_bytes_ = n;
  // The client ACKs every m-th segment; the ACK crosses back to the server.
  const uint64_t segments = (n + p_.mss_bytes - 1) / p_.mss_bytes;
  const double m = double(std::min<uint64_t>(p_.delayed_ack_count, segments));
  const double ack_back = p_.one_way_s + 2 * ser_s(kAckBytes, p_.access_rate_bps) + ser_s(kAckBytes, p_.reverse_rate_bps);
  const double next = link_->through_s(start, m * frame) + down_s() + ack_back;
  if (!(std::isfinite(next) && next - now < kNeverS)) return;
  round_pending_ = true;
  events_.push_back(ns3::Simulator::Schedule(ns3::Seconds(std::max(0.0, next - now)), [this] {
    errors_->guard([&] { Round(); });
  }));
}

// Puts the next n stream bytes on the bottleneck as one block (when n > 0)
// and schedules the arrivals of the responses it completes; returns the
// block's start on the bottleneck (now when n is 0).
double FluidTransport::SendBlock(double now, uint64_t n) {
  double start = now, end = now;
  if (n > 0) {
    const double frame = p_.mss_bytes + p_.segment_overhead_bytes;
    const double ready = now + (p_.pensieve ? 0.0 : ser_s(frame, p_.access_rate_bps));
    std::tie(start, end) = link_->transmit(ready, wire_bytes(n));
    blocks_.push_back({start, sent_, sent_ + n});
    sent_ += n;
  }
  // Arrival times of the responses this block completes (an empty one, which
  // only pensieve has, arrives one RTT after its request).
  double prev_end = now;
  for (auto& r : responses_) {
    if (r.end_s < 0 && r.end <= sent_ && r.seq < at_server_) {
      if (r.end == r.begin) {
        r.header_s = r.end_s = std::max(prev_end, now + down_s());
      } else {
        const uint64_t first = std::max(r.header_end, r.begin + 1) - 1;
        if (r.header_s < 0) r.header_s = arrival_s(*block_of(first), first);  // else set by an earlier round
        r.end_s = arrival_s(*block_of(r.end - 1), r.end - 1);
      }
      if (std::isfinite(r.end_s) && r.end_s - now < kNeverS)
        events_.push_back(ns3::Simulator::Schedule(ns3::Seconds(std::max(0.0, r.end_s - now)), [this] {
          errors_->guard([&] { Deliver(); });
        }));
    } else if (r.header_s < 0 && r.header_end <= sent_ && r.header_end > r.begin) {
      r.header_s = arrival_s(*block_of(r.header_end - 1), r.header_end - 1);
    }
    if (r.end_s >= 0) prev_end = r.end_s;
  }
  return start;
}

// Reports to the client what has arrived by now: reads (at least the sample
// interval apart, as a socket read loop would see them), first bytes, and the
// responses whose last byte is in.
void FluidTransport::Deliver() {
  if (!open_) return;
  const double now = now_s();
  while (read_ < sent_) {
    const Block* b = block_of(read_);
    if (!b) break;
    const double next_byte = arrival_s(*b, read_);
    if (next_byte > now + kSlackS) break;
    const double t = std::min(now, std::max(next_byte, last_read_s_ + p_.sample_interval_s));
    uint64_t upto = read_;
    for (const auto& blk : blocks_) {
      if (blk.end <= upto) continue;
      const uint64_t got = received_by(blk, t);
      if (got == 0) break;
      upto = blk.begin + got;
      if (upto < blk.end) break;
    }
    if (upto <= read_) break;
    receiver_->TransportRead(upto - read_, t);
    read_ = upto;
    last_read_s_ = t;
    while (!blocks_.empty() && blocks_.front().end <= read_) blocks_.pop_front();
    if (t >= now) break;
  }
  for (auto& r : responses_) {
    if (r.header_s < 0 || r.header_s > now + kSlackS) break;
    if (!r.first_reported) receiver_->TransportFirstByte(r.chunk, r.header_s);
    r.first_reported = true;
  }
  while (open_ && !responses_.empty() && responses_.front().end_s >= 0 && responses_.front().end_s <= now + kSlackS) {
    const Response r = responses_.front();
    responses_.pop_front();
    if (!r.first_reported) receiver_->TransportFirstByte(r.chunk, r.header_s);
    receiver_->TransportArrived(r.chunk, now);
  }
}

void FluidTransport::Close() {
  open_ = false;
  for (auto& e : events_) ns3::Simulator::Cancel(e);
  events_.clear();
}

}  // namespace kvs::sim
