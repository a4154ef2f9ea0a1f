// The transformer: causal consistency with a KV cache, GQA against a
// hand-written repeated-heads attention, KVCache <-> KVChunk, evaluation.
#include "llm/model.h"

#include <algorithm>
#include <cmath>

#include <gtest/gtest.h>

#include "base/error.h"
#include "llm/evaluate.h"
#include "llm/kv_cache.h"
#include "tests/llm/test_util.h"

namespace kvs::llm {
namespace {

using testing::some_tokens;
using testing::tiny_config;

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// The model's parameter named `name` (HF name), or an undefined tensor.
at::Tensor param(const Model& m, const std::string& name) {
  for (const auto& [n, t] : m.named_parameters())
    if (n == name) return t;
  return {};
}

TEST(ModelTest, PrefillThenForwardEqualsOnePrefill) {
  for (bool tied : {false, true}) {
    ModelConfig c = tiny_config();
    c.tie_word_embeddings = tied;
    Model m = Model::random(c, 1);
    const auto ids = some_tokens(24, c.vocab_size, 3);
    const at::Tensor all = to_tensor(ids);
    ForwardResult full = m.prefill(all);
    ASSERT_EQ(full.logits.sizes(), (at::IntArrayRef{24, 256}));
    ASSERT_EQ(full.cache.layers(), 2);
    EXPECT_EQ(full.cache.keys[0].sizes(), (at::IntArrayRef{2, 24, 8}));

    ForwardResult head = m.prefill(all.slice(0, 0, 15));
    ForwardResult tail = m.forward(all.slice(0, 15, 24), head.cache);
    EXPECT_LT(max_abs_diff(tail.logits, full.logits.slice(0, 15, 24)), 1e-5);
    EXPECT_LT(max_abs_diff(head.logits, full.logits.slice(0, 0, 15)), 1e-5);
    EXPECT_EQ(tail.cache.tokens(), 24);
    for (int l = 0; l < 2; ++l) {
      EXPECT_LT(max_abs_diff(tail.cache.keys[l], full.cache.keys[l]), 1e-5);
      EXPECT_LT(max_abs_diff(tail.cache.values[l], full.cache.values[l]), 1e-5);
    }
  }
}

TEST(ModelTest, QueryBlocksDoNotChangeResults) {
  Model m = Model::random(tiny_config(), 2);
  const at::Tensor t = to_tensor(some_tokens(40, 256, 5));
  const at::Tensor whole = m.prefill(t).logits;
  m.set_query_block(7);
  EXPECT_LT(max_abs_diff(m.prefill(t).logits, whole), 1e-5);
}

TEST(ModelTest, BatchedLogitsEqualSingleForward) {
  Model m = Model::random(tiny_config(), 4);
  const auto a = some_tokens(10, 256, 1), b = some_tokens(10, 256, 2);
  at::Tensor batch = at::stack({to_tensor(a), to_tensor(b)});
  at::Tensor l = m.logits(batch);
  EXPECT_LT(max_abs_diff(l[1], m.prefill(to_tensor(b)).logits), 1e-5);
}

// Reference attention layer computed independently: repeat K/V per query
// head (HF's repeat_kv), explicit RoPE with rotate_half, explicit mask.
TEST(ModelTest, GroupedQueryAttentionEqualsRepeatedHeads) {
  ModelConfig c = tiny_config();
  c.num_hidden_layers = 1;
  Model m = Model::random(c, 9);
  const int64_t n = 6, heads = 4, kvh = 2, hd = 8, H = 32;
  const at::Tensor tokens = to_tensor(some_tokens(n, 256, 11));
  auto params = m.named_parameters();
  auto get = [&](const std::string& name) {
    for (auto& [k, v] : params)
      if (k == name) return v;
    throw std::runtime_error(name);
  };
  at::Tensor x = get("model.embed_tokens.weight").index_select(0, tokens).to(at::kDouble);  // [n, H]
  auto rms = [&](const at::Tensor& v, const at::Tensor& w) {
    return w.to(at::kDouble) * v / at::sqrt(v.pow(2).mean(-1, true) + c.rms_norm_eps);
  };
  auto lin = [&](const at::Tensor& v, const std::string& w) { return v.matmul(get(w).to(at::kDouble).t()); };
  at::Tensor h = rms(x, get("model.layers.0.input_layernorm.weight"));
  at::Tensor q = lin(h, "model.layers.0.self_attn.q_proj.weight").view({n, heads, hd});
  at::Tensor k = lin(h, "model.layers.0.self_attn.k_proj.weight").view({n, kvh, hd});
  at::Tensor v = lin(h, "model.layers.0.self_attn.v_proj.weight").view({n, kvh, hd});
  // RoPE by hand: dims i and i + hd/2 rotate by angle pos * theta^(-2i/hd).
  auto rope = [&](at::Tensor t) {
    at::Tensor out = t.clone();
    auto acc = t.accessor<double, 3>();
    auto o = out.accessor<double, 3>();
    for (int64_t p = 0; p < n; ++p)
      for (int64_t hh = 0; hh < t.size(1); ++hh)
        for (int64_t i = 0; i < hd / 2; ++i) {
          const double ang = double(p) * std::pow(10000.0, -2.0 * double(i) / double(hd));
          const double a = acc[p][hh][i], b = acc[p][hh][i + hd / 2];
          o[p][hh][i] = a * std::cos(ang) - b * std::sin(ang);
          o[p][hh][i + hd / 2] = b * std::cos(ang) + a * std::sin(ang);
        }
    return out;
  };
  q = rope(q);
  k = rope(k);
  at::Tensor kr = k.repeat_interleave(heads / kvh, 1), vr = v.repeat_interleave(heads / kvh, 1);  // [n, heads, hd]
  at::Tensor att = at::zeros({n, heads, hd}, at::kDouble);
  for (int64_t hh = 0; hh < heads; ++hh) {
    at::Tensor s = q.select(1, hh).matmul(kr.select(1, hh).t()) / std::sqrt(double(hd));  // [n, n]
    s = s + at::full({n, n}, -1e30, at::kDouble).triu(1);
    att.select(1, hh).copy_(at::softmax(s, -1).matmul(vr.select(1, hh)));
  }
  x = x + lin(att.reshape({n, H}), "model.layers.0.self_attn.o_proj.weight");
  h = rms(x, get("model.layers.0.post_attention_layernorm.weight"));
  at::Tensor g = lin(h, "model.layers.0.mlp.gate_proj.weight");
  at::Tensor mlp = (g * at::sigmoid(g) * lin(h, "model.layers.0.mlp.up_proj.weight"));
  x = x + mlp.matmul(get("model.layers.0.mlp.down_proj.weight").to(at::kDouble).t());
  at::Tensor logits = lin(rms(x, get("model.norm.weight")), "lm_head.weight");

  ForwardResult r = m.prefill(tokens);
  EXPECT_LT(max_abs_diff(r.logits, logits), 1e-5);
  // The cache holds K after RoPE, [kv_heads, tokens, head_dim].
  EXPECT_LT(max_abs_diff(r.cache.keys[0], k.transpose(0, 1)), 1e-5);
  EXPECT_LT(max_abs_diff(r.cache.values[0], v.transpose(0, 1)), 1e-5);
}

// The cached keys of layer 0 are k_proj(norm(embedding)) rotated by
// position * inv_freq, with the frequencies of each RoPE scaling type
// (dynamic: recomputed from the sequence length when it exceeds
// max_position_embeddings = 16 here).
TEST(ModelTest, CachedKeysUseTheScaledRopeFrequencies) {
  struct Case {
    std::string type;
    double factor;
    int64_t n;
  };
  for (const Case& cs : {Case{"default", 1, 12}, Case{"linear", 4, 12}, Case{"dynamic", 2, 12}, Case{"dynamic", 2, 40},
                         Case{"llama3", 8, 12}}) {
    ModelConfig c = tiny_config();
    c.max_position_embeddings = 16;
    c.rope_theta = 50.0;
    c.rope_scaling.type = cs.type;
    c.rope_scaling.factor = cs.factor;
    c.rope_scaling.low_freq_factor = 1;
    c.rope_scaling.high_freq_factor = 4;
    c.rope_scaling.original_max_position_embeddings = 16;
    Model m = Model::random(c, 31);
    const auto ids = some_tokens(cs.n, 256, 9);
    const at::Tensor k = m.prefill(to_tensor(ids)).cache.keys[0].to(at::kDouble);  // [2, n, 8]
    auto params = m.named_parameters();
    at::Tensor x = params[0].second.index_select(0, to_tensor(ids)).to(at::kDouble);
    x = x / at::sqrt(x.pow(2).mean(-1, true) + c.rms_norm_eps);  // input_layernorm weights are 1
    at::Tensor raw = x.matmul(params[2].second.to(at::kDouble).t()).view({cs.n, 2, 8});  // k_proj
    // Independent frequencies: closed forms as in rope_test.cpp.
    std::vector<double> inv(4);
    double base = 50.0;
    if (cs.type == "dynamic" && cs.n > 16) base *= std::pow(cs.factor * double(cs.n) / 16.0 - (cs.factor - 1), 8.0 / 6.0);
    for (int i = 0; i < 4; ++i) {
      const double f = std::pow(base, -2.0 * i / 8.0);
      const double wl = 2 * M_PI / f;
      if (cs.type == "linear") inv[i] = f / cs.factor;
      else if (cs.type == "llama3") {
        const double sm = (16.0 / wl - 1) / 3;
        inv[i] = wl < 4 ? f : wl > 16 ? f / cs.factor : (1 - sm) * f / cs.factor + sm * f;
      } else inv[i] = f;
    }
    double worst = 0;
    for (int64_t p = 0; p < cs.n; ++p)
      for (int64_t h = 0; h < 2; ++h)
        for (int i = 0; i < 4; ++i) {
          const double a = raw[p][h][i].item<double>(), b = raw[p][h][i + 4].item<double>();
          const double ang = double(p) * inv[size_t(i)];
          worst = std::max(worst, std::abs(k[h][p][i].item<double>() - (a * std::cos(ang) - b * std::sin(ang))));
          worst = std::max(worst, std::abs(k[h][p][i + 4].item<double>() - (b * std::cos(ang) + a * std::sin(ang))));
        }
    EXPECT_LT(worst, 1e-5) << cs.type << " n=" << cs.n;
  }
}

TEST(ModelTest, ReducedPrecisionTracksFloat32) {
  Model m = Model::random(tiny_config(), 5);
  const at::Tensor t = to_tensor(some_tokens(12, 256, 6));
  const at::Tensor ref = m.prefill(t).logits;
  for (auto dt : {at::kBFloat16, at::kHalf}) {
    Model low = Model::random(tiny_config(), 5, dt);
    ForwardResult r = low.prefill(t);
    EXPECT_EQ(r.cache.keys[0].scalar_type(), dt);
    EXPECT_EQ(r.logits.scalar_type(), at::kFloat);
    EXPECT_LT(max_abs_diff(r.logits, ref), 0.05);
  }
}

TEST(ModelTest, OutOfRangeTokenIsAnError) {
  Model m = Model::random(tiny_config(), 1);
  EXPECT_THROW(m.prefill(to_tensor({1, 256})), Error);
  EXPECT_THROW(m.prefill(to_tensor({-1})), Error);
}

TEST(ModelTest, PastCacheOfAnotherShapeIsAnError) {
  ModelConfig c = tiny_config();
  Model m = Model::random(c, 1);
  c.num_key_value_heads = 4;  // another model's cache: 4 KV heads instead of 2
  KVCache other = Model::random(c, 2).prefill(to_tensor({1, 2, 3})).cache;
  try {
    m.forward(to_tensor({4}), other);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("past KV cache layer 0 has shape [4, 3, 8]"), std::string::npos) << e.what();
  }
}

// A one-layer model with a sliding window W: RoPE scores depend only on
// relative positions, so the logits at position q equal the last logits of a
// plain prefill of the W tokens q-W+1..q (HF's window: q - W < k <= q). A
// window of W + 1 gives other logits (the property sees the boundary).
TEST(ModelTest, SlidingWindowSeesExactlyTheLastWTokens) {
  ModelConfig c = tiny_config();
  c.num_hidden_layers = 1;
  c.sliding_window = 4;
  Model m = Model::random(c, 5);
  for (auto& [name, t] : m.named_parameters())  // sharper attention, so that each key matters
    if (name.find("q_proj") != std::string::npos || name.find("k_proj") != std::string::npos) t.mul_(20.0);
  ModelConfig wider = c;
  wider.sliding_window = 5;
  const Model m5(wider, param(m, "model.embed_tokens.weight"), {m.layer_weights(0)}, param(m, "model.norm.weight"),
                 param(m, "lm_head.weight"));
  const auto tokens = some_tokens(12, 256, 5);
  const at::Tensor all = m.prefill(to_tensor(tokens)).logits;
  const at::Tensor all5 = m5.prefill(to_tensor(tokens)).logits;
  for (int64_t q = 0; q < 12; ++q) {
    const int64_t from = std::max<int64_t>(0, q - 3);
    const at::Tensor last = m.prefill(to_tensor(std::vector<int64_t>(tokens.begin() + from, tokens.begin() + q + 1)))
                                .logits.select(0, q - from);
    EXPECT_LT(max_abs_diff(all[q], last), 1e-5) << q;
    if (q >= 4) EXPECT_GT(max_abs_diff(all5[q], last), 1e-4) << q;
    else EXPECT_LT(max_abs_diff(all5[q], last), 1e-5) << q;
  }
}

// Past the window, a cache (which keeps every position), chunks, decoding
// steps, query blocks and an all-keeping attention hook give one-shot's logits.
struct KeepAll : AttentionHook {
  void layer_input(int64_t, const at::Tensor&) override {}
  at::Tensor select(int64_t, const at::Tensor& q, const at::Tensor& k) override {
    return at::ones({k.size(0), q.size(1), k.size(1)}, at::TensorOptions().dtype(at::kBool));
  }
};

TEST(ModelTest, SlidingWindowWithCacheEqualsOneShot) {
  ModelConfig c = tiny_config();
  c.sliding_window = 5;
  Model m = Model::random(c, 6);
  const auto tokens = some_tokens(20, 256, 6);
  ForwardResult whole = m.prefill(to_tensor(tokens));
  ModelConfig full = c;
  full.sliding_window = 0;
  EXPECT_GT(max_abs_diff(Model::random(full, 6).prefill(to_tensor(tokens)).logits, whole.logits), 1e-6);
  m.set_query_block(3);
  EXPECT_LT(max_abs_diff(m.prefill(to_tensor(tokens)).logits, whole.logits), 1e-5);
  ForwardResult head = m.prefill(to_tensor(std::vector<int64_t>(tokens.begin(), tokens.begin() + 7)));
  ForwardResult mid = m.forward(to_tensor(std::vector<int64_t>(tokens.begin() + 7, tokens.begin() + 16)), head.cache);
  EXPECT_EQ(mid.cache.tokens(), 16);
  EXPECT_LT(max_abs_diff(mid.logits, whole.logits.slice(0, 7, 16)), 1e-5);
  KVCache cache = mid.cache;
  KeepAll hook;
  for (int64_t t = 16; t < 20; ++t) {
    ForwardResult step = m.forward(to_tensor({tokens[size_t(t)]}), cache, t % 2 ? &hook : nullptr);
    EXPECT_LT(max_abs_diff(step.logits, whole.logits.slice(0, t, t + 1)), 1e-5) << t;
    cache = step.cache;
  }
  for (int l = 0; l < 2; ++l) EXPECT_LT(max_abs_diff(cache.keys[l], whole.cache.keys[l]), 1e-5);
  EXPECT_LT(max_abs_diff(m.logits(to_tensor(tokens).unsqueeze(0))[0], whole.logits), 1e-5);
  // evaluate_text over a text 4x the window scores it as the one-shot logits do.
  const at::Tensor lp = at::log_softmax(whole.logits.to(at::kDouble), -1);
  double nll = 0;
  for (size_t t = 0; t + 1 < tokens.size(); ++t) nll -= lp[int64_t(t)][tokens[t + 1]].item<double>();
  const TextLoss loss = evaluate_text(m, tokens, 20);
  EXPECT_EQ(loss.tokens, 19);
  EXPECT_NEAR(loss.nll_nats, nll, 1e-4);
}

// qwen2: q/k/v biases are parameters with HF's names and change the result;
// a bias on another model type, or a missing one, is an error.
TEST(ModelTest, Qwen2BiasesAreNamedAndChecked) {
  ModelConfig c = tiny_config();
  c.model_type = "qwen2";
  Model m = Model::random(c, 7);
  std::vector<std::string> names;
  for (const auto& [name, t] : m.named_parameters()) names.push_back(name);
  for (const char* n : {"model.layers.1.self_attn.q_proj.bias", "model.layers.1.self_attn.k_proj.bias",
                        "model.layers.1.self_attn.v_proj.bias"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  EXPECT_EQ(std::count_if(names.begin(), names.end(),
                          [](const std::string& s) { return s.find("o_proj.bias") != std::string::npos; }),
            0);
  EXPECT_EQ(c.parameter_count(), [&] {
    int64_t sum = 0;
    for (const auto& [name, t] : m.named_parameters()) sum += t.numel();
    return sum;
  }());
  const at::Tensor t = to_tensor(some_tokens(6, 256, 7));
  const at::Tensor with = m.prefill(t).logits;
  m.layer_weights(0).k_bias.zero_();  // shares storage with the model
  EXPECT_GT(max_abs_diff(m.prefill(t).logits, with), 1e-6);

  std::vector<LayerWeights> layers{m.layer_weights(0), m.layer_weights(1)};
  layers[1].v_bias = at::Tensor();
  try {
    Model bad(c, param(m, "model.embed_tokens.weight"), layers, at::ones({32}), param(m, "lm_head.weight"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.1.self_attn.v_proj.bias"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Model(tiny_config(), param(m, "model.embed_tokens.weight"), {m.layer_weights(0), m.layer_weights(1)},
                     at::ones({32}), param(m, "lm_head.weight")),
               Error);  // llama with biases
}

// gemma2: the feedforward norms are parameters with HF's names, counted by
// parameter_count and shape-checked (missing on gemma2, present elsewhere:
// errors); the final soft cap bounds the logits in every dtype (CPU float16
// computes the caps in float32), and bfloat16/float16 stay near float32.
TEST(ModelTest, Gemma2NormsAreNamedCountedAndCapped) {
  ModelConfig c = tiny_config();
  c.model_type = "gemma2";
  c.tie_word_embeddings = true;
  c.sliding_window = 4;
  c.query_pre_attn_scalar = 20;
  c.attn_logit_softcapping = 1.0;
  c.final_logit_softcapping = 0.05;
  Model m = Model::random(c, 17);
  std::vector<std::string> names;
  for (const auto& [name, t] : m.named_parameters()) names.push_back(name);
  for (const char* n : {"model.layers.1.pre_feedforward_layernorm.weight", "model.layers.1.post_feedforward_layernorm.weight",
                        "model.layers.0.post_attention_layernorm.weight"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  EXPECT_EQ(c.parameter_count(), [&] {
    int64_t sum = 0;
    for (const auto& [name, t] : m.named_parameters()) sum += t.numel();
    return sum;
  }());
  const at::Tensor t = to_tensor(some_tokens(12, 256, 17));
  const at::Tensor f32 = m.prefill(t).logits;
  EXPECT_LE(f32.abs().max().item<float>(), 0.05f);
  EXPECT_GT(f32.abs().max().item<float>(), 0.01f);
  for (at::ScalarType dt : {at::kBFloat16, at::kHalf}) {
    const at::Tensor low = Model::random(c, 17, dt).prefill(t).logits;
    EXPECT_LE(low.abs().max().item<float>(), 0.0501f) << dt;  // bfloat16's 0.05 is 0.050049
    EXPECT_LT(max_abs_diff(low, f32), 0.01) << dt;
  }
  std::vector<LayerWeights> layers{m.layer_weights(0), m.layer_weights(1)};
  layers[1].post_feedforward_layernorm = at::Tensor();
  try {
    Model bad(c, param(m, "model.embed_tokens.weight"), layers, param(m, "model.norm.weight"), at::Tensor());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.1.post_feedforward_layernorm.weight"), std::string::npos)
        << e.what();
  }
  ModelConfig gemma = c;  // v1 has no feedforward norms (nor window, scaling or caps)
  gemma.model_type = "gemma";
  gemma.sliding_window = 0;
  gemma.query_pre_attn_scalar = gemma.attn_logit_softcapping = gemma.final_logit_softcapping = 0;
  EXPECT_THROW(Model(gemma, param(m, "model.embed_tokens.weight"), {m.layer_weights(0), m.layer_weights(1)},
                     param(m, "model.norm.weight"), at::Tensor()),
               Error);
}

// phi3 computes as mistral (same weights, same window on every layer). With
// partial_rotary_factor 0.5 (head_dim 8: rotary_dim 4) layer 0's cached keys
// are the plain projection in dims 4-7 and rotate_half RoPE with 2
// frequencies (theta^(-2i/4)) in dims 0-3.
TEST(ModelTest, Phi3ComputesAsMistralAndPartialRopeLeavesTheTailUnrotated) {
  ModelConfig mistral = tiny_config();
  mistral.model_type = "mistral";
  mistral.sliding_window = 5;
  ModelConfig phi3 = mistral;
  phi3.model_type = "phi3";
  const at::Tensor t = to_tensor(some_tokens(12, 256, 40));
  EXPECT_TRUE(at::equal(Model::random(phi3, 41).prefill(t).logits, Model::random(mistral, 41).prefill(t).logits));

  phi3.partial_rotary_factor = 0.5;
  ASSERT_EQ(phi3.rotary_dim(), 4);
  const Model m = Model::random(phi3, 42);
  const at::Tensor keys = m.prefill(t).cache.keys[0];  // [kv_heads 2, 12, 8]
  const auto params = m.named_parameters();
  const at::Tensor x = at::embedding(params.front().second, t);  // [12, 32]; input norm weights are 1
  const at::Tensor h = x * at::rsqrt(x.pow(2).mean(-1, true) + phi3.rms_norm_eps);
  const at::Tensor k = at::linear(h, m.layer_weights(0).k_proj).view({12, 2, 8}).transpose(0, 1);
  EXPECT_TRUE(at::allclose(keys.narrow(2, 4, 4), k.narrow(2, 4, 4), 1e-5, 1e-6));
  const at::Tensor pos = at::arange(12, at::kFloat).unsqueeze(1);
  const at::Tensor inv = at::tensor({1.0f, float(1.0 / std::sqrt(10000.0))}).unsqueeze(0);
  const at::Tensor ang = at::cat({pos * inv, pos * inv}, 1);  // [12, 4]
  const at::Tensor r = k.narrow(2, 0, 4);
  const at::Tensor rot = at::cat({-r.narrow(2, 2, 2), r.narrow(2, 0, 2)}, 2);
  EXPECT_TRUE(at::allclose(keys.narrow(2, 0, 4), r * ang.cos() + rot * ang.sin(), 1e-5, 1e-6));
  EXPECT_FALSE(at::allclose(keys.narrow(2, 0, 4), r, 1e-3, 1e-4));  // it does rotate
  ModelConfig bad = phi3;
  bad.model_type = "llama";
  EXPECT_THROW(bad.validate("x"), Error);  // partial RoPE is phi3's only
}

TEST(ModelTest, WrongWeightShapeIsAnErrorNamingTheTensor) {
  ModelConfig c = tiny_config();
  Model m = Model::random(c, 1);
  std::vector<LayerWeights> layers;
  auto p = m.named_parameters();
  c.hidden_size = 32;
  try {
    Model bad(c, at::zeros({256, 31}), {}, at::ones({32}), at::zeros({256, 32}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.embed_tokens.weight"), std::string::npos) << e.what();
  }
}

TEST(KVCacheTest, ChunkRoundTripAndViews) {
  Model m = Model::random(tiny_config(), 3, at::kBFloat16);
  KVCache cache = m.prefill(to_tensor(some_tokens(9, 256, 2))).cache;
  codec::KVChunk chunk = to_chunk(cache, 100);
  EXPECT_EQ(chunk.dtype, codec::DType::kBF16);
  EXPECT_EQ(chunk.tokens, 9u);
  EXPECT_EQ(chunk.token_begin, 100u);
  EXPECT_EQ(chunk.shape, (codec::KVShape{2, 2, 8}));
  EXPECT_EQ(chunk.at(1, codec::Kind::kValue, 1, 4, 3), cache.values[1][1][4][3].item<float>());
  EXPECT_EQ(chunk.at(0, codec::Kind::kKey, 0, 8, 7), cache.keys[0][0][8][7].item<float>());
  KVCache view = view_chunk(chunk);
  EXPECT_EQ(view.keys[1].data_ptr<float>(), chunk.plane(1, codec::Kind::kKey).data());  // no copy
  KVCache back = from_chunk(chunk, at::kBFloat16);
  for (int l = 0; l < 2; ++l) {
    EXPECT_TRUE(at::equal(back.keys[l], cache.keys[l]));
    EXPECT_TRUE(at::equal(back.values[l], cache.values[l]));
  }
  KVCache s = cache.slice(2, 3);
  EXPECT_EQ(s.tokens(), 3);
  EXPECT_TRUE(at::equal(s.concat(cache.slice(5, 4)).keys[0], cache.slice(2, 7).keys[0]));
}

TEST(EvaluateTest, TextLossMatchesHandComputedSum) {
  Model m = Model::random(tiny_config(), 7);
  const auto ids = some_tokens(20, 256, 8);
  const at::Tensor logits = m.prefill(to_tensor(ids)).logits.to(at::kDouble);
  double sum = 0;
  for (int i = 1; i < 20; ++i) sum -= at::log_softmax(logits[i - 1], -1)[ids[size_t(i)]].item<double>();
  TextLoss whole = evaluate_text(m, ids, 64);
  EXPECT_EQ(whole.tokens, 19);
  EXPECT_NEAR(whole.nll_nats, sum, 1e-6);
  // Windows of 8 advancing by 4: every token is scored exactly once.
  TextLoss windowed = evaluate_text(m, ids, 8);
  EXPECT_EQ(windowed.tokens, 19);
  EXPECT_GT(windowed.nll_nats, 0.0);
  // A random model is close to uniform: about ln(256) nats per token.
  EXPECT_NEAR(whole.nats_per_token(), std::log(256.0), 0.5);
}

TEST(EvaluateTest, DegradedCacheQuality) {
  Model m = Model::random(tiny_config(), 7);
  const auto ctx = some_tokens(16, 256, 1);
  KVCache exact = m.prefill(to_tensor(ctx)).cache;
  const auto cont = some_tokens(10, 256, 2);
  CacheQuality same = compare_caches(m, exact, exact, cont, 5);
  EXPECT_EQ(same.relative_increase, 0.0);
  EXPECT_EQ(same.agreement, 1.0);
  // continuation_nll equals scoring the continuation inside one prefill.
  std::vector<int64_t> all = ctx;
  all.insert(all.end(), cont.begin(), cont.end());
  const at::Tensor logits = m.prefill(to_tensor(all)).logits.to(at::kDouble);
  double sum = 0;
  for (size_t i = 17; i < all.size(); ++i) sum -= at::log_softmax(logits[int64_t(i) - 1], -1)[all[i]].item<double>();
  EXPECT_NEAR(same.nll_exact_nats, sum / 9.0, 1e-5);
  // Greedy decoding after the cache equals greedy decoding after a full prefill.
  const auto g = greedy_decode(m, exact, cont, 3);
  std::vector<int64_t> seq = all;
  for (int i = 0; i < 3; ++i) {
    const int64_t next = m.prefill(to_tensor(seq)).logits[int64_t(seq.size()) - 1].argmax().item<int64_t>();
    EXPECT_EQ(g[size_t(i)], next);
    seq.push_back(next);
  }
  // Zeroed values: a different cache, higher loss in general and a nonzero change.
  KVCache zero = exact;
  for (auto& v : zero.values) v = at::zeros_like(v);
  CacheQuality q = compare_caches(m, exact, zero, cont, 5);
  EXPECT_NE(q.nll_degraded_nats, q.nll_exact_nats);
  EXPECT_EQ(q.agreement_tokens, 5);
  EXPECT_NEAR(q.relative_increase, q.nll_degraded_nats / q.nll_exact_nats - 1, 1e-12);
  // The reference computed once gives the same numbers.
  const CacheReference ref = make_reference(m, exact, cont, 5);
  const CacheQuality r = compare_to_reference(m, ref, zero);
  EXPECT_EQ(r.nll_degraded_nats, q.nll_degraded_nats);
  EXPECT_EQ(r.agreement, q.agreement);
  EXPECT_THROW(compare_to_reference(m, ref, exact.slice(0, 4)), Error);
  EXPECT_EQ(r.kl_nats, q.kl_nats);
}

TEST(EvaluateTest, KlDivergenceOfTheNextTokenDistribution) {
  Model m = Model::random(tiny_config(), 7);
  const auto ctx = some_tokens(16, 256, 1);
  KVCache exact = m.prefill(to_tensor(ctx)).cache;
  const auto cont = some_tokens(40, 256, 2);
  const CacheQuality same = compare_caches(m, exact, exact, cont, 0);
  EXPECT_EQ(same.kl_nats, 0.0);
  EXPECT_EQ(same.top1_agreement, 1.0);
  EXPECT_EQ(same.kl_positions, 39);

  // Against a direct computation from one prefill of context + continuation
  // (exact) and from the degraded cache's logits, position by position.
  KVCache noisy = exact;
  for (auto& v : noisy.values) v = 0.6 * v;  // deterministic damage
  const CacheQuality q = compare_caches(m, exact, noisy, cont, 0);
  std::vector<int64_t> all = ctx;
  all.insert(all.end(), cont.begin(), cont.end());
  const at::Tensor lp = at::log_softmax(m.prefill(to_tensor(all)).logits.to(at::kDouble), -1);
  const at::Tensor lq = at::log_softmax(m.forward(to_tensor(cont), noisy).logits.to(at::kDouble), -1);
  double kl = 0;
  int same_top = 0;
  for (int64_t i = 0; i < 39; ++i) {
    const at::Tensor p = lp[16 + i], r = lq[i];  // row 16 + i of the prefill predicts cont[i + 1]
    kl += (p.exp() * (p - r)).sum().item<double>();
    same_top += p.argmax().item<int64_t>() == r.argmax().item<int64_t>();
  }
  EXPECT_GT(q.kl_nats, 1e-6);  // a random model hardly reads its values: small but not 0
  EXPECT_NEAR(q.kl_nats, kl / 39, 1e-9 + 1e-4 * q.kl_nats);
  EXPECT_DOUBLE_EQ(q.top1_agreement, same_top / 39.0);
  EXPECT_GT(q.kl_stderr_nats, 0.0);
  EXPECT_LT(q.kl_stderr_nats, q.kl_nats);
}

TEST(EvaluateTest, KlStatsOnKnownDistributions) {
  // Two fixed distributions over 3 tokens at every position: KL is the closed
  // form at each, its standard error 0, argmax agreement by construction.
  const at::Tensor p = at::log(at::tensor({0.5, 0.3, 0.2}, at::kDouble)).repeat({64, 1});
  const at::Tensor q = at::log(at::tensor({0.2, 0.3, 0.5}, at::kDouble)).repeat({64, 1});
  const KlStats s = kl_divergence(p, q);
  const double want = 0.5 * std::log(0.5 / 0.2) + 0.2 * std::log(0.2 / 0.5);
  EXPECT_NEAR(s.mean_nats, want, 1e-12);
  EXPECT_NEAR(s.stderr_nats, 0.0, 1e-12);
  EXPECT_EQ(s.top1_agreement, 0.0);
  EXPECT_EQ(kl_divergence(p, p).mean_nats, 0.0);
  EXPECT_EQ(kl_divergence(p, p).top1_agreement, 1.0);
  // KL alternating between blocks of 16 positions (0 then `want`): the batch
  // means see the slow variation, so their error exceeds the i.i.d. one for
  // positions that are correlated in runs; alternating every position the
  // block means are all equal and the batch-means error is 0.
  at::Tensor runs = p.clone(), alt = p.clone();
  for (int64_t i = 0; i < 64; ++i) {
    if ((i / 16) % 2) runs[i] = q[i];
    if (i % 2) alt[i] = q[i];
  }
  const KlStats r = kl_divergence(runs, p), a = kl_divergence(alt, p);
  EXPECT_NEAR(r.mean_nats, a.mean_nats, 1e-12);
  EXPECT_GT(r.stderr_nats, r.iid_stderr_nats);
  EXPECT_NEAR(a.stderr_nats, 0.0, 1e-12);
  EXPECT_GT(a.iid_stderr_nats, 0.0);
  EXPECT_THROW(kl_divergence(p, q.slice(0, 0, 10)), Error);
}

}  // namespace
}  // namespace kvs::llm
