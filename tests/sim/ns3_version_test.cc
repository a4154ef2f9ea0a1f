// The ns-3 version check (sim/ns3_version.h): what this process links, the
// release in library names, and the refusal of any other ns-3 unless the
// run is ns3_stock.
#include <gtest/gtest.h>

#include <string>

#include "base/error.h"
#include "sim/ns3_version.h"

namespace kvs::sim {
namespace {

TEST(Ns3Version, ThisProcessLinksDebiansNs337AndPassesTheCheck) {
  const LinkedNs3& found = linked_ns3();
  ASSERT_TRUE(found.core.has_value()) << "libns3-core has no ns3::Version";
  EXPECT_EQ(to_string(*found.core), "3.37");
  ASSERT_TRUE(found.internet.has_value()) << found.internet_path;
  EXPECT_EQ(to_string(*found.internet), "3.37");
  // The library that defines ns-3's TCP, by the SONAME it was loaded by.
  EXPECT_NE(found.internet_path.find("libns3-internet.so.37"), std::string::npos) << found.internet_path;
  EXPECT_EQ(found.built_against, "3.37");
  EXPECT_NO_THROW(require_ns3_version(false));
  const std::string text = describe_ns3(found);
  EXPECT_EQ(text.rfind("3.37", 0), 0u) << text;
  EXPECT_NE(text.find("libns3-internet.so.37"), std::string::npos) << text;
}

TEST(Ns3Version, ReleaseFromLibraryNames) {
  auto minor = [](const std::string& name) {
    const auto r = ns3_release_from_library_name(name);
    return r ? r->major * 1000 + r->minor : -1;
  };
  EXPECT_EQ(minor("/usr/lib/x86_64-linux-gnu/libns3-internet.so.37"), 3037);  // Debian's SONAME
  EXPECT_EQ(minor("libns3-traffic-control.so.37"), 3037);
  EXPECT_EQ(minor("/work/ns3-upstream/build/lib/libns3.48-internet-default.so"), 3048);  // upstream's names
  EXPECT_EQ(minor("libns3.48-internet.so"), 3048);
  EXPECT_EQ(minor("libns3.46.1-internet-optimized.so"), 3046);
  EXPECT_EQ(minor("libns3.45-rc1-internet-debug.so"), 3045);
  EXPECT_EQ(minor("libns3-dev-internet-debug.so"), -1);  // ns-3-dev: no release in the name
  EXPECT_EQ(minor("libns3-internet.so"), -1);            // the unversioned development link
  EXPECT_EQ(minor("libfoo.so.37"), -1);
}

LinkedNs3 fake(std::optional<Ns3Release> core, std::optional<Ns3Release> internet, std::string path) {
  LinkedNs3 f;
  f.core = core;
  f.internet = internet;
  f.internet_path = std::move(path);
  f.built_against = "3.48";
  return f;
}

std::string refusal(const LinkedNs3& f) {
  try {
    check_ns3_version(f, false);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Ns3Version, AnotherNs3IsRefusedNamingBothVersionsUnlessStock) {
  const Ns3Release v37{3, 37}, v48{3, 48};
  const LinkedNs3 newer = fake(v48, v48, "/opt/ns3/lib/libns3.48-internet-default.so");
  const std::string e = refusal(newer);
  ASSERT_FALSE(e.empty());
  EXPECT_NE(e.find("found ns-3.48"), std::string::npos) << e;
  EXPECT_NE(e.find("expected ns-3.37"), std::string::npos) << e;
  EXPECT_NE(e.find("libns3.48-internet-default.so"), std::string::npos) << e;
  EXPECT_NE(e.find("--ns3-stock"), std::string::npos) << e;
  EXPECT_NO_THROW(check_ns3_version(newer, true));

  // The two sources disagree (a 3.37 core with another TCP library, or the reverse).
  EXPECT_FALSE(refusal(fake(v37, v48, "libns3.48-internet.so")).empty());
  EXPECT_FALSE(refusal(fake(v48, v37, "libns3-internet.so.37")).empty());
  // Nothing says which version: refused too.
  const std::string unknown = refusal(fake(std::nullopt, std::nullopt, "libns3-dev-internet-debug.so"));
  EXPECT_NE(unknown.find("unknown version"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("libns3-dev-internet-debug.so"), std::string::npos) << unknown;
  EXPECT_FALSE(refusal(fake(std::nullopt, std::nullopt, "")).empty());
  EXPECT_NO_THROW(check_ns3_version(fake(std::nullopt, std::nullopt, ""), true));
  // ns-3.37 passes, also without ns3::Version in its core library.
  EXPECT_EQ(refusal(fake(v37, v37, "libns3-internet.so.37")), "");
  EXPECT_EQ(refusal(fake(std::nullopt, v37, "libns3-internet.so.37")), "");
  // A core that has a version, with a TCP library named without one: refused.
  EXPECT_FALSE(refusal(fake(v37, std::nullopt, "libns3-dev-internet.so")).empty());
}

}  // namespace
}  // namespace kvs::sim
