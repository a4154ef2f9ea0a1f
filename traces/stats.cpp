#include "traces/stats.h"

#include <algorithm>
#include <cmath>

namespace kvs::traces {

void window_means(const Trace& tr, double w, const std::function<void(double, double)>& emit) {
  const auto& segs = tr.segments;
  const size_t n = segs.size();
  const double dur = tr.duration_s;
  if (n == 0 || !(dur > 0) || !(w > 0)) return;
  auto seg_end = [&](size_t i) { return i + 1 < n ? segs[i + 1].start_s : dur; };
  size_t i = 0;  // the segment holding t
  double k = 0;  // windows before t (a double: a duration may hold more than 2^64 windows)
  double t = 0;  // k * w, the start of the current window
  // Moves past `count` windows ending at `end`; t = k * w unless rounding at
  // this magnitude would not move it forward.
  auto advance = [&](double count, double end) {
    k += count;
    const double next = k * w;
    t = end < dur && next > t ? next : end;
  };
  while (t < dur) {
    while (i + 1 < n && seg_end(i) <= t) ++i;
    const double end = std::min(t + w, dur);
    if (!(end > t)) {  // the window is below the resolution of t here: the raw segments for the rest
      for (; i < n; ++i) {
        const double a = std::max(t, segs[i].start_s), b = seg_end(i);
        if (b > a) emit(segs[i].rate_bps, b - a);
      }
      return;
    }
    if (seg_end(i) >= end) {
      // Windows wholly inside segment i: one run (the last window may be cut at the end).
      const double whole = std::floor((seg_end(i) - t) / w);
      if (whole >= 1) {
        const double run_end = std::min(t + whole * w, dur);
        emit(segs[i].rate_bps, run_end - t);
        advance(whole, run_end);
      } else {
        emit(segs[i].rate_bps, end - t);
        advance(1, end);
      }
      continue;
    }
    // A window across segment boundaries: integrate it.
    double bits = 0, s = t;
    size_t j = i;
    while (s < end && j < n) {
      const double stop = std::min(seg_end(j), end);
      if (stop > s) bits += segs[j].rate_bps * (stop - s);
      s = std::max(s, stop);
      if (seg_end(j) > end) break;
      ++j;
    }
    emit(bits / (end - t), end - t);
    i = std::min(j, n - 1);
    advance(1, end);
  }
}

TraceStats compute_stats(const Trace& tr, double threshold_bps, double min_outage_s, double window_s) {
  TraceStats s;
  s.duration_s = tr.duration_s;
  s.threshold_bps = threshold_bps;
  s.min_outage_s = min_outage_s;
  s.window_s = window_s;
  if (tr.segments.empty() || tr.duration_s <= 0) return s;
  std::vector<std::pair<double, double>> pieces;  // rate, duration
  if (window_s > 0) window_means(tr, window_s, [&](double rate, double len) { pieces.emplace_back(rate, len); });
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
