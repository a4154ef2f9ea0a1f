#include "llm/kvs_calibration.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/files.h"
#include "codec/kvs.h"
#include "llm/checkpoint.h"
#include "llm/evaluate.h"
#include "llm/kv_cache.h"

namespace kvs::llm {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ull, kFnvPrime = 0x100000001b3ull;

// FNV-1a of a file's bytes into `h`, read in blocks.
uint64_t hash_file(const std::string& path, uint64_t h) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot read (needed for the model's content hash)", path));
  std::vector<char> block(1 << 20);
  while (in) {
    in.read(block.data(), std::streamsize(block.size()));
    const std::streamsize n = in.gcount();
    for (std::streamsize i = 0; i < n; ++i) h = (h ^ uint8_t(block[size_t(i)])) * kFnvPrime;
  }
  return h;
}

std::string how_to_calibrate(const std::string& model_dir) {
  return fmt::format(
      "make one on text that is not in your evaluation contexts, e.g.\n"
      "  kvstream codec-model train --codec kvs --model {} --text data/english/moby-dick.txt -o {}\n"
      "(data/english/ is not in the repository, data/DATA.md says where it comes from; any long text file not in "
      "your evaluation contexts will do; or give kvs's weights yourself: --param kvs.weights=K0:V0:K1:V1:..., "
      "--codec-param for simulate --exact-quality)",
      model_dir, kvs_calibration_path(model_dir));
}

}  // namespace

std::string model_content_hash(const std::string& model_dir) {
  uint64_t h = hash_file((fs::path(model_dir) / "config.json").string(), kFnvOffset);
  // The weights: model.safetensors, or a sharded checkpoint's index and
  // shards (*.safetensors), in name order; a zero byte before each file.
  std::vector<std::string> weights;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(model_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file() && (e.path().extension() == ".safetensors" || name == "model.safetensors.index.json"))
      weights.push_back(name);
  }
  if (ec) throw Error(fmt::format("{}: cannot list the model folder: {}", model_dir, ec.message()));
  if (weights.empty()) throw Error(fmt::format("{}: no *.safetensors weights (needed for the model's content hash)", model_dir));
  std::sort(weights.begin(), weights.end());
  for (const auto& name : weights) h = hash_file((fs::path(model_dir) / name).string(), (h ^ 0) * kFnvPrime);
  return fmt::format("{:016x}", h);
}

namespace {
// kvs_rope_params for a model whose layers all rotate as `config` says.
codec::CodecParams rope_params_of(const ModelConfig& config) {
  if (config.rotary_dim() != config.effective_head_dim()) return {{"rope_theta", "0"}};
  const std::string& type = config.rope_scaling.type;
  if (type == "default" || type == "dynamic") return {{"rope_theta", fmt::format("{}", config.rope_theta)}};
  const int64_t original = config.rope_scaling.original_max_position_embeddings > 0
                               ? config.rope_scaling.original_max_position_embeddings
                               : config.max_position_embeddings;
  codec::CodecParams params = {{"rope_inv_freq", codec::kvs_param_list(rope_inv_freq(config, original))}};
  if (type == "longrope") {  // its long factors for prompts past the original length
    params["rope_inv_freq_long"] = codec::kvs_param_list(rope_inv_freq(config, original + 1));
    params["rope_long_after"] = std::to_string(original);
  }
  return params;
}
}  // namespace

KvsCalibration calibrate_kvs(const Model& model, const std::vector<std::vector<int64_t>>& windows,
                             const KvsCalibrationOptions& options) {
  const ModelConfig& cfg = model.config();
  const uint32_t layers = uint32_t(cfg.num_hidden_layers), planes = 2 * layers;
  const uint32_t ctx = options.context_tokens, cont = options.continuation_tokens;
  if (windows.empty()) throw Error("kvs calibration: no calibration text");
  if (ctx < 2 || cont < 2) throw Error("kvs calibration: context and continuation need at least 2 tokens each");
  if (!(options.floor > 0 && options.floor <= 1)) throw Error("kvs calibration: floor must be in (0, 1]");
  constexpr double kProbeSteps[] = {0.1, 0.3};  // of the plane's RMS value
  std::vector<double> kl_mse(planes, 0.0), mse_mse(planes, 0.0);
  for (size_t w = 0; w < windows.size(); ++w) {
    const auto& ids = windows[w];
    if (ids.size() < size_t(ctx) + cont)
      throw Error(fmt::format("kvs calibration: window {} has {} tokens, needs {}", w, ids.size(), ctx + cont));
    // As the profiler: the cache holds the context but its last token, which starts the continuation.
    const std::vector<int64_t> cache_ids(ids.begin(), ids.begin() + (ctx - 1));
    const std::vector<int64_t> cont_ids(ids.begin() + (ctx - 1), ids.begin() + (ctx + cont));
    codec::KVChunk exact = to_chunk(model.prefill(to_tensor(cache_ids)).cache, 0);
    exact.dtype = options.kv_dtype;
    for (float& v : exact.values) v = codec::round_to_dtype(v, options.kv_dtype);
    const at::Tensor reference =
        continuation_log_probs(model, from_chunk(exact, model.dtype(), model.device()), cont_ids);
    for (uint32_t p = 0; p < planes; ++p) {
      const uint32_t l = p / 2;
      const codec::Kind kind = p % 2 ? codec::Kind::kValue : codec::Kind::kKey;
      const auto plane = exact.plane(l, kind);
      double sumsq = 0;
      for (float v : plane) sumsq += double(v) * v;
      const double rms = std::sqrt(sumsq / double(plane.size()));
      if (!(rms > 0)) continue;  // an all-zero plane: nothing to learn, floored below
      // Layer l alone as a one-layer chunk, the other kind of it nearly exact.
      codec::KVChunk one({1, exact.shape.kv_heads, exact.shape.head_dim}, exact.dtype, 0, exact.tokens);
      std::copy(plane.begin(), plane.end(), one.plane(0, kind).begin());
      const auto other = exact.plane(l, kind == codec::Kind::kKey ? codec::Kind::kValue : codec::Kind::kKey);
      std::copy(other.begin(), other.end(), one.plane(0, kind == codec::Kind::kKey ? codec::Kind::kValue : codec::Kind::kKey).begin());
      for (double fraction : kProbeSteps) {
        const float step = std::clamp(float(fraction * rms), 2e-3f, 1e3f);
        std::vector<float> weights(2, 1e-3f);
        weights[size_t(kind)] = step;
        codec::CodecParams params{{"weights", codec::kvs_param_list(weights)}, {"ladder", "1"}};
        const codec::CodecParams rope = rope_params_of(cfg.rope_config(l));  // the layer's own RoPE
        params.insert(rope.begin(), rope.end());
        const auto codec = codec::make_codec("kvs", {params, ""});
        const codec::KVChunk back = codec->decode(codec->encode(one, 0));
        codec::KVChunk degraded = exact;
        const auto decoded = back.plane(0, kind);
        auto target = degraded.plane(l, kind);
        double err = 0;
        for (size_t i = 0; i < target.size(); ++i) {
          const double d = double(decoded[i]) - double(target[i]);
          err += d * d;
          target[i] = decoded[i];
        }
        const double mse = err / double(target.size());
        const double kl =
            kl_divergence(reference, continuation_log_probs(model, from_chunk(degraded, model.dtype(), model.device()),
                                                            cont_ids))
                .mean_nats;
        kl_mse[p] += kl * mse;
        mse_mse[p] += mse * mse;
      }
    }
  }
  KvsCalibration c;
  c.layers = layers;
  c.rope_theta = cfg.rope_theta;
  c.windows = uint32_t(windows.size());
  c.context_tokens = ctx;
  c.continuation_tokens = cont;
  c.method = fmt::format(
      "KL per unit MSE of each plane quantized alone by kvs at steps 0.1 and 0.3 x its RMS (llm/kvs_calibration.h); "
      "weight = 1/sqrt(sensitivity), geometric mean 1, floor {:g}",
      options.floor);
  double top = 0;
  for (uint32_t p = 0; p < planes; ++p) {
    c.sensitivity.push_back(mse_mse[p] > 0 ? std::max(0.0, kl_mse[p] / mse_mse[p]) : 0.0);
    top = std::max(top, c.sensitivity.back());
  }
  if (!(top > 0)) throw Error("kvs calibration: no plane of the KV cache changed the model's predictions");
  double log_sum = 0;
  std::vector<double> inv(planes);
  for (uint32_t p = 0; p < planes; ++p) {
    inv[p] = 1 / std::sqrt(std::max(c.sensitivity[p], options.floor * top));
    log_sum += std::log(inv[p]);
  }
  const double g = std::exp(log_sum / planes);
  for (double x : inv) c.weights.push_back(float(x / g));
  return c;
}

void write_kvs_calibration(const KvsCalibration& c, const std::string& path) {
  json j;
  j["model_hash"] = c.model_hash;
  j["layers"] = c.layers;
  j["rope_theta"] = c.rope_theta;
  j["weights"] = c.weights;
  j["sensitivity"] = c.sensitivity;
  j["method"] = c.method;
  j["text"] = c.text;
  j["windows"] = c.windows;
  j["context_tokens"] = c.context_tokens;
  j["continuation_tokens"] = c.continuation_tokens;
  write_file_atomic(path, j.dump(1) + "\n");
}

KvsCalibration read_kvs_calibration(const std::string& path) {
  json j;
  try {
    j = json::parse(read_file(path));
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: not a kvs calibration (JSON: {})", path, e.what()));
  }
  KvsCalibration c;
  try {
    c.model_hash = j.at("model_hash").get<std::string>();
    c.layers = j.at("layers").get<uint32_t>();
    c.rope_theta = j.at("rope_theta").get<double>();
    c.weights = j.at("weights").get<std::vector<float>>();
    c.sensitivity = j.value("sensitivity", std::vector<double>{});
    c.method = j.value("method", std::string());
    c.text = j.value("text", std::string());
    c.windows = j.value("windows", 0u);
    c.context_tokens = j.value("context_tokens", 0u);
    c.continuation_tokens = j.value("continuation_tokens", 0u);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: bad kvs calibration: {}", path, e.what()));
  }
  if (c.layers == 0 || c.weights.size() != 2 * size_t(c.layers))
    throw Error(fmt::format("{}: {} weights for {} layers (need 2 per layer)", path, c.weights.size(), c.layers));
  for (float w : c.weights)
    if (!(w >= 1e-3f && w <= 1e3f)) throw Error(fmt::format("{}: weight {} outside [0.001, 1000]", path, w));
  if (!std::isfinite(c.rope_theta) || c.rope_theta < 0 || (c.rope_theta > 0 && c.rope_theta <= 1))
    throw Error(fmt::format("{}: rope_theta {} (expected 0 or > 1)", path, c.rope_theta));
  return c;
}

std::string kvs_calibration_path(const std::string& model_dir) {
  return (fs::path(model_dir) / "kvs-calibration.json").string();
}

codec::CodecParams kvs_params_for_model(const std::string& model_dir, uint32_t layers) {
  const std::string path = kvs_calibration_path(model_dir);
  const std::string hash = model_content_hash(model_dir);
  if (!fs::exists(path))
    throw Error(fmt::format("codec kvs: no calibration for the model in {} (content hash {}): kvs's step weights are "
                            "model-specific, and {} does not exist; {}",
                            model_dir, hash, path, how_to_calibrate(model_dir)));
  const KvsCalibration c = read_kvs_calibration(path);
  if (c.model_hash != hash)
    throw Error(fmt::format("codec kvs: {} calibrates the model with content hash {}, but the model in {} has {} (other "
                            "weights or config); {}",
                            path, c.model_hash, model_dir, hash, how_to_calibrate(model_dir)));
  if (c.layers != layers)
    throw Error(fmt::format("codec kvs: {} is for {} layers, the model has {}", path, c.layers, layers));
  codec::CodecParams params = kvs_rope_params(load_config(model_dir));
  params["weights"] = codec::kvs_param_list(c.weights);
  return params;
}


codec::CodecParams kvs_rope_params(const ModelConfig& config) {
  // The RoPEs the layers use, each with its layers, in order of first layer.
  struct Rope {
    codec::CodecParams params;
    std::vector<int64_t> layers;
  };
  std::vector<Rope> ropes;
  for (int64_t l = 0; l < std::max<int64_t>(config.num_hidden_layers, 1); ++l) {
    codec::CodecParams p = rope_params_of(config.rope_config(l));
    auto it = std::find_if(ropes.begin(), ropes.end(), [&](const Rope& r) { return r.params == p; });
    if (it == ropes.end()) ropes.push_back({std::move(p), {l}});
    else it->layers.push_back(l);
  }
  // The main RoPE: the one most layers use (the first layer's on a tie); the
  // next most used, its layers', as kvs's second RoPE, when it has no
  // LongRoPE table (kvs's second RoPE has one table).
  const auto more = [](const Rope& a, const Rope& b) { return a.layers.size() > b.layers.size(); };
  std::stable_sort(ropes.begin(), ropes.end(), more);
  codec::CodecParams params = ropes[0].params;
  if (ropes.size() > 1 && !ropes[1].params.count("rope_inv_freq_long")) {
    for (const auto& [key, value] : ropes[1].params) params[key == "rope_theta" ? "rope_alt_theta" : "rope_alt_inv_freq"] = value;
    std::string layers;
    for (int64_t l : ropes[1].layers) layers += fmt::format("{}{}", layers.empty() ? "" : ":", l);
    params["rope_alt_layers"] = layers;
  }
  return params;
}

void apply_kvs_calibration(const std::string& model_dir, uint32_t layers, const std::vector<std::string>& codecs,
                           codec::CodecOptions* options) {
  if (std::find(codecs.begin(), codecs.end(), "kvs") == codecs.end()) return;
  // Given by the user: to every codec (params) or to kvs alone (codec_params["kvs"]).
  const auto own = options->codec_params.find("kvs");
  const auto given = [&](const char* key) {
    return options->params.count(key) || (own != options->codec_params.end() && own->second.count(key));
  };
  // A RoPE the user gave in any of kvs's RoPE parameters replaces the model's in all of them.
  constexpr const char* kRopeKeys[] = {"rope_theta",     "rope_inv_freq",     "rope_inv_freq_long", "rope_long_after",
                                       "rope_alt_theta", "rope_alt_inv_freq", "rope_alt_layers"};
  const bool rope_given = std::any_of(std::begin(kRopeKeys), std::end(kRopeKeys), given);
  codec::CodecParams add =
      given("weights") ? kvs_rope_params(load_config(model_dir)) : kvs_params_for_model(model_dir, layers);
  if (rope_given)
    for (const char* key : kRopeKeys) add.erase(key);
  for (auto& [key, value] : add) options->codec_params["kvs"][key] = value;
}

}  // namespace kvs::llm
