#include "sim/ns3_fixes.h"

#include <dlfcn.h>
#include <link.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <iterator>
#include <list>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "ns3/object.h"
#include "ns3/simulator.h"
#include "ns3/tcp-rx-buffer.h"
#include "ns3/tcp-tx-buffer.h"

#include "base/error.h"

namespace {

using ns3::SequenceNumber32;
using ns3::TcpTxBuffer;
using ns3::TcpTxItem;
using SentList = std::list<TcpTxItem*>;  // TcpTxBuffer::PacketList
using ItemCallback = ns3::Callback<void, TcpTxItem*>;
using SackList = ns3::TcpOptionSack::SackList;
using HighestSackType = std::pair<SentList::const_iterator, SequenceNumber32>;

// Mangled names of the replaced members (the library's definitions are
// found past this program's with dlsym(RTLD_NEXT)).
constexpr const char* kCopyFromSequence = "_ZN3ns311TcpTxBuffer16CopyFromSequenceEjRKNS_14SequenceNumberIjiEE";
constexpr const char* kNextSeg = "_ZNK3ns311TcpTxBuffer7NextSegEPNS_14SequenceNumberIjiEES3_b";
constexpr const char* kUpdate =
    "_ZN3ns311TcpTxBuffer6UpdateERKNSt7__cxx114listISt4pairINS_14SequenceNumberIjiEES5_ESaIS6_EEERKNS_"
    "8CallbackIvJPNS_9TcpTxItemEEEE";
constexpr const char* kDiscardUpTo =
    "_ZN3ns311TcpTxBuffer11DiscardUpToERKNS_14SequenceNumberIjiEERKNS_8CallbackIvJPNS_9TcpTxItemEEEE";
constexpr const char* kIsRetransmittedDataAcked =
    "_ZNK3ns311TcpTxBuffer24IsRetransmittedDataAckedERKNS_14SequenceNumberIjiEE";
constexpr const char* kIsLost = "_ZNK3ns311TcpTxBuffer6IsLostERKNS_14SequenceNumberIjiEE";
constexpr const char* kSetSentListLost = "_ZN3ns311TcpTxBuffer15SetSentListLostEb";
constexpr const char* kMarkHeadAsLost = "_ZN3ns311TcpTxBuffer14MarkHeadAsLostEv";
constexpr const char* kResetRenoSack = "_ZN3ns311TcpTxBuffer13ResetRenoSackEv";
constexpr const char* kRxAdd = "_ZN3ns311TcpRxBuffer3AddENS_3PtrINS_6PacketEEERKNS_9TcpHeaderE";
// The caller whose IsLost argument upstream #989 corrects.
constexpr const char* kDupAck = "_ZN3ns313TcpSocketBase6DupAckEj";
// The callers upstream #987 concerns: EnterRecovery's retransmission goes
// through DoRetransmit, which asks NextSeg.
constexpr const char* kEnterRecovery = "_ZN3ns313TcpSocketBase13EnterRecoveryEj";
constexpr const char* kDoRetransmit = "_ZN3ns313TcpSocketBase12DoRetransmitEv";

using CopyFn = TcpTxItem* (*)(TcpTxBuffer*, uint32_t, const SequenceNumber32&);
using NextSegFn = bool (*)(const TcpTxBuffer*, SequenceNumber32*, SequenceNumber32*, bool);
using UpdateFn = uint32_t (*)(TcpTxBuffer*, const SackList&, const ItemCallback&);
using DiscardFn = void (*)(TcpTxBuffer*, const SequenceNumber32&, const ItemCallback&);
using SeqQueryFn = bool (*)(const TcpTxBuffer*, const SequenceNumber32&);
using SetSentListLostFn = void (*)(TcpTxBuffer*, bool);
using VoidFn = void (*)(TcpTxBuffer*);
using RxAddFn = bool (*)(ns3::TcpRxBuffer*, ns3::Ptr<ns3::Packet>, const ns3::TcpHeader&);

// The library's definition of `symbol` (found once; null if absent).
template <typename Fn>
Fn library_function(const char* symbol) {
  return reinterpret_cast<Fn>(dlsym(RTLD_NEXT, symbol));
}
template <typename Fn>
Fn required(Fn fn, const char* member) {
  if (!fn) throw kvs::Error(fmt::format("ns-3: TcpTxBuffer::{} not found in libns3-internet", member));
  return fn;
}
#define KVS_LIBRARY_MEMBER(type, symbol, member)                            \
  ([] {                                                                     \
    static const type fn = library_function<type>(symbol);                  \
    return required(fn, member);                                            \
  }())

// Access to private members of TcpTxBuffer and TcpTxItem for the helpers
// below, through the rule that explicit instantiations may name private
// members (no layout assumptions: the compiler takes the offsets from
// Debian's header).
template <typename Tag, typename Tag::type kMember>
struct Expose {
  friend typename Tag::type member_of(Tag) { return kMember; }
};
#define KVS_EXPOSE(Tag, Class, Type, member)  \
  struct Tag {                                \
    using type = Type Class::*;               \
    friend type member_of(Tag);               \
  };                                          \
  template struct Expose<Tag, &Class::member>
KVS_EXPOSE(SentSize, TcpTxBuffer, uint32_t, m_sentSize);
KVS_EXPOSE(SegmentSize, TcpTxBuffer, uint32_t, m_segmentSize);
KVS_EXPOSE(RWndCallback, TcpTxBuffer, ns3::Callback<uint32_t>, m_rWndCallback);
KVS_EXPOSE(SentListOf, TcpTxBuffer, SentList, m_sentList);
KVS_EXPOSE(FirstByte, TcpTxBuffer, ns3::TracedValue<SequenceNumber32>, m_firstByteSeq);
KVS_EXPOSE(HighestSack, TcpTxBuffer, HighestSackType, m_highestSack);
KVS_EXPOSE(LostOut, TcpTxBuffer, uint32_t, m_lostOut);
KVS_EXPOSE(DupAckThresh, TcpTxBuffer, uint32_t, m_dupAckThresh);
KVS_EXPOSE(ItemStart, TcpTxItem, SequenceNumber32, m_startSeq);
KVS_EXPOSE(ItemPacket, TcpTxItem, ns3::Ptr<ns3::Packet>, m_packet);
KVS_EXPOSE(ItemLost, TcpTxItem, bool, m_lost);
KVS_EXPOSE(ItemSacked, TcpTxItem, bool, m_sacked);
KVS_EXPOSE(ItemRetrans, TcpTxItem, bool, m_retrans);

// Field access, spelled as in ns-3.
SequenceNumber32& start_of(TcpTxItem* i) { return i->*member_of(ItemStart{}); }
uint32_t size_of(TcpTxItem* i) { return (i->*member_of(ItemPacket{}))->GetSize(); }
bool& lost_of(TcpTxItem* i) { return i->*member_of(ItemLost{}); }
bool& sacked_of(TcpTxItem* i) { return i->*member_of(ItemSacked{}); }
bool& retrans_of(TcpTxItem* i) { return i->*member_of(ItemRetrans{}); }
template <typename Tag>
auto& field(const TcpTxBuffer* b, Tag tag) {
  return const_cast<TcpTxBuffer*>(b)->*member_of(tag);
}
SentList& sent_list(const TcpTxBuffer* b) { return field(b, SentListOf{}); }
SequenceNumber32 first_byte(const TcpTxBuffer* b) { return field(b, FirstByte{}).Get(); }

kvs::sim::Ns3TcpFixes g_fixes;        // set per run by the simulator
std::optional<kvs::sim::Ns3TcpFixes> g_pinned;
kvs::sim::Ns3FixCounters g_counters;  // ns-3 runs one simulation per process at a time

}  // namespace

namespace kvs::sim::detail {

// The indexed scoreboard of one TcpTxBuffer: its sent list as an array in
// sequence order, and lower bounds that let the searches of RFC 6675's rules
// start where an earlier search stopped. Aggregated to the buffer (so owned
// and freed by it); every replaced member keeps it in step with the list.
class ScoreboardIndex : public ns3::Object {
 public:
  static ns3::TypeId GetTypeId() {
    static const ns3::TypeId tid = ns3::TypeId("kvs::sim::detail::ScoreboardIndex").SetParent<ns3::Object>();
    return tid;
  }

  struct Entry {
    SentList::iterator it;
    SequenceNumber32 start;  // == (*it)->m_startSeq
  };
  std::deque<Entry> entries;  // a deque: ACKs erase from the front
  // Bounds (each may be lower than the truth, never higher):
  size_t rule3_from = 0;  // entries before it are retransmitted or SACKed
  size_t rule1_from = 0;  // entries before it are retransmitted, SACKed or not lost
  size_t lost_from = 1;   // entries in [1, lost_from) are SACKed or lost (UpdateLostCount's work is done there)
  // SACK blocks the last Update went through: every segment wholly inside
  // one of them is SACKed (a receiver repeats its blocks, growing the first,
  // in every ACK; Update then starts behind what it already marked).
  // Forgotten wherever a segment could lose its SACK flag or its bounds.
  std::vector<std::pair<SequenceNumber32, SequenceNumber32>> sacked_blocks;
  // Upstream #987: EnterRecovery (with SACK) asked IsLost about the head and
  // will retransmit through DoRetransmit's NextSeg next.
  bool entering_recovery = false;

  TcpTxItem* item(size_t i) const { return *entries[i].it; }
  // First entry whose start is >= seq (or whose start is > seq).
  size_t lower_bound(SequenceNumber32 seq) const {
    return size_t(std::lower_bound(entries.begin(), entries.end(), seq,
                                   [](const Entry& e, SequenceNumber32 s) { return e.start < s; }) -
                  entries.begin());
  }
  size_t upper_bound(SequenceNumber32 seq) const {
    return size_t(std::upper_bound(entries.begin(), entries.end(), seq,
                                   [](SequenceNumber32 s, const Entry& e) { return s < e.start; }) -
                  entries.begin());
  }

  void reset_bounds() {
    rule3_from = rule1_from = 0;
    lost_from = 1;
    sacked_blocks.clear();
  }
  // Entry i's flags changed (or it is new): lower the bounds it breaks.
  void touch(size_t i) {
    TcpTxItem* t = item(i);
    const bool candidate = !retrans_of(t) && !sacked_of(t);
    if (candidate) rule3_from = std::min(rule3_from, i);
    if (candidate && lost_of(t)) rule1_from = std::min(rule1_from, i);
    if (i >= 1 && !sacked_of(t) && !lost_of(t)) lost_from = std::max<size_t>(1, std::min(lost_from, i));
  }
  void rebuild(SentList& list) {
    entries.clear();
    for (auto it = list.begin(); it != list.end(); ++it) entries.push_back({it, start_of(*it)});
    reset_bounds();
    ++g_counters.index_rebuilds;
  }
  // A cheap check that the list has not changed behind the index.
  bool in_step(const SentList& list) const {
    if (entries.size() != list.size()) return false;
    if (entries.empty()) return true;
    // Iterators are compared, never followed: an entry may name an erased segment.
    return entries.front().it == list.begin() && entries.back().it == std::prev(list.end());
  }
  // The full check (verify_scoreboard): every entry, every bound.
  bool verify(const TcpTxBuffer* b) const {
    const SentList& list = sent_list(b);
    if (entries.size() != list.size()) return false;
    SequenceNumber32 at = first_byte(b);
    size_t i = 0;
    for (auto it = list.begin(); it != list.end(); ++it, ++i) {
      TcpTxItem* t = *it;
      if (entries[i].it != it || entries[i].start != start_of(t) || start_of(t) != at) return false;
      at += size_of(t);
      const bool candidate = !retrans_of(t) && !sacked_of(t);
      if (i < rule3_from && candidate) return false;
      if (i < rule1_from && candidate && lost_of(t)) return false;
      if (i >= 1 && i < lost_from && !sacked_of(t) && !lost_of(t)) return false;
      for (const auto& [first, second] : sacked_blocks)
        if (!sacked_of(t) && start_of(t) >= first && start_of(t) + size_of(t) <= second) return false;
    }
    return true;
  }
};

}  // namespace kvs::sim::detail

namespace {

using kvs::sim::detail::ScoreboardIndex;

// The buffer's index, created on first use and rebuilt if out of step.
ScoreboardIndex& index_of(const TcpTxBuffer* buffer) {
  auto* b = const_cast<TcpTxBuffer*>(buffer);
  ns3::Ptr<ScoreboardIndex> index = b->GetObject<ScoreboardIndex>();
  if (!index) {
    index = ns3::CreateObject<ScoreboardIndex>();
    b->AggregateObject(index);
    index->rebuild(sent_list(b));
  } else if (!index->in_step(sent_list(b))) {
    index->rebuild(sent_list(b));
  }
  return *index;
}
// The buffer's state without bringing the index up to date (settings that
// do not use it).
ScoreboardIndex& state_of(const TcpTxBuffer* buffer) {
  auto* b = const_cast<TcpTxBuffer*>(buffer);
  ns3::Ptr<ScoreboardIndex> index = b->GetObject<ScoreboardIndex>();
  if (!index) {
    index = ns3::CreateObject<ScoreboardIndex>();
    b->AggregateObject(index);
  }
  return *index;
}
// After a call that changed the list or flags (verify_scoreboard only).
void verify(const TcpTxBuffer* b) {
  if (!g_fixes.verify_scoreboard) return;
  ns3::Ptr<ScoreboardIndex> index = b->GetObject<ScoreboardIndex>();
  if (index && !index->verify(b)) {
    ++g_counters.scoreboard_mismatches;
    index->rebuild(sent_list(b));
  }
}
// Settings change between runs; a buffer that lived through a run without
// the index (its members not kept in step) must not trust an old one.
void forget_index(const TcpTxBuffer* b) {
  if (ns3::Ptr<ScoreboardIndex> index = b->GetObject<ScoreboardIndex>()) {
    index->entries.clear();
    index->reset_bounds();
  }
}

// Whether a return address lies inside TcpSocketBase::DupAck (its address
// and size from the library's dynamic symbol table, looked up once).
// The address range of a function of the library, from its dynamic symbol
// table (looked up once per function).
struct CodeRange {
  uintptr_t begin = 0, end = 0;
  explicit CodeRange(const char* symbol) {
    void* start = dlsym(RTLD_DEFAULT, symbol);
    Dl_info info{};
    void* entry = nullptr;  // the ElfW(Sym) of the symbol
    if (!start || dladdr1(start, &info, &entry, RTLD_DL_SYMENT) == 0 || !entry) return;
    begin = uintptr_t(start);
    end = begin + static_cast<const ElfW(Sym)*>(entry)->st_size;
  }
  // Whether a return address lies inside the function (after a call in it).
  bool holds(const void* return_address) const {
    const auto at = uintptr_t(return_address);
    return at > begin && at <= end;
  }
};
bool called_from_dupack(const void* return_address) {
  static const CodeRange range(kDupAck);
  return range.holds(return_address);
}
bool called_from_enter_recovery(const void* return_address) {
  static const CodeRange range(kEnterRecovery);
  return range.holds(return_address);
}
bool called_from_do_retransmit(const void* return_address) {
  static const CodeRange range(kDoRetransmit);
  return range.holds(return_address);
}

// RFC 6675 rule 2 as ns-3.37 writes it (or with upstream #991's `<`):
// new data from HighData + 1 within the receiver's window.
bool next_seg_rule2(const TcpTxBuffer* b, SequenceNumber32* seq, SequenceNumber32* seq_high, bool* has_new_data) {
  const uint32_t sent = field(b, SentSize{});
  const SequenceNumber32 high_data = first_byte(b) + sent;  // HighData + 1
  *has_new_data = b->SizeFromSequence(high_data) > 0;
  if (!*has_new_data) return false;
  const uint32_t rwnd = field(b, RWndCallback{})();
  if (sent > rwnd || (g_fixes.zero_length_segment && sent == rwnd)) {
    if (sent == rwnd) ++g_counters.zero_length_refused;
    return false;
  }
  *seq = high_data;
  *seq_high = *seq + std::min<uint32_t>(field(b, SegmentSize{}), rwnd - sent);
  return true;
}

// Upstream #805 (RFC 6675 NextSeg (1.b), which rule 3 also requires): once
// a SACK has been seen, a segment is a rule-1 or rule-3 candidate only if it
// starts below the highest SACKed segment. ns-3.37 sets m_highestSack to a
// sent segment wherever upstream sets m_sackSeen and back to (end, 0)
// wherever upstream clears it, so "seen" is m_highestSack.first != end.
// Returns the sequence number candidates must start below (nullopt: no limit).
std::optional<SequenceNumber32> sack_rule_limit(const TcpTxBuffer* b) {
  if (!g_fixes.next_seg_sack_rule) return std::nullopt;
  const HighestSackType& highest = field(b, HighestSack{});
  if (highest.first == sent_list(b).end()) return std::nullopt;
  return highest.second;
}

// ns-3.37's NextSeg walk (rules 1, 2 and 3 in its order, with its rule-3
// quirk: a first candidate at sequence number 0 is replaced by the next) with
// upstream #805's condition: the project's own walk, the reference the fast
// path and the index are compared with when #805 is on (ns-3.37's own walk
// cannot be given the condition).
bool next_seg_walk(const TcpTxBuffer* b, SequenceNumber32* seq, SequenceNumber32* seq_high, bool in_recovery) {
  const std::optional<SequenceNumber32> limit = sack_rule_limit(b);
  const uint32_t segment = field(b, SegmentSize{});
  SequenceNumber32 begin = first_byte(b);
  SequenceNumber32 rule3_seq;  // 0: none yet (ns-3.37's test)
  bool rule3_found = false;
  for (TcpTxItem* t : sent_list(b)) {
    if (!retrans_of(t) && !sacked_of(t) && (!limit || start_of(t) < *limit)) {
      if (lost_of(t)) {  // rule 1
        *seq = begin;
        *seq_high = begin + segment;
        return true;
      }
      if (in_recovery && rule3_seq.GetValue() == 0) {
        rule3_found = true;
        rule3_seq = begin;
      }
    }
    begin += size_of(t);
  }
  bool has_new_data = false;
  if (next_seg_rule2(b, seq, seq_high, &has_new_data)) return true;
  if (has_new_data || !rule3_found) return false;
  *seq = rule3_seq;  // rule 3
  *seq_high = rule3_seq + segment;
  return true;
}

// ns-3.37's UpdateLostCount from the index: walking down from the highest
// SACKed segment, once dupThresh SACKed segments are counted every segment
// below that is neither SACKed nor lost is marked lost, and the head too.
// Segments below `lost_from` are already SACKed or lost, so the marking
// stops there.
void update_lost_count(TcpTxBuffer* b, ScoreboardIndex& ix) {
  const auto& highest = field(b, HighestSack{});
  size_t h = ix.lower_bound(highest.second);
  if (h >= ix.entries.size() || ix.entries[h].it != highest.first) {
    h = 0;  // not where its sequence number says (never seen): find the iterator itself
    while (h < ix.entries.size() && ix.entries[h].it != highest.first) ++h;
    if (h >= ix.entries.size()) throw kvs::Error("ns-3: TcpTxBuffer's highest SACKed segment is not in its sent list");
  }
  const uint32_t thresh = field(b, DupAckThresh{});
  uint32_t& lost_out = field(b, LostOut{});
  uint32_t count = 0;
  bool reached = thresh == 0;
  size_t p = h;
  for (size_t i = h; i >= 1; --i) {
    if (sacked_of(ix.item(i))) ++count;
    if (count >= thresh) {
      reached = true;
      p = i;
      break;
    }
  }
  if (!reached) return;
  for (size_t i = p; i >= std::max<size_t>(ix.lost_from, 1); --i) {
    TcpTxItem* t = ix.item(i);
    if (!sacked_of(t) && !lost_of(t)) {
      lost_of(t) = true;
      lost_out += size_of(t);
      ix.touch(i);
    }
    if (i == 1) break;
  }
  ix.lost_from = std::max(ix.lost_from, p + 1);
  TcpTxItem* head = ix.item(0);
  if (!lost_of(head)) {
    lost_of(head) = true;
    lost_out += size_of(head);
    ix.touch(0);
  }
}

}  // namespace

namespace ns3 {

bool TcpTxBuffer::NextSeg(SequenceNumber32* out_seq, SequenceNumber32* out_high, bool in_recovery) const {
  ++g_counters.next_seg_calls;
  // RFC 6675's rules: ns-3.37's walk, its fast path or the index.
  const auto by_rules = [this](SequenceNumber32* seq, SequenceNumber32* seqHigh, bool isRecovery) -> bool {
    const SequenceNumber32 high_data = m_firstByteSeq.Get() + m_sentSize;  // HighData + 1
    bool has_new_data = false;
    if (g_fixes.next_seg_fast_path && !isRecovery && GetLost() == 0) {
      // Rules 1 and 3 cannot fire: rule 2, as ns-3.37 (or upstream with #991) writes it.
      ++g_counters.next_seg_fast;
      return next_seg_rule2(this, seq, seqHigh, &has_new_data);
    }
    if (g_fixes.scoreboard_index) {
      // The walk's three rules in its order, each search starting at its bound.
      ++g_counters.next_seg_indexed;
      ScoreboardIndex& ix = index_of(this);
      struct VerifyAtEnd {
        const TcpTxBuffer* b;
        ~VerifyAtEnd() { verify(b); }  // the bounds the searches moved
      } verify_at_end{this};
      // Upstream #805: candidates for rules 1 and 3 end at the highest SACKed
      // segment once a SACK was seen (the bounds stay valid: nothing below
      // where a search stopped is a candidate).
      const std::optional<SequenceNumber32> limit = sack_rule_limit(this);
      const size_t n = limit ? ix.lower_bound(*limit) : ix.entries.size();
      size_t i = std::max(ix.rule1_from, ix.rule3_from);
      while (i < n && !(lost_of(ix.item(i)) && !retrans_of(ix.item(i)) && !sacked_of(ix.item(i)))) ++i;
      ix.rule1_from = i;
      if (i < n) {  // rule 1: the first unSACKed, not retransmitted segment marked lost
        *seq = ix.entries[i].start;
        *seqHigh = *seq + m_segmentSize;
        return true;
      }
      if (next_seg_rule2(this, seq, seqHigh, &has_new_data)) return true;
      if (has_new_data || !isRecovery) return false;
      // Rule 3: the first unSACKed, not retransmitted segment. The walk keeps
      // the first one found unless its sequence number is 0 (it tests for
      // "unset" with 0); the second then replaces it.
      size_t j = ix.rule3_from;
      while (j < n && (retrans_of(ix.item(j)) || sacked_of(ix.item(j)))) ++j;
      ix.rule3_from = j;
      if (j >= n) return false;
      *seq = ix.entries[j].start;
      if (seq->GetValue() == 0) {
        size_t k = j + 1;
        while (k < n && (retrans_of(ix.item(k)) || sacked_of(ix.item(k)))) ++k;
        if (k < n) *seq = ix.entries[k].start;
      }
      *seqHigh = *seq + m_segmentSize;
      return true;
    }
    if (g_fixes.next_seg_sack_rule) return next_seg_walk(this, seq, seqHigh, isRecovery);
    const NextSegFn original = KVS_LIBRARY_MEMBER(NextSegFn, kNextSeg, "NextSeg");
    const bool found = original(this, seq, seqHigh, isRecovery);
    // Rule 2 is the only one that returns HighData + 1 (rules 1 and 3 return
    // sent segments, below it): refuse it when the window is exactly full.
    if (found && g_fixes.zero_length_segment && *seq == high_data && m_sentSize >= m_rWndCallback()) {
      ++g_counters.zero_length_refused;
      return false;
    }
    return found;

  };
  if (g_fixes.recovery_retransmits_head && called_from_do_retransmit(__builtin_return_address(0))) {
    ScoreboardIndex& state = state_of(this);
    if (state.entering_recovery && !m_sentList.empty()) {
      // Upstream #987: entering recovery retransmits the head (HighACK + 1,
      // upstream's m_highRxAckMark), one segment, whatever the rules say.
      state.entering_recovery = false;
      ++g_counters.recovery_head_retransmits;
      SequenceNumber32 rule_seq, rule_high;
      if (!by_rules(&rule_seq, &rule_high, false) || rule_seq != m_firstByteSeq.Get())
        ++g_counters.recovery_head_differs;
      *out_seq = m_firstByteSeq.Get();
      *out_high = *out_seq + m_segmentSize;
      return true;
    }
    state.entering_recovery = false;
  }
  const bool found = by_rules(out_seq, out_high, in_recovery);
  // What upstream #805 forbids: a sent segment at or above the highest SACKed
  // one while a SACK was seen (counted with the fix on or off).
  if (found && m_highestSack.first != m_sentList.end() && *out_seq < m_firstByteSeq.Get() + m_sentSize &&
      *out_seq >= m_highestSack.second)
    ++g_counters.next_seg_above_highest_sack;
  return found;
}

TcpTxItem* TcpTxBuffer::CopyFromSequence(uint32_t numBytes, const SequenceNumber32& seq) {
  ++g_counters.copy_from_sequence_calls;
  const auto no_segment = [&] {
    return kvs::Error(fmt::format(
        "ns-3.37 defect at t = {:.6f} s: TCP asked to send {} bytes at sequence {} where its buffer holds none "
        "(a zero-length segment, upstream #991; ns-3 would crash here). This run has no valid result: try "
        "another tcp variant or mtu_bytes (docs/simulator.md)",
        Simulator::Now().GetSeconds(), numBytes, seq.GetValue()));
  };
  if (!g_fixes.scoreboard_index) {
    forget_index(this);
    const CopyFn original = KVS_LIBRARY_MEMBER(CopyFn, kCopyFromSequence, "CopyFromSequence");
    TcpTxItem* item = original(this, numBytes, seq);
    if (!item) throw no_segment();
    return item;
  }
  // ns-3.37's CopyFromSequence, with the search for a sent segment done in
  // the index and ns-3's own GetPacketFromList run on just the segments the
  // copy covers (spliced out of the sent list and back: its splits and
  // merges are the same, the walk from the head is gone).
  if (m_firstByteSeq.Get() > seq)
    throw kvs::Error(fmt::format("ns-3: TcpTxBuffer::CopyFromSequence asked for sequence {} below SND.UNA {}",
                                 seq.GetValue(), m_firstByteSeq.Get().GetValue()));
  ScoreboardIndex& ix = index_of(this);
  const uint32_t s = std::min(numBytes, SizeFromSequence(seq));
  if (s == 0) throw no_segment();
  const SequenceNumber32 high_data = m_firstByteSeq.Get() + m_sentSize;
  TcpTxItem* out = nullptr;
  if (high_data >= seq + s) {
    // GetTransmittedSegment: at most this segment and the next one if that
    // is not SACKed and has the same lost flag (or `s` bytes when no
    // segment starts at seq).
    ++g_counters.retransmissions_indexed;
    uint32_t size = s;
    const size_t at = ix.lower_bound(seq);
    if (at < ix.entries.size() && ix.entries[at].start == seq) {
      TcpTxItem* here = ix.item(at);
      if (at + 1 < ix.entries.size() && !sacked_of(ix.item(at + 1)) && lost_of(here) == lost_of(ix.item(at + 1)))
        size = std::min(size, size_of(here) + size_of(ix.item(at + 1)));
      else
        size = std::min(size, size_of(here));
    }
    // GetPacketFromList(m_sentList, m_firstByteSeq, size, seq) touches only
    // the segments holding [seq, seq + size).
    const size_t first = ix.upper_bound(seq) - 1;
    const size_t last = ix.upper_bound(seq + (size - 1)) - 1;
    const auto after = last + 1 < ix.entries.size() ? ix.entries[last + 1].it : m_sentList.end();
    PacketList part;
    part.splice(part.begin(), m_sentList, ix.entries[first].it, after);
    bool edited = false;
    out = GetPacketFromList(part, ix.entries[first].start, size, seq, &edited);
    const auto begin = part.begin();
    const size_t count = part.size();
    m_sentList.splice(after, part);
    const size_t old_count = last + 1 - first;
    if (count != old_count) {
      // Split or merged: the entries after the part move; so do the bounds.
      std::vector<ScoreboardIndex::Entry> replaced;
      replaced.reserve(count);
      auto it = begin;
      for (size_t k = 0; k < count; ++k, ++it) replaced.push_back({it, start_of(*it)});
      ix.entries.erase(ix.entries.begin() + long(first), ix.entries.begin() + long(last + 1));
      ix.entries.insert(ix.entries.begin() + long(first), replaced.begin(), replaced.end());
      const auto shift = [&](size_t& bound) {
        if (bound > last) bound = bound + count - old_count;
        else if (bound > first) bound = first;
      };
      shift(ix.rule3_from);
      shift(ix.rule1_from);
      shift(ix.lost_from);
      ix.lost_from = std::max<size_t>(ix.lost_from, 1);
      ix.sacked_blocks.clear();  // a piece of a cut segment may lie inside a remembered block
    } else {
      auto it = begin;
      for (size_t k = first; k <= last; ++k, ++it) {
        if (ix.entries[k].start != start_of(*it)) ix.sacked_blocks.clear();
        ix.entries[k] = {it, start_of(*it)};
      }
    }
    if (!retrans_of(out)) {
      m_retrans += size_of(out);
      retrans_of(out) = true;
    }
    for (size_t k = first; k < first + count; ++k) ix.touch(k);
  } else if (high_data <= seq) {
    if (high_data != seq)
      throw kvs::Error(fmt::format("ns-3: TcpTxBuffer::CopyFromSequence asked for new data at {} with a hole "
                                   "after HighData {}",
                                   seq.GetValue(), high_data.GetValue()));
    out = GetNewSegment(s);  // ns-3's: moves it from the application list to the end of the sent list
    ix.entries.push_back({std::prev(m_sentList.end()), start_of(out)});
    ix.touch(ix.entries.size() - 1);
  } else {
    // Partly sent: only the sent part (ns-3.37 does the same).
    return CopyFromSequence(high_data - seq, seq);
  }
  out->m_lastSent = Simulator::Now();
  verify(this);
  return out;
}

uint32_t TcpTxBuffer::Update(const TcpOptionSack::SackList& list, const Callback<void, TcpTxItem*>& sackedCb) {
  ++g_counters.update_calls;
  if (!g_fixes.scoreboard_index) {
    forget_index(this);
    return KVS_LIBRARY_MEMBER(UpdateFn, kUpdate, "Update")(this, list, sackedCb);
  }
  // ns-3.37's Update: per block, mark the segments that lie wholly inside it
  // SACKed, starting at the first one at or after its left edge (the walk
  // from the head skips the ones before it and stops at the first that ends
  // beyond the right edge, as here).
  ++g_counters.update_indexed;
  ScoreboardIndex& ix = index_of(this);
  uint32_t bytes_sacked = 0;
  std::vector<std::pair<SequenceNumber32, SequenceNumber32>> done;
  const auto remember = [&] { ix.sacked_blocks = std::move(done); };
  for (const auto& block : list) {
    if (m_firstByteSeq.Get() + m_sentSize < block.first) {
      remember();
      verify(this);
      return bytes_sacked;  // ns-3.37 returns here, before UpdateLostCount
    }
    size_t from = ix.lower_bound(block.first);
    for (const auto& [first, second] : ix.sacked_blocks) {
      // Segments wholly inside [block.first, second) are SACKed already:
      // start at the one that holds byte `second` (or just after it).
      if (!(first <= block.first && block.first < second)) continue;
      size_t k = ix.upper_bound(second - 1);  // the one after the segment holding second - 1
      if (k > 0 && ix.entries[k - 1].start + size_of(ix.item(k - 1)) > second) --k;
      from = std::max(from, k);
    }
    done.emplace_back(block.first, block.second);
    for (size_t i = from; i < ix.entries.size(); ++i) {
      TcpTxItem* t = ix.item(i);
      const uint32_t size = size_of(t);
      const SequenceNumber32 begin = ix.entries[i].start;
      if (begin + size > block.second) break;
      if (t->m_sacked) continue;
      if (t->m_lost) {
        t->m_lost = false;
        m_lostOut -= size;
      }
      t->m_sacked = true;
      m_sackedOut += size;
      bytes_sacked += size;
      if (m_highestSack.first == m_sentList.end() || m_highestSack.second <= begin + size)
        m_highestSack = std::make_pair(PacketList::const_iterator(ix.entries[i].it), begin);
      if (!sackedCb.IsNull()) sackedCb(t);
    }
  }
  remember();
  if (bytes_sacked > 0) update_lost_count(this, ix);
  verify(this);
  return bytes_sacked;
}

void TcpTxBuffer::DiscardUpTo(const SequenceNumber32& seq, const Callback<void, TcpTxItem*>& beforeDelCb) {
  ++g_counters.discard_calls;
  const DiscardFn original = KVS_LIBRARY_MEMBER(DiscardFn, kDiscardUpTo, "DiscardUpTo");
  if (!g_fixes.scoreboard_index) {
    forget_index(this);
    original(this, seq, beforeDelCb);
    return;
  }
  ScoreboardIndex& ix = index_of(this);
  original(this, seq, beforeDelCb);
  // ns-3 erased the acknowledged segments from the head and may have cut the
  // new head (a partial ACK) or changed its flags.
  const size_t below = ix.lower_bound(m_firstByteSeq.Get());  // entries that started below SND.UNA
  const size_t n = ix.entries.size();
  size_t erased = below;
  if (m_sentList.size() == n - below + 1 && below >= 1) erased = below - 1;  // the last of them was cut
  if (m_sentList.size() != n - erased) {
    ix.rebuild(m_sentList);
  } else {
    ix.entries.erase(ix.entries.begin(), ix.entries.begin() + long(erased));
    if (!ix.entries.empty() && ix.entries.front().it != m_sentList.begin()) {
      ix.rebuild(m_sentList);
    } else {
      if (!ix.entries.empty()) {
        ix.entries.front().start = start_of(ix.item(0));
        // ns-3 clears the SACK flag of a SACKed head (and marks it lost).
        TcpTxItem* head = ix.item(0);
        bool inside = false;
        for (const auto& [first, second] : ix.sacked_blocks)
          inside = inside || (start_of(head) >= first && start_of(head) + size_of(head) <= second);
        if (inside && !sacked_of(head)) ix.sacked_blocks.clear();
      }
      ix.rule3_from = ix.rule3_from > erased ? ix.rule3_from - erased : 0;
      ix.rule1_from = ix.rule1_from > erased ? ix.rule1_from - erased : 0;
      ix.lost_from = std::max<size_t>(1, ix.lost_from > erased ? ix.lost_from - erased : 1);
      if (!ix.entries.empty()) ix.touch(0);
    }
  }
  verify(this);
}

bool TcpTxBuffer::IsRetransmittedDataAcked(const SequenceNumber32& ack) const {
  ++g_counters.retransmitted_acked_calls;
  if (!g_fixes.scoreboard_index) {
    forget_index(this);
    return KVS_LIBRARY_MEMBER(SeqQueryFn, kIsRetransmittedDataAcked, "IsRetransmittedDataAcked")(this, ack);
  }
  // The one segment that ends at `ack` (segments are contiguous).
  const ScoreboardIndex& ix = index_of(this);
  const size_t i = ix.lower_bound(ack);
  if (i == 0) return false;
  TcpTxItem* t = ix.item(i - 1);
  return ix.entries[i - 1].start + size_of(t) == ack && !t->m_sacked && t->m_retrans;
}

bool TcpTxBuffer::IsLost(const SequenceNumber32& seq) const {
  ++g_counters.is_lost_calls;
  SequenceNumber32 asked = seq;
  if (g_fixes.is_lost_on_dupack) {
    // Upstream #989: TcpSocketBase::DupAck asks about HighACK + SMSS where RFC
    // 6675 (and upstream now) asks about HighACK + 1, m_highRxAckMark.
    if (called_from_dupack(__builtin_return_address(0))) {
      ++g_counters.is_lost_from_dupack;
      asked = seq - static_cast<int32_t>(m_segmentSize);
    }
  }
  // Upstream #987: EnterRecovery asks about the head just before it retransmits.
  if (g_fixes.recovery_retransmits_head && called_from_enter_recovery(__builtin_return_address(0)))
    state_of(this).entering_recovery = true;
  if (!g_fixes.is_lost) return KVS_LIBRARY_MEMBER(SeqQueryFn, kIsLost, "IsLost")(this, asked);
  // Upstream #990: the segment that contains `asked` decides.
  if (asked >= m_highestSack.second) return false;
  for (TcpTxItem* t : m_sentList)
    if (t->m_startSeq <= asked && asked < t->m_startSeq + t->m_packet->GetSize()) return t->m_lost;
  return false;
}

void TcpTxBuffer::SetSentListLost(bool resetSack) {
  KVS_LIBRARY_MEMBER(SetSentListLostFn, kSetSentListLost, "SetSentListLost")(this, resetSack);
  if (g_fixes.scoreboard_index) index_of(this).reset_bounds();  // every flag may have changed
  verify(this);
}

void TcpTxBuffer::MarkHeadAsLost() {
  KVS_LIBRARY_MEMBER(VoidFn, kMarkHeadAsLost, "MarkHeadAsLost")(this);
  if (g_fixes.scoreboard_index) {
    ScoreboardIndex& ix = index_of(this);
    if (!ix.entries.empty()) ix.touch(0);
    ix.sacked_blocks.clear();  // the head may have lost its SACK flag
  }
  verify(this);
}

void TcpTxBuffer::ResetRenoSack() {
  KVS_LIBRARY_MEMBER(VoidFn, kResetRenoSack, "ResetRenoSack")(this);
  if (g_fixes.scoreboard_index) index_of(this).reset_bounds();
  verify(this);
}

// The receiver's buffer (out-of-order segments wait here). ns-3.37's Add
// walks the map of buffered segments from its start to find the ones the new
// segment overlaps, and again to advance RCV.NXT: O(segments buffered) per
// segment received, the largest cost once a large window has holes. The
// segments in the map are disjoint and sorted, so no segment that ends at or
// below the new one's start can overlap it, and none below RCV.NXT advances
// it: both walks start at the first segment that can matter (a map lookup).
// The rest is ns-3.37's Add.
bool TcpRxBuffer::Add(Ptr<Packet> p, const TcpHeader& tcph) {
  ++g_counters.rx_add_calls;
  if (!g_fixes.scoreboard_index) return KVS_LIBRARY_MEMBER(RxAddFn, kRxAdd, "TcpRxBuffer::Add")(this, p, tcph);
  const uint32_t pkt_size = p->GetSize();
  SequenceNumber32 head = tcph.GetSequenceNumber();
  SequenceNumber32 tail = head + SequenceNumber32(pkt_size);
  if (head < m_nextRxSeq) head = m_nextRxSeq;
  if (!m_data.empty()) {
    const SequenceNumber32 max_seq = m_data.begin()->first + SequenceNumber32(m_maxBuffer);
    if (max_seq < tail) tail = max_seq;
    if (tail < head) head = tail;
  }
  BufIterator i = m_data.upper_bound(head);
  if (i != m_data.begin()) {
    const BufIterator before = std::prev(i);
    if (before->first + SequenceNumber32(before->second->GetSize()) > head) i = before;
  }
  if (g_fixes.verify_scoreboard) {
    for (BufIterator k = m_data.begin(); k != i; ++k)
      if (k->first + SequenceNumber32(k->second->GetSize()) > head) ++g_counters.scoreboard_mismatches;
  }
  while (i != m_data.end() && i->first <= tail) {
    const SequenceNumber32 last_byte = i->first + SequenceNumber32(i->second->GetSize());
    if (last_byte > head) {
      if (i->first > head && last_byte < tail) {  // an existing segment inside the new one
        m_size -= i->second->GetSize();
        m_data.erase(i++);
        continue;
      }
      if (i->first <= head) head = last_byte;
      if (last_byte >= tail) tail = i->first;
    }
    ++i;
  }
  if (head >= tail) return false;  // nothing to buffer
  const auto start = static_cast<uint32_t>(head - tcph.GetSequenceNumber());
  const auto length = static_cast<uint32_t>(tail - head);
  p = p->CreateFragment(start, length);
  m_data[head] = p;
  if (head > m_nextRxSeq) UpdateSackList(head, tail);  // a new SACK block
  m_size += p->GetSize();
  for (i = m_data.lower_bound(m_nextRxSeq); i != m_data.end(); ++i) {
    if (i->first < m_nextRxSeq) continue;
    if (i->first > m_nextRxSeq) break;
    m_nextRxSeq = i->first + SequenceNumber32(i->second->GetSize());
    m_availBytes += i->second->GetSize();
    ClearSackList(m_nextRxSeq);
  }
  if (m_gotFin && m_nextRxSeq == m_finSeq) ++m_nextRxSeq;  // the FIN
  return true;
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
  return resolved != nullptr && resolved == ours_ptr && dlsym(RTLD_NEXT, symbol) != nullptr;
}

}  // namespace

bool ns3_fixes_active() {
  using B = ns3::TcpTxBuffer;
  static const bool active =
      resolves_to_ours(kCopyFromSequence, &B::CopyFromSequence) && resolves_to_ours(kNextSeg, &B::NextSeg) &&
      resolves_to_ours(kUpdate, &B::Update) && resolves_to_ours(kDiscardUpTo, &B::DiscardUpTo) &&
      resolves_to_ours(kIsRetransmittedDataAcked, &B::IsRetransmittedDataAcked) &&
      resolves_to_ours(kIsLost, &B::IsLost) && resolves_to_ours(kSetSentListLost, &B::SetSentListLost) &&
      resolves_to_ours(kMarkHeadAsLost, &B::MarkHeadAsLost) && resolves_to_ours(kResetRenoSack, &B::ResetRenoSack) &&
      resolves_to_ours(kRxAdd, &ns3::TcpRxBuffer::Add) &&
      dlsym(RTLD_DEFAULT, kDupAck) != nullptr && dlsym(RTLD_DEFAULT, kEnterRecovery) != nullptr &&
      dlsym(RTLD_DEFAULT, kDoRetransmit) != nullptr;
  return active;
}

}  // namespace kvs::sim
