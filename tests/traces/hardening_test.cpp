// Issue 25: traces that would run away (huge durations, quadratic windows),
// byte-order marks, folders and binary garbage.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <random>

#include <gtest/gtest.h>

#include "base/error.h"
#include "traces/formats.h"
#include "traces/stats.h"
#include "traces/transforms.h"

namespace kvs::traces {
namespace {

std::string error_of(const std::string& text, LoadOptions o = {}) {
  try {
    parse_trace(text, "bad.trace", o);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// The windows one at a time, as compute_stats did before (bits_between per window).
Trace windows_one_by_one(const Trace& t, double w) {
  Trace out;
  out.duration_s = t.duration_s;
  for (double a = 0; a < t.duration_s; a += w) {
    const double b = std::min(a + w, t.duration_s);
    if (b > a) out.segments.push_back({a, t.bits_between(a, b) / (b - a)});
  }
  return out;
}

Trace random_trace(std::mt19937_64& rng) {
  Trace t;
  std::uniform_real_distribution<double> len(0.001, 0.5), rate(0, 2e7);
  double at = 0;
  const int n = 1 + int(rng() % 60);
  for (int i = 0; i < n; ++i) {
    t.segments.push_back({at, rng() % 4 == 0 ? 0.0 : rate(rng)});
    at += len(rng);
  }
  t.duration_s = at;
  return t;
}

TEST(WindowedStats, OnePassMatchesWindowByWindow) {
  std::mt19937_64 rng(25);
  for (int trial = 0; trial < 100; ++trial) {
    const Trace t = random_trace(rng);
    const double w = std::uniform_real_distribution<double>(0.002, 0.7)(rng);
    const TraceStats a = compute_stats(t, 5e6, 0.01, w);
    const TraceStats b = compute_stats(windows_one_by_one(t, w), 5e6, 0.01, 0);
    EXPECT_NEAR(a.mean_bps, b.mean_bps, 1e-6 * b.mean_bps + 1e-6) << trial;
    EXPECT_NEAR(a.cv, b.cv, 1e-6) << trial;
    EXPECT_NEAR(a.median_bps, b.median_bps, 1e-6 * b.median_bps + 1e-6) << trial;
    EXPECT_NEAR(a.p5_bps, b.p5_bps, 1e-6 * b.p5_bps + 1e-6) << trial;
    EXPECT_NEAR(a.p95_bps, b.p95_bps, 1e-6 * b.p95_bps + 1e-6) << trial;
    EXPECT_NEAR(a.below_threshold, b.below_threshold, 1e-9) << trial;
    EXPECT_EQ(a.outages, b.outages) << trial;
    // resample gives the same windows
    const Trace r = resample(t, w), ref = windows_one_by_one(t, w);
    for (double x = 0.0005; x < t.duration_s; x += 0.0137)
      EXPECT_NEAR(r.rate_at(x), ref.rate_at(x), 1e-6 * r.rate_at(x) + 1e-3) << trial << " " << x;
  }
}

TEST(WindowedStats, HugeDurationsAreBoundedByTheSegments) {
  // A CSV whose second row is at 10^15 s: 10^16 windows of 0.1 s, two segments.
  const auto start = std::chrono::steady_clock::now();
  const Trace csv = parse_trace("time_s,throughput_mbps\n0,5\n1e15,3\n", "long.csv");
  const TraceStats s = compute_stats(csv, 1e5, 0, 0.1);
  EXPECT_NEAR(s.mean_bps, (5e6 * 1e15 + 3e6 * 1e15) / 2e15, 1e3);
  EXPECT_TRUE(std::isfinite(s.cv));
  EXPECT_LT(resample(csv, 0.1).segments.size(), 10u);
  // The longest mahimahi period read.
  const Trace m = parse_trace("0\n1000000000\n", "long.mm");
  const TraceStats ms = compute_stats(m, 1e5, 0, 0.1);
  EXPECT_NEAR(ms.duration_s, 1e6, 1e-6);
  EXPECT_GT(ms.mean_bps, 0);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
}

TEST(TraceLimits, AbsurdTimestampsAndRatesAreErrorsNamingFileAndLine) {
  EXPECT_EQ(error_of("0\n18446744073709551615\n"),
            "bad.trace:2: timestamp 18446744073709551615 ms is past the longest period read, 1000000000 ms (11.6 days)");
  EXPECT_EQ(error_of("0 1\n1 1e300\n"), "bad.trace:2: throughput 1e+300 Mbit/s is over 10 Tbit/s");
  // Writing a 10^15 s trace as mahimahi (one line per millisecond) is refused up front.
  const Trace csv = parse_trace("time_s,throughput_mbps\n0,5\n1e15,3\n", "long.csv");
  try {
    format_trace(csv, Format::kMahimahi);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("long.csv: a mahimahi trace lists every millisecond", 0), 0u) << e.what();
  }
}

TEST(TraceInput, ByteOrderMarkIsSkipped) {
  const Trace m = parse_trace("\xEF\xBB\xBF" "0\n5\n10\n", "bom.mm");
  ASSERT_TRUE(m.opportunities);
  EXPECT_EQ(m.opportunities->times_ms.size(), 3u);
  const Trace two = parse_trace("\xEF\xBB\xBF" "0 1\n1 2\n", "bom.txt");
  EXPECT_FALSE(two.opportunities);
  EXPECT_DOUBLE_EQ(two.rate_at(0.5), 2e6);
  const Trace csv = parse_trace("\xEF\xBB\xBFtime_s,throughput_mbps\n0,5\n1,3\n", "bom.csv");
  EXPECT_DOUBLE_EQ(csv.rate_at(0.5), 5e6);
}

TEST(TraceInput, GarbageIsNotEchoedRaw) {
  const std::string e = error_of(std::string("0\n\x01\x1b[31mX\xff\n", 11), {Format::kMahimahi, {}});
  EXPECT_EQ(e, "bad.trace:2: '\\x01\\x1b[31mX\\xff' is not a non-negative integer millisecond timestamp");
  const std::string two = error_of(std::string("0 1\n1 \x07\x08\n"));
  EXPECT_EQ(two.find('\x07'), std::string::npos) << two;
  EXPECT_NE(two.find("\\x07\\x08"), std::string::npos) << two;
  // A long line is cut.
  EXPECT_LT(error_of("0\n" + std::string(100000, 'x') + "\n", {Format::kMahimahi, {}}).size(), 200u);
}

TEST(TraceInput, FolderIsNamedAsAFolder) {
  const auto dir = std::filesystem::temp_directory_path();
  try {
    load_trace(dir.string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), dir.string() + ": is a folder, not a file");
  }
}

TEST(Mahimahi, WrappedOpportunitiesJoinBinZero) {
  // Three at the period wrap to 0 and join the two already at 0.
  const Trace t = parse_trace("0\n0\n3\n4\n4\n4\n", "m");
  EXPECT_DOUBLE_EQ(t.rate_at(0.0005), 5 * 12000 * 1000.0);
  EXPECT_DOUBLE_EQ(t.rate_at(0.0035), 12000 * 1000.0);
  EXPECT_NEAR(t.bits_between(0, 0.004), 6 * 12000.0, 1e-6);
  const Trace u = parse_trace("2\n4\n4\n", "m");  // nothing at 0 but the wrapped ones
  EXPECT_DOUBLE_EQ(u.rate_at(0.0005), 2 * 12000 * 1000.0);
  EXPECT_DOUBLE_EQ(u.rate_at(0.0015), 0.0);
  EXPECT_DOUBLE_EQ(u.rate_at(0.0025), 12000 * 1000.0);
}

}  // namespace
}  // namespace kvs::traces
