// Transforms of traces; each returns a new trace (the input is unchanged).
// Transformed traces keep no mahimahi opportunities (they no longer match).
#pragma once

#include <vector>

#include "traces/trace.h"

namespace kvs::traces {

Trace scale(const Trace& t, double factor);                       // rate x factor (factor >= 0)
Trace clamp(const Trace& t, double min_bps, double max_bps);      // rate into [min, max]
Trace offset(const Trace& t, double delta_bps);                   // rate + delta, floored at 0
// [begin, end) of the (looped) trace, from 0; at most 10^7 segments.
Trace cut(const Trace& t, double begin_s, double end_s);
Trace repeat(const Trace& t, int times);                          // the trace `times` times in a row
Trace concatenate(const std::vector<Trace>& parts);               // one after another; loops if the first does
Trace resample(const Trace& t, double window_s);                  // mean rate per window (exact bits per window)

}  // namespace kvs::traces
