// A tiny checkpoint written, and its logits computed, by an independent plain
// Python implementation (tests/llm/data/make_golden.py: its own safetensors
// writer, llama3 RoPE scaling, GQA, RMSNorm, SwiGLU in float64).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/files.h"
#include "llm/checkpoint.h"

namespace kvs::llm {
namespace {

const std::string kDir = KVSTREAM_SOURCE_DIR "/tests/llm/data/golden";

TEST(GoldenTest, LogitsAndKeysMatchIndependentPython) {
  const auto expected = nlohmann::json::parse(read_file(kDir + "/expected.json"));
  Model m = load_model(kDir);
  EXPECT_EQ(m.config().rope_scaling.type, "llama3");
  const auto inv = rope_inv_freq(m.config(), 10);
  for (size_t i = 0; i < inv.size(); ++i) EXPECT_NEAR(inv[i], expected["inv_freq"][i].get<double>(), 1e-6);

  const auto tokens = expected["tokens"].get<std::vector<int64_t>>();
  ForwardResult r = m.prefill(to_tensor(tokens));
  const auto logits = expected["logits"].get<std::vector<std::vector<double>>>();
  ASSERT_EQ(r.logits.size(0), int64_t(logits.size()));
  double worst = 0;
  for (size_t t = 0; t < logits.size(); ++t)
    for (size_t v = 0; v < logits[t].size(); ++v)
      worst = std::max(worst, std::abs(r.logits[int64_t(t)][int64_t(v)].item<double>() - logits[t][v]));
  EXPECT_LT(worst, 2e-4);

  const auto keys = expected["last_layer_keys"].get<std::vector<std::vector<std::vector<double>>>>();
  const at::Tensor k = r.cache.keys.back();  // [kv_heads, tokens, head_dim], after RoPE
  double worst_k = 0;
  for (size_t h = 0; h < keys.size(); ++h)
    for (size_t t = 0; t < keys[h].size(); ++t)
      for (size_t d = 0; d < keys[h][t].size(); ++d)
        worst_k = std::max(worst_k, std::abs(k[int64_t(h)][int64_t(t)][int64_t(d)].item<double>() - keys[h][t][d]));
  EXPECT_LT(worst_k, 1e-4);

  // Continuing from a cache gives the same logits as the full prefill.
  ForwardResult head = m.prefill(to_tensor(std::vector<int64_t>(tokens.begin(), tokens.begin() + 4)));
  ForwardResult tail = m.forward(to_tensor(std::vector<int64_t>(tokens.begin() + 4, tokens.end())), head.cache);
  for (size_t t = 4; t < logits.size(); ++t)
    EXPECT_NEAR(tail.logits[int64_t(t - 4)][5].item<double>(), logits[t][5], 2e-4);
}

}  // namespace
}  // namespace kvs::llm
