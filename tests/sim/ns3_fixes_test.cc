// The project's fixes to ns-3.37's TcpTxBuffer (sim/ns3_fixes.h): ns-3 calls
// them, NextSeg no longer offers a zero-length segment, and its fast path
// sends exactly the packets the scoreboard walk sends (C++17: ns-3 headers).
#include <gtest/gtest.h>

#include <string>
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

TEST(Ns3Fixes, NoZeroLengthSegmentWhenTheWindowIsExactlyFull) {
  uint32_t rwnd = 3000;
  const auto b = buffer_with(10'000, 3000, &rwnd);
  for (bool fast : {true, false}) {
    SCOPED_TRACE(fast ? "fast path" : "walk");
    ns3::SequenceNumber32 seq, high;
    {
      PinFixes pin({/*zero_length_segment=*/false, fast});
      // ns-3.37 as shipped: new data of 0 bytes (seqHigh == seq).
      ASSERT_TRUE(b->NextSeg(&seq, &high, false));
      EXPECT_EQ(seq.GetValue(), 3001u);
      EXPECT_EQ(high, seq);
    }
    PinFixes pin({/*zero_length_segment=*/true, fast});
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
  // In recovery the walk runs (rule 3 may apply).
  ASSERT_TRUE(b->NextSeg(&seq, &high, true));
  EXPECT_EQ(ns3_fix_counters().next_seg_fast, 1u);
  // A segment marked lost: rule 1 returns it, through the walk.
  b->MarkHeadAsLost();
  ASSERT_GT(b->GetLost(), 0u);
  ASSERT_TRUE(b->NextSeg(&seq, &high, false));
  EXPECT_EQ(seq.GetValue(), 1u);
  EXPECT_EQ(ns3_fix_counters().next_seg_fast, 1u);
}

// Every data segment at the same time with the same sequence number and size,
// with and without the fast path: constant and varying links, random loss,
// SACK on and off, bulk and chunked transfers.
TEST(Ns3Fixes, FastPathSendsTheSamePacketsAsTheWalk) {
  traces::Trace steps;
  steps.name = "steps";
  steps.segments = {{0.0, 80e6}, {0.3, 20e6}, {0.6, 50e6}};
  steps.duration_s = 0.9;
  struct Case {
    const char* name;
    double loss;
    bool sack, varying;
    uint64_t chunk_bytes;
  };
  const Case cases[] = {
      {"clean", 0, true, false, 0},          {"loss 1%", 0.01, true, false, 0},
      {"loss 1%, no SACK", 0.01, false, false, 0}, {"loss 0.5%, chunked", 0.005, true, false, 500'000},
      {"varying, loss 0.5%", 0.005, true, true, 0}, {"varying, no SACK, chunked", 0.005, false, true, 400'000},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    LinkSpec link;
    link.rate_mbps = 50;
    link.rtt_ms = 30;
    link.loss_rate = c.loss;
    if (c.varying) link.trace = steps;
    TransferSpec spec;
    spec.total_bytes = 3'000'000;
    spec.chunk_bytes = c.chunk_bytes;
    spec.sack = c.sack;
    TransferResult walk, fast;
    Ns3FixCounters n;
    {
      PinFixes pin({true, false});
      walk = run_transfer(link, spec);
    }
    {
      PinFixes pin({true, true});
      reset_ns3_fix_counters();
      fast = run_transfer(link, spec);
      n = ns3_fix_counters();
    }
    ASSERT_TRUE(walk.finished);
    EXPECT_EQ(fast.tx_hash, walk.tx_hash);
    EXPECT_EQ(fast.data_segments, walk.data_segments);
    EXPECT_EQ(fast.retransmissions, walk.retransmissions);
    EXPECT_EQ(fast.completion_s, walk.completion_s);
    EXPECT_EQ(fast.chunk_done_s, walk.chunk_done_s);
    EXPECT_GT(n.next_seg_fast, 0u);
    if (c.loss > 0) {
      EXPECT_GT(walk.retransmissions, 0u);           // recovery happened...
      EXPECT_LT(n.next_seg_fast, n.next_seg_calls);  // ...and the walk ran there
    }
  }
}

}  // namespace
}  // namespace kvs::sim
