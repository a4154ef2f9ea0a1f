// A stand-in for another ns-3's libns3-core version, for the refusal test of
// sim/ns3_version.h (tests/sim/CMakeLists.txt): preloaded (LD_PRELOAD), these
// definitions of ns3::Version::Major/Minor/Patch come before libns3-core's,
// so the process reports ns-3.48 while Debian's libns3-internet.so.37 runs.
#include <cstdint>

namespace ns3::Version {  // the same symbols as ns-3's static members ns3::Version::Major() etc.
uint32_t Major() { return 3; }
uint32_t Minor() { return 48; }
uint32_t Patch() { return 0; }
}  // namespace ns3::Version
