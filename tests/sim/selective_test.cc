// Selective loading in the simulator (policy `selective`,
// Schedule::kSelectiveLayers): a hand-computed timing on the pensieve link,
// the byte accounting, what the per-layer round trips cost against the
// up-front variant and the full fetch on ns-3, ns-3 against the fluid model,
// and the errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include "base/error.h"
#include "sim/gpu_model.h"
#include "sim/simulation.h"
#include "tests/sim/sim_test_util.h"

namespace kvs::sim {
namespace {

using testing::base_config;
using testing::make_profile;

// One context of one chunk of 1,000 tokens (8 MB at level 0, 4 MB at level 1):
// 1 MB per layer of the 8-layer model at level 0.
codec::Profile one_chunk() { return make_profile(1, 1000, {8'000'000, 4'000'000}, 0.0); }

SimConfig selective_config(double rate_mbps, double rtt_ms, const std::string& round_trips = "per-layer") {
  SimConfig c = base_config(rate_mbps, rtt_ms);
  c.policy = "selective";
  c.policy_params = {{"share", "0.1"}, {"full_front_layers", "2"}, {"partial_ratio", "0.25"},
                     {"round_trips", round_trips}};
  return c;
}

// Pensieve's link: no handshake, a request reaches the server at once, the
// server's responses cross back to back at 0.95 of the rate, each arrives one
// RTT after its last byte left. The schedule by hand: partial keys, layers 0
// and 1 at t = 0; selected layer l >= 2 once the partial keys are in and
// layers 0..l-2 are computed; layer l computes for first_token_s / 8 after its
// bytes and layer l-1.
TEST(SelectiveSim, MatchesAHandComputedScheduleOnThePensieveLink) {
  const auto profile = one_chunk();
  for (const std::string rt : {"per-layer", "up-front"}) {
    SimConfig c = selective_config(100, 100, rt);
    c.network = "pensieve";
    const auto out = simulate(c, profile);
    const auto& r = out.result.requests[0];
    ASSERT_TRUE(r.finished) << out.events_jsonl;

    const double rate = 100e6 * 0.95, rtt = 0.1, header = 0;  // pensieve models no headers
    const double f = ComputeModel(profile.model, c.gpu).first_token_s(1000) / 8;
    double link_free = 0;
    auto send = [&](double t, double payload) {
      link_free = std::max(t, link_free) + 8 * (header + payload) / rate;
      return link_free + rtt;
    };
    const double keys = 6.0 * 1000 * 2 * 16 * 2;  // 6 selected layers x tokens x KV heads x 16 channels x fp16
    const double keys_in = send(0, keys);
    std::vector<double> arrived(8), computed(8);
    arrived[0] = send(0, 1e6);
    arrived[1] = send(0, 1e6);
    computed[0] = arrived[0] + f;
    computed[1] = std::max(arrived[1], computed[0]) + f;
    double last_request = 0;
    for (size_t l = 2; l < 8; ++l) {
      const double ready = rt == "per-layer" ? std::max(keys_in, computed[l - 2]) : keys_in;
      last_request = std::max(last_request, ready);  // requests go out in layer order
      arrived[l] = send(last_request, 1e5);
      computed[l] = std::max(arrived[l], computed[l - 1]) + f;
    }
    EXPECT_NEAR(r.ttft_s, computed[7], 1e-7) << rt;
    EXPECT_NEAR(r.breakdown.network_s, arrived[7], 1e-7) << rt;
    // The rest (0.9 MB of each selected layer) follows the last request.
    EXPECT_EQ(r.selective.rest_bytes, 6u * 900'000);
    EXPECT_NEAR(r.selective.rest_last_byte_s, send(last_request, 6 * 9e5), 1e-7) << rt;
    EXPECT_EQ(r.selective.waits > 0, rt == "per-layer") << rt;
  }
}

TEST(SelectiveSim, AccountsEveryByteAndNamesWhatItDid) {
  const auto profile = one_chunk();
  SimConfig c = selective_config(1000, 20);
  c.policy_params["level"] = "1";
  const auto out = simulate(c, profile);
  const auto& r = out.result.requests[0];
  ASSERT_TRUE(r.finished);
  const auto& s = r.selective;
  EXPECT_TRUE(s.used);
  EXPECT_EQ(s.selected_layers, 6u);
  EXPECT_EQ(s.partial_key_bytes, 6u * 1000 * 2 * 16 * 2);
  // Level 1: 4 MB, 0.5 MB per layer; layers 0-1 whole, 10 % of the others.
  EXPECT_EQ(s.before_first_token_bytes, s.partial_key_bytes + 2 * 500'000 + 6 * 50'000);
  EXPECT_EQ(s.rest_bytes, 6u * 450'000);
  EXPECT_NEAR(s.share_before_first_token, 1.3e6 / 4e6, 1e-12);
  EXPECT_EQ(r.payload_bytes, s.partial_key_bytes + 4'000'000);
  EXPECT_GE(s.rest_last_byte_s, r.first_token_s);
  EXPECT_EQ(s.kl_nats, -1);  // no profile: not measured
  EXPECT_EQ(r.chunks[0].level, 1);
  EXPECT_EQ(out.result.schedule, "selective-layers");
  EXPECT_EQ(out.result.policy, "selective(level=1,share=0.1,full_front_layers=2,round_trips=per-layer)");
  // The outputs say what happened.
  for (const char* e : {"\"selective_plan\"", "\"part\":\"partial_keys\"", "\"part\":\"rest\"", "\"layer_end\"",
                        "\"first_token\""})
    EXPECT_NE(out.events_jsonl.find(e), std::string::npos) << e;
  size_t layer_requests = 0, waited = 0;
  for (size_t at = 0, end; at < out.events_jsonl.size(); at = end + 1) {
    end = out.events_jsonl.find('\n', at);
    const std::string line = out.events_jsonl.substr(at, end - at);
    if (line.find("\"selective_request\"") == std::string::npos || line.find("\"part\":\"layer\"") == std::string::npos)
      continue;
    ++layer_requests;
    waited += line.find("\"waited\":true") != std::string::npos;
  }
  EXPECT_EQ(layer_requests, 8u);
  EXPECT_EQ(waited, r.selective.waits);
  EXPECT_NE(out.result_json.find("\"selective\": {"), std::string::npos);
  EXPECT_NE(out.summary.find("selection quality: not measured"), std::string::npos) << out.summary;
  // Other policies' outputs carry none of it.
  SimConfig fixed = base_config(1000, 20);
  const auto plain = simulate(fixed, profile);
  EXPECT_EQ(plain.result_json.find("selective"), std::string::npos);
  EXPECT_EQ(plain.events_jsonl.find("selective"), std::string::npos);
}

// A profile that splits its codec's bytes over layers (layer_shares, as
// cachegen's) sets each layer's part.
TEST(SelectiveSim, TheProfilesLayerSharesSetEachLayersBytes) {
  auto profile = one_chunk();
  profile.codecs[0].contexts[0].chunks[0].levels[1].layer_shares = {0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05};
  SimConfig c = selective_config(1000, 20);
  c.policy_params["level"] = "1";
  const auto r = simulate(c, profile).result.requests[0];
  ASSERT_TRUE(r.finished);
  const auto& s = r.selective;
  // Level 1: 4 MB; layers 0-1 whole (1.2 + 0.8 MB), 10 % of the others (2 MB); evenly it would be
  // 2 x 0.5 MB and 10 % of 3 MB.
  EXPECT_EQ(s.before_first_token_bytes, s.partial_key_bytes + 1'200'000 + 800'000 + 200'000);
  EXPECT_EQ(s.rest_bytes, 1'800'000u);
  EXPECT_EQ(r.payload_bytes, s.partial_key_bytes + 4'000'000);
}

TEST(SelectiveSim, EveryLayerInFullFetchesWhatTheFixedPolicyFetches) {
  const auto profile = make_profile(4, 256, {400'000, 100'000}, 0.001);
  SimConfig c = selective_config(200, 20);
  c.policy_params["full_front_layers"] = "8";
  c.in_flight = 4;  // the fixed policy's requests pipelined too, as the selective client's are
  const auto sel = simulate(c, profile);
  SimConfig f = base_config(200, 20);
  f.in_flight = 4;
  const auto fixed = simulate(f, profile);
  const auto& a = sel.result.requests[0];
  const auto& b = fixed.result.requests[0];
  ASSERT_TRUE(a.finished && b.finished);
  EXPECT_EQ(a.selective.partial_key_bytes, 0u);
  EXPECT_EQ(a.selective.rest_bytes, 0u);
  EXPECT_EQ(a.payload_bytes, b.payload_bytes);
  EXPECT_EQ(a.decode_total_s, b.decode_total_s);
  EXPECT_NEAR(a.quality_kl_nats, b.quality_kl_nats, 1e-15);
  // The same bytes on one connection: within a few per cent of each other.
  EXPECT_NEAR(a.ttft_s, b.ttft_s, 0.05 * b.ttft_s);
}

// On ns-3 with a long RTT and a fast link, InfiniGen's layer-by-layer
// speculation waits a round trip per two layers; up-front speculation one.
TEST(SelectiveSim, PerLayerRoundTripsCostRoundTripsOnNs3) {
  const auto profile = one_chunk();
  const double rtt = 0.2;
  const auto per_layer = simulate(selective_config(10000, 1000 * rtt), profile).result.requests[0];
  const auto up_front = simulate(selective_config(10000, 1000 * rtt, "up-front"), profile).result.requests[0];
  const auto full = simulate(base_config(10000, 1000 * rtt), profile).result.requests[0];
  ASSERT_TRUE(per_layer.finished && up_front.finished && full.finished);
  EXPECT_EQ(up_front.selective.waits, 0u);
  EXPECT_EQ(per_layer.selective.waits, 6u);
  // Handshake, then keys + layers 0-1, then three rounds for layers 2..7.
  EXPECT_GT(per_layer.ttft_s, up_front.ttft_s + 1.9 * rtt);
  EXPECT_GT(per_layer.ttft_s, 4.9 * rtt);
  // Fewer bytes, one more round trip: at 10 Gbit/s and 200 ms, slow start
  // makes the 8 MB of the full fetch cost more rounds than the round trip.
  EXPECT_LT(up_front.ttft_s, full.ttft_s + 1.2 * rtt);
}

TEST(SelectiveSim, FluidModelAgreesWithNs3) {
  const auto profile = make_profile(8, 512, {4'000'000}, 0.0);
  SimConfig c = selective_config(100, 40);
  const auto ns3 = simulate(c, profile).result.requests[0];
  c.network = "fluid";
  const auto fluid = simulate(c, profile).result.requests[0];
  ASSERT_TRUE(ns3.finished && fluid.finished);
  EXPECT_EQ(ns3.payload_bytes, fluid.payload_bytes);
  EXPECT_NEAR(fluid.ttft_s, ns3.ttft_s, 0.03 * ns3.ttft_s);
  EXPECT_NEAR(fluid.selective.rest_last_byte_s, ns3.selective.rest_last_byte_s, 0.03 * ns3.selective.rest_last_byte_s);
}

TEST(SelectiveSim, ConcurrentRequestsEachFinishWithTheirRest) {
  const auto profile = make_profile(2, 512, {2'000'000}, 0.0, 2);
  SimConfig c = selective_config(100, 20);
  c.arrivals.mode = "schedule";
  c.arrivals.times_s = {0, 0.05, 0.1};
  const auto out = simulate(c, profile);
  ASSERT_EQ(out.result.requests.size(), 3u);
  for (const auto& r : out.result.requests) {
    EXPECT_TRUE(r.finished);
    EXPECT_GE(r.selective.rest_last_byte_s, r.first_token_s);
  }
  EXPECT_EQ(unfinished_reason(out.result, c.max_sim_s), "");
}

// A selective profile of the 8-layer test model (2 KV heads of 64, partial
// ratio 0.25) whose infinigen setting fetches 10 % of layers 2-7, with
// `windows` as model.layer_windows ("" : the field absent).
std::string write_selective_profile(const std::string& name, const std::string& windows) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("kvs_sim_selective_" + std::to_string(::getpid()) + "_" + name))
                               .string();
  std::ofstream(path) << R"({"format": "kvstream-selective", "version": 1,
 "model": {"name": "tiny", "layers": 8, "kv_heads": 2, "head_dim": 64)"
                      << (windows.empty() ? "" : R"(, "layer_windows": )" + windows) << R"(},
 "options": {"ratio": 0.25, "full_front_layers": 2, "full_last_layer": false, "greedy_tokens": 8},
 "contexts": [{"id": "a", "tokens": 1000}],
 "settings": [{"method": "infinigen", "budget": 0.1, "alpha": 4,
   "fraction_fetched_per_layer": [1, 1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
   "kl_divergence": 0.01, "loss_increase": 0.01, "greedy_agreement": 0.5, "task_accuracy": 0}]})";
  return path;
}

// Sliding-window layers (model.layer_windows): the first token on a layer
// with a window of 100 reads its last 99 context tokens, so that layer's
// share, and the partial keys, are of 99 tokens, not the context's 1,000.
TEST(SelectiveSim, SlidingWindowLayersFetchOnlyTheirWindowBeforeTheFirstToken) {
  const auto profile = one_chunk();
  auto run = [&](const std::string& windows, std::vector<uint32_t> target_windows = {}) {
    const std::string path = write_selective_profile(windows.empty() ? "full.json" : "windowed.json", windows);
    SimConfig c = base_config(1000, 20);
    c.policy = "selective";
    c.policy_params = {{"profile", path}, {"budget", "0.1"}, {"alpha", "4"}};
    if (!target_windows.empty()) {
      c.target_model = profile.model;
      c.target_model->layer_windows = std::move(target_windows);
    }
    const auto out = simulate(c, profile);
    std::filesystem::remove(path);
    const auto& r = out.result.requests[0];
    EXPECT_TRUE(r.finished) << out.events_jsonl;
    return r;
  };
  const auto full = run("");
  const auto windowed = run("[100, 100, 100, 100, 100, 100, 100, 100]");
  // Level 0: 1 MB per layer; 6 selected layers x tokens x 2 KV heads x 16 channels x fp16.
  EXPECT_EQ(full.selective.partial_key_bytes, 6u * 1000 * 2 * 16 * 2);
  EXPECT_EQ(full.selective.before_first_token_bytes, full.selective.partial_key_bytes + 2 * 1'000'000 + 6 * 100'000);
  EXPECT_EQ(windowed.selective.partial_key_bytes, 6u * 99 * 2 * 16 * 2);
  EXPECT_EQ(windowed.selective.before_first_token_bytes,
            windowed.selective.partial_key_bytes + 2 * 99'000 + 6 * 9'900);
  // The whole cache still arrives: the rest follows the first token.
  EXPECT_EQ(windowed.payload_bytes, windowed.selective.partial_key_bytes + 8'000'000);
  EXPECT_LT(windowed.ttft_s, full.ttft_s);
  // A profile without windows for a target with them (a windowed preset): the target's own.
  const auto target_windowed = run("", std::vector<uint32_t>(8, 100));
  EXPECT_EQ(target_windowed.selective.partial_key_bytes, windowed.selective.partial_key_bytes);
  EXPECT_EQ(target_windowed.selective.before_first_token_bytes, windowed.selective.before_first_token_bytes);
  EXPECT_EQ(target_windowed.payload_bytes, windowed.payload_bytes);
}

TEST(SelectiveSim, ALayerZeroThatIsNotFullIsAnError) {
  SimConfig c = selective_config(100, 20);
  c.policy_params["full_front_layers"] = "0";
  try {
    simulate(c, one_chunk());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 0 must be fetched in full"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kvs::sim
