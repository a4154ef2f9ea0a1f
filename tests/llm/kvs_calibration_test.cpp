// kvs calibration (llm/kvs_calibration.h): weights of the model's shape,
// deterministic, measured (not constant); the profile's refusal of kvs on a
// model without its calibration; the bundled model's shipped calibration.
#include <cmath>
#include <filesystem>
#include <string>

#include <fmt/core.h>
#include <gtest/gtest.h>

#include "codec/kvs.h"
#include "llm/checkpoint.h"
#include "llm/kvs_calibration.h"
#include "llm/model.h"
#include "tests/llm/test_util.h"

namespace kvs::llm {
namespace {

using testing::some_tokens;
using testing::TempDir;
using testing::tiny_config;

KvsCalibrationOptions small_options() {
  KvsCalibrationOptions o;
  o.context_tokens = 48;
  o.continuation_tokens = 16;
  return o;
}

std::vector<std::vector<int64_t>> windows(int n) {
  std::vector<std::vector<int64_t>> w;
  for (int i = 0; i < n; ++i) w.push_back(some_tokens(64, 256, 100 + uint64_t(i)));
  return w;
}

TEST(KvsCalibration, WeightsHaveTheModelsShapeAndAreDeterministic) {
  ModelConfig cfg = tiny_config();
  cfg.num_hidden_layers = 3;
  const Model m = Model::random(cfg, 5);
  const KvsCalibration a = calibrate_kvs(m, windows(2), small_options());
  const KvsCalibration b = calibrate_kvs(m, windows(2), small_options());
  ASSERT_EQ(a.layers, 3u);
  ASSERT_EQ(a.weights.size(), 6u);
  ASSERT_EQ(a.sensitivity.size(), 6u);
  EXPECT_EQ(a.weights, b.weights);
  EXPECT_EQ(a.sensitivity, b.sensitivity);
  double log_sum = 0, top = 0;
  for (size_t p = 0; p < 6; ++p) {
    EXPECT_GT(a.weights[p], 0.0f);
    EXPECT_GE(a.sensitivity[p], 0.0);
    log_sum += std::log(a.weights[p]);
    top = std::max(top, a.sensitivity[p]);
  }
  EXPECT_NEAR(log_sum / 6, 0.0, 1e-5);  // geometric mean 1
  EXPECT_GT(top, 0.0);
  // Measured, not a constant: the weights are not all equal, and a more
  // sensitive plane gets a smaller step.
  EXPECT_NE(*std::min_element(a.weights.begin(), a.weights.end()), *std::max_element(a.weights.begin(), a.weights.end()));
  for (size_t p = 0; p < 6; ++p)
    for (size_t q = 0; q < 6; ++q)
      if (a.sensitivity[p] > a.sensitivity[q] && a.sensitivity[q] >= 0.01 * top) {
        EXPECT_LT(a.weights[p], a.weights[q]);
      }
  // Other text, other (close but not equal) weights; too short a window is an error.
  EXPECT_NE(calibrate_kvs(m, {some_tokens(64, 256, 7)}, small_options()).weights, a.weights);
  EXPECT_THROW(calibrate_kvs(m, {some_tokens(40, 256, 7)}, small_options()), Error);
  EXPECT_THROW(calibrate_kvs(m, {}, small_options()), Error);
}

// A model whose layers rotate differently (gemma3_text): each layer is
// probed alone at its own RoPE (one-layer chunks: kvs's per-layer parameters
// of the whole model would name layers they lack).
TEST(KvsCalibration, ProbesEachLayerAtItsOwnRope) {
  ModelConfig cfg = tiny_config();
  cfg.model_type = "gemma3_text";
  cfg.num_hidden_layers = 3;
  cfg.sliding_window = 8;
  cfg.layer_types = {"sliding_attention", "sliding_attention", "full_attention"};
  cfg.rope_theta = 1e6;
  cfg.rope_local_base_freq = 10000;
  ASSERT_EQ(kvs_rope_params(cfg).at("rope_alt_layers"), "2");
  const KvsCalibration c = calibrate_kvs(Model::random(cfg, 6), windows(1), small_options());
  ASSERT_EQ(c.weights.size(), 6u);
  for (float w : c.weights) EXPECT_GT(w, 0.0f);
}

TEST(KvsCalibration, ProfileRefusesKvsWithoutThisModelsCalibration) {
  TempDir dir;
  const std::string a = (dir.path / "a").string(), b = (dir.path / "b").string();
  const Model ma = Model::random(tiny_config(), 1), mb = Model::random(tiny_config(), 2);
  save_model(ma, a);
  save_model(mb, b);
  EXPECT_EQ(model_content_hash(a), model_content_hash(a));
  EXPECT_NE(model_content_hash(a), model_content_hash(b));

  // No calibration: a refusal naming the model and the command that makes one.
  try {
    kvs_params_for_model(a, 2);
    FAIL() << "expected a refusal";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("no calibration"), std::string::npos) << msg;
    EXPECT_NE(msg.find(model_content_hash(a)), std::string::npos) << msg;
    EXPECT_NE(msg.find("kvstream codec-model train --codec kvs --model " + a), std::string::npos) << msg;
  }
  // Only kvs is refused: other codecs profile as before.
  codec::CodecOptions options;
  EXPECT_NO_THROW(apply_kvs_calibration(a, 2, {"cachegen", "quant8"}, &options));
  EXPECT_TRUE(options.codec_params.empty());
  EXPECT_THROW(apply_kvs_calibration(a, 2, {"cachegen", "kvs"}, &options), Error);

  // A's calibration copied next to model B: refused, the hashes differ.
  KvsCalibration c = calibrate_kvs(ma, windows(1), small_options());
  c.model_hash = model_content_hash(a);
  write_kvs_calibration(c, kvs_calibration_path(a));
  std::filesystem::copy_file(kvs_calibration_path(a), kvs_calibration_path(b));
  try {
    kvs_params_for_model(b, 2);
    FAIL() << "expected a refusal";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("calibrates the model with content hash " + c.model_hash), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(kvs_params_for_model(a, 3), Error);  // layers differ

  // With its own calibration: kvs gets the weights, the other codecs nothing new.
  const KvsCalibration back = read_kvs_calibration(kvs_calibration_path(a));
  EXPECT_EQ(back.weights, c.weights);
  EXPECT_EQ(back.sensitivity, c.sensitivity);
  apply_kvs_calibration(a, 2, {"cachegen", "kvs"}, &options);
  ASSERT_EQ(options.codec_params.count("kvs"), 1u);
  const auto kvs = codec::make_codec("kvs", options);
  std::string expect = "weights=";
  for (size_t i = 0; i < c.weights.size(); ++i) expect += (i ? ":" : "") + fmt::format("{:g}", c.weights[i]);
  EXPECT_NE(kvs->params().find(expect + ","), std::string::npos) << kvs->params();
  EXPECT_NO_THROW(codec::make_codec("cachegen", options));  // kvs's parameters are not given to cachegen
  // Explicit weights win (the user's choice); no calibration needed then.
  codec::CodecOptions explicit_weights;
  explicit_weights.params["weights"] = "1:1:1:1";
  EXPECT_NO_THROW(apply_kvs_calibration(b, 2, {"kvs"}, &explicit_weights));
  // The RoPE is still the model's (from its config).
  EXPECT_EQ(explicit_weights.codec_params["kvs"], (codec::CodecParams{{"rope_theta", "10000"}}));
}

// kvs rotates keys back at the model's own RoPE frequencies: the base for
// HF's default RoPE, the model's table for a scaled one (the frequencies of
// a prompt within the original length), none for a partial rotary.
TEST(KvsRopeParams, FollowTheModelsRope) {
  ModelConfig c = tiny_config();
  c.head_dim = 16;
  c.rope_theta = 500000;
  EXPECT_EQ(kvs_rope_params(c), (codec::CodecParams{{"rope_theta", "500000"}}));
  c.rope_scaling.type = "dynamic";  // the base's frequencies up to max_position_embeddings
  c.rope_scaling.factor = 2;
  EXPECT_EQ(kvs_rope_params(c), (codec::CodecParams{{"rope_theta", "500000"}}));

  const auto table_of = [](const ModelConfig& config) {
    const codec::CodecParams p = kvs_rope_params(config);
    EXPECT_EQ(p.size(), 1u);
    EXPECT_EQ(p.count("rope_inv_freq"), 1u);
    return p.count("rope_inv_freq") ? p.at("rope_inv_freq") : "";
  };
  c.rope_scaling.type = "llama3";
  c.rope_scaling.factor = 8;
  c.rope_scaling.original_max_position_embeddings = 32;
  const std::vector<float> llama3 = rope_inv_freq(c, 32);
  ASSERT_EQ(llama3.size(), 8u);
  EXPECT_EQ(table_of(c), codec::kvs_param_list(llama3));
  EXPECT_EQ(llama3[0], 1.0f);                                                 // fast pairs as the base's
  EXPECT_NEAR(llama3[7], std::pow(500000.0, -14.0 / 16) / 8, 1e-6 * llama3[7]);  // slow ones 8x slower

  c.rope_scaling = {};
  c.rope_scaling.type = "linear";
  c.rope_scaling.factor = 4;
  EXPECT_EQ(table_of(c), codec::kvs_param_list(rope_inv_freq(c, 128)));
  EXPECT_EQ(rope_inv_freq(c, 128)[0], 0.25f);

  c.rope_scaling = {};
  c.rope_scaling.type = "longrope";  // LongRoPE: short factors within the original length, long ones past it
  c.rope_scaling.original_max_position_embeddings = 64;
  c.rope_scaling.factor = 2;
  c.rope_scaling.short_factor = {1, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7};
  c.rope_scaling.long_factor = {2, 2, 2, 2, 2, 2, 2, 2};
  EXPECT_EQ(kvs_rope_params(c), (codec::CodecParams{{"rope_inv_freq", codec::kvs_param_list(rope_inv_freq(c, 64))},
                                                    {"rope_inv_freq_long", codec::kvs_param_list(rope_inv_freq(c, 65))},
                                                    {"rope_long_after", "64"}}));
  EXPECT_NE(rope_inv_freq(c, 64), rope_inv_freq(c, 65));
  // Every table is one kvs takes for this head_dim.
  const auto kvs = codec::make_codec("kvs", {kvs_rope_params(c), ""});
  codec::KVChunk chunk({1, 1, 16}, codec::DType::kF16, 100, 4);
  for (size_t i = 0; i < chunk.values.size(); ++i) chunk.values[i] = float(i % 7) - 3;
  EXPECT_NO_THROW(kvs->decode(kvs->encode(chunk, 0)));

  c.rope_scaling = {};
  c.partial_rotary_factor = 0.5;  // pairs (i, i + 4) of 8 rotated dims: not kvs's pairing
  EXPECT_EQ(kvs_rope_params(c), (codec::CodecParams{{"rope_theta", "0"}}));
}

// gemma3_text: sliding layers rotate with rope_local_base_freq, full ones with
// rope_theta and its scaling; kvs's main RoPE is the most layers', its second
// the other layers'.
TEST(KvsRopeParams, EachLayerTakesItsOwnRope) {
  ModelConfig c = tiny_config();
  c.model_type = "gemma3_text";
  c.head_dim = 16;
  c.num_hidden_layers = 6;
  c.sliding_window = 4;
  c.layer_types = {"sliding_attention", "sliding_attention", "sliding_attention",
                   "sliding_attention", "sliding_attention", "full_attention"};
  c.rope_theta = 1e6;
  c.rope_scaling.type = "linear";
  c.rope_scaling.factor = 8;
  c.rope_local_base_freq = 10000;
  const std::string table = codec::kvs_param_list(rope_inv_freq(c, 128));
  EXPECT_EQ(kvs_rope_params(c), (codec::CodecParams{{"rope_theta", "10000"},
                                                    {"rope_alt_inv_freq", table},
                                                    {"rope_alt_layers", "5"}}));
  c.layer_types = {"full_attention", "full_attention", "full_attention",
                   "full_attention", "sliding_attention", "sliding_attention"};
  EXPECT_EQ(kvs_rope_params(c), (codec::CodecParams{{"rope_inv_freq", table},
                                                    {"rope_alt_theta", "10000"},
                                                    {"rope_alt_layers", "4:5"}}));
  c.layer_types = {"sliding_attention", "full_attention", "sliding_attention",
                   "full_attention", "sliding_attention", "full_attention"};  // a tie: layer 0's
  EXPECT_EQ(kvs_rope_params(c), (codec::CodecParams{{"rope_theta", "10000"},
                                                    {"rope_alt_inv_freq", table},
                                                    {"rope_alt_layers", "1:3:5"}}));
  // Unscaled global layers: a second base.
  c.rope_scaling.type = "default";
  EXPECT_EQ(kvs_rope_params(c), (codec::CodecParams{{"rope_theta", "10000"},
                                                    {"rope_alt_theta", "1000000"},
                                                    {"rope_alt_layers", "1:3:5"}}));
  // The codec takes them, and codes each layer's keys at its RoPE (flags bit 2).
  const auto kvs = codec::make_codec("kvs", {kvs_rope_params(c), ""});
  codec::KVChunk chunk({6, 1, 16}, codec::DType::kF16, 0, 4);
  EXPECT_EQ(kvs->encode(chunk, 0)[10] & 4, 4);
}

// profile, simulate and encode --model give kvs the model's table, unless
// the user gave a RoPE parameter; with or without the calibration's weights.
TEST(KvsRopeParams, AppliedFromTheModelsConfig) {
  TempDir dir;
  const std::string d = (dir.path / "scaled").string();
  ModelConfig c = tiny_config();
  c.rope_scaling.type = "llama3";
  c.rope_scaling.factor = 8;
  c.rope_scaling.original_max_position_embeddings = 32;
  save_model(Model::random(c, 3), d);
  const std::string table = codec::kvs_param_list(rope_inv_freq(c, 32));
  codec::CodecOptions weights_given;
  weights_given.codec_params["kvs"]["weights"] = "1:1:1:1";
  apply_kvs_calibration(d, 2, {"kvs"}, &weights_given);
  EXPECT_EQ(weights_given.codec_params["kvs"],
            (codec::CodecParams{{"weights", "1:1:1:1"}, {"rope_inv_freq", table}}));
  KvsCalibration cal = calibrate_kvs(Model::random(c, 3), windows(1), small_options());
  cal.model_hash = model_content_hash(d);
  write_kvs_calibration(cal, kvs_calibration_path(d));
  EXPECT_EQ(kvs_params_for_model(d, 2).at("rope_inv_freq"), table);
  codec::CodecOptions rope_given;
  rope_given.params["rope_theta"] = "10000";
  apply_kvs_calibration(d, 2, {"kvs"}, &rope_given);
  EXPECT_EQ(rope_given.codec_params["kvs"], (codec::CodecParams{{"weights", codec::kvs_param_list(cal.weights)}}));
}

// A LongRoPE model's two tables; a RoPE the user gives (any of kvs's RoPE
// parameters) replaces all of the model's, not only the one named.
TEST(KvsRopeParams, AUserRopeReplacesEveryModelRopeParameter) {
  TempDir dir;
  const std::string d = (dir.path / "longrope").string();
  ModelConfig c = tiny_config();
  c.model_type = "phi3";
  c.head_dim = 16;
  c.max_position_embeddings = 128;
  c.rope_scaling.type = "longrope";
  c.rope_scaling.original_max_position_embeddings = 64;
  c.rope_scaling.factor = 2;
  c.rope_scaling.short_factor = std::vector<double>(8, 1.5);
  c.rope_scaling.long_factor = std::vector<double>(8, 3.0);
  save_model(Model::random(c, 4), d);
  codec::CodecOptions model_rope;
  model_rope.params["weights"] = "1:1:1:1";
  apply_kvs_calibration(d, 2, {"kvs"}, &model_rope);
  EXPECT_EQ(model_rope.codec_params["kvs"].count("rope_inv_freq_long"), 1u);
  EXPECT_EQ(model_rope.codec_params["kvs"].at("rope_long_after"), "64");
  for (const char* key : {"rope_theta", "rope_inv_freq"}) {
    SCOPED_TRACE(key);
    codec::CodecOptions user_rope;
    user_rope.params["weights"] = "1:1:1:1";
    user_rope.codec_params["kvs"][key] = std::string(key) == "rope_theta" ? "10000" : "1:0.5:0.25:0.1:0.05:0.01:0.005:0.001";
    const codec::CodecParams want = user_rope.codec_params["kvs"];
    apply_kvs_calibration(d, 2, {"kvs"}, &user_rope);
    EXPECT_EQ(user_rope.codec_params["kvs"], want);
    EXPECT_NO_THROW(codec::make_codec("kvs", {user_rope.codec_params["kvs"], ""}));
  }
}

TEST(KvsCalibration, BundledModelShipsItsCalibration) {
  const std::string dir = (std::filesystem::path(KVSTREAM_SOURCE_DIR) / "models" / "default").string();
  const codec::CodecParams p = kvs_params_for_model(dir, 4);
  // The weights measured for it before calibration files existed (kvs_default_weights).
  const std::vector<float> w = codec::kvs_default_weights(4);
  std::string expect;
  for (size_t i = 0; i < w.size(); ++i) expect += fmt::format("{}{}", i ? ":" : "", w[i]);
  EXPECT_EQ(p.at("weights"), expect);
  EXPECT_EQ(p.at("rope_theta"), "10000");
}

}  // namespace
}  // namespace kvs::llm
