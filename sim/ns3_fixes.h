// The project's fixes to ns-3.37's TCP sender buffer, applied without
// rebuilding ns-3 (C++17; internal to sim/).
//
// Debian's libns3-internet.so.37 calls these public members of TcpTxBuffer
// through its PLT (objdump of the library: TcpSocketBase calls them via
// `...@plt`), so definitions of them in this program replace the library's:
// NextSeg, CopyFromSequence, Update, DiscardUpTo, IsRetransmittedDataAcked,
// IsLost, SetSentListLost, MarkHeadAsLost, ResetRenoSack, and the
// receiver's TcpRxBuffer::Add. Where a setting below is off they call the
// library's own (found with dlsym(RTLD_NEXT)).
// ns-3's private helpers (UpdateLostCount, GetTransmittedSegment,
// GetPacketFromList, ...) are called directly inside the library and cannot
// be replaced; the project's Update and CopyFromSequence do their work
// themselves (GetPacketFromList and GetNewSegment are still ns-3's).
// ns3_fixes_active() says whether ns-3 really resolves to them, and the call
// counters prove it per run.
//
// - Zero-length segments (upstream #991, fixed in ns-3 after 3.37):
//   NextSeg offers new data when the bytes in flight equal the receiver's
//   window (`m_sentSize <= rWnd` where upstream now has `<`); the sender then
//   asks CopyFromSequence for 0 bytes and dereferences the null it returns.
//   NextSeg now says "nothing to send" there, as upstream does.
//   CopyFromSequence still turns a null into a kvs::Error naming the defect.
// - NextSeg's fast path: when nothing is marked lost (GetLost() == 0) and the
//   socket is not in recovery, RFC 6675 rules 1 and 3 cannot fire; rule 2 is
//   evaluated at once instead of walking the sent list.
// - The indexed scoreboard: ns-3.37 walks the whole sent list from its head
//   for every SACK block of every ACK (Update), again to mark losses
//   (UpdateLostCount), for every segment sent in recovery (NextSeg), for every
//   retransmission (GetTransmittedSegment, GetPacketFromList) and for every
//   partial ACK (IsRetransmittedDataAcked): O(window) per packet, 80 % of the
//   CPU once a 10 Gbit/s slow start overflows its queue. The project keeps,
//   per buffer, an array of the sent list's items in sequence order (binary
//   search by sequence number), three lower bounds below which no item can
//   be a rule-1 or rule-3 candidate or still unmarked for UpdateLostCount,
//   and the SACK blocks the last Update applied (receivers repeat them).
//   The receiver's TcpRxBuffer::Add walked its map of out-of-order segments
//   from the start for every segment received; it now starts at the first
//   segment that can overlap (a map lookup).
//   Same decisions in the same order: tested packet for packet and event for
//   event against the walks, and with `verify_scoreboard` against the list
//   after every call (tests/sim/ns3_fixes_test.cc).
//   Where the state lives: it is an ns3::Object aggregated to the
//   TcpTxBuffer it describes (ns-3's own mechanism for per-object extensions),
//   so the buffer owns it and frees it; no table of buffers. It is rebuilt
//   from the list if the list changed behind it (a cheap check per call).
// - TcpTxBuffer::IsLost (upstream #990): ns-3.37 answers from the first
//   segment that starts at or after `seq` and is lost or SACKed; upstream
//   (and now here) from the segment that contains `seq`.
// - Retransmission of the wrong segment (upstream #987): on entering
//   recovery ns-3.37 retransmits what DoRetransmit's NextSeg returns (the
//   first lost segment not yet retransmitted, or new data); upstream sends
//   the head (HighACK + 1). EnterRecovery asks IsLost about the head (with
//   SACK) right before; the project's IsLost notes that caller on the buffer
//   and the next NextSeg called from DoRetransmit returns the head, one
//   segment. Without SACK, EnterRecovery marks the head lost and NextSeg
//   returns it anyway.
// - The IsLost condition for entering recovery (upstream #989): ns-3.37's
//   TcpSocketBase::DupAck asks IsLost(HighACK + SMSS) where RFC 6675 says
//   IsLost(HighACK + 1), i.e. IsLost(m_highRxAckMark). DupAck is not
//   replaceable, but its call to IsLost goes through the PLT: the project's
//   IsLost recognises that caller (its return address lies in
//   TcpSocketBase::DupAck, whose address and size come from the library's
//   dynamic symbol table) and asks about `seq - SMSS`.
// - NextSeg's SACK rule (upstream #805, ns-3.43): RFC 6675's rule 1 takes
//   a segment only if it lies below the highest octet SACKed (1.b), and
//   rule 3 shares that condition; ns-3.37 checks neither. So after a timeout
//   that keeps the SACK information (ns-3 then marks every unSACKed segment
//   lost) it retransmits segments above the highest SACK before new data,
//   and in recovery with nothing lost and no new data (the end of every
//   chunk) rule 3 resends segments above it that are most likely still in
//   flight. Once a SACK was seen (m_highestSack points at a sent segment,
//   where upstream sets m_sackSeen), rules 1 and 3 now stop at the highest
//   SACKed segment, as upstream. With this fix on, `walk` is the project's
//   own copy of ns-3.37's walk with the condition (ns-3.37's cannot be given
//   it); next_seg_above_highest_sack counts what the fix forbids.
//
// Not carried: inside TcpSocketBase and not reachable through the PLT,
// bytesAcked in ProcessAck (#1126), PRR credits, DupAck classification,
// CongestionStateSet calls (#1319); Cubic's fixes are carried by the
// project's own Cubic (sim/tcp_cubic_rfc9438.h). docs/simulator.md has the
// list.
#pragma once

#include <cstdint>
#include <optional>

namespace kvs::sim {

// Which fixes are on. The simulator sets them per run (LinkSpec::ns3_stock
// turns all off: ns-3.37's TcpTxBuffer as shipped). Process-wide, as ns-3's
// simulator is.
struct Ns3TcpFixes {
  bool zero_length_segment = true;  // upstream #991
  bool next_seg_fast_path = true;   // no scoreboard walk when nothing is lost and not in recovery
  bool scoreboard_index = true;     // the indexed scoreboard (same decisions as ns-3.37's walks)
  bool is_lost = true;              // upstream #990 (changes results where it applies)
  bool is_lost_on_dupack = true;    // upstream #989 (changes results where it applies)
  bool recovery_retransmits_head = true;  // upstream #987 (changes results where it applies)
  bool next_seg_sack_rule = true;   // upstream #805 (changes results where it applies)
  bool verify_scoreboard = false;   // tests: check the index against the list after every call

  // ns-3.37's TcpTxBuffer as shipped.
  static Ns3TcpFixes stock() {
    Ns3TcpFixes f;
    f.zero_length_segment = f.next_seg_fast_path = f.scoreboard_index = false;
    f.is_lost = f.is_lost_on_dupack = f.recovery_retransmits_head = false;
    f.next_seg_sack_rule = false;
    return f;
  }
  // The corrections (#991, #990, #989, #987, #805) with ns-3.37's walks: the
  // reference the fast forms are compared with (`kvstream_tcp_trace
  // --next-seg walk`). NextSeg's walk is then the project's own copy of
  // ns-3.37's with #805's condition (ns-3.37's as shipped without #805).
  static Ns3TcpFixes walk() {
    Ns3TcpFixes f;
    f.next_seg_fast_path = f.scoreboard_index = false;
    return f;
  }
  // The corrections, NextSeg's fast path, the walks elsewhere (`--next-seg fast`).
  static Ns3TcpFixes fast_path_only() {
    Ns3TcpFixes f;
    f.scoreboard_index = false;
    return f;
  }
};
void set_ns3_tcp_fixes(const Ns3TcpFixes& fixes);
Ns3TcpFixes ns3_tcp_fixes();
// Pins the fixes for the runs that follow, whatever each run sets (tests
// compare the fast path with the walk this way); nullopt unpins.
void pin_ns3_tcp_fixes(std::optional<Ns3TcpFixes> fixes);
// Pins the fixes for a scope and unpins them at its end.
class PinNs3TcpFixes {
 public:
  explicit PinNs3TcpFixes(const Ns3TcpFixes& fixes) { pin_ns3_tcp_fixes(fixes); }
  ~PinNs3TcpFixes() { pin_ns3_tcp_fixes(std::nullopt); }
  PinNs3TcpFixes(const PinNs3TcpFixes&) = delete;
  PinNs3TcpFixes& operator=(const PinNs3TcpFixes&) = delete;
};

// Calls seen since the last reset (the proof that ns-3 calls the project's
// definitions, and how often each fix acted).
struct Ns3FixCounters {
  uint64_t next_seg_calls = 0;
  uint64_t next_seg_fast = 0;         // answered without the walk and without the index
  uint64_t next_seg_indexed = 0;      // answered from the index (lost segments or recovery)
  uint64_t zero_length_refused = 0;   // NextSeg said "nothing" where ns-3.37 offered 0 bytes
  uint64_t copy_from_sequence_calls = 0;
  uint64_t retransmissions_indexed = 0;  // CopyFromSequence of sent data through the index
  uint64_t update_calls = 0;             // SACK scoreboard updates
  uint64_t update_indexed = 0;
  uint64_t discard_calls = 0;
  uint64_t retransmitted_acked_calls = 0;  // IsRetransmittedDataAcked
  uint64_t is_lost_calls = 0;
  uint64_t is_lost_from_dupack = 0;  // IsLost calls recognised as DupAck's (#989 applied when on)
  uint64_t recovery_head_retransmits = 0;  // #987: EnterRecovery's retransmission sent from the head
  uint64_t recovery_head_differs = 0;      // ...where ns-3.37's NextSeg would have sent another segment
  // NextSeg returned a sent segment at or above the highest SACKed one after
  // a SACK was seen: what upstream #805 forbids (0 with it on).
  uint64_t next_seg_above_highest_sack = 0;
  uint64_t rx_add_calls = 0;         // TcpRxBuffer::Add (the receiver)
  uint64_t index_rebuilds = 0;       // the index found out of date and rebuilt from the list
  uint64_t scoreboard_mismatches = 0;  // verify_scoreboard: index or bounds wrong (must stay 0)
};
Ns3FixCounters ns3_fix_counters();
void reset_ns3_fix_counters();

// True when libns3-internet resolves the replaced TcpTxBuffer members to the
// project's definitions and the library's own are found behind them
// (checked once per process).
bool ns3_fixes_active();

}  // namespace kvs::sim
