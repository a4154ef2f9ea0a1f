#include "sim/ns3_fixes.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "ns3/simulator.h"
#include "ns3/tcp-tx-buffer.h"

#include "base/error.h"

namespace {

constexpr const char* kCopyFromSequence = "_ZN3ns311TcpTxBuffer16CopyFromSequenceEjRKNS_14SequenceNumberIjiEE";
constexpr const char* kNextSeg = "_ZNK3ns311TcpTxBuffer7NextSegEPNS_14SequenceNumberIjiEES3_b";

using CopyFn = ns3::TcpTxItem* (*)(ns3::TcpTxBuffer*, uint32_t, const ns3::SequenceNumber32&);
using NextSegFn = bool (*)(const ns3::TcpTxBuffer*, ns3::SequenceNumber32*, ns3::SequenceNumber32*, bool);

// The library's definitions, found past this program's.
template <typename Fn>
Fn library_function(const char* symbol) {
  return reinterpret_cast<Fn>(dlsym(RTLD_NEXT, symbol));
}
CopyFn library_copy_from_sequence() {
  static const CopyFn fn = library_function<CopyFn>(kCopyFromSequence);
  return fn;
}
NextSegFn library_next_seg() {
  static const NextSegFn fn = library_function<NextSegFn>(kNextSeg);
  return fn;
}

// Read access to TcpTxBuffer's private members, through the rule that
// explicit instantiations may name private members (no layout assumptions:
// the compiler takes the offsets from Debian's header).
template <typename Tag, typename Tag::type kMember>
struct Expose {
  friend typename Tag::type member_of(Tag) { return kMember; }
};
struct SentSize {
  using type = uint32_t ns3::TcpTxBuffer::*;
  friend type member_of(SentSize);
};
struct SegmentSize {
  using type = uint32_t ns3::TcpTxBuffer::*;
  friend type member_of(SegmentSize);
};
struct RWndCallback {
  using type = ns3::Callback<uint32_t> ns3::TcpTxBuffer::*;
  friend type member_of(RWndCallback);
};
template struct Expose<SentSize, &ns3::TcpTxBuffer::m_sentSize>;
template struct Expose<SegmentSize, &ns3::TcpTxBuffer::m_segmentSize>;
template struct Expose<RWndCallback, &ns3::TcpTxBuffer::m_rWndCallback>;

kvs::sim::Ns3TcpFixes g_fixes;        // set per run by the simulator
std::optional<kvs::sim::Ns3TcpFixes> g_pinned;
kvs::sim::Ns3FixCounters g_counters;  // ns-3 runs one simulation per process at a time

}  // namespace

namespace ns3 {

bool TcpTxBuffer::NextSeg(SequenceNumber32* seq, SequenceNumber32* seqHigh, bool isRecovery) const {
  ++g_counters.next_seg_calls;
  const uint32_t sent = this->*member_of(SentSize{});
  const SequenceNumber32 high_data = HeadSequence() + sent;  // HighData + 1
  if (g_fixes.next_seg_fast_path && !isRecovery && GetLost() == 0) {
    // Rules 1 and 3 cannot fire: rule 2, as ns-3.37 (or upstream with #991) writes it.
    ++g_counters.next_seg_fast;
    if (SizeFromSequence(high_data) == 0) return false;
    const uint32_t rwnd = (this->*member_of(RWndCallback{}))();
    if (sent > rwnd || (g_fixes.zero_length_segment && sent == rwnd)) {
      if (sent == rwnd) ++g_counters.zero_length_refused;
      return false;
    }
    *seq = high_data;
    *seqHigh = *seq + std::min<uint32_t>(this->*member_of(SegmentSize{}), rwnd - sent);
    return true;
  }
  const NextSegFn original = library_next_seg();
  if (!original) throw kvs::Error("ns-3: TcpTxBuffer::NextSeg not found in libns3-internet");
  const bool found = original(this, seq, seqHigh, isRecovery);
  // Rule 2 is the only one that returns HighData + 1 (rules 1 and 3 return
  // sent segments, below it): refuse it when the window is exactly full.
  if (found && g_fixes.zero_length_segment && *seq == high_data && sent >= (this->*member_of(RWndCallback{}))()) {
    ++g_counters.zero_length_refused;
    return false;
  }
  return found;
}

TcpTxItem* TcpTxBuffer::CopyFromSequence(uint32_t numBytes, const SequenceNumber32& seq) {
  ++g_counters.copy_from_sequence_calls;
  const CopyFn original = library_copy_from_sequence();
  if (!original) throw kvs::Error("ns-3: TcpTxBuffer::CopyFromSequence not found in libns3-internet");
  TcpTxItem* item = original(this, numBytes, seq);
  if (!item)
    throw kvs::Error(fmt::format(
        "ns-3.37 defect at t = {:.6f} s: TCP asked to send {} bytes at sequence {} where its buffer holds none "
        "(a zero-length segment, upstream #991; ns-3 would crash here). This run has no valid result: try "
        "another tcp variant or mtu_bytes (docs/simulator.md)",
        Simulator::Now().GetSeconds(), numBytes, seq.GetValue()));
  return item;
}

}  // namespace ns3

namespace kvs::sim {

void set_ns3_tcp_fixes(const Ns3TcpFixes& fixes) { g_fixes = g_pinned ? *g_pinned : fixes; }
void pin_ns3_tcp_fixes(std::optional<Ns3TcpFixes> fixes) {
  g_pinned = fixes;
  if (fixes) g_fixes = *fixes;
}
Ns3TcpFixes ns3_tcp_fixes() { return g_fixes; }
Ns3FixCounters ns3_fix_counters() { return g_counters; }
void reset_ns3_fix_counters() { g_counters = {}; }

namespace {

template <typename MemberFn>
bool resolves_to_ours(const char* symbol, MemberFn ours) {
  void* resolved = dlsym(RTLD_DEFAULT, symbol);
  void* ours_ptr = nullptr;
  static_assert(sizeof(ours) >= sizeof(void*));
  std::memcpy(&ours_ptr, &ours, sizeof(void*));
  return resolved != nullptr && resolved == ours_ptr;
}

}  // namespace

bool ns3_fixes_active() {
  static const bool active = resolves_to_ours(kCopyFromSequence, &ns3::TcpTxBuffer::CopyFromSequence) &&
                             resolves_to_ours(kNextSeg, &ns3::TcpTxBuffer::NextSeg) &&
                             library_copy_from_sequence() != nullptr && library_next_seg() != nullptr;
  return active;
}

}  // namespace kvs::sim
