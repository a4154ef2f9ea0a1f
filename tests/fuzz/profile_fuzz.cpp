// libFuzzer target: the profile reader (codec/profile.h parse_profile) on
// arbitrary text. Contract: a profile or a kvs::Error naming the file and the
// JSON path; a profile read back from profile_to_json of what was read must
// parse again. Another exception (a JSON type error), a crash or a sanitizer
// report is a finding. Seeds: runs/default/profile.json and
// tests/fuzz/seeds/profile (.ci/run).
#include <cstddef>
#include <cstdint>
#include <string>

#include "base/error.h"
#include "codec/profile.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  kvs::codec::Profile p;
  try {
    p = kvs::codec::parse_profile(text, "fuzz.json");
  } catch (const kvs::Error&) {
    return 0;
  }
  try {
    (void)kvs::codec::parse_profile(kvs::codec::profile_to_json(p), "again.json");
  } catch (const kvs::Error&) {
    __builtin_trap();  // what was read must be written readably
  }
  return 0;
}
