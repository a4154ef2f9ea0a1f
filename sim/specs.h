// Network, GPU, arrival and cross-traffic settings of a run: plain data with
// no ns-3 and no codec types, shared by the C++20 API (config.h) and the
// C++17 ns-3 engine (engine.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "traces/trace.h"

namespace kvs::sim {

// The bottleneck between the chunk server and the GPU node.
struct LinkSpec {
  double rate_mbps = 100;       // constant rate when `trace` is empty
  std::optional<traces::Trace> trace;  // piecewise-constant rate over time (loops if the trace says so)
  double rtt_ms = 20;           // two-way propagation delay, split evenly over the path
  double loss_rate = 0;         // random loss on the bottleneck, per packet
  uint32_t queue_packets = 0;   // bottleneck drop-tail queue; 0: one bandwidth-delay product (at least 100)
  uint32_t mtu_bytes = 1500;
  double access_rate_mbps = 10000;  // server and client access links
  std::string tcp = "cubic";    // ns-3 TCP variant: cubic, cubic-hystart-fix (sim/tcp_cubic.h), newreno, bbr
  uint32_t tcp_buffer_bytes = 0;  // socket send/receive buffers; 0: 4x the BDP at the peak rate (at least 1 MiB)
};

// The GPU that decodes fetched chunks and recomputes the others.
struct GpuSpec {
  std::string preset = "h100";  // h100, h200, a100, l40s (see gpu_model.h)
  double peak_flops = 0;        // 0: from the preset
  double memory_bytes_per_s = 0;  // 0: from the preset (bounds the first token)
  double efficiency = 0.5;      // achieved fraction of peak FLOP/s and memory bandwidth
  // Decode seconds = the profile's measured seconds (on Profile::device) / speedup.
  double decode_speedup = 1.0;
  double first_token_s = -1;    // < 0: from the compute model (one token at full context)
};

// When requests arrive and which context each asks for.
struct ArrivalSpec {
  std::string mode = "schedule";   // schedule: `times_s`; poisson: `count` arrivals at `rate_per_s`
  std::vector<double> times_s = {0.0};
  uint32_t count = 1;
  double rate_per_s = 1.0;
  // Contexts of the profile by index, used round-robin; empty: 0, 1, 2, ... round-robin.
  std::vector<uint32_t> contexts;
};

// Background traffic sharing the bottleneck.
struct CrossTrafficSpec {
  uint32_t bulk_tcp_flows = 0;     // long-lived TCP flows, started at `start_s`
  uint32_t onoff_udp_flows = 0;    // UDP on/off sources (exponential on and off periods)
  double udp_rate_mbps = 10;       // rate of each UDP source while on
  double udp_on_s = 0.5;           // mean on period
  double udp_off_s = 0.5;          // mean off period
  double start_s = 0;
};

}  // namespace kvs::sim
