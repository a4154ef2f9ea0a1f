#include "sim/opportunity_queue_disc.h"

#include <algorithm>
#include <utility>

#include <fmt/format.h>

#include "ns3/simulator.h"

#include "base/error.h"

namespace kvs::sim {

namespace {
constexpr int64_t kNsPerMs = 1'000'000;
}  // namespace

OpportunitySchedule::OpportunitySchedule(const traces::DeliveryOpportunities& opp, bool loops)
    : period_ms_(opp.period_ms), loops_(loops) {
  if (opp.times_ms.empty() || period_ms_ == 0 || opp.times_ms.back() != period_ms_)
    throw Error("mahimahi link: delivery opportunities need timestamps ending at the period (> 0 ms)");
  offsets_ms_.push_back(0);
  counts_.push_back(0);
  for (size_t i = 0; i < opp.times_ms.size(); ++i) {
    const uint64_t t = opp.times_ms[i];
    if (i > 0 && t < opp.times_ms[i - 1]) throw Error("mahimahi link: delivery opportunities must not decrease");
    if (t == period_ms_) {
      ++count_at_period_;
    } else if (t == 0) {
      ++counts_[0];
    } else {
      if (offsets_ms_.back() != t) {
        offsets_ms_.push_back(t);
        counts_.push_back(0);
      }
      ++counts_.back();
    }
  }
}

int64_t OpportunitySchedule::time_ns(uint64_t slot) const {
  const uint64_t n = offsets_ms_.size();
  return int64_t((slot / n) * period_ms_ + offsets_ms_[slot % n]) * kNsPerMs;
}

uint32_t OpportunitySchedule::count(uint64_t slot) const {
  if (ended(slot)) return 0;
  const uint64_t n = offsets_ms_.size();
  const uint64_t cycle = slot / n, j = slot % n;
  uint32_t c = (cycle == 0 || loops_) ? counts_[j] : 0;
  if (j == 0 && cycle >= 1) c += count_at_period_;  // timestamp P of the previous cycle
  return c;
}

std::optional<uint64_t> OpportunitySchedule::first_at_or_after(int64_t time_ns, uint64_t from) const {
  const uint64_t n = offsets_ms_.size();
  const uint64_t ms = time_ns <= 0 ? 0 : uint64_t((time_ns + kNsPerMs - 1) / kNsPerMs);
  uint64_t cycle = ms / period_ms_;
  const uint64_t phase = ms % period_ms_;
  uint64_t j = uint64_t(std::lower_bound(offsets_ms_.begin(), offsets_ms_.end(), phase) - offsets_ms_.begin());
  if (j == n) ++cycle, j = 0;
  uint64_t slot = std::max(cycle * n + j, from);
  while (!ended(slot) && count(slot) == 0) ++slot;
  if (ended(slot)) return std::nullopt;
  return slot;
}

uint32_t OpportunitySchedule::max_count() const {
  uint32_t m = counts_[0] + count_at_period_;
  for (uint32_t c : counts_) m = std::max(m, c);
  return m;
}

NS_OBJECT_ENSURE_REGISTERED(DeliveryOpportunityQueueDisc);

ns3::TypeId DeliveryOpportunityQueueDisc::GetTypeId() {
  static ns3::TypeId tid = ns3::TypeId("kvs::sim::DeliveryOpportunityQueueDisc")
                               .SetParent<ns3::QueueDisc>()
                               .SetGroupName("kvstream")
                               .AddConstructor<DeliveryOpportunityQueueDisc>();
  return tid;
}

DeliveryOpportunityQueueDisc::DeliveryOpportunityQueueDisc()
    : ns3::QueueDisc(ns3::QueueDiscSizePolicy::SINGLE_CHILD_QUEUE_DISC) {}

void DeliveryOpportunityQueueDisc::SetSchedule(const traces::DeliveryOpportunities& opportunities, bool loops) {
  schedule_.emplace(opportunities, loops);
  opportunity_bytes_ = opportunities.packet_bytes + kTunHeaderBytes;
  next_slot_ = 0;
}

bool DeliveryOpportunityQueueDisc::CheckConfig() {
  return schedule_ && opportunity_bytes_ > 0 && GetNQueueDiscClasses() == 1 && GetNInternalQueues() == 0 &&
         GetNPacketFilters() == 0;
}

void DeliveryOpportunityQueueDisc::InitializeParams() {}

void DeliveryOpportunityQueueDisc::DoDispose() {
  ns3::Simulator::Cancel(event_);
  transit_ = nullptr;
  ns3::QueueDisc::DoDispose();
}

bool DeliveryOpportunityQueueDisc::backlogged() {
  return transit_ || GetQueueDiscClass(0)->GetQueueDisc()->GetNPackets() > 0;
}

bool DeliveryOpportunityQueueDisc::DoEnqueue(ns3::Ptr<ns3::QueueDiscItem> item) {
  // A drop by the child reaches this queue disc's drop trace through the
  // callbacks AddQueueDiscClass connected.
  const bool queued = GetQueueDiscClass(0)->GetQueueDisc()->Enqueue(item);
  if (queued && !event_.IsRunning()) schedule_next();
  return queued;
}

void DeliveryOpportunityQueueDisc::schedule_next() {
  const ns3::Time now = ns3::Simulator::Now();
  const auto slot = schedule_->first_at_or_after(now.GetNanoSeconds(), next_slot_);
  if (!slot) return;  // the trace has ended: the link stays closed
  next_slot_ = *slot;
  ns3::Simulator::Cancel(event_);  // a packet a parent hands over during an opportunity schedules too
  event_ = ns3::Simulator::Schedule(ns3::NanoSeconds(schedule_->time_ns(*slot)) - now,
                                    &DeliveryOpportunityQueueDisc::on_opportunity, this);
}

void DeliveryOpportunityQueueDisc::on_opportunity() {
  budget_bytes_ = uint64_t(schedule_->count(next_slot_)) * opportunity_bytes_;
  budget_time_ = ns3::Simulator::Now();
  ++next_slot_;
  if (wake_) {
    wake_();  // hands every packet this opportunity completes to the device
  } else {
    Run();
  }
  if (backlogged()) {
    schedule_next();
  } else {
    budget_bytes_ = 0;  // nothing queued: the rest of the opportunity is wasted
  }
}

ns3::Ptr<ns3::QueueDiscItem> DeliveryOpportunityQueueDisc::DoDequeue() {
  if (budget_bytes_ == 0 || budget_time_ != ns3::Simulator::Now()) return nullptr;
  if (!transit_) {
    transit_ = GetQueueDiscClass(0)->GetQueueDisc()->Dequeue();
    if (!transit_) {
      budget_bytes_ = 0;  // the queue is empty: the rest of the opportunity is wasted
      return nullptr;
    }
    transit_left_bytes_ = uint64_t(transit_->GetSize()) + kTunHeaderBytes;
  }
  const uint64_t used = std::min(budget_bytes_, transit_left_bytes_);
  budget_bytes_ -= used;
  transit_left_bytes_ -= used;
  if (transit_left_bytes_ > 0) return nullptr;  // continues at the next opportunity
  return std::exchange(transit_, nullptr);
}

}  // namespace kvs::sim
