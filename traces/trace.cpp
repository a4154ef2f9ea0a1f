#include "traces/trace.h"

#include <algorithm>
#include <cmath>

namespace kvs::traces {

namespace {

// Index of the segment holding time t (0 <= t < duration).
size_t segment_index(const std::vector<RateSegment>& segs, double t_s) {
  auto it = std::upper_bound(segs.begin(), segs.end(), t_s,
                             [](double t, const RateSegment& s) { return t < s.start_s; });
  return it == segs.begin() ? 0 : size_t(it - segs.begin()) - 1;
}

// Bits in [t0, t1) with 0 <= t0 <= t1 <= duration, no wrapping.
double bits_within(const Trace& tr, double t0, double t1) {
  double bits = 0;
  for (size_t i = segment_index(tr.segments, t0); i < tr.segments.size() && t0 < t1; ++i) {
    const double end = i + 1 < tr.segments.size() ? tr.segments[i + 1].start_s : tr.duration_s;
    const double stop = std::min(end, t1);
    if (stop > t0) bits += tr.segments[i].rate_bps * (stop - t0);
    t0 = std::max(t0, stop);
  }
  return bits;
}

}  // namespace

double Trace::rate_at(double t_s) const {
  if (segments.empty() || duration_s <= 0 || t_s < 0) return 0;
  if (t_s >= duration_s) {
    if (!loops) return 0;
    t_s = std::fmod(t_s, duration_s);
  }
  return segments[segment_index(segments, t_s)].rate_bps;
}

double Trace::bits_between(double t0_s, double t1_s) const {
  if (segments.empty() || duration_s <= 0 || t1_s <= t0_s) return 0;
  t0_s = std::max(t0_s, 0.0);
  if (!loops) return bits_within(*this, std::min(t0_s, duration_s), std::min(t1_s, duration_s));
  const double period_bits = bits_within(*this, 0, duration_s);
  const double c0 = std::floor(t0_s / duration_s), c1 = std::floor(t1_s / duration_s);
  const double r0 = t0_s - c0 * duration_s, r1 = t1_s - c1 * duration_s;
  // whole periods between, minus the part before r0, plus the part before r1
  return (c1 - c0) * period_bits - bits_within(*this, 0, r0) + bits_within(*this, 0, r1);
}

}  // namespace kvs::traces
