// CacheGen's adaptation (Liu et al., SIGCOMM'24), in two variants
// (POLICIES.md, "CacheGen"):
//
// `cachegen-code`: what the released code does (UChi-JCL/CacheGen,
//   src/utils.py `config_selection`, driven by run_adaptation.py). For each
//   chunk it tries the levels from best to worst quality and takes the first
//   whose transfer time at the chunk's *true* bandwidth is strictly below a
//   fixed per-chunk budget SLO / number of chunks (unused budget is not
//   carried over); when none is, it recomputes the chunk. The number of
//   chunks is the code's: round(context tokens / chunk size), Python's round
//   (half to even; at least 1), so a trailing chunk of less than half the
//   first chunk's tokens does not count (e.g. 2,047 tokens in chunks of 1,000:
//   2, not 3). The code reads the
//   bandwidth of each chunk from its trace, so this variant reads the future
//   of the link (an oracle-informed baseline; its name says "oracle"). Its
//   own TTFT figure (predicted_ttft_s) is the code's: the sum of the chosen
//   transfer times plus a constant charge (0.2 s, run_adaptation.py's
//   `chunk_delay`) per recomputed chunk, no RTT, decode or overlap.
//
// `cachegen`: the paper's online rule (§5.3). The bandwidth is the
//   throughput of the previous chunk (request to last byte); the next chunk
//   takes the best-quality level such that fetching it and every remaining
//   chunk at that level is expected to finish before the SLO (the timeline
//   of estimate.h's Pipeline, decode and first token included, after the
//   chunks still in flight and those decided behind them); if no level
//   fits, the level expected to finish soonest. The chunk is recomputed from
//   text instead when that plan is expected to finish sooner with this chunk
//   recomputed than with it fetched.
#pragma once

#include <cstdint>

#include "policies/policy.h"

namespace kvs::policies {

PolicyInfo cachegen_code_policy();
PolicyInfo cachegen_policy();

// Seconds for `payload_bytes` sent from simulation time `start_s` to arrive
// over the link `net` (the trace's rate times its payload share; no RTT);
// 1e18 when the link never carries them (a trace that ends or carries nothing).
double trace_transfer_s(const NetworkFuture& net, double start_s, uint64_t payload_bytes);

}  // namespace kvs::policies
