#include "policies/policy.h"

#include <fmt/core.h>

#include "base/error.h"
#include "policies/basic.h"

namespace kvs::policies {

namespace {

using Factory = std::function<std::unique_ptr<Policy>(const PolicyParams&)>;

// The registry: one line per policy.
const std::map<std::string, Factory>& registry() {
  static const std::map<std::string, Factory> kRegistry = {
      {"fixed", [](const PolicyParams& p) { return make_fixed_policy(p); }},
      {"recompute", [](const PolicyParams& p) { return make_recompute_policy(p); }},
  };
  return kRegistry;
}

}  // namespace

std::vector<std::string> policy_names() {
  std::vector<std::string> names;
  for (const auto& [name, factory] : registry()) names.push_back(name);
  return names;
}

std::unique_ptr<Policy> make_policy(const std::string& name, const PolicyParams& params) {
  const auto& reg = registry();
  auto it = reg.find(name);
  if (it == reg.end()) {
    std::string known;
    for (const auto& n : policy_names()) known += (known.empty() ? "" : ", ") + n;
    throw Error(fmt::format("unknown policy '{}' (known: {})", name, known));
  }
  return it->second(params);
}

}  // namespace kvs::policies
