// The offloaded decode pipeline (sim/offload.h): hand-computed cases on a toy
// model with round numbers, the relations to sim/gpu_model.h's ComputeModel,
// and the orderings the comparison rests on.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "base/error.h"
#include "policies/selective.h"
#include "sim/gpu_model.h"
#include "sim/offload.h"

namespace kvs::sim {
namespace {

// Two layers, one head of 4 channels, hidden 4, vocab 1, 1000 weights per
// layer (parameters = 2 x vocab x hidden + 2 x 1000 = 2008), fp16:
// KV = 2 (K, V) x 4 channels x 2 bytes = 16 bytes per token and layer.
// GPU: 1 MB/s of memory, 1e12 FLOP/s, efficiency 1 (everything memory-bound).
// Link: 1e5 bytes/s, 100 us per transfer. Prompt of 100 tokens.
OffloadConfig toy() {
  OffloadConfig c;
  c.model.name = "toy";
  c.model.kv = {2, 1, 4};
  c.model.dtype = codec::DType::kF16;
  c.model.hidden_size = 4;
  c.model.intermediate_size = 4;
  c.model.num_attention_heads = 1;
  c.model.vocab_size = 1;
  c.model.parameters = 2008;
  c.gpu.preset = "a100";
  c.gpu.peak_flops = 1e12;
  c.gpu.memory_bytes_per_s = 1e6;
  c.gpu.efficiency = 1;
  c.pcie.rate_bytes_per_s = 1e5;
  c.pcie.latency_s = 1e-4;
  c.prompt_tokens = 100;
  c.output_tokens = 3;
  return c;
}

// Prefill FLOPs: 2 x (2008 - 4) x 100 + 4 x 2 layers x 1 head x 4 x 100 x 101 / 2
// = 400800 + 161600 = 562400, of which the LM head 2 x 4 x 100 = 800:
// 2.808e-7 s per layer, TTFT = 5.624e-7 s.
constexpr double kTtft = 5.624e-7;
constexpr double kTol = 1e-12;

TEST(Offload, FullOffloadMatchesHandComputedCase) {
  const auto r = simulate_offload(toy(), OffloadMode::kFull);
  EXPECT_NEAR(r.ttft_s, kTtft, kTol);
  // Prefill write-back: 1600 bytes per layer, 0.0161 s each; layer 0's ends at
  // 2.808e-7 + 0.0161 = 0.0161002808, layer 1's at 0.0322002808.
  // Step 1 (100 past tokens; a layer takes (2000 + 101 x 16) / 1e6 = 0.003616 s):
  //   layer 0 fetched 0.0161002808 -> 0.0322002808, computed -> 0.0358162808;
  //   layer 1 fetch starts when layer 0 computes and its write is done,
  //   0.0322002808 -> 0.0483002808, computed -> 0.0519162808; LM head 8 bytes
  //   -> 8e-6 s: step 1 ends at 0.0519242808.
  // Step 2 (101 past: 1616 bytes, 0.01626 s; a layer 0.003632 s):
  //   layer 0 fetched from layer 1's start, 0.0483002808 -> 0.0645602808,
  //   computed -> 0.0681922808; layer 1 fetched 0.0645602808 -> 0.0808202808,
  //   computed -> 0.0844522808; + LM head = 0.0844602808.
  ASSERT_EQ(r.step_s.size(), 2u);
  EXPECT_NEAR(r.step_s[0], 0.0519242808 - kTtft, kTol);
  EXPECT_NEAR(r.step_s[1], 0.0844602808 - 0.0519242808, kTol);
  EXPECT_NEAR(r.total_s, 0.0844602808, kTol);
  EXPECT_NEAR(r.tpot_s, (0.0844602808 - kTtft) / 2, kTol);
  EXPECT_DOUBLE_EQ(r.h2d_bytes, 2 * 1600 + 2 * 1616);
  EXPECT_NEAR(r.link_busy_s, 2 * 0.0161 + 2 * 0.01626, kTol);
  // Waits: 0.0322002808 - TTFT before layer 0, 0.0483002808 - 0.0358162808,
  // 0.0645602808 - 0.0519242808, 0.0808202808 - 0.0681922808.
  EXPECT_NEAR(r.stall_s, (0.0322002808 - kTtft) + 0.012484 + 0.012636 + 0.012628, kTol);
  EXPECT_DOUBLE_EQ(r.speculation_s, 0);
}

TEST(Offload, ResidentMatchesHandComputedCase) {
  const auto r = simulate_offload(toy(), OffloadMode::kResident);
  EXPECT_NEAR(r.ttft_s, kTtft, kTol);
  ASSERT_EQ(r.step_s.size(), 2u);
  EXPECT_NEAR(r.step_s[0], 2 * 0.003616 + 8e-6, kTol);
  EXPECT_NEAR(r.step_s[1], 2 * 0.003632 + 8e-6, kTol);
  EXPECT_NEAR(r.total_s, kTtft + 0.007240 + 0.007272, kTol);
  EXPECT_DOUBLE_EQ(r.h2d_bytes, 0);
  EXPECT_DOUBLE_EQ(r.stall_s, 0);
  // Weights 2008 x 2 bytes and the KV of 103 tokens x 2 layers x 16 bytes.
  EXPECT_DOUBLE_EQ(r.gpu_bytes, 4016 + 103 * 32);
}

TEST(Offload, SelectiveMatchesHandComputedCase) {
  auto c = toy();
  c.output_tokens = 2;
  c.layer_fraction = {1.0, 0.5};
  c.partial_ratio = 0.25;
  const auto r = simulate_offload(c, OffloadMode::kSelective);
  // Speculation for layer 1 at the start of layer 0: partial W_q 0.25 x 4 x 4
  // x 2 = 8 bytes, partial keys 0.25 x 100 x 8 = 200, scores 100 x 2 x 2 = 400:
  // 608 bytes, 6.08e-4 s. Layer 0 as in the full case: fetched by
  // 0.0322002808, computes 0.000608 + 0.003616 -> 0.0364242808.
  // Layer 1: 50 tokens, 800 bytes, 0.0081 s, from 0.0322002808 + 0.000608 =
  // 0.0328082808 -> 0.0409082808; computes (2000 + 51 x 16) / 1e6 = 0.002816
  // -> 0.0437242808; + LM head -> 0.0437322808.
  ASSERT_EQ(r.step_s.size(), 1u);
  EXPECT_NEAR(r.total_s, 0.0437322808, kTol);
  EXPECT_NEAR(r.step_s[0], 0.0437322808 - kTtft, kTol);
  EXPECT_NEAR(r.speculation_s, 6.08e-4, kTol);
  EXPECT_DOUBLE_EQ(r.h2d_bytes, 1600 + 800);
}

// A selective profile of the toy model (2 layers) with fractions {1, 0.5},
// with `windows` as model.layer_windows ("" : the field absent, as in
// profiles written before it existed), and the toy config built from it as
// `kvstream offload --selective` does.
OffloadConfig toy_from_profile(const std::string& windows) {
  const std::string name = "kvs_offload_" + std::to_string(::getpid()) + "_w" + std::to_string(windows.size());
  const std::string path = (std::filesystem::temp_directory_path() / (name + ".json")).string();
  std::ofstream(path) << R"({"format": "kvstream-selective", "version": 1,
 "model": {"name": "toy", "layers": 2)" + (windows.empty() ? "" : R"(, "layer_windows": )" + windows) + R"(},
 "options": {"ratio": 0.25, "full_front_layers": 1},
 "contexts": [{"id": "a", "tokens": 100}],
 "settings": [{"method": "infinigen", "budget": 0.5, "alpha": 4, "fraction_fetched_per_layer": [1, 0.5],
   "kl_divergence": 0.01, "loss_increase": 0.01, "greedy_agreement": 0.9}]})";
  const policies::SelectiveProfile p = policies::read_selective_profile(path);
  std::filesystem::remove(path);
  auto c = toy();
  c.output_tokens = 2;
  c.layer_fraction = policies::target_layer_fractions(p, p.settings[0], 2);
  c.layer_window = policies::target_layer_windows(p, 2);
  c.partial_ratio = p.ratio;
  return c;
}

TEST(Offload, SlidingWindowLayersFetchAndKeepOnlyTheirWindow) {
  // Layer 1 has a window of 11 tokens: with 100 past tokens it reads the
  // min(100, 11 - 1) = 10 of its window (16 bytes each), layer 0 all 100.
  const auto windowed = toy_from_profile("[0, 11]");
  const auto plain = toy_from_profile("");
  // Full offloading: layer 1 fetches 10 x 16 = 160 bytes instead of 1600.
  const auto full_w = simulate_offload(windowed, OffloadMode::kFull);
  const auto full_p = simulate_offload(plain, OffloadMode::kFull);
  EXPECT_DOUBLE_EQ(full_w.h2d_bytes, 1600 + 160);
  EXPECT_DOUBLE_EQ(full_p.h2d_bytes - full_w.h2d_bytes, 1600 - 160);
  // Prefill writes layer 1's 160 bytes, 0.0017 s, after layer 0's write
  // (ends 0.0161002808) -> 0.0178002808. Step 1: layer 0 fetched
  // 0.0161002808 -> 0.0322002808, computed -> 0.0358162808; layer 1 fetched
  // 0.0322002808 -> 0.0339002808, computed (2000 + 11 x 16) / 1e6 = 0.002176
  // -> 0.0379922808; LM head -> 0.0380002808.
  EXPECT_NEAR(full_w.total_s, 0.0380002808, kTol);
  // Selective: layer 1 fetches half of its window's 10 tokens, 80 bytes (not
  // half of 100, 800); its speculation reads the window's partial keys:
  // 8 (W_q) + 0.25 x 10 x 8 + 10 x 2 x 2 = 68 bytes, 6.8e-5 s (not 6.08e-4).
  const auto sel_w = simulate_offload(windowed, OffloadMode::kSelective);
  const auto sel_p = simulate_offload(plain, OffloadMode::kSelective);
  EXPECT_DOUBLE_EQ(sel_w.h2d_bytes, 1600 + 80);
  EXPECT_DOUBLE_EQ(sel_p.h2d_bytes - sel_w.h2d_bytes, 800 - 80);
  EXPECT_NEAR(sel_w.speculation_s, 6.8e-5, kTol);
  // GPU memory at 102 tokens: resident keeps 102 tokens of layer 0 and 11 of
  // layer 1; the offloaded buffers hold the largest layer (layer 0: 102);
  // selective adds partial keys 0.25 x (102 + 11) x 16 / 2.
  EXPECT_DOUBLE_EQ(simulate_offload(windowed, OffloadMode::kResident).gpu_bytes, 4016 + (102 + 11) * 16);
  EXPECT_DOUBLE_EQ(simulate_offload(plain, OffloadMode::kResident).gpu_bytes, 4016 + 102 * 32);
  EXPECT_DOUBLE_EQ(full_w.gpu_bytes, 4016 + 2 * 102 * 16);
  EXPECT_DOUBLE_EQ(sel_w.gpu_bytes, 4016 + 2 * 102 * 16 + 0.25 * 113 * 16 / 2);
}

TEST(Offload, AProfileWithoutWindowsGivesTheUnwindowedNumbersExactly) {
  // The field absent (or every window 0): every layer reads the whole
  // context, bit for bit as a config with no windows at all.
  for (const std::string windows : {"", "[0, 0]"}) {
    const auto c = toy_from_profile(windows);
    EXPECT_EQ(c.layer_window, (std::vector<uint64_t>{0, 0}));
    auto none = c;
    none.layer_window.clear();
    for (auto mode : {OffloadMode::kFull, OffloadMode::kSelective, OffloadMode::kResident}) {
      const auto a = simulate_offload(c, mode), b = simulate_offload(none, mode);
      EXPECT_EQ(a.total_s, b.total_s) << windows;
      EXPECT_EQ(a.step_s, b.step_s);
      EXPECT_EQ(a.h2d_bytes, b.h2d_bytes);
      EXPECT_EQ(a.speculation_s, b.speculation_s);
      EXPECT_EQ(a.gpu_bytes, b.gpu_bytes);
    }
    // The hand-computed selective case above.
    const auto sel = simulate_offload(c, OffloadMode::kSelective);
    EXPECT_DOUBLE_EQ(sel.h2d_bytes, 1600 + 800);
    EXPECT_NEAR(sel.total_s, 0.0437322808, kTol);
  }
}

TEST(Offload, ResidentStepAndPrefillAgreeWithComputeModel) {
  // A resident step is ComputeModel::first_token_s without the embedding
  // table's read (a row lookup); the prefill is ComputeModel::recompute_s.
  for (const std::string name : {"llama-7b", "llama-13b", "mistral-7b"}) {
    OffloadConfig c;
    c.model = model_preset(name);
    c.gpu.preset = "a100";
    c.prompt_tokens = 4096;
    c.output_tokens = 4;
    const auto r = simulate_offload(c, OffloadMode::kResident);
    const ComputeModel cm(c.model, c.gpu);
    const double embed_s = double(c.model.vocab_size) * c.model.hidden_size * codec::dtype_bytes(c.model.dtype) /
                           (gpu_preset_memory_bytes_per_s("a100") * c.gpu.efficiency);
    EXPECT_NEAR(r.ttft_s, cm.recompute_s(0, 4096), 1e-9 * r.ttft_s) << name;
    for (uint32_t k = 1; k < c.output_tokens; ++k)
      EXPECT_NEAR(r.step_s[k - 1], cm.first_token_s(4096 + k) - embed_s, 1e-9 * r.step_s[k - 1]) << name << " step " << k;
  }
}

OffloadConfig preset_config(const std::string& model, uint64_t context) {
  OffloadConfig c;
  c.model = model_preset(model);
  c.gpu.preset = "a100";
  c.prompt_tokens = context;
  c.output_tokens = 16;
  return c;
}

// OffloadConfig::layer_window empty: the model's own windows (a preset's,
// mistral-7b-v0.1), in every mode as in its prefill.
TEST(Offload, TheModelsOwnWindowsApplyWhenNoneAreGiven) {
  const OffloadConfig own = preset_config("mistral-7b-v0.1", 32768);
  ASSERT_TRUE(own.layer_window.empty());
  OffloadConfig given = own, full = own;
  given.layer_window.assign(own.model.layer_windows.begin(), own.model.layer_windows.end());
  full.layer_window.assign(own.model.kv.layers, 0);
  for (auto mode : {OffloadMode::kFull, OffloadMode::kResident}) {
    const auto a = simulate_offload(own, mode), b = simulate_offload(given, mode), f = simulate_offload(full, mode);
    EXPECT_EQ(a.total_s, b.total_s);
    EXPECT_EQ(a.step_s, b.step_s);
    EXPECT_EQ(a.h2d_bytes, b.h2d_bytes);
    EXPECT_EQ(a.gpu_bytes, b.gpu_bytes);
    EXPECT_LT(a.gpu_bytes, f.gpu_bytes);  // at most 4,096 tokens kept per layer
  }
  EXPECT_LT(simulate_offload(own, OffloadMode::kFull).h2d_bytes, simulate_offload(full, OffloadMode::kFull).h2d_bytes);
}

TEST(Offload, SelectiveWithFractionOneEqualsFullOffload) {
  for (const std::string model : {"llama-7b", "llama-13b"})
    for (uint64_t context : {2048u, 8192u, 32768u}) {
      auto c = preset_config(model, context);
      c.layer_fraction.assign(c.model.kv.layers, 1.0);
      const auto full = simulate_offload(c, OffloadMode::kFull);
      const auto sel = simulate_offload(c, OffloadMode::kSelective);
      EXPECT_EQ(sel.ttft_s, full.ttft_s);
      EXPECT_EQ(sel.total_s, full.total_s) << model << " " << context;
      EXPECT_EQ(sel.step_s, full.step_s);
      EXPECT_EQ(sel.h2d_bytes, full.h2d_bytes);
      EXPECT_EQ(sel.speculation_s, 0);
    }
}

TEST(Offload, ResidentIsALowerBound) {
  for (const std::string model : {"llama-7b", "llama-13b"})
    for (uint64_t context : {2048u, 4096u, 16384u, 32768u})
      for (double fraction : {0.0, 0.05, 0.2, 1.0}) {
        auto c = preset_config(model, context);
        c.batch = 4;
        c.layer_fraction = infinigen_layer_fractions(c.model.kv.layers, fraction);
        const auto resident = simulate_offload(c, OffloadMode::kResident);
        const auto full = simulate_offload(c, OffloadMode::kFull);
        const auto sel = simulate_offload(c, OffloadMode::kSelective);
        EXPECT_LE(resident.total_s, full.total_s);
        EXPECT_LE(resident.total_s, sel.total_s) << model << " " << context << " " << fraction;
        EXPECT_LE(resident.tpot_s, sel.tpot_s);
        EXPECT_GT(full.stall_s, 0);  // at 25 GB/s the link, not the GPU, bounds full offloading
      }
}

TEST(Offload, SelectiveSpeedupOverFullGrowsWithContext) {
  // InfiniGen's headline shape, as a property of the model: with a fixed
  // fraction the fetched bytes shrink in proportion while the weights' read
  // does not, so the gain grows with the context.
  for (const std::string model : {"llama-7b", "llama-13b"}) {
    double previous = 1.0;
    for (uint64_t context : {2048u, 4096u, 8192u, 16384u, 32768u}) {
      auto c = preset_config(model, context);
      c.layer_fraction = infinigen_layer_fractions(c.model.kv.layers, 0.1);
      const double speedup =
          simulate_offload(c, OffloadMode::kFull).tpot_s / simulate_offload(c, OffloadMode::kSelective).tpot_s;
      EXPECT_GT(speedup, previous) << model << " " << context;
      previous = speedup;
    }
  }
}

TEST(Offload, LayoutOfInfinigenFractions) {
  EXPECT_EQ(infinigen_layer_fractions(5, 0.1), (std::vector<double>{1, 1, 0.1, 0.1, 1}));
  EXPECT_EQ(infinigen_layer_fractions(2, 0.1), (std::vector<double>{1, 1}));
}

TEST(Offload, RejectsInvalidConfigurations) {
  auto c = toy();
  EXPECT_THROW(simulate_offload(c, OffloadMode::kSelective), Error);  // no fractions
  c.layer_fraction = {0.5, 0.5};
  EXPECT_THROW(simulate_offload(c, OffloadMode::kSelective), Error);  // layer 0 must be full
  c.layer_fraction = {1.0, 1.5};
  EXPECT_THROW(simulate_offload(c, OffloadMode::kSelective), Error);
  c = toy();
  c.pcie.rate_bytes_per_s = 0;
  EXPECT_THROW(simulate_offload(c, OffloadMode::kFull), Error);
  c = toy();
  c.prompt_tokens = 0;
  EXPECT_THROW(simulate_offload(c, OffloadMode::kResident), Error);
  c = toy();
  c.layer_window = {0, 8, 8};  // not one per layer
  EXPECT_THROW(simulate_offload(c, OffloadMode::kFull), Error);
  c = toy();
  c.gpu.preset = "nope";
  c.gpu.peak_flops = 0;
  EXPECT_THROW(simulate_offload(c, OffloadMode::kFull), Error);
}

TEST(Offload, ResidentFitsOnlyWhenTheCacheFits) {
  auto c = preset_config("llama-13b", 32768);
  c.batch = 1;
  EXPECT_TRUE(simulate_offload(c, OffloadMode::kResident).fits);  // 26 GB weights + 27 GB KV on 80 GB
  c.batch = 4;
  EXPECT_FALSE(simulate_offload(c, OffloadMode::kResident).fits);
  EXPECT_TRUE(simulate_offload(c, OffloadMode::kFull).fits);
}

}  // namespace
}  // namespace kvs::sim
