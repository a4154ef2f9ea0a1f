#include "sim/offload.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <optional>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "sim/gpu_model.h"

namespace kvs::sim {

namespace {

struct GpuMemoryPreset {
  const char* name;
  double bytes;
};

// Datasheet capacities of the presets in sim/gpu_model.cc (A100 and H100 in
// their 80 GB versions).
constexpr GpuMemoryPreset kGpuMemory[] = {
    {"h100", 80e9},
    {"h200", 141e9},
    {"a100", 80e9},
    {"l40s", 48e9},
};

bool positive_finite(double x) { return std::isfinite(x) && x > 0; }

// The per-layer and per-step costs of one model on one GPU.
class StepModel {
 public:
  StepModel(const OffloadConfig& c) : c_(c) {
    const auto& m = c.model;
    const double peak = c.gpu.peak_flops > 0 ? c.gpu.peak_flops : gpu_preset_peak_flops(c.gpu.preset);
    const double bw =
        c.gpu.memory_bytes_per_s > 0 ? c.gpu.memory_bytes_per_s : gpu_preset_memory_bytes_per_s(c.gpu.preset);
    flops_per_s_ = peak * c.gpu.efficiency;
    bytes_per_s_ = bw * c.gpu.efficiency;
    dtype_ = double(codec::dtype_bytes(m.dtype));
    layers_ = m.kv.layers;
    head_params_ = double(m.vocab_size) * m.hidden_size;
    layer_params_ = (double(m.parameters) - 2 * head_params_) / layers_;
    kv_token_layer_ = double(m.kv_bytes_per_token()) / layers_;
    batch_ = double(c.batch);
  }

  double layer_params() const { return layer_params_; }
  double kv_token_layer_bytes() const { return kv_token_layer_; }

  // One layer of one decode step attending to `attended` tokens (per sequence).
  double layer_s(double attended) const {
    const auto& m = c_.model;
    const double flops = batch_ * (2 * layer_params_ + 4.0 * m.num_attention_heads * m.kv.head_dim * attended);
    const double bytes = layer_params_ * dtype_ + batch_ * attended * kv_token_layer_;
    return std::max(flops / flops_per_s_, bytes / bytes_per_s_);
  }
  double lm_head_s() const {
    return std::max(batch_ * 2 * head_params_ / flops_per_s_, head_params_ * dtype_ / bytes_per_s_);
  }
  // Speculation for one layer over `past` tokens: partial W_q, partial keys,
  // fp16 scores written and read back.
  double speculation_s(double past) const {
    const auto& m = c_.model;
    const double r = c_.partial_ratio, h = m.hidden_size;
    const double flops = batch_ * (2 * r * h * h + 2.0 * m.num_attention_heads * r * m.kv.head_dim * past);
    const double bytes =
        r * h * h * dtype_ + batch_ * r * past * kv_token_layer_ / 2 + batch_ * m.num_attention_heads * past * 2 * 2;
    return std::max(flops / flops_per_s_, bytes / bytes_per_s_);
  }
  // Prefill of the whole batch: per layer, and the LM head (over every prompt
  // token, as prefill_flops counts it).
  double prefill_head_s() const { return batch_ * 2 * head_params_ * double(c_.prompt_tokens) / flops_per_s_; }
  double prefill_layer_s() const {
    const double total = batch_ * prefill_flops(c_.model, 0, c_.prompt_tokens) / flops_per_s_;
    return (total - prefill_head_s()) / layers_;
  }
  double transfer_s(double bytes) const { return c_.pcie.latency_s + bytes / c_.pcie.rate_bytes_per_s; }

 private:
  const OffloadConfig& c_;
  double flops_per_s_ = 0, bytes_per_s_ = 0, dtype_ = 2, head_params_ = 0, layer_params_ = 0, kv_token_layer_ = 0,
         batch_ = 1;
  uint32_t layers_ = 1;
};

void validate(const OffloadConfig& c, OffloadMode mode) {
  const auto& m = c.model;
  if (m.kv.layers == 0 || m.kv.head_dim == 0 || m.kv.kv_heads == 0 || m.hidden_size == 0 || m.num_attention_heads == 0)
    throw Error(fmt::format("offload: model '{}' has no layers, heads or hidden size", m.name));
  if (double(m.parameters) <= 2.0 * m.vocab_size * m.hidden_size)
    throw Error(fmt::format("offload: model '{}' has {} parameters, not more than its embedding and LM head", m.name,
                            m.parameters));
  if (c.prompt_tokens == 0) throw Error("offload: the prompt needs at least one token");
  if (c.output_tokens == 0) throw Error("offload: output_tokens must be at least 1");
  if (c.batch == 0) throw Error("offload: batch must be at least 1");
  if (!positive_finite(c.pcie.rate_bytes_per_s))
    throw Error(fmt::format("offload: PCIe rate must be a positive number, got {}", c.pcie.rate_bytes_per_s));
  if (!(std::isfinite(c.pcie.latency_s) && c.pcie.latency_s >= 0))
    throw Error(fmt::format("offload: PCIe latency must be >= 0 s, got {}", c.pcie.latency_s));
  if (!(c.gpu.efficiency > 0 && c.gpu.efficiency <= 1))
    throw Error(fmt::format("offload: gpu efficiency must be in (0, 1], got {}", c.gpu.efficiency));
  if (!(c.gpu.peak_flops >= 0) || !(c.gpu.memory_bytes_per_s >= 0) || !(c.gpu_memory_bytes >= 0))
    throw Error("offload: GPU peak, bandwidth and memory overrides must be >= 0");
  if (mode != OffloadMode::kSelective) return;
  if (!(c.partial_ratio > 0 && c.partial_ratio <= 1))
    throw Error(fmt::format("offload: partial_ratio must be in (0, 1], got {}", c.partial_ratio));
  if (c.layer_fraction.size() != m.kv.layers)
    throw Error(fmt::format("offload: selective needs one fraction per layer: model '{}' has {} layers, got {}",
                            m.name, m.kv.layers, c.layer_fraction.size()));
  for (size_t l = 0; l < c.layer_fraction.size(); ++l) {
    const double f = c.layer_fraction[l];
    if (!(f >= 0 && f <= 1)) throw Error(fmt::format("offload: layer {} fraction must be in [0, 1], got {}", l, f));
  }
  if (c.layer_fraction[0] != 1)
    throw Error(fmt::format("offload: layer 0 fraction is {}, but layer 0 has no previous layer to speculate from "
                            "(InfiniGen loads it in full): give 1",
                            c.layer_fraction[0]));
}

}  // namespace

std::string offload_mode_name(OffloadMode mode) {
  switch (mode) {
    case OffloadMode::kFull: return "full";
    case OffloadMode::kSelective: return "selective";
    case OffloadMode::kResident: return "resident";
  }
  return "?";
}

double gpu_memory_bytes(const std::string& preset) {
  for (const auto& g : kGpuMemory)
    if (preset == g.name) return g.bytes;
  throw Error(fmt::format("unknown GPU preset '{}' (known: {})", preset, fmt::join(gpu_preset_names(), ", ")));
}

std::vector<double> infinigen_layer_fractions(uint32_t layers, double fraction, uint32_t full_front, bool full_last) {
  std::vector<double> f(layers, fraction);
  for (uint32_t l = 0; l < layers; ++l)
    if (l < full_front || (full_last && l + 1 == layers)) f[l] = 1.0;
  return f;
}

namespace {

// Field access with errors naming the file and the JSON path.
class JsonReader {
 public:
  explicit JsonReader(std::string path) : path_(std::move(path)) {}
  [[noreturn]] void fail(const std::string& where, const std::string& what) const {
    throw Error(fmt::format("{}: {}: {}", path_, where, what));
  }
  const nlohmann::json& field(const nlohmann::json& obj, const std::string& where, const char* key) const {
    if (!obj.is_object()) fail(where, "expected an object");
    const auto it = obj.find(key);
    if (it == obj.end()) fail(where, fmt::format("missing field '{}'", key));
    return *it;
  }
  double number(const nlohmann::json& obj, const std::string& where, const char* key, double lo, double hi) const {
    const auto& v = field(obj, where, key);
    if (!v.is_number()) fail(where + "." + key, "expected a number");
    const double x = v.get<double>();
    if (!(x >= lo && x <= hi)) fail(where + "." + key, fmt::format("{} is outside [{}, {}]", x, lo, hi));
    return x;
  }
  double number_or(const nlohmann::json& obj, const std::string& where, const char* key, double dflt, double lo,
                   double hi) const {
    return obj.contains(key) ? number(obj, where, key, lo, hi) : dflt;
  }
  // A count (layers, tokens): a whole number in [lo, hi], `dflt` when absent.
  uint64_t count(const nlohmann::json& obj, const std::string& where, const char* key, double lo, double hi,
                 std::optional<uint64_t> dflt = std::nullopt) const {
    if (dflt && !(obj.is_object() && obj.contains(key))) return *dflt;
    const double x = number(obj, where, key, lo, hi);
    if (x != std::floor(x)) fail(where + "." + key, fmt::format("expected a whole number, got {}", x));
    return uint64_t(x);
  }

 private:
  std::string path_;
};

}  // namespace

SelectiveProfile read_selective_profile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("{}: cannot open the selective profile", path));
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: not JSON: {}", path, e.what()));
  }
  const JsonReader r(path);
  const auto& format = r.field(doc, "(top)", "format");
  if (format != "kvstream-selective")
    r.fail("format", fmt::format("expected \"kvstream-selective\", got {}", format.dump()));
  if (r.number(doc, "(top)", "version", 0, 1e9) != 1) r.fail("version", "only version 1 is known");

  SelectiveProfile p;
  p.path = path;
  const auto& model = r.field(doc, "(top)", "model");
  if (model.contains("name") && model["name"].is_string()) p.model = model["name"].get<std::string>();
  p.layers = uint32_t(r.count(model, "model", "layers", 1, 100000));
  const auto& options = r.field(doc, "(top)", "options");
  p.full_front_layers = uint32_t(r.count(options, "options", "full_front_layers", 0, p.layers, 2));
  if (options.contains("full_last_layer")) {
    if (!options["full_last_layer"].is_boolean()) r.fail("options.full_last_layer", "expected true or false");
    p.full_last_layer = options["full_last_layer"].get<bool>();
  }
  p.ratio = r.number_or(options, "options", "ratio", 0.2, 0, 1);
  // A setting without partial_key_fraction: partial_channels / (2 x head_dim)
  // as the writer computes it (int(ratio x head_dim) channels), else ratio / 2.
  double partial_fallback = p.ratio / 2;
  if (options.is_object() && options.contains("partial_channels") && model.contains("head_dim")) {
    const double head_dim = double(r.count(model, "model", "head_dim", 1, 1e6));
    partial_fallback = double(r.count(options, "options", "partial_channels", 0, head_dim)) / (2 * head_dim);
  }
  const auto& contexts = r.field(doc, "(top)", "contexts");
  if (!contexts.is_array()) r.fail("contexts", "expected an array");
  for (size_t i = 0; i < contexts.size(); ++i)
    p.context_tokens.push_back(r.count(contexts[i], fmt::format("contexts[{}]", i), "tokens", 1, 1e12));

  const auto& settings = r.field(doc, "(top)", "settings");
  if (!settings.is_array()) r.fail("settings", "expected an array");
  for (size_t i = 0; i < settings.size(); ++i) {
    const auto& s = settings[i];
    const std::string where = fmt::format("settings[{}]", i);
    const auto& method = r.field(s, where, "method");
    if (!method.is_string()) r.fail(where + ".method", "expected a string");
    if (method != "infinigen") continue;
    SelectiveSetting x;
    x.budget = r.number(s, where, "budget", 0, 1);
    x.alpha = r.number(s, where, "alpha", 0, 1e9);
    const auto& per_layer = r.field(s, where, "fraction_fetched_per_layer");
    if (!per_layer.is_array() || per_layer.size() != p.layers)
      r.fail(where + ".fraction_fetched_per_layer", fmt::format("expected {} numbers (model.layers)", p.layers));
    for (size_t l = 0; l < per_layer.size(); ++l) {
      if (!per_layer[l].is_number() || !(per_layer[l].get<double>() >= 0 && per_layer[l].get<double>() <= 1))
        r.fail(fmt::format("{}.fraction_fetched_per_layer[{}]", where, l), "expected a number in [0, 1]");
      x.fraction_per_layer.push_back(per_layer[l].get<double>());
    }
    x.fraction_fetched = r.number(s, where, "fraction_fetched", 0, 1);
    x.partial_key_fraction = r.number_or(s, where, "partial_key_fraction", partial_fallback, 0, 1);
    x.recall = r.number(s, where, "recall", 0, 1);
    x.kl_divergence = r.number(s, where, "kl_divergence", -1e9, 1e9);  // rounding may leave -1e-9
    x.loss_increase = r.number(s, where, "loss_increase", -1e9, 1e9);
    x.greedy_agreement = r.number(s, where, "greedy_agreement", 0, 1);
    x.task_accuracy = r.number_or(s, where, "task_accuracy", -1, -1, 1);
    p.settings.push_back(std::move(x));
  }
  if (p.settings.empty()) throw Error(fmt::format("{}: settings: no `infinigen` setting", path));
  return p;
}

std::vector<double> target_layer_fractions(const SelectiveProfile& profile, const SelectiveSetting& setting,
                                           uint32_t target_layers) {
  if (target_layers == profile.layers) return setting.fraction_per_layer;
  double sum = 0;
  uint32_t speculated = 0;
  for (uint32_t l = 0; l < profile.layers; ++l) {
    if (l < profile.full_front_layers || (profile.full_last_layer && l + 1 == profile.layers)) continue;
    sum += setting.fraction_per_layer[l];
    ++speculated;
  }
  const double mean = speculated ? sum / speculated : 1.0;
  return infinigen_layer_fractions(target_layers, mean, profile.full_front_layers, profile.full_last_layer);
}

OffloadResult simulate_offload(const OffloadConfig& c, OffloadMode mode) {
  validate(c, mode);
  const StepModel model(c);
  const uint32_t n = c.model.kv.layers;
  const bool offloaded = mode != OffloadMode::kResident;
  const bool selective = mode == OffloadMode::kSelective;
  const std::vector<double> fraction = selective ? c.layer_fraction : std::vector<double>(n, 1.0);
  const double batch = c.batch, kv_layer = model.kv_token_layer_bytes();

  OffloadResult r;
  r.mode = mode;

  // Prefill: layers in order, each offloaded layer's KV written to the host
  // as soon as it is computed (the GPU-to-host direction, one at a time).
  std::vector<double> written(n, 0.0);
  double t = 0, d2h_free = 0, last_layer_start = 0;
  const double prompt_kv_layer = batch * double(c.prompt_tokens) * kv_layer;
  for (uint32_t l = 0; l < n; ++l) {
    last_layer_start = t;
    t += model.prefill_layer_s();
    if (offloaded) {
      d2h_free = std::max(t, d2h_free) + model.transfer_s(prompt_kv_layer);
      written[l] = d2h_free;
    }
  }
  t += model.prefill_head_s();
  r.ttft_s = t;

  // Decode steps: step k feeds output token k; past = tokens already cached.
  double gpu_free = t, link_free = 0;
  double prev_last_start = last_layer_start;  // the layer before layer 0 of the next step
  for (uint32_t k = 1; k < c.output_tokens; ++k) {
    const double past = double(c.prompt_tokens) + k - 1;
    const double step_start = gpu_free;
    double prev_start = prev_last_start;  // compute start of the layer before l
    double prev_spec = 0;                 // speculation for l run at the start of the layer before
    for (uint32_t l = 0; l < n; ++l) {
      double arrive = 0;
      if (offloaded) {
        const double bytes = batch * fraction[l] * past * kv_layer;
        double ready = prev_start + prev_spec;
        if (k == 1) ready = std::max(ready, written[l]);
        const double start = std::max(link_free, ready);
        link_free = start + model.transfer_s(bytes);
        arrive = link_free;
        r.h2d_bytes += bytes;
        r.link_busy_s += link_free - start;
      }
      const double compute_start = std::max(gpu_free, arrive);
      r.stall_s += compute_start - gpu_free;
      const double spec = (selective && l + 1 < n && fraction[l + 1] < 1) ? model.speculation_s(past) : 0.0;
      r.speculation_s += spec;
      gpu_free = compute_start + spec + model.layer_s(fraction[l] * past + 1);
      prev_start = compute_start;
      prev_spec = spec;
    }
    prev_last_start = prev_start;
    gpu_free += model.lm_head_s();
    r.step_s.push_back(gpu_free - step_start);
  }
  r.total_s = gpu_free;
  r.tpot_s = c.output_tokens > 1 ? (r.total_s - r.ttft_s) / (c.output_tokens - 1) : 0.0;

  // GPU memory: weights, and the KV resident or in two layer buffers.
  const double final_tokens = double(c.prompt_tokens) + c.output_tokens;
  const double max_fraction = *std::max_element(fraction.begin(), fraction.end());
  r.gpu_bytes = double(c.model.parameters) * codec::dtype_bytes(c.model.dtype);
  if (mode == OffloadMode::kResident) r.gpu_bytes += batch * final_tokens * kv_layer * n;
  else r.gpu_bytes += 2 * batch * max_fraction * final_tokens * kv_layer;
  if (selective) r.gpu_bytes += batch * c.partial_ratio * final_tokens * kv_layer / 2 * n;  // partial keys
  const double capacity = c.gpu_memory_bytes > 0 ? c.gpu_memory_bytes : gpu_memory_bytes(c.gpu.preset);
  r.fits = r.gpu_bytes <= capacity;
  return r;
}

}  // namespace kvs::sim
