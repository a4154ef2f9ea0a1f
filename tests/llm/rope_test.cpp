// RoPE frequencies against closed forms computed here in double precision,
// and config.json parsing (rope_scaling, rope_parameters, errors).
#include <cmath>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "base/error.h"
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
  expect_config_error(R"({"model_type": "qwen2", "vocab_size": 256})", {"unsupported architecture", "qwen2"});
  expect_config_error(cfg(R"(, "attention_bias": true})"), {"unsupported architecture", "attention_bias"});
  expect_config_error(cfg(R"(, "rope_scaling": {"rope_type": "yarn", "factor": 2}})"), {"yarn"});
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
  // one is kept (Model::forward refuses runs longer than it).
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
  bad.rope_scaling.type = "yarn";
  EXPECT_THROW(bad.validate("code"), Error);
}

TEST(RopeTest, Llama3WithoutOriginalLengthUsesMaxPositions) {
  ModelConfig a = rope_config("llama3", 8), b = a;
  a.rope_scaling.original_max_position_embeddings = 0;  // set in code: max_position_embeddings (64)
  b.rope_scaling.original_max_position_embeddings = 64;
  EXPECT_EQ(rope_inv_freq(a, 10), rope_inv_freq(b, 10));
  EXPECT_EQ(parse_config(config_to_json(a), "a.json").rope_scaling.original_max_position_embeddings, 64);
}

}  // namespace
}  // namespace kvs::llm
