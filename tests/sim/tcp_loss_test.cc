// TCP under random loss (issue 21, part 1): loss-limited throughput against
// the TCP response functions, Cubic against NewReno, and no connection left
// waiting on retransmission timeouts (C++17: ns-3 headers). Transfers run on
// the simulator's dumbbell (sim/topology.h) through tests/sim/tcp_transfer.h;
// docs/simulator.md, "Loss", explains the numbers.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "ns3/core-module.h"
#include "ns3/internet-module.h"

#include "sim/tcp_cubic_rfc9438.h"
#include "tests/sim/tcp_transfer.h"

namespace kvs::sim {
namespace {

using testing::run_transfer;
using testing::TransferResult;
using testing::TransferSpec;

constexpr double kMss = 1448;
constexpr double kFactor = 1.5;

struct Cell {
  double loss, rtt_ms, rate_mbps;
  double loss_events;  // the transfer is loss_events / loss segments long
};

// Loss 0.1 % .. 2 %, RTT 10 .. 200 ms, rate 20 .. 1000 Mbit/s (each well
// above the loss-limited rate, so the window, not the link, limits). The
// cost is in packets (ns-3 spends about 50 us of CPU per segment here), so
// the rare-loss cells are fewer and shorter.
const Cell kGrid[] = {
    {0.001, 200, 20, 40},   {0.003, 10, 1000, 60}, {0.003, 50, 100, 60}, {0.01, 10, 1000, 100},
    {0.01, 50, 100, 100},   {0.01, 200, 20, 100},  {0.02, 10, 1000, 100}, {0.02, 200, 20, 100},
};

LinkSpec link_for(const Cell& c, const std::string& tcp) {
  LinkSpec l;
  l.rate_mbps = c.rate_mbps;
  l.rtt_ms = c.rtt_ms;
  l.loss_rate = c.loss;
  l.tcp = tcp;
  return l;
}

// Payload bits per second after the first tenth of the bytes (slow start is over).
double steady_bps(const TransferResult& r, uint64_t bytes) {
  return 8.0 * 0.9 * double(bytes) / (r.completion_s - r.tenth_s);
}

// The RTT a segment sees on an empty queue: propagation plus serialization.
double base_rtt_s(const Cell& c) { return c.rtt_ms / 1000 + 8.0 * (kMss + 54) / (c.rate_mbps * 1e6); }

// Mathis et al. with an ACK every b = 2 segments: W = sqrt(3 / (2 b p)).
double mathis_bps(const Cell& c) { return std::sqrt(3.0 / (4.0 * c.loss)) * kMss * 8 / base_rtt_s(c); }

// Padhye et al.'s full model (their eq. 30) with b = 2 and the timeout T0 =
// the RTO of a steady path here (RTT + the 200 ms minimum, sim/topology.cc):
// Mathis at low loss, below it where timeouts begin to count (at 2 % and
// 10 ms it is half of Mathis).
double padhye_bps(const Cell& c) {
  const double rtt = base_rtt_s(c), p = c.loss, b = 2, t0 = c.rtt_ms / 1000 + 0.2;
  const double denom = rtt * std::sqrt(2 * b * p / 3) +
                       t0 * std::min(1.0, 3 * std::sqrt(3 * b * p / 8)) * p * (1 + 32 * p * p);
  return kMss * 8 / denom;
}

// RFC 9438, 5.1-5.2: the average window of the cubic function,
// (C (3 + beta) / (4 (1 - beta)))^(1/4) RTT^(3/4) / p^(3/4), and of the
// Reno-friendly region, sqrt(3 / (2 p)) (Reno's); Cubic runs the larger.
double cubic_bps(const Cell& c) {
  const double rtt = base_rtt_s(c), beta = 0.7, cc = 0.4;
  const double w_cubic = std::pow(cc * (3 + beta) / (4 * (1 - beta)), 0.25) * std::pow(rtt, 0.75) / std::pow(c.loss, 0.75);
  const double w_reno = std::sqrt(3.0 / (2.0 * c.loss));
  return std::max(w_cubic, w_reno) * kMss * 8 / rtt;
}

struct GridRun {
  Cell cell;
  std::string tcp;
  uint64_t bytes;
  TransferResult r;
};

// Every cell with both variants, run once for all tests below.
const std::vector<GridRun>& grid() {
  static const std::vector<GridRun> runs = [] {
    std::vector<GridRun> out;
    for (const Cell& c : kGrid) {
      for (const char* tcp : {"newreno", "cubic"}) {
        TransferSpec spec;
        spec.total_bytes = uint64_t(c.loss_events / c.loss * kMss);
        spec.stop_s = 3000;
        out.push_back({c, tcp, spec.total_bytes, run_transfer(link_for(c, tcp), spec)});
      }
    }
    return out;
  }();
  return runs;
}

std::string cell_name(const Cell& c) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "loss %g, RTT %g ms, %g Mbit/s", c.loss, c.rtt_ms, c.rate_mbps);
  return buf;
}

std::string name(const GridRun& g) { return g.tcp + ", " + cell_name(g.cell); }

TEST(TcpLoss, NewRenoIsWithinOneAndAHalfOfPadhyeWithDelayedAcks) {
  for (const auto& g : grid()) {
    if (g.tcp != "newreno") continue;
    ASSERT_TRUE(g.r.finished) << name(g);
    const double ratio = steady_bps(g.r, g.bytes) / padhye_bps(g.cell);
    std::printf("%-45s %7.3f Mbit/s, Padhye %7.3f: x%.2f (Mathis %7.3f)\n", name(g).c_str(),
                steady_bps(g.r, g.bytes) / 1e6, padhye_bps(g.cell) / 1e6, ratio, mathis_bps(g.cell) / 1e6);
    EXPECT_LE(ratio, kFactor) << name(g);
    EXPECT_GE(ratio, 1 / kFactor) << name(g);
  }
}

TEST(TcpLoss, CubicIsWithinOneAndAHalfOfRfc9438AndNeverBelowNewReno) {
  std::map<std::string, double> newreno;
  for (const auto& g : grid())
    if (g.tcp == "newreno") newreno[cell_name(g.cell)] = steady_bps(g.r, g.bytes);
  for (const auto& g : grid()) {
    if (g.tcp != "cubic") continue;
    ASSERT_TRUE(g.r.finished) << name(g);
    EXPECT_EQ(g.r.tcp_type, "kvs::TcpCubicRfc9438");
    const double bps = steady_bps(g.r, g.bytes), ratio = bps / cubic_bps(g.cell);
    std::printf("%-45s %7.3f Mbit/s, RFC 9438 %7.3f: x%.2f; NewReno %7.3f\n", name(g).c_str(), bps / 1e6,
                cubic_bps(g.cell) / 1e6, ratio, newreno[cell_name(g.cell)] / 1e6);
    EXPECT_LE(ratio, kFactor) << name(g);
    EXPECT_GE(ratio, 1 / kFactor) << name(g);
    EXPECT_GE(bps, newreno[cell_name(g.cell)]) << name(g);
  }
}

// The stall of issue 21: a connection that sends one segment per timeout.
// Every run may wait for timeouts at most 5 % of its time, and never backs
// off twice in a row without new data acknowledged in between.
void expect_no_timeout_stall(const TransferResult& r, const std::string& what) {
  EXPECT_LE(r.rto_wait_s, 0.05 * r.completion_s) << what << ": " << r.timeouts << " timeouts";
  EXPECT_LE(r.max_backoff, 2u) << what;
}

TEST(TcpLoss, NoRunWaitsOnRepeatedTimeouts) {
  for (const auto& g : grid()) expect_no_timeout_stall(g.r, name(g));
}

// The simulator's pattern (one connection, one 16-byte request per chunk)
// on the default scenario's link at 0.3 % loss.
TEST(TcpLoss, ChunkedTransferCubicIsWithinOneAndAHalfOfNewReno) {
  for (uint32_t seed : {1u, 2u}) {
    std::map<std::string, TransferResult> r;
    for (const char* tcp : {"newreno", "cubic"}) {
      LinkSpec l;
      l.rate_mbps = 1000;
      l.rtt_ms = 20;
      l.loss_rate = 0.003;
      l.tcp = tcp;
      TransferSpec spec;
      spec.total_bytes = 20'000'000;
      spec.chunk_bytes = 5'000'000;
      spec.seed = seed;
      spec.stop_s = 600;
      r[tcp] = run_transfer(l, spec);
      ASSERT_TRUE(r[tcp].finished) << tcp << " seed " << seed;
      expect_no_timeout_stall(r[tcp], std::string(tcp) + " chunked, seed " + std::to_string(seed));
    }
    std::printf("20 MB in 5 MB chunks, 1 Gbit/s, 20 ms, 0.3 %%, seed %u: newreno %.2f s, cubic %.2f s\n", seed,
                r["newreno"].completion_s, r["cubic"].completion_s);
    EXPECT_LE(r["cubic"].completion_s, kFactor * r["newreno"].completion_s) << "seed " << seed;
  }
}

// What `ns3_stock` (ns-3.37's TcpCubic, ns-3's RTO rule and 200 ms ACK
// timer) does on the same kind of link: after a timeout the window stays at
// one segment, whose delayed ACK comes back after the next timeout, so the
// connection sends one segment per 220 ms. If this fails, ns-3 (or the
// stock settings) changed: update docs/simulator.md, "Loss".
TEST(TcpLoss, Ns3StockSendsOneSegmentPerTimeoutTheDefaultsDoNot) {
  LinkSpec l;
  l.rate_mbps = 1000;
  l.rtt_ms = 20;
  l.loss_rate = 0.01;
  l.tcp = "cubic";
  TransferSpec spec;
  spec.total_bytes = 5'000'000;
  spec.chunk_bytes = 1'000'000;
  spec.stop_s = 600;
  l.ns3_stock = true;
  const TransferResult stock = run_transfer(l, spec);
  EXPECT_EQ(stock.tcp_type, "ns3::TcpCubic");
  EXPECT_GT(stock.rto_wait_s, 0.5 * stock.completion_s) << stock.timeouts << " timeouts";
  l.ns3_stock = false;
  const TransferResult fixed = run_transfer(l, spec);
  ASSERT_TRUE(fixed.finished);
  expect_no_timeout_stall(fixed, "cubic, loss 0.01, 5 MB in 1 MB chunks");
  std::printf("5 MB in 1 MB chunks at 1 %%: ns3_stock %.1f s (%u timeouts, %.1f s waiting for them), default %.2f s\n",
              stock.completion_s, stock.timeouts, stock.rto_wait_s, fixed.completion_s);
  EXPECT_LT(fixed.completion_s * 10, stock.completion_s);
}

// ---- the congestion controller alone --------------------------------------------

struct Cc {
  ns3::Ptr<TcpCubicRfc9438> cc = ns3::CreateObject<TcpCubicRfc9438>();
  ns3::Ptr<ns3::TcpSocketState> tcb = ns3::CreateObject<ns3::TcpSocketState>();
  Cc(double cwnd_segments, double flight_segments) {
    tcb->m_segmentSize = uint32_t(kMss);
    tcb->m_cWnd = uint32_t(cwnd_segments * kMss);
    tcb->m_bytesInFlight = uint32_t(cwnd_segments * kMss);  // using its window (5.8)
    tcb->m_ssThresh = 0x7fffffff;
    tcb->m_lastAckedSeq = ns3::SequenceNumber32(1000);
    tcb->m_highTxMark = ns3::SequenceNumber32(1000 + uint32_t(flight_segments * kMss));
  }
  double cwnd() const { return tcb->m_cWnd.Get() / kMss; }
};

TEST(TcpCubicRfc9438, CurveAndReductionConstants) {
  EXPECT_NEAR(TcpCubicRfc9438::RenoFriendlyAlpha(0.7), 3 * 0.3 / 1.7, 1e-12);
  EXPECT_NEAR(TcpCubicRfc9438::RenoFriendlyAlpha(0.5), 1.0, 1e-12);  // Reno
  const double k = std::cbrt((100.0 - 70.0) / 0.4);
  EXPECT_NEAR(TcpCubicRfc9438::WCubic(0.4, k, k, 100), 100, 1e-9);    // W_max at t = K
  EXPECT_NEAR(TcpCubicRfc9438::WCubic(0.4, 0, k, 100), 70, 1e-9);     // cwnd_epoch at t = 0
}

TEST(TcpCubicRfc9438, SsthreshIsBetaTimesCwndAndAnAppLimitedWindowDoesNotGrow) {
  Cc a(100, 100);
  EXPECT_EQ(a.cc->GetSsThresh(a.tcb, 0), uint32_t(70 * kMss));
  // 5.8: an ACK that finds the sender using 40 of its 100 segments does not
  // grow the window, in slow start or congestion avoidance.
  Cc b(100, 40);
  b.tcb->m_bytesInFlight = uint32_t(38 * kMss);  // after this ACK of 2 segments
  b.cc->IncreaseWindow(b.tcb, 2);
  EXPECT_EQ(b.tcb->m_cWnd.Get(), uint32_t(100 * kMss));
  b.tcb->m_bytesInFlight = uint32_t(97 * kMss);  // the window in use: it grows
  b.cc->IncreaseWindow(b.tcb, 2);
  EXPECT_EQ(b.tcb->m_cWnd.Get(), uint32_t(102 * kMss));
  Cc c(2, 2);
  EXPECT_EQ(c.cc->GetSsThresh(c.tcb, 0), uint32_t(2 * kMss));  // at least 2 segments
}

TEST(TcpCubicRfc9438, RenoFriendlyRegionAddsAlphaPerWindowEvenWithDelayedAcks) {
  // Right after a loss at W = 100 (ssthresh 70), at t = 0 the cubic curve is
  // at cwnd_epoch: only the Reno-friendly estimate grows, by alpha per window
  // of acknowledged segments, whether ACKs cover 1 or 2 segments.
  for (uint32_t per_ack : {1u, 2u}) {
    Cc a(100, 100);
    a.tcb->m_ssThresh = a.cc->GetSsThresh(a.tcb, 0);
    a.tcb->m_cWnd = a.tcb->m_ssThresh.Get();
    for (uint32_t acked = 0; acked < 70; acked += per_ack) a.cc->IncreaseWindow(a.tcb, per_ack);
    EXPECT_NEAR(a.cwnd(), 70 + TcpCubicRfc9438::RenoFriendlyAlpha(0.7), 0.02) << per_ack << " segments per ACK";
  }
  // Without the Reno-friendly region (ns-3.37's TcpCubic) it does not grow at t = 0.
  Cc b(100, 100);
  b.cc->SetAttribute("RenoFriendly", ns3::BooleanValue(false));
  b.tcb->m_ssThresh = b.cc->GetSsThresh(b.tcb, 0);
  b.tcb->m_cWnd = b.tcb->m_ssThresh.Get();
  for (int i = 0; i < 35; ++i) b.cc->IncreaseWindow(b.tcb, 2);
  EXPECT_NEAR(b.cwnd(), 70, 0.01);
}

TEST(TcpCubicRfc9438, SlowStartCountsBytesLikeNs3sCubic) {
  Cc a(10, 10);
  a.cc->IncreaseWindow(a.tcb, 2);
  EXPECT_EQ(a.tcb->m_cWnd.Get(), uint32_t(12 * kMss));
  // HyStart++ caps one ACK at L = 8 segments in the first slow start.
  a.cc->IncreaseWindow(a.tcb, 20);
  EXPECT_EQ(a.tcb->m_cWnd.Get(), uint32_t(20 * kMss));
}

}  // namespace
}  // namespace kvs::sim
