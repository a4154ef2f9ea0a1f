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

// The bottleneck between the chunk server and the GPU node, the access links
// and the TCP settings of every connection (docs/simulator.md).
struct LinkSpec {
  double rate_mbps = 100;       // constant rate when `trace` is empty
  std::optional<traces::Trace> trace;  // piecewise-constant rate over time (loops if the trace says so)
  // How a trace drives the bottleneck: "rate" (the device's rate follows the
  // trace's piecewise-constant rate), "mahimahi" (packets leave only at the
  // trace's delivery opportunities, as mahimahi's mm-link releases them; needs
  // a trace with opportunities, i.e. read from a mahimahi file), or "auto"
  // (mahimahi when the trace has opportunities, rate otherwise).
  std::string trace_mode = "auto";
  double rtt_ms = 20;           // two-way propagation delay of the bottleneck (RTT / 2 each way)
  double access_rtt_ms = 0;     // added to every path's RTT by the access links (a quarter on each, each way)
  double loss_rate = 0;         // random loss on the bottleneck, per packet
  // Queue in front of the bottleneck: "droptail", "codel" or "fqcodel" (ns-3's
  // CoDelQueueDisc / FqCoDelQueueDisc with their defaults), holding at most
  // `queue_packets`; 0: one bandwidth-delay product at the peak rate (at least 100).
  std::string queue = "droptail";
  uint32_t queue_packets = 0;
  uint32_t mtu_bytes = 1500;
  double access_rate_mbps = 10000;  // server and client access links
  // TCP variant: cubic (RFC 9438, sim/tcp_cubic_rfc9438.h; ns-3's TcpCubic
  // when ns3_stock), cubic-rfc9438 (always the project's), cubic-ns3
  // (ns-3.37's TcpCubic), cubic-hystart-fix (sim/tcp_cubic.h), newreno, bbr.
  std::string tcp = "cubic";
  uint32_t tcp_buffer_bytes = 0;  // socket send/receive buffers; 0: 4x the BDP at the peak rate (at least 1 MiB)
  uint32_t mss_bytes = 0;       // TCP segment payload; 0: mtu_bytes - 52 (IP 20 + TCP 20 + timestamps 12)
  uint32_t initial_cwnd_segments = 10;
  uint32_t delayed_ack_count = 2;  // segments per delayed ACK (1: ACK every segment)
  double min_rto_ms = 200;      // minimum retransmission timeout (Linux's; ns-3's default is 1 s)
  // Unmodified ns-3 for comparison: `cubic` is ns-3's TcpCubic, and the RTO
  // and delayed-ACK timer are ns-3's (RTO = max(SRTT + 4 RTTVAR, min_rto),
  // ACK timer 200 ms) instead of Linux's (RTO >= SRTT + min_rto, 40 ms);
  // docs/simulator.md, "Loss".
  bool ns3_stock = false;
  // Without cross traffic, emulate the access links instead of simulating
  // them (sim/access_links.h, Topology::minimal): the dumbbell's packets with
  // half the events. false: the dumbbell (docs/simulator.md, "Events per
  // segment").
  bool fold_access_links = true;
};

// The GPU that decodes fetched chunks and recomputes the others.
struct GpuSpec {
  std::string preset = "h100";  // h100, h200, a100, l40s (see gpu_model.h)
  double peak_flops = 0;        // 0: from the preset
  double memory_bytes_per_s = 0;  // 0: from the preset (bounds the first token)
  double efficiency = 0.5;      // achieved fraction of peak FLOP/s and memory bandwidth
  // Share of the GPU's time taken by other work (requests already being
  // served), in [0, 1): prefill, recompute, the first token and the assumed
  // decode throughput get (1 - busy_fraction) of the GPU. 0: a dedicated GPU.
  double busy_fraction = 0;
  // How long decoding a fetched chunk takes on this GPU:
  // "assumed": the chunk's fp16 output bytes / a documented throughput per
  //   codec family and GPU preset (gpu_model.h); every output says "assumed,
  //   not measured";
  // "profile": the profile's measured seconds: as measured when measured on a
  //   GPU (`kvstream profile --device cuda`), else (one CPU thread) /
  //   decode_speedup;
  // "auto": "profile" for a GPU-measured profile, "assumed" otherwise.
  std::string decode = "auto";
  double decode_bytes_per_s = 0;  // "assumed": fp16 output bytes/s; 0: the preset's figure for the codec
  double decode_speedup = 1.0;    // "profile": measured seconds are divided by this
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
