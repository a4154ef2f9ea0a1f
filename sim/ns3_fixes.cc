#include "sim/ns3_fixes.h"

#include <dlfcn.h>

#include <cstring>

#include <fmt/format.h>

#include "ns3/simulator.h"
#include "ns3/tcp-tx-buffer.h"

#include "base/error.h"

namespace {

constexpr const char* kCopyFromSequence = "_ZN3ns311TcpTxBuffer16CopyFromSequenceEjRKNS_14SequenceNumberIjiEE";

using CopyFn = ns3::TcpTxItem* (*)(ns3::TcpTxBuffer*, uint32_t, const ns3::SequenceNumber32&);

// The library's definition, found past this program's.
CopyFn library_copy_from_sequence() {
  static const CopyFn fn = reinterpret_cast<CopyFn>(dlsym(RTLD_NEXT, kCopyFromSequence));
  return fn;
}

}  // namespace

namespace ns3 {

TcpTxItem* TcpTxBuffer::CopyFromSequence(uint32_t numBytes, const SequenceNumber32& seq) {
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

bool ns3_fixes_active() {
  static const bool active = [] {
    // The symbol the dynamic linker gives libns3-internet is this program's.
    void* resolved = dlsym(RTLD_DEFAULT, kCopyFromSequence);
    auto ours = &ns3::TcpTxBuffer::CopyFromSequence;
    void* ours_ptr = nullptr;
    static_assert(sizeof(ours) >= sizeof(void*));
    std::memcpy(&ours_ptr, &ours, sizeof(void*));
    return resolved != nullptr && resolved == ours_ptr && library_copy_from_sequence() != nullptr;
  }();
  return active;
}

}  // namespace kvs::sim
