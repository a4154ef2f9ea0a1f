#include <filesystem>
#include <random>

#include <gtest/gtest.h>

#include "base/error.h"
#include "traces/formats.h"
#include "traces/generators.h"
#include "traces/stats.h"
#include "traces/transforms.h"

namespace kvs::traces {
namespace {

namespace fs = std::filesystem;
const std::string kData = std::string(KVSTREAM_SOURCE_DIR) + "/traces/data/";

void expect_error(const std::string& text, const std::string& fragment, LoadOptions o = {}) {
  try {
    parse_trace(text, "bad.trace", o);
    FAIL() << "expected an error containing '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("bad.trace", 0), 0u) << e.what();
  }
}

TEST(Mahimahi, RateFormAndOpportunitiesAreExact) {
  const Trace t = parse_trace("0\n0\n2\n5\n5\n5\n10\n", "m", {});
  ASSERT_TRUE(t.opportunities);
  EXPECT_EQ(t.opportunities->period_ms, 10u);
  EXPECT_DOUBLE_EQ(t.duration_s, 0.010);
  // The opportunity at 10 ms (= the period) is delivered at the next period's 0 ms.
  EXPECT_DOUBLE_EQ(t.rate_at(0.0005), 3 * 12000 * 1000.0);
  EXPECT_DOUBLE_EQ(t.rate_at(0.0015), 0.0);
  EXPECT_DOUBLE_EQ(t.rate_at(0.0055), 3 * 12000 * 1000.0);
  EXPECT_NEAR(t.bits_between(0, 0.010), 7 * 12000.0, 1e-6);
}

TEST(Mahimahi, BadInputsNameFileAndLine) {
  expect_error("", "empty");
  expect_error("0\n5\n3\n", "bad.trace:3: timestamp 3 ms decreases");
  expect_error("0\n\n5\n", "bad.trace:2: empty line");
  expect_error("0\nfive\n", "bad.trace:2:");
  expect_error("0\n0\n", "last timestamp is 0");
  expect_error("0\n-5\n", "bad.trace:2:", {Format::kMahimahi, {}});
}

TEST(TwoColumn, PensieveSemantics) {
  const Trace t = parse_trace("0.0\t9.0\n1.0\t2.0\n3.0 4.0\n", "p", {});
  ASSERT_EQ(t.segments.size(), 2u);
  EXPECT_DOUBLE_EQ(t.duration_s, 3.0);
  EXPECT_DOUBLE_EQ(t.rate_at(0.5), 2e6);  // row 1's value holds on [t0, t1); row 0's value unused
  EXPECT_DOUBLE_EQ(t.rate_at(2.0), 4e6);
  expect_error("0 1\n1 -2\n", "bad.trace:2: negative throughput");
  expect_error("0 1\n1 x\n", "bad.trace:2:");
  expect_error("0 1\n1 2 3\n", "bad.trace:2: expected 2 columns");
  expect_error("0 1\n0 2\n", "bad.trace:2: time 0 s does not increase");
  expect_error("0 1\n1 nan\n", "bad.trace:2:");
}

TEST(Csv, ColumnsUnitsFiltersAndErrors) {
  const std::string csv = "run,time_ms,rate_mbps\n1,0,10\n2,0,99\n1,500,20\n1,1000,30\n";
  LoadOptions o;
  o.csv.time_column = "time_ms";
  o.csv.value_column = "rate_mbps";
  o.csv.filters = {{"run", "1"}};
  const Trace t = parse_trace(csv, "c", o);
  EXPECT_DOUBLE_EQ(t.rate_at(0.2), 10e6);
  EXPECT_DOUBLE_EQ(t.rate_at(0.7), 20e6);
  EXPECT_DOUBLE_EQ(t.duration_s, 1.5);  // last row lasts the median interval
  o.csv.value_column = "rate_kbps";
  expect_error(csv, "no column 'rate_kbps'", o);
  o.csv.value_column = "rate_mbps";
  expect_error("run,time_ms,rate_mbps\n1,0,10\n1,5\n", "bad.trace:3: 2 fields, the header has 3", o);
  expect_error("run,time_ms,rate_mbps\n1,0,-1\n", "bad.trace:2: negative", o);
  LoadOptions bytes;
  bytes.csv.time_column = "t_s";
  bytes.csv.value_column = "bytes";
  const Trace b = parse_trace("t_s,bytes\n0,1000\n2,3000\n", "b", bytes);
  EXPECT_DOUBLE_EQ(b.rate_at(1), 1000 * 8 / 2.0);
}

TEST(Detect, ByContent) {
  EXPECT_EQ(detect_format("0\n1\n"), Format::kMahimahi);
  EXPECT_EQ(detect_format("0.0\t1.5\n"), Format::kTwoColumn);
  EXPECT_EQ(detect_format("time_s,throughput_mbps\n0,1\n"), Format::kCsv);
  EXPECT_THROW(format_from_string("xml"), Error);
}

// Every shipped trace loads, and its statistics match PROVENANCE.md.
TEST(ShippedTraces, AllLoadAndMatchProvenance) {
  int loaded = 0;
  for (const char* folder : {"mahimahi", "pensieve-fcc", "pensieve-hsdpa"})
    for (const auto& e : fs::directory_iterator(kData + folder)) {
      const std::string n = e.path().filename().string();
      if (n == "COPYING" || n == "LICENSE" || n.rfind("README", 0) == 0) continue;
      const Trace t = load_trace(e.path().string());
      EXPECT_GT(t.duration_s, 0) << n;
      ++loaded;
    }
  EXPECT_EQ(loaded, 13 + 59 + 80);
  struct Row { const char* file; double duration_s, mean_mbps; };
  for (const Row& r : {Row{"mahimahi/ATT-LTE-driving-2016.down", 120.002, 4.560},
                       Row{"mahimahi/Verizon-LTE-short.down", 140.000, 5.028},
                       Row{"mahimahi/TMobile-UMTS-driving.up", 931.233, 0.943},
                       Row{"pensieve-fcc/trace_10322_http---edition.cnn.com", 1500.0, 0.894},
                       Row{"pensieve-fcc/trace_8299_http---www.amazon.com", 1630.0, 2.003},
                       Row{"pensieve-hsdpa/norway_bus_1", 154.76, 2.912},
                       Row{"pensieve-hsdpa/norway_tram_56", 314.15, 1.159}}) {
    const TraceStats s = compute_stats(load_trace(kData + r.file));
    EXPECT_NEAR(s.duration_s, r.duration_s, 0.006) << r.file;
    EXPECT_NEAR(s.mean_bps / 1e6, r.mean_mbps, 0.0006) << r.file;
  }
  // 5Gophers: measurement tables, read with explicit columns and filters.
  LoadOptions o;
  o.csv.time_column = "seq_num";
  o.csv.interval_s = 1.0;
  o.csv.value_column = "throughput_mbps";
  o.csv.filters = {{"carrier", "VERIZON"}, {"run_num", "81"}};
  EXPECT_GT(load_trace(kData + "5gophers/01-Throughput_data.csv", o).segments.size(), 50u);
  o.csv.filters = {{"run_num", "1"}};
  EXPECT_GT(load_trace(kData + "5gophers/07-UE-Panel-Distance-Tests_data.csv", o).segments.size(), 30u);
  o.csv.filters = {};
  EXPECT_EQ(load_trace(kData + "5gophers/03-User-Mobility_walking-trace.csv", o).segments.size(), 603u);
  o.csv.value_column = "Verizon_throughput_mbps";
  EXPECT_EQ(load_trace(kData + "5gophers/03-User-Mobility_car-driving-trace-1.csv", o).segments.size(), 120u);
}

TEST(Stats, HandComputed) {
  Trace t;
  t.segments = {{0, 10e6}, {1, 0}, {3, 30e6}, {4, 0}};
  t.duration_s = 5;
  const TraceStats s = compute_stats(t, 1e5, 0.0);
  EXPECT_DOUBLE_EQ(s.mean_bps, (10e6 + 30e6) / 5);
  EXPECT_DOUBLE_EQ(s.below_threshold, 3.0 / 5);
  EXPECT_EQ(s.outages, 2);
  EXPECT_DOUBLE_EQ(s.median_bps, 0);   // 60% of the time at 0
  EXPECT_DOUBLE_EQ(s.p95_bps, 30e6);
  EXPECT_DOUBLE_EQ(s.max_bps, 30e6);
  const double var = (100e12 + 900e12) / 5 - 8e6 * 8e6;
  EXPECT_NEAR(s.cv, std::sqrt(var) / 8e6, 1e-12);
  EXPECT_EQ(compute_stats(t, 1e5, 1.5).outages, 1);  // only the 2 s outage lasts >= 1.5 s
}

TEST(Generators, DeterministicAndParameters) {
  const std::string spec = "uniform:min=0.1gbps,max=10gbps,interval=10ms,duration=100s,seed=3";
  const Trace a = generate_trace(spec), b = generate_trace(spec);
  ASSERT_EQ(a.segments.size(), 10000u);
  for (size_t i = 0; i < a.segments.size(); ++i) ASSERT_EQ(a.segments[i].rate_bps, b.segments[i].rate_bps);
  EXPECT_NE(generate_trace("uniform:min=0.1gbps,max=10gbps,interval=10ms,duration=100s,seed=4").segments[0].rate_bps,
            a.segments[0].rate_bps);
  // Mean of 10000 uniform draws: within 4 standard errors of (min + max) / 2.
  const double se = (10e9 - 0.1e9) / std::sqrt(12.0) / 100.0;
  EXPECT_NEAR(compute_stats(a).mean_bps, 5.05e9, 4 * se);
  EXPECT_GE(compute_stats(a).min_bps, 0.1e9);

  // Markov: time share of each state ~ its mean holding time (uniform jumps among others).
  const Trace m = generate_trace("markov:rates=10mbps|50mbps,hold=1s|3s,duration=20000s,seed=7");
  const TraceStats ms = compute_stats(m, 20e6, 0);
  EXPECT_NEAR(ms.below_threshold, 0.25, 0.03);

  const Trace c = generate_trace("const:rate=100mbps,duration=60s");
  EXPECT_DOUBLE_EQ(c.bits_between(0, 60), 6e9);
  const Trace st = generate_trace("steps:rates=100mbps|20mbps,durations=10s|500ms");
  EXPECT_DOUBLE_EQ(st.duration_s, 10.5);
  EXPECT_DOUBLE_EQ(st.rate_at(10.2), 20e6);
  const Trace oo = generate_trace("onoff:rate=50mbps,on=5s,off=1s,duration=60s");
  EXPECT_EQ(compute_stats(oo, 1e5, 0).outages, 10);
  const Trace w = generate_trace("walk:start=50mbps,step=5mbps,min=1mbps,max=100mbps,interval=100ms,duration=60s,seed=1");
  EXPECT_GE(compute_stats(w).min_bps, 1e6);
  EXPECT_LE(compute_stats(w).max_bps, 100e6);
}

TEST(Generators, BadSpecsNameTheKey) {
  for (const auto& [spec, fragment] : std::vector<std::pair<std::string, std::string>>{
           {"const:rate=100,duration=1s", "rate"},
           {"const:rate=100mbps", "missing key 'duration'"},
           {"const:rate=100mbps,duration=1s,colour=red", "unknown key 'colour'"},
           {"const:rate=100mbps,duraton=1s", "unknown key 'duraton'"},
           {"wave:rate=1mbps", "unknown kind"},
           {"const:rate=-5mbps,duration=1s", "rate"},
           {"uniform:min=2gbps,max=1gbps,interval=1s,duration=5s", "min > max"},
           {"markov:rates=1mbps,hold=1s,duration=5s", ">= 2"},
           {"const:rate=1mbps,duration=0s", "duration must be > 0"}}) {
    try {
      generate_trace(spec);
      ADD_FAILURE() << spec;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  }
}

TEST(Writers, RoundTripThroughReaders) {
  const Trace g = generate_trace("steps:rates=12mbps|24mbps|6mbps,durations=1s|2s|1s");
  const Trace two = parse_trace(format_trace(g, Format::kTwoColumn), "x", {});
  EXPECT_DOUBLE_EQ(two.duration_s, 4.0);
  EXPECT_NEAR(two.bits_between(0, 4), g.bits_between(0, 4), 1e-3);
  const Trace mm = parse_trace(format_trace(g, Format::kMahimahi), "y", {});
  EXPECT_NEAR(mm.bits_between(0, mm.duration_s), g.bits_between(0, 4), 12000.0 * 1.01);  // within one packet
  LoadOptions o;
  const Trace csv = parse_trace(format_trace(g, Format::kCsv), "z", o);
  EXPECT_DOUBLE_EQ(csv.rate_at(1.5), 24e6);
  // A mahimahi trace writes back its exact opportunities.
  const std::string text = "0\n0\n3\n7\n";
  EXPECT_EQ(format_trace(parse_trace(text, "m", {}), Format::kMahimahi), text);
}

// Mutated inputs: every parser throws kvs::Error or succeeds, never crashes.
TEST(Robustness, MutatedInputs) {
  std::mt19937_64 rng(5);
  const std::vector<std::string> seeds = {"0\n0\n2\n5\n10\n", "0.0\t1.0\n1.5\t2.0\n3\t0.5\n",
                                          "time_s,throughput_mbps\n0,1\n1,2\n"};
  const std::string alphabet = "0123456789.,-e\n\t abx";
  for (const auto& s : seeds)
    for (int i = 0; i < 2000; ++i) {
      std::string t = s;
      const int edits = 1 + int(rng() % 5);
      for (int e = 0; e < edits && !t.empty(); ++e) {
        const size_t pos = rng() % t.size();
        switch (rng() % 3) {
          case 0: t[pos] = alphabet[rng() % alphabet.size()]; break;
          case 1: t.erase(pos, 1); break;
          default: t.insert(pos, 1, alphabet[rng() % alphabet.size()]);
        }
      }
      if (rng() % 4 == 0) t.resize(rng() % (t.size() + 1));
      for (Format f : {Format::kAuto, Format::kMahimahi, Format::kTwoColumn, Format::kCsv}) {
        try {
          const Trace tr = parse_trace(t, "fuzz", {f, {}});
          compute_stats(tr);
        } catch (const Error&) {
        }
      }
    }
}

}  // namespace
}  // namespace kvs::traces

namespace kvs::traces {
namespace {

TEST(Transforms, PreserveWhatTheyShould) {
  const Trace g = generate_trace("steps:rates=10mbps|30mbps,durations=1s|1s");
  EXPECT_DOUBLE_EQ(scale(g, 2).bits_between(0, 2), 2 * g.bits_between(0, 2));
  EXPECT_DOUBLE_EQ(clamp(g, 0, 20e6).rate_at(1.5), 20e6);
  EXPECT_DOUBLE_EQ(offset(g, -15e6).rate_at(0.5), 0.0);
  const Trace c = cut(g, 1.5, 3.5);  // 0.5 s at 30, 1 s at 10, 0.5 s at 30 (looped)
  EXPECT_DOUBLE_EQ(c.duration_s, 2.0);
  EXPECT_DOUBLE_EQ(c.bits_between(0, 2), 0.5 * 30e6 + 10e6 + 0.5 * 30e6);
  EXPECT_DOUBLE_EQ(repeat(g, 3).duration_s, 6.0);
  EXPECT_DOUBLE_EQ(concatenate({g, scale(g, 0)}).bits_between(0, 4), g.bits_between(0, 2));
  const Trace r = resample(g, 0.3);
  EXPECT_NEAR(r.bits_between(0, 2), g.bits_between(0, 2), 1e-3);
  EXPECT_THROW(scale(g, -1), Error);
  EXPECT_THROW(cut(g, 2, 1), Error);
}

}  // namespace
}  // namespace kvs::traces
