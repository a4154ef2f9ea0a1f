// The bottleneck link at the packet level (C++17: ns-3 headers): the dumbbell
// of sim/topology.h with a bulk TCP transfer from the server to the GPU node,
// observed through ns-3 trace sources on the bottleneck.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "ns3/applications-module.h"
#include "ns3/core-module.h"
#include "ns3/internet-module.h"
#include "ns3/network-module.h"
#include "ns3/point-to-point-module.h"
#include "ns3/traffic-control-module.h"

#include "base/error.h"
#include "sim/ns3_fixes.h"
#include "sim/opportunity_queue_disc.h"
#include "sim/rate_queue_disc.h"
#include "sim/topology.h"
#include "traces/formats.h"

namespace kvs::sim {
namespace {

constexpr int64_t kNsPerMs = 1'000'000;
constexpr uint16_t kPort = 9000;

std::string trace_path(const std::string& name) { return std::string(KVSTREAM_SOURCE_DIR) + "/traces/data/" + name; }

struct Packet {
  int64_t t_ns;
  uint32_t ip_bytes;
};

// What one run saw: packets entering the bottleneck's queue (after any drop
// at enqueue), packets leaving it (handed to the device), application bytes
// received, and the sender's RTT samples.
struct Observed {
  std::vector<Packet> arrivals, departures, received;
  std::vector<std::pair<double, double>> rtt_s;  // (time, sample)
  uint64_t drops = 0;
  std::string description;
  std::vector<std::pair<std::string, std::string>> settings;
};

// Bulk transfers from the server to the client, starting at `starts_s` (each
// `max_bytes`, 0: unlimited), simulated until `stop_s`.
// On the dumbbell: packets reach the bottleneck's queue disc when they reach
// the router (the minimal topology's root is the emulated access link, which
// hands them on lazily; tests/sim/fluid_test.cc, MinimalTopology, checks it
// gives the dumbbell's packets).
Observed run_bulk(LinkSpec link, std::vector<double> starts_s, double stop_s, uint64_t max_bytes = 0) {
  using namespace ns3;
  link.fold_access_links = false;
  RngSeedManager::SetSeed(1);
  RngSeedManager::SetRun(1);
  Observed o;
  {
    Topology t = build_topology(link, 0);
    if (link.trace) schedule_trace(t, *link.trace, stop_s);
    o.description = t.description;
    o.settings = t.settings;
    const Ipv4Address client = t.client->GetObject<Ipv4>()->GetAddress(1, 0).GetLocal();

    PacketSinkHelper sink_helper("ns3::TcpSocketFactory", InetSocketAddress(Ipv4Address::GetAny(), kPort));
    ApplicationContainer sinks = sink_helper.Install(t.client);
    sinks.Start(Seconds(0));
    Ptr<PacketSink> sink = DynamicCast<PacketSink>(sinks.Get(0));
    sink->TraceConnectWithoutContext("Rx", MakeBoundCallback(+[](Observed* o, Ptr<const ns3::Packet> p, const Address&) {
                                                          o->received.push_back(
                                                              {Simulator::Now().GetNanoSeconds(), p->GetSize()});
                                                        }, &o));
    std::vector<Ptr<BulkSendApplication>> senders;
    for (double start : starts_s) {
      BulkSendHelper bulk("ns3::TcpSocketFactory", InetSocketAddress(client, kPort));
      bulk.SetAttribute("MaxBytes", UintegerValue(max_bytes));
      bulk.SetAttribute("SendSize", UintegerValue(64 * 1024));
      ApplicationContainer apps = bulk.Install(t.server);
      apps.Start(Seconds(start));
      auto app = DynamicCast<BulkSendApplication>(apps.Get(0));
      senders.push_back(app);
      // The socket exists once the application has started.
      Simulator::Schedule(Seconds(start) + NanoSeconds(1), +[](Ptr<BulkSendApplication> app, Observed* o) {
        app->GetSocket()->TraceConnectWithoutContext(
            "RTT", MakeBoundCallback(+[](Observed* o, Time, Time rtt) {
                     if (rtt.IsStrictlyPositive()) o->rtt_s.emplace_back(Simulator::Now().GetSeconds(), rtt.GetSeconds());
                   }, o));
      }, app, &o);
    }

    // Departures: every packet the device accepts (PPP header included).
    t.bottleneck->TraceConnectWithoutContext("MacTx", MakeBoundCallback(+[](Observed* o, Ptr<const ns3::Packet> p) {
                                                         o->departures.push_back(
                                                             {Simulator::Now().GetNanoSeconds(), p->GetSize() - 2});
                                                       }, &o));
    if (t.queue_disc) {
      t.queue_disc->TraceConnectWithoutContext(
          "Enqueue", MakeBoundCallback(+[](Observed* o, Ptr<const QueueDiscItem> item) {
                       o->arrivals.push_back({Simulator::Now().GetNanoSeconds(), item->GetSize()});
                     }, &o));
      auto count_drop = +[](Observed* o, Ptr<const QueueDiscItem>, const char*) { ++o->drops; };
      t.queue_disc->TraceConnectWithoutContext("DropBeforeEnqueue", MakeBoundCallback(count_drop, &o));
      t.queue_disc->TraceConnectWithoutContext("DropAfterDequeue", MakeBoundCallback(count_drop, &o));
    } else {
      t.bottleneck->GetQueue()->TraceConnectWithoutContext(
          "Drop", MakeBoundCallback(+[](Observed* o, Ptr<const ns3::Packet>) { ++o->drops; }, &o));
    }
    Simulator::Stop(Seconds(stop_s));
    Simulator::Run();
  }
  Simulator::Destroy();
  return o;
}

// mahimahi's LinkQueue::rationalize, transcribed: every opportunity of the
// raw schedule in time order, 1504 bytes each; a packet costs IP bytes + 4
// and may take bytes from several opportunities; bytes left when the queue
// is empty are lost. Returns the departure time of every packet, given the
// arrival times (a packet can use opportunities strictly after it arrives).
std::vector<Packet> mahimahi_departures(const traces::DeliveryOpportunities& opp, bool loops,
                                        const std::vector<Packet>& arrivals, int64_t stop_ns) {
  std::vector<Packet> out;
  std::deque<Packet> queue;
  size_t next_arrival = 0;
  int64_t left = 0;  // bytes of the packet in transit still to send
  Packet transit{};
  for (uint64_t cycle = 0;; ++cycle) {
    for (uint64_t t_ms : opp.times_ms) {
      const int64_t at = int64_t(cycle * opp.period_ms + t_ms) * kNsPerMs;
      if (at >= stop_ns) return out;
      while (next_arrival < arrivals.size() && arrivals[next_arrival].t_ns < at) queue.push_back(arrivals[next_arrival++]);
      int64_t budget = opp.packet_bytes + 4;
      while (budget > 0) {
        if (left == 0) {
          if (queue.empty()) break;
          transit = queue.front();
          queue.pop_front();
          left = transit.ip_bytes + 4;
        }
        const int64_t used = std::min(budget, left);
        budget -= used;
        left -= used;
        if (left == 0) out.push_back({at, transit.ip_bytes});
      }
    }
    if (!loops) return out;
  }
}

void expect_exact_mahimahi_replay(const LinkSpec& link, const Observed& o) {
  const auto& opp = *link.trace->opportunities;
  ASSERT_FALSE(o.arrivals.empty());
  ASSERT_EQ(o.drops, 0u) << "the test needs a queue that never overflows";
  // No packet reaches the queue exactly at an opportunity (the order of two
  // events at one instant would decide; the reference assumes "after").
  for (const auto& a : o.arrivals) ASSERT_NE(a.t_ns % kNsPerMs, 0) << "arrival at " << a.t_ns;
  const int64_t stop_ns = o.departures.empty() ? 0 : o.departures.back().t_ns + 1;
  const auto expected = mahimahi_departures(opp, link.trace->loops, o.arrivals, stop_ns);
  ASSERT_EQ(o.departures.size(), expected.size());
  size_t mismatches = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (o.departures[i].t_ns != expected[i].t_ns || o.departures[i].ip_bytes != expected[i].ip_bytes) {
      if (++mismatches <= 5)
        ADD_FAILURE() << "packet " << i << ": left at " << o.departures[i].t_ns << " ns (" << o.departures[i].ip_bytes
                      << " B), mahimahi: " << expected[i].t_ns << " ns (" << expected[i].ip_bytes << " B)";
    }
  }
  EXPECT_EQ(mismatches, 0u);
}

// Opportunities at each instant of a looping schedule, by absolute ms.
std::map<int64_t, uint32_t> opportunities_until(const traces::DeliveryOpportunities& opp, int64_t end_ms) {
  std::map<int64_t, uint32_t> at;
  for (uint64_t cycle = 0; int64_t(cycle * opp.period_ms) <= end_ms; ++cycle)
    for (uint64_t t : opp.times_ms)
      if (int64_t(cycle * opp.period_ms + t) <= end_ms) ++at[int64_t(cycle * opp.period_ms + t)];
  return at;
}

LinkSpec mahimahi_link(const traces::Trace& trace) {
  LinkSpec link;
  link.trace = trace;
  link.rtt_ms = 20;
  link.queue_packets = 2000;  // never overflows here: the test compares every packet
  return link;
}

TEST(MahimahiLink, SaturatedTransferUsesEveryOpportunityExactly) {
  // TMobile-LTE-short.down (mahimahi's own trace, 16.7 Mbit/s on average), its first 2.5 s.
  const auto trace = traces::load_trace(trace_path("mahimahi/TMobile-LTE-short.down"));
  const LinkSpec link = mahimahi_link(trace);
  EXPECT_EQ(resolved_trace_mode(link), "mahimahi");  // auto: the file has opportunities
  const Observed o = run_bulk(link, {0.0}, 2.5);
  expect_exact_mahimahi_replay(link, o);

  // Spelled out for full-size packets (1500 B: one opportunity each): at
  // every opportunity instant, min(opportunities, packets waiting) leave,
  // and nothing leaves at any other instant.
  std::map<int64_t, uint32_t> left_at;  // ms -> packets
  for (const auto& d : o.departures) {
    ASSERT_EQ(d.t_ns % kNsPerMs, 0) << "a packet left between opportunities";
    ++left_at[d.t_ns / kNsPerMs];
  }
  const auto opps = opportunities_until(*trace.opportunities, 2499);
  size_t a = 0, d = 0, checked = 0, backlogged_opps = 0;
  uint64_t backlogged_bytes = 0;
  for (const auto& [ms, count] : opps) {
    while (a < o.arrivals.size() && o.arrivals[a].t_ns < ms * kNsPerMs) ++a;
    const size_t waiting = a - d;
    const uint32_t left = left_at.count(ms) ? left_at[ms] : 0;
    if (ms > 200) {  // past the handshake: every packet is a full 1500-byte segment
      EXPECT_EQ(left, std::min<size_t>(count, waiting)) << "at " << ms << " ms";
      ++checked;
      if (waiting >= count) {
        backlogged_opps += count;
        for (uint32_t k = 0; k < left; ++k) backlogged_bytes += o.departures[d + k].ip_bytes;
      }
    }
    d += left;
  }
  EXPECT_GT(checked, 500u);  // instants with opportunities
  // While backlogged, bytes out = opportunities x 1500 exactly; and the link
  // was backlogged at most of its opportunities (a saturating transfer).
  EXPECT_EQ(backlogged_bytes, uint64_t(backlogged_opps) * 1500);
  EXPECT_GT(backlogged_opps, opps.size() / 2);
}

TEST(MahimahiLink, SmallPacketsShareOpportunitiesAndIdleGapsAndWrapsAreSkippedExactly) {
  // A 37 ms schedule with several opportunities per ms, a timestamp 0 and
  // the period's timestamp (which coincide from the second cycle on);
  // 1000-byte packets (MSS 948), so packets span opportunities; two transfers
  // with an idle gap of many periods in between.
  const auto trace = traces::parse_trace("0\n0\n3\n3\n3\n4\n10\n11\n11\n20\n29\n30\n30\n30\n37\n", "short.mm");
  LinkSpec link = mahimahi_link(trace);
  link.rtt_ms = 10;
  link.mss_bytes = 948;
  const Observed o = run_bulk(link, {0.0, 1.7}, 2.6, /*max_bytes=*/300'000);
  expect_exact_mahimahi_replay(link, o);
  uint64_t received = 0;
  for (const auto& r : o.received) received += r.ip_bytes;
  EXPECT_EQ(received, 600'000u);  // both transfers complete
  // The packets are 1000 B: some opportunities released two.
  std::map<int64_t, int> per_instant;
  for (const auto& d : o.departures) ++per_instant[d.t_ns];
  EXPECT_TRUE(std::any_of(per_instant.begin(), per_instant.end(), [&](const auto& kv) {
    const int64_t ms = kv.first / kNsPerMs;
    return kv.second > 1 && (ms % 37 == 4 || ms % 37 == 20);  // single-opportunity instants
  }));
}

TEST(MahimahiLink, TraceWithoutOpportunitiesIsAnErrorInMahimahiMode) {
  LinkSpec link;
  traces::Trace trace;
  trace.name = "gen";
  trace.segments = {{0.0, 1e7}};
  trace.duration_s = 1;
  link.trace = trace;
  EXPECT_EQ(resolved_trace_mode(link), "rate");
  link.trace_mode = "mahimahi";
  EXPECT_THROW(resolved_trace_mode(link), Error);
  link.trace_mode = "exact";
  EXPECT_THROW(resolved_trace_mode(link), Error);
}

TEST(OpportunitySchedule, SlotsCountsAndSkipping) {
  traces::DeliveryOpportunities opp;
  opp.times_ms = {0, 2, 2, 5, 10, 10};
  opp.period_ms = 10;
  const OpportunitySchedule looping(opp, true);
  // Slots per cycle: offsets 0, 2, 5. Slot 0 (0 ms) has the one timestamp 0;
  // slot 3 (10 ms) also has the two at the period.
  EXPECT_EQ(looping.count(0), 1u);
  EXPECT_EQ(looping.count(1), 2u);
  EXPECT_EQ(looping.time_ns(4), 12 * kNsPerMs);
  EXPECT_EQ(looping.count(3), 3u);
  EXPECT_EQ(looping.max_count(), 3u);
  EXPECT_EQ(looping.first_at_or_after(0, 0), 0u);
  EXPECT_EQ(looping.first_at_or_after(1, 0), 1u);               // 1 ns: the next is at 2 ms
  EXPECT_EQ(looping.first_at_or_after(2 * kNsPerMs, 0), 1u);    // at an opportunity: that one
  EXPECT_EQ(looping.first_at_or_after(2 * kNsPerMs, 2), 2u);    // ...unless it was used
  EXPECT_EQ(looping.first_at_or_after(6 * kNsPerMs, 0), 3u);
  EXPECT_EQ(looping.first_at_or_after(1'000'003 * kNsPerMs, 0), 100'000u * 3 + 2);  // 1'000'005 ms
  const OpportunitySchedule once(opp, false);
  EXPECT_EQ(once.count(3), 2u);  // the period's two, no next cycle
  EXPECT_FALSE(once.first_at_or_after(10 * kNsPerMs + 1, 0).has_value());
  opp.times_ms = {3, 7};
  opp.period_ms = 7;
  const OpportunitySchedule no_zero(opp, true);
  EXPECT_EQ(no_zero.first_at_or_after(0, 0), 1u);  // nothing at 0 ms in the first cycle
}

// Rate mode, checked against the traces module's own integral: every packet
// starts when it arrives or when the one before it has left, whichever is
// later, and leaves when the trace has carried its IP bytes + 2 since then.
void expect_fluid_service(const traces::Trace& trace, const Observed& o, double max_rate_bps) {
  ASSERT_EQ(o.drops, 0u);
  ASSERT_LE(o.departures.size(), o.arrivals.size());
  int64_t free_ns = 0;
  double worst_bits = 0;
  for (size_t i = 0; i < o.departures.size(); ++i) {
    const auto& d = o.departures[i];
    ASSERT_EQ(d.ip_bytes, o.arrivals[i].ip_bytes);
    const int64_t start_ns = std::max(o.arrivals[i].t_ns, free_ns);
    const double carried = trace.bits_between(start_ns * 1e-9, d.t_ns * 1e-9);
    worst_bits = std::max(worst_bits, std::abs(carried - 8.0 * (d.ip_bytes + 2)));
    free_ns = d.t_ns;
  }
  // Departure times are rounded to the nanosecond.
  EXPECT_LE(worst_bits, max_rate_bps * 1e-9 + 1e-6);
}

TEST(RateLink, EveryPacketLeavesWhenTheTraceHasCarriedItsBits) {
  // A looping 100 ms trace with an outage and rates that change mid-packet:
  // 20 Mbit/s, then nothing for 30 ms, then 5 Mbit/s, then 0.3 ms of 40 Mbit/s.
  traces::Trace trace;
  trace.name = "steps";
  trace.segments = {{0.0, 20e6}, {0.050, 0.0}, {0.080, 5e6}, {0.0997, 40e6}};
  trace.duration_s = 0.1;
  LinkSpec link;
  link.trace = trace;
  link.rtt_ms = 10;
  link.queue_packets = 2000;
  EXPECT_EQ(resolved_trace_mode(link), "rate");
  const Observed o = run_bulk(link, {0.0}, 1.5);
  ASSERT_GT(o.departures.size(), 500u);
  expect_fluid_service(trace, o, 40e6);
  for (const auto& d : o.departures) {
    const double phase_ms = double(d.t_ns % 100'000'000) / 1e6;
    EXPECT_FALSE(phase_ms > 50.0 && phase_ms < 80.0) << "a packet left during the outage at " << d.t_ns << " ns";
  }
}

TEST(RateLink, MillisecondBinsOfAMahimahiTraceInRateMode) {
  // The rate form of TMobile-LTE-short (1 ms bins, many empty), seconds 0 to 2.
  const auto trace = traces::load_trace(trace_path("mahimahi/TMobile-LTE-short.down"));
  LinkSpec link = mahimahi_link(trace);
  link.trace_mode = "rate";
  const Observed o = run_bulk(link, {0.0}, 2.0);
  double peak = 0;
  for (const auto& s : trace.segments) peak = std::max(peak, s.rate_bps);
  expect_fluid_service(trace, o, peak);
}

// Goodput of a long transfer over [from_s, to_s) as a fraction of what the
// link could carry then (TCP payload over IP capacity).
double goodput_fraction(const Observed& o, double capacity_bits, double from_s, double to_s) {
  uint64_t bytes = 0;
  for (const auto& r : o.received)
    if (r.t_ns >= int64_t(from_s * 1e9) && r.t_ns < int64_t(to_s * 1e9)) bytes += r.ip_bytes;
  return 8.0 * double(bytes) / capacity_bits;
}

// A long bulk transfer over a trace: goodput (TCP payload) over [from_s,
// to_s) against the trace's capacity (IP bytes) then; at most 1448/1500.
void expect_goodput_fraction(const std::string& file, const std::string& mode, double from_s, double to_s) {
  const auto trace = traces::load_trace(trace_path(file));
  LinkSpec link;
  link.trace = trace;
  link.trace_mode = mode;
  link.rtt_ms = 40;
  const Observed o = run_bulk(link, {0.0}, to_s);
  EXPECT_EQ(o.description.find(mode == "mahimahi" ? "mahimahi delivery opportunities" : "(rate,") == std::string::npos,
            false);
  const double f = goodput_fraction(o, trace.bits_between(from_s, to_s), from_s, to_s);
  EXPECT_GE(f, 0.90) << file << " " << mode;
  EXPECT_LE(f, 1448.0 / 1500) << file << " " << mode << ": more than the link can carry";
}

TEST(TraceLink, LongTransferGetsAtLeast90PercentOfTheTraceInMahimahiMode) {
  // TMobile-LTE-short.down (mahimahi's), seconds 1 to 6: 25.2 Mbit/s on average.
  expect_goodput_fraction("mahimahi/TMobile-LTE-short.down", "mahimahi", 1, 6);
}

TEST(TraceLink, LongTransferGetsAtLeast90PercentOfTheTraceInRateMode) {
  // Pensieve's HSDPA norway_bus_1 (1-second segments), seconds 2 to 12: 4.25 Mbit/s on average.
  expect_goodput_fraction("pensieve-hsdpa/norway_bus_1", "rate", 2, 12);
  // The rate form of the mahimahi trace above (1 ms bins, many empty).
  expect_goodput_fraction("mahimahi/TMobile-LTE-short.down", "rate", 1, 6);
}

TEST(RateIntegrator, HandComputedFinishTimes) {
  traces::Trace trace;
  trace.name = "t";
  trace.segments = {{0.0, 1000.0}, {1.0, 0.0}, {2.0, 500.0}};  // bits per second
  trace.duration_s = 4;  // 2000 bits per period
  const RateIntegrator looping(trace);
  EXPECT_DOUBLE_EQ(*looping.finish_s(0.0, 500), 0.5);
  EXPECT_DOUBLE_EQ(*looping.finish_s(0.5, 1000), 3.0);    // 500 by 1 s, the outage, 500 more at 500 bit/s
  EXPECT_DOUBLE_EQ(*looping.finish_s(1.5, 100), 2.2);     // starts in the outage
  EXPECT_DOUBLE_EQ(*looping.finish_s(3.0, 1000), 4.5);    // 500 by 4 s, then the next period
  EXPECT_NEAR(*looping.finish_s(0.0, 2000 * 1000 + 250), 4000.25, 1e-6);  // whole periods skipped
  EXPECT_DOUBLE_EQ(*looping.finish_s(9.0, 0), 9.0);
  trace.loops = false;
  const RateIntegrator once(trace);
  EXPECT_DOUBLE_EQ(*once.finish_s(3.0, 500), 4.0);
  EXPECT_FALSE(once.finish_s(3.0, 501).has_value());
  EXPECT_FALSE(once.finish_s(5.0, 1).has_value());
  traces::Trace silent = trace;
  silent.loops = true;
  silent.segments = {{0.0, 0.0}};
  EXPECT_FALSE(RateIntegrator(silent).finish_s(0.0, 1).has_value());
}

double median_rtt_s(const Observed& o, double from_s) {
  std::vector<double> v;
  for (const auto& [t, rtt] : o.rtt_s)
    if (t >= from_s) v.push_back(rtt);
  if (v.empty()) return -1;
  std::nth_element(v.begin(), v.begin() + long(v.size() / 2), v.end());
  return v[v.size() / 2];
}

TEST(QueueDiscipline, CoDelKeepsTheStandingQueueShortWhereDropTailFillsIt) {
  // 20 Mbit/s, 20 ms RTT, a 300-packet queue (180 ms at this rate), one bulk
  // Cubic flow for 4 s; RTT samples from the second half.
  std::map<std::string, double> standing_ms;
  for (const char* q : {"droptail", "codel", "fqcodel"}) {
    LinkSpec link;
    link.rate_mbps = 20;
    link.rtt_ms = 20;
    link.queue = q;
    link.queue_packets = 300;
    const Observed o = run_bulk(link, {0.0}, 4.0);
    standing_ms[q] = (median_rtt_s(o, 2.0) - 0.020) * 1000;
    EXPECT_GE(goodput_fraction(o, 20e6 * 2, 2.0, 4.0), 0.85) << q;
    EXPECT_NE(o.description.find(q == std::string("droptail") ? "drop-tail" : q == std::string("codel") ? "CoDel" : "FqCoDel"),
              std::string::npos);
  }
  EXPECT_GT(standing_ms["droptail"], 100) << "drop-tail: Cubic fills the queue";
  EXPECT_LT(standing_ms["codel"], 30);
  EXPECT_LT(standing_ms["fqcodel"], 30);
}

TEST(QueueDiscipline, CoDelBehindTheMahimahiGate) {
  const auto trace = traces::load_trace(trace_path("mahimahi/TMobile-LTE-short.down"));
  std::map<std::string, double> standing_ms;
  for (const char* q : {"droptail", "codel", "fqcodel"}) {
    LinkSpec link = mahimahi_link(trace);
    link.queue = q;
    link.queue_packets = 1000;
    const Observed o = run_bulk(link, {0.0}, 4.0);
    standing_ms[q] = (median_rtt_s(o, 2.0) - 0.020) * 1000;
  }
  EXPECT_GT(standing_ms["droptail"], 100);
  EXPECT_LT(standing_ms["codel"], 50);
  EXPECT_LT(standing_ms["fqcodel"], 50);
}

std::string setting(const Observed& o, const std::string& name) {
  for (const auto& [k, v] : o.settings)
    if (k == name) return v;
  return "(missing)";
}

TEST(TcpSettings, AreAppliedAndRecorded) {
  LinkSpec link;
  link.rate_mbps = 50;
  link.rtt_ms = 10;
  link.access_rtt_ms = 8;
  link.mss_bytes = 1000;
  link.initial_cwnd_segments = 4;
  link.delayed_ack_count = 1;
  link.min_rto_ms = 300;
  link.queue = "codel";
  const Observed o = run_bulk(link, {0.0}, 0.5, 200'000);
  // Segments of 1000 B + 52 B of headers reach the queue.
  ASSERT_FALSE(o.arrivals.empty());
  EXPECT_EQ(std::max_element(o.arrivals.begin(), o.arrivals.end(),
                             [](const Packet& a, const Packet& b) { return a.ip_bytes < b.ip_bytes; })
                ->ip_bytes,
            1052u);
  // The first RTT sample: bottleneck 10 ms + access 8 ms.
  ASSERT_FALSE(o.rtt_s.empty());
  EXPECT_NEAR(o.rtt_s.front().second, 0.018, 0.001);
  // Initial window 4: the first flight after the handshake is 4 segments.
  std::vector<int64_t> data_times;
  for (const auto& a : o.arrivals)
    if (a.ip_bytes == 1052) data_times.push_back(a.t_ns);
  ASSERT_GT(data_times.size(), 5u);
  EXPECT_LT(data_times[3] - data_times[0], 1'000'000);   // the first 4 back to back
  EXPECT_GT(data_times[4] - data_times[3], 10'000'000);  // the 5th after an RTT
  EXPECT_EQ(setting(o, "ns3::TcpSocket::InitialCwnd"), "4");
  EXPECT_EQ(setting(o, "ns3::TcpSocket::DelAckCount"), "1");
  EXPECT_EQ(setting(o, "ns3::TcpSocket::SegmentSize"), "1000");
  EXPECT_EQ(setting(o, "tcp.mss_bytes"), "1000");
  EXPECT_NE(setting(o, "ns3::TcpSocketBase::MinRto"), "(missing)");
  EXPECT_NE(setting(o, "ns3::TcpSocket::DelAckTimeout"), "(missing)");
  EXPECT_NE(setting(o, "ns3::TcpL4Protocol::RecoveryType"), "(missing)");
  EXPECT_EQ(setting(o, "queue.discipline"), "codel");
  EXPECT_NE(setting(o, "queue.ns3::CoDelQueueDisc::Target"), "(missing)");
  EXPECT_EQ(setting(o, "queue.ns3::CoDelQueueDisc::MaxSize"), setting(o, "queue.packets") + "p");
  EXPECT_EQ(setting(o, "link.access_rtt_ms"), "8");
}

// ns-3.37 would dereference the null item of a zero-length segment; the
// project's CopyFromSequence (sim/ns3_fixes.h) is the one ns-3 calls, and
// it throws instead.
TEST(Ns3Fixes, ZeroLengthSegmentIsAnErrorNotACrash) {
  ASSERT_TRUE(ns3_fixes_active());
  auto buffer = ns3::CreateObject<ns3::TcpTxBuffer>();
  buffer->SetHeadSequence(ns3::SequenceNumber32(1));
  ASSERT_TRUE(buffer->Add(ns3::Create<ns3::Packet>(1000)));
  // Data there: the library's item, as before.
  ns3::TcpTxItem* item = buffer->CopyFromSequence(500, ns3::SequenceNumber32(1));
  ASSERT_NE(item, nullptr);
  EXPECT_EQ(item->GetSeqSize(), 500u);
  // Nothing at the tail: an error naming the defect.
  try {
    buffer->CopyFromSequence(100, ns3::SequenceNumber32(1001));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("#991"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kvs::sim
