// What policies see and how the simulator carries out their schedules: the
// StreamState of every decision, the Cake-style load-back/compute-front
// schedule, and the future handed to oracles.
#include <gtest/gtest.h>

#include <algorithm>

#include "sim/gpu_model.h"
#include "sim/simulation.h"
#include "tests/sim/sim_test_util.h"

namespace kvs::sim {
namespace {

using testing::base_config;
using testing::make_profile;

// Records every state; fetches `level` (the hybrid schedule when asked).
class Recorder : public policies::Policy {
 public:
  Recorder(std::vector<policies::StreamState>* out, int level, bool hybrid) : out_(out), level_(level), hybrid_(hybrid) {}
  std::string name() const override { return "recorder"; }
  policies::Schedule schedule() const override {
    return hybrid_ ? policies::Schedule::kLoadBackComputeFront : policies::Schedule::kInOrder;
  }
  policies::Action decide(const policies::StreamState& s) override {
    // The chunk table is the simulator's, valid during the call.
    EXPECT_NE(s.chunks, nullptr);
    EXPECT_EQ(s.chunks->size(), s.total_chunks);
    out_->push_back(s);
    out_->back().chunks = nullptr;
    return {level_, "test"};
  }

 private:
  std::vector<policies::StreamState>* out_;
  int level_;
  bool hybrid_;
};

SimHooks recording(std::vector<policies::StreamState>* states, int level, bool hybrid = false) {
  SimHooks hooks;
  hooks.make_policy = [=](uint32_t) { return std::make_unique<Recorder>(states, level, hybrid); };
  return hooks;
}

TEST(StreamState, CarriesTheHistoryAndTheGpuFigures) {
  const auto profile = make_profile(5, 256, {300'000, 100'000}, 0.004);
  auto config = base_config(50, 10);
  std::vector<policies::StreamState> states;
  const auto out = simulate(config, profile, recording(&states, 1));
  const auto& r = out.result.requests[0];
  ASSERT_TRUE(r.finished);
  ASSERT_EQ(states.size(), 5u);
  for (uint32_t i = 0; i < 5; ++i) {
    const auto& s = states[i];
    EXPECT_EQ(s.next_chunk, i);
    EXPECT_EQ(s.levels, 2u);
    EXPECT_NEAR(s.first_token_s, r.breakdown.first_token_s, 1e-12);
    // Every earlier decision, with the arrival of its chunk.
    ASSERT_EQ(s.decisions.size(), i);
    for (uint32_t j = 0; j < i; ++j) {
      EXPECT_EQ(s.decisions[j].chunk, j);
      EXPECT_EQ(s.decisions[j].level, 1);
      EXPECT_NEAR(s.decisions[j].arrived_s, r.chunks[j].last_byte_s, 1e-12);
      EXPECT_LE(s.decisions[j].arrived_s, s.now_s);
    }
    // The GPU decodes the previous chunk for 4 ms after it arrived: still busy at this decision.
    if (i > 0) {
      EXPECT_NEAR(s.gpu_queued_s(), 0.004, 1e-9);
    }
  }
}

// The chunks of `make_profile`, timed: compute times from a GPU slow enough
// that one chunk's recompute and one chunk's transfer are comparable.
struct HybridCase {
  codec::Profile profile = make_profile(16, 256, {400'000}, 0.0);
  SimConfig config = base_config(100, 4);
  HybridCase() { config.gpu.peak_flops = 2 * 12e6 * 256 / 0.5 / 0.045; }  // ~45 ms per chunk at efficiency 0.5
};

// Recomputes are decided back to back at one instant (they wait for no
// response); each later decision must see the recomputes decided before it
// queued on the GPU, or a policy predicts its TTFT from an idle GPU.
TEST(StreamState, SeesRecomputesDecidedAtTheSameInstantQueued) {
  HybridCase hc;  // a compute model of ~45 ms per chunk
  std::vector<policies::StreamState> states;
  const auto out = simulate(hc.config, hc.profile, recording(&states, policies::Action::kRecompute));
  const auto& r = out.result.requests[0];
  ASSERT_TRUE(r.finished);
  ASSERT_EQ(states.size(), 16u);
  for (uint32_t i = 1; i < 16; ++i) {
    EXPECT_EQ(states[i].now_s, states[0].now_s) << i;
    // Chunks 0..i-1 are on the GPU, in order, from the first decision on.
    EXPECT_NEAR(states[i].gpu_busy_until_s, r.chunks[i - 1].gpu_end_s, 1e-12) << i;
    EXPECT_GT(states[i].gpu_busy_until_s, states[i - 1].gpu_busy_until_s) << i;
  }
}

TEST(HybridSchedule, MeetsWhereComputeOfTheFrontEqualsTransferOfTheBack) {
  HybridCase hc;
  std::vector<policies::StreamState> states;
  const auto out = simulate(hc.config, hc.profile, recording(&states, 0, /*hybrid=*/true));
  const auto& r = out.result.requests[0];
  ASSERT_TRUE(r.finished);
  // The policy is asked about fetched chunks only, from the last backward.
  ASSERT_FALSE(states.empty());
  for (size_t i = 0; i < states.size(); ++i) EXPECT_EQ(states[i].next_chunk, 15 - i);
  // A prefix recomputed, a suffix fetched, nothing both or neither.
  uint32_t front = 0;
  while (front < 16 && r.chunks[front].level < 0) ++front;
  for (uint32_t i = front; i < 16; ++i) EXPECT_EQ(r.chunks[i].level, 0) << i;
  EXPECT_EQ(states.size(), 16u - front);
  EXPECT_GT(front, 0u);
  EXPECT_LT(front, 16u);

  // The analytic split: the front's recompute times from the compute model,
  // the back's transfers at the link rate with one round trip per chunk
  // after the handshake. Step both clocks with the claiming rule.
  const ComputeModel compute(hc.profile.model, hc.config.gpu);
  const double rtt = 0.004, per_chunk = rtt + 400'016 * (1.0 + 54.0 / 1448) * 8 / 100e6;
  // Chunk 0 is claimed by the front and chunk 15 requested at once (sent
  // after the handshake); each side claims its next chunk when it finishes one.
  uint32_t f = 1, b = 15;
  double front_end = compute.recompute_s(0, 256), back_end = rtt + per_chunk;
  while (f < b) {
    if (front_end <= back_end) {
      front_end += compute.recompute_s(uint64_t(f) * 256, 256);
      ++f;
    } else {
      back_end += per_chunk;
      --b;
    }
  }
  EXPECT_NEAR(double(front), double(f), 1.0) << "simulated split " << front << ", analytic " << f;
  // The two sides end close together: the last recompute and the last fetch
  // are within about one chunk's work of each other.
  const double front_done = r.chunks[front - 1].gpu_end_s;
  const double back_done = r.chunks[front].last_byte_s;
  EXPECT_LT(std::abs(front_done - back_done), std::max(per_chunk, compute.recompute_s(0, 256)) * 1.5);
}

TEST(HybridSchedule, BeatsBothLoadingOnlyAndComputingOnly) {
  HybridCase hc;
  auto ttft = [&](const std::string& policy) {
    auto c = hc.config;
    c.policy = policy;
    c.policy_params.clear();
    const auto out = simulate(c, hc.profile);
    EXPECT_TRUE(out.result.requests[0].finished);
    return out.result.requests[0].ttft_s;
  };
  const double load = ttft("fixed"), compute = ttft("recompute"), hybrid = ttft("hybrid");
  EXPECT_LT(hybrid, 0.8 * std::min(load, compute)) << "load " << load << " compute " << compute;
  const auto out = [&] {
    auto c = hc.config;
    c.policy = "hybrid";
    return simulate(c, hc.profile);
  }();
  EXPECT_EQ(out.result.schedule, "load-back-compute-front");
  EXPECT_NE(out.result_json.find("\"schedule\": \"load-back-compute-front\""), std::string::npos);
}

TEST(HybridSchedule, OneChunkIsFetched) {
  const auto profile = make_profile(1, 256, {100'000}, 0.0);
  std::vector<policies::StreamState> states;
  const auto out = simulate(base_config(100, 4), profile, recording(&states, 0, true));
  ASSERT_TRUE(out.result.requests[0].finished);
  EXPECT_EQ(out.result.requests[0].chunks[0].level, 0);
}

TEST(DecodeTiming, IsNamedInEveryOutput) {
  const auto profile = make_profile(2, 256, {100'000}, 0.5);
  auto config = base_config(100, 4);
  config.gpu.decode = "assumed";
  const auto out = simulate(config, profile);
  EXPECT_NE(out.result.decode_timing.find("assumed, not measured"), std::string::npos);
  EXPECT_NE(out.summary.find("assumed, not measured"), std::string::npos);
  EXPECT_NE(out.result_json.find("assumed, not measured"), std::string::npos);
  // The profile's 0.5 s per chunk is not used: decode is the chunk's fp16 bytes at the assumed rate.
  const double fp16 = 2.0 * double(profile.model.kv.elements_per_token()) * 256;
  const ComputeModel compute(profile.model, config.gpu);
  EXPECT_NEAR(out.result.requests[0].decode_total_s, 2 * fp16 / compute.assumed_decode_bytes_per_s("c"), 1e-12);
}

}  // namespace
}  // namespace kvs::sim
