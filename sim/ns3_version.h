// Which ns-3 this process runs, and the check that it is the one the
// project's fixes are written for (C++17; no ns-3 headers, so apps/ may
// include it).
//
// sim/ns3_fixes.cc replaces members of ns-3.37's TcpTxBuffer through the PLT
// of Debian's libns3-internet.so.37 and relies on that version's internals;
// find_package(ns3 3.37) would also accept a newer ns-3 at build time, and a
// library path can swap the library at run time. So every ns-3 run checks
// the library it really calls, at run time, from two sources:
// - libns3-core's ns3::Version::Major/Minor/Patch (present when ns-3 was
//   built with its build-version option, as Debian's is), looked up by name;
// - the file name of the loaded library that defines ns-3's TCP
//   (ns3::TcpTxBuffer): Debian's "libns3-internet.so.37" (the SONAME, which
//   the dynamic linker loads by), upstream's "libns3.48-internet.so".
// The library's name must say 3.37, and so must the core's version where it
// has one, unless LinkSpec::ns3_stock (`--ns3-stock`) runs ns-3 unmodified,
// which any version may do.
#pragma once

#include <optional>
#include <string>

namespace kvs::sim {

// The ns-3 release the fixes are written for.
inline constexpr int kExpectedNs3Major = 3;
inline constexpr int kExpectedNs3Minor = 37;

struct Ns3Release {
  int major = 0, minor = 0;
  bool operator==(const Ns3Release& o) const { return major == o.major && minor == o.minor; }
  bool operator!=(const Ns3Release& o) const { return !(*this == o); }
};
std::string to_string(const Ns3Release& r);  // "3.37"

struct LinkedNs3 {
  std::optional<Ns3Release> core;      // ns3::Version of libns3-core, when it has one
  int core_patch = 0;
  std::optional<Ns3Release> internet;  // from the TCP library's file name
  std::string internet_path;           // that library as loaded ("" when not found)
  std::string built_against;           // the headers this program was compiled with, "3.37"
};

// The ns-3 of this process (looked up once; the result cannot change).
const LinkedNs3& linked_ns3();

// The release in a library file name: "libns3-internet.so.37" (Debian's
// SONAME) and "libns3.48-internet.so" (upstream's naming) give 3.37
// and 3.48; a name with neither form (e.g. "libns3-dev-internet.so") gives
// nullopt.
std::optional<Ns3Release> ns3_release_from_library_name(const std::string& path);

// One line for `kvstream --version`: "3.37 (libns3-internet.so.37 at /usr/lib/..., built against 3.37)".
std::string describe_ns3(const LinkedNs3& found);

// Throws kvs::Error naming the found and the expected version when `found`
// is not ns-3.37 (or is unknown, or its two sources disagree) and `ns3_stock`
// is false. Separate from linked_ns3() so that tests can give other versions.
void check_ns3_version(const LinkedNs3& found, bool ns3_stock);

// check_ns3_version(linked_ns3(), ns3_stock): called where a run first
// builds ns-3 objects (build_topology).
void require_ns3_version(bool ns3_stock);

}  // namespace kvs::sim
