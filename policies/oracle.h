// `oracle`: the offline optimum over the real trace (POLICIES.md, "The
// offline optimum"). It reads the link through see_future and, at its first
// decision, plans every remaining chunk at once; each decide() then returns
// the plan's entry for the chunk asked (a chunk out of order is a kvs::Error).
//
// The objective, over all plans (per chunk a level or recompute):
//   with an SLO: the least total quality_cost with TTFT <= SLO; when no plan
//     meets it, the least TTFT (TTFTs within 1 ns count as equal), then the
//     least loss;
//   without an SLO (slo_s = 0): the least total loss (recompute is exact, so
//     0 when every quality_cost >= 0), then the least TTFT.
//   Remaining ties: the fewest bytes among the plans the search keeps, then
//   the least GPU work (decode and recompute seconds: no needless recompute
//   while the GPU waits for the network), then a fixed order (deterministic).
//   Of states equal in clocks and loss the search keeps the least work;
//   dominance ignores bytes, so of two plans equal in TTFT and loss the one
//   with fewer bytes may have been dropped.
//
// The search is a Pareto search over chunks. After chunk i a state is
//   pipelined (default, the simulator's model): (network free time, GPU free
//     time, total loss), dropped when another is no later on both clocks and
//     no worse in loss;
//   sequential (CacheGen's model): (finish time, total loss), the same in 2-D.
// A state's successors are nondecreasing in its clocks (the time to deliver
// S bytes from t is nondecreasing in t), so dropping dominated states is
// exact; back-pointers give the plan.
// Sliding-window targets (ChunkInfo::window_reads): a recompute first fetches
// what its windows read of the chunks fetched since the last recompute, at
// their levels, and takes on the quality cost of those the query reads
// nothing of (policies::recompute_fetch, as the simulator runs it). A state
// also has a key, what its chunks add to each later recompute (bytes,
// decode seconds, loss); a state dominates only states of its own key, or
// is dominated by one of key 0 (nothing to add), so the search stays exact.
//
// Frontiers can grow large (64 chunks x 8 levels: tens of thousands of
// states when the SLO is tight), so:
//   1. a quick search keeps at most `bound_states` states per chunk;
//   2. its plan caps a second search with at most `max_states`: a state goes
//      when its TTFT or loss, even at the best for the chunks still to come,
//      would exceed the quick plan's (or the SLO). "At the best" is the least
//      GPU work and loss still to come and a Lagrangian bound: the chunks
//      left must fit both in the bits the link can carry until the deadline
//      (a round trip idle between fetches) and in the GPU seconds left. This
//      pruning is exact.
//   Thinning (a search with more states than its limit) keeps the clocks'
//   own frontier (every reachable TTFT; at most half the limit) and then the
//   states of least loss + bound (a beam). The plan is then approximate, and
//   the reason says so, with, when it holds, the certified gap "loss at most
//   X above the optimum" (X = the plan's loss minus the least bound dropped).
//   Without thinning the plan is the optimum.
//
// The network model (no TCP dynamics, so optimistic: ns-3 is never faster):
// the connection opens with one RTT handshake at the request start (none
// under network: pensieve, NetworkFuture::handshake); a fetch
// requested at t starts at the bottleneck at t + rtt/2, sends
// bytes / payload_share wire bytes at the trace's rate (trace time =
// simulation time, looping when the trace loops; a constant rate without a
// trace), and its last byte reaches the client rtt/2 after the bottleneck is
// done. One request is in flight: the next fetch is requested when the
// previous one's last byte arrived (at once after a recomputed chunk; the
// first at max(decision time, request start + rtt)). The GPU starts at
// max(decision time, gpu_busy_until_s) and takes chunks in order: a decode
// starts once its data is in and the previous chunk is done; a recompute
// once the previous chunk is done. Sequential: one clock, everything one
// after another (a fetch waits for the GPU and the handshake). TTFT = the
// GPU's end of the last chunk + first_token_s - request_start_s. Fetches that
// never complete (a trace that ends) are not plans. A level of 0 bytes (a
// chunk no layer of the query reads) sends no request. predicted_ttft_s() is
// the plan's TTFT under this model.
#pragma once

#include "policies/policy.h"

namespace kvs::policies {

// Parameters: timing = pipelined | sequential; max_states, bound_states
// (states per chunk of the full and the quick search).
PolicyInfo oracle_policy();

}  // namespace kvs::policies
