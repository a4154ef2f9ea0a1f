// Issue 25: settings no real run has are refused before ns-3 starts; a run
// that stops at max_sim_s says which requests did not finish (and which never
// started); broken profile values are errors, not infinite TTFTs; outputs are
// written as a set.
#include <unistd.h>

#include <filesystem>
#include <limits>

#include <gtest/gtest.h>

#include "base/error.h"
#include "base/files.h"
#include "sim/simulation.h"
#include "sim_test_util.h"

namespace kvs::sim {
namespace {

using testing::base_config;
using testing::make_profile;

std::string error_of(const SimConfig& c, const codec::Profile& p) {
  try {
    simulate(c, p);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(SimLimits, SettingsNoRealRunHasAreRefusedUpFront) {
  const auto p = make_profile(2, 100, {10000});
  auto expect = [&](auto change, const std::string& message) {
    SimConfig c = base_config(100, 20);
    change(c);
    EXPECT_EQ(error_of(c, p), message);
  };
  expect([](SimConfig& c) { c.request_header_bytes = 4294967295u; },
         "request_header_bytes: expected at most 1048576, got 4294967295");
  expect([](SimConfig& c) { c.response_header_bytes = 4294967295u; },
         "response_header_bytes: expected at most 1048576, got 4294967295");
  expect([](SimConfig& c) { c.arrivals.mode = "poisson", c.arrivals.count = 4294967295u; },
         "arrivals.count (requests): expected at most 100000, got 4294967295");
  expect([](SimConfig& c) { c.cross.bulk_tcp_flows = 5000; }, "cross_traffic.bulk_tcp_flows: expected at most 100, got 5000");
  expect([](SimConfig& c) { c.cross.udp_rate_mbps = 1e9; },
         "cross_traffic.udp_rate_mbps: expected a number in (0, 10000], got 1e+09");
  expect([](SimConfig& c) { c.link.rate_mbps = std::numeric_limits<double>::infinity(); },
         "link.rate_mbps: expected a number in (0, 1e+06], got inf");
  expect([](SimConfig& c) { c.max_sim_s = 10, c.arrivals.times_s = {0, 10}; },
         "arrivals.times_s: arrival at 10 s is not before max_sim_s (10 s)");
}

TEST(SimLimits, BrokenProfileTimesAreErrorsNotInfiniteTtfts) {
  const auto p = make_profile(2, 100, {10000}, std::numeric_limits<double>::infinity());
  const std::string e = error_of(base_config(100, 20), p);
  EXPECT_NE(e.find("context 'ctx0' chunk 0: decode s inf is out of range"), std::string::npos) << e;
  const auto q = make_profile(2, 100, {10000}, 1e300);
  EXPECT_NE(error_of(base_config(100, 20), q).find("decode s 1e+300 is out of range"), std::string::npos);
}

TEST(SimResults, UnfinishedAndNeverStartedRequestsAreNamed) {
  // 1 MB chunks at 1 Mbit/s: the first request cannot finish in 1 s; Poisson
  // arrivals 1000 s apart on average come after the run has stopped.
  const auto p = make_profile(4, 100, {1'000'000});
  SimConfig c = base_config(1, 20);
  c.max_sim_s = 1;
  c.arrivals.mode = "poisson";
  c.arrivals.count = 3;
  c.arrivals.rate_per_s = 0.001;
  const SimOutput out = simulate(c, p);
  ASSERT_EQ(out.result.requests.size(), 3u);
  size_t never = 0;
  for (const auto& q : out.result.requests) never += q.started ? 0 : 1;
  EXPECT_GE(never, 2u);
  const std::string why = unfinished_reason(out.result, c.max_sim_s);
  EXPECT_EQ(why.rfind("the run stopped at max_sim_s = 1 s with 3 of 3 requests unfinished: ", 0), 0u) << why;
  EXPECT_NE(why.find("never started"), std::string::npos) << why;
  // The summary does not show a start for a request that never started.
  EXPECT_NE(out.summary.find("NOT STARTED"), std::string::npos) << out.summary;
  EXPECT_EQ(out.result_json.find("\"started\": true"), std::string::npos);
  // A run whose requests all finished has no reason.
  SimConfig ok = base_config(100, 20);
  EXPECT_EQ(unfinished_reason(simulate(ok, make_profile(2, 100, {10000})).result, ok.max_sim_s), "");
}

TEST(SimResults, OutputsAreWrittenAllOrNone) {
  const auto dir = std::filesystem::temp_directory_path() / ("kvs-outputs-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  SimOutput out;
  out.result_json = "{\"new\": 1}\n";
  out.events_jsonl = "{}\n";
  out.summary = "new\n";
  write_outputs(out, dir.string());  // a fresh folder
  EXPECT_EQ(read_file((dir / "results.json").string()), out.result_json);
  EXPECT_FALSE(std::filesystem::exists(dir.string() + ".tmp." + std::to_string(::getpid())));
  // events.jsonl cannot be written (a folder is in the way): nothing changes.
  std::filesystem::remove(dir / "events.jsonl");
  std::filesystem::create_directory(dir / "events.jsonl");
  out.result_json = "{\"newer\": 2}\n";
  EXPECT_THROW(write_outputs(out, dir.string()), Error);
  EXPECT_EQ(read_file((dir / "results.json").string()), "{\"new\": 1}\n");
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files += e.is_regular_file() ? 1 : 0;
  EXPECT_EQ(files, 2u);  // results.json, summary.txt: no temporary left behind
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvs::sim
