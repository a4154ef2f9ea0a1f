#include "sim/analytic.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "base/error.h"

namespace kvs::sim {

namespace {

double ser_s(double bytes, double bps) { return 8.0 * bytes / bps; }

}  // namespace

AnalyticFetch analytic_fetch(const AnalyticPath& p, uint64_t payload_bytes, uint32_t request_bytes,
                             uint32_t response_header_bytes) {
  if (!(p.rate_bps > 0) || !(p.access_rate_bps > 0))
    throw Error("analytic model: link rates must be positive");
  if (!(p.rtt_ms >= 0)) throw Error("analytic model: rtt_ms must be >= 0");
  if (p.mtu_bytes <= p.tcp_ip_header_bytes)
    throw Error("analytic model: mtu_bytes " + std::to_string(p.mtu_bytes) + " leaves no room for a segment");
  if (!(p.access_rtt_ms >= 0)) throw Error("analytic model: access_rtt_ms must be >= 0");
  if (p.mss_bytes > p.mtu_bytes - p.tcp_ip_header_bytes)
    throw Error("analytic model: mss_bytes " + std::to_string(p.mss_bytes) + " does not fit in the MTU");
  if (p.initial_window_segments == 0) throw Error("analytic model: initial window must be >= 1 segment");
  const uint32_t m = p.delayed_ack_count;
  if (m < 1 || m > 2 || p.initial_window_segments % m != 0)
    throw Error("analytic model: covers ACKs every 1 or 2 segments with an initial window that is a multiple of it");

  const double R = p.rate_bps, A = p.access_rate_bps, d = p.rtt_ms / 2000, da = p.access_rtt_ms / 4000;
  const uint32_t mss = p.mss_bytes ? p.mss_bytes : p.mtu_bytes - p.tcp_ip_header_bytes;
  const uint32_t per_packet = p.tcp_ip_header_bytes + p.link_header_bytes;  // bytes a segment adds on the wire
  const double syn = p.syn_header_bytes + p.link_header_bytes;
  const double ack = per_packet;
  const double full = mss + per_packet;
  const double request = request_bytes + per_packet;
  const uint64_t response = uint64_t(response_header_bytes) + payload_bytes;
  if (response == 0) throw Error("analytic model: the response has no bytes");

  AnalyticFetch f;
  f.segments = (response + mss - 1) / mss;
  f.wire_bytes = response + f.segments * per_packet;
  f.segment_s = ser_s(full, R);

  // Handshake: SYN and SYN-ACK each cross access, bottleneck (reverse or
  // forward), propagation and the other access link.
  const double lone = 2 * (ser_s(syn, A) + da) + ser_s(syn, R) + d;
  f.connected_s = 2 * lone;

  // The client acknowledges the SYN-ACK (empty ACK) and sends the request one
  // time step later; on each link the request queues behind the ACK.
  {
    const double t = f.connected_s;
    const double ack_access_end = t + ser_s(ack, A);
    const double req_access_end = std::max(t + p.send_step_s, ack_access_end) + ser_s(request, A);
    const double ack_neck_end = ack_access_end + da + ser_s(ack, R);
    const double req_neck_end = std::max(req_access_end + da, ack_neck_end) + ser_s(request, R);
    f.request_at_server_s = req_neck_end + d + ser_s(request, A) + da;
  }

  // The server acknowledges the request at once (ns-3 acks the first data
  // segment of a connection immediately) and its response leaves one time
  // step later, behind that ACK on the access link and on the bottleneck.
  {
    const double t = f.request_at_server_s;
    const double first = double(std::min<uint64_t>(response, mss)) + per_packet;
    const double ack_access_end = t + ser_s(ack, A);
    const double seg_access_end = std::max(t + p.send_step_s, ack_access_end) + ser_s(first, A);
    const double ack_neck_end = ack_access_end + da + ser_s(ack, R);
    f.first_segment_s = std::max(seg_access_end + da, ack_neck_end);
    f.first_byte_s = f.first_segment_s + ser_s(first, R) + d + ser_s(first, A) + da;
  }

  // Slow start. The client acks every m-th segment (m = 1 or 2); each ACK
  // raises the window by the m segments it acks (Cubic's byte counting), so
  // it releases 2m segments, which reach the bottleneck faster than it drains
  // them: a round's segments cross the bottleneck back to back, and the next
  // round starts when the ACK of the round's m-th segment is back:
  // round_s after the round started. Rounds double; the bottleneck idles
  // round_s - W*T after a round of W segments, until a round's burst outlasts
  // round_s; from then on it never idles (the window only grows).
  f.round_s = m * f.segment_s                                    // the round's first m segments
              + d + ser_s(full, A) + da                              // to the client
              + ser_s(ack, A) + da + ser_s(ack, R) + d + ser_s(ack, A) + da  // their ACK back to the server
              + ser_s(full, A) + da;                                 // the released segment to the bottleneck
  uint64_t sent = 0;
  uint64_t window = p.initial_window_segments;
  while (sent < f.segments) {
    const uint64_t w = std::min(window, f.segments - sent);
    sent += w;
    const double burst_s = double(w) * f.segment_s;
    const bool more = sent < f.segments;
    const bool full_pipe = burst_s >= f.round_s;
    if (more && full_pipe) {  // the rest crosses without a gap: count it as one last entry
      f.round_segments.push_back(w + (f.segments - sent));
      f.round_idle_s.push_back(0);
      break;
    }
    f.round_segments.push_back(w);
    f.round_idle_s.push_back(more ? f.round_s - burst_s : 0.0);
    window *= 2;
  }
  for (double x : f.round_idle_s) f.idle_s += x;

  // The bottleneck sends every response byte (headers included) once, idles
  // idle_s, then the last segment propagates and crosses the client's access link.
  const uint64_t last_payload = response - (f.segments - 1) * mss;
  f.last_byte_s = f.first_segment_s + f.idle_s + ser_s(double(f.wire_bytes), R) + d +
                  ser_s(double(last_payload + per_packet), A) + da;
  return f;
}

}  // namespace kvs::sim
