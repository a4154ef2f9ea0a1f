// RoPE frequencies against closed forms computed here in double precision
// (YaRN's against tests/llm/data/yarn_rope.json, from make_golden.py), and
// config.json parsing (rope_scaling, rope_parameters, errors).
#include <cmath>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/files.h"
#include "llm/config.h"
#include "tests/llm/test_util.h"

namespace kvs::llm {
namespace {

ModelConfig rope_config(const std::string& type, double factor) {
  ModelConfig c = testing::tiny_config();
  c.head_dim = 16;
  c.rope_theta = 500000.0;
  c.max_position_embeddings = 64;
  c.rope_scaling.type = type;
  c.rope_scaling.factor = factor;
  return c;
}

double plain(double theta, int i, int d) { return 1.0 / std::pow(theta, 2.0 * i / d); }

TEST(RopeTest, DefaultAndLinear) {
  auto def = rope_inv_freq(rope_config("default", 1), 10);
  auto lin = rope_inv_freq(rope_config("linear", 4), 10);
  ASSERT_EQ(def.size(), 8u);
  for (int i = 0; i < 8; ++i) {
    EXPECT_NEAR(def[i], plain(500000.0, i, 16), 1e-6 * plain(500000.0, i, 16));
    EXPECT_NEAR(lin[i], plain(500000.0, i, 16) / 4, 1e-6 * plain(500000.0, i, 16));
  }
  EXPECT_FLOAT_EQ(def[0], 1.0f);
}

TEST(RopeTest, DynamicNtkRecomputesBaseOnlyBeyondMaxPositions) {
  const ModelConfig c = rope_config("dynamic", 2);
  auto short_seq = rope_inv_freq(c, 64);
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(short_seq[i], plain(500000.0, i, 16), 1e-6 * plain(500000.0, i, 16));
  // seq_len 128 = 2x max: base * (2 * 128/64 - 1)^(16/14) = base * 3^(8/7).
  const double base = 500000.0 * std::pow(3.0, 16.0 / 14.0);
  auto long_seq = rope_inv_freq(c, 128);
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(long_seq[i], plain(base, i, 16), 1e-5 * plain(base, i, 16)) << i;
}

TEST(RopeTest, Llama3SmoothInterpolation) {
  ModelConfig c = rope_config("llama3", 8);
  c.rope_theta = 10000.0;
  c.rope_scaling.low_freq_factor = 1;
  c.rope_scaling.high_freq_factor = 4;
  c.rope_scaling.original_max_position_embeddings = 64;
  auto inv = rope_inv_freq(c, 10);
  // Wavelengths 2*pi/f: short ones (< 64/4 = 16) kept, long ones (> 64/1) divided
  // by 8, in between interpolated with s = (64/wavelen - 1) / (4 - 1).
  int kept = 0, divided = 0, mixed = 0;
  for (int i = 0; i < 8; ++i) {
    const double f = plain(10000.0, i, 16);
    const double wl = 2 * M_PI / f;
    double expect;
    if (wl < 16) {
      expect = f;
      ++kept;
    } else if (wl > 64) {
      expect = f / 8;
      ++divided;
    } else {
      const double s = (64 / wl - 1) / 3;
      expect = (1 - s) * f / 8 + s * f;
      ++mixed;
    }
    EXPECT_NEAR(inv[i], expect, 1e-5 * expect) << i;
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(mixed, 0);  // the test covers all three regimes
}

const char* kBase = R"({"model_type": "llama", "vocab_size": 256, "hidden_size": 32, "intermediate_size": 48,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
  "rms_norm_eps": 1e-6)";

// kBase followed by `rest` (fmt avoids a GCC 12 -Warray-bounds false positive).
std::string cfg(const char* rest) { return fmt::format("{}{}", kBase, rest); }

TEST(ConfigTest, ParsesRopeScalingAndRopeParameters) {
  ModelConfig a = parse_config(cfg(R"(, "rope_theta": 1000.0, "rope_scaling": {"type": "linear", "factor": 2.0}})"), "c.json");
  EXPECT_EQ(a.rope_scaling.type, "linear");
  EXPECT_EQ(a.rope_scaling.factor, 2.0);
  EXPECT_EQ(a.rope_theta, 1000.0);
  EXPECT_EQ(a.effective_head_dim(), 8);
  ModelConfig b = parse_config(cfg(R"(, "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5,
     "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}})"), "c.json");
  EXPECT_EQ(b.rope_scaling.type, "llama3");
  EXPECT_EQ(b.rope_theta, 5e5);
  EXPECT_EQ(b.rope_scaling.original_max_position_embeddings, 64);
  ModelConfig d = parse_config(cfg(R"(, "rope_parameters": {"rope_type": "default", "rope_theta": 7.0}})"), "c.json");
  EXPECT_EQ(d.rope_scaling.type, "default");
  EXPECT_EQ(d.rope_theta, 7.0);
  // Round trip through config_to_json.
  ModelConfig e = parse_config(config_to_json(b), "e.json");
  EXPECT_EQ(e.rope_scaling.type, "llama3");
  EXPECT_EQ(e.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(e.num_key_value_heads, 2);
}

void expect_config_error(const std::string& text, std::initializer_list<std::string> fragments) {
  try {
    parse_config(text, "cfg/config.json");
    FAIL() << text;
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cfg/config.json"), std::string::npos) << m;
    for (const auto& f : fragments) EXPECT_NE(m.find(f), std::string::npos) << m << " lacks " << f;
  }
}

TEST(ConfigTest, ErrorsNameFileAndKey) {
  expect_config_error(R"({"model_type": "llama", "vocab_size": 256})", {"hidden_size"});
  expect_config_error("{\"model_type\": \"llama\"", {"JSON"});
  expect_config_error(R"({"model_type": "mixtral", "vocab_size": 256})", {"unsupported architecture", "mixtral"});
  expect_config_error(cfg(R"(, "attention_bias": true})"), {"unsupported architecture", "attention_bias"});
  expect_config_error(cfg(R"(, "rope_scaling": {"rope_type": "longrope", "factor": 2}})"), {"longrope"});
  expect_config_error(cfg(R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8}})"), {"low_freq_factor"});
  expect_config_error(cfg(R"(, "num_key_value_heads": 3})"), {"num_key_value_heads"});
  expect_config_error(cfg(R"(, "hidden_size": "x"})"), {"hidden_size"});
  EXPECT_NO_THROW(parse_config(cfg("}"), "ok.json"));
}

// Fields of real HF configs that change the computation: each is used, or the
// config is refused naming the key; none is silently dropped.
TEST(ConfigTest, RefusesWhatItWouldOtherwiseIgnore) {
  // Scaling keys without a type (HF fails on these too) would silently mean no scaling.
  expect_config_error(cfg(R"(, "rope_scaling": {"factor": 8.0}})"), {"rope_scaling", "factor", "rope_type"});
  expect_config_error(cfg(R"(, "rope_parameters": {"rope_theta": 1e4, "factor": 2.0}})"),
                      {"rope_parameters", "factor"});
  expect_config_error(cfg(R"(, "rope_scaling": {"rope_type": 3, "factor": 2.0}})"),
                      {"rope_scaling.rope_type", "string"});
  expect_config_error(cfg(R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
      "high_freq_factor": 4.0, "original_max_position_embeddings": 0}})"), {"original_max_position_embeddings"});
  expect_config_error(cfg(R"(, "quantization_config": {"quant_method": "gptq", "bits": 4}})"), {"quantization_config"});
  expect_config_error(cfg(R"(, "partial_rotary_factor": 0.5})"), {"partial_rotary_factor"});
  expect_config_error(cfg(R"(, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4,
      "partial_rotary_factor": 0.5}})"),
                      {"partial_rotary_factor"});
  expect_config_error(cfg(R"(, "hidden_act": "gelu"})"), {"hidden_act"});
  expect_config_error(cfg(R"(, "mlp_bias": true})"), {"mlp_bias"});
  // Mistral: an absent sliding_window means HF's 4096-token window; a given
  // one is kept (every layer attends within it).
  const std::string mistral = R"({"model_type": "mistral", "vocab_size": 256, "hidden_size": 64,
    "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 16, "max_position_embeddings": 128,
    "rms_norm_eps": 1e-6)";
  expect_config_error(mistral + R"(, "num_key_value_heads": 4})", {"sliding_window"});
  expect_config_error(mistral + R"(, "num_key_value_heads": 4, "sliding_window": 0})", {"sliding_window"});
  const ModelConfig windowed = parse_config(mistral + R"(, "num_key_value_heads": 4, "sliding_window": 64})", "m.json");
  EXPECT_EQ(windowed.sliding_window, 64);
  const std::string saved = config_to_json(windowed);
  EXPECT_NE(saved.find("\"MistralForCausalLM\""), std::string::npos) << saved;
  EXPECT_EQ(parse_config(saved, "saved.json").sliding_window, 64);
  EXPECT_EQ(parse_config(mistral + R"(, "sliding_window": null})", "m.json").sliding_window, 0);
  // MistralConfig's default for an absent num_key_value_heads is 8; null means one per head.
  EXPECT_EQ(parse_config(mistral + R"(, "sliding_window": null})", "m.json").num_key_value_heads, 8);
  EXPECT_EQ(parse_config(mistral + R"(, "sliding_window": null, "num_key_value_heads": null})", "m.json")
                .num_key_value_heads, 16);
  // Accepted: a type-less rope_parameters with only rope_theta (v5's default), factor 1.
  ModelConfig ok =
      parse_config(cfg(R"(, "rope_parameters": {"rope_theta": 7.0}, "partial_rotary_factor": 1.0})"), "ok.json");
  EXPECT_EQ(ok.rope_scaling.type, "default");
  EXPECT_EQ(ok.rope_theta, 7.0);
  // A config built in code is validated too.
  ModelConfig bad = testing::tiny_config();
  bad.rope_scaling.type = "longrope";
  EXPECT_THROW(bad.validate("code"), Error);
}

// Qwen2.5-0.5B's config.json (as published): biases implied by model_type,
// tied embeddings, sliding_window present but off (use_sliding_window false).
const char* kQwen = R"({"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
  "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896,
  "initializer_range": 0.02, "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24,
  "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "transformers_version": "4.40.1", "use_cache": true, "vocab_size": 151936)";

std::string qwen(const char* rest) { return fmt::format("{}{}", kQwen, rest); }

TEST(ConfigTest, Qwen2ParsesAsHfQwen2Config) {
  const ModelConfig c = parse_config(qwen(R"(, "use_sliding_window": false})"), "q.json");
  EXPECT_EQ(c.model_type, "qwen2");
  EXPECT_TRUE(c.qkv_bias());
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.effective_head_dim(), 64);
  EXPECT_EQ(c.sliding_window, 0);  // HF: None unless use_sliding_window
  for (int64_t l = 0; l < 24; ++l) EXPECT_EQ(c.layer_window(l), 0);
  // Embeddings (tied) + 24 x (q/k/v/o + q/k/v biases + MLP + 2 norms) + final
  // norm: the model card's 0.49B (0.36B without embeddings).
  EXPECT_EQ(c.parameter_count(), 494032768);
  // Absent keys take Qwen2Config's defaults: use_sliding_window false, 32 KV heads.
  const std::string minimal = R"({"model_type": "qwen2", "vocab_size": 64, "hidden_size": 256,
    "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 32})";
  const ModelConfig d = parse_config(minimal, "d.json");
  EXPECT_EQ(d.num_key_value_heads, 32);
  EXPECT_EQ(d.rms_norm_eps, 1e-6);
  EXPECT_EQ(d.max_position_embeddings, 32768);
  EXPECT_EQ(d.sliding_window, 0);
  // use_sliding_window: layers >= max_window_layers are windowed (absent
  // sliding_window: 4096), or those layer_types names.
  const ModelConfig w = parse_config(qwen(R"(, "use_sliding_window": true, "max_window_layers": 22})"), "w.json");
  EXPECT_EQ(w.sliding_window, 32768);
  EXPECT_EQ(w.layer_window(21), 0);
  EXPECT_EQ(w.layer_window(22), 32768);
  EXPECT_EQ(w.layer_window(23), 32768);
  const ModelConfig w2 = parse_config(fmt::format("{}{}", R"({"model_type": "qwen2", "vocab_size": 64,
    "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "use_sliding_window": true, "max_window_layers": 1)",
                                             R"(, "layer_types": ["sliding_attention", "full_attention"]})"),
                                      "w2.json");
  EXPECT_EQ(w2.sliding_window, 4096);
  EXPECT_EQ(w2.layer_window(0), 4096);  // layer_types wins over max_window_layers
  EXPECT_EQ(w2.layer_window(1), 0);
  // Round trip through config_to_json.
  for (const ModelConfig* x : {&c, &w, &w2}) {
    const ModelConfig y = parse_config(config_to_json(*x), "y.json");
    EXPECT_EQ(y.model_type, "qwen2");
    EXPECT_EQ(y.layer_types, x->layer_types);
    for (int64_t l = 0; l < x->num_hidden_layers; ++l) EXPECT_EQ(y.layer_window(l), x->layer_window(l)) << l;
    EXPECT_EQ(y.parameter_count(), x->parameter_count());
  }
}

TEST(ConfigTest, Qwen2RefusesWhatItDoesNotImplement) {
  expect_config_error(qwen(R"(, "use_sliding_window": "yes"})"), {"use_sliding_window"});
  expect_config_error(qwen(R"(, "use_sliding_window": true, "sliding_window": 0})"), {"sliding_window"});
  expect_config_error(qwen(R"(, "sliding_window": "x"})"), {"sliding_window"});
  expect_config_error(qwen(R"(, "max_window_layers": -1})"), {"max_window_layers"});
  // layer_types: one per layer, of the two kinds implemented; a sliding
  // layer needs a window (HF raises then too).
  expect_config_error(qwen(R"(, "layer_types": ["full_attention"]})"), {"layer_types", "24"});
  const std::string two = R"({"model_type": "qwen2", "vocab_size": 64, "hidden_size": 64, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2)";
  expect_config_error(two + R"(, "layer_types": ["full_attention", "chunked_attention"]})",
                      {"unsupported architecture", "layer_types[1]", "chunked_attention"});
  expect_config_error(two + R"(, "layer_types": ["full_attention", "sliding_attention"]})",
                      {"layer_types[1]", "sliding_attention", "no window"});
  expect_config_error(two + R"(, "use_sliding_window": true, "sliding_window": null,
    "layer_types": ["sliding_attention", "full_attention"]})", {"layer_types[0]", "no window"});
  // Architecture names must agree with model_type (biases or not).
  expect_config_error(R"({"architectures": ["LlamaForCausalLM"], "model_type": "qwen2"})", {"LlamaForCausalLM", "qwen2"});
  expect_config_error(cfg(R"(, "architectures": ["Qwen2ForCausalLM"]})"), {"Qwen2ForCausalLM", "llama"});
  // What Llama refuses Qwen2 refuses too.
  expect_config_error(qwen(R"(, "rope_scaling": {"rope_type": "longrope", "factor": 4.0,
    "original_max_position_embeddings": 32768}})"), {"longrope"});
  expect_config_error(qwen(R"(, "hidden_act": "gelu"})"), {"hidden_act"});
  // layer_types is Qwen2's only.
  ModelConfig llama = testing::tiny_config();
  llama.layer_types = {"full_attention", "full_attention"};
  EXPECT_THROW(llama.validate("code"), Error);
}

// Gemma-2B's config.json (as published, with hidden_activation).
const char* kGemma = R"({"architectures": ["GemmaForCausalLM"], "attention_bias": false,
  "attention_dropout": 0.0, "bos_token_id": 2, "eos_token_id": 1, "head_dim": 256, "hidden_size": 2048,
  "initializer_range": 0.02, "intermediate_size": 16384, "max_position_embeddings": 8192, "model_type": "gemma",
  "num_attention_heads": 8, "num_hidden_layers": 18, "num_key_value_heads": 1, "pad_token_id": 0,
  "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 10000.0, "torch_dtype": "bfloat16",
  "use_cache": true, "vocab_size": 256000)";

std::string gemma(const char* rest) { return fmt::format("{}{}", kGemma, rest); }

TEST(ConfigTest, GemmaParsesAsHfGemmaConfig) {
  const ModelConfig c =
      parse_config(gemma(R"(, "hidden_act": "gelu", "hidden_activation": "gelu_pytorch_tanh"})"), "g.json");
  EXPECT_TRUE(c.gemma());
  EXPECT_TRUE(c.tie_word_embeddings);  // GemmaConfig's default
  EXPECT_EQ(c.effective_head_dim(), 256);
  EXPECT_EQ(c.num_key_value_heads, 1);
  // Tied embeddings + 18 x (attention + GeGLU + 2 norms) + final norm: Gemma-2B's 2.51B.
  EXPECT_EQ(c.parameter_count(), 2506172416);
  EXPECT_NO_THROW(parse_config(gemma(R"(, "hidden_act": "gelu_pytorch_tanh"})"), "g.json"));
  const ModelConfig d = parse_config(R"({"model_type": "gemma", "vocab_size": 64, "hidden_size": 32,
    "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 16})", "d.json");
  EXPECT_EQ(d.effective_head_dim(), 256);  // GemmaConfig's defaults
  EXPECT_EQ(d.num_key_value_heads, 16);
  EXPECT_EQ(d.max_position_embeddings, 8192);
  EXPECT_EQ(d.rms_norm_eps, 1e-6);
  const ModelConfig e = parse_config(config_to_json(c), "e.json");
  EXPECT_TRUE(e.gemma());
  EXPECT_EQ(e.parameter_count(), c.parameter_count());
}

TEST(ConfigTest, GemmaRefusesWhatItDoesNotImplement) {
  // A bare "gelu": exact GELU in HF 4.38, the tanh form in 4.39+ (hidden_activation's default).
  expect_config_error(gemma(R"(, "hidden_act": "gelu"})"), {"hidden_act", "gelu", "hidden_activation"});
  expect_config_error(gemma(R"(, "hidden_activation": "gelu"})"), {"hidden_activation", "gelu"});
  expect_config_error(gemma(R"(, "hidden_act": "silu", "hidden_activation": "gelu_pytorch_tanh"})"), {"hidden_act"});
  expect_config_error(gemma(R"(, "use_bidirectional_attention": true})"), {"use_bidirectional_attention"});
  expect_config_error(gemma(R"(, "attention_bias": true})"), {"attention_bias"});
  expect_config_error(R"({"architectures": ["GemmaForCausalLM"], "model_type": "llama"})", {"GemmaForCausalLM", "llama"});
  expect_config_error(R"({"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma"})",
                      {"Gemma2ForCausalLM", "gemma"});
}

// Gemma-2-2B's sizes (26 layers, hidden 2304, 8 heads over 4 KV heads of
// 256) with the keys of Gemma 2's published config.json files.
const char* kGemma2 = R"({"architectures": ["Gemma2ForCausalLM"], "attention_bias": false,
  "attention_dropout": 0.0, "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid",
  "eos_token_id": 1, "final_logit_softcapping": 30.0, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
  "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304, "initializer_range": 0.02,
  "intermediate_size": 9216, "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 8,
  "num_hidden_layers": 26, "num_key_value_heads": 4, "pad_token_id": 0, "query_pre_attn_scalar": 256,
  "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096, "torch_dtype": "float32",
  "use_cache": true, "vocab_size": 256000)";

std::string gemma2(const char* rest) { return fmt::format("{}{}", kGemma2, rest); }

TEST(ConfigTest, Gemma2ParsesAsHfGemma2Config) {
  const ModelConfig c = parse_config(gemma2("}"), "g2.json");
  EXPECT_TRUE(c.gemma2());
  EXPECT_TRUE(c.gemma_family());
  EXPECT_FALSE(c.gemma());
  EXPECT_TRUE(c.sandwich_norms());
  EXPECT_TRUE(c.tie_word_embeddings);  // Gemma2Config's default
  EXPECT_EQ(c.attn_logit_softcapping, 50.0);
  EXPECT_EQ(c.final_logit_softcapping, 30.0);
  EXPECT_DOUBLE_EQ(c.attention_scale(), 1.0 / 16.0);
  // Gemma2Config's layer_types: sliding on even layers.
  for (int64_t l = 0; l < 26; ++l) EXPECT_EQ(c.layer_window(l), l % 2 == 0 ? 4096 : 0) << l;
  // Tied embeddings + 26 x (attention + GeGLU + 4 norms) + final norm: Gemma-2-2B's 2.61B.
  EXPECT_EQ(c.parameter_count(), 2614341888);
  // Written back and read again: the same model.
  const ModelConfig e = parse_config(config_to_json(c), "e.json");
  EXPECT_TRUE(e.gemma2());
  EXPECT_EQ(e.parameter_count(), c.parameter_count());
  EXPECT_EQ(e.attention_scale(), c.attention_scale());
  EXPECT_EQ(e.attn_logit_softcapping, 50.0);
  EXPECT_EQ(e.final_logit_softcapping, 30.0);
  for (int64_t l = 0; l < 26; ++l) EXPECT_EQ(e.layer_window(l), c.layer_window(l)) << l;

  // Gemma2Config's defaults where the file says nothing; null caps are no caps.
  const ModelConfig d = parse_config(R"({"model_type": "gemma2", "vocab_size": 64, "hidden_size": 32,
    "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 8})", "d.json");
  EXPECT_EQ(d.effective_head_dim(), 256);
  EXPECT_EQ(d.num_key_value_heads, 4);
  EXPECT_EQ(d.max_position_embeddings, 8192);
  EXPECT_EQ(d.rms_norm_eps, 1e-6);
  EXPECT_EQ(d.sliding_window, 4096);
  EXPECT_EQ(d.query_pre_attn_scalar, 256);
  EXPECT_EQ(d.attn_logit_softcapping, 50.0);
  EXPECT_EQ(d.final_logit_softcapping, 30.0);
  EXPECT_EQ(d.layer_types, (std::vector<std::string>{"sliding_attention", "full_attention", "sliding_attention"}));
  const ModelConfig n = parse_config(gemma2(R"(, "attn_logit_softcapping": null, "final_logit_softcapping": null,
    "query_pre_attn_scalar": 144, "head_dim": 128})"), "n.json");
  EXPECT_EQ(n.attn_logit_softcapping, 0.0);
  EXPECT_EQ(n.final_logit_softcapping, 0.0);
  EXPECT_DOUBLE_EQ(n.attention_scale(), 1.0 / 12.0);  // Gemma-2-27B's scaling, not head_dim's
  const ModelConfig nn = parse_config(config_to_json(n), "nn.json");
  EXPECT_EQ(nn.attn_logit_softcapping, 0.0);
  EXPECT_EQ(nn.final_logit_softcapping, 0.0);
  // Newer configs list layer_types: honoured.
  const ModelConfig t = parse_config(R"({"model_type": "gemma2", "vocab_size": 64, "hidden_size": 32,
    "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 8, "sliding_window": 16,
    "layer_types": ["full_attention", "sliding_attention", "sliding_attention"]})", "t.json");
  EXPECT_EQ(t.layer_window(0), 0);
  EXPECT_EQ(t.layer_window(1), 16);
  EXPECT_EQ(t.layer_window(2), 16);
  // A windowless config with all layers full.
  const ModelConfig f = parse_config(R"({"model_type": "gemma2", "vocab_size": 64, "hidden_size": 32,
    "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 8, "sliding_window": null,
    "layer_types": ["full_attention", "full_attention"]})", "f.json");
  EXPECT_EQ(f.layer_window(0), 0);
}

TEST(ConfigTest, Gemma2RefusesWhatItDoesNotImplement) {
  expect_config_error(gemma2(R"(, "sliding_window": null})"),
                      {"gemma2 layer 0 is sliding_attention", "sliding_window", "even layers"});
  expect_config_error(gemma2(R"(, "sliding_window": 0})"), {"sliding_window"});
  expect_config_error(gemma2(R"(, "attn_logit_softcapping": 0})"), {"attn_logit_softcapping"});
  expect_config_error(gemma2(R"(, "final_logit_softcapping": -1})"), {"final_logit_softcapping"});
  expect_config_error(gemma2(R"(, "query_pre_attn_scalar": 0})"), {"query_pre_attn_scalar"});
  expect_config_error(gemma2(R"(, "layer_types": ["full_attention"]})"), {"layer_types", "1 entries", "26"});
  expect_config_error(gemma2(R"(, "layer_types": "sliding_attention"})"), {"layer_types", "list"});
  expect_config_error(gemma2(R"(, "attention_bias": true})"), {"attention_bias"});
  expect_config_error(gemma2(R"(, "use_bidirectional_attention": true})"), {"use_bidirectional_attention"});
  expect_config_error(gemma2(R"(, "hidden_activation": "gelu"})"), {"hidden_activation", "gelu"});
  expect_config_error(R"({"architectures": ["GemmaForCausalLM"], "model_type": "gemma2"})",
                      {"GemmaForCausalLM", "gemma2"});
  expect_config_error(R"({"model_type": "gemma3"})", {"unsupported architecture", "gemma3", "gemma3_text"});
  // The scaling and the caps are Gemma 2's only.
  ModelConfig llama = testing::tiny_config();
  llama.attn_logit_softcapping = 5.0;
  EXPECT_THROW(llama.validate("code"), Error);
}

// Gemma-3-1B's config.json (Gemma3ForCausalLM; keys as published).
const char* kGemma3 = R"({"architectures": ["Gemma3ForCausalLM"], "attention_bias": false,
  "attention_dropout": 0.0, "attn_logit_softcapping": null, "bos_token_id": 2, "cache_implementation": "hybrid",
  "eos_token_id": [1, 106], "final_logit_softcapping": null, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
  "hidden_size": 1152, "initializer_range": 0.02, "intermediate_size": 6912, "max_position_embeddings": 32768,
  "model_type": "gemma3_text", "num_attention_heads": 4, "num_hidden_layers": 26, "num_key_value_heads": 1,
  "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000,
  "rope_scaling": null, "rope_theta": 1000000, "sliding_window": 512, "sliding_window_pattern": 6,
  "torch_dtype": "bfloat16", "use_cache": true, "vocab_size": 262144)";

std::string gemma3(const char* rest) { return fmt::format("{}{}", kGemma3, rest); }

TEST(ConfigTest, Gemma3TextParsesAsHfGemma3TextConfig) {
  const ModelConfig c = parse_config(gemma3("}"), "g3.json");
  EXPECT_TRUE(c.gemma3());
  EXPECT_TRUE(c.gemma_family());
  EXPECT_TRUE(c.qk_norm());
  EXPECT_TRUE(c.sandwich_norms());
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.attn_logit_softcapping, 0.0);
  EXPECT_EQ(c.final_logit_softcapping, 0.0);
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.rope_local_base_freq, 1e4);
  // sliding_window_pattern 6: layers 5, 11, 17 and 23 full, rotating with rope_theta; the rest
  // windowed at 512, rotating with rope_local_base_freq.
  for (int64_t l = 0; l < 26; ++l) {
    const bool full = (l + 1) % 6 == 0;
    EXPECT_EQ(c.layer_window(l), full ? 0 : 512) << l;
    EXPECT_EQ(c.local_rope(l), !full) << l;
    EXPECT_EQ(c.rope_config(l).rope_theta, full ? 1e6 : 1e4) << l;
  }
  EXPECT_NEAR(rope_inv_freq(c.rope_config(0), 8)[1], 1.0 / std::pow(1e4, 2.0 / 256), 1e-7);
  EXPECT_NEAR(rope_inv_freq(c.rope_config(5), 8)[1], 1.0 / std::pow(1e6, 2.0 / 256), 1e-7);
  // Tied embeddings + 26 x (attention + q/k norms + GeGLU + 4 norms) + final norm: Gemma-3-1B's 999,885,952.
  EXPECT_EQ(c.parameter_count(), 999885952);
  const ModelConfig e = parse_config(config_to_json(c), "e.json");
  EXPECT_TRUE(e.gemma3());
  EXPECT_EQ(e.parameter_count(), c.parameter_count());
  EXPECT_EQ(e.rope_local_base_freq, 1e4);
  EXPECT_EQ(e.rope_theta, 1e6);
  EXPECT_EQ(e.attn_logit_softcapping, 0.0);
  for (int64_t l = 0; l < 26; ++l) EXPECT_EQ(e.layer_window(l), c.layer_window(l)) << l;
  EXPECT_NE(config_to_json(c).find("\"sliding_window_pattern\": 6"), std::string::npos) << config_to_json(c);

  // Gemma3TextConfig's defaults; the newer _sliding_window_pattern key; linear scaling on full layers only.
  const ModelConfig d = parse_config(R"({"model_type": "gemma3_text", "vocab_size": 64, "hidden_size": 32,
    "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 8, "_sliding_window_pattern": 2,
    "rope_scaling": {"rope_type": "linear", "factor": 8.0}})", "d.json");
  EXPECT_EQ(d.effective_head_dim(), 256);
  EXPECT_EQ(d.num_key_value_heads, 4);
  EXPECT_EQ(d.max_position_embeddings, 131072);
  EXPECT_EQ(d.sliding_window, 4096);
  EXPECT_EQ(d.query_pre_attn_scalar, 256);
  EXPECT_EQ(d.layer_types, (std::vector<std::string>{"sliding_attention", "full_attention", "sliding_attention",
                                                     "full_attention"}));
  EXPECT_EQ(d.rope_config(1).rope_scaling.type, "linear");
  EXPECT_EQ(d.rope_config(0).rope_scaling.type, "default");
  EXPECT_EQ(d.rope_config(0).rope_theta, 1e4);
  // Newer HF's rope_parameters keyed by layer type.
  const ModelConfig p = parse_config(R"({"model_type": "gemma3_text", "vocab_size": 64, "hidden_size": 32,
    "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 8,
    "layer_types": ["sliding_attention", "full_attention"],
    "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}})", "p.json");
  EXPECT_EQ(p.rope_theta, 1e6);
  EXPECT_EQ(p.rope_scaling.type, "linear");
  EXPECT_EQ(p.rope_scaling.factor, 8.0);
  EXPECT_EQ(p.rope_local_base_freq, 1e4);
}

TEST(ConfigTest, Gemma3TextRefusesWhatItDoesNotImplement) {
  expect_config_error(gemma3(R"(, "sliding_window": null})"),
                      {"gemma3_text layer 0 is sliding_attention", "sliding_window_pattern"});
  expect_config_error(gemma3(R"(, "rope_local_base_freq": 0})"), {"rope_local_base_freq"});
  expect_config_error(gemma3(R"(, "sliding_window_pattern": 0})"), {"sliding_window_pattern"});
  expect_config_error(gemma3(R"(, "use_bidirectional_attention": true})"), {"use_bidirectional_attention"});
  expect_config_error(gemma3(R"(, "attention_bias": true})"), {"attention_bias"});
  expect_config_error(R"({"model_type": "gemma3_text", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 8, "rope_parameters": {"full_attention": {"rope_type": "default"},
    "sliding_attention": {"rope_type": "linear", "factor": 2.0}}})",
                      {"rope_parameters.sliding_attention", "linear"});
  expect_config_error(R"({"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma2"})",
                      {"Gemma3ForCausalLM", "gemma2"});
  expect_config_error(R"({"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3"})",
                      {"gemma3", "multimodal", "gemma3_text"});
  ModelConfig c = testing::tiny_config();
  c.model_type = "gemma3_text";
  EXPECT_THROW(c.validate("code"), Error);  // needs its local RoPE base
  c.rope_local_base_freq = 10000;
  EXPECT_NO_THROW(c.validate("code"));
  c.model_type = "gemma2";
  EXPECT_THROW(c.validate("code"), Error);  // gemma3_text's only
}

TEST(RopeTest, Llama3WithoutOriginalLengthUsesMaxPositions) {
  ModelConfig a = rope_config("llama3", 8), b = a;
  a.rope_scaling.original_max_position_embeddings = 0;  // set in code: max_position_embeddings (64)
  b.rope_scaling.original_max_position_embeddings = 64;
  EXPECT_EQ(rope_inv_freq(a, 10), rope_inv_freq(b, 10));
  EXPECT_EQ(parse_config(config_to_json(a), "a.json").rope_scaling.original_max_position_embeddings, 64);
}

// YaRN (HF's _compute_yarn_parameters) against make_golden.py's float64
// numbers for five rope_scaling dicts: truncated and fractional ramps, betas,
// mscale/mscale_all_dim, a given attention_factor, the old "type" key, and a
// factor left to max_position_embeddings / original_max_position_embeddings.
TEST(RopeTest, YarnMatchesHfFormula) {
  const auto cases = nlohmann::json::parse(read_file(KVSTREAM_SOURCE_DIR "/tests/llm/data/yarn_rope.json"));
  ASSERT_EQ(cases.size(), 5u);
  for (size_t k = 0; k < cases.size(); ++k) {
    const auto& x = cases[k];
    nlohmann::json j = nlohmann::json::parse(cfg("}"));
    j["head_dim"] = x["head_dim"];
    j["rope_theta"] = x["rope_theta"];
    j["max_position_embeddings"] = x["max_position_embeddings"];
    j["rope_scaling"] = x["rope_scaling"];
    const ModelConfig c = parse_config(j.dump(), fmt::format("yarn_rope.json[{}]", k));
    EXPECT_EQ(c.rope_scaling.type, "yarn");
    const auto want = x["inv_freq"].get<std::vector<double>>();
    for (int64_t n : {int64_t(1), int64_t(100000)}) {  // not dynamic: the same at any length
      const auto inv = rope_inv_freq(c, n);
      ASSERT_EQ(inv.size(), want.size());
      for (size_t i = 0; i < inv.size(); ++i) EXPECT_NEAR(inv[i], want[i], 2e-6 * want[i]) << "case " << k << " pair " << i;
    }
    EXPECT_NEAR(rope_attention_scaling(c), x["attention_scaling"].get<double>(), 1e-12) << "case " << k;
    // Round trip through config_to_json.
    const ModelConfig y = parse_config(config_to_json(c), "y.json");
    EXPECT_EQ(rope_inv_freq(y, 1), rope_inv_freq(c, 1)) << "case " << k;
    EXPECT_EQ(rope_attention_scaling(y), rope_attention_scaling(c)) << "case " << k;
  }
  // The ramp matters: neither plain nor linearly scaled frequencies (case 0's
  // pair 2 blends 3/5 interpolated, 2/5 extrapolated).
  const double f2 = cases[0]["inv_freq"][2].get<double>(), plain2 = 1.0 / std::pow(100.0, 4.0 / 16);
  EXPECT_GT(std::abs(f2 - plain2), 0.1 * plain2);
  EXPECT_GT(std::abs(f2 - plain2 / 4), 0.1 * plain2);
  // Other RoPE types have no attention factor.
  EXPECT_EQ(rope_attention_scaling(rope_config("linear", 4)), 1.0);
}

TEST(ConfigTest, YarnRefusesWhatItCannotInterpret) {
  expect_config_error(cfg(R"(, "rope_scaling": {"rope_type": "yarn"}})"), {"rope_scaling", "yarn", "factor"});
  expect_config_error(cfg(R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4, "truncate": "no"}})"),
                      {"rope_scaling.truncate"});
  expect_config_error(cfg(R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4, "attention_factor": 0}})"),
                      {"attention_factor"});
  expect_config_error(cfg(R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4,
      "original_max_position_embeddings": 0}})"), {"original_max_position_embeddings"});
  expect_config_error(cfg(R"(, "rope_scaling": {"rope_type": "yarn", "factor": -2}})"), {"factor"});
  // HF's `get(...) or default`: a null or 0 beta is the default.
  const ModelConfig c = parse_config(cfg(R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4, "beta_fast": null,
      "beta_slow": 0}})"), "c.json");
  EXPECT_EQ(c.rope_scaling.beta_fast, 32.0);
  EXPECT_EQ(c.rope_scaling.beta_slow, 1.0);
}

// Qwen3-0.6B's config.json (as published): q/k norms implied by model_type,
// head_dim 128 != 1024 / 16, tied, 40960 positions.
const char* kQwen3 = R"({"architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024,
  "initializer_range": 0.02, "intermediate_size": 3072, "max_position_embeddings": 40960, "max_window_layers": 28,
  "model_type": "qwen3", "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000, "sliding_window": null, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": true, "use_sliding_window": false,
  "vocab_size": 151936)";

std::string qwen3(const char* rest) { return fmt::format("{}{}", kQwen3, rest); }

TEST(ConfigTest, Qwen3ParsesAsHfQwen3Config) {
  const ModelConfig c = parse_config(qwen3("}"), "q3.json");
  EXPECT_EQ(c.model_type, "qwen3");
  EXPECT_TRUE(c.qk_norm());
  EXPECT_FALSE(c.qkv_bias());
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.effective_head_dim(), 128);
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.sliding_window, 0);
  // Tied embeddings (155.6M) + 28 x (q/k/v/o 6.29M + q/k norms 256 + MLP
  // 9.44M + 2 norms) + final norm: the model card's 0.6B (0.44B without embeddings).
  EXPECT_EQ(c.parameter_count(), 596049920);
  // Qwen3Config's defaults for absent keys: head_dim 128, 32 KV heads, untied.
  const ModelConfig d = parse_config(R"({"model_type": "qwen3", "vocab_size": 64, "hidden_size": 64,
    "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 32})", "d.json");
  EXPECT_EQ(d.effective_head_dim(), 128);
  EXPECT_EQ(d.num_key_value_heads, 32);
  EXPECT_EQ(d.max_position_embeddings, 32768);
  EXPECT_EQ(d.rms_norm_eps, 1e-6);
  EXPECT_FALSE(d.tie_word_embeddings);
  // Windows as Qwen2's; YaRN as Qwen3's model card configures it (factor 4
  // over 32768 original positions; current HF keeps the given factor).
  const ModelConfig w = parse_config(qwen3(R"(, "use_sliding_window": true, "sliding_window": 4096,
    "max_window_layers": 20, "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
    "original_max_position_embeddings": 32768}})"), "w.json");
  EXPECT_EQ(w.layer_window(19), 0);
  EXPECT_EQ(w.layer_window(20), 4096);
  EXPECT_EQ(w.rope_scaling.type, "yarn");
  EXPECT_EQ(w.rope_scaling.factor, 4.0);
  const ModelConfig l = parse_config(qwen3(R"(, "use_sliding_window": true, "sliding_window": 64,
    "layer_types": [)" R"("full_attention", "sliding_attention", "full_attention", "full_attention", "full_attention",
    "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention",
    "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention",
    "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention",
    "full_attention", "full_attention", "full_attention", "full_attention", "full_attention"]})"), "l.json");
  EXPECT_EQ(l.layer_window(1), 64);
  EXPECT_EQ(l.layer_window(2), 0);
  // mlp_bias is ignored as Qwen3MLP ignores it.
  EXPECT_NO_THROW(parse_config(qwen3(R"(, "mlp_bias": true})"), "m.json"));
  for (const ModelConfig* x : {&c, &w, &l}) {
    const std::string saved = config_to_json(*x);
    EXPECT_NE(saved.find("\"Qwen3ForCausalLM\""), std::string::npos) << saved;
    const ModelConfig y = parse_config(saved, "y.json");
    EXPECT_TRUE(y.qk_norm());
    EXPECT_EQ(y.effective_head_dim(), 128);
    EXPECT_EQ(y.rope_scaling.type, x->rope_scaling.type);
    for (int64_t i = 0; i < x->num_hidden_layers; ++i) EXPECT_EQ(y.layer_window(i), x->layer_window(i)) << i;
    EXPECT_EQ(y.parameter_count(), x->parameter_count());
  }
}

TEST(ConfigTest, Qwen3RefusesWhatItDoesNotImplement) {
  // attention_bias true (HF then biases q/k/v and o_proj) is refused by name: kvstream's qwen3 has no biases.
  expect_config_error(qwen3(R"(, "attention_bias": true})"), {"unsupported architecture", "attention_bias", "o_proj"});
  expect_config_error(qwen3(R"(, "hidden_act": "gelu"})"), {"hidden_act"});
  expect_config_error(qwen3(R"(, "layer_types": ["full_attention"]})"), {"layer_types", "28"});
  expect_config_error(qwen3(R"(, "rope_scaling": {"rope_type": "longrope", "factor": 4.0}})"), {"longrope"});
  // Architecture names must agree with model_type (q/k norms or not).
  expect_config_error(R"({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen2"})", {"Qwen3ForCausalLM", "qwen2"});
  expect_config_error(R"({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen3"})", {"Qwen2ForCausalLM", "qwen3"});
  expect_config_error(R"({"model_type": "qwen3_moe"})", {"unsupported architecture", "qwen3_moe"});
}

// Phi-3-mini-4k-instruct's config.json (as published): MHA, sliding_window
// 2047 on every layer, dropout keys, pad_token_id, auto_map.
const char* kPhi3 = R"({"architectures": ["Phi3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "auto_map": {"AutoConfig": "configuration_phi3.Phi3Config", "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM"},
  "bos_token_id": 1, "embd_pdrop": 0.0, "eos_token_id": 32000, "hidden_act": "silu", "hidden_size": 3072,
  "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 4096, "model_type": "phi3",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
  "original_max_position_embeddings": 4096, "pad_token_id": 32000, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05,
  "rope_scaling": null, "rope_theta": 10000.0, "sliding_window": 2047, "tie_word_embeddings": false,
  "torch_dtype": "bfloat16", "transformers_version": "4.40.2", "use_cache": true, "vocab_size": 32064)";

std::string phi3(const char* rest) { return fmt::format("{}{}", kPhi3, rest); }

TEST(ConfigTest, Phi3ParsesAsHfPhi3Config) {
  const ModelConfig c = parse_config(phi3("}"), "p3.json");
  EXPECT_EQ(c.model_type, "phi3");
  EXPECT_TRUE(c.fused_projections());
  EXPECT_FALSE(c.qkv_bias());
  EXPECT_FALSE(c.qk_norm());
  EXPECT_EQ(c.effective_head_dim(), 96);
  EXPECT_EQ(c.num_key_value_heads, 32);
  EXPECT_EQ(c.sliding_window, 2047);
  for (int64_t l : {0, 31}) EXPECT_EQ(c.layer_window(l), 2047) << l;
  EXPECT_EQ(c.rope_scaling.type, "default");
  EXPECT_EQ(c.eos_token_id, 32000);
  // Untied 2 x 98.5M embeddings + 32 x (attention 37.7M + MLP 75.5M + 2
  // norms) + final norm: the model card's 3.8B.
  EXPECT_EQ(c.parameter_count(), 3821079552);
  // Phi3Config's defaults for absent keys: KV heads = heads, 4096 positions,
  // eps 1e-5, no window, untied.
  const ModelConfig d = parse_config(R"({"model_type": "phi3", "vocab_size": 64, "hidden_size": 64,
    "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4})", "d.json");
  EXPECT_EQ(d.num_key_value_heads, 4);
  EXPECT_EQ(d.effective_head_dim(), 16);
  EXPECT_EQ(d.max_position_embeddings, 4096);
  EXPECT_EQ(d.rms_norm_eps, 1e-5);
  EXPECT_EQ(d.sliding_window, 0);
  EXPECT_EQ(d.layer_window(1), 0);
  EXPECT_FALSE(d.tie_word_embeddings);
  // layer_types as some Phi3Config versions derive them (all alike); mlp_bias ignored as Phi3MLP does;
  // default RoPE given explicitly.
  const ModelConfig g = parse_config(R"({"model_type": "phi3", "vocab_size": 64, "hidden_size": 64,
    "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "sliding_window": 7, "layer_types": ["sliding_attention", "sliding_attention"], "mlp_bias": true,
    "rope_parameters": {"rope_type": "default", "rope_theta": 500.0}})", "g.json");
  EXPECT_EQ(g.layer_window(0), 7);
  EXPECT_EQ(g.rope_theta, 500.0);
  EXPECT_NO_THROW(parse_config(R"({"model_type": "phi3", "vocab_size": 64, "hidden_size": 64,
    "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "layer_types": ["full_attention", "full_attention"]})", "f.json"));
  // Partial RoPE (Phi-4-mini: 0.75 of head_dim 128 = 96 dims), top-level
  // or in rope_parameters (which wins, as in HF).
  const ModelConfig p = parse_config(phi3(R"(, "partial_rotary_factor": 0.75})"), "p.json");
  EXPECT_EQ(p.rotary_dim(), 72);
  const auto inv = rope_inv_freq(p, 10);
  ASSERT_EQ(inv.size(), 36u);
  for (int i = 0; i < 36; ++i) EXPECT_NEAR(inv[size_t(i)], plain(10000.0, i, 72), 1e-6 * plain(10000.0, i, 72)) << i;
  const ModelConfig rp = parse_config(phi3(R"(, "partial_rotary_factor": 0.75, "rope_parameters": {"rope_type":
    "default", "rope_theta": 250000.0, "partial_rotary_factor": 0.5}})"), "rp.json");
  EXPECT_EQ(rp.rotary_dim(), 48);
  EXPECT_EQ(rp.rope_theta, 250000.0);
  EXPECT_EQ(c.rotary_dim(), 96);
  // LongRoPE (Phi-3-mini-128k's shape): "su"/"yarn" are Phi3Config's old
  // names for it. factor = 131072 / 4096 = 32, attention factor
  // sqrt(1 + ln 32 / ln 4096); short factors up to 4096 positions, then long.
  std::string shorts, longs;
  for (int i = 0; i < 48; ++i) {
    shorts += fmt::format("{}{}", i ? ", " : "", 1.0 + 0.01 * i);
    longs += fmt::format("{}{}", i ? ", " : "", 2.0 + 0.5 * i);
  }
  for (const char* type : {"longrope", "su", "yarn"}) {
    const ModelConfig lr = parse_config(phi3(fmt::format(R"(, "max_position_embeddings": 131072, "rope_scaling":
      {{"type": "{}", "short_factor": [{}], "long_factor": [{}]}}}})", type, shorts, longs).c_str()), "lr.json");
    EXPECT_EQ(lr.rope_scaling.type, "longrope") << type;
    EXPECT_EQ(lr.rope_scaling.original_max_position_embeddings, 4096);
    EXPECT_NEAR(rope_attention_scaling(lr), std::sqrt(1.0 + std::log(32.0) / std::log(4096.0)), 1e-12);
    const auto s4096 = rope_inv_freq(lr, 4096), l4097 = rope_inv_freq(lr, 4097);
    ASSERT_EQ(s4096.size(), 48u);
    for (int i : {0, 7, 47}) {
      EXPECT_NEAR(s4096[size_t(i)], plain(10000.0, i, 96) / (1.0 + 0.01 * i), 1e-6 * plain(10000.0, i, 96)) << i;
      EXPECT_NEAR(l4097[size_t(i)], plain(10000.0, i, 96) / (2.0 + 0.5 * i), 1e-6 * plain(10000.0, i, 96)) << i;
    }
    const ModelConfig back = parse_config(config_to_json(lr), "back.json");
    EXPECT_EQ(back.rope_scaling.long_factor, lr.rope_scaling.long_factor);
    EXPECT_EQ(rope_inv_freq(back, 5000), rope_inv_freq(lr, 5000));
    EXPECT_EQ(rope_attention_scaling(back), rope_attention_scaling(lr));
  }
  for (const ModelConfig* x : {&c, &d, &g, &p}) {
    const std::string saved = config_to_json(*x);
    EXPECT_NE(saved.find("\"Phi3ForCausalLM\""), std::string::npos) << saved;
    EXPECT_EQ(parse_config(saved, "y.json").rotary_dim(), x->rotary_dim());
    const ModelConfig y = parse_config(saved, "y.json");
    EXPECT_EQ(y.model_type, "phi3");
    EXPECT_EQ(y.sliding_window, x->sliding_window);
    EXPECT_EQ(y.num_key_value_heads, x->num_key_value_heads);
    EXPECT_EQ(y.rope_theta, x->rope_theta);
    EXPECT_EQ(y.parameter_count(), x->parameter_count());
  }
}

TEST(ConfigTest, Phi3RefusesWhatItDoesNotImplement) {
  expect_config_error(phi3(R"(, "attention_bias": true})"), {"unsupported architecture", "attention_bias", "Phi3Attention"});
  // LongRoPE lists must have rotary_dim / 2 entries (HF validates it too), positive numbers.
  expect_config_error(phi3(R"(, "rope_scaling": {"type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}})"),
                      {"short_factor/long_factor", "1/1", "48"});
  expect_config_error(phi3(R"(, "rope_scaling": {"type": "longrope", "short_factor": [1.0]}})"), {"long_factor"});
  expect_config_error(phi3(R"(, "rope_scaling": {"type": "su", "short_factor": [1.0, -2], "long_factor": [1.0]}})"),
                      {"short_factor[1]", "> 0"});
  // A factor other than max / original positions: HF versions disagree.
  expect_config_error(phi3(R"(, "max_position_embeddings": 131072, "rope_scaling": {"type": "longrope", "factor": 4.0,
    "short_factor": [1.0], "long_factor": [1.0]}})"), {"factor", "32", "ambiguous"});
  expect_config_error(phi3(R"(, "rope_scaling": {"rope_type": "linear", "factor": 2.0}})"), {"rope_scaling", "linear", "longrope"});
  expect_config_error(R"({"model_type": "llama", "vocab_size": 64, "hidden_size": 64, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
    "rope_scaling": {"type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}})", {"longrope"});
  for (const char* f : {"0", "1.5", "-0.5"})
    expect_config_error(phi3(fmt::format(R"(, "partial_rotary_factor": {}}})", f).c_str()), {"partial_rotary_factor", "(0, 1]"});
  // int(96 * 0.03125) = 3 rotary dims: RoPE rotates pairs.
  expect_config_error(phi3(R"(, "partial_rotary_factor": 0.03125})"), {"partial_rotary_factor", "3 rotary dims", "even"});
  // Partial RoPE is read for phi3 only.
  expect_config_error(R"({"model_type": "llama", "partial_rotary_factor": 0.5})", {"unsupported architecture", "partial_rotary_factor"});
  expect_config_error(phi3(R"(, "hidden_act": "gelu"})"), {"hidden_act"});
  expect_config_error(R"({"model_type": "phi3", "vocab_size": 64, "hidden_size": 64, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "sliding_window": 7,
    "layer_types": ["full_attention", "sliding_attention"]})", {"unsupported architecture", "layer_types[0]", "sliding_attention"});
  expect_config_error(phi3(R"(, "sliding_window": 0})"), {"sliding_window"});
  // Architecture names must agree with model_type (fused weights or not).
  expect_config_error(R"({"architectures": ["Phi3ForCausalLM"], "model_type": "llama"})", {"Phi3ForCausalLM", "llama"});
  expect_config_error(R"({"architectures": ["LlamaForCausalLM"], "model_type": "phi3"})", {"LlamaForCausalLM", "phi3"});
  expect_config_error(R"({"model_type": "phi"})", {"unsupported architecture", "phi"});
  expect_config_error(R"({"model_type": "phi3small"})", {"unsupported architecture", "phi3small"});
}

}  // namespace
}  // namespace kvs::llm
