#include "sim/rate_queue_disc.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include <fmt/format.h>

#include "ns3/simulator.h"

#include "base/error.h"

namespace kvs::sim {

RateIntegrator::RateIntegrator(const traces::Trace& trace) : duration_s_(trace.duration_s), loops_(trace.loops) {
  if (trace.segments.empty() || trace.segments[0].start_s != 0)
    throw Error(fmt::format("trace {}: expected segments starting at 0 s", trace.name));
  for (size_t i = 0; i < trace.segments.size(); ++i) {
    const auto& s = trace.segments[i];
    if ((i > 0 && !(s.start_s > starts_s_.back())) || !(s.rate_bps >= 0) || !std::isfinite(s.rate_bps))
      throw Error(fmt::format("trace {}: segment {} is out of order or has a bad rate", trace.name, i));
    starts_s_.push_back(s.start_s);
    rates_bps_.push_back(s.rate_bps);
  }
  if (!(duration_s_ > starts_s_.back()))
    throw Error(fmt::format("trace {}: duration {} s ends before its last segment", trace.name, duration_s_));
  for (size_t i = 0; i < starts_s_.size(); ++i)
    bits_per_period_ += rates_bps_[i] * ((i + 1 < starts_s_.size() ? starts_s_[i + 1] : duration_s_) - starts_s_[i]);
}

std::optional<double> RateIntegrator::finish_s(double start_s, double bits) const {
  const size_t n = starts_s_.size();
  double t = std::max(start_s, 0.0);
  if (bits <= 0) return t;
  double base = 0;  // start of the current period
  if (loops_) {
    base = std::floor(t / duration_s_) * duration_s_;
    if (t - base >= duration_s_) base += duration_s_;  // rounding
  } else if (t >= duration_s_) {
    return std::nullopt;
  }
  size_t i = size_t(std::upper_bound(starts_s_.begin(), starts_s_.end(), t - base) - starts_s_.begin()) - 1;
  double remaining = bits;
  for (;;) {
    const double end = base + (i + 1 < n ? starts_s_[i + 1] : duration_s_);
    const double r = rates_bps_[i];
    if (r > 0 && end > t) {
      const double carried = r * (end - t);
      if (carried >= remaining) return t + remaining / r;
      remaining -= carried;
    }
    t = end;
    if (++i < n) continue;
    if (!loops_ || !(bits_per_period_ > 0)) return std::nullopt;
    i = 0;
    base += duration_s_;
    t = base;
    if (remaining > bits_per_period_) {  // skip whole periods
      double whole = std::floor(remaining / bits_per_period_);
      if (whole * bits_per_period_ >= remaining) whole -= 1;
      base += whole * duration_s_;
      t = base;
      remaining -= whole * bits_per_period_;
    }
  }
}

NS_OBJECT_ENSURE_REGISTERED(TraceRateQueueDisc);

ns3::TypeId TraceRateQueueDisc::GetTypeId() {
  static ns3::TypeId tid = ns3::TypeId("kvs::sim::TraceRateQueueDisc")
                               .SetParent<ns3::QueueDisc>()
                               .SetGroupName("kvstream")
                               .AddConstructor<TraceRateQueueDisc>();
  return tid;
}

TraceRateQueueDisc::TraceRateQueueDisc() : ns3::QueueDisc(ns3::QueueDiscSizePolicy::SINGLE_CHILD_QUEUE_DISC) {}

void TraceRateQueueDisc::SetTrace(const traces::Trace& trace) { rate_.emplace(trace); }

bool TraceRateQueueDisc::CheckConfig() {
  return rate_ && GetNQueueDiscClasses() == 1 && GetNInternalQueues() == 0 && GetNPacketFilters() == 0;
}

void TraceRateQueueDisc::InitializeParams() {}

void TraceRateQueueDisc::DoDispose() {
  ns3::Simulator::Cancel(event_);
  transit_ = nullptr;
  ns3::QueueDisc::DoDispose();
}

bool TraceRateQueueDisc::DoEnqueue(ns3::Ptr<ns3::QueueDiscItem> item) {
  const bool queued = GetQueueDiscClass(0)->GetQueueDisc()->Enqueue(item);
  if (queued && !transit_) start_next();
  return queued;
}

void TraceRateQueueDisc::start_next() {
  transit_ = GetQueueDiscClass(0)->GetQueueDisc()->Dequeue();
  ready_ = false;
  if (!transit_) return;
  const ns3::Time now = ns3::Simulator::Now();
  const double bits = 8.0 * double(transit_->GetSize() + kPppHeaderBytes);
  const auto finish = rate_->finish_s(now.GetSeconds(), bits);
  if (!finish) return;  // the trace has ended: the packet never leaves, nor does anything behind it
  const ns3::Time at = std::max(now, ns3::NanoSeconds(std::llround(*finish * 1e9)));
  event_ = ns3::Simulator::Schedule(at - now, &TraceRateQueueDisc::on_finish, this);
}

void TraceRateQueueDisc::on_finish() {
  ready_ = true;
  // Hands transit_ to the device, and starts the next packet.
  if (wake_) {
    wake_();
  } else {
    Run();
  }
}

ns3::Ptr<ns3::QueueDiscItem> TraceRateQueueDisc::DoDequeue() {
  if (!ready_) return nullptr;
  ns3::Ptr<ns3::QueueDiscItem> done = std::exchange(transit_, nullptr);
  start_next();
  return done;
}

}  // namespace kvs::sim
