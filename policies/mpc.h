// Model-predictive control (Yin et al., SIGCOMM'15), as Pensieve's code runs
// it (test/mpc.py, rl_server/robust_mpc_server.py, mpc_server.py), mapped to
// KV chunks: `mpc` and `robust-mpc`. `mpc` plans with the undiscounted
// harmonic mean (rl_server/mpc_server.py); Pensieve's test/mpc.py, despite its
// name, divides it by 1 + the error ("robustMPC here"), which is `robust-mpc`.
//
// Estimate. One throughput sample per fetched chunk (StreamState::chunk_samples:
// bytes over request-sent -> last-byte time, so one RTT is inside, as in
// Pensieve where the chunk's delay includes its 80 ms RTT). C = harmonic mean
// of the last `window` samples (5, zeros skipped). robust-mpc divides C by
// 1 + the largest of the last `window` prediction errors, where the error of a
// sample is |C_prev - sample| / sample and C_prev the undiscounted estimate
// from the samples before it (0 for the first sample, as Pensieve). The policy
// object keeps that history (one object serves one request). Before any
// sample, C = `initial_mbps` (Pensieve starts at a fixed default level; we
// plan with a default rate instead, so the SLO still counts at chunk 0), and
// no error is recorded for that guess.
//
// Plan. Every sequence of actions (each level, then recompute) for the next
// H = min(horizon, chunks left) chunks is enumerated exactly (a depth-first
// walk sharing prefixes; no pruning). Each is timed with the pipelined
// Pipeline (estimate.h) from the decision state, this request's chunks still
// in flight and those decided behind them included (Pipeline::after_decided,
// their fetches at the same rate): a fetched chunk takes
// fetch_s(bytes, C, 0) on the network (no extra RTT: C already has one RTT per
// chunk in it) and decode_s[level] on the GPU; a recomputed one takes
// recompute_s on the GPU. Chunks beyond the horizon are part of the TTFT, so
// they are planned too (`tail`):
//   - last (default): every later chunk takes the horizon's last action; its
//     time and its quality count, so a plan is a plan for the whole request;
//   - coarsest: every later chunk is fetched at its fewest-bytes level; only
//     its time counts (its quality is the same for every sequence).
// Objective, maximised:
//   -(sum of quality_cost over the planned chunks; recompute = 0)
//   - lambda_abs x max(0, predicted TTFT - deadline)
//   - mu x sum |quality_cost change| between consecutive chunks of the
//     horizon (from the previous decision's chunk on).
// lambda_abs = lambda x (sum over all the request's chunks of their largest
// quality_cost), per second: one second past the SLO costs `lambda` (default
// 10) times the request's whole quality range, so any overrun longer than
// 1/lambda = 0.1 s outweighs every quality gain, and a step of one chunk by
// one level (a few % of the range) buys at most a few ms of overrun (Pensieve's
// 4.3 per second of rebuffering, about one chunk's bitrate range, is much
// softer; an SLO is a target). The range is the whole request's, not the
// remaining chunks', so the weight does not fade towards the last chunks. A
// lossless profile (range 0) uses a range of 1. mu defaults to 0: a level change between KV
// chunks has no perceptual cost (Pensieve's smoothness term is about video).
// Without an SLO only quality counts: exact options win (recompute, lossless
// levels), the earlier TTFT among them.
// Ties (within 1e-12) go to the sequence with the earlier predicted TTFT, then
// to the one whose first action is done earliest (network and GPU; so of two
// plans with the same levels in another order, the one that spends later:
// MPC re-plans every chunk, and a later bandwidth drop can still be met),
// then to the first enumerated (levels in order 0, 1, ..., recompute last).
// Only the first action is applied.
#pragma once

#include <vector>

#include "policies/policy.h"

namespace kvs::policies {

struct MpcConfig {
  int horizon = 5;            // chunks planned ahead (Pensieve MPC_FUTURE_CHUNK_COUNT)
  int window = 5;             // samples in the harmonic mean and in the error maximum
  double lambda = 10;         // overrun weight, in whole quality ranges per second
  double mu = 0;              // smoothness weight
  double initial_mbps = 100;  // rate assumed before any chunk sample
  bool tail_coarsest = false; // chunks beyond the horizon: fewest bytes (true) or the last action (false)
};

struct MpcPlan {
  std::vector<int> actions;  // for chunks next_chunk, next_chunk + 1, ...: a level or Action::kRecompute
  double objective = 0;
  double ttft_end_s = 0;     // predicted simulation time of the first token
  double lambda_per_s = 0;   // the overrun weight used (lambda x quality range)
};

// The overrun weight per second for this request: cfg.lambda x its chunks' quality range.
double mpc_lambda_per_s(const StreamState& s, const MpcConfig& cfg);

// The best plan at throughput `rate_bps`, by exhaustive enumeration.
MpcPlan mpc_plan(const StreamState& s, const MpcConfig& cfg, double rate_bps);

PolicyInfo mpc_policy();
PolicyInfo robust_mpc_policy();

}  // namespace kvs::policies
