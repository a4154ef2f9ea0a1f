#include "sim/ns3_version.h"

#include <dlfcn.h>

#include <regex>

#include <fmt/format.h>

#include "ns3/tcp-tx-buffer.h"
#if __has_include("ns3/version-defines.h")  // absent from an ns-3 built without its build-version option
#include "ns3/version-defines.h"
#endif

#include "base/error.h"

namespace kvs::sim {

namespace {

// Mangled names, looked up at run time: a libns3-core built without its
// build-version option has no ns3::Version, and linking against it must not fail.
constexpr const char* kCoreMajor = "_ZN3ns37Version5MajorEv";
constexpr const char* kCoreMinor = "_ZN3ns37Version5MinorEv";
constexpr const char* kCorePatch = "_ZN3ns37Version5PatchEv";
// A member of ns-3's TCP that the project does not replace: its definition
// lies in the library whose internals sim/ns3_fixes.cc depends on.
constexpr const char* kTcpSymbol = "_ZN3ns311TcpTxBuffer9GetTypeIdEv";

using VersionFn = unsigned (*)();

LinkedNs3 look_up() {
  LinkedNs3 found;
#ifdef NS3_VERSION_MINOR
  found.built_against = fmt::format("{}.{}", NS3_VERSION_MAJOR, NS3_VERSION_MINOR);
#else
  found.built_against = "an ns-3 without version-defines.h";
#endif
  auto fn = [](const char* name) { return reinterpret_cast<VersionFn>(dlsym(RTLD_DEFAULT, name)); };
  if (VersionFn major = fn(kCoreMajor), minor = fn(kCoreMinor); major && minor) {
    found.core = Ns3Release{int(major()), int(minor())};
    if (VersionFn patch = fn(kCorePatch)) found.core_patch = int(patch());
  }
  // The call keeps libns3-internet among the libraries this program needs (a
  // linker with --as-needed drops libraries nothing calls); a call, not the
  // function's address, which in a non-PIE program would be a PLT entry of
  // the program that dlsym then finds first.
  ns3::TcpTxBuffer::GetTypeId();
  if (void* tcp = dlsym(RTLD_DEFAULT, kTcpSymbol)) {
    Dl_info info{};
    if (dladdr(tcp, &info) && info.dli_fname) {
      found.internet_path = info.dli_fname;
      found.internet = ns3_release_from_library_name(found.internet_path);
    }
  }
  return found;
}

std::string or_unknown(const std::optional<Ns3Release>& r) { return r ? to_string(*r) : "unknown"; }

}  // namespace

std::string to_string(const Ns3Release& r) { return fmt::format("{}.{}", r.major, r.minor); }

const LinkedNs3& linked_ns3() {
  static const LinkedNs3 found = look_up();
  return found;
}

std::optional<Ns3Release> ns3_release_from_library_name(const std::string& path) {
  const std::string name = path.substr(path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/') + 1);
  static const std::regex debian(R"(^libns3-[A-Za-z0-9_-]+\.so\.([0-9]+)(\.[0-9.]+)?$)");
  static const std::regex upstream(R"(^libns3\.([0-9]+)(\.[0-9]+)*(-rc[0-9]+)?-.*\.so(\.[0-9.]+)?$)");
  std::smatch m;
  if (std::regex_match(name, m, debian) || std::regex_match(name, m, upstream))
    return Ns3Release{3, std::stoi(m[1].str())};
  return std::nullopt;
}

std::string describe_ns3(const LinkedNs3& found) {
  std::string s;
  if (found.core && found.internet && *found.core != *found.internet)
    s = fmt::format("libns3-core {}, libns3-internet {}", to_string(*found.core), to_string(*found.internet));
  else if (found.core)
    s = found.core_patch ? fmt::format("{}.{}", to_string(*found.core), found.core_patch) : to_string(*found.core);
  else
    s = or_unknown(found.internet);
  s += fmt::format(" ({}; built against {})",
                   found.internet_path.empty() ? "ns-3's TCP library not found" : found.internet_path,
                   found.built_against);
  return s;
}

void check_ns3_version(const LinkedNs3& found, bool ns3_stock) {
  if (ns3_stock) return;  // unmodified ns-3: any version
  const Ns3Release expected{kExpectedNs3Major, kExpectedNs3Minor};
  const bool core_ok = !found.core || *found.core == expected;
  const bool internet_ok = found.internet && *found.internet == expected;
  if (core_ok && internet_ok) return;
  std::string what;
  if (!found.internet && !found.core)
    what = fmt::format("an ns-3 of unknown version ({})",
                       found.internet_path.empty() ? "no library defines ns3::TcpTxBuffer" : found.internet_path);
  else
    what = fmt::format("ns-{} (libns3-core says {}; ns-3's TCP library is {}, named as {})",
                       found.core ? to_string(*found.core) : or_unknown(found.internet), or_unknown(found.core),
                       found.internet_path.empty() ? "not found" : found.internet_path, or_unknown(found.internet));
  throw Error(fmt::format(
      "ns-3 version: found {}, expected ns-3.{}: the project's TCP fixes replace ns-3.{}'s TcpTxBuffer members "
      "(sim/ns3_fixes.h) and depend on its internals. Link Debian's ns-3.{} (libns3.{}), or run unmodified ns-3 "
      "with --ns3-stock (scenario key link.ns3_stock: true)",
      what, kExpectedNs3Minor, kExpectedNs3Minor, kExpectedNs3Minor, kExpectedNs3Minor));
}

void require_ns3_version(bool ns3_stock) { check_ns3_version(linked_ns3(), ns3_stock); }

}  // namespace kvs::sim
