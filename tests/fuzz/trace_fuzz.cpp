// libFuzzer target: every trace reader (traces/formats.h: auto-detected,
// mahimahi, two-column, CSV with the default and with index/bytes/filter
// columns) on arbitrary text, then what a parsed trace is used for: windowed
// statistics, resampling, rates and integrals, cut, the writers.
// Contract: a reader returns a well-formed trace (segments from 0, starts
// non-decreasing, finite non-negative rates, positive finite duration) or
// throws kvs::Error; the windowed work is linear in the segments (resample
// yields at most about twice as many), never proportional to the duration.
// Anything else (another exception, a crash, a sanitizer report, a timeout,
// running out of memory) is a finding. Seeds: traces/data (.ci/run).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "base/error.h"
#include "traces/formats.h"
#include "traces/stats.h"
#include "traces/transforms.h"

namespace {

using namespace kvs::traces;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void exercise(const Trace& t) {
  check(!t.segments.empty() && t.segments[0].start_s == 0);
  check(std::isfinite(t.duration_s) && t.duration_s > 0);
  for (size_t i = 0; i < t.segments.size(); ++i) {
    check(std::isfinite(t.segments[i].rate_bps) && t.segments[i].rate_bps >= 0);
    if (i) check(t.segments[i].start_s >= t.segments[i - 1].start_s);
  }
  for (double w : {0.0, 0.001, 0.1, 1.0}) {
    const TraceStats s = compute_stats(t, 1e5, 0.0, w);
    check(s.mean_bps >= 0 && s.min_bps <= s.max_bps);
  }
  for (double w : {0.001, 0.1}) {
    const Trace r = resample(t, w);
    check(r.segments.size() <= 2 * t.segments.size() + 2);
  }
  check(t.bits_between(0, t.duration_s) >= 0);
  if (t.segments.size() < 1000) {  // cut walks whole periods: across a boundary and past the first one
    const Trace c = cut(t, 0.5 * t.duration_s, 2.75 * t.duration_s);
    check(!c.segments.empty() && c.segments[0].start_s == 0 && c.duration_s > 0);
    for (size_t i = 1; i < c.segments.size(); ++i) check(c.segments[i].start_s > c.segments[i - 1].start_s);
  }
  (void)t.rate_at(t.duration_s * 0.5);
  if (t.segments.size() < 100000) {
    (void)format_trace(t, Format::kTwoColumn);
    (void)format_trace(t, Format::kCsv);
  }
  if (t.duration_s <= 10) (void)format_trace(t, Format::kMahimahi);  // one line per millisecond
}

void parse_and_exercise(const std::string& text, const LoadOptions& o) {
  try {
    exercise(parse_trace(text, "fuzz.trace", o));
  } catch (const kvs::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (Format f : {Format::kAuto, Format::kMahimahi, Format::kTwoColumn, Format::kCsv}) {
    LoadOptions o;
    o.format = f;
    parse_and_exercise(text, o);
  }
  LoadOptions idx;  // a sample-index column, bytes per interval, a filter
  idx.format = Format::kCsv;
  idx.csv.time_column = "index";
  idx.csv.interval_s = 0.5;
  idx.csv.value_column = "bytes";
  idx.csv.filters["carrier"] = "A";
  parse_and_exercise(text, idx);
  return 0;
}
