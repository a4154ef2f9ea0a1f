// Generated traces, deterministic for a seed, from a textual spec:
//   KIND:key=value,key=value,...
// Rates take units (bps, kbps, mbps, gbps), times s or ms; lists use '|'.
//   const:rate=100mbps,duration=60s
//   steps:rates=100mbps|20mbps|100mbps,durations=10s|5s|10s
//   walk:start=50mbps,step=5mbps,min=1mbps,max=100mbps,interval=100ms,duration=60s,seed=1
//   markov:rates=10mbps|50mbps|200mbps,hold=2s|3s|1s,duration=120s,seed=7
//       (states with exponential holding times of the given means; the next
//        state is uniform among the others)
//   onoff:rate=50mbps,on=5s,off=1s,duration=60s[,seed=1]
//       (exponential on/off periods when seeded, fixed otherwise; off = rate 0)
//   uniform:min=0.1gbps,max=10gbps,interval=1s,duration=60s,seed=1
//       (CacheGen's evaluation: an independent uniform draw per interval)
// Random numbers come from std::mt19937_64 with portable transforms, so a
// spec gives the same trace on every platform.
#pragma once

#include <string>

#include "traces/trace.h"

namespace kvs::traces {

Trace generate_trace(const std::string& spec);

// "100mbps" -> 1e8 (bps); "250ms" -> 0.25 (s). Throw kvs::Error naming `what`.
double parse_rate_bps(const std::string& text, const std::string& what);
double parse_time_s(const std::string& text, const std::string& what);

}  // namespace kvs::traces
