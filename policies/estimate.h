// What the adaptive policies share: throughput estimates from the samples a
// client measured, and predictions of when the remaining chunks finish under
// the two timing models (POLICIES.md):
// - pipelined, as the simulator runs it: the network delivers fetched chunks
//   one after another; the GPU takes chunks in order, each once its data has
//   arrived and the previous chunk is done (recompute needs no data);
// - sequential, as CacheGen's released code assumes: fetch, decode and
//   recompute one after another.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "policies/policy.h"

namespace kvs::policies {

// Harmonic mean of the rates of the last `k` samples whose rate is positive
// (Pensieve's MPC: k = 5, zeros skipped); 0 when there is none.
double harmonic_mean_bps(const std::vector<ThroughputSample>& samples, size_t k);

// Seconds to fetch `bytes` at `rate_bps`: serialization plus one request round trip.
double fetch_s(uint64_t bytes, double rate_bps, double rtt_s);

// A running prediction of one request's timeline (absolute simulation times).
struct Pipeline {
  double net_free_s = 0;  // the network has delivered everything requested so far
  double gpu_free_s = 0;  // the GPU has finished every chunk decided so far
  bool sequential = false;

  // The state at a decision point: the network free now, the GPU after its queue.
  static Pipeline at(const StreamState& s, bool sequential = false);
  // As at(), then this request's chunks decided but not yet on the GPU: from
  // the first fetch still in flight on (responses come in order, so every
  // later decided chunk waits behind it; with one request in flight there is
  // none), each fetch in flight takes its whole bytes at `rate_bps` (what of it
  // has arrived is not known) and its decode, each recompute its recompute
  // time. What every adaptive policy's prediction starts from.
  static Pipeline after_decided(const StreamState& s, double rate_bps, bool sequential = false);
  // A fetched chunk taking `transfer_s` on the network and `decode_s` on the GPU.
  void fetch(double transfer_s, double decode_s);
  // A chunk recomputed from text.
  void recompute(double recompute_s);
  // The next chunk (s.next_chunk) recomputed, after fetching at `rate_bps`
  // what its recompute needs first (StreamState::recompute_fetch_bytes).
  void recompute_next(const StreamState& s, double rate_bps);
  // When the first token is out, once every chunk is in the cache.
  double ttft_end_s(double first_token_s) const;
};

// The SLO's deadline in simulation time (request start + SLO); a far future without an SLO.
double deadline_s(const StreamState& s);

}  // namespace kvs::policies
