// libFuzzer target: the scenario YAML parser (scenarios/scenario.h) on
// arbitrary text. Contract: parse_scenario returns a scenario or throws
// kvs::Error (a message naming the file); any other exception escaping (a
// yaml-cpp "bad conversion", std::out_of_range...), a crash or a sanitizer
// report is a finding. Parsed scenarios are also checked against a small
// profile (check_against_profile), which must hold the same contract.
// Seeds: the shipped scenarios/*.yaml (.ci/run).
#include <cstddef>
#include <cstdint>
#include <string>

#include "base/error.h"
#include "codec/profile.h"
#include "scenarios/scenario.h"

namespace {

kvs::codec::Profile small_profile() {
  kvs::codec::Profile p;
  kvs::codec::CodecProfile c;
  c.codec = "cachegen";
  c.level_names = {"L0", "L1"};
  kvs::codec::ContextProfile ctx;
  ctx.id = "c0";
  ctx.tokens = 8;
  ctx.chunks.push_back({0, 8, std::vector<kvs::codec::ChunkLevel>(2)});
  c.contexts.push_back(ctx);
  p.codecs.push_back(c);
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const kvs::codec::Profile profile = small_profile();
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto s = kvs::scenarios::parse_scenario(text, "fuzz.yaml", "base");
    (void)s.at("codec", "x");
    kvs::scenarios::check_against_profile(s, profile);
  } catch (const kvs::Error&) {
  }
  return 0;
}
