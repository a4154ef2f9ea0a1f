// The GPU node's compute model: how long decoding a fetched chunk, recomputing
// a chunk from text (prefill), and producing the first token take, and the one
// FIFO queue they share (GpuQueue, engine.h).
//
// Sources of the numbers:
// - Decode, GpuSpec::decode = "assumed" (the default; GPU-measured times come
//   from `kvstream profile --device cuda` with decode "profile", below): the
//   chunk's KV at fp16 (target shape) divided by an
//   ASSUMED output throughput per codec family and GPU, named as assumed in
//   every output:
//     entropy-coded (cachegen, kvs, zstd): GPU rANS decoders reach 250-410 GB/s
//       on an A100 (DietGPU, the public order of magnitude); we take the low
//       end, 250 GB/s on an A100, and scale it to the other GPUs by memory
//       bandwidth (decoding is memory-bound): H100 411, H200 589, L40S 106 GB/s;
//     dequantization (quant8, kivi2, kivi4): memory-bound, about 3 bytes moved
//       per 2 bytes of output: 2/3 of the memory bandwidth x efficiency;
//     raw: no decode (0 s).
//   GpuSpec::decode = "profile": the profile's measured decode seconds for the
//   chunk at the chosen level, multiplied by the target/profiled size ratio
//   when the target model is larger than the profiled one, and:
//     measured on a CPU (Profile::device "cpu: ..."): divided by
//       GpuSpec::decode_speedup (an assumed CPU->GPU factor);
//     measured on a GPU (`kvstream profile --device cuda`, device
//       "cuda:<card>"): used as measured (the kernels' time); decode_speedup
//       must be 1 (it scales CPU times only). No scaling between cards: when
//       the simulated preset is not the profiled card the times are still
//       used as measured, and the note says so (kernel time on small chunks
//       is not purely bandwidth-bound, so a bandwidth ratio would be a guess).
// - Prefill: prefill_flops() of the target model divided by (peak
//   FLOP/s x efficiency). Peaks are vendors' dense (no sparsity) BF16
//   tensor-core numbers: H100 SXM 989 TFLOP/s, H200 989 TFLOP/s (same compute
//   as H100), A100 312 TFLOP/s, L40S 362 TFLOP/s (NVIDIA datasheets).
//   Efficiency 0.5 is a typical achieved MFU for long prefills; set it from a
//   measurement when one exists.
// - First token: one decode step, the larger of its FLOPs / (peak x
//   efficiency) and (weights + KV cache bytes) / (memory bandwidth x
//   efficiency): at batch size 1 it is memory-bound. Bandwidths (datasheets):
//   H100 SXM 3.35 TB/s, H200 4.8 TB/s, A100 80GB 2.039 TB/s, L40S 864 GB/s.
#pragma once

#include <string>
#include <vector>

#include "codec/profile.h"
#include "sim/config.h"

namespace kvs::sim {

// Forward-pass FLOPs to prefill `tokens` new tokens that follow `past` tokens
// already in the cache: 2 FLOPs per multiply-add over the projection, MLP and
// LM-head weights (all parameters but the input embedding table, a lookup),
// plus the attention scores and weighted sum, which grow with the context
// (causal: token i attends to past + i + 1 positions, at most its layer's
// window, ModelInfo::layer_windows).
double prefill_flops(const codec::ModelInfo& model, uint64_t past, uint64_t tokens);
// Query-key pairs of one layer with sliding window `window` (0: full
// attention) when `tokens` new tokens follow `past` ones.
double attention_pairs(uint64_t past, uint64_t tokens, uint64_t window);
// Cached tokens, summed over layers, that one decode step after
// `context_tokens` reads: all of them, or W - 1 in a layer with window W.
uint64_t cached_tokens_read(const codec::ModelInfo& model, uint64_t context_tokens);

// A GPU preset's peak; throws kvs::Error listing the presets when unknown.
double gpu_preset_peak_flops(const std::string& preset);
double gpu_preset_memory_bytes_per_s(const std::string& preset);
std::vector<std::string> gpu_preset_names();

// A target model preset with its Hugging Face config numbers (llama-7b =
// Llama-2-7b-hf, llama-13b, llama-70b = Llama-2-70b-hf, mistral-7b =
// Mistral-7B-v0.2 (full attention over 32K tokens), mistral-7b-v0.1 (the same
// shape with a 4,096-token sliding window on every layer), llama3-8b =
// Meta-Llama-3-8B, gemma2-9b = Gemma-2-9B (a 4,096-token window on every
// even layer), gemma3-12b = Gemma-3-12B's text model (a 1,024-token window
// on five layers of six)); throws kvs::Error when unknown.
codec::ModelInfo model_preset(const std::string& name);
std::vector<std::string> model_preset_names();

class ComputeModel {
 public:
  // `model`: the model whose prefill is timed (the target); `spec.peak_flops`
  // of 0 takes the preset's peak; `profile_device`: Profile::device of the
  // profile whose decode seconds decode_s() receives ("cuda:..." for GPU
  // times). Throws kvs::Error for a decode_speedup other than 1 with a
  // GPU-measured profile under decode "profile".
  ComputeModel(const codec::ModelInfo& model, const GpuSpec& spec, std::string profile_device = "");

  // Prefill of `tokens` tokens after `past` tokens already in the cache.
  double recompute_s(uint64_t past, uint64_t tokens) const;
  // One decode step of the model with `context_tokens` in the cache (or the
  // configured value).
  double first_token_s(uint64_t context_tokens) const;
  // Decode of one chunk of `codec`: `profiled_decode_s` measured on the
  // profile's device, `size_scale` target/profiled, `fp16_bytes` the chunk's
  // KV at fp16 in the target's shape.
  double decode_s(const std::string& codec, double profiled_decode_s, double size_scale, double fp16_bytes) const;
  // The assumed decode throughput for `codec` (fp16 output bytes/s; 0 for raw).
  double assumed_decode_bytes_per_s(const std::string& codec) const;
  // One line for every output: how decode times were obtained.
  // `profile_device`: as given to the constructor (kept for callers that pass it here).
  std::string decode_timing_note(const std::string& codec, const std::string& profile_device) const;
  // Whether the simulated GPU is the card the profile's GPU times were measured on
  // (its preset name, e.g. "h100", in the card's name; false for CPU profiles).
  bool simulates_profiled_card(const std::string& profile_device) const;

  double flops_per_s() const { return flops_per_s_; }

 private:
  codec::ModelInfo model_;
  GpuSpec spec_;
  std::string profile_device_;
  double flops_per_s_;
  double memory_bytes_per_s_;
};

}  // namespace kvs::sim
