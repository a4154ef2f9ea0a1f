// Decoding with the KV cache in host memory (InfiniGen's setting, issue 23):
// a prefill on the GPU, then N output tokens, each step running the layers in
// order while the KV cache of the next layer crosses a PCIe-class link from
// host memory. Three ways to serve attention are compared:
//   full      every step fetches the whole KV cache of every layer
//             (FlexGen-like offloading of the cache, weights on the GPU);
//   selective InfiniGen: a per-layer fraction of the tokens' K and V is
//             fetched (layers the input marks as full are fetched whole), after
//             a speculation step on the GPU (partial query x partial keys);
//   resident  the whole cache stays in GPU memory (the lower bound; the
//             result says whether it fits).
//
// Why an analytic event pipeline and not ns-3: the host-to-GPU link carries
// one transfer at a time, of a known size, at a fixed effective rate, with no
// loss, no competing flow and no congestion control; its completion time is
// exactly start + latency + bytes / rate. The pipeline below is a max-plus
// recurrence over those instants, so it is exact for this model, and ns-3's
// packets would add nothing but framing we would have to invent (PCIe's TLP
// and DLLP overheads are folded into the effective rate).
//
// The model (all times from the GpuSpec's preset peaks x efficiency, as
// sim/gpu_model.h; B = batch, c = tokens in the cache at the step):
// - Weights are on the GPU. Per layer: (parameters - 2 x vocab x hidden) /
//   layers (the presets' LM heads are untied; the final norm is neglected).
// - Prefill (TTFT): B x prefill_flops(model, 0, prompt) / FLOP/s, the same
//   as ComputeModel::recompute_s, split into equal layers and the LM head. In
//   the offloaded modes each layer's KV is written to host memory as soon as
//   it is computed (GPU-to-host direction, same rate and latency, full
//   duplex); the first decode step cannot fetch a layer before its write ends.
// - One decode step of layer l: max(FLOPs / FLOP/s, bytes / memory bandwidth)
//   with bytes = the layer's weights + the K and V it attends to (fetched
//   fraction of the c-1 past tokens, of the min(c-1, W-1) of its window on a
//   sliding-window layer, plus the new token), FLOPs = B x (2 x
//   layer parameters + 4 x heads x head_dim x attended tokens). Then the LM
//   head: max(B x 2 x vocab x hidden / FLOP/s, vocab x hidden x dtype / bw).
//   (The embedding row lookup is neglected, so a resident step is
//   ComputeModel::first_token_s minus the embedding table's read.)
// - Transfer of layer l: latency + B x fetched tokens x KV bytes per token
//   and layer / rate. It starts when the link is free and layer l-1 has begun
//   computing (prefetch one layer ahead: two layer buffers on the GPU); for
//   layer 0 the previous step's last layer. Layer l computes when layer l-1
//   has finished and its transfer has arrived.
// - Speculation (selective, layers with fraction < 1): at the start of layer
//   l-1 the GPU reads the partial W_q (ratio x hidden x hidden) and the
//   partial keys of the c-1 past tokens (ratio x K), writes and re-reads the
//   fp16 scores (heads x tokens) to select; that time is added to layer l-1's
//   compute and layer l's fetch starts after it. The host-side gather of the
//   selected rows is not modelled (assumed at link rate).
// - The new token's KV written back to the host each step is neglected (one
//   token per layer, on the other direction of the link).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "codec/profile.h"
#include "sim/specs.h"

namespace kvs::sim {

// The host-to-GPU link (and the same in the other direction).
struct PcieSpec {
  double rate_bytes_per_s = 25e9;  // effective rate: PCIe 4.0 x16 is 32 GB/s raw, about 25 in practice
  double latency_s = 5e-6;         // per transfer (DMA setup, one layer's KV)
};

enum class OffloadMode { kFull, kSelective, kResident };
std::string offload_mode_name(OffloadMode mode);

struct OffloadConfig {
  codec::ModelInfo model;  // the target (sim/gpu_model.h's model_preset)
  GpuSpec gpu;             // preset, peak_flops / memory_bytes_per_s overrides, efficiency
  PcieSpec pcie;
  uint64_t prompt_tokens = 2048;
  uint32_t output_tokens = 64;  // including the one the prefill produces
  uint32_t batch = 1;
  // Selective: fraction of the past tokens fetched per layer and step, one
  // entry per layer (1 = that layer is loaded in full). Unused by the others.
  std::vector<double> layer_fraction;
  double partial_ratio = 0.2;   // channels kept in the partial keys and W_q (InfiniGen's default)
  // Each layer's sliding window W in tokens (0: full attention), in every
  // mode; empty: the model's own (codec::ModelInfo::layer_windows, which its
  // prefill FLOPs follow too; none: all full). A windowed layer's step reads only the min(past,
  // W - 1) past keys of its window (layer_fraction is a share of those, as
  // in a selective profile), the prefill offloads only the ones the first
  // step reads, and the GPU keeps at most W of its tokens (resident cache,
  // buffers, partial keys).
  std::vector<uint64_t> layer_window;
  double gpu_memory_bytes = 0;  // for the resident mode's "fits"; 0: the preset's (gpu_memory_bytes())
};

struct OffloadResult {
  OffloadMode mode = OffloadMode::kFull;
  double ttft_s = 0;   // end of the prefill (the first output token)
  double tpot_s = 0;   // (total - ttft) / (output_tokens - 1); 0 with one output token
  double total_s = 0;  // the last output token
  std::vector<double> step_s;  // each decode step's duration (output_tokens - 1 entries)
  double h2d_bytes = 0;        // bytes fetched from host memory over all decode steps
  double link_busy_s = 0;      // host-to-GPU transfer time over the decode steps
  double stall_s = 0;          // decode time the GPU waited for a transfer
  double speculation_s = 0;    // GPU time spent speculating (selective)
  double gpu_bytes = 0;        // GPU memory needed: weights + KV resident or buffered (+ partial keys)
  bool fits = true;            // gpu_bytes <= the GPU's memory
};

// The GPU preset's memory capacity (A100 80 GB, H100 80 GB, H200 141 GB,
// L40S 48 GB, datasheets); throws kvs::Error for an unknown preset.
double gpu_memory_bytes(const std::string& preset);

// InfiniGen's layout of fractions: `fraction` for every layer except the
// first `full_front` and (when `full_last`) the last, which are loaded in full.
// (A selective profile's measured fractions: policies/selective.h's
// read_selective_profile and target_layer_fractions.)
std::vector<double> infinigen_layer_fractions(uint32_t layers, double fraction, uint32_t full_front = 2,
                                              bool full_last = true);

// Runs the decode pipeline. Throws kvs::Error for an invalid configuration
// (no tokens, rates <= 0, a fraction outside [0, 1], layer_window neither
// empty nor one per layer, selective without one
// fraction per layer or with layer 0 below 1: it has no layer to speculate from).
OffloadResult simulate_offload(const OffloadConfig& config, OffloadMode mode);

}  // namespace kvs::sim
