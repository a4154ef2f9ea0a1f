// The project's fixes to ns-3.37's TCP sender buffer, applied without
// rebuilding ns-3 (C++17; internal to sim/).
//
// Debian's libns3-internet.so.37 calls TcpTxBuffer::NextSeg and
// TcpTxBuffer::CopyFromSequence through its PLT, so definitions of those
// members in this program replace the library's; each calls the library's
// own (found with dlsym(RTLD_NEXT)) and changes only what is listed here.
// ns3_fixes_active() says whether ns-3 really resolves to them, and the call
// counters prove it per run.
//
// - Zero-length segments (upstream #991, fixed in ns-3 after 3.37):
//   NextSeg offers new data when the bytes in flight equal the receiver's
//   window (`m_sentSize <= rWnd` where upstream now has `<`); the sender then
//   asks CopyFromSequence for 0 bytes and dereferences the null it returns
//   (a segfault in TcpRateLinux::SkbSent, seen with jumbo frames and with
//   on/off cross traffic). NextSeg now says "nothing to send" there, as
//   upstream does. CopyFromSequence still turns a null into a kvs::Error
//   naming the defect, should another path reach it.
// - The scoreboard walk: NextSeg walks the whole sent list for every segment
//   sent, looking for a segment marked lost (RFC 6675 rule 1) and, in
//   recovery, remembering the first unSACKed one (rule 3). When nothing is
//   marked lost (GetLost() == 0, which ns-3 keeps equal to the lost bytes of
//   the list) and the socket is not in recovery, neither rule can fire, so the
//   fast path evaluates rule 2 (new data within the receiver's window) at
//   once. Same result, O(1) instead of O(window) per segment; tested for
//   identical packets against the walk (tests/sim/ns3_fixes_test.cc).
#pragma once

#include <cstdint>
#include <optional>

namespace kvs::sim {

// Which fixes are on. The simulator sets them per run (LinkSpec::ns3_stock
// turns all off: ns-3.37's own NextSeg). Process-wide, as ns-3's simulator is.
struct Ns3TcpFixes {
  bool zero_length_segment = true;  // upstream #991
  bool next_seg_fast_path = true;   // no scoreboard walk when nothing is lost and not in recovery
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
  uint64_t next_seg_fast = 0;         // answered without the walk
  uint64_t zero_length_refused = 0;   // NextSeg said "nothing" where ns-3.37 offered 0 bytes
  uint64_t copy_from_sequence_calls = 0;
};
Ns3FixCounters ns3_fix_counters();
void reset_ns3_fix_counters();

// True when libns3-internet resolves TcpTxBuffer::NextSeg and
// CopyFromSequence to the project's definitions and the library's own are
// found behind them (checked once per process).
bool ns3_fixes_active();

}  // namespace kvs::sim
