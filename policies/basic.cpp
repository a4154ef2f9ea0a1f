#include "policies/basic.h"

#include <charconv>

#include <fmt/core.h>

#include "base/error.h"

namespace kvs::policies {

namespace {

class FixedPolicy : public Policy {
 public:
  explicit FixedPolicy(int level) : level_(level) {}
  std::string name() const override { return fmt::format("fixed(level={})", level_); }
  Action decide(const StreamState& state) override {
    if (state.levels && uint32_t(level_) >= state.levels)
      throw Error(fmt::format("policy fixed: level {} but the codec has {} levels", level_, state.levels));
    return {level_, "fixed"};
  }

 private:
  int level_;
};

class RecomputePolicy : public Policy {
 public:
  std::string name() const override { return "recompute"; }
  Action decide(const StreamState&) override { return {Action::kRecompute, "recompute all"}; }
};

void reject_unknown(const std::string& policy, const PolicyParams& params, std::initializer_list<const char*> known) {
  for (const auto& [key, value] : params) {
    bool ok = false;
    for (const char* k : known) ok = ok || key == k;
    if (!ok) throw Error(fmt::format("policy {}: unknown parameter '{}'", policy, key));
  }
}

}  // namespace

std::unique_ptr<Policy> make_fixed_policy(const PolicyParams& params) {
  reject_unknown("fixed", params, {"level"});
  int level = 0;
  if (auto it = params.find("level"); it != params.end()) {
    const std::string& v = it->second;
    auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), level);
    if (ec != std::errc() || ptr != v.data() + v.size() || level < 0)
      throw Error(fmt::format("policy fixed: parameter level: expected an integer >= 0, got '{}'", v));
  }
  return std::make_unique<FixedPolicy>(level);
}

std::unique_ptr<Policy> make_recompute_policy(const PolicyParams& params) {
  reject_unknown("recompute", params, {});
  return std::make_unique<RecomputePolicy>();
}

}  // namespace kvs::policies
