// Exact replay of a piecewise-constant rate trace in ns-3 (C++17; internal to
// sim/): a root queue disc that serializes packets, one at a time, at the
// trace's rate as it changes, in front of a bottleneck device so fast that its
// own serialization time is negligible.
//
// A packet starts when it reaches the head of the queue and the link is free;
// it leaves when the trace has carried its bits since then: at the t1 with
// integral_{t0}^{t1} rate(t) dt = 8 x (IP bytes + 2), the 2 bytes being the
// point-to-point header a constant-rate link also serializes. A packet thus
// crosses segment boundaries at the rates of the segments it spans, waits out
// an outage (rate 0) and leaves when enough capacity has followed it. (ns-3's
// point-to-point device fixes a packet's serialization time when it starts,
// so changing the device's rate at segment boundaries cannot do this.) A
// trace that does not loop carries nothing after its end.
//
// Cost: one simulator event per packet (its departure); nothing while idle.
// The child queue disc (FIFO, CoDel, FqCoDel) holds the waiting packets and
// is dequeued when a packet starts.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "ns3/event-id.h"
#include "ns3/queue-disc.h"

#include "traces/trace.h"

namespace kvs::sim {

// Integrates a trace's rate forward in time.
class RateIntegrator {
 public:
  explicit RateIntegrator(const traces::Trace& trace);
  // The time at which `bits` have been carried from `start_s` on; empty when
  // the trace never carries them (it ended, or carries nothing at all).
  std::optional<double> finish_s(double start_s, double bits) const;

 private:
  std::vector<double> starts_s_, rates_bps_;
  double duration_s_;
  bool loops_;
  double bits_per_period_ = 0;
};

class TraceRateQueueDisc : public ns3::QueueDisc {
 public:
  static constexpr uint32_t kPppHeaderBytes = 2;

  static ns3::TypeId GetTypeId();
  TraceRateQueueDisc();

  // Call once, before the queue disc is initialized; the child queue disc is
  // added with AddQueueDiscClass.
  void SetTrace(const traces::Trace& trace);
  // What a finished packet runs to reach the device: this queue disc's Run()
  // when it is the root, the root's when it is a child (sim/access_links.h).
  void SetWake(std::function<void()> wake) { wake_ = std::move(wake); }
  // A packet is in service: its departure will run the wake.
  bool busy() const { return transit_ && event_.IsRunning(); }

 private:
  bool DoEnqueue(ns3::Ptr<ns3::QueueDiscItem> item) override;
  ns3::Ptr<ns3::QueueDiscItem> DoDequeue() override;
  bool CheckConfig() override;
  void InitializeParams() override;
  void DoDispose() override;

  void start_next();  // the link is free: serialize the next queued packet, if any
  void on_finish();   // the packet in service has been carried: hand it to the device

  std::optional<RateIntegrator> rate_;
  ns3::Ptr<ns3::QueueDiscItem> transit_;  // in service
  bool ready_ = false;                     // transit_ has been carried
  ns3::EventId event_;
  std::function<void()> wake_;
};

}  // namespace kvs::sim
