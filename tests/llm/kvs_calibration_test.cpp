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
  EXPECT_TRUE(explicit_weights.codec_params.empty());
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
