// Sweep expansion: the product of groups, ranges, zips, replicates, policy
// shorthands, run ids, and errors that name the file, line and run.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <functional>
#include <set>

#include "base/error.h"
#include "base/files.h"
#include "scenarios/sweep.h"

namespace kvs::scenarios {
namespace {

namespace fs = std::filesystem;

// A folder with a profile and a trace file (their bytes only matter for ids).
struct Fixture {
  std::string dir;
  Fixture() {
    dir = (fs::temp_directory_path() / ("kvs-sweep-" + std::to_string(::getpid()))).string();
    fs::create_directories(dir);
    write_file_atomic(dir + "/p.json", "profile one");
    write_file_atomic(dir + "/t.trace", "1\n2\n");
  }
  ~Fixture() { fs::remove_all(dir); }
  Sweep parse(const std::string& body) const {
    return parse_sweep("profile: p.json\ncodec: c\n" + body, dir + "/s.yaml", dir);
  }
  std::string error(const std::string& body) const {
    try {
      parse(body);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  }
};

std::string param(const SweepRun& r, const std::string& key) {
  for (const auto& [k, v] : r.params)
    if (k == key) return v;
  return "?";
}

TEST(Sweep, NoSweepIsOneRun) {
  Fixture f;
  const auto s = f.parse("slo_s: 2\n");
  ASSERT_EQ(s.runs.size(), 1u);
  EXPECT_TRUE(s.keys.empty());
  EXPECT_EQ(s.runs[0].scenario.sim.slo_s, 2);
  EXPECT_EQ(s.runs[0].id.size(), 12u);
}

TEST(Sweep, CartesianProductFirstKeyOutermost) {
  Fixture f;
  const auto s = f.parse("sweep:\n  slo_s: [1, 2]\n  link.rtt_ms: {from: 10, to: 30, step: 10}\n");
  ASSERT_EQ(s.runs.size(), 6u);
  EXPECT_EQ(s.keys, (std::vector<std::string>{"slo_s", "link.rtt_ms"}));
  const double expect[6][2] = {{1, 10}, {1, 20}, {1, 30}, {2, 10}, {2, 20}, {2, 30}};
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(s.runs[i].index, i);
    EXPECT_EQ(s.runs[i].scenario.sim.slo_s, expect[i][0]) << i;
    EXPECT_EQ(s.runs[i].scenario.sim.link.rtt_ms, expect[i][1]) << i;
  }
  // Every id distinct.
  std::set<std::string> ids;
  for (const auto& r : s.runs) ids.insert(r.id);
  EXPECT_EQ(ids.size(), 6u);
}

TEST(Sweep, RangesLinearAndLog) {
  Fixture f;
  auto s = f.parse("sweep:\n  link.rate_mbps: {from: 10, to: 1000, count: 3, scale: log}\n");
  ASSERT_EQ(s.runs.size(), 3u);
  EXPECT_DOUBLE_EQ(s.runs[0].scenario.sim.link.rate_mbps, 10);
  EXPECT_DOUBLE_EQ(s.runs[1].scenario.sim.link.rate_mbps, 100);
  EXPECT_DOUBLE_EQ(s.runs[2].scenario.sim.link.rate_mbps, 1000);
  s = f.parse("sweep:\n  slo_s: {from: 0.1, to: 0.5, step: 0.1}\n");
  ASSERT_EQ(s.runs.size(), 5u);
  EXPECT_EQ(param(s.runs[2], "slo_s"), "0.3");  // no 0.30000000000000004
  s = f.parse("sweep:\n  slo_s: {from: 1, to: 2, count: 5}\n");
  ASSERT_EQ(s.runs.size(), 5u);
  EXPECT_DOUBLE_EQ(s.runs[1].scenario.sim.slo_s, 1.25);
}

TEST(Sweep, ZipVariesKeysTogether) {
  Fixture f;
  const auto s = f.parse(
      "sweep:\n  zip:\n    - {link.rate_mbps: [10, 100], slo_s: [8, 2]}\n  seed: [1, 2, 3]\n");
  ASSERT_EQ(s.runs.size(), 6u);
  EXPECT_EQ(s.runs[0].scenario.sim.link.rate_mbps, 10);
  EXPECT_EQ(s.runs[0].scenario.sim.slo_s, 8);
  EXPECT_EQ(s.runs[3].scenario.sim.link.rate_mbps, 100);
  EXPECT_EQ(s.runs[3].scenario.sim.slo_s, 2);
  EXPECT_EQ(s.runs[4].scenario.sim.seed, 2u);
}

TEST(Sweep, ReplicatesAddSeeds) {
  Fixture f;
  const auto s = f.parse("seed: 7\nreplicates: 3\nsweep:\n  slo_s: [1, 2]\n");
  ASSERT_EQ(s.runs.size(), 6u);
  EXPECT_EQ(s.keys.back(), "seed");
  EXPECT_EQ(s.runs[0].scenario.sim.seed, 7u);
  EXPECT_EQ(s.runs[2].scenario.sim.seed, 9u);
  EXPECT_EQ(s.runs[3].scenario.sim.slo_s, 2);
  EXPECT_NE(f.error("replicates: 2\nsweep:\n  seed: [1, 2]\n").find("s.yaml:3: replicates: seed is swept already"),
            std::string::npos);
}

TEST(Sweep, PolicyShorthandsAndMaps) {
  Fixture f;
  const auto s = f.parse(
      "sweep:\n  policy: [fixed:2, mpc, 'mpc:lambda=5,horizon=3', {name: rate, params: {k: 3}}]\n");
  ASSERT_EQ(s.runs.size(), 4u);
  EXPECT_EQ(s.runs[0].scenario.sim.policy, "fixed");
  EXPECT_EQ(s.runs[0].scenario.sim.policy_params.at("level"), "2");
  EXPECT_EQ(param(s.runs[0], "policy"), "fixed:2");  // the value as given
  EXPECT_EQ(s.runs[1].scenario.sim.policy, "mpc");
  EXPECT_TRUE(s.runs[1].scenario.sim.policy_params.empty());
  EXPECT_EQ(s.runs[2].scenario.sim.policy_params.at("lambda"), "5");
  EXPECT_EQ(s.runs[2].scenario.sim.policy_params.at("horizon"), "3");
  EXPECT_EQ(s.runs[3].scenario.sim.policy, "rate");
  EXPECT_EQ(s.runs[3].scenario.sim.policy_params.at("k"), "3");
}

TEST(Sweep, APolicyParameterSweptUnderAPolicyGivenByName) {
  // `policy: fixed` is short for {name: fixed}: sweeping policy.params.level
  // keeps the name (it used to replace the policy with {params: ...}, and
  // every run failed with "policy.name: missing").
  Fixture f;
  const auto s = f.parse("policy: fixed\nsweep:\n  policy.params.level: [0, 2]\n");
  ASSERT_EQ(s.runs.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(s.runs[i].scenario.sim.policy, "fixed") << i;
    EXPECT_EQ(s.runs[i].scenario.sim.policy_params.at("level"), i == 0 ? "0" : "2");
  }
  EXPECT_EQ(param(s.runs[1], "policy.params.level"), "2");
  // The same after a swept policy given by name, and with the name already a map.
  const auto t = f.parse("sweep:\n  policy: [mpc, robust-mpc]\n  policy.params.horizon: [3]\n");
  ASSERT_EQ(t.runs.size(), 2u);
  EXPECT_EQ(t.runs[1].scenario.sim.policy, "robust-mpc");
  EXPECT_EQ(t.runs[1].scenario.sim.policy_params.at("horizon"), "3");
  const auto u = f.parse("policy: {name: fixed}\nsweep:\n  policy.params.level: [1]\n");
  EXPECT_EQ(u.runs.at(0).scenario.sim.policy_params.at("level"), "1");
}

TEST(Sweep, IdsAreStableAndFollowTheInputs) {
  Fixture f;
  const auto a = f.parse("sweep:\n  slo_s: [1, 2]\n");
  const auto b = f.parse("sweep:\n  slo_s: [1, 2, 3]\n");
  // Adding a value keeps the ids of the runs that were there.
  EXPECT_EQ(a.runs[0].id, b.runs[0].id);
  EXPECT_EQ(a.runs[1].id, b.runs[1].id);
  EXPECT_NE(a.hash, b.hash);
  // A changed profile changes every id.
  write_file_atomic(f.dir + "/p.json", "profile two");
  const auto c = f.parse("sweep:\n  slo_s: [1, 2]\n");
  EXPECT_NE(a.runs[0].id, c.runs[0].id);
  // A trace is an input too.
  const auto t1 = f.parse("link: {trace: t.trace}\n");
  write_file_atomic(f.dir + "/t.trace", "1\n3\n");
  const auto t2 = f.parse("link: {trace: t.trace}\n");
  EXPECT_NE(t1.runs[0].id, t2.runs[0].id);
  // A file named by a policy parameter (selective's profile) is relative to the
  // scenario's folder, and an input too.
  const std::string sel = "policy: {name: selective, params: {profile: sel.json}}\n";
  write_file_atomic(f.dir + "/sel.json", "selective one");
  const auto s1 = f.parse(sel);
  EXPECT_EQ(s1.runs[0].scenario.sim.policy_params.at("profile"), f.dir + "/sel.json");
  write_file_atomic(f.dir + "/sel.json", "selective two");
  const auto s2 = f.parse(sel);
  EXPECT_NE(s1.runs[0].id, s2.runs[0].id);
  EXPECT_NE(s2.runs[0].run_yaml.find(f.dir + "/sel.json"), std::string::npos);
  fs::remove(f.dir + "/sel.json");
  EXPECT_THROW(f.parse(sel), Error);  // a missing file is an error before anything runs
  // The worker's copy names absolute paths and no output.
  EXPECT_NE(t2.runs[0].run_yaml.find(f.dir + "/t.trace"), std::string::npos);
  EXPECT_EQ(f.parse("output: o\n").runs[0].run_yaml.find("output"), std::string::npos);
}

TEST(Sweep, ErrorsNameFileLineKeyAndRun) {
  Fixture f;
  EXPECT_EQ(f.error("sweep:\n  slo_s: [1]\n  link.rtt_ms: [10, -5]\n"),
            f.dir + "/s.yaml:5: sweep run 1 (slo_s=1, link.rtt_ms=-5): link.rtt_ms: expected a number >= 0, got -5");
  EXPECT_NE(f.error("sweep:\n  link.rtt_mss: [10]\n").find("s.yaml:4: sweep run 0 (link.rtt_mss=10): link.rtt_mss: "
                                                            "unknown key (did you mean 'rtt_ms'?"),
            std::string::npos)
      << f.error("sweep:\n  link.rtt_mss: [10]\n");
  EXPECT_NE(f.error("sweep:\n  slo_s: []\n").find("s.yaml:4: sweep.slo_s: expected at least one value"),
            std::string::npos);
  EXPECT_NE(f.error("sweep:\n  slo_s: {from: 1, to: 2}\n").find("exactly one of step and count"), std::string::npos);
  EXPECT_NE(f.error("sweep:\n  slo_s: {from: 1, to: 2, stp: 1}\n").find("(did you mean 'step'?)"), std::string::npos);
  EXPECT_NE(f.error("sweep:\n  slo_s: {from: 0, to: 2, count: 3, scale: log}\n").find("log needs from and to > 0"),
            std::string::npos);
  EXPECT_NE(f.error("sweep:\n  zip:\n    - {slo_s: [1, 2], seed: [1]}\n").find("1 values, but slo_s has 2"),
            std::string::npos);
  EXPECT_NE(f.error("sweep:\n  output: [a]\n").find("sweep.output: cannot be swept"), std::string::npos);
  EXPECT_NE(f.error("sweep: [1]\n").find("s.yaml:3: sweep: expected a mapping"), std::string::npos);
  EXPECT_NE(f.error("replicates: 0\n").find("replicates: expected an integer in 1..10000"), std::string::npos);
  // A missing profile names the file.
  try {
    parse_sweep("profile: nope.json\ncodec: c\n", f.dir + "/s.yaml", f.dir);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nope.json"), std::string::npos) << e.what();
  }
}

// A value listed twice would be two points with one run id: refused, naming
// the file, the line of the second listing, the key and the value.
TEST(Sweep, AValueListedTwiceIsRefused) {
  Fixture f;
  EXPECT_EQ(f.error("sweep:\n  slo_s: [1, 2]\n  link.rtt_ms:\n    - 10\n    - 20\n    - 10\n"),
            f.dir + "/s.yaml:8: sweep.link.rtt_ms: the value 10 is listed twice (values 1 and 3); both would be one "
                    "run (the same run id)");
  // The same number written otherwise, and a policy shorthand and its map.
  EXPECT_NE(f.error("sweep:\n  slo_s: [1, 2, 1.0]\n").find("s.yaml:4: sweep.slo_s: the value 1.0 is listed twice"),
            std::string::npos)
      << f.error("sweep:\n  slo_s: [1, 2, 1.0]\n");
  EXPECT_NE(f.error("sweep:\n  policy: [\"fixed:2\", {name: fixed, params: {level: 2}}]\n")
                .find("s.yaml:4: sweep.policy: the value {name: fixed, params: {level: 2}} is listed twice"),
            std::string::npos)
      << f.error("sweep:\n  policy: [\"fixed:2\", {name: fixed, params: {level: 2}}]\n");
  // A range's values have no line: the key's.
  EXPECT_NE(f.error("sweep:\n  slo_s: {from: 2, to: 2, count: 2}\n").find("s.yaml:4: sweep.slo_s: the value 2 is listed twice"),
            std::string::npos);
  // In a zip, a combination twice; a value repeated in one column alone is fine.
  EXPECT_NE(f.error("sweep:\n  zip:\n    - {slo_s: [1, 2, 1], seed: [1, 2, 1]}\n")
                .find("sweep.zip: the values slo_s=1, seed=1 are listed twice (positions 1 and 3)"),
            std::string::npos);
  EXPECT_EQ(f.parse("sweep:\n  zip:\n    - {slo_s: [1, 2, 1], seed: [1, 2, 3]}\n").runs.size(), 3u);
  EXPECT_EQ(f.parse("sweep:\n  slo_s: [1, 10, 1.5]\n").runs.size(), 3u);
}

// The shipped sweeps expand and validate (with a stand-in profile file: the
// real one is made by the quick start).
TEST(Sweep, ShippedSweepsExpand) {
  Fixture f;
  const std::string dir = std::string(KVSTREAM_SOURCE_DIR) + "/scenarios";
  const std::pair<const char*, size_t> cases[] = {
      {"quickstart.yaml", 2 * 2 * 7}, {"adaptation.yaml", 4 * 3 * 3 * 12}, {"cachegen_bandwidth.yaml", 5 * 6}};
  for (const auto& [name, runs] : cases) {
    std::string text = read_file(dir + "/" + name);
    const std::string profile = "profile: ../runs/default/profile.json";
    ASSERT_NE(text.find(profile), std::string::npos) << name;
    text.replace(text.find(profile), profile.size(), "profile: " + f.dir + "/p.json");
    const auto s = parse_sweep(text, dir + "/" + name, dir);
    EXPECT_EQ(s.runs.size(), runs) << name;
    for (const auto& r : s.runs) EXPECT_FALSE(r.scenario.sim.codec.empty());
  }
}

}  // namespace
}  // namespace kvs::scenarios
