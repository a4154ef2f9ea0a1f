// A bandwidth trace in the one in-memory form the simulator replays exactly.
//
// Every trace is a piecewise-constant rate: segment i holds `rate_bps` from
// its `start_s` until the next segment's start (the last until `duration_s`).
// A trace read from a mahimahi file also keeps the exact delivery
// opportunities (one 1500-byte packet each, at integer milliseconds), so a
// simulator can release packets at those instants; its rate form is derived
// from them (bytes per millisecond bin).
//
// When `loops` is true the trace repeats with period `duration_s` (mahimahi and
// Pensieve-style simulators both loop their traces).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvs::traces {

struct RateSegment {
  double start_s = 0;
  double rate_bps = 0;
};

// Mahimahi delivery opportunities: timestamps in ms (non-decreasing, repeated
// for several packets in the same ms), each one chance to deliver
// `packet_bytes`; the trace repeats every `period_ms` (the last timestamp).
struct DeliveryOpportunities {
  std::vector<uint64_t> times_ms;
  uint64_t period_ms = 0;
  uint32_t packet_bytes = 1500;
};

struct Trace {
  std::string name;  // file name or generator spec, for logs
  std::vector<RateSegment> segments;  // starts strictly increasing, first at 0
  double duration_s = 0;
  bool loops = true;
  std::optional<DeliveryOpportunities> opportunities;

  // Rate at time t (seconds from the start; wraps when `loops`; 0 past the
  // end of a trace that does not loop).
  double rate_at(double t_s) const;
  // Bits deliverable in [t0_s, t1_s) at the trace's rate.
  double bits_between(double t0_s, double t1_s) const;
  // When `bits` sent from t0_s at the trace's rate are through: the least
  // t1 >= t0_s with bits_between(t0_s, t1) >= bits (t0_s when bits <= 0;
  // infinity when they never are: a trace that does not loop ends first, or
  // one that carries nothing). Walks the segments it spans.
  double time_to_deliver(double t0_s, double bits) const;
};

}  // namespace kvs::traces
