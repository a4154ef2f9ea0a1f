// Targets with sliding-window layers (codec::ModelInfo::layer_windows): what
// a request fetches and computes when some layers read only a window.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <sstream>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "sim/engine.h"
#include "sim/gpu_model.h"
#include "sim/simulation.h"
#include "tests/sim/sim_test_util.h"

namespace kvs::sim {
namespace {

using testing::base_config;
using testing::make_profile;
using testing::small_model;

// Query-key pairs counted one query at a time.
double brute_pairs(uint64_t past, uint64_t tokens, uint64_t window) {
  double pairs = 0;
  for (uint64_t i = 0; i < tokens; ++i) {
    const uint64_t pos = past + i;
    for (uint64_t k = 0; k <= pos; ++k) pairs += window == 0 || k + window > pos;
  }
  return pairs;
}

TEST(Windows, AttentionPairsCountEachQuerysWindow) {
  for (uint64_t past : {0, 1, 5, 299, 300, 1000})
    for (uint64_t tokens : {1, 7, 256})
      for (uint64_t window : {0, 1, 2, 5, 256, 300, 301, 5000})
        EXPECT_EQ(attention_pairs(past, tokens, window), brute_pairs(past, tokens, window))
            << past << " " << tokens << " " << window;
}

TEST(Windows, PrefillAndFirstTokenFollowTheWindows) {
  codec::ModelInfo full = small_model();
  codec::ModelInfo m = full;
  m.layer_windows = {0, 300, 0, 300, 0, 300, 0, 300};
  const double per_pair = 2.0 * 2.0 * m.num_attention_heads * m.kv.head_dim;
  const double dense = prefill_flops(full, 1536, 256) - per_pair * 8 * brute_pairs(1536, 256, 0);
  EXPECT_DOUBLE_EQ(prefill_flops(m, 1536, 256),
                   dense + per_pair * (4 * brute_pairs(1536, 256, 0) + 4 * brute_pairs(1536, 256, 300)));
  EXPECT_LT(prefill_flops(m, 1536, 256), prefill_flops(full, 1536, 256));
  EXPECT_DOUBLE_EQ(prefill_flops(m, 0, 256), prefill_flops(full, 0, 256));  // within every window
  // One decode step after 2048 tokens reads 2048 keys of a full layer, 299 of a windowed one.
  EXPECT_EQ(cached_tokens_read(m, 2048), 4u * 2048 + 4u * 299);
  EXPECT_EQ(cached_tokens_read(full, 2048), 8u * 2048);
  GpuSpec g;
  g.preset = "h100";
  g.efficiency = 0.5;
  const double weights = 12e6 * 2, kv_layer_token = 2.0 * 2 * 64 * 2;
  EXPECT_NEAR(ComputeModel(m, g).first_token_s(2048), (weights + kv_layer_token * (4 * 2048 + 4 * 299)) / 1.675e12,
              1e-15);
  EXPECT_NEAR(ComputeModel(full, g).first_token_s(2048), (weights + kv_layer_token * 8 * 2048) / 1.675e12, 1e-15);

  const codec::ModelInfo v01 = model_preset("mistral-7b-v0.1"), v02 = model_preset("mistral-7b");
  EXPECT_EQ(v01.layer_windows, std::vector<uint32_t>(32, 4096));
  EXPECT_FALSE(v02.has_windows());
  EXPECT_EQ(v01.kv, v02.kv);
  EXPECT_EQ(v01.parameters, v02.parameters);
  // Gemma-2-9B: config.json's shape; its parameters counted from it (tied
  // embeddings, four norms per layer); even layers windowed.
  const codec::ModelInfo gemma2 = model_preset("gemma2-9b");
  EXPECT_EQ(gemma2.kv, (codec::KVShape{42, 8, 256}));
  const uint64_t per_layer = 3584ull * (16 * 256) * 2 + 3584ull * (8 * 256) * 2 + 3ull * 3584 * 14336 + 4 * 3584;
  EXPECT_EQ(gemma2.parameters, 42 * per_layer + 256000ull * 3584 + 3584);
  ASSERT_EQ(gemma2.layer_windows.size(), 42u);
  for (uint32_t l = 0; l < 42; ++l) EXPECT_EQ(gemma2.layer_windows[l], l % 2 ? 0u : 4096u) << l;
  EXPECT_EQ(cached_tokens_read(gemma2, 32768), 21u * 32768 + 21u * 4095);
  // Gemma-3-12B's text model: the same count (q/k norms too; vocab 262,208
  // as config.json has it; 245,760 more than a count with 262,144 rows).
  const codec::ModelInfo gemma3 = model_preset("gemma3-12b");
  EXPECT_EQ(gemma3.kv, (codec::KVShape{48, 8, 256}));
  const uint64_t layer3 = 3840ull * 4096 * 2 + 3840ull * 2048 * 2 + 3ull * 3840 * 15360 + 4 * 3840 + 2 * 256;
  EXPECT_EQ(gemma3.parameters, 48 * layer3 + 262208ull * 3840 + 3840);
  for (uint32_t l = 0; l < 48; ++l) EXPECT_EQ(gemma3.layer_windows[l], l % 6 == 5 ? 0u : 1024u) << l;
  EXPECT_EQ(cached_tokens_read(gemma3, 32768), 8u * 32768 + 40u * 1023);
}

// 8 chunks of 256 tokens (the query at position 2048); 800,000 bytes per
// chunk, decoded in 8 ms; layers 1, 3, 5 and 7 see 300 tokens: from 2048
// they reach back to token 1749, in chunk 6.
struct WindowedRun {
  codec::Profile profile = make_profile(8, 256, {800'000, 400'000}, 0.008);
  SimConfig config = base_config(100, 10);
  WindowedRun(std::vector<uint32_t> windows) {
    codec::ModelInfo target = small_model();
    target.layer_windows = std::move(windows);
    config.target_model = target;
    config.policy_params["level"] = "0";
  }
};

std::map<std::string, int> event_counts(const std::string& jsonl) {
  std::map<std::string, int> kinds;
  std::istringstream in(jsonl);
  for (std::string line; std::getline(in, line);) ++kinds[nlohmann::json::parse(line).at("event").get<std::string>()];
  return kinds;
}

TEST(Windows, ChunksBeforeTheWindowCarryOnlyTheLayersThatReadThem) {
  WindowedRun s({0, 300, 0, 300, 0, 300, 0, 300});
  const auto out = simulate(s.config, s.profile);
  const auto& r = out.result.requests[0];
  ASSERT_TRUE(r.finished);
  for (uint32_t i = 0; i < 8; ++i) EXPECT_EQ(r.chunks[i].payload_bytes, i < 6 ? 400'000u : 800'000u) << i;
  EXPECT_EQ(r.payload_bytes, 6u * 400'000 + 2 * 800'000);
  EXPECT_NEAR(r.decode_total_s, 6 * 0.004 + 2 * 0.008, 1e-12);
  EXPECT_NE(out.result.window_note.find("4 of tiny's 8 layers attend within a sliding window (300 tokens)"),
            std::string::npos)
      << out.result.window_note;
  EXPECT_NE(out.result_json.find("\"window_note\""), std::string::npos);

  // Windows of 0 are full attention: byte-identical to no windows at all.
  WindowedRun none(std::vector<uint32_t>(8, 0));
  auto plain = none.config;
  plain.target_model.reset();
  const auto a = simulate(none.config, none.profile), b = simulate(plain, none.profile);
  EXPECT_EQ(a.result_json, b.result_json);
  EXPECT_EQ(a.events_jsonl, b.events_jsonl);
  EXPECT_EQ(a.result_json.find("window_note"), std::string::npos);
  // A window that reaches the first token from the query changes no byte.
  WindowedRun wide(std::vector<uint32_t>(8, 2049));
  const auto w = simulate(wide.config, wide.profile);
  EXPECT_EQ(w.result.requests[0].payload_bytes, 8u * 800'000);
  EXPECT_EQ(w.result.requests[0].ttft_s, b.result.requests[0].ttft_s);
  // From 2048, a window of 1794 reads token 255 (in chunk 0), one of 1793 does not.
  WindowedRun reaches(std::vector<uint32_t>(8, 1794)), misses(std::vector<uint32_t>(8, 1793));
  EXPECT_EQ(simulate(reaches.config, reaches.profile).result.requests[0].chunks[0].payload_bytes, 800'000u);
  const auto m = simulate(misses.config, misses.profile).result.requests[0];
  EXPECT_EQ(m.chunks[0].payload_bytes, 0u);
  EXPECT_EQ(m.chunks[1].payload_bytes, 800'000u);
}

TEST(Windows, ChunksNoLayerReadsAreNeitherFetchedNorDecoded) {
  WindowedRun s(std::vector<uint32_t>(8, 300));
  const auto out = simulate(s.config, s.profile);
  const auto& r = out.result.requests[0];
  ASSERT_TRUE(r.finished);
  for (uint32_t i = 0; i < 6; ++i) {
    EXPECT_EQ(r.chunks[i].payload_bytes, 0u);
    EXPECT_EQ(r.chunks[i].gpu_end_s, r.chunks[i].gpu_start_s);
  }
  EXPECT_EQ(r.payload_bytes, 2u * 800'000);
  EXPECT_EQ(r.wire_bytes, 2u * 800'000 + 2 * (16 + 16));  // two requests, two response headers
  const auto kinds = event_counts(out.events_jsonl);
  EXPECT_EQ(kinds.at("decision"), 8);
  EXPECT_EQ(kinds.at("last_byte"), 2);
  WindowedRun full(std::vector<uint32_t>(8, 0));
  EXPECT_LT(r.ttft_s, simulate(full.config, full.profile).result.requests[0].ttft_s);
}

// Chunks 6 and 7 recomputed, the others fetched at level 0; records what
// recomputing each chunk would fetch first (StreamState::recompute_fetch_bytes).
struct RecomputeLast2 : policies::Policy {
  std::vector<uint64_t>* fetch_bytes;
  explicit RecomputeLast2(std::vector<uint64_t>* out) : fetch_bytes(out) {}
  std::string name() const override { return "recompute-last-2"; }
  policies::Action decide(const policies::StreamState& s) override {
    fetch_bytes->push_back(s.recompute_fetch_bytes);
    return {s.next_chunk >= 6 ? policies::Action::kRecompute : 0, "test"};
  }
};

SimHooks recompute_last_2(std::vector<uint64_t>* seen) {
  SimHooks hooks;
  hooks.make_policy = [seen](uint32_t) { return std::make_unique<RecomputeLast2>(seen); };
  return hooks;
}

// Recomputing chunk 6 (tokens 1536..1791) runs its windowed layers over the
// 299 tokens before it, in chunks 4 and 5, whose windowed layers the query
// does not read and were left out: they are fetched first. Chunk 7 needs
// chunks 5 (fetched by then) and 6 (recomputed): nothing more.
TEST(Windows, ARecomputeFetchesTheLeftOutLayersItsWindowReads) {
  WindowedRun s({0, 300, 0, 300, 0, 300, 0, 300});
  std::vector<uint64_t> seen;
  const SimHooks hooks = recompute_last_2(&seen);
  const auto out = simulate(s.config, s.profile, hooks);
  const auto& r = out.result.requests[0];
  ASSERT_TRUE(r.finished);
  // Policies see the cost: recomputing chunk 1 would need chunk 0's 4 left-out
  // layers (tokens 0..255 are within 300 of 256), chunk 6 those of chunks 4 and 5.
  ASSERT_EQ(seen.size(), 8u);
  EXPECT_EQ(seen, (std::vector<uint64_t>{0, 400'000, 800'000, 800'000, 800'000, 800'000, 800'000, 0}));
  EXPECT_EQ(r.chunks[6].level, -1);
  EXPECT_EQ(r.chunks[6].payload_bytes, 2u * 4 * 100'000);  // chunks 4 and 5, 4 layers each
  EXPECT_EQ(r.chunks[7].payload_bytes, 0u);
  EXPECT_EQ(r.payload_bytes, 6u * 400'000 + 800'000);
  EXPECT_EQ(r.wire_bytes, 6u * 400'000 + 800'000 + 7 * (16 + 16) + 8);  // the part request carries its size
  EXPECT_GE(r.chunks[6].gpu_start_s, r.chunks[6].last_byte_s);
  EXPECT_EQ(r.recomputed_chunks, 2u);
  const ComputeModel compute(*s.config.target_model, s.config.gpu);
  const double window_decode = 8 * 0.001;
  EXPECT_NEAR(r.chunks[6].gpu_end_s - r.chunks[6].gpu_start_s, compute.recompute_s(1536, 256) + window_decode, 1e-12);
  EXPECT_NEAR(r.recompute_total_s, compute.recompute_s(1536, 256) + compute.recompute_s(1792, 256) + window_decode,
              1e-12);
  const auto kinds = event_counts(out.events_jsonl);
  EXPECT_EQ(kinds.at("window_fetch"), 1);
  EXPECT_EQ(kinds.at("last_byte"), 7);
  EXPECT_NE(out.events_jsonl.find("\"event\":\"window_fetch\",\"chunk\":6,\"layer_chunks\":8,\"bytes\":800000"),
            std::string::npos);
  // The network part of TTFT ends with the last byte of the window fetch.
  EXPECT_NEAR(r.breakdown.network_s, r.chunks[6].last_byte_s - r.start_s, 1e-12);

  // The models without packets fetch the same bytes.
  for (const char* network : {"fluid", "pensieve"}) {
    auto config = s.config;
    config.network = network;
    const auto m = simulate(config, s.profile, hooks).result.requests[0];
    EXPECT_EQ(m.chunks[6].payload_bytes, 800'000u) << network;
    EXPECT_EQ(m.payload_bytes, r.payload_bytes) << network;
  }

  // Without windows the same decisions fetch nothing for the recomputes.
  WindowedRun full(std::vector<uint32_t>(8, 0));
  const auto f = simulate(full.config, full.profile, hooks);
  EXPECT_EQ(f.result.requests[0].payload_bytes, 6u * 800'000);
  EXPECT_EQ(f.result.requests[0].chunks[6].payload_bytes, 0u);
  EXPECT_EQ(event_counts(f.events_jsonl).count("window_fetch"), 0u);
}

// A profile that records its codec's layer split (cachegen's early layers
// weigh more) sets what a chunk carries, and what a recompute fetches.
TEST(Windows, TheProfilesLayerSharesSetWhatAChunkCarries) {
  WindowedRun s({0, 300, 0, 300, 0, 300, 0, 300});
  const std::vector<double> shares = {0.2, 0.05, 0.2, 0.05, 0.2, 0.05, 0.2, 0.05};  // full layers: 80 %
  for (auto& ch : s.profile.codecs[0].contexts[0].chunks) ch.levels[0].layer_shares = shares;
  std::vector<uint64_t> seen;
  SimHooks hooks;
  hooks.make_policy = [&](uint32_t) { return std::make_unique<RecomputeLast2>(&seen); };
  const auto r = simulate(s.config, s.profile, hooks).result.requests[0];
  ASSERT_TRUE(r.finished);
  for (uint32_t i = 0; i < 6; ++i) EXPECT_EQ(r.chunks[i].payload_bytes, 640'000u) << i;
  EXPECT_EQ(r.chunks[6].payload_bytes, 2u * 4 * 40'000);  // chunks 4 and 5: their windowed layers, 5 % each
  EXPECT_EQ(seen[6], 320'000u);
  // Another depth: the target's layer l takes the profiled layer at its depth
  // (l x 8 / 16); its 8 full layers then hold half of each chunk.
  codec::ModelInfo deep = small_model();
  deep.kv.layers = 16;
  deep.layer_windows.clear();
  for (uint32_t l = 0; l < 16; ++l) deep.layer_windows.push_back(l % 2 ? 300 : 0);
  s.config.target_model = deep;
  s.config.policy = "fixed";
  const auto d = simulate(s.config, s.profile).result.requests[0];
  EXPECT_EQ(d.chunks[0].payload_bytes, 800'000u);  // 1,600,000 bytes at 16 layers, half sent
  EXPECT_EQ(d.chunks[7].payload_bytes, 1'600'000u);
}

// Recomputing everything needs nothing from the network, windows or not.
TEST(Windows, RecomputingEverythingFetchesNothing) {
  WindowedRun s({0, 300, 0, 300, 0, 300, 0, 300});
  s.config.policy = "recompute";
  s.config.policy_params.clear();
  const auto out = simulate(s.config, s.profile);
  const auto& r = out.result.requests[0];
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.payload_bytes, 0u);
  EXPECT_EQ(r.recomputed_chunks, 8u);
}

// The Cake-style schedule: chunks fetched from the back carry only the layers
// the query reads; those recomputed from the front need nothing fetched.
TEST(Windows, LoadBackComputeFrontFetchesOnlyWhatTheQueryReads) {
  WindowedRun s({0, 300, 0, 300, 0, 300, 0, 300});
  s.config.policy = "hybrid";
  s.config.gpu.peak_flops = 2e11;  // a slow GPU: recomputing a chunk takes about as long as fetching two
  const auto out = simulate(s.config, s.profile);
  const auto& r = out.result.requests[0];
  ASSERT_TRUE(r.finished);
  uint64_t expected = 0;
  uint32_t fetched = 0;
  for (uint32_t i = 0; i < 8; ++i) {
    if (r.chunks[i].level < 0) {
      EXPECT_EQ(r.chunks[i].payload_bytes, 0u);
      continue;
    }
    ++fetched;
    EXPECT_EQ(r.chunks[i].payload_bytes, i < 6 ? 400'000u : 800'000u);
    expected += r.chunks[i].payload_bytes;
  }
  EXPECT_GE(fetched, 2u);
  EXPECT_LT(fetched, 8u);
  EXPECT_EQ(r.payload_bytes, expected);
}

// Takes the given action for each chunk; records what the simulator says a
// recompute of each would fetch first.
struct ScriptedPolicy : policies::Policy {
  std::vector<int> actions;
  std::vector<uint64_t>* fetch_bytes;
  ScriptedPolicy(std::vector<int> a, std::vector<uint64_t>* out) : actions(std::move(a)), fetch_bytes(out) {}
  std::string name() const override { return "scripted"; }
  policies::Action decide(const policies::StreamState& s) override {
    fetch_bytes->push_back(s.recompute_fetch_bytes);
    return {actions.at(s.next_chunk), "script"};
  }
};

// The simulator's window fetches (ChunkInfo::window_reads, policies::
// recompute_fetch: chunk by chunk, back to the nearest recompute) against a
// client keeping each chunk's layers one by one (the layers it holds, every
// layer of a recomputed chunk, marking what each window fetch brings), over
// random windows, chunk sizes and actions: the same bytes, the same quality.
TEST(Windows, RecomputeFetchesMatchLayerByLayerBookkeeping) {
  std::mt19937 rng(5);
  int fetches = 0;
  for (int trial = 0; trial < 60; ++trial) {
    const uint32_t n = 3 + rng() % 8, tokens = 64 + 32 * (rng() % 6), T = n * tokens;
    const std::vector<uint64_t> level_bytes = {800'000, 400'000, 160'000};
    std::vector<uint32_t> windows(8);
    for (uint32_t& w : windows) {
      const uint32_t choices[] = {0, 50, tokens / 2, tokens + 7, 2 * tokens + 3, 5 * tokens};
      w = choices[rng() % 6];
    }
    std::vector<int> actions(n);
    for (int& a : actions) a = int(rng() % 4) - 1;  // recompute or a level
    WindowedRun run(windows);
    run.profile = make_profile(n, tokens, level_bytes, 0.001);
    run.config.network = "pensieve";
    std::vector<uint64_t> seen;
    SimHooks hooks;
    hooks.make_policy = [&](uint32_t) { return std::make_unique<ScriptedPolicy>(actions, &seen); };
    const auto r = simulate(run.config, run.profile, hooks).result.requests[0];
    ASSERT_TRUE(r.finished);
    // The bookkeeping: chunk j's layer l is in when the query reads it (and
    // it was fetched), when j was recomputed, or once a window fetch brought it.
    auto reaches = [](uint32_t w, uint64_t end, uint64_t reader) { return w == 0 || end + w > reader + 1; };
    std::vector<std::vector<bool>> in(n, std::vector<bool>(8));
    for (uint32_t j = 0; j < n; ++j)
      for (uint32_t l = 0; l < 8; ++l) in[j][l] = actions[j] < 0 || reaches(windows[l], uint64_t(j + 1) * tokens, T);
    for (uint32_t i = 0; i < n; ++i) {
      double bytes = 0, quality = 0;
      for (uint32_t j = i; j-- > 0;) {
        bool reached = false, brought = false;
        for (uint32_t l = 0; l < 8; ++l) {
          if (windows[l] == 0 || !reaches(windows[l], uint64_t(j + 1) * tokens, uint64_t(i) * tokens)) continue;
          reached = true;
          if (in[j][l] || actions[i] >= 0) continue;
          bytes += double(level_bytes[size_t(actions[j])]) / 8;
          in[j][l] = brought = true;
        }
        bool read = false;  // by the query: then its cost is its own
        for (uint32_t l = 0; l < 8; ++l) read = read || reaches(windows[l], uint64_t(j + 1) * tokens, T);
        if (brought && !read) quality += 0.001 * (actions[j] + 1);
        if (!reached) break;
      }
      const std::string what = fmt::format("trial {} chunk {} of {}", trial, i, n);
      if (actions[i] >= 0) continue;
      EXPECT_NEAR(double(r.chunks[i].payload_bytes), bytes, 1.0) << what;
      EXPECT_NEAR(double(seen[i]), bytes, 1.0) << what;  // what the policy was shown
      EXPECT_NEAR(r.chunks[i].kl_nats, quality, 1e-12) << what;
      fetches += bytes > 0;
    }
  }
  EXPECT_GT(fetches, 30);
}

// A chunk no layer of the query reads costs nothing at any level, until a
// recompute reads its left-out layers: the recomputed chunk then takes on its
// cost at the level it was taken at, in both measures.
TEST(Windows, UnreadChunksCostQualityOnlyThroughARecomputeThatReadsThem) {
  WindowedRun s(std::vector<uint32_t>(8, 300));  // chunks 0-5: no layer reads them
  std::vector<uint64_t> seen;
  const SimHooks hooks = recompute_last_2(&seen);
  const auto out = simulate(s.config, s.profile, hooks);
  const auto& r = out.result.requests[0];
  ASSERT_TRUE(r.finished);
  for (uint32_t i = 0; i < 6; ++i) {
    EXPECT_EQ(r.chunks[i].quality_cost, 0) << i;
    EXPECT_EQ(r.chunks[i].kl_nats, 0) << i;
    EXPECT_EQ(r.chunks[i].loss_increase, 0) << i;
  }
  // Chunk 6's recompute reads chunks 4 and 5 (every layer: 2 x 800,000 bytes), fetched at L0 (0.001 each).
  EXPECT_EQ(r.chunks[6].payload_bytes, 1'600'000u);
  EXPECT_NEAR(r.chunks[6].quality_cost, 0.002, 1e-15);
  EXPECT_NEAR(r.chunks[6].kl_nats, 0.002, 1e-15);
  EXPECT_NEAR(r.chunks[6].loss_increase, 0.002, 1e-15);
  EXPECT_EQ(r.chunks[7].quality_cost, 0);  // after a recompute: nothing more to read
  EXPECT_NEAR(r.quality_cost, 0.002, 1e-15);
  EXPECT_NEAR(r.quality_kl_nats, 0.002, 1e-15);
  EXPECT_NEAR(r.quality_loss_increase, 0.002, 1e-15);
  // Fetching the read chunks instead: their own costs, nothing for the unread ones.
  s.config.policy = "fixed";
  const auto fetched = simulate(s.config, s.profile).result.requests[0];
  EXPECT_NEAR(fetched.quality_kl_nats, 0.002, 1e-15);
  EXPECT_EQ(fetched.chunks[0].kl_nats, 0);
  EXPECT_NEAR(fetched.chunks[7].kl_nats, 0.001, 1e-15);
}

// The planners count the fetch a recompute needs after fetched chunks, which
// depends on the levels before it (policies::recompute_fetch, ChunkInfo::
// window_reads): the oracle's own prediction is the simulated TTFT on the
// model without TCP dynamics (pensieve) whatever it mixes, and no policy that
// meets the SLO has a better quality than its plan.
TEST(Windows, TheOraclePlansTheFetchesItsRecomputesNeed) {
  int window_fetches = 0, runs = 0, met = 0;
  for (const auto& windows : {std::vector<uint32_t>(8, 300), std::vector<uint32_t>{0, 300, 0, 300, 0, 300, 0, 300},
                              std::vector<uint32_t>(8, 700)})
    for (const double rate_mbps : {20.0, 100.0, 400.0})
      for (const double slo_share : {0.5, 0.6, 0.7, 0.8, 0.9, 1.1}) {  // of the TTFT of recomputing everything
        WindowedRun s(windows);
        s.config.network = "pensieve";
        s.config.link.rate_mbps = rate_mbps;
        s.config.gpu.peak_flops = 2e11;  // ~0.07 s per chunk's recompute
        s.config.policy = "recompute";
        s.config.policy_params.clear();
        const double slo = s.config.slo_s = slo_share * simulate(s.config, s.profile).result.requests[0].ttft_s;
        s.config.policy = "oracle";
        s.config.policy_params.clear();
        const auto oracle = simulate(s.config, s.profile);
        const auto& o = oracle.result.requests[0];
        ASSERT_TRUE(o.finished);
        const std::string what = fmt::format("windows {} rate {} slo {}", windows[1], rate_mbps, slo);
        EXPECT_NEAR(o.predicted_ttft_s, o.ttft_s, 1e-6) << what;
        window_fetches += event_counts(oracle.events_jsonl)["window_fetch"];
        for (const char* policy : {"mpc", "robust-mpc", "cachegen", "rate", "bola", "fixed", "recompute"}) {
          auto c = s.config;
          c.policy = policy;
          if (c.policy == "fixed") c.policy_params["level"] = "1";
          const auto r = simulate(c, s.profile).result.requests[0];
          ASSERT_TRUE(r.finished) << policy;
          ++runs;
          if (!r.slo_met) continue;
          ++met;
          EXPECT_GE(r.quality_cost, o.quality_cost - 1e-12) << policy << " " << what;
        }
      }
  EXPECT_GE(window_fetches, 5);  // plans that recompute after fetching (6 when written)
  EXPECT_GT(met, runs / 4);
  EXPECT_LT(met, runs);
}

}  // namespace
}  // namespace kvs::sim
