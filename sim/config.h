// Configuration of one simulation run: plain data, no ns-3 types, so that
// apps/ and scenarios/ (C++20) can build it and sim/ (C++17) can run it.
//
// Everything a run depends on is here (plus the profile and the trace it
// names): the same SimConfig and the same seed give byte-identical outputs.
// Presets (GPU, target model) are named by string and resolved by the
// simulator, so that a scenario file stays readable and sweepable.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "codec/profile.h"
#include "sim/specs.h"

namespace kvs::sim {

struct SimConfig {
  std::string profile_path;    // for the record (the profile itself is passed in)
  std::string codec;           // a codec in the profile
  std::string policy = "fixed";
  std::map<std::string, std::string> policy_params;
  // Target model whose KV cache is streamed: empty = the profiled model;
  // otherwise a preset name (llama-7b, mistral-7b, llama-70b, ...) or `target_model`.
  std::string target;
  std::optional<codec::ModelInfo> target_model;

  // How the network is simulated: "ns3" (the default and the reference:
  // packets and ns-3's TCP), "fluid" (bytes at the link's rate with slow
  // start, one RTT per request) or "pensieve" (Pensieve's chunk-level
  // simulator); docs/simulator.md, "Network models".
  std::string network = "ns3";
  LinkSpec link;
  GpuSpec gpu;
  ArrivalSpec arrivals;
  CrossTrafficSpec cross;

  double slo_s = 0;             // TTFT target per request; 0: none
  uint32_t in_flight = 1;       // chunk requests outstanding per connection
  double sample_interval_ms = 10;  // throughput samples: bytes over at least this long
  uint32_t request_header_bytes = 16;
  uint32_t response_header_bytes = 16;
  uint32_t seed = 1;            // ns-3 RngSeedManager seed
  uint32_t run = 1;             // ns-3 run number (independent replications)
  double max_sim_s = 3600;      // a run stops here even if requests are unfinished
  // Which levels policies are offered: false (scenario `levels: front`, the
  // default) only the codec's levels on the profile's size-KL front
  // (codec::pareto_front), renumbered 0..n-1 finest first; true (`levels:
  // all`) every level. A policy with a `level` parameter (fixed, hybrid) names
  // codec levels and is always offered every level.
  bool all_levels = false;
  // The profile figure policies see as each chunk's quality cost (scenario
  // `quality_measure: kl | loss_increase`).
  bool quality_loss_increase = false;  // false: kl_nats
  bool show_progress = false;   // progress bar on stderr (not part of the outputs)
};

}  // namespace kvs::sim
