// Guards against ns-3.37 defects that would crash the simulator (C++17;
// internal to sim/).
//
// TcpSocketBase::SendDataPacket dereferences the item that
// TcpTxBuffer::CopyFromSequence returns, which is null when the buffer has
// nothing at the sequence number asked for (a zero-length segment, the kind
// of defect upstream fixed after 3.37, #991): a segfault in
// TcpRateLinux::SkbSent. It happens with large transfers over jumbo frames or
// with on/off cross traffic. The project defines CopyFromSequence itself;
// libns3-internet calls it through the PLT, so this definition replaces the
// library's: it calls the library's and, instead of returning null, throws
// kvs::Error, which ends the run with a clear message (no result is better
// than a wrong one). ns3_fixes_active() says whether ns-3 really calls it.
#pragma once

namespace kvs::sim {

// True when libns3-internet resolves TcpTxBuffer::CopyFromSequence to the
// project's definition (checked once per process).
bool ns3_fixes_active();

}  // namespace kvs::sim
