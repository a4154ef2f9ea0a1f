// The project's fixes to ns-3.37's TcpTxBuffer (sim/ns3_fixes.h): ns-3 calls
// them, NextSeg no longer offers a zero-length segment, IsLost answers for the
// segment that holds the sequence number (upstream #990), NextSeg's rules 1
// and 3 stay below the highest SACK (upstream #805), and NextSeg's fast
// path and the indexed scoreboard send exactly the packets ns-3.37's walks
// send (C++17: ns-3 headers).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include <string>
#include <tuple>
#include <vector>

#include "ns3/core-module.h"
#include "ns3/internet-module.h"

#include "sim/ns3_fixes.h"
#include "traces/trace.h"
#include "tests/sim/tcp_transfer.h"

namespace kvs::sim {
namespace {

using testing::run_transfer;
using testing::TransferResult;
using testing::TransferSpec;

using PinFixes = PinNs3TcpFixes;

// The default (fast path and index) with the index checked against the
// sent list after every call.
Ns3TcpFixes verified() {
  Ns3TcpFixes f;
  f.verify_scoreboard = true;
  return f;
}

// A sender buffer with `sent` bytes sent of `total`, a receiver window of
// `rwnd` bytes and 1000-byte segments.
ns3::Ptr<ns3::TcpTxBuffer> buffer_with(uint32_t total, uint32_t sent, const uint32_t* rwnd) {
  auto b = ns3::CreateObject<ns3::TcpTxBuffer>();
  b->SetHeadSequence(ns3::SequenceNumber32(1));
  b->SetSegmentSize(1000);
  b->SetRWndCallback(ns3::MakeBoundCallback(+[](const uint32_t* w) { return *w; }, rwnd));
  EXPECT_TRUE(b->Add(ns3::Create<ns3::Packet>(total)));
  for (uint32_t at = 0; at < sent; at += 1000) b->CopyFromSequence(1000, ns3::SequenceNumber32(1 + at));
  return b;
}

TEST(Ns3Fixes, Ns3CallsTheProjectsNextSegAndCopyFromSequence) {
  ASSERT_TRUE(ns3_fixes_active());
  reset_ns3_fix_counters();
  LinkSpec link;
  link.rate_mbps = 100;
  link.queue_packets = 5000;  // no drop in slow start: no recovery at all
  TransferSpec spec;
  spec.total_bytes = 2'000'000;
  const TransferResult r = run_transfer(link, spec);
  ASSERT_TRUE(r.finished);
  const Ns3FixCounters n = ns3_fix_counters();
  // One NextSeg and one CopyFromSequence per data segment at least.
  EXPECT_GE(n.next_seg_calls, r.data_segments);
  EXPECT_GE(n.copy_from_sequence_calls, r.data_segments);
  ASSERT_EQ(r.retransmissions, 0u);
  EXPECT_EQ(n.next_seg_fast, n.next_seg_calls);  // no loss: never a walk
}

// With loss, ns-3 calls every other replaced member too, and the index
// answers there; DupAck's calls of IsLost are recognised (upstream #989).
TEST(Ns3Fixes, Ns3CallsEveryReplacedMemberInRecovery) {
  LinkSpec link;
  link.rate_mbps = 50;
  link.rtt_ms = 30;
  link.loss_rate = 0.01;
  TransferSpec spec;
  spec.total_bytes = 3'000'000;
  PinFixes pin(verified());
  reset_ns3_fix_counters();
  const TransferResult r = run_transfer(link, spec);
  ASSERT_TRUE(r.finished);
  ASSERT_GT(r.retransmissions, 0u);
  const Ns3FixCounters n = ns3_fix_counters();
  EXPECT_GT(n.update_calls, 0u);
  EXPECT_EQ(n.update_indexed, n.update_calls);
  EXPECT_GT(n.discard_calls, 0u);
  EXPECT_GT(n.next_seg_indexed, 0u);
  EXPECT_GE(n.retransmissions_indexed, r.retransmissions);
  EXPECT_GT(n.retransmitted_acked_calls, 0u);
  EXPECT_GT(n.is_lost_calls, 0u);
  EXPECT_GT(n.is_lost_from_dupack, 0u);
  EXPECT_LT(n.is_lost_from_dupack, n.is_lost_calls);  // EnterRecovery's calls are not DupAck's
  // The receiver's Add: once per data segment that arrived (1 % were dropped).
  EXPECT_GT(n.rx_add_calls, r.data_segments * 9 / 10);
  EXPECT_LE(n.rx_add_calls, r.data_segments);
  EXPECT_EQ(n.scoreboard_mismatches, 0u);
}

TEST(Ns3Fixes, NoZeroLengthSegmentWhenTheWindowIsExactlyFull) {
  uint32_t rwnd = 3000;
  const auto b = buffer_with(10'000, 3000, &rwnd);
  for (bool fast : {true, false}) {
    SCOPED_TRACE(fast ? "fast path" : "walk");
    ns3::SequenceNumber32 seq, high;
    Ns3TcpFixes with = fast ? Ns3TcpFixes{} : Ns3TcpFixes::walk();
    Ns3TcpFixes without = with;
    without.zero_length_segment = false;
    {
      PinFixes pin(without);
      // ns-3.37 as shipped: new data of 0 bytes (seqHigh == seq).
      ASSERT_TRUE(b->NextSeg(&seq, &high, false));
      EXPECT_EQ(seq.GetValue(), 3001u);
      EXPECT_EQ(high, seq);
    }
    PinFixes pin(with);
    reset_ns3_fix_counters();
    EXPECT_FALSE(b->NextSeg(&seq, &high, false));
    EXPECT_EQ(ns3_fix_counters().zero_length_refused, 1u);
    rwnd = 5000;  // room again: the next 1000 bytes
    ASSERT_TRUE(b->NextSeg(&seq, &high, false));
    EXPECT_EQ(seq.GetValue(), 3001u);
    EXPECT_EQ(high.GetValue(), 4001u);
    rwnd = 2000;  // below what is in flight: nothing, as before
    EXPECT_FALSE(b->NextSeg(&seq, &high, false));
    rwnd = 3000;
  }
}

TEST(Ns3Fixes, FastPathOnlyWhereTheWalkCannotFindALostSegment) {
  uint32_t rwnd = 100'000;
  const auto b = buffer_with(10'000, 5000, &rwnd);
  PinFixes pin({});
  reset_ns3_fix_counters();
  ns3::SequenceNumber32 seq, high;
  ASSERT_TRUE(b->NextSeg(&seq, &high, false));
  EXPECT_EQ(ns3_fix_counters().next_seg_fast, 1u);
  // In recovery the index answers (rule 3 may apply).
  ASSERT_TRUE(b->NextSeg(&seq, &high, true));
  EXPECT_EQ(ns3_fix_counters().next_seg_fast, 1u);
  EXPECT_EQ(ns3_fix_counters().next_seg_indexed, 1u);
  // A segment marked lost: rule 1 returns it, through the walk.
  b->MarkHeadAsLost();
  ASSERT_GT(b->GetLost(), 0u);
  ASSERT_TRUE(b->NextSeg(&seq, &high, false));
  EXPECT_EQ(seq.GetValue(), 1u);
  EXPECT_EQ(ns3_fix_counters().next_seg_fast, 1u);
}

// Upstream #987: entering recovery, ns-3.37 retransmits whatever
// DoRetransmit's NextSeg returns, which need not be the head (HighACK + 1);
// with the fix the first retransmission after every entry into recovery is
// the head. From the transfer's trace: the head at the entry, and the
// sequence number of the next retransmission.
TEST(Ns3Fixes, EnteringRecoveryRetransmitsTheHead) {
  LinkSpec link;
  link.rate_mbps = 50;
  link.rtt_ms = 30;
  link.loss_rate = 0.02;  // at 0.3 % and 1 % the two agree in these runs
  const auto entries_not_at_head = [&](bool fix, Ns3FixCounters* n, uint64_t* tx_hash) {
    Ns3TcpFixes f;
    f.recovery_retransmits_head = fix;
    PinFixes pin(f);
    TransferSpec spec;
    spec.total_bytes = 3'000'000;
    spec.trace = std::tmpfile();
    reset_ns3_fix_counters();
    const TransferResult r = run_transfer(link, spec);
    *n = ns3_fix_counters();
    *tx_hash = r.tx_hash;
    EXPECT_TRUE(r.finished);
    std::rewind(spec.trace);
    char line[512];
    int entries = 0, wrong = 0;
    double head_at_entry = -1;
    while (std::fgets(line, sizeof line, spec.trace)) {
      char event[32] = {}, state[32] = {};
      double t = 0, value = 0;
      unsigned in_flight = 0, lost = 0, sacked = 0, retrans = 0, head = 0;
      if (std::sscanf(line, "%lf,%31[^,],%lf,%31[^,],%u,%u,%u,%u,%u", &t, event, &value, state, &in_flight, &lost,
                      &sacked, &retrans, &head) != 9)
        continue;
      if (std::string(event) == "state" && std::string(state) == "RECOVERY") {
        ++entries;
        head_at_entry = head;
      } else if (std::string(event) == "retransmit" && head_at_entry >= 0) {
        if (std::abs(value - head_at_entry) > 50) ++wrong;  // the row prints 6 significant digits
        head_at_entry = -1;
      }
    }
    std::fclose(spec.trace);
    EXPECT_GT(entries, 10);
    return wrong;
  };
  Ns3FixCounters as_shipped, fixed;
  uint64_t as_shipped_hash = 0, fixed_hash = 0;
  entries_not_at_head(false, &as_shipped, &as_shipped_hash);
  EXPECT_EQ(entries_not_at_head(true, &fixed, &fixed_hash), 0);
  EXPECT_GT(fixed.recovery_head_retransmits, 10u);
  EXPECT_EQ(as_shipped.recovery_head_retransmits, 0u);
  // Entries where ns-3.37's NextSeg would not have returned the head (rule 1
  // skips a head already retransmitted), and the runs part there.
  EXPECT_GT(fixed.recovery_head_differs, 0u);
  EXPECT_NE(fixed_hash, as_shipped_hash);
}

// A buffer of ten 1000-byte segments (sequence 1 to 10001), all sent, with
// SACK blocks over segments 3 and 5-7: UpdateLostCount marks 0-2 and 4 lost.
ns3::Ptr<ns3::TcpTxBuffer> scoreboard_with_holes(const uint32_t* rwnd) {
  const auto b = buffer_with(10'000, 10'000, rwnd);
  b->SetDupAckThresh(3);
  ns3::TcpOptionSack::SackList sacks;
  sacks.emplace_back(ns3::SequenceNumber32(3001), ns3::SequenceNumber32(4001));
  sacks.emplace_back(ns3::SequenceNumber32(5001), ns3::SequenceNumber32(8001));
  EXPECT_EQ(b->Update(sacks), 4000u);
  EXPECT_EQ(b->GetSacked(), 4000u);
  EXPECT_EQ(b->GetLost(), 4000u);
  return b;
}

// Upstream #990: ns-3.37's IsLost(seq) answers from the first segment that
// starts at or after seq and is lost or SACKed, not from the segment that
// holds seq. Both answers below are wrong in ns-3.37.
TEST(Ns3Fixes, IsLostAnswersForTheSegmentThatHoldsTheSequenceNumber) {
  uint32_t rwnd = 100'000;
  for (bool indexed : {true, false}) {
    SCOPED_TRACE(indexed ? "index" : "walk");
    Ns3TcpFixes fixed = indexed ? verified() : Ns3TcpFixes::walk();
    Ns3TcpFixes as_shipped = fixed;
    as_shipped.is_lost = false;
    reset_ns3_fix_counters();
    {
      PinFixes pin(as_shipped);
      const auto b = scoreboard_with_holes(&rwnd);
      EXPECT_FALSE(b->IsLost(ns3::SequenceNumber32(2500)));  // segment 2 is lost; ns-3.37 looks at 3 (SACKed)
      EXPECT_TRUE(b->IsLost(ns3::SequenceNumber32(3500)));   // segment 3 is SACKed; ns-3.37 looks at 4 (lost)
    }
    PinFixes pin(fixed);
    const auto b = scoreboard_with_holes(&rwnd);
    EXPECT_TRUE(b->IsLost(ns3::SequenceNumber32(2500)));
    EXPECT_FALSE(b->IsLost(ns3::SequenceNumber32(3500)));
    EXPECT_TRUE(b->IsLost(ns3::SequenceNumber32(1)));
    EXPECT_TRUE(b->IsLost(ns3::SequenceNumber32(4001)));
    EXPECT_FALSE(b->IsLost(ns3::SequenceNumber32(6001)));  // SACKed
    EXPECT_FALSE(b->IsLost(ns3::SequenceNumber32(7001)));  // at the highest SACK: never lost
    EXPECT_FALSE(b->IsLost(ns3::SequenceNumber32(9001)));
    EXPECT_EQ(ns3_fix_counters().is_lost_calls, 9u);
    EXPECT_EQ(ns3_fix_counters().is_lost_from_dupack, 0u);  // the test is not TcpSocketBase::DupAck
    EXPECT_EQ(ns3_fix_counters().scoreboard_mismatches, 0u);
  }
}

// The index's NextSeg, retransmissions and partial ACKs on a scoreboard with
// holes: the same answers as ns-3.37's walks, step by step.
TEST(Ns3Fixes, IndexedScoreboardAnswersAsTheWalk) {
  uint32_t rwnd = 100'000;
  struct Step {
    uint32_t seq, high;
    bool found;
  };
  const auto run = [&](const Ns3TcpFixes& fixes) {
    PinFixes pin(fixes);
    const auto b = buffer_with(20'000, 10'000, &rwnd);
    b->SetDupAckThresh(3);
    ns3::TcpOptionSack::SackList sacks;
    sacks.emplace_back(ns3::SequenceNumber32(3001), ns3::SequenceNumber32(4001));
    sacks.emplace_back(ns3::SequenceNumber32(5001), ns3::SequenceNumber32(8001));
    b->Update(sacks);
    std::vector<Step> steps;
    std::vector<bool> acked;
    for (int k = 0; k < 8; ++k) {
      ns3::SequenceNumber32 seq, high;
      const bool found = b->NextSeg(&seq, &high, true);
      steps.push_back({seq.GetValue(), high.GetValue(), found});
      if (!found) break;
      b->CopyFromSequence(uint32_t(high - seq), seq);  // send it (a retransmission or new data)
      if (k == 2) {
        // A partial ACK of the first two segments, then a SACK of segment 8.
        acked.push_back(b->IsRetransmittedDataAcked(ns3::SequenceNumber32(2001)));
        b->DiscardUpTo(ns3::SequenceNumber32(2001));
        ns3::TcpOptionSack::SackList more;
        more.emplace_back(ns3::SequenceNumber32(8001), ns3::SequenceNumber32(9001));
        b->Update(more);
      }
      if (k == 5) {
        b->DiscardUpTo(ns3::SequenceNumber32(2501));  // half a segment: ns-3 cuts the head
        acked.push_back(b->IsRetransmittedDataAcked(ns3::SequenceNumber32(4001)));
      }
    }
    acked.push_back(b->IsRetransmittedDataAcked(ns3::SequenceNumber32(5001)));
    return std::make_tuple(steps, acked, b->GetLost(), b->GetSacked(), b->GetRetransmitsCount(),
                           b->BytesInFlight());
  };
  for (bool sack_rule : {true, false}) {
    SCOPED_TRACE(sack_rule ? "with #805 (the project's walk)" : "without #805 (ns-3.37's walk)");
    Ns3TcpFixes walk_fixes = Ns3TcpFixes::walk(), index_fixes = verified();
    walk_fixes.next_seg_sack_rule = index_fixes.next_seg_sack_rule = sack_rule;
    reset_ns3_fix_counters();
    const auto walk = run(walk_fixes);
    const Ns3FixCounters walked = ns3_fix_counters();
    EXPECT_EQ(walked.next_seg_indexed + walked.update_indexed + walked.retransmissions_indexed, 0u);
    reset_ns3_fix_counters();
    const auto indexed = run(index_fixes);
    const Ns3FixCounters n = ns3_fix_counters();
    const auto& steps = std::get<0>(indexed);
    ASSERT_EQ(steps.size(), std::get<0>(walk).size());
    for (size_t k = 0; k < steps.size(); ++k) {
      SCOPED_TRACE(k);
      EXPECT_EQ(steps[k].seq, std::get<0>(walk)[k].seq);
      EXPECT_EQ(steps[k].high, std::get<0>(walk)[k].high);
      EXPECT_EQ(steps[k].found, std::get<0>(walk)[k].found);
    }
    EXPECT_EQ(steps[0].seq, 1u);  // rule 1: the lost head first
    EXPECT_EQ(std::get<1>(indexed), std::get<1>(walk));
    EXPECT_EQ(std::get<2>(indexed), std::get<2>(walk));
    EXPECT_EQ(std::get<3>(indexed), std::get<3>(walk));
    EXPECT_EQ(std::get<4>(indexed), std::get<4>(walk));
    EXPECT_EQ(std::get<5>(indexed), std::get<5>(walk));
    EXPECT_GT(n.next_seg_indexed, 0u);
    EXPECT_GT(n.retransmissions_indexed, 0u);
    EXPECT_EQ(n.update_indexed, 2u);
    EXPECT_EQ(n.scoreboard_mismatches, 0u);
  }
}

// Upstream #805 (RFC 6675 NextSeg, condition 1.b, which rule 3 shares): once
// a SACK was seen, rules 1 and 3 return only segments below the highest
// SACKed one. ns-3.37 also returns segments above it: after a timeout that
// kept the SACK information (ns-3 marks every unSACKed segment lost), and in
// recovery when nothing is marked lost and no new data is left (rule 3).
TEST(Ns3Fixes, NextSegRetransmitsOnlyBelowTheHighestSack) {
  uint32_t rwnd = 100'000;
  struct Modes {
    const char* name;
    Ns3TcpFixes fixes;
  };
  for (const Modes& m : {Modes{"index", verified()}, Modes{"walk", Ns3TcpFixes::walk()}}) {
    for (bool sack_rule : {false, true}) {
      SCOPED_TRACE(std::string(m.name) + (sack_rule ? ", with #805" : ", ns-3.37's rules"));
      Ns3TcpFixes fixes = m.fixes;
      fixes.next_seg_sack_rule = sack_rule;
      PinFixes pin(fixes);
      reset_ns3_fix_counters();
      // Rule 1 after a timeout: 20 segments, 10 sent, segment 3 SACKed (too
      // few SACKs to mark anything lost), then every unSACKed one marked lost.
      {
        const auto b = buffer_with(20'000, 10'000, &rwnd);
        b->SetDupAckThresh(3);
        ns3::TcpOptionSack::SackList sacks;
        sacks.emplace_back(ns3::SequenceNumber32(3001), ns3::SequenceNumber32(4001));
        ASSERT_EQ(b->Update(sacks), 1000u);
        ASSERT_EQ(b->GetLost(), 0u);
        b->SetSentListLost(false);  // TcpSocketBase::ReTxTimeout with SACK
        ASSERT_EQ(b->GetLost(), 9000u);
        std::vector<uint32_t> sent;
        for (int k = 0; k < 4; ++k) {
          ns3::SequenceNumber32 seq, high;
          ASSERT_TRUE(b->NextSeg(&seq, &high, false));
          sent.push_back(seq.GetValue());
          b->CopyFromSequence(uint32_t(high - seq), seq);
        }
        // The three lost segments below the SACK, then segment 4 (lost, above
        // the highest SACK) from ns-3.37, new data with #805.
        EXPECT_EQ(sent, (std::vector<uint32_t>{1, 1001, 2001, sack_rule ? 10'001u : 4001u}));
      }
      // Rule 3 in recovery: all 10 segments sent, 3 and 5 SACKed, none lost,
      // no new data. ns-3.37 goes on past the highest SACK (segment 6, most
      // likely still in flight); with #805 nothing is left after segment 4.
      {
        const auto b = buffer_with(10'000, 10'000, &rwnd);
        b->SetDupAckThresh(3);
        ns3::TcpOptionSack::SackList sacks;
        sacks.emplace_back(ns3::SequenceNumber32(3001), ns3::SequenceNumber32(4001));
        sacks.emplace_back(ns3::SequenceNumber32(5001), ns3::SequenceNumber32(6001));
        ASSERT_EQ(b->Update(sacks), 2000u);
        ASSERT_EQ(b->GetLost(), 0u);
        std::vector<uint32_t> sent;
        for (int k = 0; k < 5; ++k) {
          ns3::SequenceNumber32 seq, high;
          if (!b->NextSeg(&seq, &high, true)) break;
          sent.push_back(seq.GetValue());
          b->CopyFromSequence(uint32_t(high - seq), seq);
        }
        if (sack_rule)
          EXPECT_EQ(sent, (std::vector<uint32_t>{1, 1001, 2001, 4001}));
        else
          EXPECT_EQ(sent, (std::vector<uint32_t>{1, 1001, 2001, 4001, 6001}));
      }
      EXPECT_EQ(ns3_fix_counters().next_seg_above_highest_sack, sack_rule ? 0u : 2u);
      EXPECT_EQ(ns3_fix_counters().scoreboard_mismatches, 0u);
    }
  }
}

// Every data segment at the same time with the same sequence number and size
// with ns-3.37's walks, NextSeg's fast path alone, and the indexed scoreboard
// (checked against the sent list after every call): constant and varying
// links, random loss, SACK on and off, bulk and chunked transfers, and a slow
// start that overflows its queue (a large window in recovery).
TEST(Ns3Fixes, FastPathAndIndexSendTheSamePacketsAsTheWalk) {
  traces::Trace steps;
  steps.name = "steps";
  steps.segments = {{0.0, 80e6}, {0.3, 20e6}, {0.6, 50e6}};
  steps.duration_s = 0.9;
  struct Case {
    const char* name;
    double loss;
    bool sack, varying;
    uint64_t chunk_bytes;
    double rate_mbps = 50;
    uint32_t queue_packets = 0;
    bool sack_rule = true;  // false: ns-3.37's NextSeg rules (without #805) in all three
  };
  const Case cases[] = {
      {"clean", 0, true, false, 0},
      {"loss 1%", 0.01, true, false, 0},
      {"loss 1%, no SACK", 0.01, false, false, 0},
      {"loss 0.5%, chunked", 0.005, true, false, 500'000},
      {"varying, loss 0.5%", 0.005, true, true, 0},
      {"varying, no SACK, chunked", 0.005, false, true, 400'000},
      {"overflow, 1 Gbit/s, 60-packet queue", 0, true, false, 0, 1000, 60},
      {"overflow and loss 0.2%, no SACK", 0.002, false, false, 0, 1000, 60},
      {"loss 1%, without #805", 0.01, true, false, 0, 50, 0, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    LinkSpec link;
    link.rate_mbps = c.rate_mbps;
    link.rtt_ms = 30;
    link.loss_rate = c.loss;
    link.queue_packets = c.queue_packets;
    if (c.varying) link.trace = steps;
    TransferSpec spec;
    spec.total_bytes = c.rate_mbps > 100 ? 12'000'000 : 3'000'000;
    spec.chunk_bytes = c.chunk_bytes;
    spec.sack = c.sack;
    TransferResult walk, fast, indexed, checked;
    Ns3FixCounters n;
    const auto with_rule = [&](Ns3TcpFixes f) {
      f.next_seg_sack_rule = c.sack_rule;
      return f;
    };
    {
      PinFixes pin(with_rule(Ns3TcpFixes::walk()));
      walk = run_transfer(link, spec);
    }
    {
      PinFixes pin(with_rule(Ns3TcpFixes{}));  // as the simulator runs it (a checked run rebuilds a wrong index)
      indexed = run_transfer(link, spec);
    }
    {
      PinFixes pin(with_rule(Ns3TcpFixes::fast_path_only()));
      fast = run_transfer(link, spec);
    }
    {
      PinFixes pin(with_rule(verified()));
      reset_ns3_fix_counters();
      checked = run_transfer(link, spec);
      n = ns3_fix_counters();
    }
    ASSERT_TRUE(walk.finished);
    for (const TransferResult* r : {&fast, &indexed, &checked}) {
      SCOPED_TRACE(r == &fast ? "fast path" : r == &indexed ? "index" : "index, checked");
      EXPECT_EQ(r->tx_hash, walk.tx_hash);
      EXPECT_EQ(r->data_segments, walk.data_segments);
      EXPECT_EQ(r->retransmissions, walk.retransmissions);
      EXPECT_EQ(r->timeouts, walk.timeouts);
      EXPECT_EQ(r->completion_s, walk.completion_s);
      EXPECT_EQ(r->chunk_done_s, walk.chunk_done_s);
    }
    EXPECT_GT(n.next_seg_fast, 0u);
    EXPECT_EQ(n.scoreboard_mismatches, 0u);
    if (c.loss > 0 || c.queue_packets > 0) {
      EXPECT_GT(walk.retransmissions, 0u);               // recovery happened...
      EXPECT_GT(n.next_seg_indexed, 0u);                 // ...the index answered there
      EXPECT_GT(n.retransmissions_indexed, 0u);
      if (c.sack) {
        EXPECT_GT(n.update_indexed, 0u);
      }
    }
  }
}

// Upstream #805 in whole transfers: ns-3.37's rules send segments above the
// highest SACK (counted by next_seg_above_highest_sack), the fix never does,
// and the runs part there; both finish.
TEST(Ns3Fixes, SackRuleChangesLossyTransfers) {
  LinkSpec link;
  link.rate_mbps = 50;
  link.rtt_ms = 30;
  link.loss_rate = 0.01;
  TransferSpec spec;
  spec.total_bytes = 3'000'000;
  spec.chunk_bytes = 500'000;  // rule 3 at the end of every chunk in recovery
  TransferResult with, without;
  Ns3FixCounters n_with, n_without;
  for (bool sack_rule : {true, false}) {
    Ns3TcpFixes f = verified();
    f.next_seg_sack_rule = sack_rule;
    PinFixes pin(f);
    reset_ns3_fix_counters();
    (sack_rule ? with : without) = run_transfer(link, spec);
    (sack_rule ? n_with : n_without) = ns3_fix_counters();
  }
  EXPECT_TRUE(with.finished);
  EXPECT_TRUE(without.finished);
  EXPECT_GT(n_without.next_seg_above_highest_sack, 0u);
  EXPECT_EQ(n_with.next_seg_above_highest_sack, 0u);
  EXPECT_NE(with.tx_hash, without.tx_hash);
  EXPECT_EQ(n_with.scoreboard_mismatches + n_without.scoreboard_mismatches, 0u);
  std::printf("#805: %llu segments at or above the highest SACK without it; retransmissions %llu with it, "
              "%llu without; completion %.3f s with, %.3f s without\n",
              (unsigned long long)n_without.next_seg_above_highest_sack, (unsigned long long)with.retransmissions,
              (unsigned long long)without.retransmissions, with.completion_s, without.completion_s);
}

}  // namespace
}  // namespace kvs::sim

