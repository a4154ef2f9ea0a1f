// kvstream_tcp_trace: one TCP transfer over the simulator's dumbbell, with a
// trace of cwnd, ssthresh, RTO, congestion state and the scoreboard (the
// reproduction of issue 21's stalls; docs/simulator.md, "Loss").
//
//   kvstream_tcp_trace [--tcp cubic] [--loss 0.003] [--rate-mbps 1000] [--rtt-ms 20]
//                      [--bytes 80800000] [--chunk-bytes 0] [--stop-s 3600] [--seed 1]
//                      [--run 1] [--queue-packets 0] [--min-rto-ms 200] [--ns3-stock 0|1] [--delack-ms 40]
//                      [--mtu 1500] [--buffer-bytes 0] [--attr NS3_ATTRIBUTE=VALUE]
//                      [--json 0|1] [--trace FILE.csv] [--from-s 0] [--to-s 1e18] [--next-seg index|fast|walk]
//
// --chunk-bytes 0 is one bulk response; otherwise the client asks for the
// next chunk when the previous one has arrived (the simulator's pattern).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "sim/ns3_fixes.h"
#include "tests/sim/tcp_transfer.h"

int main(int argc, char** argv) {
  kvs::sim::LinkSpec link;
  link.rate_mbps = 1000;
  link.rtt_ms = 20;
  link.tcp = "cubic";
  kvs::sim::testing::TransferSpec spec;
  spec.total_bytes = 80'800'000;
  spec.stop_s = 3600;
  std::string trace_path;
  bool json = false;  // --json 1: one JSON object instead of the text lines (bench/tcp_grid.py reads it)
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--tcp") link.tcp = v;
    else if (k == "--loss") link.loss_rate = std::atof(v);
    else if (k == "--rate-mbps") link.rate_mbps = std::atof(v);
    else if (k == "--rtt-ms") link.rtt_ms = std::atof(v);
    else if (k == "--queue-packets") link.queue_packets = uint32_t(std::atol(v));
    else if (k == "--bytes") spec.total_bytes = uint64_t(std::atof(v));
    else if (k == "--chunk-bytes") spec.chunk_bytes = uint64_t(std::atof(v));
    else if (k == "--stop-s") spec.stop_s = std::atof(v);
    else if (k == "--seed") spec.seed = uint32_t(std::atol(v));
    else if (k == "--run") spec.run = uint32_t(std::atol(v));
    else if (k == "--trace") trace_path = v;
    else if (k == "--json") json = std::atoi(v) != 0;
    else if (k == "--min-rto-ms") link.min_rto_ms = std::atof(v);
    else if (k == "--ns3-stock") link.ns3_stock = std::atoi(v) != 0;
    else if (k == "--mtu") link.mtu_bytes = uint32_t(std::atol(v));
    else if (k == "--step") {  // RATE_MBPS: that rate, then a fifth of it from 0.5 s (simulation_test's step)
      kvs::traces::Trace t;
      t.name = "step";
      t.segments = {{0.0, std::atof(v) * 1e6}, {0.5, std::atof(v) * 0.2e6}};
      t.duration_s = 100;
      t.loops = false;
      link.trace = t;
    }
    else if (k == "--onoff") {  // RATE_MBPS: on 0.1 s, off 0.05 s, looping (simulation_test's trace)
      kvs::traces::Trace t;
      t.name = "on-off";
      t.segments = {{0.0, std::atof(v) * 1e6}, {0.1, 0.0}, {0.15, std::atof(v) * 1e6}};
      t.duration_s = 0.2;
      link.trace = t;
    }
    else if (k == "--buffer-bytes") link.tcp_buffer_bytes = uint32_t(std::atof(v));
    else if (k == "--attr") {  // NAME=VALUE: an ns-3 attribute default, e.g. kvs::TcpCubicRfc9438::HyStart=false
      const std::string a = v;
      const auto eq = a.find('=');
      ns3::Config::SetDefault(a.substr(0, eq), ns3::StringValue(a.substr(eq + 1)));
    }
    else if (k == "--delack-ms") spec.delack_timeout_ms = std::atof(v);
    else if (k == "--next-seg") {  // walk (ns-3.37's walks), fast (NextSeg's fast path only) or index (default); sim/ns3_fixes.h
      const std::string mode = v;
      if (mode != "walk" && mode != "fast" && mode != "index") {
        std::fprintf(stderr, "--next-seg: walk, fast or index, not %s\n", v);
        return 2;
      }
      kvs::sim::pin_ns3_tcp_fixes(mode == "walk"   ? kvs::sim::Ns3TcpFixes::walk()
                                  : mode == "fast" ? kvs::sim::Ns3TcpFixes::fast_path_only()
                                                   : kvs::sim::Ns3TcpFixes{});
    }
    else if (k == "--granularity-ms") spec.clock_granularity_ms = std::atof(v);
    else if (k == "--from-s") spec.trace_from_s = std::atof(v);
    else if (k == "--to-s") spec.trace_to_s = std::atof(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (!trace_path.empty()) spec.trace = std::fopen(trace_path.c_str(), "w");
  kvs::sim::testing::TransferResult r;
  try {
    r = kvs::sim::testing::run_transfer(link, spec);
  } catch (const std::exception& e) {  // kvs::Error: bad settings, or an ns-3 other than 3.37 (sim/ns3_version.h)
    std::fprintf(stderr, "kvstream_tcp_trace: error: %s\n", e.what());
    return 2;
  }
  if (spec.trace) std::fclose(spec.trace);
  if (json) {
    std::printf(
        "{\"tcp\": \"%s\", \"tcp_type\": \"%s\", \"ns3_stock\": %s, \"loss\": %.17g, \"rate_mbps\": %.17g, "
        "\"rtt_ms\": %.17g, \"mtu\": %u, \"bytes\": %llu, \"chunk_bytes\": %llu, \"seed\": %u, \"run\": %u, "
        "\"finished\": %s, \"completion_s\": %.9g, \"tenth_s\": %.9g, \"received\": %llu, \"timeouts\": %u, "
        "\"max_backoff\": %u, \"max_stall_s\": %.9g, \"rto_wait_s\": %.9g, \"data_segments\": %llu, "
        "\"retransmissions\": %llu}\n",
        link.tcp.c_str(), r.tcp_type.c_str(), link.ns3_stock ? "true" : "false", link.loss_rate, link.rate_mbps,
        link.rtt_ms, link.mtu_bytes, (unsigned long long)spec.total_bytes, (unsigned long long)spec.chunk_bytes,
        spec.seed, spec.run, r.finished ? "true" : "false", r.completion_s, r.tenth_s,
        (unsigned long long)r.received, r.timeouts, r.max_backoff, r.max_stall_s, r.rto_wait_s,
        (unsigned long long)r.data_segments, (unsigned long long)r.retransmissions);
    return r.finished ? 0 : 1;
  }
  std::printf(
      "tcp=%s (%s) loss=%g rate=%g Mbit/s rtt=%g ms bytes=%llu chunk=%llu: %s %.3f s, %.2f Mbit/s; timeouts %u, "
      "longest RTO run %u, longest send gap %.3f s, waiting for timeouts %.3f s, segments %llu, retransmissions "
      "%llu%s; after the first tenth %.2f Mbit/s\n",
      link.tcp.c_str(), r.tcp_type.c_str(), link.loss_rate, link.rate_mbps, link.rtt_ms,
      (unsigned long long)spec.total_bytes, (unsigned long long)spec.chunk_bytes,
      r.finished ? "finished in" : "UNFINISHED after", r.completion_s, 8.0 * double(r.received) / r.completion_s / 1e6,
      r.timeouts, r.max_backoff, r.max_stall_s, r.rto_wait_s, (unsigned long long)r.data_segments,
      (unsigned long long)r.retransmissions, link.ns3_stock ? " [ns3-stock]" : "",
      r.finished ? 8.0 * 0.9 * double(spec.total_bytes) / (r.completion_s - r.tenth_s) / 1e6 : 0.0);
  // Every data segment's time, sequence number and size (equal for equal transfers; --next-seg compares).
  std::printf("tx hash %016llx\n", (unsigned long long)r.tx_hash);
  double prev = 0;
  for (size_t i = 0; i < r.chunk_done_s.size() && spec.chunk_bytes; ++i) {
    std::printf("  chunk %zu: %.3f s\n", i, r.chunk_done_s[i] - prev);
    prev = r.chunk_done_s[i];
  }
  return r.finished ? 0 : 1;
}
