#include "sim/gpu_model.h"

#include <algorithm>
#include <cctype>
#include <utility>

#include <fmt/format.h>

#include "base/error.h"

namespace kvs::sim {

namespace {

struct GpuPreset {
  const char* name;
  double peak_flops;
  double memory_bytes_per_s;
};

// Dense BF16 tensor-core peaks and memory bandwidths from NVIDIA's datasheets
// (see gpu_model.h).
constexpr GpuPreset kGpus[] = {
    {"h100", 989e12, 3.35e12},
    {"h200", 989e12, 4.8e12},
    {"a100", 312e12, 2.039e12},
    {"l40s", 362e12, 0.864e12},
};

codec::ModelInfo llama(const char* name, uint32_t layers, uint32_t kv_heads, uint32_t heads, uint32_t hidden,
                       uint32_t intermediate, uint32_t vocab, uint64_t params, codec::DType dtype) {
  codec::ModelInfo m;
  m.name = name;
  m.kv = {layers, kv_heads, hidden / heads};
  m.dtype = dtype;
  m.hidden_size = hidden;
  m.intermediate_size = intermediate;
  m.num_attention_heads = heads;
  m.vocab_size = vocab;
  m.parameters = params;
  return m;
}

codec::ModelInfo windowed(codec::ModelInfo m, const char* name, uint32_t window) {
  m.name = name;
  m.layer_windows.assign(m.kv.layers, window);
  return m;
}

// Gemma-2 and Gemma-3 (text): 8 KV heads of 256 (not hidden / heads),
// embeddings tied (parameters count them once; prefill_flops leaves them
// out, as the logits of the prefilled tokens are not needed), a window on
// every layer but one in `period`, the one at `global` (0-based).
codec::ModelInfo gemma(const char* name, uint32_t layers, uint32_t hidden, uint32_t intermediate, uint32_t vocab,
                       uint64_t params, uint32_t window, uint32_t period, uint32_t global) {
  codec::ModelInfo m = llama(name, layers, 8, 16, hidden, intermediate, vocab, params, codec::DType::kBF16);
  m.kv.head_dim = 256;
  m.layer_windows.assign(m.kv.layers, window);
  for (uint32_t l = global; l < m.kv.layers; l += period) m.layer_windows[l] = 0;
  return m;
}

// Hugging Face config.json numbers; parameters as counted by the checkpoints.
std::vector<codec::ModelInfo> model_presets() {
  using codec::DType;
  // Mistral-7B-v0.2 and v0.1 share every number here but the window (v0.2:
  // none, rope_theta 1e6 and 32K positions; v0.1: 4,096 on every layer).
  const codec::ModelInfo mistral = llama("mistral-7b", 32, 8, 32, 4096, 14336, 32000, 7241732096ull, DType::kBF16);
  return {
      llama("llama-7b", 32, 32, 32, 4096, 11008, 32000, 6738415616ull, DType::kF16),
      llama("llama-13b", 40, 40, 40, 5120, 13824, 32000, 13015864320ull, DType::kF16),
      llama("llama-70b", 80, 8, 64, 8192, 28672, 32000, 68976648192ull, DType::kF16),
      mistral,
      windowed(mistral, "mistral-7b-v0.1", 4096),
      llama("llama3-8b", 32, 8, 32, 4096, 14336, 128256, 8030261248ull, DType::kBF16),
      // Gemma-2-9B: HF's Gemma2 slides on even layers (odd ones global).
      gemma("gemma2-9b", 42, 3584, 14336, 256000, 9241705984ull, 4096, 2, 1),
      // Gemma-3-12B's language model (text_config; q/k norms; vocab_size
      // 262,208 as config.json has it): layer i global when (i + 1) % 6 == 0.
      gemma("gemma3-12b", 48, 3840, 15360, 262208, 11766034176ull, 1024, 6, 5),
  };
}

}  // namespace

std::vector<std::string> gpu_preset_names() {
  std::vector<std::string> names;
  for (const auto& g : kGpus) names.emplace_back(g.name);
  return names;
}

double gpu_preset_memory_bytes_per_s(const std::string& preset) {
  for (const auto& g : kGpus)
    if (preset == g.name) return g.memory_bytes_per_s;
  throw Error(fmt::format("unknown GPU preset '{}' (known: {})", preset, fmt::join(gpu_preset_names(), ", ")));
}

// Query-key pairs of one layer when `tokens` new tokens follow `past` ones:
// token i (position past + i) reads min(past + i + 1, window) keys (window 0:
// all of them).
double attention_pairs(uint64_t past, uint64_t tokens, uint64_t window) {
  const double t = double(tokens), p = double(past);
  const double full = t * p + t * (t + 1) / 2.0;  // sum of k for k = past+1 .. past+tokens
  if (window == 0 || window >= past + tokens) return full;
  if (window <= past + 1) return t * double(window);
  // k = past+1 .. window read k keys, the remaining past+tokens-window read window.
  const double w = double(window), below = w - p;  // how many k <= window
  return below * p + below * (below + 1) / 2.0 + (t - below) * w;
}

double prefill_flops(const codec::ModelInfo& model, uint64_t past, uint64_t tokens) {
  const double embed = double(model.vocab_size) * model.hidden_size;
  const double matmul_params = std::max(0.0, double(model.parameters) - embed);
  const double dense = 2.0 * matmul_params * double(tokens);
  // Per layer and query head, QK^T and AV each head_dim MACs per (query, key) pair.
  double attention;
  if (!model.has_windows()) {
    attention = 2.0 * 2.0 * double(model.kv.layers) * model.num_attention_heads * model.kv.head_dim *
                attention_pairs(past, tokens, 0);
  } else {
    double pairs = 0;
    for (uint32_t l = 0; l < model.kv.layers; ++l) pairs += attention_pairs(past, tokens, model.layer_window(l));
    attention = 2.0 * 2.0 * model.num_attention_heads * model.kv.head_dim * pairs;
  }
  return dense + attention;
}

uint64_t cached_tokens_read(const codec::ModelInfo& model, uint64_t context_tokens) {
  uint64_t total = 0;
  for (uint32_t l = 0; l < model.kv.layers; ++l) {
    const uint64_t w = model.layer_window(l);
    total += w > 0 ? std::min<uint64_t>(context_tokens, w - 1) : context_tokens;
  }
  return total;
}

double gpu_preset_peak_flops(const std::string& preset) {
  for (const auto& g : kGpus)
    if (preset == g.name) return g.peak_flops;
  throw Error(fmt::format("unknown GPU preset '{}' (known: {})", preset, fmt::join(gpu_preset_names(), ", ")));
}

std::vector<std::string> model_preset_names() {
  std::vector<std::string> names;
  for (const auto& m : model_presets()) names.push_back(m.name);
  return names;
}

codec::ModelInfo model_preset(const std::string& name) {
  for (auto& m : model_presets())
    if (m.name == name) return m;
  throw Error(fmt::format("unknown target model '{}' (known: {})", name, fmt::join(model_preset_names(), ", ")));
}

ComputeModel::ComputeModel(const codec::ModelInfo& model, const GpuSpec& spec, std::string profile_device)
    : model_(model), spec_(spec), profile_device_(std::move(profile_device)) {
  const double peak = spec.peak_flops > 0 ? spec.peak_flops : gpu_preset_peak_flops(spec.preset);
  if (!(spec.efficiency > 0 && spec.efficiency <= 1))
    throw Error(fmt::format("gpu efficiency: expected a number in (0, 1], got {}", spec.efficiency));
  if (!(spec.busy_fraction >= 0 && spec.busy_fraction < 1))
    throw Error(fmt::format("gpu busy_fraction: expected a number in [0, 1), got {}", spec.busy_fraction));
  if (spec.decode != "auto" && spec.decode != "assumed" && spec.decode != "profile")
    throw Error(fmt::format("gpu decode: expected 'auto', 'assumed' or 'profile', got '{}'", spec.decode));
  if (spec_.decode == "auto") spec_.decode = codec::measured_on_gpu(profile_device_) ? "profile" : "assumed";
  if (!(spec.decode_bytes_per_s >= 0))
    throw Error(fmt::format("gpu decode_bytes_per_s: expected a number >= 0, got {}", spec.decode_bytes_per_s));
  if (!(spec.decode_speedup > 0))
    throw Error(fmt::format("gpu decode_speedup: expected a positive number, got {}", spec.decode_speedup));
  if (spec_.decode == "profile" && codec::measured_on_gpu(profile_device_) && spec.decode_speedup != 1)
    throw Error(fmt::format("gpu decode_speedup: {} given, but the profile's decode times were measured on a GPU ({}); "
                            "decode_speedup scales CPU-measured times only: leave it at 1",
                            spec.decode_speedup, profile_device_));
  const double free_share = 1.0 - spec.busy_fraction;
  flops_per_s_ = peak * spec.efficiency * free_share;
  memory_bytes_per_s_ =
      (spec.memory_bytes_per_s > 0 ? spec.memory_bytes_per_s : gpu_preset_memory_bytes_per_s(spec.preset)) *
      spec.efficiency * free_share;
}

double ComputeModel::recompute_s(uint64_t past, uint64_t tokens) const {
  return prefill_flops(model_, past, tokens) / flops_per_s_;
}

double ComputeModel::first_token_s(uint64_t context_tokens) const {
  if (spec_.first_token_s >= 0) return spec_.first_token_s;
  // One decode step reads every weight and the whole KV cache once; at batch
  // size 1 that, not the FLOPs, bounds it.
  // (A windowed layer reads only its window.)
  const double kv_layer_bytes_per_token = double(model_.kv_bytes_per_token()) / std::max(1u, model_.kv.layers);
  const double bytes = double(model_.parameters) * codec::dtype_bytes(model_.dtype) +
                       kv_layer_bytes_per_token * double(cached_tokens_read(model_, context_tokens));
  return std::max(prefill_flops(model_, context_tokens, 1) / flops_per_s_, bytes / memory_bytes_per_s_);
}

double ComputeModel::assumed_decode_bytes_per_s(const std::string& codec) const {
  if (codec == "raw") return 0;
  const double free_share = 1.0 - spec_.busy_fraction;  // a busy GPU decodes in the time left to it
  if (spec_.decode_bytes_per_s > 0) return spec_.decode_bytes_per_s * free_share;
  if (codec == "quant8" || codec == "kivi2" || codec == "kivi4") return memory_bytes_per_s_ * 2.0 / 3.0;  // has it
  // Entropy-coded: 250 GB/s on an A100, scaled by memory bandwidth (gpu_model.h).
  const double a100_bw = gpu_preset_memory_bytes_per_s("a100");
  const double bw = spec_.memory_bytes_per_s > 0 ? spec_.memory_bytes_per_s : gpu_preset_memory_bytes_per_s(spec_.preset);
  return 250e9 * bw / a100_bw * free_share;
}

double ComputeModel::decode_s(const std::string& codec, double profiled_decode_s, double size_scale,
                              double fp16_bytes) const {
  if (spec_.decode == "profile") {
    // GPU-measured: as measured (decode_speedup is 1, checked in the constructor).
    const double speedup = codec::measured_on_gpu(profile_device_) ? 1.0 : spec_.decode_speedup;
    return profiled_decode_s * size_scale / speedup / (1.0 - spec_.busy_fraction);
  }
  const double rate = assumed_decode_bytes_per_s(codec);
  return rate > 0 ? fp16_bytes / rate : 0.0;
}

bool ComputeModel::simulates_profiled_card(const std::string& profile_device) const {
  std::string card(codec::gpu_card_name(profile_device));
  for (char& ch : card) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return !card.empty() && card.find(spec_.preset) != std::string::npos;
}

std::string ComputeModel::decode_timing_note(const std::string& codec, const std::string& profile_device) const {
  const bool gpu_profile = codec::measured_on_gpu(profile_device);
  if (spec_.decode == "profile" && gpu_profile)
    return fmt::format("profile: measured on the GPU {} (kernel time, used as measured; the host's parse not "
                       "counted){}",
                       profile_device,
                       simulates_profiled_card(profile_device)
                           ? ""
                           : fmt::format("; the simulated GPU {} is another card: no scaling applied", spec_.preset));
  if (spec_.decode == "profile")
    return fmt::format("profile: measured on {} / decode_speedup {}", profile_device, spec_.decode_speedup);
  const double rate = assumed_decode_bytes_per_s(codec);
  if (rate == 0) return "assumed: raw needs no decode (0 s), not measured";
  return fmt::format("assumed, not measured: {:.0f} GB/s of fp16 output for {} on {}{}{}", rate / 1e9, codec,
                     spec_.preset, spec_.decode_bytes_per_s > 0 ? " (gpu.decode_bytes_per_s)" : " (gpu_model.h)",
                     gpu_profile ? fmt::format("; the profile's times measured on {} are unused (gpu.decode: profile "
                                               "uses them)",
                                               profile_device)
                                 : "");
}

}  // namespace kvs::sim
