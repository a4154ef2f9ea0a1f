// kvs's per-(layer, kind) step weights, calibrated for one model (issue 22).
//
// How much a unit of squared error in one plane (the keys or the values of one
// layer) of the KV cache hurts the model differs from model to model, so kvs's
// step weights (codec/kvs.h, parameter `weights`) are measured per model:
// each plane alone is quantized by kvs at two steps (0.1 and 0.3 of that
// plane's RMS value; every other plane within 0.001 x its step of exact) and the KL
// divergence of the next-token distribution, teacher-forced over a
// continuation, is measured against the exact cache. The plane's sensitivity
// is the least-squares slope of KL (nats/token) against the plane's mean
// squared error, through the origin; sensitivities below `floor` times the
// largest are raised to it. With a uniform quantizer per plane (rate ~
// -log2 step, distortion ~ sensitivity x step^2) the rate-optimal steps have
// equal sensitivity x step^2, so weight = 1 / sqrt(sensitivity), normalized
// to geometric mean 1. Deterministic for a model, text and thread count.
//
// A calibration names its model by a content hash of config.json and
// model.safetensors. It is kept in the model's folder
// (DIR/kvs-calibration.json, written by `kvstream codec-model train --codec
// kvs`); `kvstream profile` uses kvs only on a model whose folder holds a
// calibration with that model's hash (models/default ships one with the
// weights measured for it) and refuses it otherwise, saying how to make one.
// The calibration text must not be the evaluation text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "codec/codec.h"
#include "llm/model.h"

namespace kvs::llm {

// FNV-1a 64 of an HF checkpoint folder's config.json, then, each after a
// zero byte, its weight files in name order (model.safetensors, or a sharded
// checkpoint's model.safetensors.index.json and shards), as 16 hex digits.
// Throws kvs::Error naming a missing file.
std::string model_content_hash(const std::string& model_dir);

struct KvsCalibration {
  std::string model_hash;            // model_content_hash of the model measured
  uint32_t layers = 0;
  double rope_theta = 10000;         // the model's RoPE base, for the record (kvs's RoPE: kvs_rope_params)
  std::vector<float> weights;        // step multipliers K0:V0:K1:V1:..., geometric mean 1
  std::vector<double> sensitivity;   // KL nats/token per unit MSE per plane (empty: not measured here)
  std::string method;                // how the weights were obtained
  std::string text;                  // calibration text (file), disjoint from evaluation contexts
  uint32_t windows = 0, context_tokens = 0, continuation_tokens = 0;
};

struct KvsCalibrationOptions {
  uint32_t context_tokens = 1024;      // cached tokens per window (the last one starts the continuation)
  uint32_t continuation_tokens = 256;  // tokens scored after the cache
  double floor = 0.01;                 // sensitivities below floor x the largest are raised to it
  codec::DType kv_dtype = codec::DType::kF16;
};

// Calibrates kvs for `model` on token windows (each at least context_tokens +
// continuation_tokens long; only that prefix is used). Throws kvs::Error for
// no or short windows.
KvsCalibration calibrate_kvs(const Model& model, const std::vector<std::vector<int64_t>>& windows,
                             const KvsCalibrationOptions& options = {});

// JSON file: {"model_hash", "layers", "rope_theta", "weights", "sensitivity",
// "method", "text", "windows", "context_tokens", "continuation_tokens"}.
void write_kvs_calibration(const KvsCalibration& calibration, const std::string& path);
// Throws kvs::Error naming the file and key for a bad file.
KvsCalibration read_kvs_calibration(const std::string& path);

// Where a model folder's calibration is kept: DIR/kvs-calibration.json.
std::string kvs_calibration_path(const std::string& model_dir);

// kvs's RoPE parameter for a model, so that keys are rotated back at the
// model's own frequencies: `rope_theta` for RoPE at its base's frequencies
// over the whole head (default, and dynamic NTK, which changes them only past
// max_position_embeddings); `rope_inv_freq` for a scaled RoPE (linear,
// llama3, YaRN, LongRoPE; LongRoPE's short and long tables, the long one
// for contexts past original_max_position_embeddings, as the model rotates
// them); rope_theta=0 (keys coded as given) for a partial rotary, whose
// pairs kvs cannot express. Past max_position_embeddings dynamic NTK rotates
// by other frequencies: such keys still decode exactly, at some cost in size.
// Where layers differ (gemma3_text's sliding layers rotate with
// rope_local_base_freq, its full ones with rope_theta and its scaling), the
// RoPE most layers use is the main one and the next most used is kvs's second
// RoPE for its layers (rope_alt_theta or rope_alt_inv_freq, and
// rope_alt_layers); a third, or a second with LongRoPE's two tables, is not
// expressible: its layers' keys are coded at the main RoPE (exact, larger).
codec::CodecParams kvs_rope_params(const ModelConfig& config);

// kvs's parameters for the model in `model_dir` (weights from its
// calibration, kvs_rope_params of its config), or throws kvs::Error saying
// that kvs needs a calibration of this model and how to make one (none,
// another model's, or the wrong number of layers).
codec::CodecParams kvs_params_for_model(const std::string& model_dir, uint32_t layers);

// For `kvstream profile`, `simulate` and `encode --model`: when `codecs` holds
// kvs, adds to options->codec_params["kvs"] what the user did not give (to
// every codec or to kvs alone): the calibration's weights (unless `weights`
// is given), the RoPE parameter of kvs_rope_params (unless rope_theta or
// rope_inv_freq is).
void apply_kvs_calibration(const std::string& model_dir, uint32_t layers, const std::vector<std::string>& codecs,
                           codec::CodecOptions* options);

}  // namespace kvs::llm
