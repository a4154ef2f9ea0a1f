#include "policies/oracle.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "base/error.h"
#include "traces/generators.h"
#include "traces/trace.h"

namespace kvs::policies {
namespace {

constexpr int kRe = Action::kRecompute;

// One request as the oracle sees it.
struct Instance {
  std::vector<ChunkInfo> chunks;
  uint32_t levels = 0;
  std::optional<traces::Trace> trace;  // none: constant rate_bps
  double rate_bps = 0;
  double rtt_s = 0.02;
  double payload_share = 1;
  double start_s = 0;     // request issued
  double now_s = 0;       // first decision
  double gpu_busy_s = 0;  // GPU queue at the first decision
  double first_token_s = 0;
  double slo_s = 0;
};

NetworkFuture future_of(const Instance& in) {
  NetworkFuture f;
  f.trace = in.trace ? &*in.trace : nullptr;
  f.rate_bps = in.rate_bps;
  f.rtt_s = in.rtt_s;
  f.payload_share = in.payload_share;
  f.request_start_s = in.start_s;
  return f;
}

StreamState state_of(const Instance& in, uint32_t next) {
  StreamState s;
  s.now_s = in.now_s;
  s.elapsed_s = in.now_s - in.start_s;
  s.slo_s = in.slo_s;
  s.next_chunk = next;
  s.total_chunks = uint32_t(in.chunks.size());
  s.levels = in.levels;
  s.chunks = &in.chunks;
  s.gpu_busy_until_s = in.gpu_busy_s;
  s.first_token_s = in.first_token_s;
  return s;
}

std::unique_ptr<Policy> make_oracle(const PolicyParams& params) {
  const PolicyInfo info = oracle_policy();
  return info.make(parse_params(info.name, info.params, params));
}

struct OracleRun {
  std::vector<int> plan;
  double predicted_ttft_s = -1;
  std::string reason;
};

OracleRun run_oracle(const Instance& in, const PolicyParams& params) {
  auto p = make_oracle(params);
  p->see_future(future_of(in));
  OracleRun r;
  for (uint32_t c = 0; c < in.chunks.size(); ++c) {
    const Action a = p->decide(state_of(in, c));
    r.plan.push_back(a.level);
    r.reason = a.reason;
  }
  r.predicted_ttft_s = p->predicted_ttft_s();
  return r;
}

struct Outcome {
  double ttft_s = 0;
  double loss = 0;
};

// One plan timed directly, as oracle.h describes the model, with
// Trace::time_to_deliver for the link (the oracle has its own search table).
Outcome simulate(const Instance& in, const std::vector<int>& plan, bool sequential) {
  const double half = in.rtt_s * 0.5;
  auto arrival = [&](double request_s, uint64_t bytes) {
    if (bytes == 0) return request_s;  // nothing to fetch: no request
    const double bits = 8.0 * double(bytes) / in.payload_share;
    const double through = in.trace ? in.trace->time_to_deliver(request_s + half, bits) : request_s + half + bits / in.rate_bps;
    return through + half;
  };
  const double connected = in.start_s + in.rtt_s;
  double net = std::max(in.now_s, connected), gpu = std::max(in.now_s, in.gpu_busy_s), loss = 0;
  for (size_t c = 0; c < plan.size(); ++c) {
    const ChunkInfo& ch = in.chunks[c];
    const int a = plan[c];
    uint64_t bytes = 0;
    double decode = 0;
    if (a != kRe) {
      bytes = ch.bytes[a], decode = ch.decode_s[a];
      loss += ch.quality_cost[a];
    } else {  // a sliding-window target's recompute fetches what its windows read first
      const RecomputeFetch f = recompute_fetch(ch, uint32_t(c), [&](uint32_t j) { return plan[j]; });
      bytes = uint64_t(std::llround(f.bytes)), decode = f.decode_s + ch.recompute_s;
      loss += f.quality_cost;
      if (bytes == 0) {
        gpu += decode;
        continue;
      }
    }
    if (sequential) {
      gpu = arrival(std::max(gpu, connected), bytes) + decode;
    } else {
      net = arrival(net, bytes);
      gpu = std::max(gpu, net) + decode;
    }
  }
  return {gpu + in.first_token_s - in.start_s, loss};
}

// Every plan (levels + recompute per chunk) with its outcome.
std::vector<std::pair<std::vector<int>, Outcome>> all_plans(const Instance& in, bool sequential) {
  const size_t n = in.chunks.size(), actions = in.levels + 1;
  size_t count = 1;
  for (size_t c = 0; c < n; ++c) count *= actions;
  std::vector<std::pair<std::vector<int>, Outcome>> out;
  out.reserve(count);
  std::vector<int> plan(n);
  for (size_t code = 0; code < count; ++code) {
    size_t x = code;
    for (size_t c = 0; c < n; ++c, x /= actions) plan[c] = int(x % actions) - 1;  // -1 = recompute
    const Outcome o = simulate(in, plan, sequential);
    if (std::isfinite(o.ttft_s)) out.emplace_back(plan, o);
  }
  return out;
}

// The objective of oracle.h, by brute force: the least loss within the SLO
// (then the least TTFT); when none meets it, the least TTFT (within 1 ns), then the least loss.
Outcome brute_best(const std::vector<std::pair<std::vector<int>, Outcome>>& plans, double slo_s) {
  std::optional<Outcome> best;
  for (const auto& [plan, o] : plans)
    if ((slo_s <= 0 || o.ttft_s <= slo_s) &&
        (!best || o.loss < best->loss || (o.loss == best->loss && o.ttft_s < best->ttft_s)))
      best = o;
  if (best) return *best;
  double least = std::numeric_limits<double>::infinity();
  for (const auto& po : plans) least = std::min(least, po.second.ttft_s);
  for (const auto& [plan, o] : plans)
    if (o.ttft_s <= least + 1e-9 && (!best || o.loss < best->loss || (o.loss == best->loss && o.ttft_s < best->ttft_s)))
      best = o;
  return *best;
}

// A random-but-seeded instance: `n` chunks, `levels` levels, a two- or
// three-segment trace (looping or not) or a constant rate; `windowed`: a
// sliding-window target, each chunk's recompute reading up to three chunks
// back (some of them nothing); the first chunks are read by no layer of the
// query (no cost of their own: it comes with a recompute that reads them).
Instance random_instance(uint64_t seed, uint32_t n, uint32_t levels, bool windowed = false) {
  std::mt19937_64 rng(seed);
  auto uniform = [&](double a, double b) { return a + (b - a) * double(rng() >> 11) * 0x1p-53; };
  Instance in;
  in.levels = levels;
  for (uint32_t c = 0; c < n; ++c) {
    ChunkInfo ch;
    double bytes = uniform(2e5, 1.2e6), loss = uniform(0, 0.002);
    for (uint32_t l = 0; l < levels; ++l) {
      ch.bytes.push_back(uint64_t(bytes));
      ch.decode_s.push_back(uniform(0.004, 0.03));
      ch.quality_cost.push_back(loss);
      bytes *= uniform(0.35, 0.8);
      loss += uniform(0.001, 0.02);
    }
    ch.recompute_s = uniform(0.03, 0.25);
    in.chunks.push_back(ch);
  }
  const uint32_t unread = windowed ? uint32_t(rng() % 4) : 0;
  std::vector<std::vector<double>> own_cost(n);
  for (uint32_t c = 0; c < unread && c < n; ++c) {
    own_cost[c] = in.chunks[c].quality_cost;
    std::fill(in.chunks[c].quality_cost.begin(), in.chunks[c].quality_cost.end(), 0.0);
  }
  for (uint32_t c = 1; windowed && c < n; ++c) {
    const uint32_t reach = std::min<uint32_t>(c, 1 + uint32_t(rng() % 3));
    for (uint32_t k = 0; k < reach; ++k) {
      const ChunkInfo& earlier = in.chunks[c - 1 - k];
      const double share = rng() % 4 == 0 ? 0.0 : uniform(0.2, 1.0);  // of that chunk's layers left out
      ChunkInfo::WindowRead r;
      for (uint32_t l = 0; l < levels; ++l) {
        r.bytes.push_back(share * double(earlier.bytes[l]));
        r.decode_s.push_back(share * earlier.decode_s[l]);
      }
      r.layers = share > 0;
      r.quality_cost = own_cost[c - 1 - k];
      in.chunks[c].window_reads.push_back(r);
    }
  }
  if (seed % 5 == 4) {
    in.rate_bps = uniform(5e6, 1e8);
  } else {
    traces::Trace t;
    double at = 0;
    for (int k = 0, segs = 2 + int(seed % 2); k < segs; ++k) {
      t.segments.push_back({at, uniform(5e6, 1e8)});
      at += uniform(0.05, 0.4);
    }
    t.duration_s = at;
    t.loops = seed % 5 != 3;
    if (!t.loops) t.duration_s += 1.5;  // long enough for some plans, not for all
    in.trace = t;
  }
  in.rtt_s = uniform(0.005, 0.06);
  in.payload_share = uniform(0.9, 1.0);
  in.start_s = uniform(0, 0.5);
  in.now_s = seed % 2 ? in.start_s : in.start_s + in.rtt_s;  // before or after the handshake
  in.gpu_busy_s = seed % 3 ? in.now_s + uniform(0, 0.05) : 0;
  in.first_token_s = uniform(0.005, 0.05);
  return in;
}

// The oracle's plan against the best of every plan of seeds [first, last]
// (random_instance), under both timing models and five SLOs. Returns how many
// of its plans recompute a chunk after a fetch that left out layers the
// recompute reads (a sliding-window target's window fetch).
int check_against_brute_force(uint64_t first, uint64_t last, bool windowed) {
  int window_fetches = 0;
  for (uint64_t seed = first; seed <= last; ++seed) {
    const uint32_t n = seed - first < 4 ? 8 : 5 + uint32_t(seed % 3);
    Instance in = random_instance(seed, n, 3, windowed);
    for (const bool sequential : {false, true}) {
      const auto plans = all_plans(in, sequential);
      EXPECT_FALSE(plans.empty());
      if (plans.empty()) continue;
      double least = std::numeric_limits<double>::infinity();
      for (const auto& po : plans) least = std::min(least, po.second.ttft_s);
      const double best_quality_ttft = brute_best(plans, 0).ttft_s;
      for (const double slo : {0.0, 0.8 * least, least + 0.25 * (best_quality_ttft - least),
                               least + 0.7 * (best_quality_ttft - least), 1.5 * best_quality_ttft}) {
        in.slo_s = slo;
        const std::string what = "seed " + std::to_string(seed) + (sequential ? " sequential" : " pipelined") +
                                 " slo " + std::to_string(slo);
        const Outcome want = brute_best(plans, slo);
        // bound_states: 0 = one unbounded search; 16 = a first search that must
        // thin, whose plan bounds the exact one.
        for (const char* bound : {"256", "0", "16"}) {
          const std::string with = what + " bound_states " + bound;
          const OracleRun r = run_oracle(in, {{"timing", sequential ? "sequential" : "pipelined"}, {"bound_states", bound}});
          EXPECT_EQ(r.plan.size(), n) << with;
          if (r.plan.size() != n) continue;
          const Outcome got = simulate(in, r.plan, sequential);
          EXPECT_NEAR(got.loss, want.loss, 1e-12) << with;
          EXPECT_NEAR(got.ttft_s, want.ttft_s, 1e-9) << with;
          EXPECT_NEAR(r.predicted_ttft_s, got.ttft_s, 1e-9) << with;
          EXPECT_EQ(r.reason.find("approximate"), std::string::npos) << with << ": " << r.reason;
          EXPECT_EQ(r.reason.find("missed") != std::string::npos, slo > 0 && slo < least) << with << ": " << r.reason;
          for (size_t c = 0; c < n; ++c)
            window_fetches += r.plan[c] == kRe &&
                              recompute_fetch(in.chunks[c], uint32_t(c), [&](uint32_t j) { return r.plan[j]; }).bytes > 0;
        }
      }
    }
  }
  return window_fetches;
}

// (1) The oracle's plan is as good as the best of every plan, under both timing models.
TEST(Oracle, MatchesBruteForceOnSmallInstances) { EXPECT_EQ(check_against_brute_force(1, 10, false), 0); }

// (1b) The same for sliding-window targets: a recompute first fetches the
// layers its windows read that earlier fetches left out, and takes on the
// cost of the chunks the query reads nothing of, which depends on the
// actions before it, so the search keeps states apart by what they will
// cost later recomputes.
TEST(Oracle, MatchesBruteForceWithWindowFetches) {
  EXPECT_GT(check_against_brute_force(21, 70, true), 10);  // plans that pay for a window fetch
}

// (2) One level, a constant link: the prediction is the hand-computed timeline.
TEST(Oracle, SingleLevelPlanMatchesHandComputedTimeline) {
  Instance in;
  in.levels = 1;
  for (int c = 0; c < 3; ++c) in.chunks.push_back({0, 256, {1000000}, {0.01}, {0.0}, 10.0, {}});
  in.rate_bps = 8e7;  // 1 MB = 0.1 s
  in.rtt_s = 0.02;
  in.first_token_s = 0.05;
  // Pipelined: handshake to 0.02; arrivals 0.14, 0.26, 0.38; decodes end 0.15, 0.27, 0.39; + first token.
  const OracleRun p = run_oracle(in, {});
  EXPECT_EQ(p.plan, (std::vector<int>{0, 0, 0}));
  EXPECT_NEAR(p.predicted_ttft_s, 0.44, 1e-12);
  // Sequential: 0.02 -> 0.14 + 0.01; 0.15 -> 0.27 + 0.01; 0.28 -> 0.40 + 0.01; + first token.
  const OracleRun s = run_oracle(in, {{"timing", "sequential"}});
  EXPECT_EQ(s.plan, (std::vector<int>{0, 0, 0}));
  EXPECT_NEAR(s.predicted_ttft_s, 0.46, 1e-12);
}

Instance three_levels_on_fast_link() {
  Instance in;
  in.levels = 3;
  for (int c = 0; c < 4; ++c)
    in.chunks.push_back({0, 256, {1000000, 500000, 250000}, {0.02, 0.01, 0.005}, {0.001, 0.01, 0.05}, 5.0, {}});
  in.rate_bps = 1e10;
  in.rtt_s = 0.01;
  in.first_token_s = 0.02;
  return in;
}

// (3) Level 0 fits: the best quality; an impossible SLO: the least TTFT;
// no SLO: the best quality at any TTFT (recomputing is exact).
// A thinned search on a sliding-window target: most chunks are read by no
// layer of the query (0 bytes, no cost of their own), so many states tie at
// loss 0 and bound 0, differing in what they owe later recomputes. The beam
// keeps first those that owe nothing, so recomputing everything (loss 0,
// within the SLO) survives the cut; cut by frontier order alone, it did not
// (the plan had a loss of 0.002-0.008 on these instances).
TEST(Oracle, ThinnedWindowedSearchKeepsTheStatesThatOweNothing) {
  for (const auto& [n, reach, states] : {std::tuple{32u, 8u, "64"}, std::tuple{48u, 8u, "128"}, std::tuple{40u, 6u, "64"}}) {
    Instance in;
    in.levels = 4;
    in.rate_bps = 2e9;
    in.slo_s = 3;
    const uint32_t unread = n * 3 / 4;
    for (uint32_t c = 0; c < n; ++c) {
      ChunkInfo ch;
      for (uint32_t l = 0; l < in.levels; ++l) {
        ch.bytes.push_back(c < unread ? 0 : uint64_t(6e6 * std::pow(0.7, l)));
        ch.decode_s.push_back(c < unread ? 0 : 0.002);
        ch.quality_cost.push_back(c < unread ? 0 : 0.0005 + 0.002 * l);
      }
      ch.recompute_s = 0.02;
      for (uint32_t k = 0; k < std::min(c, reach); ++k) {  // what recomputing c reads of chunk c - 1 - k
        ChunkInfo::WindowRead r;
        for (uint32_t l = 0; l < in.levels; ++l) {
          r.bytes.push_back(double(reach - k) / reach * 5e6 * std::pow(0.7, l));
          r.decode_s.push_back(0.001);
          if (c - 1 - k < unread) r.quality_cost.push_back(0.0003 + 0.001 * l);
        }
        ch.window_reads.push_back(r);
      }
      in.chunks.push_back(ch);
    }
    const OracleRun r = run_oracle(in, {{"max_states", states}, {"bound_states", "16"}});
    const Outcome got = simulate(in, r.plan, false);
    EXPECT_EQ(got.loss, 0) << n << " chunks: " << r.reason;
    EXPECT_LE(got.ttft_s, in.slo_s) << r.reason;
    EXPECT_NE(r.reason.find("approximate"), std::string::npos) << r.reason;  // the case is a thinned one
  }
}

// Of plans equal in loss, TTFT and bytes, the least GPU work: chunk 0 (no
// layer of the query reads it: 0 bytes, no cost) recomputed or "fetched" ends
// at the same TTFT, as the GPU then waits for chunk 1 on a slow link; the
// plan does not recompute it.
TEST(Oracle, TiesGoToTheLeastGpuWork) {
  Instance in;
  in.levels = 2;
  in.chunks.push_back({0, 256, {0, 0}, {0.0, 0.0}, {0.0, 0.0}, 0.05, {}});
  in.chunks.push_back({256, 256, {1000000, 500000}, {0.01, 0.01}, {0.0, 0.01}, 5.0, {}});
  in.rate_bps = 8e6;  // chunk 1 at level 0: 1 s
  in.slo_s = 3;
  for (const char* timing : {"pipelined", "sequential"}) {
    const OracleRun r = run_oracle(in, {{"timing", timing}});
    EXPECT_EQ(r.plan, (std::vector<int>{0, 0})) << timing << ": " << r.reason;
  }
}

TEST(Oracle, BestQualityWhenItFitsLeastTtftWhenNothingDoes) {
  Instance in = three_levels_on_fast_link();
  in.slo_s = 1.0;
  const OracleRun fits = run_oracle(in, {});
  EXPECT_EQ(fits.plan, (std::vector<int>{0, 0, 0, 0}));
  EXPECT_LT(fits.predicted_ttft_s, 1.0);
  EXPECT_EQ(fits.reason.find("missed"), std::string::npos) << fits.reason;

  in.slo_s = 1e-4;
  const OracleRun fastest = run_oracle(in, {});
  EXPECT_EQ(fastest.plan, (std::vector<int>{2, 2, 2, 2}));  // least bytes and decode
  double least = std::numeric_limits<double>::infinity();
  for (const auto& po : all_plans(in, false)) least = std::min(least, po.second.ttft_s);
  EXPECT_NEAR(fastest.predicted_ttft_s, least, 1e-12);
  EXPECT_NE(fastest.reason.find("missed"), std::string::npos) << fastest.reason;

  in.slo_s = 0;
  EXPECT_EQ(run_oracle(in, {}).plan, (std::vector<int>{kRe, kRe, kRe, kRe}));
}

// (4) It reads the future: two links alike until long after chunk 0 has
// arrived, one of them dropping later. Only the oracle can tell them apart at
// chunk 0: it fetches chunk 0 coarser, and the plan as a whole, when the drop
// is coming. (On one serial link only the total of bytes before the deadline
// matters, not which chunks carry them, so with alike chunks the drop does not
// by itself order coarse after fine.)
TEST(Oracle, ReadsTheFutureOfTheTrace) {
  Instance in;
  in.levels = 6;
  for (int c = 0; c < 8; ++c) {
    ChunkInfo ch{0, 256, {}, {}, {}, 3.0, {}};
    for (int l = 0; l < 6; ++l) {
      ch.bytes.push_back(uint64_t(2e6 * std::pow(0.7, l)));
      ch.decode_s.push_back(0.002);
      ch.quality_cost.push_back(0.01 * l * l);
    }
    in.chunks.push_back(ch);
  }
  in.rtt_s = 0.02;
  in.first_token_s = 0.01;
  in.slo_s = 1.0;
  traces::Trace steady;
  steady.segments = {{0.0, 2e8}};
  steady.duration_s = 10;
  in.trace = steady;
  const OracleRun s = run_oracle(in, {});
  traces::Trace drop;
  drop.segments = {{0.0, 2e8}, {0.3, 2e7}};
  drop.duration_s = 10;
  in.trace = drop;
  const OracleRun d = run_oracle(in, {});
  EXPECT_EQ(s.plan, std::vector<int>(8, 0));  // level 0 fits the steady link
  EXPECT_LE(s.predicted_ttft_s, 1.0);
  EXPECT_GT(d.plan.front(), 0);  // chunk 0 arrives long before the links differ
  EXPECT_LE(d.predicted_ttft_s, 1.0);
  for (int l : d.plan) EXPECT_GE(l, 0);  // still fetched, just coarser
}

// 64 chunks x 8 levels on a 10 ms random-walk trace.
Instance large_instance() {
  std::mt19937_64 rng(42);
  auto uniform = [&](double a, double b) { return a + (b - a) * double(rng() >> 11) * 0x1p-53; };
  Instance in;
  in.levels = 8;
  for (uint32_t c = 0; c < 64; ++c) {
    ChunkInfo ch;
    double bytes = uniform(1.5e6, 2.5e6), loss = uniform(0, 1e-4);
    for (uint32_t l = 0; l < in.levels; ++l) {
      ch.bytes.push_back(uint64_t(bytes));
      ch.decode_s.push_back(uniform(0.004, 0.012));
      ch.quality_cost.push_back(loss);
      bytes *= uniform(0.6, 0.8);
      loss += uniform(1e-4, 2e-3) * (1 + l);
    }
    ch.recompute_s = 0.03 + 0.002 * c;  // prefill grows with the past
    in.chunks.push_back(ch);
  }
  in.trace = traces::generate_trace("walk:start=60mbps,step=5mbps,min=5mbps,max=150mbps,interval=10ms,duration=60s,seed=3");
  in.rtt_s = 0.04;
  in.payload_share = 0.95;
  in.start_s = 7.3;
  in.now_s = in.start_s;
  in.first_token_s = 0.03;
  in.slo_s = 4.0;
  return in;
}

// The reason's certified gap: "loss at most X above the optimum" (-1: none).
double stated_gap(const std::string& reason) {
  const std::string key = "loss at most ";
  const size_t at = reason.find(key);
  return at == std::string::npos ? -1 : std::stod(reason.substr(at + key.size()));
}

// Its planning time is printed, not asserted: timed unit tests fail on a
// loaded machine (this one took 3.1 s against a 2 s bound under a load of 10).
TEST(Oracle, PlansSixtyFourChunksOfEightLevels) {
  Instance in = large_instance();
  for (const double slo : {0.0, 1.0, 2.0, 2.5, 3.0, 3.5, 4.0, 6.0})
    for (const char* timing : {"pipelined", "sequential"}) {
      in.slo_s = slo;
      const std::string what = std::string(timing) + " slo " + std::to_string(slo);
      const auto t0 = std::chrono::steady_clock::now();
      const OracleRun r = run_oracle(in, {{"timing", timing}});
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::cout << what << ": planned 64 chunks x 8 levels in " << s << " s; " << r.reason << "\n";
      const bool approximate = r.reason.find("approximate") != std::string::npos;
      if (slo == 0 || slo >= 4 || std::string(timing) == "sequential") {
        EXPECT_FALSE(approximate) << what << ": " << r.reason;
      }
      const Outcome o = simulate(in, r.plan, std::string(timing) == "sequential");
      EXPECT_NEAR(o.ttft_s, r.predicted_ttft_s, 1e-6) << what;
      if (slo > 0 && r.reason.find("missed") == std::string::npos) {
        EXPECT_LE(o.ttft_s, slo) << what;
      }
    }
}

// The bounded search (default) finds what one unbounded search finds, on
// instances too large for brute force but small enough for the unbounded one.
TEST(Oracle, BoundsDoNotChangeTheOptimum) {
  for (uint64_t seed = 11; seed <= 16; ++seed) {
    Instance in = random_instance(seed, 16, 4);
    for (const char* timing : {"pipelined", "sequential"}) {
      const PolicyParams plain_params{{"timing", timing}, {"bound_states", "0"}, {"max_states", "10000000"}};
      in.slo_s = 0;
      const double best_quality_ttft = run_oracle(in, plain_params).predicted_ttft_s;
      in.slo_s = 1e-6;
      const double least = run_oracle(in, plain_params).predicted_ttft_s;
      for (const double slo : {0.0, 0.9 * least, least + 0.1 * (best_quality_ttft - least),
                               least + 0.4 * (best_quality_ttft - least), least + 0.8 * (best_quality_ttft - least)}) {
        in.slo_s = slo;
        const std::string what = "seed " + std::to_string(seed) + " " + timing + " slo " + std::to_string(slo);
        for (const char* bound : {"256", "16"}) {
          const OracleRun bounded = run_oracle(in, {{"timing", timing}, {"bound_states", bound}});
          const OracleRun plain = run_oracle(in, plain_params);
          EXPECT_EQ(bounded.reason.find("approximate"), std::string::npos) << what << ": " << bounded.reason;
          EXPECT_EQ(plain.reason.find("approximate"), std::string::npos) << what << ": " << plain.reason;
          const bool seq = std::string(timing) == "sequential";
          const Outcome b = simulate(in, bounded.plan, seq), u = simulate(in, plain.plan, seq);
          EXPECT_NEAR(b.loss, u.loss, 1e-12) << what << " bound_states " << bound;
          EXPECT_NEAR(b.ttft_s, u.ttft_s, 1e-9) << what << " bound_states " << bound;
        }
      }
    }
  }
}

// Thinned to a small beam, the plan is within the gap its reason states of
// the optimum (found by one unbounded search).
TEST(Oracle, ThinnedPlansStayWithinTheirStatedGap) {
  int approximate = 0, bounded = 0, least_loss = 0;
  for (uint64_t seed = 21; seed <= 28; ++seed) {
    Instance in = random_instance(seed, 16, 4);
    for (const char* timing : {"pipelined", "sequential"}) {
      const bool seq = std::string(timing) == "sequential";
      const PolicyParams exact_params{{"timing", timing}, {"bound_states", "0"}, {"max_states", "10000000"}};
      in.slo_s = 0;
      const double best_quality_ttft = run_oracle(in, exact_params).predicted_ttft_s;
      in.slo_s = 1e-6;
      const double least = run_oracle(in, exact_params).predicted_ttft_s;
      for (const double slo : {0.0, 0.9 * least, least + 0.2 * (best_quality_ttft - least),
                               least + 0.6 * (best_quality_ttft - least)}) {
        in.slo_s = slo;
        const std::string what = "seed " + std::to_string(seed) + " " + timing + " slo " + std::to_string(slo);
        const Outcome opt = simulate(in, run_oracle(in, exact_params).plan, seq);
        const OracleRun r = run_oracle(in, {{"timing", timing}, {"max_states", "16"}, {"bound_states", "0"}});
        const Outcome got = simulate(in, r.plan, seq);
        EXPECT_NEAR(got.ttft_s, r.predicted_ttft_s, 1e-9) << what;
        if (r.reason.find("approximate") == std::string::npos) {
          EXPECT_NEAR(got.loss, opt.loss, 1e-12) << what;
          continue;
        }
        ++approximate;
        if (r.reason.find("its loss is the least any plan has") != std::string::npos) {  // then it is the optimum's
          EXPECT_LE(got.loss, opt.loss + 1e-12) << what << ": " << r.reason;
          ++least_loss;
        }
        const double gap = stated_gap(r.reason);
        if (gap < 0) continue;
        ++bounded;
        // Every reachable TTFT was kept: the SLO is met when it can be, else the least TTFT found.
        if (slo > 0 && opt.ttft_s > slo) {
          EXPECT_NEAR(got.ttft_s, opt.ttft_s, 1e-9) << what;
        } else if (slo > 0) {
          EXPECT_LE(got.ttft_s, slo) << what;
        }
        EXPECT_LE(got.loss, opt.loss + gap * (1 + 1e-3) + 1e-12) << what << ": " << r.reason;
      }
    }
  }
  EXPECT_GT(approximate, 10);
  EXPECT_GT(bounded, 10);
  EXPECT_GT(least_loss, 0);
}

TEST(Oracle, ThinnedFrontierIsApproximateButConsistentAndDeterministic) {
  const Instance in = large_instance();
  const OracleRun exact = run_oracle(in, {});
  const OracleRun a = run_oracle(in, {{"max_states", "16"}});
  const OracleRun b = run_oracle(in, {{"max_states", "16"}});
  EXPECT_NE(a.reason.find("approximate"), std::string::npos) << a.reason;
  EXPECT_EQ(a.plan, b.plan);
  const Outcome o = simulate(in, a.plan, false), e = simulate(in, exact.plan, false);
  EXPECT_NEAR(o.ttft_s, a.predicted_ttft_s, 1e-6);
  if (o.ttft_s <= in.slo_s) {
    EXPECT_GE(o.loss, e.loss - 1e-12);  // never better than the optimum
  }
}

TEST(Oracle, RefusesToRunBlindOrOutOfOrder) {
  Instance in = three_levels_on_fast_link();
  auto blind = make_oracle({});
  EXPECT_THROW(blind->decide(state_of(in, 0)), Error);
  auto p = make_oracle({});
  p->see_future(future_of(in));
  EXPECT_LT(p->predicted_ttft_s(), 0);
  p->decide(state_of(in, 0));
  EXPECT_THROW(p->decide(state_of(in, 2)), Error);
  EXPECT_THROW(make_oracle({{"timing", "lazy"}}), Error);
  EXPECT_NE(p->name().find("oracle"), std::string::npos);
  EXPECT_TRUE(oracle_policy().reads_future);
}

}  // namespace
}  // namespace kvs::policies
