#include "traces/trace.h"

#include <algorithm>
#include <cmath>
#include <limits>

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

namespace {

// Within one period, from local time t: true and the time `at` when `bits`
// are through, or false when the period ends first (then `bits` is less what
// the period carried).
bool deliver_within(const Trace& tr, double t, double& bits, double& at) {
  const auto& segs = tr.segments;
  for (size_t i = segment_index(segs, t); i < segs.size(); ++i) {
    const double end = i + 1 < segs.size() ? segs[i + 1].start_s : tr.duration_s;
    if (end <= t) continue;
    const double from = std::max(t, segs[i].start_s);
    const double rate = segs[i].rate_bps;
    const double avail = rate * (end - from);
    if (rate > 0 && bits <= avail) {
      at = from + bits / rate;
      return true;
    }
    bits -= avail;
  }
  return false;
}

}  // namespace

double Trace::time_to_deliver(double t0_s, double bits) const {
  if (!(bits > 0)) return t0_s;
  const double never = std::numeric_limits<double>::infinity();
  if (segments.empty() || duration_s <= 0) return never;
  const double t = std::max(t0_s, 0.0);  // nothing flows before 0
  if (!loops) {
    if (t >= duration_s) return never;
    double at = 0;
    return deliver_within(*this, t, bits, at) ? at : never;
  }
  double base = std::floor(t / duration_s) * duration_s, at = 0;
  if (deliver_within(*this, t - base, bits, at)) return base + at;
  const double period_bits = bits_within(*this, 0, duration_s);
  if (period_bits <= 0) return never;
  base += duration_s;
  // Skip whole periods, leaving a remainder in (0, period_bits].
  const double skip = std::ceil(bits / period_bits) - 1;
  if (skip > 0) {
    bits -= skip * period_bits;
    base += skip * duration_s;
    if (bits <= 0) bits += period_bits, base -= duration_s;  // rounding
  }
  for (;;) {  // at most twice (rounding)
    if (deliver_within(*this, 0, bits, at)) return base + at;
    base += duration_s;
  }
}

}  // namespace kvs::traces
