#include "traces/transforms.h"

#include <algorithm>
#include <cmath>

#include <fmt/core.h>

#include "base/error.h"
#include "traces/stats.h"

namespace kvs::traces {

namespace {

Trace map_rates(const Trace& t, const char* what, auto f) {
  Trace out;
  out.name = fmt::format("{}({})", what, t.name);
  out.duration_s = t.duration_s;
  out.loops = t.loops;
  for (const auto& s : t.segments) out.segments.push_back({s.start_s, f(s.rate_bps)});
  return out;
}

}  // namespace

Trace scale(const Trace& t, double factor) {
  if (!(factor >= 0)) throw Error(fmt::format("scale: factor {} must be >= 0", factor));
  return map_rates(t, "scale", [&](double r) { return r * factor; });
}

Trace clamp(const Trace& t, double min_bps, double max_bps) {
  if (!(min_bps >= 0 && min_bps <= max_bps)) throw Error("clamp: need 0 <= min <= max");
  return map_rates(t, "clamp", [&](double r) { return std::clamp(r, min_bps, max_bps); });
}

Trace offset(const Trace& t, double delta_bps) {
  return map_rates(t, "offset", [&](double r) { return std::max(0.0, r + delta_bps); });
}

Trace cut(const Trace& t, double begin_s, double end_s) {
  if (!(begin_s >= 0 && end_s > begin_s)) throw Error("cut: need 0 <= begin < end");
  if (t.segments.empty() || !(t.duration_s > 0)) throw Error(fmt::format("cut: {} is empty", t.name));
  if (!t.loops && end_s > t.duration_s) throw Error("cut: end past the end of a trace that does not loop");
  const auto& segs = t.segments;
  const double dur = t.duration_s;
  // A trace is held in memory segment by segment: at most 10^7 of them.
  const double periods = std::floor(end_s / dur) - std::floor(begin_s / dur) + 1;
  if (periods * double(segs.size()) > 1e7)
    throw Error(fmt::format("cut: [{}, {}) s spans {:.3g} periods of {} ({} segments each), more than 10^7 segments",
                            begin_s, end_s, periods, t.name, segs.size()));
  Trace out;
  out.name = fmt::format("cut({})", t.name);
  out.loops = t.loops;
  out.duration_s = end_s - begin_s;
  // Walk segment by segment with the period as an integer count and the
  // segment as an index: recomputing both from the absolute time by division
  // (as this did before) can land a boundary back in the segment it ends,
  // and never move on, or before the period's start (a negative index).
  double k = std::floor(begin_s / dur);
  double local = begin_s - k * dur;
  if (local >= dur) k += 1, local = 0;  // rounding
  local = std::max(local, 0.0);
  auto it = std::upper_bound(segs.begin(), segs.end(), local, [](double x, const RateSegment& s) { return x < s.start_s; });
  size_t i = it == segs.begin() ? 0 : size_t(it - segs.begin()) - 1;
  for (;;) {
    const double start = out.segments.empty() ? 0.0 : k * dur + segs[i].start_s - begin_s;
    if (!out.segments.empty() && start <= out.segments.back().start_s)
      out.segments.back().rate_bps = segs[i].rate_bps;  // the previous one has no length left after rounding
    else
      out.segments.push_back({start, segs[i].rate_bps});
    const double seg_end = k * dur + (i + 1 < segs.size() ? segs[i + 1].start_s : dur);
    if (seg_end >= end_s) break;
    if (++i == segs.size()) i = 0, k += 1;
  }
  return out;
}

Trace concatenate(const std::vector<Trace>& parts) {
  if (parts.empty()) throw Error("concatenate: no traces");
  Trace out;
  out.name = "concat";
  out.loops = parts[0].loops;
  for (const auto& p : parts) {
    for (const auto& s : p.segments) out.segments.push_back({out.duration_s + s.start_s, s.rate_bps});
    out.duration_s += p.duration_s;
  }
  return out;
}

Trace repeat(const Trace& t, int times) {
  if (times < 1) throw Error("repeat: times must be >= 1");
  return concatenate(std::vector<Trace>(size_t(times), t));
}

Trace resample(const Trace& t, double window_s) {
  if (!(window_s > 0)) throw Error("resample: window must be > 0");
  Trace out;
  out.name = t.name;
  out.loops = t.loops;
  out.duration_s = t.duration_s;
  // One segment per run of windows with the same mean (stats.h): linear in
  // the segments, whatever the duration.
  double at = 0;
  window_means(t, window_s, [&](double rate, double len) {
    if (out.segments.empty() || out.segments.back().rate_bps != rate) out.segments.push_back({at, rate});
    at += len;
  });
  return out;
}

}  // namespace kvs::traces
