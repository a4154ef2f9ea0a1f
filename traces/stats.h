// Statistics of a trace over one period, time-weighted: each segment counts
// for its duration. Percentiles are of the rate seen at a uniformly random
// instant (the smallest rate r such that the time at or below r is >= p).
#pragma once

#include <functional>
#include <string>

#include "traces/trace.h"

namespace kvs::traces {

struct TraceStats {
  double duration_s = 0;
  double mean_bps = 0;
  double median_bps = 0;
  double p5_bps = 0;
  double p95_bps = 0;
  double min_bps = 0;
  double max_bps = 0;
  double cv = 0;                  // time-weighted standard deviation / mean
  double below_threshold = 0;     // fraction of time with rate < threshold_bps
  int outages = 0;                // maximal runs of rate < threshold_bps lasting >= min_outage_s
  double threshold_bps = 0;
  double min_outage_s = 0;
  double window_s = 0;
};

// threshold_bps: rates strictly below it count as "below" and as outage.
// window_s > 0: statistics of the mean rate over consecutive windows of that
// length instead of the raw segments (a mahimahi trace's 1 ms bins are mostly
// 0 or several packets; its throughput is only meaningful averaged).
// The mean rate over consecutive windows [k w, (k+1) w) of one period (the
// last one cut at duration_s), in time order, in one pass over the segments:
// `emit(rate_bps, length_s)` once per run of windows with the same mean, so a
// run of windows inside one segment is one call (work and calls are at most
// about twice the segments, whatever the duration and the window).
void window_means(const Trace& trace, double window_s, const std::function<void(double, double)>& emit);

TraceStats compute_stats(const Trace& trace, double threshold_bps = 1e5, double min_outage_s = 0.0,
                         double window_s = 0.0);

}  // namespace kvs::traces
