// The ns-3 engine under kvs::sim (C++17-safe header: no ns-3 types and no
// codec types, because ns-3.37 compiles only as C++17 and codec/ only as
// C++20). simulation.cc (C++20) turns a profile and a SimConfig into these
// plain tables, with sizes already scaled and GPU times already computed, and
// runs them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "policies/policy.h"
#include "sim/run_log.h"
#include "sim/specs.h"

namespace kvs::sim {

// One chunk of a context as the simulation uses it (and as policies see it):
// sizes already scaled to the target, GPU times already computed.
using ChunkSpec = policies::ChunkInfo;

// Whether a layer with sliding window `window` (0: full attention) reads a
// token before `token_end` when it computes position `reader`: it reads
// positions reader - window < k <= reader.
inline bool window_reaches(uint32_t window, uint64_t token_end, uint64_t reader) {
  return window == 0 || token_end + window > reader + 1;
}

struct ContextSpec {
  std::string id;
  uint32_t tokens = 0;
  double first_token_s = 0;            // one decode step at full context
  std::vector<ChunkSpec> chunks;
  // The codec level of each level index the policy is offered (logs name the
  // codec level); empty: the same numbers.
  std::vector<int> level_numbers;
  policies::QualityMeasure quality_measure = policies::QualityMeasure::kKl;  // of ChunkSpec::quality_cost
  // The target model's KV shape (selective loading sizes its layers and
  // partial keys with it; 0: unknown, selective loading refuses to run).
  uint32_t layers = 0, kv_heads = 0, head_dim = 0;
  // The target's per-layer sliding windows (codec::ModelInfo::layer_windows;
  // empty: every layer attends to everything). With windows, a chunk's
  // `bytes` and `decode_s` cover only the layers the query reads
  // (query_reads: every full-attention layer, and a windowed one while its
  // window from position `tokens` reaches the chunk). `layer_bytes` (also
  // for full-attention targets when the profile records layer shares)
  // ([chunk][level index][layer]) is each layer's part of the whole chunk's
  // bytes (the profile's layer shares, or an even split) and
  // `layer_decode_s` ([chunk][level index]) one layer's even share of its
  // decode time: the selective schedule's layers, and each chunk's
  // `window_reads` (what recomputing it fetches first) are made of them.
  std::vector<uint32_t> layer_windows;
  std::vector<std::vector<std::vector<double>>> layer_bytes;
  std::vector<std::vector<double>> layer_decode_s;
  int level_number(int index) const {
    return index >= 0 && size_t(index) < level_numbers.size() ? level_numbers[size_t(index)] : index;
  }
  bool windowed() const { return !layer_windows.empty(); }
  uint64_t chunk_end(size_t chunk) const { return chunks[chunk].token_begin + chunks[chunk].tokens; }
  bool query_reads(size_t chunk, size_t layer) const {
    return layer >= layer_windows.size() || window_reaches(layer_windows[layer], chunk_end(chunk), tokens);
  }
  // Whether the query reads any layer of the chunk (with `layers` known).
  bool query_reads_any(size_t chunk) const {
    for (size_t l = 0; l < layers; ++l)
      if (query_reads(chunk, l)) return true;
    return layers == 0;
  }
};

struct EngineConfig {
  // How the network is simulated: "ns3" (packets, real TCP: the reference),
  // "fluid" or "pensieve" (models without packets, sim/fluid_network.h).
  std::string network = "ns3";
  LinkSpec link;
  CrossTrafficSpec cross;
  std::vector<double> arrival_s;       // per request
  std::vector<uint32_t> contexts;      // per request: index into the context table
  double slo_s = 0;
  uint32_t in_flight = 1;
  double sample_interval_s = 0.01;
  uint32_t request_header_bytes = 16;
  uint32_t response_header_bytes = 16;
  uint32_t seed = 1, run = 1;
  double max_sim_s = 3600;
  // The policy is an oracle (PolicyInfo::reads_future): hand it the link
  // through Policy::see_future before its first decision.
  bool policy_reads_future = false;
  bool show_progress = false;          // a progress bar on stderr (chunks done)
};

struct EngineOutput {
  std::vector<RequestResult> requests;
  std::string events_jsonl;
  std::string network_model;  // EngineConfig::network
  std::string network;        // one sentence
  std::vector<std::pair<std::string, std::string>> network_settings;
  double sim_end_s = 0;
  uint64_t events = 0;        // simulator events executed
};

using PolicyFactory = std::function<std::unique_ptr<policies::Policy>(uint32_t request)>;

EngineOutput run_engine(const EngineConfig& config, const std::vector<ContextSpec>& contexts,
                        const PolicyFactory& make_policy);

// One GPU, one FIFO: a job runs after every job submitted before it. Jobs are
// submitted in simulation-time order, so start = max(now, previous end).
class GpuQueue {
 public:
  struct Slot {
    double start_s, end_s;
  };
  Slot submit(double now_s, double duration_s) {
    const double start = now_s > busy_until_s_ ? now_s : busy_until_s_;
    busy_until_s_ = start + duration_s;
    return {start, busy_until_s_};
  }
  // When the GPU finishes the work queued so far (now if idle).
  double busy_until_s(double now_s) const { return busy_until_s_ > now_s ? busy_until_s_ : now_s; }

 private:
  double busy_until_s_ = 0;
};

}  // namespace kvs::sim
