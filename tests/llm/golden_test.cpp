// Tiny checkpoints written, and their logits and KV computed, by an
// independent plain-Python implementation (tests/llm/data/make_golden.py: its
// own safetensors writer, RoPE scalings (YaRN too), GQA, RMSNorm, SwiGLU,
// Qwen2 biases, Qwen3 q/k norms, HF's sliding-window mask, Phi-3's fused
// qkv_proj/gate_up_proj layout, Gemma 2's norms, scaling and soft caps,
// Gemma 3's per-layer RoPE, in float64).
#include <functional>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/files.h"
#include "llm/checkpoint.h"

namespace kvs::llm {
namespace {

const std::string kData = KVSTREAM_SOURCE_DIR "/tests/llm/data/";
const std::string kDir = kData + "golden";

// expected.json's nested number arrays as a float64 tensor.
at::Tensor from_json(const nlohmann::json& j) {
  std::vector<int64_t> shape;
  for (const nlohmann::json* p = &j; p->is_array(); p = &(*p)[0]) shape.push_back(int64_t(p->size()));
  std::vector<double> flat;
  std::function<void(const nlohmann::json&)> walk = [&](const nlohmann::json& x) {
    if (x.is_array()) {
      for (const auto& e : x) walk(e);
    } else {
      flat.push_back(x.get<double>());
    }
  };
  walk(j);
  return at::tensor(at::ArrayRef<double>(flat), at::TensorOptions().dtype(at::kDouble)).view(shape);
}

// Largest |a - b| (shapes must agree).
double max_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return 1e30;
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

nlohmann::json expected_of(const std::string& dir) {
  return nlohmann::json::parse(read_file(dir + "/expected.json"));
}

LoadOptions as_float32() {
  LoadOptions o;
  o.dtype = at::kFloat;
  return o;
}

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

// Float32 runs below agree with the float64 reference to 3.1e-6 (logits) and
// 1.3e-6 (K/V) here; the bounds leave ~15x for other BLAS kernels. Float16
// logits were 0.007 off, bfloat16 0.075 (logits reach ~5).

// RoPE inverse frequencies equal the reference's to 1e-6 relative.
void expect_inv_freq_as_reference(const std::vector<float>& inv, const nlohmann::json& expected) {
  const auto inv_ex = expected.get<std::vector<double>>();
  ASSERT_EQ(inv.size(), inv_ex.size());
  for (size_t i = 0; i < inv.size(); ++i) EXPECT_NEAR(inv[i], inv_ex[i], 1e-6 * inv_ex[i]) << i;
}

// The model's RoPE frequencies at the tokens' length and one prefill of
// them (logits, last layer's keys and values) against the reference's.
void expect_prefill_as_reference(Model& m, const nlohmann::json& ex, const std::vector<int64_t>& tokens) {
  expect_inv_freq_as_reference(rope_inv_freq(m.config(), int64_t(tokens.size())), ex["inv_freq"]);
  ForwardResult r = m.prefill(to_tensor(tokens));
  EXPECT_LT(max_diff(r.logits, from_json(ex["logits"])), 5e-5);
  EXPECT_LT(max_diff(r.cache.keys.back(), from_json(ex["last_layer_keys"])), 2e-5);
  EXPECT_LT(max_diff(r.cache.values.back(), from_json(ex["last_layer_values"])), 2e-5);
}

// Prefilling in the reference's chunks (ex["chunks"]) through the cache gives
// its chunked logits and last layer's keys (and values, where recorded).
KVCache expect_chunked_as_reference(Model& m, const nlohmann::json& ex, const std::vector<int64_t>& tokens) {
  KVCache cache;
  std::vector<at::Tensor> parts;
  int64_t begin = 0;
  for (int64_t n : ex["chunks"].get<std::vector<int64_t>>()) {
    ForwardResult step = m.forward(to_tensor(std::vector<int64_t>(tokens.begin() + begin, tokens.begin() + begin + n)),
                                   cache);
    parts.push_back(step.logits);
    cache = step.cache;
    begin += n;
  }
  EXPECT_LT(max_diff(at::cat(parts, 0), from_json(ex["chunked_logits"])), 5e-5);
  EXPECT_LT(max_diff(cache.keys.back(), from_json(ex["chunked_last_layer_keys"])), 2e-5);
  if (ex.contains("chunked_last_layer_values")) {
    EXPECT_LT(max_diff(cache.values.back(), from_json(ex["chunked_last_layer_values"])), 2e-5);
  }
  return cache;
}

// Decoding token by token from a cache of the first `prefix` tokens gives the
// reference's logits of the rest.
void expect_decoding_as_reference(Model& m, const at::Tensor& logits, const std::vector<int64_t>& tokens,
                                  size_t prefix) {
  KVCache cache = m.prefill(to_tensor(std::vector<int64_t>(tokens.begin(), tokens.begin() + prefix))).cache;
  std::vector<at::Tensor> rows;
  for (size_t t = prefix; t < tokens.size(); ++t) {
    ForwardResult step = m.forward(to_tensor({tokens[t]}), cache);
    rows.push_back(step.logits);
    cache = step.cache;
  }
  EXPECT_LT(max_diff(at::cat(rows, 0), logits.narrow(0, int64_t(prefix), int64_t(tokens.size() - prefix))), 5e-5);
}

// Tied lm_head (absent from the file), one KV head per query head (no
// num_key_value_heads key), dynamic NTK RoPE past max_position_embeddings (8),
// float16 weights and HF's old rotary_emb.inv_freq buffers in the file.
TEST(GoldenTest, TiedDynamicNtkFloat16MatchesIndependentPython) {
  const std::string dir = kData + "golden_tied_dynamic";
  const auto ex = expected_of(dir);
  Model m = load_model(dir, as_float32());  // exact weights: f16 -> f32 is lossless
  const ModelConfig& c = m.config();
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.num_key_value_heads, c.num_attention_heads);
  EXPECT_EQ(c.rope_scaling.type, "dynamic");
  const auto tokens = ex["tokens"].get<std::vector<int64_t>>();
  ASSERT_GT(int64_t(tokens.size()), c.max_position_embeddings);  // the NTK base really changes
  expect_prefill_as_reference(m, ex, tokens);

  // In chunks, as HF runs it: each forward call's frequencies follow its last
  // position, and the cached keys keep the rotation they were computed with.
  const at::Tensor chunked = from_json(ex["chunked_logits"]);
  EXPECT_GT(max_diff(chunked, from_json(ex["logits"])), 1e-2);  // the data tell both apart
  expect_chunked_as_reference(m, ex, tokens);

  // In the file's float16 (products in float32 on CPU, rounded to float16).
  Model half = load_model(dir);
  EXPECT_EQ(half.dtype(), at::kHalf);
  EXPECT_LT(max_diff(half.prefill(to_tensor(tokens)).logits, from_json(ex["logits"])), 0.05);
}

// model_type mistral (sliding_window null), GQA 8:2, head_dim 6 != 32/8,
// linear RoPE in v5's rope_parameters (rope_theta inside), bfloat16 weights
// in two shards with model.safetensors.index.json.
TEST(GoldenTest, MistralShardedBfloat16MatchesIndependentPython) {
  const std::string dir = kData + "golden_mistral_bf16";
  const auto ex = expected_of(dir);
  Model m = load_model(dir, as_float32());  // exact weights: bf16 -> f32 is lossless
  const ModelConfig& c = m.config();
  EXPECT_EQ(c.effective_head_dim(), 6);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.rope_scaling.type, "linear");
  EXPECT_EQ(c.rope_theta, 50.0);
  const auto tokens = ex["tokens"].get<std::vector<int64_t>>();
  expect_prefill_as_reference(m, ex, tokens);

  // In the config's bfloat16 (8 mantissa bits: a coarse check).
  Model bf = load_model(dir);
  EXPECT_EQ(bf.dtype(), at::kBFloat16);
  EXPECT_LT(max_diff(bf.prefill(to_tensor(tokens)).logits, from_json(ex["logits"])), 0.25);
}

// model_type qwen2: q/k/v biases (non-zero), tied embeddings (no lm_head in
// the file), GQA 4:2, rope_theta 1e6, bfloat16 weights; use_sliding_window
// false with sliding_window 4 < 9 tokens: the window must not apply.
TEST(GoldenTest, Qwen2BiasesTiedMatchIndependentPython) {
  const std::string dir = kData + "golden_qwen2";
  const auto ex = expected_of(dir);
  Model m = load_model(dir, as_float32());  // exact weights: bf16 -> f32 is lossless
  const ModelConfig& c = m.config();
  EXPECT_EQ(c.model_type, "qwen2");
  EXPECT_TRUE(c.qkv_bias());
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.sliding_window, 0);  // HF: None unless use_sliding_window
  ASSERT_TRUE(m.layer_weights(1).k_bias.defined());
  EXPECT_GT(m.layer_weights(1).k_bias.abs().max().item<float>(), 0.1f);
  const auto tokens = ex["tokens"].get<std::vector<int64_t>>();
  expect_prefill_as_reference(m, ex, tokens);

  expect_decoding_as_reference(m, from_json(ex["logits"]), tokens, 5);

  Model bf = load_model(dir);
  EXPECT_EQ(bf.dtype(), at::kBFloat16);
  EXPECT_LT(max_diff(bf.prefill(to_tensor(tokens)).logits, from_json(ex["logits"])), 0.25);
}

// Sliding window W = 4 over 11 tokens (HF: the query at q sees keys
// q - W < k <= q): one-shot, in chunks of 3 with the cache (which keeps every
// position), and in query blocks of 3 and 1. The reference's logits without a
// window and with one more key (Mistral's one_file_ref boundary) differ, so a
// missing window or an off-by-one fails.
void expect_windowed_as_reference(const std::string& dir, const std::vector<int64_t>& windows) {
  const auto ex = expected_of(dir);
  Model m = load_model(dir);
  const ModelConfig& c = m.config();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) EXPECT_EQ(c.layer_window(l), windows[size_t(l)]) << l;
  const auto tokens = ex["tokens"].get<std::vector<int64_t>>();
  ASSERT_GT(int64_t(tokens.size()), c.sliding_window);
  const at::Tensor logits = from_json(ex["logits"]);
  EXPECT_GT(max_diff(from_json(ex["full_attention_logits"]), logits), 0.1);
  EXPECT_GT(max_diff(from_json(ex["window_plus_one_logits"]), logits), 0.1);
  expect_prefill_as_reference(m, ex, tokens);
  for (int64_t block : {3, 1}) {
    m.set_query_block(block);
    EXPECT_LT(max_diff(m.prefill(to_tensor(tokens)).logits, logits), 5e-5) << "query block " << block;
  }
  m.set_query_block(256);
  // Batched training forward (no cache) applies the same mask.
  EXPECT_LT(max_diff(m.logits(to_tensor(tokens).unsqueeze(0)).select(0, 0), logits), 5e-5);

  EXPECT_EQ(expect_chunked_as_reference(m, ex, tokens).tokens(), int64_t(tokens.size()));  // every position kept
}

TEST(GoldenTest, MistralSlidingWindowPastTheWindowMatchesIndependentPython) {
  expect_windowed_as_reference(kData + "golden_mistral_window", {4, 4});
}

// Qwen2 with use_sliding_window: only layers >= max_window_layers (1) are windowed.
TEST(GoldenTest, Qwen2PerLayerSlidingWindowMatchesIndependentPython) {
  expect_windowed_as_reference(kData + "golden_qwen2_window", {0, 4, 4});
}

// model_type phi3: fused self_attn.qkv_proj (q rows, then k, then v; GQA
// 4:2) and mlp.gate_up_proj (gate rows, then up), sliding_window 5 on both
// layers, 11 tokens one-shot, in chunks and query blocks.
TEST(GoldenTest, Phi3FusedWeightsAndWindowMatchIndependentPython) {
  const std::string dir = kData + "golden_phi3";
  expect_windowed_as_reference(dir, {5, 5});
  Model m = load_model(dir);
  const ModelConfig& c = m.config();
  EXPECT_EQ(c.model_type, "phi3");
  EXPECT_EQ(c.effective_head_dim(), 8);
  // The split weights are views of the fused tensors: held once.
  const int64_t H = c.hidden_size, q = c.num_attention_heads * 8, kv = c.num_key_value_heads * 8;
  for (size_t l = 0; l < 2; ++l) {
    const LayerWeights& w = m.layer_weights(l);
    const auto* base = static_cast<const float*>(w.q_proj.data_ptr());
    EXPECT_EQ(static_cast<const float*>(w.k_proj.data_ptr()), base + q * H);
    EXPECT_EQ(static_cast<const float*>(w.v_proj.data_ptr()), base + (q + kv) * H);
    EXPECT_EQ(static_cast<const float*>(w.up_proj.data_ptr()),
              static_cast<const float*>(w.gate_proj.data_ptr()) + c.intermediate_size * H);
  }
  // The data tell the layouts apart: reading the fused rows in another order
  // (k and v swapped; k, v, q; up before gate) misses the reference.
  const auto ex = expected_of(dir);
  const auto tokens = ex["tokens"].get<std::vector<int64_t>>();
  const at::Tensor logits = from_json(ex["logits"]);
  EXPECT_LT(max_diff(m.prefill(to_tensor(tokens)).logits, logits), 5e-5);
  const auto params = m.named_parameters();
  auto param = [&](const std::string& name) {
    for (const auto& [n, t] : params)
      if (n == name) return t;
    ADD_FAILURE() << name;
    return at::Tensor();
  };
  for (const std::string variant : {"q,v,k", "k,v,q", "up,gate"}) {
    std::vector<LayerWeights> layers;
    for (size_t l = 0; l < 2; ++l) {
      LayerWeights w = m.layer_weights(l);
      const at::Tensor qkv = at::cat({w.q_proj, w.k_proj, w.v_proj}, 0);
      if (variant == "q,v,k") std::swap(w.k_proj, w.v_proj);
      if (variant == "k,v,q") {
        w.k_proj = qkv.narrow(0, 0, kv);
        w.v_proj = qkv.narrow(0, kv, kv);
        w.q_proj = qkv.narrow(0, 2 * kv, q);
      }
      if (variant == "up,gate") std::swap(w.gate_proj, w.up_proj);
      layers.push_back(w);
    }
    Model wrong(c, param("model.embed_tokens.weight"), std::move(layers), param("model.norm.weight"),
                param("lm_head.weight"));
    EXPECT_GT(max_diff(wrong.prefill(to_tensor(tokens)).logits, logits), 0.1) << variant;
  }
}

// phi3 with partial_rotary_factor 0.75 (as Phi-4-mini): 6 of the 8 head
// dims rotate (3 frequencies, rotate_half within the 6), dims 6-7 pass; the
// keys in the cache are compared too. Rotating the whole head misses.
TEST(GoldenTest, Phi3PartialRotaryMatchesIndependentPython) {
  const std::string dir = kData + "golden_phi3_partial";
  const auto ex = expected_of(dir);
  Model m = load_model(dir);
  const ModelConfig& c = m.config();
  EXPECT_EQ(c.partial_rotary_factor, 0.75);
  EXPECT_EQ(c.rotary_dim(), 6);
  EXPECT_EQ(rope_inv_freq(c, 4).size(), 3u);
  const auto tokens = ex["tokens"].get<std::vector<int64_t>>();
  const at::Tensor logits = from_json(ex["logits"]);
  EXPECT_GT(max_diff(from_json(ex["whole_head_rope_logits"]), logits), 0.1);
  expect_prefill_as_reference(m, ex, tokens);
  KVCache cache = m.prefill(to_tensor(std::vector<int64_t>(tokens.begin(), tokens.begin() + 6))).cache;
  ForwardResult tail = m.forward(to_tensor(std::vector<int64_t>(tokens.begin() + 6, tokens.end())), cache);
  EXPECT_LT(max_diff(tail.logits, logits.narrow(0, 6, int64_t(tokens.size()) - 6)), 5e-5);
  EXPECT_LT(max_diff(m.logits(to_tensor(tokens).unsqueeze(0)).select(0, 0), logits), 5e-5);
  ModelConfig whole = c;  // the same weights with the whole head rotated
  whole.partial_rotary_factor = 1.0;
  whole.model_type = "phi3";
  std::vector<LayerWeights> layers{m.layer_weights(0), m.layer_weights(1)};
  const auto params = m.named_parameters();
  Model w(whole, params.front().second, std::move(layers), params.back().second, at::Tensor());
  EXPECT_LT(max_diff(w.prefill(to_tensor(tokens)).logits, from_json(ex["whole_head_rope_logits"])), 5e-5);
}

// phi3 with LongRoPE (rope_scaling type "su", Phi3Config's old name for
// longrope): original 16 of 64 positions, attention factor sqrt(1.5). A
// 20-token prefill uses the long factors; in chunks of 12 + 8 the first call
// uses the short ones and its cached keys keep them (as HF's
// dynamic_rope_update per forward call). Without the attention factor or
// with the short factors throughout, the reference's logits differ.
TEST(GoldenTest, Phi3LongRopeMatchesIndependentPython) {
  const std::string dir = kData + "golden_phi3_longrope";
  const auto ex = expected_of(dir);
  Model m = load_model(dir);
  const ModelConfig& c = m.config();
  EXPECT_EQ(c.rope_scaling.type, "longrope");
  EXPECT_NEAR(rope_attention_scaling(c), ex["attention_scaling"].get<double>(), 1e-12);
  expect_inv_freq_as_reference(rope_inv_freq(c, 16), ex["short_inv_freq"]);
  const auto tokens = ex["tokens"].get<std::vector<int64_t>>();
  const at::Tensor logits = from_json(ex["logits"]);
  EXPECT_GT(max_diff(from_json(ex["no_attention_factor_logits"]), logits), 0.1);
  EXPECT_GT(max_diff(from_json(ex["short_factor_logits"]), logits), 0.1);
  EXPECT_GT(max_diff(from_json(ex["chunked_logits"]), logits), 0.1);
  expect_prefill_as_reference(m, ex, tokens);
  expect_chunked_as_reference(m, ex, tokens);
}

// model_type gemma (v1): embeddings times sqrt(hidden), RMSNorm times
// (1 + w) with weights around 0, GeGLU (gelu_pytorch_tanh), tied by default,
// MQA, head_dim 8 x 4 heads != hidden 24, bfloat16 weights.
TEST(GoldenTest, GemmaMatchesIndependentPython) {
  const std::string dir = kData + "golden_gemma";
  const auto ex = expected_of(dir);
  Model m = load_model(dir, as_float32());  // exact weights: bf16 -> f32 is lossless
  const ModelConfig& c = m.config();
  EXPECT_TRUE(c.gemma());
  EXPECT_TRUE(c.tie_word_embeddings);  // GemmaConfig's default: the file has no key
  EXPECT_EQ(c.num_key_value_heads, 1);
  const auto tokens = ex["tokens"].get<std::vector<int64_t>>();
  expect_prefill_as_reference(m, ex, tokens);
  KVCache cache = m.prefill(to_tensor(std::vector<int64_t>(tokens.begin(), tokens.begin() + 6))).cache;
  ForwardResult tail = m.forward(to_tensor(std::vector<int64_t>(tokens.begin() + 6, tokens.end())), cache);
  EXPECT_LT(max_diff(tail.logits, from_json(ex["logits"]).narrow(0, 6, int64_t(tokens.size()) - 6)), 5e-5);

  Model bf = load_model(dir);
  EXPECT_EQ(bf.dtype(), at::kBFloat16);
  EXPECT_LT(max_diff(bf.prefill(to_tensor(tokens)).logits, from_json(ex["logits"])), 0.5);  // logits reach 15
}

// model_type gemma2: sliding_window 4 on the even layers of 3 (Gemma2Config's
// default layer_types: the file has none), the attention's and the MLP's
// outputs normed before their residuals and the MLP's input by
// pre_feedforward_layernorm, scores times query_pre_attn_scalar^-0.5 (24, not
// head_dim 16) soft-capped at 2 before the mask, logits soft-capped at 8,
// tied, GQA 4:2; one-shot, in chunks of 3, query blocks, token by token.
// The reference's logits without each of these differ, and the same
// weights run with the C++ knob turned off give exactly those logits, so
// dropping any of them fails the check against the true logits.
TEST(GoldenTest, Gemma2MatchesIndependentPython) {
  const std::string dir = kData + "golden_gemma2";
  expect_windowed_as_reference(dir, {4, 0, 4});
  const auto ex = expected_of(dir);
  Model m = load_model(dir);
  const ModelConfig& c = m.config();
  EXPECT_TRUE(c.gemma2());
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.query_pre_attn_scalar, 24.0);
  EXPECT_EQ(c.attn_logit_softcapping, 2.0);
  EXPECT_EQ(c.final_logit_softcapping, 8.0);
  ASSERT_TRUE(m.layer_weights(2).post_feedforward_layernorm.defined());
  const auto tokens = ex["tokens"].get<std::vector<int64_t>>();
  const at::Tensor logits = from_json(ex["logits"]);
  const double got = max_diff(m.prefill(to_tensor(tokens)).logits, logits);
  EXPECT_LT(got, 1e-5);
  expect_decoding_as_reference(m, logits, tokens, 5);

  // Each wrong variant: far from the truth, and what the model computes when
  // its knob is turned off (the sandwich norms have no knob: the reference's
  // deviation is checked alone).
  const auto params = m.named_parameters();
  std::vector<LayerWeights> layers;
  for (size_t l = 0; l < 3; ++l) layers.push_back(m.layer_weights(l));
  auto variant = [&](const char* key, const std::function<void(ModelConfig&)>& change) {
    const at::Tensor wrong = from_json(ex[key]);
    EXPECT_GT(max_diff(wrong, logits), 0.3) << key;
    if (!change) return;
    ModelConfig v = c;
    change(v);
    Model w(v, params.front().second, layers, params.back().second, at::Tensor());
    EXPECT_LT(max_diff(w.prefill(to_tensor(tokens)).logits, wrong), 5e-5) << key;
  };
  variant("no_attn_softcap_logits", [](ModelConfig& v) { v.attn_logit_softcapping = 0; });
  variant("no_final_softcap_logits", [](ModelConfig& v) { v.final_logit_softcapping = 0; });
  variant("head_dim_scaling_logits", [](ModelConfig& v) { v.query_pre_attn_scalar = 16; });
  variant("no_sandwich_norms_logits", nullptr);
}

// model_type gemma3_text: sliding_window_pattern 3 over 4 layers (layers 0,
// 1 and 3 windowed at 4, layer 2 full), q/k norms scaling by 1 + w (weights
// around 0), the sliding layers rotating with rope_local_base_freq 100 and
// default RoPE, the full layer with rope_theta 10000 and linear factor 4;
// one-shot, in chunks of 3 (the keys of layer 3, a sliding one, compared),
// query blocks and token by token; the local frequencies too. The
// reference's logits with the global RoPE on every layer, with q/k norms
// times w, and without q/k norms differ, so each mistake fails.
TEST(GoldenTest, Gemma3PerLayerRopeAndQkNormsMatchIndependentPython) {
  const std::string dir = kData + "golden_gemma3";
  expect_windowed_as_reference(dir, {4, 4, 0, 4});
  const auto ex = expected_of(dir);
  Model m = load_model(dir);
  const ModelConfig& c = m.config();
  EXPECT_TRUE(c.gemma3());
  EXPECT_TRUE(c.qk_norm());
  EXPECT_TRUE(c.sandwich_norms());
  EXPECT_EQ(c.attn_logit_softcapping, 0.0);  // Gemma3TextConfig: no caps
  EXPECT_EQ(c.rope_local_base_freq, 100.0);
  EXPECT_EQ(c.rope_scaling.type, "linear");
  for (int64_t l : {0, 1, 3}) EXPECT_TRUE(c.local_rope(l)) << l;
  EXPECT_FALSE(c.local_rope(2));
  const auto tokens = ex["tokens"].get<std::vector<int64_t>>();
  expect_inv_freq_as_reference(rope_inv_freq(c.local_rope_config(), int64_t(tokens.size())), ex["local_inv_freq"]);
  const at::Tensor logits = from_json(ex["logits"]);
  EXPECT_LT(max_diff(m.prefill(to_tensor(tokens)).logits, logits), 1e-5);
  expect_decoding_as_reference(m, logits, tokens, 5);
  for (const char* key : {"global_rope_logits", "plain_qk_norm_logits", "no_qk_norm_logits"})
    EXPECT_GT(max_diff(from_json(ex[key]), logits), 0.3) << key;
}

// model_type qwen3: each head's query and key RMSNormed over head_dim with
// weights around 1 (not 1), before RoPE; head_dim 16 x 4 heads != hidden 32,
// GQA 4:2, untied. The reference's logits without the norms and with them
// after RoPE differ (the weights are not rotation-invariant), so either
// mistake fails.
TEST(GoldenTest, Qwen3QkNormMatchesIndependentPython) {
  const std::string dir = kData + "golden_qwen3";
  const auto ex = expected_of(dir);
  Model m = load_model(dir);
  const ModelConfig& c = m.config();
  EXPECT_TRUE(c.qk_norm());
  EXPECT_FALSE(c.qkv_bias());
  EXPECT_EQ(c.effective_head_dim(), 16);
  ASSERT_TRUE(m.layer_weights(1).k_norm.defined());
  EXPECT_GT((m.layer_weights(1).k_norm - 1).abs().max().item<float>(), 0.2f);
  const at::Tensor logits = from_json(ex["logits"]);
  EXPECT_GT(max_diff(from_json(ex["no_qk_norm_logits"]), logits), 0.1);
  EXPECT_GT(max_diff(from_json(ex["qk_norm_after_rope_logits"]), logits), 0.1);
  const auto tokens = ex["tokens"].get<std::vector<int64_t>>();
  expect_prefill_as_reference(m, ex, tokens);
  // Decoding token by token from the cache, and the batched training forward.
  expect_decoding_as_reference(m, logits, tokens, 4);
  EXPECT_LT(max_diff(m.logits(to_tensor(tokens).unsqueeze(0)).select(0, 0), logits), 5e-5);
}

// YaRN RoPE (factor 4 = 256 / 64 positions, theta 100: the ramp spans pairs
// 0..5 of 8) with its attention factor 0.1 ln 4 + 1 on cos and sin; without
// the factor the reference's logits differ.
TEST(GoldenTest, YarnRopeMatchesIndependentPython) {
  const std::string dir = kData + "golden_yarn";
  const auto ex = expected_of(dir);
  Model m = load_model(dir);
  const ModelConfig& c = m.config();
  EXPECT_EQ(c.rope_scaling.type, "yarn");
  EXPECT_NEAR(rope_attention_scaling(c), ex["attention_scaling"].get<double>(), 1e-12);
  const at::Tensor logits = from_json(ex["logits"]);
  EXPECT_GT(max_diff(from_json(ex["no_attention_factor_logits"]), logits), 0.1);
  const auto tokens = ex["tokens"].get<std::vector<int64_t>>();
  expect_prefill_as_reference(m, ex, tokens);
  KVCache cache = m.prefill(to_tensor(std::vector<int64_t>(tokens.begin(), tokens.begin() + 7))).cache;
  ForwardResult tail = m.forward(to_tensor(std::vector<int64_t>(tokens.begin() + 7, tokens.end())), cache);
  EXPECT_LT(max_diff(tail.logits, logits.narrow(0, 7, int64_t(tokens.size()) - 7)), 5e-5);
}

}  // namespace
}  // namespace kvs::llm
