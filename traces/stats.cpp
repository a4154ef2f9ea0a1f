#include "traces/stats.h"

#include <algorithm>
#include <cmath>

namespace kvs::traces {

TraceStats compute_stats(const Trace& tr, double threshold_bps, double min_outage_s, double window_s) {
  TraceStats s;
  s.duration_s = tr.duration_s;
  s.threshold_bps = threshold_bps;
  s.min_outage_s = min_outage_s;
  s.window_s = window_s;
  if (tr.segments.empty() || tr.duration_s <= 0) return s;
  std::vector<std::pair<double, double>> pieces;  // rate, duration
  if (window_s > 0) {
    for (double t = 0; t < tr.duration_s; t += window_s) {
      const double end = std::min(t + window_s, tr.duration_s);
      if (end > t) pieces.emplace_back(tr.bits_between(t, end) / (end - t), end - t);
    }
  }
  for (size_t i = 0; window_s <= 0 && i < tr.segments.size(); ++i) {
    const double end = i + 1 < tr.segments.size() ? tr.segments[i + 1].start_s : tr.duration_s;
    const double len = end - tr.segments[i].start_s;
    if (len > 0) pieces.emplace_back(tr.segments[i].rate_bps, len);
  }
  double sum = 0, sum2 = 0, total = 0;
  s.min_bps = INFINITY;
  s.max_bps = 0;
  double below = 0, run = 0;
  for (const auto& [r, len] : pieces) {
    sum += r * len;
    sum2 += r * r * len;
    total += len;
    s.min_bps = std::min(s.min_bps, r);
    s.max_bps = std::max(s.max_bps, r);
    if (r < threshold_bps) {
      below += len;
      run += len;
    } else {
      if (run > 0 && run >= min_outage_s) ++s.outages;
      run = 0;
    }
  }
  if (run > 0 && run >= min_outage_s) ++s.outages;
  s.mean_bps = sum / total;
  const double var = std::max(0.0, sum2 / total - s.mean_bps * s.mean_bps);
  s.cv = s.mean_bps > 0 ? std::sqrt(var) / s.mean_bps : 0.0;
  s.below_threshold = below / total;
  std::sort(pieces.begin(), pieces.end());
  auto percentile = [&](double p) {
    double acc = 0;
    for (const auto& [r, len] : pieces) {
      acc += len;
      if (acc >= p * total * (1 - 1e-12)) return r;
    }
    return pieces.back().first;
  };
  s.p5_bps = percentile(0.05);
  s.median_bps = percentile(0.5);
  s.p95_bps = percentile(0.95);
  return s;
}

}  // namespace kvs::traces
