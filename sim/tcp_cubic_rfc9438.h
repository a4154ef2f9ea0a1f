// CUBIC as RFC 9438 specifies it, with HyStart++ (RFC 9406) for the first
// slow start: the project's own ns3::TcpCongestionOps (C++17; internal to
// sim/). It is the simulator's `cubic`; ns-3.37's TcpCubic stays available as
// `cubic-ns3` (docs/simulator.md, "Loss").
//
// Why: ns-3.37's TcpCubic has no Reno-friendly region (RFC 9438, 4.3), so on
// short paths with random loss its window settles at a few segments (about
// 3.4 at 20 ms and 0.3 % loss, where Reno holds about 16): 2-3x slower than
// ns-3's own NewReno, and with so few segments in flight most losses end in
// a retransmission timeout. It also resets W_max to 0 on a timeout but keeps
// the old epoch (RFC 9438, 4.8 wants K = 0 and W_max = cwnd at the start of
// the next congestion-avoidance stage), and its HyStart runs the ACK-train
// test before starting a round (sim/tcp_cubic.h).
//
// What is implemented (section numbers of RFC 9438):
// - 4.2 W_cubic(t) = C (t - K)^3 + W_max, K = cbrt((W_max - cwnd_epoch) / C),
//   t from the start of the congestion-avoidance stage; target =
//   W_cubic(t + RTT) (RTT: smoothed, from the RTT samples ns-3 passes),
//   clamped to [cwnd, 1.5 cwnd].
// - 4.3 Reno-friendly region: W_est starts at cwnd_epoch and grows by
//   alpha * segments_acked / cwnd per ACK, alpha = 3 (1 - beta) / (1 + beta)
//   until W_est reaches cwnd_prior, then 1; cwnd = W_est while
//   W_cubic(t) < W_est.
// - 4.4 / 4.5 concave and convex regions: cwnd grows by
//   (target - cwnd) / cwnd per acknowledged segment (the RFC says per ACK;
//   ns-3 and Linux count segments, so delayed ACKs do not halve the growth).
// - 4.6 multiplicative decrease: ssthresh = max(beta * cwnd, 2) segments,
//   cwnd_prior = cwnd (cwnd, as 4.6 allows when cwnd does not grow while
//   application-limited: 5.8 below).
// - 4.7 fast convergence: W_max = W (1 + beta) / 2 when W < the previous
//   W_max, else W.
// - 4.8 timeout: ns-3 sets cwnd to 1 MSS and asks GetSsThresh (4.6); the
//   next congestion-avoidance stage starts with K = 0 and W_max = W_est =
//   cwnd at its start.
// - 4.10 / RFC 9406 HyStart++ in the first slow start only (later slow
//   starts end at ssthresh): per round the minimum of at least 8 RTT
//   samples; an increase of max(4 ms, min(last round's minimum / 8, 16 ms))
//   enters Conservative Slow Start (growth / 4), a return below the baseline
//   leaves it, 5 CSS rounds end slow start (W_max = cwnd, K = 0, as 4.10
//   says for an exit without loss). Per ACK at most L = 8 segments (not
//   paced). Slow start counts bytes as ns-3's TcpCubic does (no Linux
//   quick-ACK mode in ns-3), so a loss-free transfer's slow start is the
//   same packet for packet until the delay test fires.
// - 5.8 application-limited: cwnd does not grow on an ACK that arrives
//   while the sender was not using its window (in flight before the ACK +
//   one segment < cwnd), in slow start as in congestion avoidance (ns-3
//   itself does no congestion window validation; without this the ACKs of a
//   chunk's end grew an idle sender's window and the next chunk left as one
//   burst that overflowed the queue at its tail, a timeout); and when a
//   send starts with nothing in flight, the epoch moves forward by the idle
//   time (as Linux does), so an idle period is not time on the curve.
// Not implemented: 4.9 spurious-congestion undo (optional).
#pragma once

#include <limits>

#include "ns3/nstime.h"
#include "ns3/sequence-number.h"
#include "ns3/tcp-congestion-ops.h"

namespace kvs::sim {

class TcpCubicRfc9438 : public ns3::TcpCongestionOps {
 public:
  static ns3::TypeId GetTypeId();
  TcpCubicRfc9438() = default;
  TcpCubicRfc9438(const TcpCubicRfc9438& other) = default;

  std::string GetName() const override { return "TcpCubicRfc9438"; }
  uint32_t GetSsThresh(ns3::Ptr<const ns3::TcpSocketState> tcb, uint32_t bytes_in_flight) override;
  void IncreaseWindow(ns3::Ptr<ns3::TcpSocketState> tcb, uint32_t segments_acked) override;
  void PktsAcked(ns3::Ptr<ns3::TcpSocketState> tcb, uint32_t segments_acked, const ns3::Time& rtt) override;
  void CongestionStateSet(ns3::Ptr<ns3::TcpSocketState> tcb,
                          const ns3::TcpSocketState::TcpCongState_t state) override;
  void CwndEvent(ns3::Ptr<ns3::TcpSocketState> tcb, const ns3::TcpSocketState::TcpCAEvent_t event) override;
  ns3::Ptr<ns3::TcpCongestionOps> Fork() override;

  // W_cubic(t) of 4.2 in segments (for tests): C (t - K)^3 + W_max.
  static double WCubic(double c, double t_s, double k_s, double w_max) {
    const double d = t_s - k_s;
    return c * d * d * d + w_max;
  }
  // The Reno-friendly additive increase of 4.3 per RTT while W_est < cwnd_prior.
  static double RenoFriendlyAlpha(double beta) { return 3.0 * (1.0 - beta) / (1.0 + beta); }

 private:
  static constexpr double kNone = -1.0;
  void CongestionAvoidance(ns3::TcpSocketState& tcb, uint32_t segments_acked);
  void SlowStart(ns3::TcpSocketState& tcb, uint32_t segments_acked);
  void NewRoundIfDue(const ns3::TcpSocketState& tcb);
  void AddBytes(ns3::TcpSocketState& tcb, double bytes);

  // Attributes.
  double c_ = 0.4;
  double beta_ = 0.7;
  bool fast_convergence_ = true;
  bool reno_friendly_ = true;
  bool hystart_ = true;
  bool validate_cwnd_ = true;

  // Congestion avoidance (4.2-4.8), windows in segments.
  double w_max_ = kNone;        // kNone: no congestion event yet (or after a timeout: 4.8)
  double cwnd_prior_ = kNone;
  double w_est_ = 0;
  double k_s_ = 0;
  double cwnd_epoch_ = 0;
  bool in_epoch_ = false;
  ns3::Time epoch_start_;
  double srtt_s_ = 0;           // smoothed RTT (1/8 gain), 0: no sample yet
  double byte_credit_ = 0;      // fractional bytes of cwnd growth not yet applied
  ns3::Time last_ack_;

  // HyStart++ (RFC 9406).
  bool initial_slow_start_ = true;   // until the first congestion event or the end of CSS
  bool css_ = false;
  uint32_t css_rounds_ = 0;
  ns3::SequenceNumber32 window_end_{0};
  bool round_started_ = false;
  double last_round_min_rtt_s_ = std::numeric_limits<double>::infinity();
  double current_round_min_rtt_s_ = std::numeric_limits<double>::infinity();
  double css_baseline_min_rtt_s_ = std::numeric_limits<double>::infinity();
  uint32_t rtt_samples_ = 0;
};

}  // namespace kvs::sim
