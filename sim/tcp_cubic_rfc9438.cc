#include "sim/tcp_cubic_rfc9438.h"

#include <algorithm>
#include <cmath>

#include "ns3/boolean.h"
#include "ns3/double.h"
#include "ns3/simulator.h"

namespace kvs::sim {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
// RFC 9406's constants.
constexpr double kMinRttThreshS = 0.004, kMaxRttThreshS = 0.016, kMinRttDivisor = 8;
constexpr uint32_t kNRttSample = 8, kCssGrowthDivisor = 4, kCssRounds = 5, kMaxSegmentsPerAck = 8;
// cwnd is a uint32_t of bytes; stay well inside it.
constexpr double kMaxCwndBytes = 2e9;
}  // namespace

NS_OBJECT_ENSURE_REGISTERED(TcpCubicRfc9438);

ns3::TypeId TcpCubicRfc9438::GetTypeId() {
  using namespace ns3;
  static TypeId tid =
      TypeId("kvs::TcpCubicRfc9438")
          .SetParent<TcpCongestionOps>()
          .SetGroupName("Internet")
          .AddConstructor<TcpCubicRfc9438>()
          .AddAttribute("C", "CUBIC's scaling constant (segments / s^3)", DoubleValue(0.4),
                        MakeDoubleAccessor(&TcpCubicRfc9438::c_), MakeDoubleChecker<double>(0.0))
          .AddAttribute("Beta", "Multiplicative decrease factor", DoubleValue(0.7),
                        MakeDoubleAccessor(&TcpCubicRfc9438::beta_), MakeDoubleChecker<double>(0.0, 1.0))
          .AddAttribute("FastConvergence", "RFC 9438 4.7", BooleanValue(true),
                        MakeBooleanAccessor(&TcpCubicRfc9438::fast_convergence_), MakeBooleanChecker())
          .AddAttribute("RenoFriendly", "RFC 9438 4.3 (the Reno-friendly region)", BooleanValue(true),
                        MakeBooleanAccessor(&TcpCubicRfc9438::reno_friendly_), MakeBooleanChecker())
          .AddAttribute("HyStart", "HyStart++ (RFC 9406) in the first slow start", BooleanValue(true),
                        MakeBooleanAccessor(&TcpCubicRfc9438::hystart_), MakeBooleanChecker())
          .AddAttribute("AppLimited", "RFC 9438 5.8: no cwnd growth while application-limited", BooleanValue(true),
                        MakeBooleanAccessor(&TcpCubicRfc9438::validate_cwnd_), MakeBooleanChecker());
  return tid;
}

void TcpCubicRfc9438::AddBytes(ns3::TcpSocketState& tcb, double bytes) {
  if (!(bytes > 0)) return;
  byte_credit_ += bytes;
  const double whole = std::floor(byte_credit_);
  byte_credit_ -= whole;
  tcb.m_cWnd = uint32_t(std::min(double(tcb.m_cWnd.Get()) + whole, kMaxCwndBytes));
}

// RFC 9406: a round ends when the data sent at its start is acknowledged.
void TcpCubicRfc9438::NewRoundIfDue(const ns3::TcpSocketState& tcb) {
  if (round_started_ && tcb.m_lastAckedSeq < window_end_) return;
  round_started_ = true;
  window_end_ = tcb.m_highTxMark;
  last_round_min_rtt_s_ = current_round_min_rtt_s_;
  current_round_min_rtt_s_ = kInf;
  rtt_samples_ = 0;
  if (css_) ++css_rounds_;
}

void TcpCubicRfc9438::PktsAcked(ns3::Ptr<ns3::TcpSocketState> tcb, uint32_t segments_acked, const ns3::Time& rtt) {
  last_ack_ = ns3::Simulator::Now();
  // Dupacks arrive with the previous sample (ns-3 passes m_lastRtt): only
  // ACKs of new data in the open state carry a fresh one.
  if (segments_acked == 0 || !rtt.IsStrictlyPositive() || tcb->m_congState != ns3::TcpSocketState::CA_OPEN) return;
  const double r = rtt.GetSeconds();
  srtt_s_ = srtt_s_ > 0 ? 0.875 * srtt_s_ + 0.125 * r : r;
  if (!(hystart_ && initial_slow_start_) || tcb->m_cWnd >= tcb->m_ssThresh) return;
  NewRoundIfDue(*tcb);
  current_round_min_rtt_s_ = std::min(current_round_min_rtt_s_, r);
  ++rtt_samples_;
  if (rtt_samples_ < kNRttSample) return;
  if (!css_) {
    if (std::isinf(current_round_min_rtt_s_) || std::isinf(last_round_min_rtt_s_)) return;
    const double thresh =
        std::max(kMinRttThreshS, std::min(last_round_min_rtt_s_ / kMinRttDivisor, kMaxRttThreshS));
    if (current_round_min_rtt_s_ >= last_round_min_rtt_s_ + thresh) {
      css_ = true;  // Conservative Slow Start
      css_rounds_ = 0;
      css_baseline_min_rtt_s_ = current_round_min_rtt_s_;
    }
  } else if (current_round_min_rtt_s_ < css_baseline_min_rtt_s_) {
    css_ = false;  // the delay increase was spurious: back to slow start
    css_baseline_min_rtt_s_ = kInf;
  }
}

void TcpCubicRfc9438::SlowStart(ns3::TcpSocketState& tcb, uint32_t segments_acked) {
  if (!(hystart_ && initial_slow_start_)) {
    tcb.m_cWnd = uint32_t(std::min(double(tcb.m_cWnd.Get()) + double(segments_acked) * tcb.m_segmentSize, kMaxCwndBytes));
    return;
  }
  NewRoundIfDue(tcb);
  if (css_ && css_rounds_ >= kCssRounds) {
    // RFC 9406: after CSS_ROUNDS rounds in CSS, congestion avoidance; RFC
    // 9438 4.10: with no congestion event yet, W_max = cwnd and K = 0.
    css_ = false;
    initial_slow_start_ = false;
    tcb.m_ssThresh = tcb.m_cWnd.Get();
    w_max_ = kNone;
    in_epoch_ = false;
    return;
  }
  const double bytes = double(std::min(segments_acked, kMaxSegmentsPerAck)) * tcb.m_segmentSize;
  AddBytes(tcb, css_ ? bytes / kCssGrowthDivisor : bytes);
}

void TcpCubicRfc9438::CongestionAvoidance(ns3::TcpSocketState& tcb, uint32_t segments_acked) {
  const double seg = tcb.m_segmentSize;
  const double cwnd = double(tcb.m_cWnd.Get()) / seg;
  const ns3::Time now = ns3::Simulator::Now();
  if (!in_epoch_) {
    in_epoch_ = true;
    epoch_start_ = now;
    cwnd_epoch_ = cwnd;
    // 4.8 / 4.10: after a timeout or a slow start that ended without loss,
    // K = 0 and W_max = the window at the start of this stage.
    if (w_max_ == kNone) w_max_ = cwnd;
    k_s_ = std::cbrt((w_max_ - cwnd_epoch_) / c_);
    w_est_ = cwnd_epoch_;
    if (cwnd_prior_ == kNone) cwnd_prior_ = cwnd;
  }
  const double t = (now - epoch_start_).GetSeconds();
  const double rtt = srtt_s_ > 0 ? srtt_s_ : tcb.m_lastRtt.Get().GetSeconds();
  const double target = std::clamp(WCubic(c_, t + rtt, k_s_, w_max_), cwnd, 1.5 * cwnd);
  double next = cwnd + (target - cwnd) / cwnd * double(segments_acked);
  if (reno_friendly_) {
    const double alpha = w_est_ >= cwnd_prior_ ? 1.0 : RenoFriendlyAlpha(beta_);
    w_est_ += alpha * double(segments_acked) / cwnd;
    if (WCubic(c_, t, k_s_, w_max_) < w_est_) next = std::max(cwnd, w_est_);
  }
  AddBytes(tcb, (next - cwnd) * seg);
}

void TcpCubicRfc9438::IncreaseWindow(ns3::Ptr<ns3::TcpSocketState> tcb, uint32_t segments_acked) {
  if (segments_acked == 0) return;
  // 5.8: no growth while the sender is application-limited, i.e. was not
  // using its window when this ACK arrived (what was in flight then: what
  // is in flight now, which ns-3 updates before calling this, plus what
  // this ACK acknowledged; one segment of slack for the sender's
  // silly-window rule). Without it, ACKs of the end of a chunk grow the
  // window of an idle sender, and the next chunk leaves as one burst.
  const uint64_t prior_in_flight =
      uint64_t(tcb->m_bytesInFlight.Get()) + uint64_t(segments_acked) * tcb->m_segmentSize;
  if (validate_cwnd_ && prior_in_flight + tcb->m_segmentSize < tcb->m_cWnd.Get()) return;
  if (tcb->m_cWnd < tcb->m_ssThresh) {
    // Bytes beyond ssthresh are not carried into congestion avoidance
    // (as ns-3's TcpCubic): the next ACK is counted there.
    SlowStart(*tcb, segments_acked);
    return;
  }
  CongestionAvoidance(*tcb, segments_acked);
}

uint32_t TcpCubicRfc9438::GetSsThresh(ns3::Ptr<const ns3::TcpSocketState> tcb, uint32_t) {
  // 4.6 allows cwnd in place of flight_size when cwnd does not grow while
  // the sender is application-limited (5.8, IncreaseWindow). FlightSize
  // would collapse ssthresh to 2 segments after the tail loss of a chunk
  // (one short segment outstanding), and ns-3 passes RFC 6675's pipe, which
  // also leaves out what is SACKed or marked lost.
  const double seg = tcb->m_segmentSize;
  const double w = std::max(1.0, double(tcb->m_cWnd.Get()) / seg);
  if (fast_convergence_ && w_max_ != kNone && w < w_max_)
    w_max_ = w * (1.0 + beta_) / 2.0;
  else
    w_max_ = w;
  cwnd_prior_ = w;
  in_epoch_ = false;
  byte_credit_ = 0;
  initial_slow_start_ = false;
  css_ = false;
  return uint32_t(std::max(beta_ * w, 2.0) * seg);
}

void TcpCubicRfc9438::CongestionStateSet(ns3::Ptr<ns3::TcpSocketState>,
                                         const ns3::TcpSocketState::TcpCongState_t state) {
  if (state == ns3::TcpSocketState::CA_LOSS) {
    // 4.8: the first congestion-avoidance stage after a timeout starts with
    // K = 0, W_max = W_est = cwnd at its start.
    w_max_ = kNone;
    in_epoch_ = false;
    byte_credit_ = 0;
    initial_slow_start_ = false;
    css_ = false;
  }
}

void TcpCubicRfc9438::CwndEvent(ns3::Ptr<ns3::TcpSocketState>, const ns3::TcpSocketState::TcpCAEvent_t event) {
  // 5.8: a send with nothing in flight ends an idle period; the idle time is
  // not time on the cubic curve.
  if (event != ns3::TcpSocketState::CA_EVENT_TX_START || !in_epoch_) return;
  const ns3::Time now = ns3::Simulator::Now();
  if (last_ack_ > epoch_start_ && now > last_ack_) epoch_start_ = std::min(now, epoch_start_ + (now - last_ack_));
}

ns3::Ptr<ns3::TcpCongestionOps> TcpCubicRfc9438::Fork() { return ns3::CopyObject<TcpCubicRfc9438>(this); }

}  // namespace kvs::sim
