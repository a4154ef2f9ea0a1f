// Traces the project does not ship, against numbers computed independently
// (by hand here; over whole datasets by the audit's NumPy script), and the
// fixes that audit made: cut() walking periods without stalling, generators
// without a sliver of a segment at the end, CSV end rows, filter errors.
#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "base/error.h"
#include "traces/formats.h"
#include "traces/generators.h"
#include "traces/stats.h"
#include "traces/transforms.h"

namespace kvs::traces {
namespace {

const std::string kData = std::string(KVSTREAM_SOURCE_DIR) + "/traces/data/";

std::string error_of(const std::string& text, const LoadOptions& o = {}) {
  try {
    parse_trace(text, "t.csv", o);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

std::string load_error(const std::string& path, const LoadOptions& o) {
  try {
    load_trace(path, o);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

void expect_well_formed(const Trace& t, const std::string& what) {
  ASSERT_FALSE(t.segments.empty()) << what;
  EXPECT_EQ(t.segments[0].start_s, 0.0) << what;
  for (size_t i = 1; i < t.segments.size(); ++i)
    ASSERT_LT(t.segments[i - 1].start_s, t.segments[i].start_s) << what << " segment " << i;
  EXPECT_LT(t.segments.back().start_s, t.duration_s) << what;
}

// Variants of the public formats as other files of the same datasets have
// them (fcc_ori/test_traces/*_part1.log starts at 180 s, Oboe's at 0.474 s;
// mahimahi uplinks start late), with the expected numbers worked out by hand.
TEST(ReferenceVariants, TwoColumnWithOffsetStartZerosAndMixedWhitespace) {
  // Rows (t, v): (180, 9) (185, 2) (187.5, 0) (190, 4), CRLF, a space and tabs.
  const Trace t = parse_trace("180.0\t9\r\n185.0 2.0\r\n187.5\t\t0\r\n190\t4\r\n\r\n", "p");
  EXPECT_DOUBLE_EQ(t.duration_s, 10.0);
  ASSERT_EQ(t.segments.size(), 3u);
  EXPECT_DOUBLE_EQ(t.segments[1].start_s, 5.0);
  const TraceStats s = compute_stats(t, 1e5, 0, 0);
  EXPECT_DOUBLE_EQ(s.mean_bps, (2e6 * 5 + 0 * 2.5 + 4e6 * 2.5) / 10);  // Pensieve's time-weighted mean
  EXPECT_DOUBLE_EQ(s.below_threshold, 0.25);
  EXPECT_DOUBLE_EQ(s.max_bps, 4e6);  // the first row's 9 is never used
}

TEST(ReferenceVariants, MahimahiLateStartBurstsGapsAndOneLine) {
  // 3 at 831 ms, a 900 ms gap, 2 at 1731 ms, 1 at the period 2000 (wraps to 0).
  const Trace t = parse_trace("831\n831\n831\n1731\n1731\n2000\n", "m");
  EXPECT_DOUBLE_EQ(t.duration_s, 2.0);
  EXPECT_NEAR(compute_stats(t, 1e5, 0, 0.1).mean_bps, 6 * 12000 / 2.0, 1e-6);
  EXPECT_DOUBLE_EQ(t.rate_at(0.8315), 3 * 12000 * 1000.0);
  EXPECT_DOUBLE_EQ(t.rate_at(1.0), 0.0);
  // One line: one 1500-byte packet every millisecond, 12 Mbit/s.
  const Trace one = parse_trace("1\n", "one");
  EXPECT_DOUBLE_EQ(one.duration_s, 0.001);
  EXPECT_DOUBLE_EQ(compute_stats(one).mean_bps, 12e6);
}

// A mahimahi line with a blank after the number (mahimahi refuses it) was
// taken for a two-column file: "expected 2 columns, found 1". The error for
// comma-separated two-column rows names the separators; UTF-16 is named.
TEST(ReferenceVariants, ErrorsSayWhatIsWrongWithTheLine) {
  EXPECT_EQ(detect_format("0 \n5 \n"), Format::kMahimahi);
  EXPECT_EQ(error_of("0 \n5 \n"), "t.csv:1: '0 ' is not a non-negative integer millisecond timestamp");
  EXPECT_NE(error_of("0.0,1.5\n1.0,2.0\n").find("t.csv:1: expected 2 columns (time_s throughput_mbps) separated by "
                                                "spaces or tabs, found 1"),
            std::string::npos);
  // A spreadsheet's "Unicode text" (UTF-16) was read as text with a column '\xff\xfe0\x00.\x000\x00'.
  EXPECT_EQ(error_of(std::string("\xFF\xFE" "0\0.\0" "0\0\t\0" "1\0\n\0", 14)),
            "t.csv: UTF-16 text (it starts with a UTF-16 byte-order mark): save the trace as UTF-8 or ASCII");
}

// cut() used to find the period and segment of each boundary by dividing the
// absolute time by the duration; rounding put the boundary back in the
// segment it ends (the loop never moved on, pushing segments until memory
// ran out: std::bad_alloc under a 2 GB limit) or before the period's start (a
// negative segment index). These two cases did that.
TEST(Cut, WalksPeriodsWithoutStallingOnRounding) {
  struct Case {
    double duration_s;
    std::vector<double> starts;
    double begin_s, end_s;
  };
  for (const Case& c : {Case{0.3, {0.0, 0.035375611101318316, 0.22828873347377265}, 0.5694228349855917,
                             2.577522871373164},
                        Case{16.154, {0.0, 2.516457552687214}, 76.06056746229466, 427.056801395032}}) {
    Trace t;
    t.duration_s = c.duration_s;
    for (size_t i = 0; i < c.starts.size(); ++i) t.segments.push_back({c.starts[i], 1e6 * double(i + 1)});
    const Trace out = cut(t, c.begin_s, c.end_s);
    expect_well_formed(out, "cut");
    EXPECT_DOUBLE_EQ(out.duration_s, c.end_s - c.begin_s);
    EXPECT_NEAR(out.bits_between(0, out.duration_s), t.bits_between(c.begin_s, c.end_s),
                1e-9 * t.bits_between(c.begin_s, c.end_s));
  }
  // Random traces and windows: the cut carries what the looped trace carries.
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> u(0, 1);
  for (int trial = 0; trial < 300; ++trial) {
    Trace t;
    t.duration_s = 0.01 + 20 * u(rng);
    t.segments.push_back({0, 1e6 * u(rng)});
    for (int k = int(rng() % 6); k > 0; --k) t.segments.push_back({0, 1e6 * u(rng)});
    for (size_t i = 1; i < t.segments.size(); ++i) t.segments[i].start_s = t.duration_s * (double(i) + u(rng)) / double(t.segments.size());
    const double begin = rng() % 2 ? 5 * t.duration_s * u(rng) : double(rng() % 5) * t.duration_s;
    const double end = begin + t.duration_s * (0.01 + 30 * u(rng));
    const Trace out = cut(t, begin, end);
    expect_well_formed(out, "trial " + std::to_string(trial));
    for (double x = 0.25; x < 1; x += 0.25) {
      const double a = out.duration_s * x;
      EXPECT_NEAR(out.bits_between(0, a), t.bits_between(begin, begin + a), 1e-7 * t.bits_between(begin, begin + a) + 1e-3)
          << trial;
    }
  }
  // A cut of more than 10^7 segments is refused, not allocated.
  Trace t;
  t.segments = {{0, 1e6}, {0.0005, 2e6}};
  t.duration_s = 0.001;
  EXPECT_THROW(cut(t, 0, 1e5), Error);
}

// Fixed steps used to be added up (t += interval), which drifts below the end:
// 10 x 100 ms is 0.9999999999999999 s, so an 11th segment of 1e-16 s with a
// random rate of its own ended the trace (and could be its min or max).
TEST(Generators, FixedStepsEndWithoutASliver) {
  const Trace u = generate_trace("uniform:min=1mbps,max=2mbps,interval=100ms,duration=1s,seed=1");
  ASSERT_EQ(u.segments.size(), 10u);
  for (size_t k = 0; k < 10; ++k) EXPECT_DOUBLE_EQ(u.segments[k].start_s, double(k) * 0.1);
  EXPECT_EQ(generate_trace("uniform:min=1mbps,max=2mbps,interval=10ms,duration=60s").segments.size(), 6000u);
  // walk merges equal neighbours, so look at lengths: none shorter than an interval.
  const Trace w = generate_trace("walk:start=50mbps,step=5mbps,min=1mbps,max=100mbps,interval=10ms,duration=60s,seed=3");
  for (size_t i = 0; i < w.segments.size(); ++i) {
    const double end = i + 1 < w.segments.size() ? w.segments[i + 1].start_s : w.duration_s;
    ASSERT_GT(end - w.segments[i].start_s, 0.01 * (1 - 1e-9)) << i;
  }
  // Fixed on/off: 0.1 s on, 0.1 s off for 6 s is 30 cycles, 60 segments.
  const Trace oo = generate_trace("onoff:rate=50mbps,on=100ms,off=100ms,duration=6s");
  ASSERT_EQ(oo.segments.size(), 60u);
  EXPECT_DOUBLE_EQ(oo.segments.back().start_s, 5.9);
  EXPECT_EQ(oo.segments.back().rate_bps, 0.0);
  EXPECT_EQ(compute_stats(oo, 1e5, 0, 0).outages, 30);
}

// markov parsed a state's rate when it first entered it: a bad rate in a
// state that this seed and duration never reach was accepted.
TEST(Generators, MarkovStatesAreAllParsed) {
  // seed 7, 1 s: the first hold outlasts the duration (checked: 1 segment).
  ASSERT_EQ(generate_trace("markov:rates=10mbps|20mbps|30mbps,hold=100s|100s|100s,duration=1s,seed=7").segments.size(), 1u);
  for (const char* bad : {"markov:rates=10mbps|20mbps|30Mbps,hold=100s|100s|100s,duration=1s,seed=7",
                          "markov:rates=10mbps|20Mbps|30mbps,hold=100s|100s|100s,duration=1s,seed=7",
                          "markov:rates=10Mbps|20mbps|30mbps,hold=100s|100s|100s,duration=1s,seed=7"}) {
    try {
      generate_trace(bad);
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("unit 'Mbps' unknown"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(std::string("trace generator '") + bad + "': rates["), std::string::npos)
          << e.what();
    }
  }
}

// The CSV writer wrote one row per segment and the reader gave the last row
// one median interval: a written 1 s | 2 s | 1 s trace came back 5 s long, and
// a constant one 1 s long whatever its duration.
TEST(Csv, WrittenTracesReadBackWithTheirDuration) {
  for (const char* spec : {"steps:rates=12mbps|24mbps|6mbps,durations=1s|2s|1s", "const:rate=100mbps,duration=60s",
                           "markov:rates=10mbps|50mbps|200mbps,hold=2s|3s|1s,duration=120s,seed=7"}) {
    const Trace g = generate_trace(spec);
    const std::string text = format_trace(g, Format::kCsv);
    const Trace back = parse_trace(text, "w.csv");
    EXPECT_DOUBLE_EQ(back.duration_s, g.duration_s) << spec;
    ASSERT_EQ(back.segments.size(), g.segments.size()) << spec;
    EXPECT_NEAR(back.bits_between(0, back.duration_s), g.bits_between(0, g.duration_s),
                1e-12 * g.bits_between(0, g.duration_s))
        << spec;
  }
  // The end row by hand; an empty value anywhere else is an error.
  const Trace t = parse_trace("time_s,throughput_mbps\n0,12\n1,24\n3,6\n4,\n", "e.csv");
  EXPECT_DOUBLE_EQ(t.duration_s, 4.0);
  EXPECT_DOUBLE_EQ(compute_stats(t, 1e5, 0, 0).mean_bps, (12e6 + 48e6 + 6e6) / 4);
  EXPECT_EQ(error_of("time_s,throughput_mbps\n0,12\n1,\n3,6\n"),
            "t.csv:3: throughput_mbps is empty (only the last row may leave it empty, to mark the end)");
  // A lone row's length is not made up (it was 1 s).
  EXPECT_NE(error_of("time_s,throughput_mbps\n0,5\n").find("one data row: how long it lasts is unknown"),
            std::string::npos);
  LoadOptions o;
  o.csv.interval_s = 2;
  EXPECT_DOUBLE_EQ(parse_trace("time_s,throughput_mbps\n0,5\n", "one.csv", o).duration_s, 2.0);
}

// 5Gophers writes distances as 25.0: a filter distance_in_meters=25 matched
// nothing and said only "no data rows (after filters)".
TEST(Csv, FiltersThatMatchNothingNameTheValues) {
  LoadOptions o;
  o.csv.time_column = "seq_num";
  o.csv.interval_s = 1;
  o.csv.filters = {{"distance_in_meters", "25"}, {"run_num", "1"}};
  const std::string e = load_error(kData + "5gophers/07-UE-Panel-Distance-Tests_data.csv", o);
  EXPECT_NE(e.find("no data rows match the filters; distance_in_meters=25: the column holds 25.0, 50.0, 75.0, "
                   "100.0, 160.0; run_num=1: the column holds 1, 2, 3"),
            std::string::npos)
      << e;
  o.csv.filters = {{"distance_in_meters", "25.0"}, {"run_num", "1"}};
  EXPECT_GT(load_trace(kData + "5gophers/07-UE-Panel-Distance-Tests_data.csv", o).segments.size(), 30u);
  // Several runs of one carrier: the time goes back; the error says to filter.
  o.csv.filters = {{"carrier", "VERIZON"}};
  const std::string runs = load_error(kData + "5gophers/01-Throughput_data.csv", o);
  EXPECT_NE(runs.find("does not increase"), std::string::npos) << runs;
  EXPECT_NE(runs.find("keep one with a filter"), std::string::npos) << runs;
}

}  // namespace
}  // namespace kvs::traces
