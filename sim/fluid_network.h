// Network models beside ns-3 (C++17; internal to sim/): `network: fluid` and
// `network: pensieve` (docs/simulator.md, "Network models"). Each replaces
// the TCP connection under a ChunkClient (a ChunkTransport), so the policies,
// the client's logic and the GPU pipeline run the same code as with ns-3;
// time is still ns-3's simulator clock, but no packet, socket or node
// exists: a chunk costs a handful of events instead of about ten per segment.
//
// fluid: the bottleneck carries bytes at the trace's (or the constant) rate,
// integrated exactly (traces::Trace::time_to_deliver), one FIFO shared by all
// connections. A connection opens in one RTT; a request reaches the server
// after one propagation delay; the server sends in rounds of one congestion
// window, ACK-clocked as in sim/analytic.h (slow start from the initial
// window, growing by the bytes sent, until one round fills the path: a
// bandwidth-delay product plus the queue); every segment adds its headers on
// the wire (IP, TCP and timestamps 52 B, PPP 2 B; a mahimahi opportunity
// costs IP + 4 B per 1504 B). No loss, no cross traffic, no queueing delay
// beyond the FIFO (errors say so).
//
// pensieve: the semantics of Pensieve's chunk-level simulator: a chunk's
// payload crosses at 0.95 of the trace's rate (headers not modelled), the
// link RTT is added once per chunk, the trace wraps, and there is no
// handshake or slow start.
#pragma once

#include <cstdint>
#include <deque>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "ns3/event-id.h"

#include "sim/engine.h"
#include "sim/streaming_app.h"
#include "traces/trace.h"

namespace kvs::sim {

// Everything the models need, resolved from an EngineConfig.
struct FluidParams {
  bool pensieve = false;
  double rate_bps = 0;                 // constant bottleneck rate when `trace` is null
  const traces::Trace* trace = nullptr;  // the bottleneck's rate over time
  double reverse_rate_bps = 0;         // requests and ACKs (the link's rate, or the access rate under a trace)
  double access_rate_bps = 10e9;
  double one_way_s = 0.01;             // propagation each way, bottleneck and access links
  uint32_t mss_bytes = 1448;
  double segment_overhead_bytes = 54;  // bottleneck bytes a segment adds to its payload
  double payload_share = 1;            // pensieve: 0.95 (wire bytes = payload / share)
  uint32_t initial_cwnd_segments = 10;
  uint32_t delayed_ack_count = 2;
  // Slow start's growth per byte acknowledged: 1 with byte counting (Cubic),
  // 1 / delayed_ack_count for ns-3's NewReno (one segment per ACK).
  double slow_start_growth = 1;
  // RFC 9438 5.8 (the project's Cubic): the window grows only on ACKs that
  // arrive while the sender fills it, i.e. while data is waiting.
  bool app_limited_rule = true;
  double cwnd_cap_bytes = 0;           // one round's bytes once the path is full (BDP + queue)
  uint32_t request_bytes = 16, response_header_bytes = 16;
  double sample_interval_s = 0.01;     // reads are reported at least this far apart
};

// "ns3", "fluid" or "pensieve"; anything else is an error naming the closest.
void check_network_model(const std::string& model);

// Resolves and checks the link for a model: loss, cross traffic and (for
// pensieve) anything but a rate are errors naming the setting. `looped` holds
// the wrapped copy of a trace that does not loop (pensieve wraps every trace).
FluidParams fluid_params(const EngineConfig& config, traces::Trace* looped);

// The one-sentence description and every setting, for results.json.
std::string fluid_description(const FluidParams& p, const EngineConfig& config);
std::vector<std::pair<std::string, std::string>> fluid_settings(const FluidParams& p, const EngineConfig& config);

// The bottleneck: one FIFO; a block of bytes occupies it from when it is
// ready (and the link is free) until the rate has carried it.
class FluidLink {
 public:
  explicit FluidLink(const FluidParams& p) : p_(p) {}
  // Reserves the link for `wire_bytes` ready at `ready_s`: (start, end);
  // end is infinity when the trace never carries them.
  std::pair<double, double> transmit(double ready_s, double wire_bytes);
  // When `wire_bytes` sent from `start_s` are through, and bytes carried in [t0, t1).
  double through_s(double start_s, double wire_bytes) const;
  double bytes_between(double t0_s, double t1_s) const;

 private:
  const FluidParams& p_;
  double busy_until_s_ = 0;
};

// One request's connection in a model.
class FluidTransport : public ChunkTransport {
 public:
  FluidTransport(FluidLink* link, const FluidParams& p, ErrorSlot* errors);
  ~FluidTransport() override;
  void Open(Receiver* receiver) override;
  void Request(uint32_t chunk, int level, uint64_t payload_bytes) override;
  // As Request: the part request's 8 more bytes (its byte count) are not
  // timed on the reverse path (nanoseconds at any modelled rate).
  void RequestPart(uint32_t part, int level, uint64_t payload_bytes) override { Request(part, level, payload_bytes); }
  void Close() override;

 private:
  // A response in the connection's byte stream, [begin, end); the client has
  // its first byte once [begin, header_end) is in.
  struct Response {
    uint32_t chunk;
    uint64_t seq;  // responses before it on this connection
    uint64_t begin, header_end, end;
    double header_s = -1, end_s = -1;  // arrival times, once sent
    bool first_reported = false;
  };
  // Stream bytes [begin, end) on the bottleneck from start_s, back to back.
  struct Block {
    double start_s;
    uint64_t begin, end;
  };

  void Connected();
  void SendUp(uint64_t response_bytes, uint64_t responses);
  void ServerReceives(uint64_t bytes, uint64_t responses);
  void Round();
  void StartRound(double now, bool clocked);
  double SendBlock(double now, uint64_t n);  // n more stream bytes on the bottleneck; returns their start
  void Deliver();
  double wire_bytes(uint64_t stream_bytes) const;
  double arrival_s(const Block& b, uint64_t offset) const;  // when stream byte `offset` is at the client
  uint64_t received_by(const Block& b, double t) const;     // stream bytes of `b` at the client by t
  const Block* block_of(uint64_t offset) const;
  double down_s() const;  // from leaving the bottleneck to the client

  FluidLink* link_;
  const FluidParams& p_;
  ErrorSlot* errors_;
  Receiver* receiver_ = nullptr;
  bool connected_ = false, open_ = false, round_pending_ = false;
  double start_s_ = 0;
  std::vector<std::pair<uint32_t, uint64_t>> unsent_;  // requests made before the connection is up
  std::deque<Response> responses_;  // not yet arrived, in stream order
  std::deque<Block> blocks_;        // not yet fully read
  uint64_t requested_ = 0;  // stream bytes the client asked for
  uint64_t available_ = 0;  // ... that the server has received requests for
  uint64_t sent_ = 0;       // ... that the server has put on the link
  uint64_t read_ = 0;       // ... reported to the client
  uint64_t responses_made_ = 0, at_server_ = 0;  // responses requested, and whose request reached the server
  double last_read_s_ = -std::numeric_limits<double>::infinity();
  double cwnd_bytes_ = 0;
  uint64_t last_round_bytes_ = 0;  // bytes of the round under way (their ACKs grow the window next)
  std::vector<ns3::EventId> events_;
};

}  // namespace kvs::sim
