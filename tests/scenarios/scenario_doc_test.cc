// docs/scenarios.md lists every key of the scenario schema: the keys of its
// reference block equal the keys the parser knows, section by section, so
// that the two cannot drift.
#include <gtest/gtest.h>

#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "base/error.h"
#include "base/files.h"
#include "scenarios/scenario.h"

namespace kvs::scenarios {
namespace {

// The keys the parser knows in `section` ("" for the top level), read off
// its unknown-key error.
std::set<std::string> parser_keys(const std::string& section) {
  const std::string probe = section.empty() ? "zz_probe: 1\n" : section + ": {zz_probe: 1}\n";
  try {
    parse_scenario("profile: p.json\ncodec: c\n" + probe, "s.yaml", "");
  } catch (const Error& e) {
    const std::string msg = e.what();
    const size_t from = msg.find("known here: ");
    if (from == std::string::npos) return {"<no list in: " + msg + ">"};
    const size_t to = msg.find(')', from);
    std::set<std::string> keys;
    std::stringstream list(msg.substr(from + 12, to - from - 12));
    std::string k;
    while (std::getline(list, k, ',')) keys.insert(k.substr(k.find_first_not_of(' ')));
    return keys;
  }
  return {"<no error>"};
}

TEST(ScenarioDoc, ListsExactlyTheKeysOfTheSchema) {
  const std::string doc = read_file(std::string(KVSTREAM_SOURCE_DIR) + "/docs/scenarios.md");
  const size_t heading = doc.find("## Every key");
  ASSERT_NE(heading, std::string::npos);
  const size_t begin = doc.find("```yaml\n", heading);
  const size_t end = doc.find("```", begin + 8);
  ASSERT_NE(begin, std::string::npos);
  const YAML::Node ref = YAML::Load(doc.substr(begin + 8, end - begin - 8));
  std::set<std::string> top;
  for (const auto& kv : ref) top.insert(kv.first.as<std::string>());
  EXPECT_EQ(top, parser_keys(""));
  for (const char* section : {"link", "gpu", "arrivals", "cross_traffic"}) {
    ASSERT_TRUE(ref[section] && ref[section].IsMap()) << section;
    std::set<std::string> keys;
    for (const auto& kv : ref[section]) keys.insert(kv.first.as<std::string>());
    EXPECT_EQ(keys, parser_keys(section)) << section;
  }
}

}  // namespace
}  // namespace kvs::scenarios
