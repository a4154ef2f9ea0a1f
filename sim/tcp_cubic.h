// ns-3.37's TcpCubic with one HyStart defect fixed (C++17; internal to sim/).
//
// TcpCubic runs HyStart's ACK-train test (PktsAcked) before it starts a new
// round (in IncreaseWindow), so the first ACK of a round is measured against
// the previous round's start. When the gap between two rounds' ACK trains is
// at most HyStartAckDelta (2 ms) -- always when the RTT is about 2 ms or less,
// and near the end of slow start at any RTT -- that ACK "extends" the old
// train past delayMin, and slow start ends at whatever window it has reached
// (20 segments at a 2 ms RTT, whatever the bandwidth-delay product; the
// window then grows by about 5% per RTT). Linux starts the round first
// (hystart_update calls bictcp_hystart_reset). This class keeps everything
// else of TcpCubic and does not feed the first ACK of a slow-start round to
// HyStart (it loses one delay sample per round), so that every round's train
// is timed from its own start.
#pragma once

#include "ns3/sequence-number.h"
#include "ns3/tcp-cubic.h"

namespace kvs::sim {

class TcpCubicHystartFix : public ns3::TcpCubic {
 public:
  static ns3::TypeId GetTypeId();
  TcpCubicHystartFix() = default;
  TcpCubicHystartFix(const TcpCubicHystartFix& other) = default;

  std::string GetName() const override { return "TcpCubicHystartFix"; }
  void PktsAcked(ns3::Ptr<ns3::TcpSocketState> tcb, uint32_t segments_acked, const ns3::Time& rtt) override;
  void IncreaseWindow(ns3::Ptr<ns3::TcpSocketState> tcb, uint32_t segments_acked) override;
  void CongestionStateSet(ns3::Ptr<ns3::TcpSocketState> tcb,
                          const ns3::TcpSocketState::TcpCongState_t state) override;
  ns3::Ptr<ns3::TcpCongestionOps> Fork() override;

 private:
  bool NewRound(const ns3::TcpSocketState& tcb) const;
  // Mirrors TcpCubic's private m_endSeq: the round ends when this is acked.
  ns3::SequenceNumber32 end_seq_{0};
  mutable int hystart_ = -1;  // TcpCubic's HyStart attribute; -1: not read yet
};

}  // namespace kvs::sim
