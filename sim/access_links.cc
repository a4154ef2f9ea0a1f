#include "sim/access_links.h"

#include <algorithm>
#include <utility>

#include "ns3/data-rate.h"
#include "ns3/drop-tail-queue.h"
#include "ns3/net-device-queue-interface.h"
#include "ns3/node.h"
#include "ns3/point-to-point-net-device.h"
#include "ns3/simulator.h"

namespace kvs::sim {

// ---- the server's access link -------------------------------------------------------

NS_OBJECT_ENSURE_REGISTERED(AccessHopQueueDisc);

ns3::TypeId AccessHopQueueDisc::GetTypeId() {
  static ns3::TypeId tid = ns3::TypeId("kvs::sim::AccessHopQueueDisc")
                               .SetParent<ns3::QueueDisc>()
                               .SetGroupName("kvstream")
                               .AddConstructor<AccessHopQueueDisc>();
  return tid;
}

AccessHopQueueDisc::AccessHopQueueDisc() : ns3::QueueDisc(ns3::QueueDiscSizePolicy::NO_LIMITS) {}

void AccessHopQueueDisc::SetAccessLink(const ns3::DataRate& rate, ns3::Time delay, uint32_t queue_packets) {
  access_rate_ = rate;
  delay_ = delay;
  access_queue_packets_ = queue_packets;
}

void AccessHopQueueDisc::SetDropTailDevice(const ns3::DataRate& rate, uint32_t queue_packets) {
  droptail_device_ = true;
  device_rate_ = rate;
  device_queue_packets_ = queue_packets;
  // Packets decided and waiting to be handed to the device: within one run.
  AddInternalQueue(ns3::CreateObjectWithAttributes<ns3::DropTailQueue<ns3::QueueDiscItem>>(
      "MaxSize", ns3::QueueSizeValue(ns3::QueueSize(ns3::QueueSizeUnit::PACKETS, 1u << 30))));
  SetQuota(1u << 30);  // hand them all at once
}

void AccessHopQueueDisc::SetChildWillAsk(std::function<bool()> will_ask) { child_will_ask_ = std::move(will_ask); }

bool AccessHopQueueDisc::CheckConfig() {
  if (access_rate_.GetBitRate() == 0 || access_queue_packets_ == 0 || GetNPacketFilters() != 0) return false;
  if (droptail_device_) return device_rate_.GetBitRate() > 0 && GetNQueueDiscClasses() == 0 && GetNInternalQueues() == 1;
  return GetNQueueDiscClasses() == 1 && GetNInternalQueues() == 0;
}

void AccessHopQueueDisc::InitializeParams() {}

void AccessHopQueueDisc::DoDispose() {
  ns3::Simulator::Cancel(timer_);
  hop_.clear();
  ns3::QueueDisc::DoDispose();
}

bool AccessHopQueueDisc::DoEnqueue(ns3::Ptr<ns3::QueueDiscItem> item) {
  const ns3::Time now = ns3::Simulator::Now();
  move_arrived();
  // The access device's queue holds the packets whose serialization has not
  // started.
  while (!access_starts_.empty() && access_starts_.front() <= now) access_starts_.pop_front();
  if (access_starts_.size() >= access_queue_packets_) {
    DropBeforeEnqueue(item, "access link queue full");
    return false;
  }
  // The same arithmetic as ns-3's point-to-point device: the IP packet and
  // its 2-byte header, rounded to whole nanoseconds by DataRate.
  const ns3::Time start = std::max(now, access_busy_until_);
  access_busy_until_ = start + access_rate_.CalculateBytesTxTime(item->GetSize() + kPppHeaderBytes);
  if (start > now) access_starts_.push_back(start);
  hop_.push_back({item, access_busy_until_ + delay_});
  move_arrived();  // a drop-tail device still busy at its arrival takes it now
  arm_timer();
  // Counted as enqueued when it reaches the bottleneck queue (the child's
  // enqueue trace, or the internal queue's), not while on the access link.
  return true;
}

void AccessHopQueueDisc::decide_droptail(InTransit p) {
  // Drop-tail at the router: full when `device_queue_packets_` accepted
  // packets have arrived and not started by this arrival (a start at the
  // same instant counts as started).
  while (!device_starts_.empty() && device_starts_.front() <= ns3::Simulator::Now()) device_starts_.pop_front();
  const auto not_started = device_starts_.end() -
                           std::upper_bound(device_starts_.begin(), device_starts_.end(), p.arrival);
  if (size_t(not_started) >= device_queue_packets_) {
    DropBeforeEnqueue(p.item, "bottleneck queue full");
    return;
  }
  const ns3::Time start = std::max(p.arrival, device_free_at_);
  // The device serializes the IP packet and its 2-byte header.
  const uint32_t wire_bytes = p.item->GetSize() + kPppHeaderBytes;
  device_free_at_ = start + device_rate_.CalculateBytesTxTime(wire_bytes);
  device_starts_.push_back(start);
  GetInternalQueue(0)->Enqueue(p.item);
}

void AccessHopQueueDisc::move_arrived() {
  const ns3::Time now = ns3::Simulator::Now();
  if (droptail_device_) {
    // A packet that arrives while the device is still busy waits behind what
    // it was handed anyway: it can be decided and handed now.
    while (!hop_.empty() && (hop_.front().arrival <= now || hop_.front().arrival <= device_free_at_)) {
      InTransit p = std::move(hop_.front());
      hop_.pop_front();
      decide_droptail(std::move(p));
    }
    return;
  }
  ns3::Ptr<ns3::QueueDisc> child = GetQueueDiscClass(0)->GetQueueDisc();
  while (!hop_.empty() && hop_.front().arrival <= now) {
    InTransit p = std::move(hop_.front());
    hop_.pop_front();
    // A drop by the child reaches this queue disc's drop trace through the
    // callbacks AddQueueDiscClass connected.
    if (child->Enqueue(p.item)) p.item->SetTimeStamp(p.arrival);  // CoDel's sojourn from the true arrival
  }
}

void AccessHopQueueDisc::arm_timer() {
  if (hop_.empty()) return;
  if (!droptail_device_) {
    // Someone asks for the next packet before the queue can change
    // otherwise, and DoDequeue moves what arrived by then: the device when
    // it frees, if it stopped taking packets (packets wait in the child, or
    // in its own queue), or a gate's pending event.
    ns3::Ptr<ns3::QueueDisc> child = GetQueueDiscClass(0)->GetQueueDisc();
    if (child->GetNPackets() > 0) return;
    if (ns3::Ptr<ns3::NetDeviceQueueInterface> device = GetNetDeviceQueueInterface();
        device && device->GetTxQueue(0)->IsStopped())
      return;
    if (child_will_ask_ && child_will_ask_()) return;
  }
  const ns3::Time at = hop_.front().arrival;
  if (timer_.IsRunning()) {
    if (ns3::TimeStep(timer_.GetTs()) <= at) return;
    timer_.Cancel();
  }
  timer_ = ns3::Simulator::Schedule(at - ns3::Simulator::Now(), &AccessHopQueueDisc::on_arrival, this);
}

void AccessHopQueueDisc::on_arrival() {
  move_arrived();
  Run();  // an idle device takes the packet now
  arm_timer();
}

ns3::Ptr<ns3::QueueDiscItem> AccessHopQueueDisc::DoDequeue() {
  move_arrived();
  ns3::Ptr<ns3::QueueDiscItem> item =
      droptail_device_ ? GetInternalQueue(0)->Dequeue() : GetQueueDiscClass(0)->GetQueueDisc()->Dequeue();
  arm_timer();
  return item;
}

// ---- the GPU node's access link, and both for the reverse direction -----------------

NS_OBJECT_ENSURE_REGISTERED(FoldedAccessChannel);

ns3::TypeId FoldedAccessChannel::GetTypeId() {
  static ns3::TypeId tid = ns3::TypeId("kvs::sim::FoldedAccessChannel")
                               .SetParent<ns3::PointToPointChannel>()
                               .SetGroupName("kvstream")
                               .AddConstructor<FoldedAccessChannel>();
  return tid;
}

void FoldedAccessChannel::SetAccessLinks(const ns3::DataRate& rate, ns3::Time delay) {
  rate_ = rate;
  access_delay_ = delay;
}

ns3::Time FoldedAccessChannel::serialization(uint32_t bytes) const {
  return rate_.CalculateBytesTxTime(bytes);
}

bool FoldedAccessChannel::TransmitStart(ns3::Ptr<const ns3::Packet> p, ns3::Ptr<ns3::PointToPointNetDevice> src,
                                        ns3::Time tx_time) {
  const bool forward = src == GetPointToPointDevice(0);
  ns3::Ptr<ns3::PointToPointNetDevice> dst = GetPointToPointDevice(forward ? 1 : 0);
  const ns3::Time now = ns3::Simulator::Now();
  // The packet carries its point-to-point header already, as on every hop.
  const ns3::Time hop = serialization(p->GetSize());
  ns3::Time rx;
  if (forward) {
    const ns3::Time at_router = now + tx_time + GetDelay();
    forward_busy_until_ = std::max(at_router, forward_busy_until_) + hop;
    rx = forward_busy_until_ + access_delay_;
  } else {
    // The GPU node's access link first: its serialization and delay shift the
    // whole crossing (ACKs are far apart on a link this fast).
    const ns3::Time at_router = now + hop + access_delay_ + tx_time + GetDelay();
    reverse_busy_until_ = std::max(at_router, reverse_busy_until_) + hop;
    rx = reverse_busy_until_ + access_delay_;
  }
  ns3::Simulator::ScheduleWithContext(dst->GetNode()->GetId(), rx - now, &ns3::PointToPointNetDevice::Receive, dst,
                                      p->Copy());
  return true;
}

}  // namespace kvs::sim
