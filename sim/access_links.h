// The access links of the minimal topology, emulated without their events
// (C++17; internal to sim/; docs/simulator.md, "Events per segment").
//
// Without cross traffic the dumbbell's four access-link crossings per packet
// (server -> left router, right router -> GPU node, and back for ACKs) cost
// two ns-3 events each and decide nothing but timing. The minimal topology
// puts the server and the GPU node on the bottleneck's two ends and replays
// what those links would have done:
//
//  - AccessHopQueueDisc, the root queue disc of the bottleneck, is the
//    server's access link: a packet the server sends at t reaches the left
//    router, and the real bottleneck queue (its child: the FIFO, CoDel or
//    FqCoDel queue, or a trace gate), at
//        a = max(t, end of the previous packet's serialization)
//            + (IP bytes + 2) x 8 / access rate + access delay,
//    exactly when the dumbbell's access link would deliver it, so a window
//    enters the bottleneck queue at the access rate and slow start's
//    overflow drops the same packets. Packets are moved into the child when
//    something asks the queue disc for a packet (the device finishing one,
//    a gate's event) and, only when nothing will ask before the head
//    arrives (the child empty, the device taking packets, no gate event
//    pending), by a timer at the head's arrival: between two departures a
//    queue's state depends on nothing but arrivals, so a late move sees the
//    same queue (and CoDel's sojourn times use the true arrival time).
//    Cost: one event per packet that reaches an idle bottleneck.
//  - FoldedAccessChannel, the bottleneck's channel, adds the GPU node's
//    access link to every data packet (a packet that leaves the bottleneck
//    at r arrives at max(r, end of the previous one) + serialization +
//    delay) and both access links to every ACK or request (their
//    serialization and delay; the reverse bottleneck's queue is assumed not
//    to reorder them), computed, not scheduled.
//
// Exact up to ties: where an arrival and a departure fall on the same
// nanosecond, ns-3 orders the dumbbell's events by when they were scheduled,
// the emulation puts the arrival first.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>

#include "ns3/data-rate.h"
#include "ns3/event-id.h"
#include "ns3/nstime.h"
#include "ns3/point-to-point-channel.h"
#include "ns3/queue-disc.h"

namespace kvs::sim {

// The server's access link in front of the bottleneck queue: either a child
// queue disc (FIFO, CoDel, FqCoDel, a trace gate) or, for a constant rate
// with drop-tail, the device's own queue (SetDropTailDevice).
class AccessHopQueueDisc : public ns3::QueueDisc {
 public:
  static constexpr uint32_t kPppHeaderBytes = 2;

  static ns3::TypeId GetTypeId();
  AccessHopQueueDisc();

  // Call once, before the queue disc is initialized: the access link's rate,
  // one-way delay and queue (packets waiting for serialization; the
  // dumbbell's access device queue).
  void SetAccessLink(const ns3::DataRate& rate, ns3::Time delay, uint32_t queue_packets);

  // Instead of a child: the bottleneck is a device of this constant rate
  // whose drop-tail queue holds `queue_packets` (not counting the packet on
  // the wire). Its serialization is predictable, so the drop-tail decision
  // for each arrival is computed here and the packets the device is still
  // busy for at their arrival are handed to it at once: no event per packet,
  // and the device (its queue larger than `queue_packets`, no flow control)
  // starts each when the dumbbell's would.
  void SetDropTailDevice(const ns3::DataRate& rate, uint32_t queue_packets);

  // For a gate child: true when an event of the gate's will run the root
  // before the gate can take a packet from its queue.
  void SetChildWillAsk(std::function<bool()> will_ask);

 private:
  struct InTransit {
    ns3::Ptr<ns3::QueueDiscItem> item;
    ns3::Time arrival;  // at the router
  };

  bool DoEnqueue(ns3::Ptr<ns3::QueueDiscItem> item) override;
  ns3::Ptr<ns3::QueueDiscItem> DoDequeue() override;
  bool CheckConfig() override;
  void InitializeParams() override;
  void DoDispose() override;

  void move_arrived();    // hands what has reached the router (or, drop-tail device, can be decided) on
  void decide_droptail(InTransit p);
  void arm_timer();       // a timer at the head's arrival, when nothing else would move it
  void on_arrival();

  ns3::DataRate access_rate_;
  ns3::Time delay_;
  uint32_t access_queue_packets_ = 0;
  ns3::Time access_busy_until_;         // end of the last serialization on the access link
  std::deque<ns3::Time> access_starts_;  // serialization starts still ahead (the access queue)
  std::deque<InTransit> hop_;
  ns3::EventId timer_;
  std::function<bool()> child_will_ask_;

  // Drop-tail device mode.
  bool droptail_device_ = false;
  ns3::DataRate device_rate_;
  uint32_t device_queue_packets_ = 0;
  ns3::Time device_free_at_;            // when the device finishes the last packet handed to it
  std::deque<ns3::Time> device_starts_;  // transmission starts of accepted packets, pruned as they pass
};

// The bottleneck's channel with the GPU node's access link after it (data)
// and both access links around it (the reverse direction). Device 0 must be
// the server's (the bottleneck's sending end).
class FoldedAccessChannel : public ns3::PointToPointChannel {
 public:
  static ns3::TypeId GetTypeId();

  // The access links' rate and one-way delay (each); the channel's own Delay
  // attribute is the bottleneck's.
  void SetAccessLinks(const ns3::DataRate& rate, ns3::Time delay);

  bool TransmitStart(ns3::Ptr<const ns3::Packet> p, ns3::Ptr<ns3::PointToPointNetDevice> src,
                     ns3::Time tx_time) override;

 private:
  ns3::Time serialization(uint32_t bytes) const;

  ns3::DataRate rate_;
  ns3::Time access_delay_;
  ns3::Time forward_busy_until_, reverse_busy_until_;  // the GPU node's and the server's access links
};

}  // namespace kvs::sim
