// kvstream_tcp_trace: one TCP transfer over the simulator's dumbbell, with a
// trace of cwnd, ssthresh, RTO, congestion state and the scoreboard (the
// reproduction of issue 21's stalls; docs/simulator.md, "Loss").
//
//   kvstream_tcp_trace [--tcp cubic] [--loss 0.003] [--rate-mbps 1000] [--rtt-ms 20]
//                      [--bytes 80800000] [--chunk-bytes 0] [--stop-s 3600] [--seed 1]
//                      [--run 1] [--queue-packets 0] [--min-rto-ms 200] [--ns3-stock 0|1] [--delack-ms 40]
//                      [--mtu 1500] [--buffer-bytes 0] [--attr NS3_ATTRIBUTE=VALUE]...
//                      [--json 0|1] [--trace FILE.csv] [--from-s 0] [--to-s 1e18] [--next-seg index|fast|walk]
//                      [--next-seg-sack-rule 0|1] [--step RATE_MBPS | --onoff RATE_MBPS] [--granularity-ms MS]
//
// `--help` describes them. --chunk-bytes 0 is one bulk response; otherwise
// the client asks for the next chunk when the previous one has arrived (the
// simulator's pattern). Exit status: 0 finished, 1 unfinished at --stop-s,
// 2 bad options or a failed run (the message says which).
#include <cmath>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "sim/ns3_fixes.h"
#include "tests/sim/tcp_transfer.h"

namespace {

// A byte count that may have an exponent ("4e6", "1e9"): a whole number
// from 0 to 2^53. Returns CLI11's validator message ("" when valid).
std::string whole_bytes(const std::string& text) {
  double v = 0;
  if (!CLI::detail::lexical_cast(text, v) || !(v >= 0) || v > 9007199254740992.0 || v != std::floor(v))
    return "a whole number of bytes (e.g. 80800000 or 8.08e7), not " + text;
  return {};
}

// The piecewise-constant rate traces of tests/sim/simulation_test.cc.
kvs::traces::Trace step_trace(double rate_mbps) {  // that rate, then a fifth of it from 0.5 s
  kvs::traces::Trace t;
  t.name = "step";
  t.segments = {{0.0, rate_mbps * 1e6}, {0.5, rate_mbps * 0.2e6}};
  t.duration_s = 100;
  t.loops = false;
  return t;
}
kvs::traces::Trace onoff_trace(double rate_mbps) {  // on 0.1 s, off 0.05 s, looping
  kvs::traces::Trace t;
  t.name = "on-off";
  t.segments = {{0.0, rate_mbps * 1e6}, {0.1, 0.0}, {0.15, rate_mbps * 1e6}};
  t.duration_s = 0.2;
  return t;
}

}  // namespace

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
  double total_bytes = double(spec.total_bytes), chunk_bytes = 0, buffer_bytes = 0;
  double step_mbps = 0, onoff_mbps = 0;
  std::vector<std::string> attrs;
  std::string next_seg = "index";

  CLI::App app{"One TCP transfer over kvstream's simulated dumbbell (ns-3), with a trace of cwnd, ssthresh, RTO "
               "and the scoreboard (issue 21; docs/simulator.md, \"Loss\").\nExit status: 0 finished, 1 "
               "unfinished at --stop-s, 2 bad options or a failed run.",
               "kvstream_tcp_trace"};
  const CLI::Validator bytes(whole_bytes, "BYTES");
  app.add_option("--tcp", link.tcp, "TCP variant: cubic, cubic-rfc9438, cubic-ns3, cubic-hystart-fix, newreno, bbr")
      ->capture_default_str();
  app.add_option("--loss", link.loss_rate, "Random loss on the bottleneck, per packet")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--rate-mbps", link.rate_mbps, "Bottleneck rate, Mbit/s")->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--rtt-ms", link.rtt_ms, "Round-trip propagation delay, ms")->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--queue-packets", link.queue_packets, "Bottleneck queue, packets (0: one BDP, at least 100)")
      ->capture_default_str();
  app.add_option("--mtu", link.mtu_bytes, "MTU, bytes")->check(CLI::Range(100u, 65535u))->capture_default_str();
  app.add_option("--buffer-bytes", buffer_bytes, "Socket buffers, bytes (0: 4 BDPs at the peak rate, at least 1 MiB)")
      ->check(bytes)->capture_default_str();
  app.add_option("--min-rto-ms", link.min_rto_ms, "Minimum retransmission timeout, ms")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--ns3-stock", link.ns3_stock,
                 "1: unmodified ns-3.37 (no project fixes; ns-3's RTO and ACK timer), for comparison")
      ->capture_default_str();
  CLI::Option* step = app.add_option("--step", step_mbps,
                                     "RATE_MBPS: a trace, that rate and a fifth of it from 0.5 s (not --rate-mbps)")
                          ->check(CLI::PositiveNumber);
  app.add_option("--onoff", onoff_mbps, "RATE_MBPS: a trace, on 0.1 s and off 0.05 s, looping (not --rate-mbps)")
      ->check(CLI::PositiveNumber)->excludes(step);
  app.add_option("--bytes", total_bytes, "Bytes to transfer (e.g. 1e9)")->check(bytes)->capture_default_str();
  app.add_option("--chunk-bytes", chunk_bytes, "0: one bulk response; else the client asks for this many at a time")
      ->check(bytes)->capture_default_str();
  app.add_option("--stop-s", spec.stop_s, "Simulated seconds before giving up")->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--seed", spec.seed, "ns-3 RNG seed")->capture_default_str();
  app.add_option("--run", spec.run, "ns-3 RNG run number")->capture_default_str();
  app.add_option("--delack-ms", spec.delack_timeout_ms, "Delayed-ACK timeout, ms (default: the simulator's)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--granularity-ms", spec.clock_granularity_ms, "ns-3's TCP clock granularity, ms (default: ns-3's)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--attr", attrs,
                 "NAME=VALUE: an ns-3 attribute default, e.g. kvs::TcpCubicRfc9438::HyStart=false (repeatable)")
      ->check(CLI::Validator(
          [](const std::string& a) {
            const auto eq = a.find('=');
            return eq == std::string::npos || eq == 0 ? "NAME=VALUE, not " + a : std::string();
          },
          "NAME=VALUE"));
  CLI::Option* next_seg_option = app.add_option("--next-seg", next_seg,
                 "walk (ns-3.37's walks), fast (NextSeg's fast path only) or index (the default's); given, it "
                 "applies even with --ns3-stock 1; sim/ns3_fixes.h")
      ->check(CLI::IsMember({"walk", "fast", "index"}))->capture_default_str();
  bool sack_rule = true;
  CLI::Option* sack_rule_option =
      app.add_option("--next-seg-sack-rule", sack_rule,
                     "Upstream #805 in NextSeg (rules 1 and 3 only below the highest SACK once a SACK was seen); 0: "
                     "ns-3.37's rules. Given, it applies even with --ns3-stock 1")
          ->capture_default_str();
  app.add_option("--json", json, "1: one JSON object instead of text (bench/tcp_grid.py reads it)")
      ->capture_default_str();
  app.add_option("--trace", trace_path, "Write a CSV row at every change of cwnd, ssthresh, RTO and state to this file");
  app.add_option("--from-s", spec.trace_from_s, "--trace: rows from this simulated time")->capture_default_str();
  app.add_option("--to-s", spec.trace_to_s, "--trace: rows up to this simulated time")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::fprintf(stderr, "kvstream_tcp_trace: error: %s (see --help)\n", e.what());
    return 2;
  }
  spec.total_bytes = uint64_t(total_bytes);
  spec.chunk_bytes = uint64_t(chunk_bytes);
  if (buffer_bytes > 4294967295.0) {
    std::fprintf(stderr, "kvstream_tcp_trace: error: --buffer-bytes: at most 4294967295, not %.17g\n", buffer_bytes);
    return 2;
  }
  link.tcp_buffer_bytes = uint32_t(buffer_bytes);
  if (step_mbps > 0) link.trace = step_trace(step_mbps);
  if (onoff_mbps > 0) link.trace = onoff_trace(onoff_mbps);
  for (const std::string& a : attrs) {
    const auto eq = a.find('=');
    if (!ns3::Config::SetDefaultFailSafe(a.substr(0, eq), ns3::StringValue(a.substr(eq + 1)))) {
      std::fprintf(stderr, "kvstream_tcp_trace: error: --attr %s: no such ns-3 attribute, or a bad value for it\n",
                   a.c_str());
      return 2;
    }
  }
  if (next_seg_option->count() > 0 || sack_rule_option->count() > 0) {  // pinned for the run
    kvs::sim::Ns3TcpFixes fixes = link.ns3_stock ? kvs::sim::Ns3TcpFixes::stock() : kvs::sim::Ns3TcpFixes{};
    if (next_seg_option->count() > 0)  // even with --ns3-stock 1
      fixes = next_seg == "walk"   ? kvs::sim::Ns3TcpFixes::walk()
              : next_seg == "fast" ? kvs::sim::Ns3TcpFixes::fast_path_only()
                                   : kvs::sim::Ns3TcpFixes{};
    if (sack_rule_option->count() > 0) fixes.next_seg_sack_rule = sack_rule;
    kvs::sim::pin_ns3_tcp_fixes(fixes);
  }
  if (!trace_path.empty()) {
    spec.trace = std::fopen(trace_path.c_str(), "w");
    if (!spec.trace) {
      std::fprintf(stderr, "kvstream_tcp_trace: error: --trace %s: cannot write it\n", trace_path.c_str());
      return 2;
    }
  }
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
