// Exact mahimahi replay in ns-3 (C++17; internal to sim/): a root queue disc
// that lets packets leave only at a trace's delivery opportunities, in front of
// a bottleneck device so fast that its serialization time is negligible.
//
// Semantics, as mahimahi's LinkQueue::rationalize (mm-link) implements them:
//  - Each opportunity carries `packet_bytes + 4` bytes (1504: mahimahi's TUN
//    payload, a 4-byte packet-information header plus a 1500-byte IP packet);
//    a packet costs its IP size + 4 bytes. A full 1500-byte IP packet thus
//    uses exactly one opportunity.
//  - Bytes, not packets, are the unit: a smaller packet leaves the rest of the
//    opportunity to the packets behind it (several can leave at one
//    opportunity), and a packet whose cost exceeds what is left is taken off
//    the queue, gets what is left, and continues at the next opportunities
//    (mahimahi's packet in transit); it leaves at the opportunity that
//    completes it. A packet larger than one opportunity (MTU > 1500) spans
//    several (mahimahi rejects such packets; this is the same rule extended).
//  - What is left of an opportunity when no packet is queued is wasted; a
//    packet that arrives later waits for the next opportunity.
//  - The schedule repeats with the trace's period P (the last timestamp): the
//    opportunity at timestamp t of cycle k is at k*P + t ms, so a timestamp P
//    and a timestamp 0 of the next cycle fall at the same instant. A trace
//    that does not loop ends after its last timestamp (mahimahi's --once).
//  - Continuous time: a packet that reaches the queue at time t can use
//    opportunities at times >= t that have not been used yet (mahimahi, with
//    a millisecond clock, serves opportunities at or before the current
//    millisecond before it enqueues an arriving packet; the difference is
//    below a millisecond).
// The child queue disc (FIFO, CoDel, FqCoDel) holds the queue and decides
// drops; it is dequeued at the opportunity that starts a packet, as mahimahi
// dequeues its packet queue there.
//
// Cost: one simulator event per instant that has opportunities, and only
// while packets are queued or in transit; idle opportunities are skipped
// arithmetically (the schedule is periodic), never scheduled.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "ns3/event-id.h"
#include "ns3/nstime.h"
#include "ns3/queue-disc.h"

#include "traces/trace.h"

namespace kvs::sim {

// Delivery opportunities as absolute instants. Slot s (s = cycle * n + j,
// n = slots per cycle) is at cycle * P + offset_ms[j] and carries count(s)
// opportunities; offsets are the distinct timestamps modulo P, sorted.
class OpportunitySchedule {
 public:
  OpportunitySchedule(const traces::DeliveryOpportunities& opportunities, bool loops);

  int64_t time_ns(uint64_t slot) const;
  uint32_t count(uint64_t slot) const;  // 0 where the trace has none (the first instant, or after a trace's end)
  // The first slot at or after both `time_ns` and slot `from` that has
  // opportunities; empty when a trace that does not loop has ended.
  std::optional<uint64_t> first_at_or_after(int64_t time_ns, uint64_t from) const;
  uint64_t period_ms() const { return period_ms_; }
  uint32_t max_count() const;  // most opportunities at one instant

 private:
  bool ended(uint64_t slot) const { return !loops_ && slot > offsets_ms_.size(); }
  uint64_t period_ms_;
  bool loops_;
  std::vector<uint64_t> offsets_ms_;  // distinct timestamps mod P, ascending; offsets_ms_[0] == 0
  std::vector<uint32_t> counts_;      // timestamps at each offset, 0 < t < P (at offset 0: those equal to 0)
  uint32_t count_at_period_ = 0;      // timestamps equal to P (they open the next cycle)
};

class DeliveryOpportunityQueueDisc : public ns3::QueueDisc {
 public:
  static constexpr uint32_t kTunHeaderBytes = 4;  // mahimahi's per-packet cost on top of the IP packet

  static ns3::TypeId GetTypeId();
  DeliveryOpportunityQueueDisc();

  // Call once, before the queue disc is initialized; the child queue disc is
  // added with AddQueueDiscClass.
  void SetSchedule(const traces::DeliveryOpportunities& opportunities, bool loops);
  uint32_t opportunity_bytes() const { return opportunity_bytes_; }
  const OpportunitySchedule& schedule() const { return *schedule_; }
  // What an opportunity runs to hand packets to the device: this queue disc's
  // Run() when it is the root, the root's when it is a child (sim/access_links.h).
  void SetWake(std::function<void()> wake) { wake_ = std::move(wake); }
  // An opportunity is scheduled: it will run the wake.
  bool busy() const { return event_.IsRunning(); }

 private:
  bool DoEnqueue(ns3::Ptr<ns3::QueueDiscItem> item) override;
  ns3::Ptr<ns3::QueueDiscItem> DoDequeue() override;
  bool CheckConfig() override;
  void InitializeParams() override;
  void DoDispose() override;

  bool backlogged();
  void schedule_next();   // an event at the next unused opportunity (none when the trace has ended)
  void on_opportunity();  // the event: grant the opportunity's bytes and transmit

  std::optional<OpportunitySchedule> schedule_;
  uint32_t opportunity_bytes_ = 0;
  uint64_t next_slot_ = 0;     // first slot not used yet (the pending event's, when there is one)
  ns3::EventId event_;
  std::function<void()> wake_;
  uint64_t budget_bytes_ = 0;  // bytes left at the current opportunity...
  ns3::Time budget_time_;      // ...valid at this instant only
  ns3::Ptr<ns3::QueueDiscItem> transit_;  // taken off the child queue, partly sent
  uint64_t transit_left_bytes_ = 0;
};

}  // namespace kvs::sim
