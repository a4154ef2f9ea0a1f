#include "sim/tcp_cubic.h"

#include "ns3/boolean.h"

namespace kvs::sim {

NS_OBJECT_ENSURE_REGISTERED(TcpCubicHystartFix);

ns3::TypeId TcpCubicHystartFix::GetTypeId() {
  static ns3::TypeId tid = ns3::TypeId("kvs::TcpCubicHystartFix")
                               .SetParent<ns3::TcpCubic>()
                               .SetGroupName("Internet")
                               .AddConstructor<TcpCubicHystartFix>();
  return tid;
}

bool TcpCubicHystartFix::NewRound(const ns3::TcpSocketState& tcb) const {
  if (hystart_ < 0) {  // attributes are set after construction: read once, on first use
    ns3::BooleanValue on;
    GetAttribute("HyStart", on);
    hystart_ = on.Get() ? 1 : 0;
  }
  return hystart_ == 1 && tcb.m_cWnd < tcb.m_ssThresh && tcb.m_lastAckedSeq > end_seq_;
}

void TcpCubicHystartFix::PktsAcked(ns3::Ptr<ns3::TcpSocketState> tcb, uint32_t segments_acked,
                                   const ns3::Time& rtt) {
  // The first ACK of a round: TcpCubic would time it against the previous
  // round's start (the round is reset only in IncreaseWindow, after this).
  if (NewRound(*tcb)) return;
  TcpCubic::PktsAcked(tcb, segments_acked, rtt);
}

void TcpCubicHystartFix::IncreaseWindow(ns3::Ptr<ns3::TcpSocketState> tcb, uint32_t segments_acked) {
  if (NewRound(*tcb)) end_seq_ = tcb->m_highTxMark;  // as TcpCubic::HystartReset does next
  TcpCubic::IncreaseWindow(tcb, segments_acked);
}

void TcpCubicHystartFix::CongestionStateSet(ns3::Ptr<ns3::TcpSocketState> tcb,
                                            const ns3::TcpSocketState::TcpCongState_t state) {
  if (state == ns3::TcpSocketState::CA_LOSS) end_seq_ = tcb->m_highTxMark;  // TcpCubic resets HyStart
  TcpCubic::CongestionStateSet(tcb, state);
}

ns3::Ptr<ns3::TcpCongestionOps> TcpCubicHystartFix::Fork() { return ns3::CopyObject<TcpCubicHystartFix>(this); }

}  // namespace kvs::sim
