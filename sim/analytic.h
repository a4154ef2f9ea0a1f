// Analytic completion time of one request/response over a fresh TCP
// connection, as the simulator's topology and TCP settings produce it
// (no ns-3, no codec types; C++17). Used to validate the simulation
// (tests/sim/analytic_test.cc) and as a quick estimate; the derivation is in
// docs/simulator.md ("Analytic model").
//
// Assumptions: a constant bottleneck rate in both directions, access links
// on both sides, no loss (a queue and socket buffers large enough for slow
// start's overshoot), ns-3.37's Cubic (slow start with byte counting: the
// window doubles per round even with delayed ACKs every 2 segments), an
// ACK every 1 or 2 segments, and with 2 an even initial window.
#pragma once

#include <cstdint>
#include <vector>

namespace kvs::sim {

struct AnalyticPath {
  double rate_bps = 100e6;          // bottleneck, each direction
  double rtt_ms = 20;               // two-way propagation delay of the bottleneck (RTT / 2 each way)
  double access_rate_bps = 10e9;    // server and client access links
  double access_rtt_ms = 0;         // added by the access links (a quarter on each, each way)
  uint32_t mtu_bytes = 1500;        // IP MTU
  uint32_t mss_bytes = 0;           // segment payload; 0: mtu_bytes - tcp_ip_header_bytes
  uint32_t initial_window_segments = 10;
  uint32_t delayed_ack_count = 2;   // the client acknowledges every 1 or 2 segments
  uint32_t tcp_ip_header_bytes = 52;  // IP 20 + TCP 20 + timestamp option 12 (data and ACKs)
  uint32_t syn_header_bytes = 56;     // IP 20 + TCP 20 + timestamp 10, window scale 3, SACK-permitted 2, padded
  uint32_t link_header_bytes = 2;     // point-to-point (PPP) framing
  double send_step_s = 1e-9;          // ns-3 defers a socket's sending by one time step after Send()
};

// The instants of the fetch, from the client's connect() at 0.
struct AnalyticFetch {
  double connected_s = 0;        // SYN-ACK reaches the client
  double request_at_server_s = 0;  // the request is at the server
  double first_segment_s = 0;    // the first response segment starts on the bottleneck
  double first_byte_s = 0;       // the first response segment reaches the client
  double last_byte_s = 0;        // the last response byte reaches the client
  uint64_t segments = 0;         // response segments
  uint64_t wire_bytes = 0;       // response bytes on the bottleneck, headers included
  double segment_s = 0;          // serialization of one full segment on the bottleneck
  double round_s = 0;            // from a segment starting on the bottleneck to the start of the
                                 // segments its ACK releases (two segments + RTT + small terms)
  // Slow-start rounds: segments sent in each, and the bottleneck's idle time
  // after each (0 from the round whose burst outlasts round_s: the link is full).
  std::vector<uint64_t> round_segments;
  std::vector<double> round_idle_s;
  double idle_s = 0;             // sum of round_idle_s
};

// One request of `request_bytes` and a response of `response_header_bytes` +
// `payload_bytes`. Throws kvs::Error for an impossible path (rate <= 0, MTU
// too small for the headers) or one the model does not cover (ACKs every 3
// or more segments, an odd initial window with ACKs every 2).
AnalyticFetch analytic_fetch(const AnalyticPath& path, uint64_t payload_bytes, uint32_t request_bytes = 16,
                             uint32_t response_header_bytes = 16);

}  // namespace kvs::sim
