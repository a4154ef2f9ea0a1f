#include "sim/offload.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include <fmt/format.h>

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
  if (!c.layer_window.empty() && c.layer_window.size() != m.kv.layers)
    throw Error(fmt::format("offload: layer_window needs one window per layer: model '{}' has {} layers, got {}",
                            m.name, m.kv.layers, c.layer_window.size()));
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

OffloadResult simulate_offload(const OffloadConfig& c, OffloadMode mode) {
  validate(c, mode);
  const StepModel model(c);
  const uint32_t n = c.model.kv.layers;
  const bool offloaded = mode != OffloadMode::kResident;
  const bool selective = mode == OffloadMode::kSelective;
  const std::vector<double> fraction = selective ? c.layer_fraction : std::vector<double>(n, 1.0);
  const double batch = c.batch, kv_layer = model.kv_token_layer_bytes();
  // Past keys layer l's full attention reads (min(past, W - 1) on a
  // sliding-window layer), and the tokens it keeps (at most W).
  const auto window = [&](uint32_t l) {
    return double(c.layer_window.empty() ? uint64_t(c.model.layer_window(l)) : c.layer_window[l]);
  };
  bool windowed = false;
  for (uint32_t l = 0; l < n; ++l) windowed = windowed || window(l) > 0;
  const auto reads = [&](uint32_t l, double past) { return window(l) > 0 ? std::min(past, window(l) - 1) : past; };
  const auto kept = [&](uint32_t l, double tokens) { return window(l) > 0 ? std::min(tokens, window(l)) : tokens; };

  OffloadResult r;
  r.mode = mode;

  // Prefill: layers in order, each offloaded layer's KV written to the host
  // as soon as it is computed (the GPU-to-host direction, one at a time).
  std::vector<double> written(n, 0.0);
  double t = 0, d2h_free = 0, last_layer_start = 0;
  for (uint32_t l = 0; l < n; ++l) {
    last_layer_start = t;
    t += model.prefill_layer_s();
    if (offloaded) {
      const double prompt_kv_layer = batch * reads(l, double(c.prompt_tokens)) * kv_layer;
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
        const double bytes = batch * fraction[l] * reads(l, past) * kv_layer;
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
      const double spec =
          (selective && l + 1 < n && fraction[l + 1] < 1) ? model.speculation_s(reads(l + 1, past)) : 0.0;
      r.speculation_s += spec;
      gpu_free = compute_start + spec + model.layer_s(fraction[l] * reads(l, past) + 1);
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
  r.gpu_bytes = double(c.model.parameters) * codec::dtype_bytes(c.model.dtype);
  if (!windowed) {
    const double max_fraction = *std::max_element(fraction.begin(), fraction.end());
    if (mode == OffloadMode::kResident) r.gpu_bytes += batch * final_tokens * kv_layer * n;
    else r.gpu_bytes += 2 * batch * max_fraction * final_tokens * kv_layer;
    if (selective) r.gpu_bytes += batch * c.partial_ratio * final_tokens * kv_layer / 2 * n;  // partial keys
  } else {
    // Per layer at most W tokens (a rolling buffer); a buffer holds the
    // largest layer's fetched share.
    double kept_tokens = 0, max_buffer_tokens = 0;
    for (uint32_t l = 0; l < n; ++l) {
      kept_tokens += kept(l, final_tokens);
      max_buffer_tokens = std::max(max_buffer_tokens, fraction[l] * kept(l, final_tokens));
    }
    if (mode == OffloadMode::kResident) r.gpu_bytes += batch * kept_tokens * kv_layer;
    else r.gpu_bytes += 2 * batch * max_buffer_tokens * kv_layer;
    if (selective) r.gpu_bytes += batch * c.partial_ratio * kept_tokens * kv_layer / 2;  // partial keys
  }
  const double capacity = c.gpu_memory_bytes > 0 ? c.gpu_memory_bytes : gpu_memory_bytes(c.gpu.preset);
  r.fits = r.gpu_bytes <= capacity;
  return r;
}

}  // namespace kvs::sim
